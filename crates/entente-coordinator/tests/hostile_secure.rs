//! Hostile nodes with valid site certificates against an in-process coordinator running under
//! `[secure_aggregation]`: a secure-aggregation reply streams (its header announces its length,
//! its bytes follow in parts once the coordinator says `proceed`), and a site whose announcement
//! is larger than a reply for the model may be, or whose parts do not add up to it, drops out of
//! secure aggregation; the round goes on with the others, as the protocol's threshold allows.
//!
//! Every node runs entente's real client half of the protocol ([`SecureSite`]) around a stand-in
//! for training; site-a corrupts only how it sends one reply.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
mod nodes;

use entente_coordinator::{CoordinatorError, NoReport, RunSummary, run};
use entente_core::engine::{Envelope, ErrorKind, RoundRecord, Site, SiteError, TrainTask};
use entente_core::manifest::Manifest;
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;
use entente_privacy::secure_round::{SecAggSettings, SecureSite};
use entente_proto::chunks::Assembler;
use entente_proto::convert::{layout_from_wire, training_from_wire};
use entente_proto::tls::KeyDir;
use entente_proto::v1::{
    self, PollRequest, ResultFrame, result_frame, result_header, task_frame, task_header,
};
use entente_proto::{MAX_MESSAGE, upload};
use nodes::{connect, coordinator_config, heartbeats, register_request, site_a_kinds, with_keys};

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// Rounds of every run here.
const ROUNDS: u32 = 2;

/// What each site's stand-in for training adds to every value of the model it receives.
const NUDGE: f32 = 0.001;

/// Examples site-b and site-c claim (site-a claims 50).
const EXAMPLES: [u64; 3] = [50, 100, 200];

/// The phases of a round of SecAgg, as the node sees them: one message of each, in this order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// The round's settings; the reply advertises the site's public keys.
    Keys = 0,
    /// The neighbours' keys; the reply holds encrypted shares.
    Shares = 1,
    /// The shares; the reply is the masked update, as large as the model.
    Masked = 2,
}

/// The common manifest (embedded UCI digits, three sites, an MLP with one hidden layer of 8,
/// `min_sites = 2`) over [`ROUNDS`] rounds, under secure aggregation. With 3 sites every site is
/// paired with every other; the threshold is ceil(0.6 * 3) = 2 holders and the survivors must be
/// at least max(2, min_sites) = 2: one site may drop out of any phase.
fn manifest_text() -> String {
    let text = common::MANIFEST.replace("rounds = 3", &format!("rounds = {ROUNDS}"));
    assert_ne!(
        text,
        common::MANIFEST,
        "the common manifest has three rounds"
    );
    // Honest-but-curious: these nodes are hand-made (no certificate identity), and what is
    // tested is how secure replies stream, not the threat model.
    text + "\n[secure_aggregation]\nthreshold = 0.6\nclip = 1.0\nsecurity = \"honest-but-curious\"\n"
}

fn manifest(dir: &Path) -> Manifest {
    Manifest::parse(&manifest_text(), "<test>", dir).unwrap()
}

/// The round-1 model, with the layout of the manifest's MLP on UCI digits (64 features, a
/// hidden layer of 8, 10 classes: 610 values). The nodes do not train it, so the values only
/// need to differ from each other.
fn initial_model() -> ParamSet {
    let values = |n: usize, offset: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i + offset) % 97) as f32 / 97.0 - 0.5)
            .collect()
    };
    ParamSet::from_tensors([
        ("layers.0.weight".to_string(), vec![64, 8], values(512, 0)),
        ("layers.0.bias".to_string(), vec![8], values(8, 1)),
        ("layers.1.weight".to_string(), vec![8, 10], values(80, 2)),
        ("layers.1.bias".to_string(), vec![10], values(10, 3)),
    ])
    .unwrap()
}

async fn coordinator(
    dir: &Path,
    keys: &KeyDir,
    listener: tokio::net::TcpListener,
) -> Result<RunSummary, CoordinatorError> {
    let config = coordinator_config(dir, keys, manifest(dir), initial_model());
    run(config, listener, std::future::pending(), &mut NoReport).await
}

