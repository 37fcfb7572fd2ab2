//! FedAvg aggregation throughput against a plain memory copy of the same bytes.
//!
//! Workload: 100 validated updates of 1M `f32` parameters each (4 MB per update, 400 MB per
//! round), built once outside the timed code. Three measurements, all reported in bytes of
//! update data consumed per second (`Throughput::Bytes(400 MB)`):
//!
//! - `fedavg/round`: `begin` + 100 `add` + `finish`, the whole server-side round. Because
//!   [`Aggregator::add`] takes each update by value, every iteration gets fresh clones of the
//!   100 updates from an untimed `iter_batched` setup (`BatchSize::PerIteration`).
//! - `fedavg/add`: the same, with `begin` moved into the untimed setup too, so only the 100
//!   `add` calls (the streaming hot loop, plus dropping each consumed update) are timed.
//! - `memcpy/100x4MB`: the 100 pre-built 4 MB buffers copied one after the other into a single
//!   4 MB destination, i.e. the same bytes read from memory with next to nothing written back:
//!   the bandwidth ceiling a streaming aggregator can approach.
//!
//! Run with `cargo bench -p entente-core --bench aggregation`.

// criterion_main! writes the bench's `main`, which carries no doc comment.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use entente_core::aggregators::{Aggregator, FedAvg};
use entente_core::params::ParamSet;
use entente_core::update::ValidUpdate;

/// Parameters per update.
const PARAMS: usize = 1_000_000;
/// Updates per round.
const UPDATES: usize = 100;
/// Bytes of update data per round.
const ROUND_BYTES: u64 = (UPDATES * PARAMS * std::mem::size_of::<f32>()) as u64;

/// A global model of `PARAMS` values in a few tensors (an MLP-like layout), plus `UPDATES`
/// updates in its layout, each with its own values and example count.
fn workload() -> (ParamSet, Vec<ValidUpdate>) {
    let w1 = 1000 * 784;
    let b1 = 1000;
    let w2 = 200 * 1000;
    let b2 = PARAMS - w1 - b1 - w2;
    let sizes = [
        ("layers.0.weight", vec![1000, 784], w1),
        ("layers.0.bias", vec![1000], b1),
        ("layers.1.weight", vec![200, 1000], w2),
        ("layers.1.bias", vec![b2], b2),
    ];
    let global = ParamSet::from_tensors(
        sizes
            .iter()
            .map(|(name, shape, n)| (name.to_string(), shape.clone(), vec![0.0f32; *n])),
    )
    .expect("valid layout");
    assert_eq!(global.num_values(), PARAMS);
    let updates = (0..UPDATES)
        .map(|u| {
            // A cheap deterministic pseudo-random pattern (no RNG needed, values differ per site).
            let mut state =
                0x9E37_79B9_7F4A_7C15u64 ^ (u as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let values: Vec<f32> = (0..PARAMS)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let params = ParamSet::from_flat(Arc::clone(global.layout()), values).expect("length");
            ValidUpdate {
                site: format!("site-{u}"),
                num_examples: 100 + u as u64,
                update_norm: params.l2_distance(&global),
                train_loss: 0.0,
                params,
            }
        })
        .collect();
    (global, updates)
}

fn bench_aggregation(c: &mut Criterion) {
    let (global, updates) = workload();

    let mut group = c.benchmark_group("aggregation");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(ROUND_BYTES));

    group.bench_function("fedavg/round", |b| {
        b.iter_batched(
            || updates.clone(),
            |batch| {
                let mut agg = FedAvg::new();
                agg.begin(&global);
                for u in batch {
                    agg.add(u).expect("same layout");
                }
                agg.finish().expect("non-empty round")
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("fedavg/add", |b| {
        b.iter_batched(
            || {
                // Clone first, then `begin`: the sum then sits above the clones on glibc's heap,
                // so the 400 MB freed by the adds is returned to the OS (one `brk` shrink, about
                // 20 ms here) when the aggregator is dropped after timing, as in `fedavg/round`.
                // With `begin` first, that trim lands inside the timed loop (52 ms instead of 31).
                let batch = updates.clone();
                let mut agg = FedAvg::new();
                agg.begin(&global);
                (agg, batch)
            },
            |(mut agg, batch)| {
                for u in batch {
                    agg.add(u).expect("same layout");
                }
                // Returned so that finishing and dropping the aggregator stay out of the timing.
                agg
            },
            BatchSize::PerIteration,
        );
    });

    let mut dst = vec![0.0f32; PARAMS];
    group.bench_function("memcpy/100x4MB", |b| {
        b.iter(|| {
            for u in &updates {
                dst.copy_from_slice(black_box(u.params.as_flat()));
                black_box(&mut dst);
            }
        });
    });

    group.finish();
}

criterion_group!(benches, bench_aggregation);
criterion_main!(benches);
