use std::path::Path;

use super::*;
use crate::aggregators::{FedOptKind, Strategy};
use crate::engine::LocalOptimizer;

const GOOD: &str = r#"
[federation]
name = "demo"
seed = 7

[data]
format = "csv"
path = "digits.csv.gz"
partition = "dirichlet"
alpha = 0.3

[[sites]]
name = "clinic-a"

[[sites]]
name = "clinic-b"

[[sites]]
name = "lab.c"

[model]
kind = "mlp"
hidden = [32]

[training]
rounds = 5
learning_rate = 0.1
momentum = 0.5

[strategy]
kind = "fedadam"
server_learning_rate = 0.02

[selection]
fraction = 0.5
min_sites = 2
"#;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, "test.toml", Path::new("/base"))
}

fn invalid(text: &str) -> (Option<usize>, String, String) {
    match parse(text) {
        Err(ManifestError::Invalid {
            line, key, message, ..
        }) => (line, key, message),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn parses_a_complete_manifest() {
    let m = parse(GOOD).unwrap();
    assert_eq!(m.name, "demo");
    assert_eq!(m.seed, 7);
    assert_eq!(m.sites, vec!["clinic-a", "clinic-b", "lab.c"]);
    assert_eq!(m.data.path, Path::new("/base/digits.csv.gz"));
    assert_eq!(m.data.partition, PartitionChoice::Dirichlet { alpha: 0.3 });
    assert!(matches!(
        m.data.format,
        DataFormat::Csv {
            standardize: true,
            ..
        }
    ));
    assert_eq!(m.model, ModelChoice::Mlp { hidden: vec![32] });
    assert_eq!(m.rounds, 5);
    assert_eq!(m.training.batch_size, 32);
    assert_eq!(m.training.optimizer, LocalOptimizer::Sgd { momentum: 0.5 });
    assert_eq!(
        m.strategy,
        Strategy::FedOpt {
            kind: FedOptKind::Adam,
            server_learning_rate: 0.02,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3
        }
    );
    assert_eq!(m.selection.min_sites, 2);
}

#[test]
fn unknown_key_names_key_line_and_allowed_keys() {
    let text = GOOD.replace("momentum = 0.5", "momentum = 0.5\nlearning_rat = 0.1");
    let err = parse(&text).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ManifestError::Syntax { .. }));
    assert!(msg.contains("learning_rat"), "{msg}");
    assert!(msg.contains("line 29"), "{msg}");
    assert!(
        msg.contains("learning_rate"),
        "allowed keys are listed: {msg}"
    );
}

#[test]
fn wrong_type_is_a_syntax_error_with_line() {
    let err = parse(&GOOD.replace("rounds = 5", "rounds = \"five\"")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 26") && msg.contains("rounds"), "{msg}");
}

#[test]
fn out_of_range_values_name_key_and_line() {
    let (line, key, msg) = invalid(&GOOD.replace("learning_rate = 0.1", "learning_rate = -1"));
    assert_eq!((line, key.as_str()), (Some(27), "training.learning_rate"));
    assert!(msg.contains("positive"), "{msg}");

    let (line, key, _) = invalid(&GOOD.replace("fraction = 0.5", "fraction = 1.5"));
    assert_eq!((line, key.as_str()), (Some(35), "selection.fraction"));

    let (_, key, msg) = invalid(&GOOD.replace("min_sites = 2", "min_sites = 4"));
    assert_eq!(key, "selection.min_sites");
    assert!(msg.contains("(3)"), "{msg}");

    let (_, key, _) = invalid(&GOOD.replace("alpha = 0.3", "alpha = 0"));
    assert_eq!(key, "data.alpha");

    // A deadline must be positive and small enough to be a duration (no overflow panic).
    for bad in ["0", "-5", "1e30"] {
        let text = GOOD.replace(
            "min_sites = 2",
            &format!("min_sites = 2\ndeadline_secs = {bad}"),
        );
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "selection.deadline_secs", "{bad}");
    }
    // Sent to the nodes as 32-bit numbers: larger ones are refused, not truncated.
    let (_, key, msg) = invalid(&GOOD.replace("rounds = 5", "rounds = 5\nbatch_size = 4294967296"));
    assert_eq!(key, "training.batch_size");
    assert!(msg.contains("4294967295"), "{msg}");
    assert_eq!(
        parse(GOOD).unwrap().selection.deadline,
        std::time::Duration::from_secs(600)
    );
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let (_, key, msg) = invalid(&GOOD.replace("kind = \"fedadam\"", "kind = \"fedsgd\""));
    assert_eq!(key, "strategy.kind");
    assert!(msg.contains("fedyogi") && msg.contains("krum"), "{msg}");
    let (_, key, msg) = invalid(&GOOD.replace("kind = \"mlp\"", "kind = \"resnet\""));
    assert_eq!(key, "model.kind");
    assert!(msg.contains("\"cnn\""), "{msg}");
}

