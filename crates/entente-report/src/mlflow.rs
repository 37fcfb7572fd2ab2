//! Runs logged to an MLflow tracking server through its REST API (`/api/2.0/mlflow/...`): the
//! manifest's settings as parameters, each round's figures as metrics at step = round, and the
//! final model as an artifact, so that a federated run sits beside a team's other experiments.
//!
//! The experiment is the federation's name (created when missing); the model is uploaded
//! through the server's artifact proxy (`mlflow server` serves artifacts by default), which
//! a run's `mlflow-artifacts:/` artifact URI names.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use entente_core::text::{excerpt, printable};
use serde_json::{Value, json};

/// MLflow's limits on one `log-batch` call.
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
/// Longest parameter value MLflow stores everywhere (older servers: 500 characters).
const MAX_PARAM_VALUE: usize = 500;
/// Longest a call to the server may take, from connecting to the last byte of its answer
/// (a model upload: plus [`upload_allowance`]). A server that stalls costs a run this once:
/// after one call failed, no other reaches the server.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Most bytes of an answer read; MLflow's answers to these calls are a few hundred.
const MAX_ANSWER: u64 = 1 << 20;
/// Longest message of the server's quoted in an error, in characters.
const MAX_MESSAGE: usize = 300;

/// What uploading `bytes` bytes may take beyond the deadline of a call: a second per MiB
/// begun (a link of 8 Mbit/s or more).
pub fn upload_allowance(bytes: u64) -> Duration {
    Duration::from_secs(bytes.div_ceil(1 << 20))
}

/// Why a call to the tracking server failed.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// The server could not be reached.
    #[error("MLflow tracking server {uri}: {reason} (is `mlflow server` running there?)")]
    Unreachable {
        /// The server's address.
        uri: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The server did not send its whole answer in time.
    #[error("MLflow tracking server: {url} did not answer within {} s", .after.as_secs_f64())]
    TimedOut {
        /// The URL called.
        url: String,
        /// The deadline of the call.
        after: Duration,
    },
    /// The answer's body could not be read.
    #[error(
        "MLflow tracking server: the answer of {url} (HTTP {status}) could not be read: {reason}"
    )]
    Unreadable {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What the HTTP client said.
        reason: String,
    },
    /// The answer is longer than any MLflow answer to the call.
    #[error(
        "MLflow tracking server: the answer of {url} is longer than {limit} bytes; an MLflow \
         tracking server's is a few hundred"
    )]
    TooLarge {
        /// The URL called.
        url: String,
        /// The most bytes read.
        limit: u64,
    },
    /// A successful answer that is not JSON.
    #[error(
        "MLflow tracking server: {url} answered HTTP {status} with something that is not JSON \
         ({excerpt}); is an MLflow tracking server there?"
    )]
    NotJson {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's beginning, control characters escaped.
        excerpt: String,
    },
    /// A JSON answer that lacks what MLflow sends.
    #[error(
        "{uri} does not look like an MLflow tracking server: its answer to {call} has no {missing}"
    )]
    NotMlflow {
        /// The server's address.
        uri: String,
        /// Which call.
        call: String,
        /// The field that is missing or empty.
        missing: String,
    },
    /// The server refused a call.
    #[error("MLflow tracking server {uri} refused {call} with HTTP {status}: {message}")]
    Refused {
        /// The server's address.
        uri: String,
        /// Which call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// What the server said, control characters escaped.
        message: String,
    },
    /// An earlier call of this run failed, so this one was not made.
    #[error("MLflow tracking server {uri}: not called again after an earlier call failed")]
    GaveUp {
        /// The server's address.
        uri: String,
    },
    /// The run's artifacts are not stored through this server.
    #[error(
        "the run's artifact location {artifact_uri} is not served by the tracking server; start \
         it with --serve-artifacts (the default of `mlflow server`) to upload the model"
    )]
    NoArtifactProxy {
        /// The run's artifact URI.
        artifact_uri: String,
    },
    /// A local file could not be read.
    #[error("could not read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// What the HTTP client made of a request.
type Sent = Result<ureq::http::Response<ureq::Body>, ureq::Error>;

/// One call to the server.
struct Call<'a> {
    /// Its name in messages.
    name: &'a str,
    url: &'a str,
    /// The longest it may take, answer included.
    deadline: Duration,
    json: Json,
}