/// A stand-in for local training: the received model plus [`NUDGE`], claiming `examples`.
struct Nudge {
    name: String,
    examples: u64,
}

impl Site for Nudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let mut params = (*task.global).clone();
        params.as_flat_mut().iter_mut().for_each(|v| *v += NUDGE);
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples: self.examples,
            params,
            train_loss: 0.5,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused(
            self.name.clone(),
            "the test node answers evaluation itself",
        ))
    }
}

/// Site `index`'s client half of secure aggregation, as `entente join` stacks it.
fn secure_site(manifest: &Manifest, index: usize) -> Arc<SecureSite> {
    let settings = SecAggSettings::from_manifest(manifest).expect("the manifest asks for it");
    let inner = Arc::new(Nudge {
        name: manifest.sites[index].clone(),
        examples: EXAMPLES[index],
    });
    Arc::new(SecureSite::new(
        inner,
        index as u32,
        manifest.policy,
        settings,
        false,
    ))
}

/// How a node sends its reply in the phase it attacks.
#[derive(Clone, Copy, Debug)]
enum Sending {
    /// As the protocol says.
    Honest,
    /// A header announcing this many bytes (and its real parts, were it asked for them).
    Announcing(u64),
    /// A header announcing the reply's length, then its parts and one byte more.
    OneByteMore,
    /// A header announcing the reply's length, then all its bytes but the last.
    OneByteLess,
}

/// What a node saw of the run.
#[derive(Debug, Default)]
struct Seen {
    /// The rounds the coordinator said the run completed.
    rounds: u32,
    /// The round and the real length of each reply it corrupted.
    attacked: Vec<(u32, u64)>,
    /// Whatever went wrong on the node's side (it carries on with a refusal).
    errors: Vec<String>,
}

