//! SCAFFOLD against a hostile site with a valid certificate: every task carries the model and
//! the server's control variate (`scaffold.control.NAME`), and a site answers both. Whatever
//! site-a does to the control tensors it sends back (non-finite values, the edge of f32, a
//! wrong shape, none at all, one too many), the run must finish, site-a must be left out of
//! any round whose answer is malformed, and every task must carry a finite control variate.

use std::path::Path;

mod common;
mod nodes;

use common::MANIFEST;
use entente_coordinator::audit::kind;
use entente_coordinator::{NoReport, RunSummary, run};
use entente_core::aggregators::scaffold::CONTROL_PREFIX;
use entente_core::engine::ErrorKind;
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_proto::tls::KeyDir;
use nodes::{
    Reply, answer_tasks, audit_entries, connect, coordinator_config, register_request,
    site_a_kinds, with_keys,
};

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

fn manifest(dir: &Path) -> Manifest {
    let text = MANIFEST.replace("kind = \"fedavg\"", "kind = \"scaffold\"");
    Manifest::parse(&text, "<test>", dir).unwrap()
}

async fn coordinator(
    dir: &Path,
    keys: &KeyDir,
    listener: tokio::net::TcpListener,
) -> Result<RunSummary, entente_coordinator::CoordinatorError> {
    let initial = ParamSet::from_tensors([("w".to_string(), vec![2, 3], vec![0.5; 6])]).unwrap();
    let config = coordinator_config(dir, keys, manifest(dir), initial);
    run(config, listener, std::future::pending(), &mut NoReport).await
}

/// What a site answers a training task with, from what it was sent.
type Answer = fn(&ParamSet) -> ParamSet;

/// An honest site that did not move: its model and the server's control variate, as sent.
fn echo(task: &ParamSet) -> ParamSet {
    task.clone()
}

/// The task's tensors with the control ones replaced by `value`.
fn controls_set_to(task: &ParamSet, value: f32) -> ParamSet {
    let mut out = task.clone();
    let half = out.num_values() / 2;
    out.as_flat_mut()[half..].fill(value);
    out
}

/// The task's tensors named `name` replaced: `(name, shape, values)` for each, in order.
fn tensors(task: &ParamSet) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    task.layout()
        .specs()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let values = task.as_flat()[task.layout().range(i)].to_vec();
            (s.name.clone(), s.shape.clone(), values)
        })
        .collect()
}

/// What a fake node saw: the rounds the run completed, and whether every control variate a
/// task carried was finite.
struct Seen {
    rounds: u32,
    finite_tasks: bool,
}

/// Registers and answers every task until the run is finished (see [`answer_tasks`]):
/// training tasks with `answer` of the parameters sent, checking each carries a control
/// variate.
async fn fake_node(
    dir: &Path,
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
    answer: Answer,
) -> Seen {
    let mut client = connect(keys, addr, site).await.unwrap();
    let session = client
        .register(register_request(&manifest(dir), "scaffold-hostile-test"))
        .await
        .unwrap()
        .into_inner()
        .session;
    let mut finite_tasks = true;
    let rounds = answer_tasks(client, session, |task| {
        assert!(
            task.layout()
                .specs()
                .iter()
                .any(|s| s.name.starts_with(CONTROL_PREFIX)),
            "a SCAFFOLD task without its control variate"
        );
        finite_tasks &= task.as_flat().iter().all(|v| v.is_finite());
        Reply::Train(100, answer(&task))
    })
    .await;
    Seen {
        rounds,
        finite_tasks,
    }
}