#[test]
fn parameters_of_another_strategy_are_rejected() {
    let text = GOOD.replace("server_learning_rate = 0.02", "trim_fraction = 0.1");
    let (line, key, msg) = invalid(&text);
    assert_eq!((line, key.as_str()), (Some(32), "strategy.trim_fraction"));
    assert!(msg.contains("fedadam"), "{msg}");
}

#[test]
fn duplicate_and_malformed_site_names_point_at_the_site() {
    let text = GOOD.replace("name = \"lab.c\"", "name = \"clinic-a\"");
    let (line, key, msg) = invalid(&text);
    assert_eq!(key, "sites.name");
    assert_eq!(line, Some(13), "first occurrence of the duplicated name");
    assert!(msg.contains("twice"), "{msg}");
    let (line, _, msg) = invalid(&GOOD.replace("name = \"lab.c\"", "name = \"lab c\""));
    assert_eq!(line, Some(19));
    assert!(msg.contains("not a valid site name"), "{msg}");
}

#[test]
fn krum_needs_enough_sites() {
    let text = GOOD.replace(
        "kind = \"fedadam\"\nserver_learning_rate = 0.02",
        "kind = \"krum\"\nfaulty = 1",
    );
    let (_, key, msg) = invalid(&text);
    assert_eq!(key, "strategy.faulty");
    assert!(msg.contains("2 * faulty + 3"), "{msg}");
}

#[test]
fn csv_options_are_rejected_for_idx() {
    let text = GOOD.replace("format = \"csv\"", "format = \"idx\"\ntest_fraction = 0.3");
    let (_, key, _) = invalid(&text);
    assert_eq!(key, "data.test_fraction");
}

#[test]
fn missing_sites_is_an_error() {
    let text = GOOD
        .replace("[[sites]]\nname = \"clinic-a\"\n", "")
        .replace("[[sites]]\nname = \"clinic-b\"\n", "")
        .replace("[[sites]]\nname = \"lab.c\"\n", "");
    let (_, key, _) = invalid(&text);
    assert_eq!(key, "sites");
}