/// Registers, keeps its session alive, and answers every task until the run is finished:
/// training through its [`SecureSite`] (the coordinator receives only a header with the example
/// count), secure-aggregation messages with its [`SecureSite`]'s replies, streamed, sent as
/// `sending` says in phase `attack` of every round, and evaluations with fixed metrics.
async fn node(
    dir: &Path,
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    index: usize,
    sending: Sending,
    attack: Phase,
) -> Result<Seen, String> {
    let site_name = SITES[index];
    let secure = secure_site(&manifest(dir), index);
    let mut client = connect(keys, addr, site_name).await?;
    let session = client
        .register(register_request(&manifest(dir), "hostile-secure-test"))
        .await
        .map_err(|s| format!("{site_name} was not admitted: {s}"))?
        .into_inner()
        .session;
    let beating = heartbeats(&client, session);
    let mut seen = Seen::default();
    // The phase of the next secure-aggregation message: (round, tasks seen in it, last task).
    let mut phase = (0u32, 0usize, 0u64);
    let outcome = loop {
        let polled = client
            .poll_task(PollRequest {
                session,
                wait_ms: 1000,
            })
            .await;
        let mut stream = match polled {
            Ok(s) => s.into_inner(),
            Err(s) => break Err(format!("{site_name}: a poll failed: {s}")),
        };
        let header = match stream.message().await {
            Ok(Some(v1::TaskFrame {
                frame: Some(task_frame::Frame::Header(header)),
            })) => header,
            Ok(_) => continue,
            Err(s) => break Err(format!("{site_name}: a task broke off: {s}")),
        };
        let (task_id, round) = (header.task_id, header.round);
        let answer = match header.kind {
            Some(task_header::Kind::Finished(f)) => {
                seen.rounds = f.rounds;
                break Ok(());
            }
            Some(task_header::Kind::Train(spec)) => {
                let global = receive_params(&mut stream, &header.layout).await;
                let task = global.and_then(|global| {
                    let training = spec
                        .training
                        .as_ref()
                        .ok_or("a task without training settings")?;
                    Ok(TrainTask {
                        round,
                        global: Arc::new(global),
                        training: training_from_wire(training).map_err(|e| e.to_string())?,
                        seed: spec.seed,
                        turn: None,
                    })
                });
                let site = Arc::clone(&secure);
                let trained = match task {
                    Ok(task) => tokio::task::spawn_blocking(move || site.train(&task))
                        .await
                        .unwrap()
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match trained {
                    // Under secure aggregation only the claims travel in the clear.
                    Ok(update) => (
                        result_header::Outcome::Train(v1::TrainResult {
                            num_examples: update.num_examples,
                            train_loss: update.train_loss,
                        }),
                        None,
                    ),
                    Err(e) => refusal(&mut seen, site_name, e),
                }
            }
            Some(task_header::Kind::Evaluate(_)) => {
                while let Ok(Some(_)) = stream.message().await {}
                (
                    result_header::Outcome::Evaluate(v1::EvalResult {
                        loss: 1.0,
                        accuracy: 0.5,
                        num_examples: 10,
                    }),
                    None,
                )
            }
            Some(task_header::Kind::Secure(spec)) => {
                if phase.0 != round {
                    phase = (round, 0, 0);
                }
                if phase.2 != task_id {
                    phase = (round, phase.1 + 1, task_id);
                }
                let now = phase.1 - 1;
                let site = Arc::clone(&secure);
                let message = Envelope(spec.envelope);
                let reply = tokio::task::spawn_blocking(move || {
                    site.secure_exchange(round, &message, None)
                })
                .await
                .unwrap();
                let reply = match reply {
                    Ok(r) => r.0,
                    Err(e) => {
                        let (refused, kind) = refusal(&mut seen, site_name, e.to_string());
                        let (head, none) = upload::result_frames(task_id, refused, kind, None);
                        let _ = upload::submit(&mut client, head, none).await;
                        continue;
                    }
                };
                let how = if now == attack as usize {
                    sending
                } else {
                    Sending::Honest
                };
                if !matches!(how, Sending::Honest) {
                    seen.attacked.push((round, reply.len() as u64));
                }
                let (head, parts) = secure_reply(task_id, reply, how);
                // A reply the coordinator refuses ends the upload with an error: that is the
                // point of the hostile ones, and the honest ones must not get any.
                let sent = upload::submit(&mut client, head, parts).await;
                if let (Err(s), Sending::Honest) = (&sent, how) {
                    seen.errors.push(format!(
                        "{site_name}: an honest reply in round {round} was refused: {s}"
                    ));
                }
                continue;
            }
            _ => continue,
        };
        let (outcome, kind) = answer;
        let (head, none) = upload::result_frames(task_id, outcome, kind, None);
        if let Err(s) = upload::submit(&mut client, head, none).await {
            seen.errors.push(format!(
                "{site_name}: a result in round {round} failed: {s}"
            ));
        }
    };
    beating.abort();
    outcome.map(|()| seen)
}

/// The parameters of a task whose header announced `layout`, as its chunks bring them.
async fn receive_params(
    stream: &mut tonic::Streaming<v1::TaskFrame>,
    layout: &[v1::TensorInfo],
) -> Result<ParamSet, String> {
    let layout = Arc::new(layout_from_wire(layout).map_err(|e| e.to_string())?);
    let mut assembler = Assembler::new(layout.total());
    while let Some(frame) = stream.message().await.map_err(|s| s.to_string())? {
        if let Some(task_frame::Frame::Chunk(c)) = frame.frame {
            assembler.push(&c).map_err(|e| e.to_string())?;
        }
    }
    ParamSet::from_flat(layout, assembler.finish().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())
}

/// A refusal for `reason`, which the node also keeps as an error.
fn refusal(
    seen: &mut Seen,
    site: &str,
    reason: String,
) -> (result_header::Outcome, Option<ErrorKind>) {
    seen.errors.push(format!("{site}: {reason}"));
    (
        result_header::Outcome::Refused(reason),
        Some(ErrorKind::Internal),
    )
}

/// The frames of `reply` to task `task_id`, sent as `how` says.
fn secure_reply(
    task_id: u64,
    reply: Vec<u8>,
    how: Sending,
) -> (ResultFrame, Box<dyn Iterator<Item = ResultFrame> + Send>) {
    let part = |bytes: Vec<u8>| ResultFrame {
        frame: Some(result_frame::Frame::EnvelopePart(bytes)),
    };
    let announcing = |bytes: u64| ResultFrame {
        frame: Some(result_frame::Frame::Header(v1::ResultHeader {
            task_id,
            layout: Vec::new(),
            outcome: Some(result_header::Outcome::Secure(v1::SecureSpec {
                envelope: Vec::new(),
                streamed_bytes: bytes,
            })),
            kind: String::new(),
        })),
    };
    match how {
        Sending::Honest => {
            let (head, parts) = upload::secure_reply_frames(task_id, reply);
            (head, Box::new(parts))
        }
        Sending::Announcing(bytes) => {
            let (_, parts) = upload::secure_reply_frames(task_id, reply);
            (announcing(bytes), Box::new(parts))
        }
        Sending::OneByteMore => {
            let (head, parts) = upload::secure_reply_frames(task_id, reply);
            (head, Box::new(parts.chain([part(vec![0x5a])])))
        }
        Sending::OneByteLess => {
            let announced = reply.len() as u64;
            let mut short = reply;
            short.pop();
            let (_, parts) = upload::secure_reply_frames(task_id, short);
            (announcing(announced), Box::new(parts))
        }
    }
}

/// What one run with site-a sending as `a` in phase `attack` came to.
struct Outcome {
    summary: RunSummary,
    /// Site-a's corrupted replies: (round, real length).
    attacked: Vec<(u32, u64)>,
}

/// Runs the rounds with site-a sending as `a` in phase `attack` of every round and site-b and
/// site-c honest; checks that the run finished every round and that the nodes saw it so.
async fn run_with_site_a(dir: &Path, a: Sending, attack: Phase) -> Outcome {
    let keys = with_keys(dir, &SITES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let everything = async {
        tokio::join!(
            coordinator(dir, &keys, listener),
            node(dir, &keys, addr, 0, a, attack),
            node(dir, &keys, addr, 1, Sending::Honest, attack),
            node(dir, &keys, addr, 2, Sending::Honest, attack),
        )
    };
    // A run takes seconds: the bound makes a coordinator (or node) that hangs fail the test.
    let (summary, a, b, c) = tokio::time::timeout(Duration::from_secs(180), everything)
        .await
        .expect("the run and its nodes end within three minutes");
    let summary = summary.unwrap_or_else(|e| {
        panic!("the run stops: {e}\nsite-a: {a:?}\nsite-b: {b:?}\nsite-c: {c:?}")
    });
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        summary.rounds.len(),
        ROUNDS as usize,
        "{:?}",
        summary.rounds
    );
    for (site, seen) in SITES.iter().zip([&a, &b, &c]) {
        assert_eq!(seen.rounds, ROUNDS, "{site}: {seen:?}");
        assert!(seen.errors.is_empty(), "{site}: {:?}", seen.errors);
    }
    assert!(b.attacked.is_empty() && c.attacked.is_empty());
    let rounds: Vec<u32> = a.attacked.iter().map(|&(r, _)| r).collect();
    assert_eq!(
        rounds,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "site-a corrupts one reply a round: {:?}",
        a.attacked
    );
    Outcome {
        summary,
        attacked: a.attacked,
    }
}

/// Every round went on under secure aggregation with site-b and site-c only, site-a left out
/// as a malformed reply for a reason that `reason(round)` must be part of.
fn assert_site_a_dropped_out(rounds: &[RoundRecord], reason: impl Fn(u32) -> Vec<String>) {
    for r in rounds {
        assert_eq!(r.secure_aggregation, Some("secagg"), "round {}", r.round);
        assert_eq!(r.selected, SITES, "round {}", r.round);
        assert_eq!(r.accepted, ["site-b", "site-c"], "round {}: {r:?}", r.round);
        assert_eq!(r.accepted_examples, EXAMPLES[1..], "round {}", r.round);
        assert_eq!(r.excluded.len(), 1, "round {}: {:?}", r.round, r.excluded);
        let excluded = &r.excluded[0];
        assert_eq!(excluded.site, "site-a");
        assert_eq!(excluded.kind, ErrorKind::MalformedReply, "{excluded:?}");
        assert!(
            excluded
                .reason
                .contains("dropped out during secure aggregation"),
            "{excluded:?}"
        );
        for part in reason(r.round) {
            assert!(
                excluded.reason.contains(&part),
                "round {}: the reason does not name `{part}`: {}",
                r.round,
                excluded.reason
            );
        }
    }
}

/// The final model is the initial one moved by the survivors' mean update in every round:
/// [`NUDGE`] a value a round, within the fixed-point encoding's resolution.
fn assert_secure_mean_applied(summary: &RunSummary) {
    let start = initial_model();
    let end = ParamSet::load(&summary.model).unwrap();
    assert_eq!(end.layout(), start.layout());
    let moved = ROUNDS as f32 * NUDGE;
    for (i, (e, s)) in end.as_flat().iter().zip(start.as_flat()).enumerate() {
        assert!(
            (e - s - moved).abs() < 1e-4,
            "value {i} moved by {} over {ROUNDS} rounds, not {moved}",
            e - s
        );
    }
}

/// The most a secure-aggregation reply for the initial model may announce, as the coordinator
/// computes it: a masked input of the model's values, and never below the message limit.
fn reply_limit(dir: &Path) -> u64 {
    let settings = SecAggSettings::from_manifest(&manifest(dir)).unwrap();
    settings
        .max_masked_bytes(initial_model().num_values())
        .max(MAX_MESSAGE as u64)
}

#[tokio::test]
async fn a_secure_reply_announcing_more_than_the_model_holds_is_dropped_naming_both_sizes() {
    const ANNOUNCED: u64 = 1 << 40;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let limit = reply_limit(d);
    assert!(ANNOUNCED > limit);
    let outcome = run_with_site_a(d, Sending::Announcing(ANNOUNCED), Phase::Masked).await;
    assert_site_a_dropped_out(&outcome.summary.rounds, |_| {
        vec![
            format!("announces {ANNOUNCED} bytes"),
            format!("at most {limit}"),
        ]
    });
    assert_secure_mean_applied(&outcome.summary);
    assert_eq!(
        site_a_kinds(d).await,
        vec![Some("malformed_reply".to_string()); ROUNDS as usize]
    );
}

#[tokio::test]
async fn a_secure_reply_whose_parts_overrun_its_announcement_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let outcome = run_with_site_a(d, Sending::OneByteMore, Phase::Masked).await;
    let lengths = outcome.attacked.clone();
    // The corrupted reply is the masked input: 611 words of the 32-bit ring at least.
    assert!(lengths.iter().all(|&(_, n)| n >= 4 * 611), "{lengths:?}");
    let length = |round: u32| lengths.iter().find(|&&(r, _)| r == round).unwrap().1;
    assert_site_a_dropped_out(&outcome.summary.rounds, |round| {
        let n = length(round);
        vec![
            "sent an invalid result".to_string(),
            format!("come to {} bytes, but its header announced {n}", n + 1),
        ]
    });
    assert_secure_mean_applied(&outcome.summary);
}

