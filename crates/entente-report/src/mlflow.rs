//! Runs logged to an MLflow tracking server through its REST API (`/api/2.0/mlflow/...`): the
//! manifest's settings as parameters, each round's figures as metrics at step = round, and the
//! final model as an artifact, so that a federated run sits beside a team's other experiments.
//!
//! The experiment is the federation's name (created when missing); the model is uploaded
//! through the server's artifact proxy (`mlflow server` serves artifacts by default), which
//! a run's `mlflow-artifacts:/` artifact URI names.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// MLflow's limits on one `log-batch` call.
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
/// Longest parameter value MLflow stores everywhere (older servers: 500 characters).
const MAX_PARAM_VALUE: usize = 500;
/// Longest a call to the server may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the tracking server failed.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// The server could not be reached or did not answer.
    #[error("MLflow tracking server {uri}: {reason} (is `mlflow server` running there?)")]
    Unreachable {
        /// The server's address.
        uri: String,
        /// What the HTTP client said.
        reason: String,
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
        /// What the server said.
        message: String,
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

/// One MLflow run, open until [`MlflowRun::finish`].
pub struct MlflowRun {
    uri: String,
    agent: ureq::Agent,
    run_id: String,
    artifact_uri: String,
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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut run = Self {
            uri: uri.trim_end_matches('/').to_string(),
            agent,
            run_id: String::new(),
            artifact_uri: String::new(),
        };
        let experiment_id = run.experiment(experiment)?;
        let created = run.post(
            "runs/create",
            &json!({"experiment_id": experiment_id, "run_name": run_name,
                    "start_time": now_ms(), "tags": [{"key": "mlflow.source.name", "value": "entente"}]}),
        )?;
        run.run_id = text(&created["run"]["info"]["run_id"]);
        run.artifact_uri = text(&created["run"]["info"]["artifact_uri"]);
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

    /// Uploads the file `path` as the run's artifact `name`.
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
        let response = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|e| self.unreachable(e))?;
        self.check("the artifact upload", response).map(|_| ())
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

    /// The id of the experiment named `name`, created when missing.
    fn experiment(&self, name: &str) -> Result<String, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/experiments/get-by-name", self.uri);
        let response = self
            .agent
            .get(&url)
            .query("experiment_name", name)
            .call()
            .map_err(|e| self.unreachable(e))?;
        if response.status().as_u16() != 404 {
            let found = self.check("experiments/get-by-name", response)?;
            return Ok(text(&found["experiment"]["experiment_id"]));
        }
        let created = self.post("experiments/create", &json!({ "name": name }))?;
        Ok(text(&created["experiment_id"]))
    }

    fn post(&self, call: &str, body: &Value) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{call}", self.uri);
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| self.unreachable(e))?;
        self.check(call, response)
    }

    fn check(
        &self,
        call: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Value, MlflowError> {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .map_or_else(|| truncate(&body, 300), str::to_string);
        Err(MlflowError::Refused {
            uri: self.uri.clone(),
            call: call.to_string(),
            status,
            message,
        })
    }

    fn unreachable(&self, e: ureq::Error) -> MlflowError {
        MlflowError::Unreachable {
            uri: self.uri.clone(),
            reason: e.to_string(),
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

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
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
    use super::*;

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
