//! Local training throughput of the 2NN (784-200-200-10 MLP) and the CNN on real Fashion-MNIST,
//! each without and with DP-SGD.
//!
//! One iteration is what a site does in one round: `trainer::train` for one epoch of minibatch
//! SGD (batch 32, lr 0.05, no momentum) over a fixed 6,400-example slice of the Fashion-MNIST
//! training set (the first 6,400 images, loaded once outside the timed code), starting from the
//! same seeded parameters every time. Reported as samples per second
//! (`Throughput::Elements(6400)`). `bench/pytorch_2nn.py` runs the same workload in PyTorch.
//!
//! Threads: the trainer runs as the library does by default, on burn's `flex` backend with its
//! `rayon` feature, i.e. on rayon's global pool, which has one thread per logical CPU unless
//! `RAYON_NUM_THREADS` says otherwise. In practice at batch 32 almost all of the work is single
//! threaded: flex hands a matmul to gemm's rayon parallelism only from 192^3 multiply-adds up,
//! and the largest product here (32x784 by 784x200, forward and weight gradient) is about 5.0M,
//! below that threshold, so the bench keeps about one core busy whatever the pool size (measured
//! on a 2-core machine: user CPU time about equal to wall time, and the same samples/s with
//! `RAYON_NUM_THREADS=1`). The result is named after the pool size (`.../rayon_threads_N`), so
//! a `RAYON_NUM_THREADS=1 cargo bench ...` run is kept next to the default one.
//!
//! Next to it, `2nn_fashion_mnist_epoch_b32_dp_sgd` runs the same epoch with DP-SGD
//! (`entente_learn::dp_sgd`): Poisson sampling with rate 32 / 6,400 for round(6,400 / 32) = 200
//! steps (so 6,400 examples in expectation, the same `Throughput::Elements(6400)`), per-example
//! gradients clipped to C = 1, Gaussian noise with sigma = 1, same learning rate. The ratio of
//! the two medians is the cost of privacy in throughput. Per-example norms and the clipped sum
//! cost no extra matmuls (the same three forward and five backward products as autodiff, plus
//! elementwise row norms), so most of the extra time is the noise: one Gaussian draw per
//! parameter (199,210) per step from a ChaCha8 stream, about half of a DP-SGD epoch in `perf`
//! on a 2-core machine (about 2.6-2.8x the non-private epoch time there). That cost is per
//! step, not per example, so it shrinks relative to the rest as the batch grows.
//!
//! The CNN pair does the same for McMahan et al.'s CNN (`ModelSpec::Cnn`, 1x28x28 inputs: two
//! 5x5 convolutions with 32 and 64 channels, each with ReLU and 2x2 max pooling, then 3136 ->
//! 512 -> 10; 1,663,370 parameters) on the first 1,280 images (40 minibatches of 32; one
//! iteration is one epoch, `Throughput::Elements(1280)`): `cnn_fashion_mnist_epoch_b32` with
//! burn autodiff and `cnn_fashion_mnist_epoch_b32_dp_sgd` with DP-SGD (rate 32 / 1,280, 40
//! steps, C = 1, sigma = 1). The DP-SGD path computes the per-example gradients of the
//! convolutions as one batched im2col matmul per layer, the same multiply-adds as the weight
//! gradient autodiff computes, and draws 1,663,370 Gaussians per step for the noise.
//!
//! Needs `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`); without it the
//! bench prints a note and measures nothing.
//!
//! Run with `cargo bench -p entente-learn --bench training`.

// criterion_main! writes the bench's `main`, which carries no doc comment.
#![allow(missing_docs)]

use std::path::Path;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use entente_core::engine::{DpSgd, LocalOptimizer, LocalTraining};
use entente_learn::data::{DataLimits, Split, load_idx_dir};
use entente_learn::model::ModelSpec;
use entente_learn::trainer::train;

/// Examples in the training slice (200 minibatches of 32).
const EXAMPLES: usize = 6_400;
/// Examples in the CNN's training slice (40 minibatches of 32).
const CNN_EXAMPLES: usize = 1_280;
/// Where Debian's `dataset-fashion-mnist` installs the IDX files.
const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

fn bench_training(c: &mut Criterion) {
    let dir = Path::new(FASHION_MNIST);
    let full = match load_idx_dir(dir, Split::Train, &DataLimits::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "skipping the training bench: cannot load Fashion-MNIST from {FASHION_MNIST}: {e}"
            );
            return;
        }
    };
    let indices: Vec<usize> = (0..EXAMPLES).collect();
    let data = full.subset(&indices);
    let cnn_data = full.subset(&indices[..CNN_EXAMPLES]);
    drop(full);

    let spec = ModelSpec::Mlp {
        input: 784,
        hidden: vec![200, 200],
        classes: 10,
    };
    let global = spec.init_params(7).expect("2NN parameters");
    let cfg = LocalTraining {
        epochs: 1,
        batch_size: 32,
        learning_rate: 0.05,
        optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
        fedprox_mu: 0.0,
        dp_sgd: None,
    };
    // Builds rayon's global pool now, the size the trainer will see (RAYON_NUM_THREADS or the
    // number of logical CPUs); it names the result so runs with different counts are kept apart.
    let threads = rayon::current_num_threads();
    eprintln!(
        "training bench: 2NN on {EXAMPLES} and CNN on {CNN_EXAMPLES} Fashion-MNIST examples, \
         batch 32, rayon threads {threads}"
    );

    let mut group = c.benchmark_group("training");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(EXAMPLES as u64));
    let id = BenchmarkId::new(
        "2nn_fashion_mnist_epoch_b32",
        format!("rayon_threads_{threads}"),
    );
    group.bench_function(id, |b| {
        b.iter(|| train(&spec, &global, &data, &cfg, 1).expect("training succeeds"));
    });
    let private = LocalTraining {
        dp_sgd: Some(DpSgd {
            clip: 1.0,
            noise_multiplier: 1.0,
        }),
        ..cfg.clone()
    };
    let id = BenchmarkId::new(
        "2nn_fashion_mnist_epoch_b32_dp_sgd",
        format!("rayon_threads_{threads}"),
    );
    group.bench_function(id, |b| {
        b.iter(|| train(&spec, &global, &data, &private, 1).expect("DP-SGD training succeeds"));
    });

    let cnn = ModelSpec::Cnn {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    let cnn_global = cnn.init_params(7).expect("CNN parameters");
    group.throughput(Throughput::Elements(CNN_EXAMPLES as u64));
    let id = BenchmarkId::new(
        "cnn_fashion_mnist_epoch_b32",
        format!("rayon_threads_{threads}"),
    );
    group.bench_function(id, |b| {
        b.iter(|| train(&cnn, &cnn_global, &cnn_data, &cfg, 1).expect("training succeeds"));
    });
    let id = BenchmarkId::new(
        "cnn_fashion_mnist_epoch_b32_dp_sgd",
        format!("rayon_threads_{threads}"),
    );
    group.bench_function(id, |b| {
        b.iter(|| {
            train(&cnn, &cnn_global, &cnn_data, &private, 1).expect("DP-SGD training succeeds")
        });
    });
    group.finish();
}

criterion_group!(benches, bench_training);
criterion_main!(benches);