#[test]
fn shipped_examples_parse() {
    let examples = [
        (
            "digits.toml",
            include_str!("../../../../examples/digits.toml"),
        ),
        (
            "fashion-mnist.toml",
            include_str!("../../../../examples/fashion-mnist.toml"),
        ),
        (
            "fashion-mnist-fedavgm.toml",
            include_str!("../../../../examples/fashion-mnist-fedavgm.toml"),
        ),
        (
            "fashion-mnist-dp.toml",
            include_str!("../../../../examples/fashion-mnist-dp.toml"),
        ),
        (
            "digits-distributed-dp.toml",
            include_str!("../../../../examples/digits-distributed-dp.toml"),
        ),
    ];
    for (name, text) in examples {
        let m = Manifest::parse(text, name, Path::new("examples"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!m.sites.is_empty(), "{name}");
    }
    let fm = parse_named("fashion-mnist.toml", examples[1].1);
    assert_eq!(fm.sites.len(), 10);
    assert_eq!(fm.rounds, 30);
    assert_eq!(fm.data.partition, PartitionChoice::Dirichlet { alpha: 0.5 });
    assert_eq!(fm.strategy, Strategy::FedAvg);
    let dp = parse_named("fashion-mnist-dp.toml", examples[3].1);
    let privacy = dp.privacy.unwrap();
    assert_eq!((privacy.delta, privacy.budgets[0]), (1e-5, 3.0));
    assert!(dp.training.dp_sgd.is_some());
}

fn parse_named(name: &str, text: &str) -> Manifest {
    Manifest::parse(text, name, Path::new("examples")).unwrap()
}

#[test]
fn secure_aggregation_settings_are_checked() {
    let with = |extra: &str| format!("{GOOD}\n[secure_aggregation]\n{extra}\n");
    let m = parse(&with("threshold = 0.7\nclip = 0.5")).unwrap();
    let sa = m.secure_aggregation.unwrap();
    assert_eq!(
        (sa.threshold, sa.clip, sa.bits, sa.neighbours),
        (0.7, 0.5, 32, None)
    );
    assert!(parse(GOOD).unwrap().secure_aggregation.is_none());
    // The claims the coordinator accepts are bounded by the lower of the two max_examples.
    assert_eq!(m.policy.max_examples, Some(100_000));
    assert_eq!(parse(GOOD).unwrap().policy.max_examples, None);
    let bounded = |strategy: u64, secure: u64| {
        let text = GOOD.replace(
            "[strategy]\n",
            &format!("[strategy]\nmax_examples = {strategy}\n"),
        );
        let text = format!("{text}\n[secure_aggregation]\nmax_examples = {secure}\n");
        parse(&text).unwrap().policy.max_examples
    };
    assert_eq!(bounded(50, 100_000), Some(50));
    assert_eq!(bounded(1_000_000, 2_000), Some(2_000));

    let (_, key, _) = invalid(&with("threshold = 0.5"));
    assert_eq!(key, "secure_aggregation.threshold");
    let (_, key, msg) = invalid(&with("neighbours = 3"));
    assert_eq!(key, "secure_aggregation.neighbours");
    assert!(msg.contains("even"), "{msg}");
    let (_, key, _) = invalid(&with("bits = 16"));
    assert_eq!(key, "secure_aggregation.bits");
    // The mask generator: AES-128-CTR unless the manifest names ChaCha20.
    assert_eq!(sa.prg, SecAggPrg::Aes128Ctr);
    let prg = |name: &str| {
        let m = parse(&with(&format!("prg = \"{name}\""))).unwrap();
        m.secure_aggregation.unwrap().prg
    };
    assert_eq!(prg("chacha20"), SecAggPrg::ChaCha20);
    assert_eq!(prg("aes128-ctr"), SecAggPrg::Aes128Ctr);
    let (_, key, msg) = invalid(&with("prg = \"aes256\""));
    assert_eq!(key, "secure_aggregation.prg");
    assert!(msg.contains("aes128-ctr"), "{msg}");
    // The threat model: active unless the manifest says honest-but-curious; part of the terms.
    assert_eq!(sa.security, SecAggSecurity::Active);
    let security = |name: &str| {
        let m = parse(&with(&format!("security = \"{name}\""))).unwrap();
        let digest = m.agreement_digest();
        (m.secure_aggregation.unwrap().security, digest)
    };
    let (active, active_digest) = security("active");
    let (hbc, hbc_digest) = security("honest-but-curious");
    assert_eq!(
        (active, hbc),
        (SecAggSecurity::Active, SecAggSecurity::HonestButCurious)
    );
    assert_ne!(active_digest, hbc_digest);
    let (_, key, msg) = invalid(&with("security = \"paranoid\""));
    assert_eq!(key, "secure_aggregation.security");
    assert!(msg.contains("honest-but-curious"), "{msg}");

    let median = GOOD.replace(
        "kind = \"fedadam\"\nserver_learning_rate = 0.02",
        "kind = \"median\"",
    );
    let (_, key, msg) = invalid(&format!("{median}\n[secure_aggregation]\n"));
    assert_eq!(key, "strategy.kind");
    assert!(msg.contains("mean"), "{msg}");
}

#[test]
fn privacy_settings_give_dp_sgd_and_per_site_budgets() {
    let text = GOOD.replace(
        "name = \"clinic-b\"",
        "name = \"clinic-b\"\nepsilon_budget = 1.5",
    ) + "\n[privacy]\nmechanism = \"dp-sgd\"\nclip = 1.0\nnoise_multiplier = 1.1\nepsilon_budget = 3.0\n";
    let m = parse(&text).unwrap();
    let p = m.privacy.unwrap();
    assert_eq!(p.budgets, vec![3.0, 1.5, 3.0]);
    assert_eq!(p.delta, 1e-5);
    assert_eq!(p.ledger, Path::new("/base/privacy-ledger"));
    assert_eq!(
        m.training.dp_sgd,
        Some(crate::engine::DpSgd {
            clip: 1.0,
            noise_multiplier: 1.1
        })
    );

    let (_, key, _) = invalid(&text.replace("clip = 1.0", "clip = 0"));
    assert_eq!(key, "privacy.clip");
    let (_, key, msg) = invalid(&text.replace("\"dp-sgd\"", "\"laplace\""));
    assert_eq!(key, "privacy.mechanism");
    assert!(msg.contains("dp-sgd"), "{msg}");
    let (line, key, _) = invalid(&GOOD.replace(
        "name = \"clinic-b\"",
        "name = \"clinic-b\"\nepsilon_budget = 1.5",
    ));
    assert_eq!((line, key.as_str()), (Some(16), "sites.epsilon_budget"));

    // DP-SGD trains the CNN too.
    let m = parse(&text.replace("kind = \"mlp\"\nhidden = [32]", "kind = \"cnn\"")).unwrap();
    assert_eq!(m.model, ModelChoice::Cnn);
    assert!(m.training.dp_sgd.is_some());
}

#[test]
fn client_level_privacy_needs_fedavg_and_no_secure_aggregation() {
    let base = GOOD.replace(
        "kind = \"fedadam\"\nserver_learning_rate = 0.02",
        "kind = \"fedavg\"",
    );
    let text = base.clone()
        + "\n[privacy]\nmechanism = \"client\"\nclip = 0.5\nnoise_multiplier = 1.0\nepsilon_budget = 5.0\n";
    let m = parse(&text).unwrap();
    let p = m.privacy.unwrap();
    assert_eq!(p.mechanism, PrivacyMechanism::ClientLevel);
    assert!(
        m.training.dp_sgd.is_none(),
        "client-level DP does not touch local training"
    );

    let (_, key, _) = invalid(&text.replace("kind = \"fedavg\"", "kind = \"median\""));
    assert_eq!(key, "strategy.kind");
    let (_, key, _) = invalid(&(text + "\n[secure_aggregation]\n"));
    assert_eq!(key, "secure_aggregation");
}

#[test]
fn distributed_privacy_needs_secure_aggregation_wide_enough_for_the_noise() {
    let base = GOOD.replace(
        "kind = \"fedadam\"\nserver_learning_rate = 0.02",
        "kind = \"fedavg\"",
    );
    let privacy = "\n[privacy]\nmechanism = \"distributed\"\nclip = 0.5\nnoise_multiplier = 1.0\nepsilon_budget = 5.0\n";

    // Without [secure_aggregation]: refused, naming both keys.
    let (line, key, msg) = invalid(&(base.clone() + privacy));
    assert_eq!(key, "privacy.mechanism");
    assert_eq!(line, Some(38), "{msg}");
    assert!(msg.contains("[secure_aggregation]"), "{msg}");
    assert!(msg.contains("distributed"), "{msg}");

    // min_sites = 2: the range must reach 0.5 * (1 + 10 / sqrt(2)) = 4.0355.
    let (_, key, msg) = invalid(&(base.clone() + privacy + "\n[secure_aggregation]\nclip = 4.0\n"));
    assert_eq!(key, "secure_aggregation.clip");
    assert!(msg.contains("4.0355"), "{msg}");
    assert!(msg.contains("selection.min_sites"), "{msg}");
    let text = base.clone() + privacy + "\n[secure_aggregation]\nclip = 4.1\n";
    let m = parse(&text).unwrap();
    let p = m.privacy.as_ref().unwrap();
    assert_eq!(p.mechanism, PrivacyMechanism::Distributed);
    assert_eq!(p.budgets, vec![5.0; 3]);
    assert!(m.training.dp_sgd.is_none());
    assert_eq!(m.secure_aggregation.as_ref().unwrap().clip, 4.1);
    assert!((distributed_dp_range(0.5, 1.0, 2) - 4.035_533_9).abs() < 1e-6);

    // The noisy mean may feed a server optimizer (post-processing), but not a robust rule.
    let fedavgm = text.replace("kind = \"fedavg\"", "kind = \"fedavgm\"");
    assert!(parse(&fedavgm).is_ok());
    let (_, key, _) = invalid(&text.replace("kind = \"fedavg\"", "kind = \"median\""));
    assert_eq!(key, "strategy.kind");

    // Central client-level DP with secure aggregation points at "distributed".
    let (_, key, msg) = invalid(&text.replace("\"distributed\"", "\"client\""));
    assert_eq!(key, "secure_aggregation");
    assert!(msg.contains("\"distributed\""), "{msg}");
}

/// [`GOOD`] with `insert` added to its `[data]` table.
fn with_data(insert: &str) -> String {
    GOOD.replace("alpha = 0.3\n", &format!("alpha = 0.3\n{insert}\n"))
}

#[test]
fn the_data_schema_is_read_and_checked() {
    let m = parse(&with_data("shape = [1, 8, 8]\nclasses = 10")).unwrap();
    let schema = m.data.schema.unwrap();
    assert_eq!((schema.shape.clone(), schema.classes), (vec![1, 8, 8], 10));
    assert_eq!(schema.features(), 64);
    let m = parse(&with_data("features = 64\nclasses = 10")).unwrap();
    assert_eq!(m.data.schema.unwrap().shape, vec![64]);
    assert!(parse(GOOD).unwrap().data.schema.is_none());

    let (_, key, message) = invalid(&with_data("features = 64"));
    assert_eq!(key, "data.classes");
    assert!(message.contains("need data.classes"), "{message}");
    let (_, key, _) = invalid(&with_data("classes = 10"));
    assert_eq!(key, "data.classes");
    let (_, key, _) = invalid(&with_data("features = 64\nshape = [64]\nclasses = 3"));
    assert_eq!(key, "data.features");
    let (_, key, message) = invalid(&with_data("features = 64\nclasses = 4000000000"));
    assert_eq!(key, "data.classes");
    assert!(message.contains("2 to 10000"), "{message}");
    let (_, key, _) = invalid(&with_data("shape = [1, 0, 8]\nclasses = 10"));
    assert_eq!(key, "data.shape");
    let (_, _, message) = invalid(&with_data("shape = [100000, 100000, 100000]\nclasses = 10"));
    assert!(message.contains("more than"), "{message}");
}

#[test]
fn each_site_may_name_its_own_data_outside_the_agreement() {
    let own = GOOD.replace(
        "name = \"clinic-a\"\n",
        "name = \"clinic-a\"\ndata = \"mine/clinic-a.csv\"\n",
    );
    let m = parse(&own).unwrap();
    assert_eq!(m.site_data_path(0), Path::new("/base/mine/clinic-a.csv"));
    assert_eq!(m.site_data_path(1), Path::new("/base/digits.csv.gz"));
    assert_eq!(
        m.agreement_digest(),
        parse(GOOD).unwrap().agreement_digest(),
        "a site's own data path is not part of the agreement"
    );
    let (_, key, _) = invalid(&GOOD.replace(
        "name = \"clinic-a\"\n",
        "name = \"clinic-a\"\ndata = \" \"\n",
    ));
    assert_eq!(key, "sites.data");
}

#[test]
fn an_external_model_is_agreed_by_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: f32| {
        let p = crate::params::ParamSet::from_tensors([
            ("layers.0.weight".to_string(), vec![2, 3], vec![value; 6]),
            ("layers.0.bias".to_string(), vec![2], vec![0.0; 2]),
        ])
        .unwrap();
        p.save(&dir.path().join(name)).unwrap();
    };
    write("a.safetensors", 0.5);
    write("b.safetensors", 0.5);
    write("c.safetensors", 0.25);
    let external = |file: &str| {
        GOOD.replace(
            "kind = \"mlp\"\nhidden = [32]",
            &format!("kind = \"external\"\ninit = \"{file}\""),
        )
    };
    let load = |file: &str| Manifest::parse(&external(file), "t.toml", dir.path()).unwrap();
    let a = load("a.safetensors");
    let init = a.external_init().unwrap().unwrap();
    assert_eq!(init.get("layers.0.weight").unwrap(), &[0.5; 6]);
    // Same content under another name: the same agreement; other values: another one.
    assert_eq!(
        a.agreement_digest(),
        load("b.safetensors").agreement_digest()
    );
    assert_ne!(
        a.agreement_digest(),
        load("c.safetensors").agreement_digest()
    );

    let missing = Manifest::parse(&external("none.safetensors"), "t.toml", dir.path());
    match missing {
        Err(ManifestError::Invalid { key, message, .. }) => {
            assert_eq!(key, "model.init");
            assert!(message.contains("none.safetensors"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    std::fs::write(dir.path().join("junk.safetensors"), b"not a model").unwrap();
    let junk = Manifest::parse(&external("junk.safetensors"), "t.toml", dir.path());
    assert!(
        matches!(junk, Err(ManifestError::Invalid { ref key, .. }) if key == "model.init"),
        "{junk:?}"
    );
    let (_, key, _) =
        invalid(&GOOD.replace("kind = \"mlp\"\nhidden = [32]", "kind = \"external\""));
    assert_eq!(key, "model.init");
}

#[test]
fn site_names_that_name_folders_are_refused() {
    for name in [".", ".."] {
        let (_, key, _) = invalid(&GOOD.replace("name = \"lab.c\"", &format!("name = \"{name}\"")));
        assert_eq!(key, "sites.name", "{name}");
    }
}

#[test]
fn rounds_are_bounded() {
    let m = parse(&GOOD.replace("rounds = 5", "rounds = 1000000")).unwrap();
    assert_eq!(m.rounds, MAX_ROUNDS);
    for rounds in ["0", "1000001", "4294967295"] {
        let (line, key, message) =
            invalid(&GOOD.replace("rounds = 5", &format!("rounds = {rounds}")));
        assert_eq!(
            (line, key.as_str()),
            (Some(26), "training.rounds"),
            "{rounds}"
        );
        assert!(message.contains("allowed: 1 to 1000000"), "{message}");
    }
}

#[test]
fn max_rows_is_a_local_limit_with_a_default() {
    let m = parse(GOOD).unwrap();
    assert_eq!(m.data.max_rows, DEFAULT_MAX_ROWS);
    let raised = parse(&with_data("max_rows = 50000000")).unwrap();
    assert_eq!(raised.data.max_rows, 50_000_000);
    assert_eq!(
        raised.agreement_digest(),
        m.agreement_digest(),
        "each site sets its own limit"
    );
    for bad in ["0", "4294967297"] {
        let (_, key, message) = invalid(&with_data(&format!("max_rows = {bad}")));
        assert_eq!(key, "data.max_rows");
        assert!(message.contains("allowed: 1 to 4294967296"), "{message}");
    }
}

#[cfg(unix)]
#[test]
fn a_manifest_must_be_a_regular_file_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let err = Manifest::load(Path::new("/dev/zero")).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::File(crate::files::FileError::NotAFile { .. })
        ),
        "{err:?}"
    );
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_MANIFEST_BYTES + 1)
        .unwrap();
    let err = Manifest::load(&huge).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than 16777216 bytes, the limit for a manifest"),
        "{err}"
    );
}

