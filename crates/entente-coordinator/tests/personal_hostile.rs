//! A shared body with personal tensors (FedPer) against a hostile site with a valid
//! certificate: the coordinator's tasks carry the shared tensors only, even when the model it
//! starts from holds the personal ones; site-a answers with a personal tensor beside the shared
//! ones, and is left out of every round as malformed (and audited), while the run finishes on
//! the other sites.

use std::path::Path;

mod common;
mod nodes;

use common::MANIFEST;
use entente_coordinator::audit::kind;
use entente_coordinator::{NoReport, run};
use entente_core::engine::ErrorKind;
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_core::personal::carried;
use nodes::{
    Reply, answer_tasks, audit_entries, connect, coordinator_config, register_request,
    site_a_kinds, with_keys,
};

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// The MLP of the shared manifest has one hidden layer: its last layer is personal.
fn manifest(dir: &Path) -> Manifest {
    let text = format!(
        "{MANIFEST}\n[personalization]\nmethod = \"fedper\"\npersonal = [\"layers.1.weight\", \
         \"layers.1.bias\"]\n"
    );
    Manifest::parse(&text, "<test>", dir).unwrap()
}

fn personal(dir: &Path) -> Vec<String> {
    manifest(dir).personal_tensors().to_vec()
}

/// A model of a shared tensor `w` and the two personal ones.
fn whole() -> ParamSet {
    ParamSet::from_tensors([
        ("w".to_string(), vec![2, 3], vec![0.5; 6]),
        ("layers.1.weight".to_string(), vec![1, 2], vec![0.25, -0.25]),
        ("layers.1.bias".to_string(), vec![1], vec![0.125]),
    ])
    .unwrap()
}

/// The task as sent, with the personal tensor `layers.1.bias` added.
fn with_personal(task: &ParamSet) -> ParamSet {
    let mut tensors: Vec<_> = task
        .iter()
        .map(|(s, v)| (s.name.clone(), s.shape.clone(), v.to_vec()))
        .collect();
    tensors.push(("layers.1.bias".into(), vec![1], vec![0.75]));
    ParamSet::from_tensors(tensors).unwrap()
}

/// Registers as `site` and answers every training task with `answer` of it, checking that
/// no task carries a personal tensor; returns the rounds the run completed.
async fn fake_node(
    dir: &Path,
    keys: &entente_proto::tls::KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
    answer: fn(&ParamSet) -> ParamSet,
) -> u32 {
    let mut client = connect(keys, addr, site).await.unwrap();
    let session = client
        .register(register_request(&manifest(dir), "personal-hostile-test"))
        .await
        .unwrap()
        .into_inner()
        .session;
    let personal = personal(dir);
    answer_tasks(client, session, |task| {
        assert_eq!(
            carried(task.layout(), &personal),
            None,
            "a task carried a personal tensor"
        );
        assert_eq!(task.layout().specs().len(), 1, "the shared tensor only");
        Reply::Train(100, answer(&task))
    })
    .await
}

#[tokio::test]
async fn an_update_with_a_personal_tensor_is_rejected_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let keys = with_keys(dir, &SITES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = coordinator_config(dir, &keys, manifest(dir), whole());
    let echo: fn(&ParamSet) -> ParamSet = ParamSet::clone;
    let mut report = NoReport;
    let (summary, a, b, c) = tokio::join!(
        run(config, listener, std::future::pending(), &mut report),
        fake_node(dir, &keys, addr, "site-a", with_personal),
        fake_node(dir, &keys, addr, "site-b", echo),
        fake_node(dir, &keys, addr, "site-c", echo),
    );
    let summary = summary.expect("the run finishes");
    assert_eq!(summary.rounds.len(), 3);
    assert_eq!((a, b, c), (3, 3, 3));
    for r in &summary.rounds {
        assert_eq!(r.excluded.len(), 1, "{r:?}");
        assert_eq!(r.excluded[0].site, "site-a");
        assert_eq!(r.excluded[0].kind, ErrorKind::MalformedReply);
        assert!(r.excluded[0].reason.contains("layers.1.bias"), "{r:?}");
    }
    let rejected: Vec<_> = audit_entries(dir)
        .await
        .into_iter()
        .filter(|e| e.kind == kind::UPDATE_REJECTED)
        .collect();
    assert_eq!(rejected.len(), 3);
    for e in &rejected {
        assert!(e.detail.contains("layers.1.bias"), "{}", e.detail);
    }
    assert_eq!(
        site_a_kinds(dir).await,
        vec![Some("malformed_reply".to_string()); 3]
    );
    // The coordinator's model holds no personal tensor either.
    let model = ParamSet::load(&dir.join("model.safetensors")).unwrap();
    assert_eq!(carried(model.layout(), &personal(dir)), None);
    assert_eq!(model.as_flat(), &[0.5; 6]);
}
