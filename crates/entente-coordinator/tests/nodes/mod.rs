//! What the hostile-node suites share: keys for a federation, a node's connection made with a
//! site's certificate, its registration and heartbeats, and what the store recorded of site-a.

use std::path::Path;

use entente_core::manifest::Manifest;
use entente_proto::tls::{self, KeyDir};
use entente_proto::v1::coordinator_client::CoordinatorClient;
use entente_proto::v1::{HeartbeatRequest, RegisterRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Keys for the coordinator and each of `sites`.
pub fn with_keys(dir: &Path, sites: &[&str]) -> KeyDir {
    let keys = KeyDir::new(dir.join("keys"));
    tls::init_ca(&keys, "library-run").unwrap();
    tls::issue_coordinator(&keys, &["127.0.0.1".into()], false).unwrap();
    for site in sites {
        tls::issue_site(&keys, site, false).unwrap();
    }
    keys
}

/// A node's connection, made with `site`'s own certificate.
pub async fn connect(
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
) -> Result<CoordinatorClient<Channel>, String> {
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(keys.ca_cert())))
        .identity(Identity::from_pem(
            read(keys.site_cert(site)),
            read(keys.site_key(site)),
        ))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{site} could not connect: {e}"))?;
    Ok(CoordinatorClient::new(channel))
}

/// A registration for `manifest`'s terms, as a node of `version` sends it.
pub fn register_request(manifest: &Manifest, version: &str) -> RegisterRequest {
    RegisterRequest {
        manifest_sha256: manifest.agreement_digest(),
        version: version.into(),
        manifest_terms: manifest.agreement_terms(),
        previous_session: 0,
    }
}

/// Keeps `session` alive with a heartbeat every 200 ms until the returned task is aborted.
pub fn heartbeats(
    client: &CoordinatorClient<Channel>,
    session: u64,
) -> tokio::task::JoinHandle<()> {
    let mut client = client.clone();
    tokio::spawn(async move {
        loop {
            let _ = client.heartbeat(HeartbeatRequest { session }).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// The kinds the store's participant rows give site-a, round by round.
pub async fn site_a_kinds(dir: &Path) -> Vec<Option<String>> {
    let url = format!("sqlite://{}", dir.join("run.db").display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT kind FROM participants WHERE site = 'site-a' ORDER BY round")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| sqlx::Row::try_get(r, 0).unwrap())
        .collect()
}