#[test]
fn a_manifest_that_is_not_utf8_is_refused_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    // "café" in Latin-1 on line 3: the 0xe9 byte is the 12th character of that line.
    let text = GOOD.replacen("name = \"demo\"", "name = \"caf\u{1}\"", 1);
    let mut bytes = text.into_bytes();
    let at = bytes.iter().position(|&b| b == 1).unwrap();
    bytes[at] = 0xe9;
    std::fs::write(&path, &bytes).unwrap();
    let err = Manifest::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ManifestError::Syntax { .. }), "{err:?}");
    assert!(msg.contains("latin1.toml"), "{msg}");
    assert!(msg.contains("line 3, column 12"), "{msg}");
    assert!(
        msg.contains("0xe9") && msg.contains("save the file as UTF-8"),
        "{msg}"
    );
}

#[test]
fn long_values_are_cut_short_in_errors() {
    let huge = "a".repeat(50_000_000);
    // A value the checks refuse, a path no file system takes, and a line the parser refuses.
    for text in [
        GOOD.replace("name = \"demo\"", &format!("name = \"{huge}\"")),
        GOOD.replace("kind = \"fedadam\"", &format!("kind = \"{huge}\"")),
        GOOD.replace("digits.csv.gz", &huge),
        GOOD.replace("name = \"demo\"", &format!("name = {huge}")),
        GOOD.replace("momentum = 0.5", &format!("{huge} = 0.5")),
    ] {
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.len() < 2000, "{} bytes: {}", msg.len(), &msg[..200]);
        assert!(
            msg.contains("50000000 bytes in all") || msg.contains('…'),
            "{msg}"
        );
    }
}

