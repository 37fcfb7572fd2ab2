//! What a node accepts: a task must come from a coordinator running the same manifest terms,
//! for a round the manifest has, with the manifest's training settings and model, over sites
//! the manifest lists. Anything else is refused with the reason.

use entente_core::manifest::Manifest;
use entente_core::params::Layout;
use entente_core::personal::carried;
use entente_proto::convert::{layout_from_wire, training_from_wire};
use entente_proto::v1::{TaskHeader, TrainSpec, task_header};

/// The manifest a node agreed to, and what follows from it.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// The node's copy of the manifest.
    pub manifest: Manifest,
    /// Its terms' digest ([`Manifest::agreement_digest`]).
    pub digest: String,
    /// The node's site name.
    pub site: String,
    /// The model's layout as the manifest and the local data define it.
    pub layout: Layout,
    /// The layout of what a training task carries: the model's, and under SCAFFOLD the model
    /// followed by the server's control variate.
    pub train_layout: Layout,
}

impl Agreement {
    /// Checks the parts every task shares: manifest digest and round.
    pub fn check_header(&self, header: &TaskHeader) -> Result<(), String> {
        if header.manifest_sha256 != self.digest {
            return Err(format!(
                "the task comes from a coordinator running manifest terms {}, but this node \
                 agreed to {}",
                header.manifest_sha256, self.digest
            ));
        }
        if header.round > self.manifest.rounds {
            return Err(format!(
                "round {} is beyond the manifest's training.rounds = {}",
                header.round, self.manifest.rounds
            ));
        }
        Ok(())
    }

    /// The layout the parameters of a task of `header`'s kind must have.
    pub fn layout_for(&self, header: &TaskHeader) -> &Layout {
        match header.kind {
            Some(task_header::Kind::Train(_)) => &self.train_layout,
            _ => &self.layout,
        }
    }

    /// Checks that parameters sent with a task have the manifest model's layout (for a
    /// training task, [`Agreement::train_layout`]).
    pub fn check_layout(&self, header: &TaskHeader) -> Result<(), String> {
        let layout = layout_from_wire(&header.layout).map_err(|e| e.to_string())?;
        if let Some(name) = carried(&layout, self.manifest.personal_tensors()) {
            return Err(format!(
                "the task carries `{name}`, a personal tensor ([personalization] personal): \
                 personal tensors never leave a site, so this node takes no task that holds one"
            ));
        }
        let expected = self.layout_for(header);
        if layout.specs() != expected.specs() {
            let describe = |l: &Layout| {
                l.specs()
                    .iter()
                    .map(|s| format!("{}{:?}", s.name, s.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "the task's model ({}) is not the manifest's model ({})",
                describe(&layout),
                describe(expected)
            ));
        }
        Ok(())
    }

    /// Checks a training task's settings and site list against the manifest.
    pub fn check_training(&self, spec: &TrainSpec) -> Result<(), String> {
        let wire = spec
            .training
            .as_ref()
            .ok_or("the training task has no training settings")?;
        let asked = training_from_wire(wire).map_err(|e| e.to_string())?;
        if asked != self.manifest.training {
            return Err(format!(
                "the task asks for training settings {asked:?}, but the manifest says {:?}",
                self.manifest.training
            ));
        }
        if let Some(stranger) = spec
            .selected
            .iter()
            .find(|s| !self.manifest.sites.contains(s))
        {
            return Err(format!(
                "the round includes `{stranger}`, which is not a site of the manifest this node agreed to"
            ));
        }
        if !spec.selected.contains(&self.site) {
            return Err("the round's site list does not include this site".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use entente_core::params::TensorSpec;
    use entente_proto::convert::{layout_to_wire, training_to_wire};

    use super::*;

    fn agreement() -> Agreement {
        let manifest = Manifest::parse(
            include_str!("../../../examples/digits.toml"),
            "digits.toml",
            Path::new("."),
        )
        .unwrap();
        let layout = Layout::new(vec![TensorSpec {
            name: "w".into(),
            shape: vec![2, 3],
        }])
        .unwrap();
        Agreement {
            digest: manifest.agreement_digest(),
            site: manifest.sites[0].clone(),
            manifest,
            train_layout: layout.clone(),
            layout,
        }
    }

    fn train_spec(a: &Agreement) -> TrainSpec {
        TrainSpec {
            seed: 1,
            training: Some(training_to_wire(&a.manifest.training)),
            selected: a.manifest.sites.clone(),
        }
    }

    #[test]
    fn a_task_within_the_manifest_passes() {
        let a = agreement();
        let header = TaskHeader {
            manifest_sha256: a.digest.clone(),
            round: 1,
            layout: layout_to_wire(&a.layout),
            ..Default::default()
        };
        a.check_header(&header).unwrap();
        a.check_layout(&header).unwrap();
        a.check_training(&train_spec(&a)).unwrap();
    }

    #[test]
    fn other_terms_settings_models_and_sites_are_refused() {
        let a = agreement();
        let mut header = TaskHeader {
            manifest_sha256: "f".repeat(64),
            round: 1,
            ..Default::default()
        };
        assert!(a.check_header(&header).unwrap_err().contains("agreed to"));
        header.manifest_sha256 = a.digest.clone();
        header.round = a.manifest.rounds + 1;
        assert!(a.check_header(&header).unwrap_err().contains("beyond"));
        header.layout = layout_to_wire(
            &Layout::new(vec![TensorSpec {
                name: "w".into(),
                shape: vec![3, 2],
            }])
            .unwrap(),
        );
        assert!(
            a.check_layout(&header)
                .unwrap_err()
                .contains("not the manifest's model")
        );

        let mut spec = train_spec(&a);
        spec.training.as_mut().unwrap().learning_rate *= 2.0;
        assert!(
            a.check_training(&spec)
                .unwrap_err()
                .contains("training settings")
        );
        let mut spec = train_spec(&a);
        spec.selected.push("mallory".into());
        assert!(a.check_training(&spec).unwrap_err().contains("mallory"));
        let mut spec = train_spec(&a);
        spec.selected.retain(|s| *s != a.site);
        assert!(a.check_training(&spec).is_err());
    }
}
