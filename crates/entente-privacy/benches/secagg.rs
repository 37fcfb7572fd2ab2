//! Secure aggregation cost: per-site masking time, coordinator time (aggregation + unmasking),
//! bytes each site sends, and the ratio to plaintext weighted FedAvg of the same updates.
//!
//! Scenarios (each at 0% and 10% dropout; the dropped sites send shares but no masked input,
//! the costly case: the coordinator must recover their mask keys and cancel their pairwise
//! masks):
//! - `plus-100x1M`: 100 sites x 1,000,000 parameters, SecAgg+ (Harary graph, 14 neighbours,
//!   threshold 8). Full SecAgg at this size costs every site 99 mask expansions of 4 MB.
//! - `full-100x100k`: 100 sites x 100,000 parameters, complete graph (threshold 51): the
//!   scaled-down full protocol.
//!
//! Each scenario runs once per mask generator (AES-128-CTR and ChaCha20, `MaskPrg`), with its
//! own plaintext baseline measured right before its coordinator time, so every ratio compares
//! figures from the same run and the same minute; `ENTENTE_BENCH_PRG=chacha20` (or
//! `aes128-ctr`) runs one generator only.
//!
//! Masking and unmasking run on the global rayon pool (one thread per core; set
//! `RAYON_NUM_THREADS` to change it); the plaintext baseline is single-threaded.
//!
//! Run: `cargo bench -p entente-privacy --bench secagg` (append `-- plus-100x1M` for the
//! large scenario only). Medians are printed at the end.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use entente_privacy::secagg::prg::{MaskKey, expand};
use entente_privacy::secagg::{
    EncodingSettings, GraphSpec, MaskPrg, MaskedInput, Modulus, RoutedShares, SecAggClient,
    SecAggConfig, SecAggServer, SiteId, SurvivorRequests, UnmaskResponse,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

struct Scenario {
    name: &'static str,
    sites: u32,
    dim: usize,
    graph: GraphSpec,
    threshold: usize,
}

struct Row {
    label: String,
    prg: MaskPrg,
    site_mask_s: f64,
    coord_s: f64,
    plain_s: f64,
    site_bytes: usize,
    plain_bytes: usize,
    max_err: f64,
}

fn wire_len<T: serde::Serialize>(msg: &T) -> usize {
    let cfg = bincode::config::standard().with_fixed_int_encoding();
    bincode::serde::encode_to_vec(msg, cfg)
        .map(|v| v.len())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Benchmarks `routine` (which returns the time of its own timed part) and returns the
/// median per-iteration seconds over everything criterion ran.
fn measure(c: &mut Criterion, group: &str, id: &str, mut routine: impl FnMut() -> Duration) -> f64 {
    let record = RefCell::new(Vec::new());
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = routine();
                record.borrow_mut().push(t.as_secs_f64());
                total += t;
            }
            total
        })
    });
    g.finish();
    median(record.into_inner())
}

fn plaintext_fedavg(updates: &[Vec<f32>], weights: &[u64], sites: &[usize]) -> Vec<f64> {
    let mut acc = vec![0f64; updates[0].len()];
    let mut total = 0f64;
    for &i in sites {
        let w = weights[i] as f64;
        total += w;
        for (a, &x) in acc.iter_mut().zip(&updates[i]) {
            *a += w * f64::from(x);
        }
    }
    acc.iter_mut().for_each(|a| *a /= total);
    acc
}

/// One generator's round, set up to the point where the coordinator's work begins.
struct Setup {
    prg: MaskPrg,
    cfg: SecAggConfig,
    server: SecAggServer,
    clients: Vec<SecAggClient>,
    masked: Vec<MaskedInput>,
    sent: Vec<usize>,
    site_mask_s: f64,
}