#[tokio::test]
async fn a_reply_that_ends_short_is_dropped() {
    // The masked input: site-a's keys and shares are in, so b's and c's inputs are masked
    // against it, and the coordinator must rebuild those masks from their shares of its secret.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let outcome = run_with_site_a(d, Sending::OneByteLess, Phase::Masked).await;
    let lengths = outcome.attacked.clone();
    let length = |round: u32| lengths.iter().find(|&&(r, _)| r == round).unwrap().1;
    assert_site_a_dropped_out(&outcome.summary.rounds, |round| {
        let n = length(round);
        vec![format!(
            "the reply ended after {} of the {n} bytes its header announced",
            n - 1
        )]
    });
    assert_secure_mean_applied(&outcome.summary);
}

#[tokio::test]
async fn a_reply_that_ends_short_in_an_earlier_phase_is_dropped_too() {
    // Keys: site-a never advertises them, nobody masks against it. Shares: its keys are in but
    // its shares are not, so the others leave it out of their masks.
    for phase in [Phase::Keys, Phase::Shares] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let outcome = run_with_site_a(d, Sending::OneByteLess, phase).await;
        let lengths = outcome.attacked.clone();
        let length = |round: u32| lengths.iter().find(|&&(r, _)| r == round).unwrap().1;
        assert_site_a_dropped_out(&outcome.summary.rounds, |round| {
            let n = length(round);
            vec![format!("ended after {} of the {n} bytes", n - 1)]
        });
        assert_secure_mean_applied(&outcome.summary);
    }
}
