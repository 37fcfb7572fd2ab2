//! `[personalization] method = "fedper"` / `"fedrep"` in simulation: the round engine's
//! global model is the shared tensors only, every site keeps its personal tensors (from the
//! initial model's) in a [`PersonalHeadSite`], and the whole model the run writes and
//! evaluates centrally is the shared tensors with the initial personal ones: the coordinator
//! never holds a site's personal tensors. That model is therefore no classifier of its own
//! (its head is untrained); each site's personal model is.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use entente_core::engine::Evaluator;
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_core::personal;
use entente_learn::personal_head::{PersonalHeadSite, WithInitialHead};
use entente_learn::site::LocalSite;

/// The split of the federation's model into what the sites share and what each keeps.
pub(crate) struct SharedBody {
    personal: Vec<String>,
    initial: ParamSet,
    initial_personal: ParamSet,
}

impl SharedBody {
    /// Under FedPer or FedRep, the split of `initial` (the whole round-1 model).
    pub(crate) fn of(manifest: &Manifest, initial: &ParamSet) -> Result<Option<Self>> {
        let personal = manifest.personal_tensors();
        if personal.is_empty() {
            return Ok(None);
        }
        let (_, initial_personal) = personal::split(initial, personal)?;
        Ok(Some(Self {
            personal: personal.to_vec(),
            initial: initial.clone(),
            initial_personal,
        }))
    }

    /// The shared tensors of the whole model `full`: what the round engine starts from.
    pub(crate) fn shared(&self, full: &ParamSet) -> Result<ParamSet> {
        Ok(personal::split(full, &self.personal)?.0)
    }

    /// The whole model of the shared tensors `shared` and the initial personal ones.
    pub(crate) fn whole(&self, shared: &ParamSet) -> Result<ParamSet> {
        personal::join(self.initial.layout(), shared, &self.initial_personal)
            .context("the global model does not fit the manifest's model")
    }

    /// Each site's keeper of its personal tensors, in memory; every site must train with
    /// entente's own trainer (`local`).
    pub(crate) fn sites(
        &self,
        manifest: &Manifest,
        locals: &[(String, Option<Arc<LocalSite>>)],
    ) -> Result<Vec<Arc<PersonalHeadSite>>> {
        let Some(choice) = &manifest.personalization else {
            bail!("the manifest has no [personalization]");
        };
        locals
            .iter()
            .map(|(name, local)| match local {
                Some(l) => Ok(Arc::new(PersonalHeadSite::new(
                    Arc::clone(l),
                    choice,
                    &self.initial,
                    None,
                )?)),
                None => bail!(
                    "[personalization] method = \"fedper\" / \"fedrep\" trains the personal \
                     tensors with entente's own trainer, but site `{name}` trains with its own \
                     client; use method = \"finetune\", which works with any client"
                ),
            })
            .collect()
    }

    /// `central` evaluating the shared tensors it is given with the initial personal ones.
    pub(crate) fn evaluator(&self, central: Arc<dyn Evaluator>) -> Result<Arc<dyn Evaluator>> {
        Ok(Arc::new(WithInitialHead::new(
            central,
            &self.initial,
            &self.personal,
        )?))
    }
}
