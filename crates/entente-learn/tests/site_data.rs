//! A node's own records: every row of its own file trains (less its own test split), and a file
//! that does not fit the manifest's schema is refused, naming what was expected and found.

use std::path::Path;

use entente_core::manifest::Manifest;
use entente_learn::site_data;

/// A three-site manifest over CSV tables of 4 features and 3 classes; site-b reads `own`.
fn manifest(dir: &Path, own: &str, extra_data: &str) -> Manifest {
    let text = format!(
        r#"
[federation]
name = "own-data"
seed = 3

[data]
format = "csv"
path = "shared.csv"
site_test_fraction = 0.1
features = 4
classes = 3
{extra_data}

[[sites]]
name = "site-a"

[[sites]]
name = "site-b"
data = "{own}"

[[sites]]
name = "site-c"

[model]
kind = "mlp"
hidden = [8]

[training]
rounds = 1
learning_rate = 0.1
"#
    );
    Manifest::parse(&text, "own.toml", dir).unwrap()
}

/// `rows` rows of `columns` features and a label below 3.
fn table(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let mut line: Vec<String> = (0..columns).map(|c| format!("{}", (r * c) % 7)).collect();
            line.push((r % 3).to_string());
            line.join(",") + "\n"
        })
        .collect()
}

#[test]
fn a_node_trains_on_every_row_of_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.csv"), table(250, 4)).unwrap();
    let m = manifest(dir.path(), "b.csv", "");
    let own = site_data::load(&m, 1, None).unwrap();
    // No global test set and no partition: 250 rows, 25 kept as the site's own test split.
    assert_eq!((own.train.len(), own.test.len()), (225, 25));
    assert_eq!(own.train.num_classes, 3);
    let site = site_data::local_site(&m, 1, None).unwrap();
    assert_eq!(site.train_data().len(), 225);

    // --data replaces the manifest's path.
    std::fs::write(dir.path().join("other.csv"), table(40, 4)).unwrap();
    let other = site_data::load(&m, 1, Some(&dir.path().join("other.csv"))).unwrap();
    assert_eq!(other.train.len() + other.test.len(), 40);
}

#[test]
fn a_file_with_another_column_count_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.csv"), table(50, 6)).unwrap();
    let m = manifest(dir.path(), "b.csv", "");
    let err = site_data::load(&m, 1, None).unwrap_err().to_string();
    assert!(err.contains("b.csv"), "{err}");
    assert!(err.contains("6 feature columns"), "{err}");
    assert!(err.contains("(4 features)"), "{err}");
}

#[test]
fn labels_beyond_the_declared_classes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = table(30, 4);
    rows.push_str("1,2,3,4,7\n");
    std::fs::write(dir.path().join("b.csv"), rows).unwrap();
    let err = site_data::load(&manifest(dir.path(), "b.csv", ""), 1, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label `7` is too large"), "{err}");
    assert!(
        err.contains("from 0 to 2, below 3, the manifest's data.classes"),
        "{err}"
    );
}

#[test]
fn a_file_with_fewer_classes_still_builds_the_declared_model() {
    let dir = tempfile::tempdir().unwrap();
    // Labels 0 and 1 only: the model still has the manifest's 3 outputs.
    let rows: String = (0..40).map(|r| format!("{r},1,2,3,{}\n", r % 2)).collect();
    std::fs::write(dir.path().join("b.csv"), rows).unwrap();
    let site = site_data::local_site(&manifest(dir.path(), "b.csv", ""), 1, None).unwrap();
    assert_eq!(site.train_data().num_classes, 3);
}

#[test]
fn without_a_schema_a_node_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.csv"), table(20, 4)).unwrap();
    let text = std::fs::read_to_string(dir.path().join("b.csv")).unwrap();
    assert!(!text.is_empty());
    let m = manifest(dir.path(), "b.csv", "");
    let mut no_schema = m.clone();
    no_schema.data.schema = None;
    let err = site_data::load(&no_schema, 1, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.features"), "{err}");
}

#[test]
fn an_external_mlp_must_have_one_output_per_declared_class() {
    // Five outputs for ten classes panicked deep in the trainer (index out of bounds) and took
    // the coordinator down; the manifest's model is refused instead.
    let dir = tempfile::tempdir().unwrap();
    let init = entente_core::params::ParamSet::from_tensors([
        ("layers.0.weight".to_string(), vec![8, 4], vec![0.1; 32]),
        ("layers.0.bias".to_string(), vec![8], vec![0.0; 8]),
        ("layers.1.weight".to_string(), vec![2, 8], vec![0.1; 16]),
        ("layers.1.bias".to_string(), vec![2], vec![0.0; 2]),
    ])
    .unwrap();
    init.save(&dir.path().join("init.safetensors")).unwrap();
    std::fs::write(dir.path().join("b.csv"), table(30, 4)).unwrap();
    let text = "[federation]\nname = \"x\"\n[data]\nformat = \"csv\"\npath = \"b.csv\"\nfeatures = 4\n\
         classes = 3\n[[sites]]\nname = \"a\"\n[model]\nkind = \"external\"\ninit = \"init.safetensors\"\n\
         [training]\nrounds = 1\nlearning_rate = 0.1\n";
    let m = Manifest::parse(text, "x.toml", dir.path()).unwrap();
    let err = entente_learn::simulation::federation_model(&m, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 outputs") && err.contains("3 classes"),
        "{err}"
    );
    let err = site_data::local_site(&m, 0, None).unwrap_err().to_string();
    assert!(err.contains("2 outputs"), "{err}");
}

#[test]
fn a_built_in_model_too_large_to_hold_is_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), "b.csv", "");
    let mut huge = m.clone();
    huge.model = entente_core::manifest::ModelChoice::Mlp {
        hidden: vec![1_000_000, 1_000_000],
    };
    let err = entente_learn::simulation::federation_model(&huge, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than the limit"), "{err}");
}
