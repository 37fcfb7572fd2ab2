//! What the binary's integration tests share: `entente` as a child process that is killed
//! when the test ends, its output line by line, and a free loopback port. Each test crate uses
//! what it needs of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process that is killed when the test ends, whatever happens.
pub struct Process {
    child: Child,
    lines: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Waits for a line of stdout containing `needle`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing `{needle}` within {limit:?}; output so far:\n{}",
                    self.seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Waits for the process to end and returns its exit status and all its output.
    pub fn finish(mut self, limit: Duration) -> (bool, String) {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                return (status.success(), self.seen.lock().unwrap().join("\n"));
            }
            assert!(
                Instant::now() < until,
                "process did not end within {limit:?}; output so far:\n{}",
                self.seen.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the process wrote so far, stdout and stderr, line by line.
    pub fn output(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }

    /// Asks the process to stop, as Ctrl-C or a service manager would (SIGTERM).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn entente() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_entente"));
    c.env_remove("RUST_LOG");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("could not start entente");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn spawn(cmd: &mut Command) -> Process {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not start entente");
    let (tx, rx) = channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (tx, seen) = (tx.clone(), Arc::clone(&seen));
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    Process {
        child,
        lines: rx,
        seen,
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh PostgreSQL database on the server that `ENTENTE_TEST_POSTGRES_URL` names (a role
/// that may create databases), dropped with this value.
pub struct TestDatabase {
    admin: String,
    name: String,
    /// The database's URL, with the admin URL's user and password.
    pub url: String,
}

impl TestDatabase {
    /// A database named `PREFIX_PID`; `None`, with a note, when no server is named (outside
    /// CI; `.ci/run` starts one).
    pub fn create(prefix: &str) -> Option<Self> {
        let Ok(admin) = std::env::var("ENTENTE_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set ENTENTE_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
            );
            eprintln!("skipped: ENTENTE_TEST_POSTGRES_URL not set");
            return None;
        };
        let name = format!("{prefix}_{}", std::process::id());
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let db = Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        };
        db.psql(&format!("DROP DATABASE IF EXISTS {}", db.name));
        db.psql(&format!("CREATE DATABASE {}", db.name));
        Some(db)
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .arg(&self.admin)
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql is needed for the PostgreSQL tests");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.psql(&format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// Runs Debian's headless Chromium with a throw-away `profile` and `args` (a URL last);
/// `None` if it is not installed.
pub fn chromium(args: &[&str], profile: &std::path::Path) -> Option<Output> {
    let profile = format!("--user-data-dir={}", profile.display());
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            profile.as_str(),
        ])
        .args(args)
        .output()
        .ok()
}