#[test]
fn personalization_is_fine_tuning_or_ditto_with_bounded_settings() {
    assert_eq!(parse(GOOD).unwrap().personalization, None);
    let with = |table: &str| format!("{GOOD}\n[personalization]\n{table}\n");
    let m = parse(&with("method = \"finetune\"")).unwrap();
    assert_eq!(
        m.personalization,
        Some(Personalization::FineTune { epochs: 1 })
    );
    let m = parse(&with("method = \"finetune\"\nepochs = 5")).unwrap();
    assert_eq!(
        m.personalization,
        Some(Personalization::FineTune { epochs: 5 })
    );
    let (line, key, msg) = invalid(&with("method = \"fedavg\""));
    assert_eq!(key, "personalization.method");
    assert!(line.is_some());
    assert!(
        msg.contains("\"fedper\"") && msg.contains("\"finetune\"") && msg.contains("\"ditto\""),
        "{msg}"
    );
    let m = parse(&with("method = \"ditto\"\nlambda = 0.5")).unwrap();
    assert_eq!(
        m.personalization,
        Some(Personalization::Ditto { lambda: 0.5 })
    );
    let (_, key, msg) = invalid(&with("method = \"ditto\""));
    assert_eq!(key, "personalization");
    assert!(msg.contains("needs `lambda`"), "{msg}");
    for bad in ["-1.0", "nan", "inf", "2e6"] {
        let (_, key, _) = invalid(&with(&format!("method = \"ditto\"\nlambda = {bad}")));
        assert_eq!(key, "personalization.lambda", "{bad}");
    }
    // With SGD at learning rate 0.1 a step moves lambda / 10 of the way to the global model.
    assert!(parse(&with("method = \"ditto\"\nlambda = 10.0")).is_ok());
    let (_, key, msg) = invalid(&with("method = \"ditto\"\nlambda = 20.0"));
    assert_eq!(key, "personalization.lambda");
    assert!(
        msg.contains("at most 1") && msg.contains("lambda <= 10"),
        "{msg}"
    );
    let (_, key, _) = invalid(&with("method = \"ditto\"\nlambda = 1.0\nepochs = 2"));
    assert_eq!(key, "personalization.epochs");
    let (_, key, _) = invalid(&with("method = \"finetune\"\nlambda = 1.0"));
    assert_eq!(key, "personalization.lambda");
    for epochs in ["0", "1001"] {
        let (_, key, msg) = invalid(&with(&format!("method = \"finetune\"\nepochs = {epochs}")));
        assert_eq!(key, "personalization.epochs");
        assert!(msg.contains("1 to 1000"), "{msg}");
    }
    // Part of what every site agrees to.
    assert_ne!(
        parse(GOOD).unwrap().agreement_digest(),
        parse(&with("method = \"finetune\""))
            .unwrap()
            .agreement_digest()
    );
}

