//! The node's participant: its data, the manifest's model, and the privacy layers the manifest
//! requires (a budget ledger the site keeps itself and charges every round it trains, the site
//! half of secure aggregation with fresh operating-system randomness).

use std::path::Path;
use std::sync::Arc;

use entente_core::engine::Site;
use entente_core::manifest::Manifest;
use entente_core::params::{Layout, TensorSpec};
use entente_learn::simulation;
use entente_privacy::budget::{BudgetedSite, Ledger, RoundPrice};
use entente_privacy::secure_round::{SecAggSettings, SecureSite};

use crate::agent::NodeError;

/// The site stack of one node, and its model's layout.
pub struct LocalParticipant {
    /// What answers tasks.
    pub site: Arc<dyn Site>,
    /// The model's layout.
    pub layout: Layout,
    /// Training examples the site holds.
    pub examples: usize,
}

/// Builds site `name`'s participant. Its records are its share of the manifest's data set
/// (`data` replaces `data.path`), split as the manifest's partition says.
pub fn participant(
    manifest: &Manifest,
    name: &str,
    data: Option<&Path>,
) -> Result<LocalParticipant, NodeError> {
    let index = manifest
        .sites
        .iter()
        .position(|s| s == name)
        .ok_or_else(|| {
            NodeError::Setup(format!(
                "the manifest lists no site `{name}` (its sites: {}); the site name comes from \
                 the node's certificate",
                manifest.sites.join(", ")
            ))
        })?;
    let fed = simulation::prepare(manifest, data)
        .map_err(|e| NodeError::Setup(format!("could not read the site's data: {e}")))?;
    let local = fed.sites[index].clone();
    let examples = local.train_data().len();
    let layout = Layout::new(
        fed.spec
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape, _)| TensorSpec { name, shape })
            .collect(),
    )
    .map_err(|e| NodeError::Setup(e.to_string()))?;

    let mut site: Arc<dyn Site> = Arc::new(local);
    // Under every mechanism the node charges its own ledger before it trains a round, and
    // refuses the round that would exceed its budget, whatever the coordinator asks.
    if let Some(p) = &manifest.privacy {
        let ledger = Ledger::open(&p.ledger, name, &manifest.data_label(), p.delta)
            .map_err(|e| NodeError::Setup(format!("privacy ledger: {e}")))?;
        site = Arc::new(BudgetedSite::new(
            site,
            &manifest.name,
            RoundPrice::of(p, examples),
            p.budgets[index],
            ledger,
        ));
    }
    if let Some(settings) = SecAggSettings::from_manifest(manifest) {
        // Fresh key material from the operating system: a real site's secrets never derive
        // from anything the coordinator knows.
        site = Arc::new(SecureSite::new(
            site,
            index as u32,
            manifest.policy,
            settings,
            false,
        ));
    }
    Ok(LocalParticipant {
        site,
        layout,
        examples,
    })
}
