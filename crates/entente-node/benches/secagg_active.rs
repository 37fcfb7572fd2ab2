//! What active security adds to a secure-aggregation round, against honest-but-curious, in
//! time and bytes, measured in one run.
//!
//! Each scenario runs whole rounds (every site and the coordinator in this process, one after
//! the other, no dropouts) three ways, interleaved repetition by repetition so that all three
//! see the same machine load:
//! - `hbc`: honest-but-curious (no signatures, no consistency check);
//! - `active-ed25519`: active security with the in-process Ed25519 identities of simulations;
//! - `active-cert`: active security with the deployment's identities: ECDSA P-256 site keys and
//!   certificates issued by a federation CA, each peer's certificate checked against the CA
//!   (rustls-webpki) for every signature verified.
//!
//! Bytes are every message of the round, site to coordinator and coordinator to sites, as the
//! transport carries them (bincode, fixed-width integers). Run:
//! `cargo bench -p entente-node --bench secagg_active` (`ENTENTE_BENCH_REPS`, default 5).

use std::hint::black_box;
use std::time::Instant;

use entente_node::identity;
use entente_privacy::secagg::{
    EncodingSettings, GraphSpec, Identity, InProcessPki, Modulus, SecAggClient, SecAggConfig,
    SecAggServer, SiteId, SurvivorRequests, auth,
};
use entente_proto::tls::{KeyDir, init_ca, issue_site};

fn wire_len<T: serde::Serialize>(msg: &T) -> usize {
    let cfg = bincode::config::standard().with_fixed_int_encoding();
    bincode::serde::encode_to_vec(msg, cfg).map_or(0, |v| v.len())
}

/// One round: its wall time in seconds and its bytes.
fn round(cfg: &SecAggConfig, ids: &[Option<Identity>], updates: &[Vec<f32>]) -> (f64, usize) {
    let t = Instant::now();
    let mut bytes = 0;
    let mut server = SecAggServer::new(cfg.clone()).expect("config");
    let mut clients: Vec<SecAggClient> = cfg
        .sites
        .iter()
        .map(|&s| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            let c = SecAggClient::new(cfg.clone(), s, seed).expect("client");
            match &ids[s as usize] {
                Some(id) => c.with_identity(id.clone()),
                None => c,
            }
        })
        .collect();
    for c in &mut clients {
        let m = c.advertise_keys().expect("advertise");
        bytes += wire_len(&m);
        server.receive_advertise(&m).expect("receive advertise");
    }
    for m in server.close_advertise().expect("close advertise") {
        bytes += wire_len(&m);
        let s = clients[m.recipient as usize].share_keys(&m).expect("share");
        bytes += wire_len(&s);
        server.receive_shares(&s).expect("receive shares");
    }
    for m in server.close_shares().expect("close shares") {
        bytes += wire_len(&m);
        let i = m.recipient as usize;
        let y = clients[i].masked_input(&m, &updates[i], 10).expect("mask");
        bytes += wire_len(&y);
        server.receive_masked(&y).expect("receive masked");
    }
    let requests = match server.close_masked().expect("close masked") {
        SurvivorRequests::Unmask(r) => r,
        SurvivorRequests::Consistency(checks) => {
            for m in checks {
                bytes += wire_len(&m);
                let s = clients[m.recipient as usize].consistency(&m).expect("sign");
                bytes += wire_len(&s);
                server.receive_consistency(&s).expect("receive consistency");
            }
            server.close_consistency().expect("close consistency")
        }
    };
    for m in requests {
        bytes += wire_len(&m);
        let r = clients[m.recipient as usize].unmask(&m).expect("unmask");
        bytes += wire_len(&r);
        server.receive_unmask(&r).expect("receive unmask");
    }
    black_box(server.finish().expect("finish"));
    (t.elapsed().as_secs_f64(), bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Certificate identities for `n` sites of a fresh federation CA in `dir`.
fn certificate_identities(dir: &KeyDir, n: u32) -> Vec<Option<Identity>> {
    init_ca(dir, "bench").expect("ca");
    let names: Vec<String> = (0..n).map(|i| format!("site-{i}")).collect();
    for name in &names {
        issue_site(dir, name, false).expect("site certificate");
    }
    names
        .iter()
        .map(|s| {
            Some(
                identity::load(&dir.ca_cert(), &dir.site_cert(s), &dir.site_key(s), &names)
                    .expect("identity"),
            )
        })
        .collect()
}

fn main() {
    let reps: usize = std::env::var("ENTENTE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let scenarios = [
        (
            "complete-10x100k",
            10u32,
            100_000usize,
            GraphSpec::Complete,
            6usize,
        ),
        ("complete-50x100k", 50, 100_000, GraphSpec::Complete, 26),
        (
            "plus-100x100k",
            100,
            100_000,
            GraphSpec::Harary {
                degree: 14,
                seed: 1,
            },
            8,
        ),
    ];
    let mut lines = Vec::new();
    for (name, n, dim, graph, t) in scenarios {
        let mut enc = EncodingSettings {
            clip: 1.0,
            scale: 1.0,
            max_weight: 1000,
            modulus: Modulus::Pow32,
        };
        enc.scale = enc.max_safe_scale(n as usize).floor();
        let sites: Vec<SiteId> = (0..n).collect();
        let hbc = SecAggConfig::new(1, sites.clone(), t, graph, dim, enc);
        let active = hbc.clone().with_active_security(auth::context_of(b"bench"));
        let updates: Vec<Vec<f32>> = (0..n)
            .map(|s| {
                (0..dim)
                    .map(|j| ((s as usize * 31 + j) % 17) as f32 / 20.0 - 0.4)
                    .collect()
            })
            .collect();
        let none: Vec<Option<Identity>> = vec![None; n as usize];
        let pki = InProcessPki::new(&[1; 32], &sites).expect("pki");
        let ed: Vec<Option<Identity>> = sites.iter().map(|&s| pki.identity(s)).collect();
        let tmp = tempfile::tempdir().expect("tempdir");
        let cert = certificate_identities(&KeyDir::new(tmp.path()), n);
        let variants: [(&str, &SecAggConfig, &[Option<Identity>]); 3] = [
            ("hbc", &hbc, &none),
            ("active-ed25519", &active, &ed),
            ("active-cert", &active, &cert),
        ];
        let mut times = vec![Vec::new(); 3];
        let mut bytes = [0usize; 3];
        round(&hbc, &none, &updates); // warm-up
        for _ in 0..reps {
            for (k, (_, cfg, ids)) in variants.iter().enumerate() {
                let (s, b) = round(cfg, ids, &updates);
                times[k].push(s);
                bytes[k] = b;
            }
        }
        let base_t = median(times[0].clone());
        for (k, (variant, _, _)) in variants.iter().enumerate() {
            let m = median(times[k].clone());
            lines.push(format!(
                "{name:18} {variant:15} round {m:8.4} s  ({:+.1}%, x{:.3})  bytes {:>11} ({:+}, x{:.4})",
                (m / base_t - 1.0) * 100.0,
                m / base_t,
                bytes[k],
                bytes[k] as i64 - bytes[0] as i64,
                bytes[k] as f64 / bytes[0] as f64,
            ));
        }
    }
    println!(
        "\nmedians over {reps} rounds each (interleaved), ratios against hbc in the same run:"
    );
    for l in lines {
        println!("{l}");
    }
}
