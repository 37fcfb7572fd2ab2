//! The node's participant: its trainer (entente's own, on the site's own records, or one the
//! site brings, such as a Python client), the manifest's model, and the privacy layers the
//! manifest requires (a budget ledger the site keeps itself and charges every round it trains,
//! the site half of secure aggregation with fresh operating-system randomness).

use std::path::PathBuf;
use std::sync::Arc;

use entente_core::aggregators::{Strategy, scaffold};
use entente_core::engine::Site;
use entente_core::manifest::{Manifest, file_label};
use entente_core::params::Layout;
use entente_core::personal;
use entente_learn::personal_head::PersonalHeadSite;
use entente_learn::scaffold::ScaffoldSite;
use entente_learn::{simulation, site_data};
use entente_privacy::policy::{self, Keys, Member, SamplingRule};
use entente_privacy::secagg::Identity;

use crate::agent::NodeError;

/// What trains at a node.
#[derive(Clone)]
pub enum Trainer {
    /// entente's own trainer on the site's own records: `data` (a file or folder), else the
    /// site's `[[sites]] data`, else the manifest's `data.path`.
    Builtin {
        /// Replaces the manifest's path to the site's records.
        data: Option<PathBuf>,
    },
    /// A trainer the site brings (a PyTorch or Keras loop behind entente's Python `Client`):
    /// it holds the site's records itself. The node still checks every task against the
    /// manifest and keeps the ledger and secure aggregation.
    External(Arc<dyn Site>),
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin { data } => f.debug_struct("Builtin").field("data", data).finish(),
            Self::External(site) => f.debug_tuple("External").field(&site.name()).finish(),
        }
    }
}

/// The site stack of one node, and its model's layout.
pub struct LocalParticipant {
    /// What answers tasks.
    pub site: Arc<dyn Site>,
    /// The model's layout, from the manifest.
    pub layout: Layout,
    /// The layout of a training task: the model's, under SCAFFOLD followed by the control
    /// variate's.
    pub train_layout: Layout,
    /// Training examples the site holds (`None` when its own trainer holds them).
    pub examples: Option<usize>,
}

/// Builds site `name`'s participant around `trainer`.
/// `identity` signs and checks secure-aggregation keys under active security (the node's
/// certificate key, see [`crate::identity`]).
pub fn participant(
    manifest: &Manifest,
    name: &str,
    trainer: &Trainer,
    identity: Option<Identity>,
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
    let model = simulation::federation_model(manifest, None)
        .map_err(|e| NodeError::Setup(format!("the manifest's model: {e}")))?;
    let personal = manifest.personal_tensors();
    // Under FedPer and FedRep tasks carry, and updates hold, the shared tensors only.
    let layout = personal::split(&model.initial, personal)
        .map_err(|e| NodeError::Setup(format!("the manifest's model: {e}")))?
        .0
        .layout()
        .as_ref()
        .clone();
    let scaffold = matches!(manifest.strategy, Strategy::Scaffold { .. });
    let train_layout = if scaffold {
        scaffold::task_layout(&layout).map_err(|e| NodeError::Setup(format!("SCAFFOLD: {e}")))?
    } else {
        layout.clone()
    };
    let (site, examples): (Arc<dyn Site>, Option<usize>) = match trainer {
        Trainer::Builtin { data } => {
            let local = site_data::local_site(manifest, index, data.as_deref())
                .map_err(|e| NodeError::Setup(format!("the site's data: {e}")))?;
            let examples = local.train_data().len();
            let local = Arc::new(local);
            if scaffold {
                // The control variate outlives the process: a restarted node goes on from it.
                let folder = manifest
                    .control_dir
                    .as_ref()
                    .map(|dir| dir.join(&manifest.name).join(name));
                let site = ScaffoldSite::new(local, folder)
                    .map_err(|e| NodeError::Setup(format!("SCAFFOLD's control variate: {e}")))?;
                (Arc::new(site), Some(examples))
            } else if let Some(choice) = manifest
                .personalization
                .as_ref()
                .filter(|_| !personal.is_empty())
            {
                // The personal tensors outlive the process, beside the personal model.
                let folder = manifest
                    .personal_dir
                    .as_ref()
                    .map(|dir| dir.join(&manifest.name).join(name));
                let site = PersonalHeadSite::new(local, choice, &model.initial, folder)
                    .map_err(|e| NodeError::Setup(format!("the personal tensors: {e}")))?;
                (Arc::new(site), Some(examples))
            } else {
                (local, Some(examples))
            }
        }
        Trainer::External(_) if !personal.is_empty() => {
            return Err(NodeError::Setup(format!(
                "site `{name}` brings its own trainer, and [personalization] method = \
                 \"fedper\" / \"fedrep\" needs entente's: the site keeps its personal tensors \
                 and trains them with the shared ones"
            )));
        }
        Trainer::External(_) if scaffold => {
            return Err(NodeError::Setup(format!(
                "site `{name}` brings its own trainer, and strategy.kind = \"scaffold\" needs \
                 entente's: the site must keep a control variate and correct every step with it"
            )));
        }
        Trainer::External(site) => {
            if site.name() != name {
                return Err(NodeError::Setup(format!(
                    "the trainer answers as site `{}`, but this node is `{name}`",
                    site.name()
                )));
            }
            (Arc::clone(site), None)
        }
    };
    // The ledger is kept per data set: the records this site trains on.
    let dataset = match trainer {
        Trainer::Builtin { data: Some(path) } => file_label(path),
        _ => manifest.site_data_label(index),
    };
    // A node cannot verify the coordinator's secret sampling of sites: under every mechanism
    // it charges its own ledger before it trains a round (client-level DP at rate 1), and
    // refuses the round that would exceed its budget, whatever the coordinator asks. Secure
    // aggregation draws fresh key material from the operating system.
    let member = Member {
        index,
        site,
        examples,
        dataset,
        identity,
    };
    let mut stack = policy::stack_sites(
        manifest,
        SamplingRule::Unverified,
        Keys::Fresh,
        vec![member],
    )
    .map_err(|e| NodeError::Setup(format!("the site's privacy: {e}")))?;
    let site = stack
        .sites
        .pop()
        .map(|stacked| stacked.site)
        .ok_or_else(|| NodeError::Setup("the site's privacy layers were not built".into()))?;
    Ok(LocalParticipant {
        site,
        layout,
        train_layout,
        examples,
    })
}