/// Runs the three rounds with site-a answering as `a` and the others echoing their task;
/// returns the rounds' records, the audit log and the final model.
async fn run_with_site_a(
    dir: &Path,
    a: Answer,
) -> (
    Vec<entente_core::engine::RoundRecord>,
    Vec<entente_coordinator::audit::AuditEntry>,
    ParamSet,
) {
    let keys = with_keys(dir, &SITES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (summary, a, b, c) = tokio::join!(
        coordinator(dir, &keys, listener),
        fake_node(dir, &keys, addr, "site-a", a),
        fake_node(dir, &keys, addr, "site-b", echo),
        fake_node(dir, &keys, addr, "site-c", echo),
    );
    let summary = summary.expect("the run finishes");
    assert_eq!(summary.rounds.len(), 3);
    assert_eq!((a.rounds, b.rounds, c.rounds), (3, 3, 3));
    assert!(
        a.finite_tasks && b.finite_tasks && c.finite_tasks,
        "a task carried a non-finite value"
    );
    let entries = audit_entries(dir).await;
    let model = ParamSet::load(&dir.join("model.safetensors")).unwrap();
    (summary.rounds, entries, model)
}

/// site-a's answer is malformed in every round: it is left out of each with `why` in the
/// audit log, and the others' rounds go on.
async fn left_out_every_round(a: Answer, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (rounds, entries, model) = run_with_site_a(dir.path(), a).await;
    for r in &rounds {
        assert_eq!(r.excluded.len(), 1, "{r:?}");
        assert_eq!(r.excluded[0].site, "site-a");
        assert_eq!(r.excluded[0].kind, ErrorKind::MalformedReply);
    }
    let rejected: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == kind::UPDATE_REJECTED)
        .collect();
    assert_eq!(rejected.len(), 3);
    for e in rejected {
        assert!(e.detail.contains(why), "{}", e.detail);
    }
    assert_eq!(
        site_a_kinds(dir.path()).await,
        vec![Some("malformed_reply".to_string()); 3]
    );
    // Echoing sites leave the model where it started: the final model is the model alone.
    assert_eq!(model.layout().specs().len(), 1);
    assert_eq!(model.as_flat(), &[0.5; 6]);
}

#[tokio::test]
async fn non_finite_control_tensors_leave_the_site_out() {
    left_out_every_round(|t| controls_set_to(t, f32::NAN), "scaffold.control.w").await;
    left_out_every_round(|t| controls_set_to(t, f32::INFINITY), "scaffold.control.w").await;
}

#[tokio::test]
async fn an_answer_without_its_control_tensors_leaves_the_site_out() {
    left_out_every_round(
        |t| {
            let model: Vec<_> = tensors(t)
                .into_iter()
                .filter(|(n, _, _)| !n.starts_with(CONTROL_PREFIX))
                .collect();
            ParamSet::from_tensors(model).unwrap()
        },
        "scaffold.control.w",
    )
    .await;
}

#[tokio::test]
async fn a_control_tensor_of_another_shape_or_one_too_many_leaves_the_site_out() {
    left_out_every_round(
        |t| {
            let reshaped = tensors(t).into_iter().map(|(n, s, v)| {
                if n.starts_with(CONTROL_PREFIX) {
                    (n, vec![3, 2], v)
                } else {
                    (n, s, v)
                }
            });
            ParamSet::from_tensors(reshaped).unwrap()
        },
        "scaffold.control.w",
    )
    .await;
    left_out_every_round(
        |t| {
            let mut more = tensors(t);
            more.push((
                format!("{CONTROL_PREFIX}{CONTROL_PREFIX}w"),
                vec![1],
                vec![0.0],
            ));
            ParamSet::from_tensors(more).unwrap()
        },
        "scaffold.control.scaffold.control.w",
    )
    .await;
}

/// Finite values at the edge of f32 are a valid answer (no `max_update_norm` here): they move
/// the server's control variate, but it stays finite (a convex combination of what the sites
/// sent), every task stays finite, and the run finishes.
#[tokio::test]
async fn control_tensors_at_the_edge_of_f32_keep_the_server_control_variate_finite() {
    let dir = tempfile::tempdir().unwrap();
    let (rounds, _, model) = run_with_site_a(dir.path(), |t| match t.as_flat()[6] {
        // Alternate the sign, so the differences from the control variate are as large as
        // they can get.
        c if c > 0.0 => controls_set_to(t, f32::MIN),
        _ => controls_set_to(t, f32::MAX),
    })
    .await;
    assert!(rounds.iter().all(|r| r.excluded.is_empty()), "{rounds:?}");
    assert!(model.as_flat().iter().all(|v| v.is_finite()));
}