#[test]
fn fedper_and_fedrep_name_personal_tensors_of_the_model_and_leave_one_shared() {
    let with = |table: &str| format!("{GOOD}\n[personalization]\n{table}\n");
    let head = "personal = [\"layers.1.weight\", \"layers.1.bias\"]";
    let m = parse(&with(&format!("method = \"fedper\"\n{head}"))).unwrap();
    let personal = vec!["layers.1.weight".to_string(), "layers.1.bias".to_string()];
    assert_eq!(
        m.personalization,
        Some(Personalization::FedPer {
            personal: personal.clone()
        })
    );
    assert_eq!(m.personal_tensors(), personal.as_slice());
    assert_eq!(
        m.personal_dir,
        Some(Path::new("/base/personal-models").into())
    );
    let m = parse(&with(&format!(
        "method = \"fedrep\"\n{head}\nhead_epochs = 3\ndir = \"mine\""
    )))
    .unwrap();
    assert_eq!(
        m.personalization,
        Some(Personalization::FedRep {
            personal: personal.clone(),
            head_epochs: 3
        })
    );
    assert_eq!(m.personal_dir, Some(Path::new("/base/mine").into()));
    // The folder is each node's own business, outside the agreement; the tensors are not.
    assert_eq!(
        m.agreement_digest(),
        parse(&with(&format!(
            "method = \"fedrep\"\n{head}\nhead_epochs = 3"
        )))
        .unwrap()
        .agreement_digest()
    );
    assert_ne!(
        m.agreement_digest(),
        parse(&with(
            "method = \"fedrep\"\npersonal = [\"layers.1.bias\"]\nhead_epochs = 3"
        ))
        .unwrap()
        .agreement_digest()
    );
    assert_eq!(
        parse(&with(&format!("method = \"fedrep\"\n{head}")))
            .unwrap()
            .personalization,
        Some(Personalization::FedRep {
            personal,
            head_epochs: 1
        })
    );

    let (_, key, msg) = invalid(&with("method = \"fedper\""));
    assert_eq!(key, "personalization");
    assert!(msg.contains("needs `personal`"), "{msg}");
    let (line, key, msg) = invalid(&with(
        "method = \"fedper\"\npersonal = [\"layers.2.weight\"]",
    ));
    assert_eq!(key, "personalization.personal");
    assert!(line.is_some());
    assert!(
        msg.contains("`layers.2.weight` is not a tensor of the model")
            && msg.contains("layers.0.weight, layers.0.bias, layers.1.weight, layers.1.bias"),
        "{msg}"
    );
    for bad in [
        "[]",
        "[\"layers.1.bias\", \"layers.1.bias\"]",
        "[\"layers.0.weight\", \"layers.0.bias\", \"layers.1.weight\", \"layers.1.bias\"]",
    ] {
        let (_, key, _) = invalid(&with(&format!("method = \"fedper\"\npersonal = {bad}")));
        assert_eq!(key, "personalization.personal", "{bad}");
    }
    let (_, key, msg) = invalid(&with(&format!(
        "method = \"fedper\"\n{head}\nhead_epochs = 2"
    )));
    assert_eq!(key, "personalization.head_epochs");
    assert!(msg.contains("\"fedrep\""), "{msg}");
    for epochs in ["0", "1001"] {
        let (_, key, _) = invalid(&with(&format!(
            "method = \"fedrep\"\n{head}\nhead_epochs = {epochs}"
        )));
        assert_eq!(key, "personalization.head_epochs");
    }
    for other in ["epochs = 2", "lambda = 0.1"] {
        let (_, key, _) = invalid(&with(&format!("method = \"fedrep\"\n{head}\n{other}")));
        assert!(key.starts_with("personalization."), "{other}: {key}");
    }
    let (_, key, _) = invalid(&with(&format!("method = \"finetune\"\n{head}")));
    assert_eq!(key, "personalization.personal");
    let (_, key, _) = invalid(&with("method = \"finetune\"\ndir = \"x\""));
    assert_eq!(key, "personalization.dir");
    // What does not handle a partly personal model yet is refused, with the key.
    let secure =
        format!("{GOOD}\n[secure_aggregation]\n\n[personalization]\nmethod = \"fedper\"\n{head}\n");
    assert_eq!(invalid(&secure).1, "secure_aggregation");
    // The CNN's tensors are named as PyTorch names them.
    let cnn = GOOD
        .replace("hidden = [32]", "")
        .replace("kind = \"mlp\"", "kind = \"cnn\"");
    let cnn_with = |personal: &str| {
        format!("{cnn}\n[personalization]\nmethod = \"fedper\"\npersonal = {personal}\n")
    };
    assert!(parse(&cnn_with("[\"fc2.weight\", \"fc2.bias\"]")).is_ok());
    assert_eq!(
        invalid(&cnn_with("[\"layers.1.bias\"]")).1,
        "personalization.personal"
    );
    assert_eq!(
        model_tensor_names(&ModelChoice::Cnn).unwrap(),
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias"
        ]
    );
}