/// Whether a successful answer must be JSON.
#[derive(Clone, Copy)]
enum Json {
    /// The REST API's calls.
    Expected,
    /// The artifact proxy's upload.
    NotExpected,
}

/// One MLflow run, open until [`MlflowRun::finish`]. Each call to the server has a deadline
/// ([`DEADLINE`] unless [`MlflowRun::start_within`] sets another), and once one call failed
/// (unreachable, late, refused, or an answer that is not MLflow's) no later call reaches the
/// server: each returns [`MlflowError::GaveUp`] at once, so that a failing server costs a run
/// at most about one deadline.
pub struct MlflowRun {
    uri: String,
    agent: ureq::Agent,
    deadline: Duration,
    run_id: String,
    artifact_uri: String,
    /// Set by the first call that failed.
    failed: AtomicBool,
}

impl MlflowRun {
    /// Opens a run named `run_name` in experiment `experiment` (created when missing) on the
    /// server at `uri` (such as `http://127.0.0.1:5000`) and logs `params`.
    pub fn start(
        uri: &str,
        experiment: &str,
        run_name: &str,
        params: &[(String, String)],
    ) -> Result<Self, MlflowError> {
        Self::start_within(uri, experiment, run_name, params, DEADLINE)
    }

    /// [`MlflowRun::start`], with `deadline` as the longest any call of the run may take.
    pub fn start_within(
        uri: &str,
        experiment: &str,
        run_name: &str,
        params: &[(String, String)],
        deadline: Duration,
    ) -> Result<Self, MlflowError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(deadline))
            .http_status_as_error(false)
            .build()
            .into();
        let mut run = Self {
            uri: uri.trim_end_matches('/').to_string(),
            agent,
            deadline,
            run_id: String::new(),
            artifact_uri: String::new(),
            failed: AtomicBool::new(false),
        };
        let experiment_id = run.experiment(experiment)?;
        let created = run.post(
            "runs/create",
            &json!({"experiment_id": experiment_id, "run_name": run_name,
                    "start_time": now_ms(), "tags": [{"key": "mlflow.source.name", "value": "entente"}]}),
        )?;
        let info = &created["run"]["info"];
        run.run_id = run.field("runs/create", info, "run_id")?;
        run.artifact_uri = run.field("runs/create", info, "artifact_uri")?;
        for batch in params.chunks(MAX_PARAMS_PER_BATCH) {
            let params: Vec<Value> = batch
                .iter()
                .map(|(k, v)| json!({"key": k, "value": truncate(v, MAX_PARAM_VALUE)}))
                .collect();
            run.post(
                "runs/log-batch",
                &json!({"run_id": run.run_id, "params": params}),
            )?;
        }
        Ok(run)
    }

    /// The run's id on the server.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether a call to the server failed, after which none reaches it.
    pub fn given_up(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Logs `values` at `step`; values that are not finite are left out.
    pub fn log_metrics(&self, step: u64, values: &[(String, f64)]) -> Result<(), MlflowError> {
        let timestamp = now_ms();
        let metrics: Vec<Value> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": timestamp, "step": step}))
            .collect();
        for batch in metrics.chunks(MAX_METRICS_PER_BATCH) {
            self.post(
                "runs/log-batch",
                &json!({"run_id": self.run_id, "metrics": batch}),
            )?;
        }
        Ok(())
    }

    /// Uploads the file `path` as the run's artifact `name`, within the deadline plus
    /// [`upload_allowance`] for its size.
    pub fn log_artifact(&self, path: &Path, name: &str) -> Result<(), MlflowError> {
        let Some(rest) = self.artifact_uri.strip_prefix("mlflow-artifacts:/") else {
            return Err(MlflowError::NoArtifactProxy {
                artifact_uri: self.artifact_uri.clone(),
            });
        };
        let bytes = std::fs::read(path).map_err(|source| MlflowError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/{name}",
            self.uri,
            rest.trim_matches('/')
        );
        let deadline = self.deadline + upload_allowance(bytes.len() as u64);
        let call = Call {
            name: "the artifact upload",
            url: &url,
            deadline,
            // The artifact proxy answers an upload with an empty body.
            json: Json::NotExpected,
        };
        self.call(&call, || {
            self.agent
                .put(&url)
                .config()
                .timeout_global(Some(deadline))
                .build()
                .header("Content-Type", "application/octet-stream")
                .send(&bytes[..])
        })
        .map(|_| ())
    }

    /// Marks the run finished (`FINISHED`, or `FAILED` when `ok` is false).
    pub fn finish(self, ok: bool) -> Result<(), MlflowError> {
        let status = if ok { "FINISHED" } else { "FAILED" };
        self.post(
            "runs/update",
            &json!({"run_id": self.run_id, "status": status, "end_time": now_ms()}),
        )
        .map(|_| ())
    }

    /// The id of the experiment named `name`, created when missing (while the run starts:
    /// MLflow answers 404 for an experiment that does not exist yet, which is no failure).
    fn experiment(&self, name: &str) -> Result<String, MlflowError> {
        let call = "experiments/get-by-name";
        let url = format!("{}/api/2.0/mlflow/{call}", self.uri);
        let found = self.exchange(&self.rest(call, &url), || {
            self.agent.get(&url).query("experiment_name", name).call()
        });
        match found {
            Ok(found) => self.field(call, &found["experiment"], "experiment_id"),
            Err(MlflowError::Refused { status: 404, .. }) => {
                let created = self.post("experiments/create", &json!({ "name": name }))?;
                self.field("experiments/create", &created, "experiment_id")
            }
            Err(e) => Err(e),
        }
    }

    /// A call of the REST API, named `name`, to `url`.
    fn rest<'a>(&self, name: &'a str, url: &'a str) -> Call<'a> {
        Call {
            name,
            url,
            deadline: self.deadline,
            json: Json::Expected,
        }
    }

    fn post(&self, call: &str, body: &Value) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{call}", self.uri);
        self.call(&self.rest(call, &url), || {
            self.agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes())
        })
    }

    /// [`MlflowRun::exchange`] unless an earlier call failed; a failure stops every later call.
    fn call(&self, call: &Call, send: impl FnOnce() -> Sent) -> Result<Value, MlflowError> {
        if self.given_up() {
            return Err(MlflowError::GaveUp {
                uri: self.uri.clone(),
            });
        }
        let answer = self.exchange(call, send);
        if answer.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        answer
    }

    /// Makes one call (`send`) and reads its answer.
    fn exchange(&self, call: &Call, send: impl FnOnce() -> Sent) -> Result<Value, MlflowError> {
        send()
            .map_err(|e| self.failure(call, None, e))
            .and_then(|response| self.answer(call, response))
    }

    /// The body of a successful answer (JSON where the call expects it); the server's message
    /// otherwise.
    fn answer(
        &self,
        call: &Call,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Value, MlflowError> {
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| self.failure(call, Some(status), e))?;
        let body = String::from_utf8_lossy(&bytes);
        let value = serde_json::from_str::<Value>(&body);
        if (200..300).contains(&status) {
            return match (value, call.json) {
                (Ok(value), _) => Ok(value),
                (Err(_), Json::NotExpected) => Ok(Value::Null),
                (Err(_), Json::Expected) => Err(MlflowError::NotJson {
                    url: call.url.to_string(),
                    status,
                    excerpt: if body.is_empty() {
                        "an empty body".to_string()
                    } else {
                        printable(&excerpt(&body)).into_owned()
                    },
                }),
            };
        }
        let message = match value.as_ref().ok().and_then(|v| v["message"].as_str()) {
            Some(message) => truncate(message, MAX_MESSAGE),
            None => excerpt(&body).into_owned(),
        };
        Err(MlflowError::Refused {
            uri: self.uri.clone(),
            call: call.name.to_string(),
            status,
            message: printable(&message).into_owned(),
        })
    }

    /// What the HTTP client's error `e` means for `call` (whose answer had `status`, when it
    /// came).
    fn failure(&self, call: &Call, status: Option<u16>, e: ureq::Error) -> MlflowError {
        let timed_out = match &e {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        };
        let url = call.url.to_string();
        match (e, status) {
            _ if timed_out => MlflowError::TimedOut {
                url,
                after: call.deadline,
            },
            (ureq::Error::BodyExceedsLimit(limit), _) => MlflowError::TooLarge { url, limit },
            (e, Some(status)) => MlflowError::Unreadable {
                url,
                status,
                reason: printable(&e.to_string()).into_owned(),
            },
            (e, None) => MlflowError::Unreachable {
                uri: self.uri.clone(),
                reason: printable(&e.to_string()).into_owned(),
            },
        }
    }

    /// The text field `name` of `value`, in the answer to `call` while the run starts; missing
    /// or empty, the server is not MLflow.
    fn field(&self, call: &str, value: &Value, name: &str) -> Result<String, MlflowError> {
        match value[name].as_str() {
            Some(text) if !text.is_empty() => Ok(text.to_string()),
            _ => Err(MlflowError::NotMlflow {
                uri: self.uri.clone(),
                call: call.to_string(),
                missing: name.to_string(),
            }),
        }
    }
}

