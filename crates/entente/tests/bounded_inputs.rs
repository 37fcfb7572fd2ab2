//! Inputs that once crashed entente or exhausted its memory (issue 11, item 2), each run
//! through the binary on a real file: every one is a clear error, before anything of the
//! input's size is allocated, naming the limit and how to raise it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A table manifest: 4 features, 3 classes, two sites; `extra` lines go under `[data]`.
fn manifest(dir: &Path, data: &str, extra: &str, model: &str) -> PathBuf {
    let text = format!(
        "[federation]\nname = \"bounded\"\nseed = 1\n\n\
         [data]\nformat = \"csv\"\npath = \"{data}\"\nsite_test_fraction = 0.0\n{extra}\n\n\
         [[sites]]\nname = \"site-a\"\n\n[[sites]]\nname = \"site-b\"\n\n\
         [model]\n{model}\n\n[training]\nrounds = 2\nlearning_rate = 0.05\n"
    );
    let path = dir.join("federation.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const SCHEMA: &str = "features = 4\nclasses = 3";
const MLP: &str = "kind = \"mlp\"\nhidden = [8]";

/// A table of `rows` rows of 4 features and a label (0, 1, 2 in turn).
fn table(dir: &Path, name: &str, rows: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..rows {
        text.push_str(&format!("0.{i},1.5,-2,{},{}\n", i % 7, i % 3));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `entente ARGS` in `dir`, killing it (and failing) if it has not ended after 60 s.
fn entente(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_entente"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not start the entente binary");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("entente {args:?} did not end within 60 s (blocked on its input?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `entente ARGS`, which must fail cleanly (an `error:` line, no panic), and returns its
/// stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let output = entente(dir, args);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "entente {args:?}: {err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

fn simulate<'a>(manifest: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["simulate", manifest.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap(), "-q"]);
    args
}

#[test]
fn a_table_of_one_row_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "one.csv", 1);
    for schema in ["", SCHEMA] {
        let m = manifest(dir.path(), "one.csv", schema, MLP);
        let err = refused(dir.path(), &simulate(&m, &dir.path().join("out"), &[]));
        assert!(
            err.contains("one.csv: holds 1 row(s)") && err.contains("at least 2"),
            "{err}"
        );
    }
}

#[test]
fn labels_beyond_the_classes_are_refused_where_they_stand() {
    let dir = tempfile::tempdir().unwrap();
    let data = table(dir.path(), "data.csv", 40);
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("1,2,3,4,4000000000\n");
    std::fs::write(dir.path().join("huge-label.csv"), &text).unwrap();
    std::fs::write(
        dir.path().join("many-classes.csv"),
        text.replace("4000000000", "99999"),
    )
    .unwrap();
    let out = dir.path().join("out");
    // Without a schema no label may reach 10,000 classes (it once built a 100,000-class
    // model, and a label of 4e9 aborted on a 128 GB allocation).
    let m = manifest(dir.path(), "data.csv", "", MLP);
    for (file, label) in [
        ("huge-label.csv", "4000000000"),
        ("many-classes.csv", "99999"),
    ] {
        let err = refused(dir.path(), &simulate(&m, &out, &["--data", file]));
        assert!(
            err.contains(&format!("{file}:41:5: label `{label}` is too large"))
                && err.contains("from 0 to 9999, below 10000"),
            "{err}"
        );
    }
    // With one, not beyond data.classes, at the node too, before it connects.
    let m = manifest(dir.path(), "data.csv", SCHEMA, MLP);
    let err = refused(
        dir.path(),
        &simulate(&m, &out, &["--data", "huge-label.csv"]),
    );
    assert!(
        err.contains("label `4000000000` is too large")
            && err.contains("from 0 to 2, below 3, the manifest's data.classes"),
        "{err}"
    );
    for args in [
        &["keys", "init", "--federation", "bounded", "--dir", "keys"][..],
        &["keys", "issue", "site-a", "--dir", "keys"],
    ] {
        assert!(
            entente(dir.path(), args).status.success(),
            "entente {args:?}"
        );
    }
    let err = refused(
        dir.path(),
        &[
            "join",
            m.to_str().unwrap(),
            "--coordinator",
            "https://127.0.0.1:9",
            "--site",
            "site-a",
            "--data",
            "huge-label.csv",
            "--max-retries",
            "1",
        ],
    );
    assert!(
        err.contains("huge-label.csv:41:5: label `4000000000` is too large")
            && err.contains("below 3"),
        "{err}"
    );
}

#[test]
fn a_model_too_large_to_hold_is_refused_before_it_is_built() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "data.csv", 40);
    let m = manifest(
        dir.path(),
        "data.csv",
        SCHEMA,
        "kind = \"mlp\"\nhidden = [100000000, 100000000]",
    );
    let err = refused(dir.path(), &simulate(&m, &dir.path().join("out"), &[]));
    assert!(err.contains("more than the limit of 1073741824"), "{err}");
    let err = refused(
        dir.path(),
        &["serve", m.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    assert!(err.contains("more than the limit of 1073741824"), "{err}");
}

#[test]
fn rounds_and_threads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "data.csv", 40);
    let m = manifest(dir.path(), "data.csv", SCHEMA, MLP);
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("rounds = 2", "rounds = 4294967295")).unwrap();
    let out = dir.path().join("out");
    let err = refused(dir.path(), &simulate(&m, &out, &[]));
    assert!(
        err.contains("training.rounds") && err.contains("allowed: 1 to 1000000"),
        "{err}"
    );
    std::fs::write(&m, text).unwrap();
    let err = refused(dir.path(), &simulate(&m, &out, &["--rounds", "4294967295"]));
    assert!(
        err.contains("--rounds") && err.contains("allowed: 1 to 1000000"),
        "{err}"
    );
    let err = refused(dir.path(), &simulate(&m, &out, &["--threads", "100000"]));
    assert!(
        err.contains("--threads must be between 1 and 1024"),
        "{err}"
    );
}

