//! Revoked sites, while the run goes on. The TLS handshake refuses a revoked certificate
//! (`entente_proto::tls::server_config`); this guard refuses it in every call of a connection
//! opened before the revocation, and a watch reloads the revocation list every
//! [`RELOAD_EVERY`] without a restart: a site whose certificate the new list revokes loses its
//! session at once (its task in progress fails), and the audit log records the new list, each
//! revoked site and every refused list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entente_proto::tls::{Reloaded, Revocations, serial_hex, serial_of};
use tokio::task::JoinHandle;

use super::hub::Hub;
use crate::audit::{AuditEvent, kind};
use crate::store::Store;

/// How often the revocation list's file is looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Longest one reading of the list may take before the watch gives up on it (and looks again
/// next time).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The revocation list in force, and the certificate each site's calls came with.
pub struct RevocationGuard {
    revocations: Arc<Revocations>,
    /// The serial of the certificate each site last called with.
    serials: Mutex<HashMap<String, Vec<u8>>>,
}

impl RevocationGuard {
    /// Guards calls with `revocations`.
    pub fn new(revocations: Arc<Revocations>) -> Self {
        Self {
            revocations,
            serials: Mutex::new(HashMap::new()),
        }
    }

    /// The list the TLS handshake checks too.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    fn serials(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.serials.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why a call of `site` with the certificate `cert_der` is refused, if its certificate is
    /// revoked; otherwise remembers the certificate as the site's.
    pub(crate) fn refusal(&self, site: &str, cert_der: &[u8]) -> Option<String> {
        // The certificate is parsed once per call; one the TLS verifier let in always parses.
        let serial = serial_of(cert_der).ok()?;
        if self.revocations.current().revokes(&serial) {
            return Some(self.revoked_reason(site, &serial));
        }
        let mut serials = self.serials();
        if serials.get(site) != Some(&serial) {
            serials.insert(site.to_string(), serial);
        }
        None
    }

    fn revoked_reason(&self, site: &str, serial: &[u8]) -> String {
        format!(
            "the certificate of site `{site}` (serial {}) is revoked by the federation's \
             revocation list (number {}); the site may rejoin only with a new certificate",
            serial_hex(serial),
            self.revocations.current().number
        )
    }

    /// Reloads the list every [`RELOAD_EVERY`] until aborted, ending the session of each
    /// connected site the new list revokes and recording it all in run `run`'s audit log.
    pub fn spawn_watch(self: &Arc<Self>, hub: Arc<Hub>, store: Store, run: i64) -> JoinHandle<()> {
        let guard = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            let mut last_refusal = None;
            let mut pending = None;
            loop {
                tick.tick().await;
                let audit = |kind: &str, site: Option<&str>, detail: serde_json::Value| {
                    let event = AuditEvent {
                        kind: kind.to_string(),
                        run: Some(run),
                        round: None,
                        site: site.map(str::to_string),
                        detail: detail.to_string(),
                    };
                    let store = store.clone();
                    async move {
                        if let Err(e) = store.audit(event).await {
                            tracing::error!(error = %e, "could not write to the audit log");
                        }
                    }
                };
                let path = guard
                    .revocations
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                // The file is read on a blocking thread, and given at most RELOAD_TIMEOUT:
                // a slow file system holds up no round and no later look.
                // A reading that timed out is waited for again, never started twice.
                let mut reload = pending.take().unwrap_or_else(|| {
                    let revocations = Arc::clone(&guard.revocations);
                    tokio::task::spawn_blocking(move || revocations.reload())
                });
                let result = match tokio::time::timeout(RELOAD_TIMEOUT, &mut reload).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the revocation list's reload failed");
                        continue;
                    }
                    Err(_) => {
                        tracing::error!(%path, "reading the revocation list timed out");
                        pending = Some(reload);
                        continue;
                    }
                };
                match result {
                    Ok(None) => {}
                    Ok(Some(reloaded)) => {
                        last_refusal = None;
                        tracing::info!(number = reloaded.number, %path, "revocation list loaded");
                        let detail = serde_json::json!({
                            "path": path,
                            "number": reloaded.number,
                            "revoked": guard.revocations.current().len(),
                            "newly_revoked": reloaded
                                .newly_revoked
                                .iter()
                                .map(|s| serial_hex(s))
                                .collect::<Vec<_>>(),
                        });
                        audit(kind::REVOCATIONS_LOADED, None, detail).await;
                        for (site, serial) in guard.newly_revoked_sites(&reloaded) {
                            let reason = guard.revoked_reason(&site, &serial);
                            tracing::warn!(%site, %reason, "site revoked");
                            hub.end_session(&site, &reason);
                            let detail = serde_json::json!({ "serial": serial_hex(&serial) });
                            audit(kind::SITE_REVOKED, Some(&site), detail).await;
                        }
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        if last_refusal.as_ref() != Some(&reason) {
                            tracing::error!(%reason, "revocation list refused");
                            let detail = serde_json::json!({ "path": path, "reason": reason });
                            audit(kind::REVOCATIONS_REFUSED, None, detail).await;
                            last_refusal = Some(reason);
                        }
                    }
                }
            }
        })
    }

    /// The sites whose last certificate `reloaded` newly revokes (and forgets them).
    fn newly_revoked_sites(&self, reloaded: &Reloaded) -> Vec<(String, Vec<u8>)> {
        let mut serials = self.serials();
        let revoked: Vec<(String, Vec<u8>)> = serials
            .iter()
            .filter(|(_, serial)| reloaded.newly_revoked.contains(serial))
            .map(|(site, serial)| (site.clone(), serial.clone()))
            .collect();
        for (site, _) in &revoked {
            serials.remove(site);
        }
        revoked
    }
}