/// The manifest's settings as MLflow parameters: every value of the TOML document under its
/// dotted path (`training.rounds`, `sites.0.name`, ...), arrays of plain values joined by
/// commas. A manifest that does not parse gives no parameters.
pub fn manifest_params(manifest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(table) = manifest.parse::<toml::Table>() {
        flatten("", &toml::Value::Table(table), &mut out);
    }
    out
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&key(k), v, out);
            }
        }
        toml::Value::Array(items) if items.iter().any(|v| v.is_table() || v.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        toml::Value::Array(items) => {
            let joined: Vec<String> = items.iter().map(plain).collect();
            out.push((prefix.to_string(), joined.join(",")));
        }
        v => out.push((prefix.to_string(), plain(v))),
    }
}

fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;

    /// How the fake server answers one request.
    enum Answer {
        /// These bytes, then the connection closes.
        Whole(Vec<u8>),
        /// 200 with these headers, then a byte of the body every 300 ms.
        Drip,
    }

    fn http(status: &str, content_type: &str, body: &[u8]) -> Answer {
        let mut bytes = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Answer::Whole(bytes)
    }

    /// A tracking server's stand-in on 127.0.0.1, a thread per connection, answering each
    /// request's path with `answer`.
    struct FakeServer {
        url: String,
        /// Connections the test itself made to count.
        counts: AtomicUsize,
    }

    impl FakeServer {
        fn start(answer: fn(&str) -> Answer) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            std::thread::spawn(move || {
                let accepted = Arc::new(AtomicUsize::new(0));
                for stream in listener.incoming().flatten() {
                    let index = accepted.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || serve(stream, index, answer));
                }
            });
            Self {
                url,
                counts: AtomicUsize::new(0),
            }
        }

        /// The connections made to it so far, its own counting ones left out: one more of the
        /// test's own is answered with its place in the order of acceptance, which puts it
        /// after every earlier connection (no sleep, no race).
        fn requests(&self) -> usize {
            let mut stream = TcpStream::connect(self.url.trim_start_matches("http://")).unwrap();
            stream.write_all(b"COUNT / HTTP/1.1\r\n\r\n").unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            let place: usize = reply.trim().parse().unwrap();
            place - self.counts.fetch_add(1, Ordering::SeqCst)
        }
    }

    /// Reads one request (its head, and as much body as it announces) and answers it.
    fn serve(stream: TcpStream, index: usize, answer: fn(&str) -> Answer) {
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap_or_default();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or_default() == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let mut stream = reader.into_inner();
        let path = first.split(' ').nth(1).unwrap_or_default();
        if first.starts_with("COUNT") {
            let _ = write!(stream, "{index}");
            return;
        }
        match answer(path) {
            Answer::Whole(bytes) => {
                let _ = stream.write_all(&bytes);
            }
            Answer::Drip => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Content-Length: 1000\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                for _ in 0..1000 {
                    if stream.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
    }

    /// MLflow's answers to the calls that open a run.
    fn opening(path: &str) -> Option<Answer> {
        if path.starts_with("/api/2.0/mlflow/experiments/get-by-name") {
            return Some(http(
                "200 OK",
                "application/json",
                br#"{"experiment": {"experiment_id": "7", "name": "x"}}"#,
            ));
        }
        (path == "/api/2.0/mlflow/runs/create").then(|| {
            http(
                "200 OK",
                "application/json",
                br#"{"run": {"info": {"run_id": "abc", "artifact_uri": "mlflow-artifacts:/7/abc/artifacts"}}}"#,
            )
        })
    }

    const SHORT: Duration = Duration::from_secs(1);

    #[test]
    fn html_is_not_a_tracking_server() {
        let server = FakeServer::start(|_| {
            http(
                "200 OK",
                "text/html",
                b"<html>\x1b[2J\x1b]0;owned\x07welcome</html>",
            )
        });
        let err = MlflowRun::start_within(&server.url, "x", "y", &[], SHORT)
            .err()
            .unwrap();
        assert!(
            matches!(err, MlflowError::NotJson { status: 200, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "{}/api/2.0/mlflow/experiments/get-by-name",
                server.url
            )),
            "{text}"
        );
        assert!(
            text.contains("<html>") && text.contains("\\u{1b}[2J"),
            "{text}"
        );
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert_eq!(server.requests(), 1);
    }

    #[test]
    fn json_without_a_run_id_is_not_a_tracking_server() {
        let server = FakeServer::start(|path| {
            opening(path)
                .filter(|_| path.contains("get-by-name"))
                .unwrap_or_else(|| http("200 OK", "application/json", b"{}"))
        });
        let err = MlflowRun::start_within(&server.url, "x", "y", &[], SHORT)
            .err()
            .unwrap();
        assert!(matches!(err, MlflowError::NotMlflow { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("does not look like an MLflow tracking server")
                && text.contains("run_id"),
            "{text}"
        );
    }

    #[test]
    fn an_answer_over_the_cap_is_refused() {
        let server =
            FakeServer::start(|_| http("200 OK", "application/json", &vec![b' '; 2 << 20]));
        let err = MlflowRun::start_within(&server.url, "x", "y", &[], SHORT)
            .err()
            .unwrap();
        assert!(
            matches!(err, MlflowError::TooLarge { limit, .. } if limit == MAX_ANSWER),
            "{err:?}"
        );
    }

    #[test]
    fn a_dripping_server_costs_one_deadline_then_is_left_alone() {
        let server = FakeServer::start(|path| opening(path).unwrap_or(Answer::Drip));
        let run = MlflowRun::start_within(&server.url, "x", "y", &[], SHORT).unwrap();
        assert_eq!(run.run_id(), "abc");
        assert_eq!(server.requests(), 2);
        let metrics = [("test/accuracy".to_string(), 0.5)];
        let began = Instant::now();
        let err = run.log_metrics(1, &metrics).unwrap_err();
        // Bytes keep coming, each within any per-read timeout: the deadline is the call's.
        assert!(
            matches!(err, MlflowError::TimedOut { after, .. } if after == SHORT),
            "{err:?}"
        );
        assert!(began.elapsed() < 10 * SHORT, "{:?}", began.elapsed());
        assert!(run.given_up());
        assert_eq!(server.requests(), 3);
        // Nothing more reaches the server.
        for step in 2..5 {
            let err = run.log_metrics(step, &metrics).unwrap_err();
            assert!(matches!(err, MlflowError::GaveUp { .. }), "{err:?}");
        }
        let model = tempfile::NamedTempFile::new().unwrap();
        let err = run
            .log_artifact(model.path(), "model.safetensors")
            .unwrap_err();
        assert!(matches!(err, MlflowError::GaveUp { .. }), "{err:?}");
        assert!(matches!(run.finish(false), Err(MlflowError::GaveUp { .. })));
        assert_eq!(server.requests(), 3);
    }

    #[test]
    fn a_manifest_flattens_to_dotted_parameters() {
        let params = manifest_params(
            "[training]\nrounds = 3\nlearning_rate = 0.05\n[model]\nhidden = [64, 32]\n\
             [[sites]]\nname = \"a\"\n[[sites]]\nname = \"b\"\n",
        );
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("training.rounds"), Some("3"));
        assert_eq!(get("training.learning_rate"), Some("0.05"));
        assert_eq!(get("model.hidden"), Some("64,32"));
        assert_eq!(get("sites.1.name"), Some("b"));
        assert!(manifest_params("not toml [").is_empty());
    }

    #[test]
    fn an_unreachable_server_is_named() {
        // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
        let err = MlflowRun::start("http://127.0.0.1:9", "x", "y", &[])
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:9") && text.contains("mlflow server"),
            "{text}"
        );
    }
}