#[test]
fn scaffold_takes_a_server_rate_and_a_local_control_dir_and_refuses_what_it_cannot_cover() {
    let scaffold = GOOD
        .replace(
            "kind = \"fedadam\"\nserver_learning_rate = 0.02",
            "kind = \"scaffold\"",
        )
        .replace("momentum = 0.5", "momentum = 0.0");
    let m = parse(&scaffold).unwrap();
    assert_eq!(
        m.strategy,
        Strategy::Scaffold {
            server_learning_rate: 1.0,
            population: 3
        }
    );
    assert_eq!(
        m.control_dir.as_deref(),
        Some(Path::new("/base/scaffold-controls"))
    );
    assert_eq!(parse(GOOD).unwrap().control_dir, None);
    // Where a site keeps its control variate is its own business, not a term.
    let elsewhere = scaffold.replace(
        "kind = \"scaffold\"",
        "kind = \"scaffold\"\ncontrol_dir = \"/var/lib/entente\"",
    );
    let moved = parse(&elsewhere).unwrap();
    assert_eq!(
        moved.control_dir.as_deref(),
        Some(Path::new("/var/lib/entente"))
    );
    assert_eq!(moved.agreement_digest(), m.agreement_digest());
    let (_, key, _) = invalid(&GOOD.replace(
        "server_learning_rate = 0.02",
        "server_learning_rate = 0.02\ncontrol_dir = \"x\"",
    ));
    assert_eq!(key, "strategy.control_dir");

    let (_, key, msg) = invalid(&format!(
        "{scaffold}\n[secure_aggregation]\nthreshold = 0.7\nclip = 0.5\n"
    ));
    assert_eq!(key, "secure_aggregation");
    assert!(msg.contains("control variates"), "{msg}");
    let (_, key, msg) = invalid(&format!(
        "{scaffold}\n[privacy]\nmechanism = \"dp-sgd\"\nclip = 0.5\nnoise_multiplier = 1.0\nepsilon_budget = 5.0\n"
    ));
    assert_eq!(key, "privacy");
    assert!(msg.contains("control variates"), "{msg}");
    let (_, key, msg) = invalid(&scaffold.replace("momentum = 0.0", "momentum = 0.5"));
    assert_eq!(key, "training.momentum");
    assert!(msg.contains("must be 0"), "{msg}");
    let (_, key, msg) = invalid(&scaffold.replace("momentum = 0.0", "optimizer = \"adam\""));
    assert_eq!(key, "training.optimizer");
    assert!(msg.contains("\"sgd\""), "{msg}");
    let (_, key, _) = invalid(&format!(
        "{scaffold}\n[personalization]\nmethod = \"ditto\"\nlambda = 0.1\n"
    ));
    assert_eq!(key, "personalization.method");
    assert!(
        parse(&format!(
            "{scaffold}\n[personalization]\nmethod = \"finetune\"\n"
        ))
        .is_ok()
    );
    let (_, key, _) = invalid(&scaffold.replace(
        "kind = \"scaffold\"",
        "kind = \"scaffold\"\nserver_learning_rate = 0.0",
    ));
    assert_eq!(key, "strategy.server_learning_rate");
}