/// Rounds 0 and 1 for every site (cheap), the time of one site's masking, then every site's
/// masked input.
fn setup(
    c: &mut Criterion,
    sc: &Scenario,
    prg: MaskPrg,
    updates: &[Vec<f32>],
    weights: &[u64],
) -> Setup {
    let n = sc.sites;
    let group = format!("{}/{prg}", sc.name);
    let mut enc = EncodingSettings {
        clip: 1.0,
        scale: 1.0,
        max_weight: 1000,
        modulus: Modulus::Pow32,
    };
    enc.scale = enc.max_safe_scale(n as usize).floor();
    let cfg = SecAggConfig::new(
        1,
        (0..n).collect(),
        sc.threshold,
        sc.graph.clone(),
        sc.dim,
        enc,
    )
    .with_prg(prg);
    let mut server = SecAggServer::new(cfg.clone()).expect("config");
    let mut clients: Vec<SecAggClient> = (0..n)
        .map(|id| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&id.to_le_bytes());
            SecAggClient::new(cfg.clone(), id, seed).expect("client")
        })
        .collect();
    let mut sent = vec![0usize; n as usize];
    for c in &mut clients {
        let m = c.advertise_keys().expect("advertise");
        sent[c.id() as usize] += wire_len(&m);
        server.receive_advertise(&m).expect("receive advertise");
    }
    for m in server.close_advertise().expect("close advertise") {
        let s = clients[m.recipient as usize].share_keys(&m).expect("share");
        sent[m.recipient as usize] += wire_len(&s);
        server.receive_shares(&s).expect("receive shares");
    }
    let routed: Vec<RoutedShares> = server.close_shares().expect("close shares");
    let site_mask_s = measure(c, &group, "site-masking", || {
        let mut client = clients[0].clone();
        let t = Instant::now();
        let y = client
            .masked_input(&routed[0], &updates[0], weights[0])
            .expect("mask");
        let d = t.elapsed();
        black_box(y);
        d
    });
    let started = Instant::now();
    let masked: Vec<MaskedInput> = routed
        .iter()
        .map(|m| {
            let i = m.recipient as usize;
            clients[i]
                .masked_input(m, &updates[i], weights[i])
                .expect("mask")
        })
        .collect();
    eprintln!(
        "{group}: {} masked inputs computed in {:.1} s",
        n,
        started.elapsed().as_secs_f64()
    );
    for m in &masked {
        sent[m.sender as usize] += wire_len(m);
    }
    Setup {
        prg,
        cfg,
        server,
        clients,
        masked,
        sent,
        site_mask_s,
    }
}

/// The scenario under every generator of `prgs`: for each dropout rate, the plaintext baseline
/// and then each generator's coordinator time, back to back.
fn run(c: &mut Criterion, sc: &Scenario, prgs: &[MaskPrg], rows: &mut Vec<Row>) {
    let n = sc.sites;
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let updates: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            (0..sc.dim)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let weights: Vec<u64> = (0..n).map(|_| rng.random_range(1..=1000)).collect();
    let setups: Vec<Setup> = prgs
        .iter()
        .map(|&prg| setup(c, sc, prg, &updates, &weights))
        .collect();

    for dropout in [0.0, 0.1] {
        let dropped: Vec<SiteId> = (0..n).filter(|i| i % 10 == 5 && dropout > 0.0).collect();
        let alive: Vec<usize> = (0..n as usize)
            .filter(|i| !dropped.contains(&(*i as SiteId)))
            .collect();
        let label = format!("{} {:.0}% dropout", sc.name, dropout * 100.0);
        let plain_s = measure(
            c,
            sc.name,
            &format!("plaintext-{:.0}pct", dropout * 100.0),
            || {
                let t = Instant::now();
                let mean = plaintext_fedavg(&updates, &weights, &alive);
                let d = t.elapsed();
                black_box(mean);
                d
            },
        );
        for st in &setups {
            // Unmasking responses for this survivor set, computed once on site clones.
            let mut probe = st.server.clone();
            for &i in &alive {
                probe.receive_masked(&st.masked[i]).expect("receive masked");
            }
            let SurvivorRequests::Unmask(requests) = probe.close_masked().expect("close masked")
            else {
                panic!("an honest-but-curious round has no consistency check");
            };
            let responses: Vec<UnmaskResponse> = requests
                .iter()
                .map(|r| {
                    st.clients[r.recipient as usize]
                        .clone()
                        .unmask(r)
                        .expect("unmask")
                })
                .collect();
            let site0_bytes = st.sent[0] + wire_len(&responses[0]);
            let coordinate = |s: &mut SecAggServer| {
                for &i in &alive {
                    s.receive_masked(&st.masked[i]).expect("receive masked");
                }
                s.close_masked().expect("close masked");
                for r in &responses {
                    s.receive_unmask(r).expect("receive unmask");
                }
                s.finish().expect("finish")
            };
            let coord_s = measure(
                c,
                &format!("{}/{}", sc.name, st.prg),
                &format!("coordinator-{:.0}pct", dropout * 100.0),
                || {
                    let mut s = st.server.clone();
                    let t = Instant::now();
                    let agg = coordinate(&mut s);
                    let d = t.elapsed();
                    black_box(agg);
                    d
                },
            );
            // Correctness of what was measured.
            let agg = coordinate(&mut st.server.clone());
            let want = plaintext_fedavg(&updates, &weights, &alive);
            let max_err = agg
                .mean
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (f64::from(a) - b).abs())
                .fold(0.0, f64::max);
            assert!(
                max_err
                    <= entente_privacy::secagg::quantization_bound(&st.cfg.encoding, alive.len())
            );
            rows.push(Row {
                label: label.clone(),
                prg: st.prg,
                site_mask_s: st.site_mask_s,
                coord_s,
                plain_s,
                site_bytes: site0_bytes,
                plain_bytes: wire_len(&(weights[0], &updates[0])),
                max_err,
            });
        }
    }
}

