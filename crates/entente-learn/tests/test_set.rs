//! The coordinator's held-out test set is checked against the model when the federation is set
//! up: test images of another size are refused before round 1, naming both sizes, instead of
//! failing the first evaluation.

use std::path::Path;

use entente_core::manifest::Manifest;
use entente_learn::data::Dataset;
use entente_learn::data::write::write_idx_train;
use entente_learn::simulation;

/// `n` seeded images of `side` x `side` pixels with labels 0-9.
fn images(n: usize, side: usize) -> Dataset {
    let features: Vec<f32> = (0..n * side * side)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u32).collect();
    Dataset::new(features, labels, vec![1, side, side], 10).unwrap()
}

/// An IDX folder whose training images are 8x8 and whose t10k (test) images are `test_side`.
fn idx_folder(dir: &Path, test_side: usize) {
    write_idx_train(dir, &images(60, 8)).unwrap();
    let other = dir.join("other");
    write_idx_train(&other, &images(20, test_side)).unwrap();
    for kind in ["images-idx3", "labels-idx1"] {
        std::fs::rename(
            other.join(format!("train-{kind}-ubyte")),
            dir.join(format!("t10k-{kind}-ubyte")),
        )
        .unwrap();
    }
}

/// A manifest without a data schema: the model's input comes from the training images.
fn manifest(dir: &Path) -> Manifest {
    let text = r#"
[federation]
name = "sizes"

[data]
format = "idx"
path = "data"

[[sites]]
name = "a"

[[sites]]
name = "b"

[model]
kind = "mlp"
hidden = [4]

[training]
rounds = 1
learning_rate = 0.1
"#;
    Manifest::parse(text, "sizes.toml", dir).unwrap()
}

#[test]
fn test_images_of_another_size_are_refused_before_any_round() {
    let dir = tempfile::tempdir().unwrap();
    idx_folder(&dir.path().join("data"), 4);
    let err = simulation::prepare(&manifest(dir.path()), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("held-out test set"), "{msg}");
    assert!(
        msg.contains("takes 64 input features") && msg.contains("have 16 (shape [1, 4, 4])"),
        "{msg}"
    );

    // Test images of the training images' size are taken.
    let same = tempfile::tempdir().unwrap();
    idx_folder(&same.path().join("data"), 8);
    let fed = simulation::prepare(&manifest(same.path()), None).unwrap();
    assert_eq!(fed.test.len(), 20);
    assert!(simulation::CentralTest::new(fed.spec.clone(), images(3, 4)).is_err());
    assert!(simulation::CentralTest::new(fed.spec, fed.test).is_ok());
}
