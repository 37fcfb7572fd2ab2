//! The coordinator's mailboxes, one per manifest site. The round engine's [`RemoteSite`]s put
//! tasks in; the gRPC service hands them to the node when it polls and routes the node's result
//! back. Nodes only ever call the coordinator (outbound connections), so a task waits in its
//! mailbox until the node asks for it.
//!
//! [`RemoteSite`]: super::remote_site::RemoteSite

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use entente_core::engine::{ErrorKind, LocalTraining, Turn};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_proto::MAX_MESSAGE;
use rand::RngCore;
use tokio::sync::Notify;

use super::connections::Connections;
use super::traffic::Traffic;
use super::warnings::RefusalWarnings;

/// What a site is asked to do.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// Train from the task's parameters.
    Train {
        /// Seed of the site's randomness this round.
        seed: u64,
        /// Local training settings.
        training: LocalTraining,
        /// Every site selected this round.
        selected: Vec<String>,
    },
    /// Evaluate the task's parameters on the site's own test split.
    Evaluate,
    /// Answer one secure-aggregation message.
    Secure(Vec<u8>),
}

/// One task for one site.
#[derive(Debug)]
pub struct Task {
    /// Unique, also across coordinator restarts (random).
    pub id: u64,
    /// Round number.
    pub round: u32,
    /// The work.
    pub kind: TaskKind,
    /// Parameters that go with the task (train and evaluate).
    pub params: Option<Arc<ParamSet>>,
    /// When the coordinator stops waiting.
    pub deadline: SystemTime,
    /// For a training task: the node's update is taken in only when the engine is ready to
    /// fold it, so the coordinator holds one update at a time.
    pub turn: Option<Turn>,
}

/// What a node sent back for a task.
#[derive(Debug)]
pub enum TaskResult {
    /// Local training finished.
    Trained {
        /// Training examples behind the update.
        examples: u64,
        /// Mean training loss the site reports.
        loss: f64,
        /// The site's parameters after training.
        params: ParamSet,
    },
    /// Evaluation finished.
    Evaluated(EvalMetrics),
    /// A secure-aggregation reply.
    Secure(Vec<u8>),
    /// The node would not or could not do it.
    Refused {
        /// Which kind of failure (an older node that names none: [`ErrorKind::Internal`]).
        kind: ErrorKind,
        /// Why, in words.
        reason: String,
    },
}

/// The state of one site's mailbox.
#[derive(Default)]
struct Mailbox {
    session: Option<u64>,
    /// The connection the session registered on, when known.
    peer: Option<SocketAddr>,
    last_seen: Option<Instant>,
    queue: VecDeque<Arc<Task>>,
    /// Handed to the node, result pending.
    delivered: HashMap<u64, Arc<Task>>,
    /// Tasks whose result is being received (claimed by one upload).
    receiving: HashMap<u64, Arc<Task>>,
    /// Where each pending task's result goes.
    replies: HashMap<u64, SyncSender<TaskResult>>,
    /// Why the coordinator ended the last session ([`Hub::end_session`]), until the next one.
    ended: Option<String>,
}

/// Why a result could not be delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// The site is not in the manifest.
    #[error("`{0}` is not a site of this federation")]
    UnknownSite(String),
    /// The node's session is not the current one.
    #[error("session {0} is not current: register again")]
    StaleSession(u64),
    /// No such task is waiting for this site (it missed its deadline, or never existed).
    #[error("task {0} is not expected from this site (late, already answered, or unknown)")]
    UnknownTask(u64),
    /// Another node holds the site's session: it is connected and was heard from recently.
    #[error(
        "another node holds site `{site}`'s session: it is connected{} and was heard from {} ms \
         ago; two nodes cannot share one site's certificate: stop the other node, or if it has \
         stopped, start this one again after {} s",
        holder.map(|p| format!(" from {p}")).unwrap_or_default(),
        heard_ms,
        wait_secs
    )]
    SessionHeld {
        /// The site.
        site: String,
        /// Where the node holding the session is connected from.
        holder: Option<SocketAddr>,
        /// How long ago it was heard from, in milliseconds.
        heard_ms: u64,
        /// After how many seconds of silence its session lapses.
        wait_secs: u64,
    },
}