/// Gzip of `len` zero bytes after `head`, written in pieces (a bomb: tiny on disk).
fn gzip_bomb(path: &Path, head: &[u8], len: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    gz.write_all(head).unwrap();
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..len >> 20 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap();
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit_the_schema_sets() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "data.csv", 40);
    // 1,000 rows of 5 cells of at most 32 bytes, and 1 MiB of headers: 1,208,576 bytes.
    let m = manifest(
        dir.path(),
        "data.csv",
        &format!("{SCHEMA}\nmax_rows = 1000"),
        MLP,
    );
    gzip_bomb(&dir.path().join("bomb.csv.gz"), b"1,2,3,4,", 64 << 20);
    assert!(
        std::fs::metadata(dir.path().join("bomb.csv.gz"))
            .unwrap()
            .len()
            < 1 << 20
    );
    let err = refused(
        dir.path(),
        &simulate(&m, &dir.path().join("out"), &["--data", "bomb.csv.gz"]),
    );
    assert!(
        err.contains("bomb.csv.gz: decompresses to more than 1208576 bytes")
            && err.contains("raise data.max_rows"),
        "{err}"
    );
    // More rows than data.max_rows, in a file within the byte limit.
    table(dir.path(), "long.csv", 1001);
    let err = refused(
        dir.path(),
        &simulate(&m, &dir.path().join("out"), &["--data", "long.csv"]),
    );
    assert!(
        err.contains("long.csv: holds more than 1000 examples"),
        "{err}"
    );
}

#[test]
fn an_idx_gzip_bomb_is_refused_at_the_limit_the_schema_sets() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = Vec::new();
    for word in [0x803u32, 1000, 28, 28] {
        header.extend_from_slice(&word.to_be_bytes());
    }
    gzip_bomb(
        &dir.path().join("train-images-idx3-ubyte.gz"),
        &header,
        64 << 20,
    );
    let mut labels = [0x801u32, 1000].map(u32::to_be_bytes).concat();
    labels.extend((0..1000).map(|i| (i % 10) as u8));
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), labels).unwrap();
    let text = "[federation]\nname = \"bomb\"\n\n[data]\nformat = \"idx\"\npath = \".\"\n\
                shape = [1, 28, 28]\nclasses = 10\nmax_rows = 1000\n\n[[sites]]\nname = \"a\"\n\n\
                [model]\nkind = \"mlp\"\n\n[training]\nrounds = 1\nlearning_rate = 0.1\n";
    let m = dir.path().join("federation.toml");
    std::fs::write(&m, text).unwrap();
    let err = refused(dir.path(), &simulate(&m, &dir.path().join("out"), &[]));
    assert!(
        err.contains("train-images-idx3-ubyte.gz: decompresses to more than 784016 bytes")
            && err.contains("data.max_rows = 1000 images of 784 pixels"),
        "{err}"
    );
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn pipes_and_devices_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "data.csv", 40);
    mkfifo(&dir.path().join("pipe"));
    let out = dir.path().join("out");
    // As the manifest.
    for path in ["pipe", "/dev/zero"] {
        let err = refused(dir.path(), &["simulate", path, "--out", "out", "-q"]);
        assert!(err.contains("not a regular file"), "{path}: {err}");
    }
    // As the data.
    let m = manifest(dir.path(), "data.csv", SCHEMA, MLP);
    for (path, kind) in [
        ("pipe", "a named pipe (FIFO)"),
        ("/dev/zero", "a character device"),
    ] {
        let err = refused(dir.path(), &simulate(&m, &out, &["--data", path]));
        assert!(
            err.contains(&format!("is {kind}, not a regular file")),
            "{err}"
        );
    }
    // As an external model's initial tensors.
    for path in [dir.path().join("pipe"), PathBuf::from("/dev/zero")] {
        let model = format!("kind = \"external\"\ninit = \"{}\"", path.display());
        let m = manifest(dir.path(), "data.csv", SCHEMA, &model);
        let err = refused(dir.path(), &simulate(&m, &out, &[]));
        assert!(
            err.contains("model.init") && err.contains("not a regular file"),
            "{err}"
        );
    }
}

#[test]
fn huge_files_are_refused_by_their_size_before_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "data.csv", 40);
    // Sparse: they take no disk space, and reading them would take minutes and all memory.
    let sparse = |name: &str, len: u64| {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        path
    };
    let out = dir.path().join("out");
    let huge_manifest = sparse("huge.toml", 1 << 30);
    let err = refused(
        dir.path(),
        &[
            "simulate",
            huge_manifest.to_str().unwrap(),
            "--out",
            "out",
            "-q",
        ],
    );
    assert!(
        err.contains("holds 1073741824 bytes, more than 16777216 bytes"),
        "{err}"
    );
    let m = manifest(dir.path(), "data.csv", SCHEMA, MLP);
    sparse("huge.csv", 1 << 40);
    let err = refused(dir.path(), &simulate(&m, &out, &["--data", "huge.csv"]));
    assert!(
        err.contains("huge.csv: holds more than") && err.contains("raise data.max_rows"),
        "{err}"
    );
    let init = sparse("huge.safetensors", 1 << 40);
    let model = format!("kind = \"external\"\ninit = \"{}\"", init.display());
    let m = manifest(dir.path(), "data.csv", SCHEMA, &model);
    let err = refused(dir.path(), &simulate(&m, &out, &[]));
    assert!(
        err.contains("model.init") && err.contains("more than 17179869184 bytes"),
        "{err}"
    );
}
