//! The pieces of the round engine that come from the manifest: one remote site per manifest
//! site, the aggregation rule, and the wait for the sites before the first round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_core::aggregators::{self, Aggregator};
use entente_core::engine::{Site, selection};
use entente_core::manifest::{Manifest, PrivacyMechanism};
use entente_privacy::dp::client::DpFedAvg;
use entente_privacy::dp::os_noise_rng;

use super::error::CoordinatorError;
use super::report::{FederationStatus, Report, SiteStatus};
use crate::transport::hub::Hub;
use crate::transport::remote_site::RemoteSite;

/// The manifest's aggregation rule; under central client-level DP, DP-FedAvg with noise from
/// the operating system. (Distributed DP needs no rule of its own: the sites add the noise
/// before secure aggregation masks their updates.)
pub(crate) fn aggregation_rule(
    manifest: &Manifest,
) -> Result<Box<dyn Aggregator>, CoordinatorError> {
    match &manifest.privacy {
        Some(p) if p.mechanism == PrivacyMechanism::ClientLevel => Ok(Box::new(DpFedAvg::new(
            p.clip,
            p.noise_multiplier,
            os_noise_rng().map_err(|reason| CoordinatorError::Noise { reason })?,
        ))),
        _ => aggregators::build(&manifest.strategy)
            .map_err(|source| CoordinatorError::Strategy { source }),
    }
}

/// One remote site per manifest site, in manifest order (each site's seed is its position).
pub(crate) fn remote_sites(manifest: &Manifest, hub: &Arc<Hub>) -> Vec<Arc<dyn Site>> {
    let names = manifest.sites.clone();
    let (fraction, min_sites, seed) = (
        manifest.selection.fraction,
        manifest.selection.min_sites,
        manifest.seed,
    );
    let selected: Arc<dyn Fn(u32) -> Vec<String> + Send + Sync> = Arc::new(move |round| {
        selection::select(names.len(), fraction, min_sites, seed, round)
            .into_iter()
            .map(|i| names[i].clone())
            .collect()
    });
    manifest
        .sites
        .iter()
        .map(|name| -> Arc<dyn Site> {
            Arc::new(RemoteSite::new(
                name.clone(),
                Arc::clone(hub),
                manifest.selection.deadline,
                Arc::clone(&selected),
            ))
        })
        .collect()
}

/// Waits until every site is connected, or until `patience` has passed with the quorum there,
/// reporting each change of the count.
/// Every manifest site's connection now, in manifest order.
pub(crate) fn status(hub: &Hub, manifest: &Manifest) -> FederationStatus {
    let sites = manifest
        .sites
        .iter()
        .map(|site| SiteStatus {
            site: site.clone(),
            connected: hub.is_alive(site),
            heard_secs_ago: hub.heard_ago(site).map(|d| d.as_secs_f64()),
            traffic: hub.traffic().site(site),
        })
        .collect();
    FederationStatus {
        sites,
        refused_handshakes: hub.traffic().refused_handshakes(),
    }
}

pub(crate) async fn wait_for_sites(
    hub: &Hub,
    manifest: &Manifest,
    patience: Duration,
    report: &mut dyn Report,
) {
    let started = Instant::now();
    let mut last = usize::MAX;
    let mut last_status = None::<Instant>;
    loop {
        if last_status.is_none_or(|t| t.elapsed() >= super::STATUS_EVERY) {
            report.status(&status(hub, manifest));
            last_status = Some(Instant::now());
        }
        let alive = hub.alive().len();
        if alive != last {
            report.sites_connected(alive, manifest.sites.len(), manifest.selection.min_sites);
            last = alive;
        }
        if alive == manifest.sites.len() {
            return;
        }
        // Past the patience, start with the quorum; without it no round can complete, so wait.
        if started.elapsed() >= patience && alive >= manifest.selection.min_sites {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