/// Every site's mailbox, and whether the run is over.
pub struct Hub {
    boxes: HashMap<String, (Mutex<Mailbox>, Notify)>,
    connections: Arc<Connections>,
    warnings: RefusalWarnings,
    traffic: Traffic,
    heartbeat: Duration,
    secure_reply_limit: u64,
    finished: Mutex<Option<u32>>,
    closed: AtomicBool,
}

fn lock(m: &Mutex<Mailbox>) -> MutexGuard<'_, Mailbox> {
    // A panic while holding the lock leaves a consistent mailbox (every critical section is a
    // few map operations), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Mailboxes for `sites`; nodes must send a heartbeat every `heartbeat`.
    pub fn new(sites: &[String], heartbeat: Duration) -> Self {
        Self {
            boxes: sites
                .iter()
                .map(|s| (s.clone(), (Mutex::new(Mailbox::default()), Notify::new())))
                .collect(),
            connections: Arc::new(Connections::new()),
            warnings: RefusalWarnings::default(),
            traffic: Traffic::default(),
            heartbeat,
            secure_reply_limit: MAX_MESSAGE as u64,
            finished: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Lets a streamed secure-aggregation reply hold up to `bytes` (a masked input is as large
    /// as the model); never less than [`MAX_MESSAGE`], the limit of every other message.
    pub fn with_secure_reply_limit(mut self, bytes: u64) -> Self {
        self.secure_reply_limit = bytes.max(MAX_MESSAGE as u64);
        self
    }

    /// The most bytes a secure-aggregation reply may announce.
    pub fn secure_reply_limit(&self) -> u64 {
        self.secure_reply_limit
    }

    /// The open node connections (the listener counts them, sessions are bound to them).
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// The bounded warning log of refused connections and calls.
    pub fn warnings(&self) -> &RefusalWarnings {
        &self.warnings
    }

    /// The bytes moved per site and the refused handshakes.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// How often nodes send heartbeats.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// A node is taken for gone after this long without a heartbeat or poll.
    pub fn contact_timeout(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Whether `site` is in the manifest.
    pub fn knows(&self, site: &str) -> bool {
        self.boxes.contains_key(site)
    }

    fn mailbox(&self, site: &str) -> Result<&(Mutex<Mailbox>, Notify), RouteError> {
        self.boxes
            .get(site)
            .ok_or_else(|| RouteError::UnknownSite(site.to_string()))
    }

    /// Starts a new session for `site`'s node, connected from `peer`. A node that held the
    /// current session (it names it as `previous`, or registers again on the same connection)
    /// takes it over; any other node is refused with [`RouteError::SessionHeld`] while the
    /// session is live: its connection open and its node heard from within
    /// [`Hub::contact_timeout`]. Tasks the node had taken but not answered go back to the front
    /// of its queue, so a node restarted mid-round picks its work up again.
    pub fn register(
        &self,
        site: &str,
        peer: Option<SocketAddr>,
        previous: Option<u64>,
    ) -> Result<u64, RouteError> {
        let (m, notify) = self.mailbox(site)?;
        let session = rand::rng().next_u64();
        let mut b = lock(m);
        let heard = b.last_seen.map(|t| t.elapsed());
        let live = heard.is_some_and(|h| h < self.contact_timeout())
            && b.peer.is_none_or(|p| self.connections.is_open(p));
        let same_node =
            previous.is_some() && previous == b.session || peer.is_some() && peer == b.peer;
        if b.session.is_some() && live && !same_node {
            return Err(RouteError::SessionHeld {
                site: site.to_string(),
                holder: b.peer,
                heard_ms: heard.map_or(0, |h| h.as_millis() as u64),
                wait_secs: self.contact_timeout().as_secs_f64().ceil() as u64,
            });
        }
        b.session = Some(session);
        b.peer = peer;
        b.last_seen = Some(Instant::now());
        b.ended = None;
        let mut back: Vec<Arc<Task>> = b.delivered.drain().map(|(_, t)| t).collect();
        back.sort_by_key(|t| std::cmp::Reverse(t.id));
        for t in back {
            b.queue.push_front(t);
        }
        drop(b);
        notify.notify_one();
        Ok(session)
    }

    /// Ends `site`'s session now, for `reason` (its certificate was revoked): its polls and
    /// heartbeats fail, and a call waiting for its answer fails with `reason` at its next look.
    pub fn end_session(&self, site: &str, reason: &str) {
        if let Ok((m, notify)) = self.mailbox(site) {
            let mut b = lock(m);
            b.session = None;
            b.peer = None;
            b.last_seen = None;
            b.ended = Some(reason.to_string());
            drop(b);
            notify.notify_waiters();
        }
    }

    /// Why the coordinator ended `site`'s last session, if it did and no new one began.
    pub fn ended(&self, site: &str) -> Option<String> {
        self.mailbox(site)
            .ok()
            .and_then(|(m, _)| lock(m).ended.clone())
    }

    /// Records that the node of `session` is alive.
    pub fn touch(&self, site: &str, session: u64) -> Result<(), RouteError> {
        let (m, _) = self.mailbox(site)?;
        let mut b = lock(m);
        if b.session != Some(session) {
            return Err(RouteError::StaleSession(session));
        }
        b.last_seen = Some(Instant::now());
        Ok(())
    }

    /// Whether `site`'s node is registered and was heard from recently.
    pub fn is_alive(&self, site: &str) -> bool {
        self.mailbox(site).is_ok_and(|(m, _)| {
            let b = lock(m);
            b.session.is_some()
                && b.last_seen
                    .is_some_and(|t| t.elapsed() < self.contact_timeout())
        })
    }

    /// How long ago `site`'s node was last heard from, if it ever was.
    pub fn heard_ago(&self, site: &str) -> Option<Duration> {
        let (m, _) = self.mailbox(site).ok()?;
        lock(m).last_seen.map(|t| t.elapsed())
    }

    /// Sites whose node is alive now.
    pub fn alive(&self) -> Vec<String> {
        self.boxes
            .keys()
            .filter(|s| self.is_alive(s))
            .cloned()
            .collect()
    }

    /// Queues `task` for `site`; its result will be sent to `reply`.
    pub fn post(
        &self,
        site: &str,
        task: Arc<Task>,
        reply: SyncSender<TaskResult>,
    ) -> Result<(), RouteError> {
        let (m, notify) = self.mailbox(site)?;
        let mut b = lock(m);
        b.replies.insert(task.id, reply);
        b.queue.push_back(task);
        drop(b);
        notify.notify_one();
        Ok(())
    }

    /// The next task for `site`, waiting up to `wait` for one to arrive.
    pub async fn next_task(
        &self,
        site: &str,
        session: u64,
        wait: Duration,
    ) -> Result<Option<Arc<Task>>, RouteError> {
        let (m, notify) = self.mailbox(site)?;
        let until = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a post between the look and the wait
            // still wakes this poll.
            let notified = notify.notified();
            if self.finished().is_some() || self.is_closed() {
                return Ok(None);
            }
            {
                let mut b = lock(m);
                if b.session != Some(session) {
                    return Err(RouteError::StaleSession(session));
                }
                b.last_seen = Some(Instant::now());
                if let Some(task) = b.queue.pop_front() {
                    b.delivered.insert(task.id, Arc::clone(&task));
                    return Ok(Some(task));
                }
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Claims the task `task` that `site`'s node took, for the one upload that answers it: a
    /// second upload for the same task finds nothing to claim.
    pub fn claim(&self, site: &str, task: u64) -> Result<Arc<Task>, RouteError> {
        let (m, _) = self.mailbox(site)?;
        let mut b = lock(m);
        let t = b
            .delivered
            .remove(&task)
            .ok_or(RouteError::UnknownTask(task))?;
        b.receiving.insert(task, Arc::clone(&t));
        Ok(t)
    }

    /// Whether the result of `task` is arriving now (its deadline no longer applies: the node
    /// answered in time and waits for its turn to hand the update over).
    pub fn is_receiving(&self, site: &str, task: u64) -> bool {
        self.mailbox(site)
            .is_ok_and(|(m, _)| lock(m).receiving.contains_key(&task))
    }

    /// Gives back a claimed task whose upload failed or was abandoned: it goes to the front of
    /// the site's queue, so the node's current session (or its next one) fetches it again, and
    /// its deadline applies again.
    pub fn release(&self, site: &str, task: u64) {
        if let Ok((m, notify)) = self.mailbox(site) {
            let mut b = lock(m);
            if let Some(t) = b.receiving.remove(&task) {
                b.queue.push_front(t);
                drop(b);
                notify.notify_one();
            }
        }
    }

    /// Forgets a task that is no longer waited for (deadline passed, site gone), unless its
    /// result is arriving now (checked and done under one lock); `true` if it was withdrawn.
    pub fn withdraw_unless_receiving(&self, site: &str, task: u64) -> bool {
        let Ok((m, _)) = self.mailbox(site) else {
            return true;
        };
        let mut b = lock(m);
        if b.receiving.contains_key(&task) {
            return false;
        }
        b.queue.retain(|t| t.id != task);
        b.delivered.remove(&task);
        b.replies.remove(&task);
        true
    }

    /// Hands a result to whoever waits for it.
    pub fn complete(&self, site: &str, task: u64, result: TaskResult) -> Result<(), RouteError> {
        let (m, _) = self.mailbox(site)?;
        let mut b = lock(m);
        b.delivered.remove(&task);
        b.receiving.remove(&task);
        b.queue.retain(|t| t.id != task);
        let reply = b
            .replies
            .remove(&task)
            .ok_or(RouteError::UnknownTask(task))?;
        b.last_seen = Some(Instant::now());
        drop(b);
        // The waiter may have given up a moment ago; then the result is simply dropped.
        let _ = reply.try_send(result);
        Ok(())
    }

    /// Marks the run as over after `rounds` rounds and wakes every poll.
    pub fn finish(&self, rounds: u32) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = Some(rounds);
        for (_, notify) in self.boxes.values() {
            notify.notify_waiters();
        }
    }

    /// `Some(rounds)` once the run is over.
    pub fn finished(&self) -> Option<u32> {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops handing out work, for a coordinator that shuts down before the run is over: polls
    /// return at once with no task, uploads still waiting for their turn give up (their tasks
    /// go back to the queue), and [`RemoteSite`] calls fail. Nodes are not told the run is
    /// finished, so they keep reconnecting and go on with the next coordinator.
    ///
    /// [`RemoteSite`]: super::remote_site::RemoteSite
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, notify) in self.boxes.values() {
            notify.notify_waiters();
        }
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: &str) -> TaskResult {
        TaskResult::Refused {
            kind: ErrorKind::OverBudget,
            reason: reason.into(),
        }
    }

    fn task(id: u64) -> Arc<Task> {
        Arc::new(Task {
            id,
            round: 1,
            kind: TaskKind::Evaluate,
            params: None,
            deadline: SystemTime::now(),
            turn: None,
        })
    }

    #[tokio::test]
    async fn tasks_flow_to_the_current_session_and_results_back() {
        let hub = Hub::new(&["a".into(), "b".into()], Duration::from_secs(1));
        let s1 = hub.register("a", None, None).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        hub.post("a", task(7), tx).unwrap();
        assert!(hub.next_task("b", 0, Duration::ZERO).await.is_err());
        let got = hub
            .next_task("a", s1, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.id, 7);
        // One upload claims the task; a second one for the same task is refused.
        assert!(!hub.is_receiving("a", 7));
        assert_eq!(hub.claim("a", 7).unwrap().id, 7);
        assert!(hub.is_receiving("a", 7));
        assert_eq!(hub.claim("a", 7).unwrap_err(), RouteError::UnknownTask(7));
        // Site b cannot answer a's task; a stale session cannot poll.
        assert_eq!(
            hub.complete("b", 7, refused("x")),
            Err(RouteError::UnknownTask(7))
        );
        assert!(matches!(
            hub.next_task("a", s1 + 1, Duration::ZERO).await,
            Err(RouteError::StaleSession(_))
        ));
        hub.complete("a", 7, refused("no")).unwrap();
        assert!(matches!(
            rx.recv().unwrap(),
            TaskResult::Refused { kind: ErrorKind::OverBudget, reason } if reason == "no"
        ));
        // Answered once: a second answer is refused.
        assert!(hub.complete("a", 7, refused("again")).is_err());
    }

    #[tokio::test]
    async fn a_node_that_registers_again_gets_its_unanswered_task_back() {
        let hub = Hub::new(&["a".into()], Duration::from_secs(1));
        let s1 = hub.register("a", None, None).unwrap();
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        hub.post("a", task(3), tx).unwrap();
        assert_eq!(
            hub.next_task("a", s1, Duration::ZERO)
                .await
                .unwrap()
                .unwrap()
                .id,
            3
        );
        let s2 = hub.register("a", None, Some(s1)).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(
            hub.next_task("a", s2, Duration::ZERO)
                .await
                .unwrap()
                .unwrap()
                .id,
            3
        );
        // An upload that claimed the task and then failed gives it back: the current session
        // fetches it again, and it no longer counts as arriving.
        hub.claim("a", 3).unwrap();
        assert!(!hub.withdraw_unless_receiving("a", 3));
        hub.release("a", 3);
        assert!(!hub.is_receiving("a", 3));
        assert_eq!(
            hub.next_task("a", s2, Duration::ZERO)
                .await
                .unwrap()
                .unwrap()
                .id,
            3
        );
        assert!(hub.withdraw_unless_receiving("a", 3));
        // Releasing a withdrawn task changes nothing.
        hub.release("a", 3);
        assert!(
            hub.next_task("a", s2, Duration::from_millis(10))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_second_node_is_refused_while_the_first_holds_the_session() {
        let hub = Hub::new(&["a".into()], Duration::from_secs(1));
        let (first, second): (SocketAddr, SocketAddr) = (
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:6000".parse().unwrap(),
        );
        let open = hub.connections().track(first, ());
        let s1 = hub.register("a", Some(first), None).unwrap();
        let err = hub.register("a", Some(second), None).unwrap_err();
        assert!(
            matches!(&err, RouteError::SessionHeld { site, holder: Some(h), wait_secs: 3, .. }
                if site == "a" && *h == first),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("another node holds site `a`'s session"),
            "{err}"
        );
        // The session is untouched: the first node goes on.
        hub.touch("a", s1).unwrap();
        // The node that holds it comes back on a new connection, naming its session.
        let reconnected = hub.connections().track(second, ());
        let s2 = hub.register("a", Some(second), Some(s1)).unwrap();
        drop(open);
        let third: SocketAddr = "10.0.0.3:7000".parse().unwrap();
        assert!(hub.register("a", Some(third), None).is_err());
        // Once its connection is closed, anyone with the certificate may take over at once
        // (a node restarted after a crash).
        drop(reconnected);
        let s3 = hub.register("a", Some(third), None).unwrap();
        assert!(hub.touch("a", s2).is_err());
        hub.touch("a", s3).unwrap();

        // A node not heard from for three heartbeats no longer holds its session.
        let quick = Hub::new(&["a".into()], Duration::from_millis(10));
        let _open = quick.connections().track(first, ());
        quick.register("a", Some(first), None).unwrap();
        assert!(quick.register("a", Some(second), None).is_err());
        std::thread::sleep(Duration::from_millis(40));
        quick.register("a", Some(second), None).unwrap();
    }

    #[tokio::test]
    async fn a_poll_wakes_when_a_task_arrives() {
        let hub = Arc::new(Hub::new(&["a".into()], Duration::from_secs(1)));
        let s = hub.register("a", None, None).unwrap();
        let waiting = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move { hub.next_task("a", s, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        hub.post("a", task(9), tx).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap().id, 9);
    }
}
