//! A [`Site`] whose node is elsewhere: each call becomes a task in the site's mailbox, and the
//! call returns when the node answers, the deadline passes, or the node stops sending
//! heartbeats. The round engine cannot tell it from a site in the same process.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use entente_core::engine::{Envelope, ErrorKind, Site, SiteError, TrainTask, Turn};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;
use entente_proto::MAX_MESSAGE;
use rand::RngCore;

use super::hub::{Hub, Task, TaskKind, TaskResult};

/// How often a waiting call checks that the node is still there.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Largest secure-aggregation message a task may carry: the transport's message limit, less
/// room for the rest of the task's header.
const MAX_SECURE_MESSAGE: usize = MAX_MESSAGE - 64 * 1024;

/// Why a call fails once the hub is closed.
const SHUTTING_DOWN: &str = "the coordinator is shutting down";

/// A site reached through its node's connection to this coordinator.
pub struct RemoteSite {
    name: String,
    hub: Arc<Hub>,
    deadline: Duration,
    /// Every manifest site, for the selected-site list of a training task.
    selected: Arc<dyn Fn(u32) -> Vec<String> + Send + Sync>,
}

impl RemoteSite {
    /// The site `name`, whose answers must come within `deadline` of each call.
    /// `selected(round)` lists the sites the engine selected in a round.
    pub fn new(
        name: impl Into<String>,
        hub: Arc<Hub>,
        deadline: Duration,
        selected: Arc<dyn Fn(u32) -> Vec<String> + Send + Sync>,
    ) -> Self {
        Self {
            name: name.into(),
            hub,
            deadline,
            selected,
        }
    }

    fn fail(&self, kind: ErrorKind, reason: impl Into<String>) -> SiteError {
        SiteError::new(self.name.clone(), kind, reason)
    }

    /// Posts a task and waits for its result.
    fn call(
        &self,
        round: u32,
        kind: TaskKind,
        params: Option<Arc<ParamSet>>,
        turn: Option<Turn>,
    ) -> Result<TaskResult, SiteError> {
        if self.hub.is_closed() {
            return Err(self.fail(ErrorKind::Internal, SHUTTING_DOWN));
        }
        if let Some(reason) = self.hub.ended(&self.name) {
            return Err(self.fail(ErrorKind::Refused, reason));
        }
        if !self.hub.is_alive(&self.name) {
            return Err(self.fail(ErrorKind::Transport, "not connected"));
        }
        let started = Instant::now();
        let task = Arc::new(Task {
            id: rand::rng().next_u64(),
            round,
            kind,
            params,
            deadline: SystemTime::now() + self.deadline,
            turn,
        });
        let id = task.id;
        let (tx, rx) = sync_channel(1);
        self.hub.post(&self.name, task, tx).map_err(|e| {
            self.fail(ErrorKind::Transport, "could not post the task")
                .with_source(e)
        })?;
        loop {
            match rx.recv_timeout(CHECK_EVERY) {
                Ok(TaskResult::Refused { kind, reason }) => return Err(self.fail(kind, reason)),
                Ok(result) => return Ok(result),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.fail(ErrorKind::Internal, "the task was dropped"));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let late = started.elapsed() >= self.deadline;
                    let gone = if self.hub.is_closed() {
                        Some((ErrorKind::Internal, SHUTTING_DOWN.to_string()))
                    } else if late && !self.hub.is_receiving(&self.name, id) {
                        Some((
                            ErrorKind::TimedOut,
                            format!(
                                "missed the deadline of {} s (selection.deadline_secs)",
                                self.deadline.as_secs_f64()
                            ),
                        ))
                    } else if let Some(reason) = self.hub.ended(&self.name) {
                        Some((ErrorKind::Refused, reason))
                    } else if !self.hub.is_alive(&self.name) {
                        Some((
                            ErrorKind::Transport,
                            format!(
                                "lost contact: no heartbeat for {} s",
                                self.hub.contact_timeout().as_secs_f64()
                            ),
                        ))
                    } else {
                        None
                    };
                    // Withdrawn only if no upload holds it at this moment (one lock), and a
                    // result that arrived in between is still taken.
                    if let Some((why, reason)) = gone
                        && self.hub.withdraw_unless_receiving(&self.name, id)
                    {
                        return match rx.try_recv() {
                            Ok(TaskResult::Refused { kind, reason }) => {
                                Err(self.fail(kind, reason))
                            }
                            Ok(result) => Ok(result),
                            Err(_) => Err(self.fail(why, reason)),
                        };
                    }
                }
            }
        }
    }
}

impl Site for RemoteSite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let kind = TaskKind::Train {
            seed: task.seed,
            training: task.training.clone(),
            selected: (self.selected)(task.round),
        };
        match self.call(
            task.round,
            kind,
            Some(Arc::clone(&task.global)),
            task.turn.clone(),
        )? {
            TaskResult::Trained {
                examples,
                loss,
                params,
            } => Ok(SiteUpdate {
                site: self.name.clone(),
                num_examples: examples,
                params,
                train_loss: loss,
            }),
            _ => Err(self.fail(
                ErrorKind::MalformedReply,
                "answered a training task with something else",
            )),
        }
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        match self.call(0, TaskKind::Evaluate, Some(Arc::clone(params)), None)? {
            TaskResult::Evaluated(m) => Ok(m),
            _ => Err(self.fail(
                ErrorKind::MalformedReply,
                "answered an evaluation task with something else",
            )),
        }
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        // A message to a site travels inline in its task's header, under the message limit
        // both sides enforce; only replies stream.
        if message.0.len() > MAX_SECURE_MESSAGE {
            return Err(self.fail(
                ErrorKind::Internal,
                format!(
                    "the secure-aggregation message for this site is {} bytes, more than the {} \
                     a task may carry (the transport's message limit is {} bytes)",
                    message.0.len(),
                    MAX_SECURE_MESSAGE,
                    MAX_MESSAGE
                ),
            ));
        }
        match self.call(
            round,
            TaskKind::Secure(message.0.clone()),
            None,
            turn.cloned(),
        )? {
            TaskResult::Secure(bytes) => Ok(Envelope(bytes)),
            _ => Err(self.fail(
                ErrorKind::MalformedReply,
                "answered a secure-aggregation message with something else",
            )),
        }
    }
}