/// Mask expansion on one thread, in GB of keystream per second: one model's worth of mask
/// words (1M, 4 MB, the coordinator's unit of work), median of 31 runs after 3 warm-ups (so
/// the allocator reuses the buffer's memory instead of faulting in fresh pages). The
/// generators take turns run by run, so a change in the machine's load hits them alike.
fn keystream_rates(prgs: &[MaskPrg]) -> Vec<(MaskPrg, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let key = MaskKey::from_bytes([7; 32]);
    let words = 1usize << 20;
    let mut times = vec![Vec::new(); prgs.len()];
    for run in 0..34 {
        for (&prg, t) in prgs.iter().zip(&mut times) {
            let s = pool.install(|| {
                let t = Instant::now();
                black_box(expand::<u32>(prg, &key, words));
                t.elapsed().as_secs_f64()
            });
            if run >= 3 {
                t.push(s);
            }
        }
    }
    prgs.iter()
        .zip(times)
        .map(|(&prg, t)| (prg, (words * 4) as f64 / median(t) / 1e9))
        .collect()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let scenarios = [
        Scenario {
            name: "plus-100x1M",
            sites: 100,
            dim: 1_000_000,
            graph: GraphSpec::Harary {
                degree: 14,
                seed: 7,
            },
            threshold: 8,
        },
        Scenario {
            name: "full-100x100k",
            sites: 100,
            dim: 100_000,
            graph: GraphSpec::Complete,
            threshold: 51,
        },
    ];
    let prgs: Vec<MaskPrg> = match std::env::var("ENTENTE_BENCH_PRG") {
        Ok(name) => vec![name.parse().expect("ENTENTE_BENCH_PRG")],
        Err(_) => MaskPrg::ALL.to_vec(),
    };
    let mut rows = Vec::new();
    for sc in &scenarios {
        run(&mut c, sc, &prgs, &mut rows);
    }
    c.final_summary();
    println!();
    println!("rayon threads: {}", rayon::current_num_threads());
    for (prg, rate) in keystream_rates(&prgs) {
        println!("mask expansion ({prg}), one thread: {rate:.2} GB/s of keystream");
    }
    println!(
        "{:<28} {:>11} {:>12} {:>14} {:>12} {:>8} {:>14} {:>14} {:>10}",
        "scenario",
        "prg",
        "site mask s",
        "coordinator s",
        "plaintext s",
        "ratio",
        "site sends B",
        "plain sends B",
        "max err"
    );
    for r in &rows {
        println!(
            "{:<28} {:>11} {:>12.4} {:>14.4} {:>12.4} {:>8.2} {:>14} {:>14} {:>10.2e}",
            r.label,
            r.prg.as_str(),
            r.site_mask_s,
            r.coord_s,
            r.plain_s,
            r.coord_s / r.plain_s,
            r.site_bytes,
            r.plain_bytes,
            r.max_err
        );
    }
    // The two generators side by side, where both ran.
    for r in rows.iter().filter(|r| r.prg == MaskPrg::Aes128Ctr) {
        if let Some(o) = rows
            .iter()
            .find(|o| o.prg == MaskPrg::ChaCha20 && o.label == r.label)
        {
            println!(
                "{}: aes128-ctr / chacha20 = {:.2} (coordinator), {:.2} (site masking)",
                r.label,
                r.coord_s / o.coord_s,
                r.site_mask_s / o.site_mask_s
            );
        }
    }
}