#[test]
fn require_signatures_takes_all_none_or_a_list_of_its_sites() {
    let with = |value: &str| format!("{GOOD}\n[agreement]\nrequire_signatures = {value}\n");
    assert!(parse(GOOD).unwrap().required_signatures.is_empty());
    assert_eq!(
        parse(&with("\"all\"")).unwrap().required_signatures,
        vec!["clinic-a", "clinic-b", "lab.c"]
    );
    assert!(
        parse(&with("\"none\""))
            .unwrap()
            .required_signatures
            .is_empty()
    );
    assert!(parse(&with("[]")).unwrap().required_signatures.is_empty());
    assert!(
        parse(&format!("{GOOD}\n[agreement]\n"))
            .unwrap()
            .required_signatures
            .is_empty()
    );
    // A stated set, kept in manifest order whatever order it is listed in.
    assert_eq!(
        parse(&with("[\"lab.c\", \"clinic-a\"]"))
            .unwrap()
            .required_signatures,
        vec!["clinic-a", "lab.c"]
    );

    let (line, key, msg) = invalid(&with("[\"clinic-a\", \"clinic-z\"]"));
    assert_eq!(key, "agreement.require_signatures");
    assert!(line.is_some(), "no line for {msg}");
    assert!(
        msg.contains("`clinic-z` is not a site of this manifest"),
        "{msg}"
    );
    let (_, key, msg) = invalid(&with("[\"clinic-a\", \"clinic-a\"]"));
    assert_eq!(key, "agreement.require_signatures");
    assert!(msg.contains("`clinic-a` is listed twice"), "{msg}");
    let (_, key, msg) = invalid(&with("\"every\""));
    assert_eq!(key, "agreement.require_signatures");
    assert!(
        msg.contains("`every` is not allowed") && msg.contains("\"all\""),
        "{msg}"
    );
    // Not a word or a list of names, or an unknown key of [agreement]: refused, not ignored.
    assert!(matches!(
        parse(&with("3")),
        Err(ManifestError::Syntax { .. } | ManifestError::Invalid { .. })
    ));
    assert!(matches!(
        parse(&format!(
            "{GOOD}\n[agreement]\nrequire_signature = \"all\"\n"
        )),
        Err(ManifestError::Syntax { .. } | ManifestError::Invalid { .. })
    ));

    // Which signatures are required is itself a term every site agrees to.
    let none = parse(GOOD).unwrap().agreement_digest();
    let all = parse(&with("\"all\"")).unwrap().agreement_digest();
    let some = parse(&with("[\"clinic-a\"]")).unwrap().agreement_digest();
    assert_ne!(none, all);
    assert_ne!(all, some);
    assert_ne!(none, some);
}
