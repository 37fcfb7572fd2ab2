//! Warnings about refused connections and calls, bounded: the first few of every minute get a
//! line each, the rest are counted and summed up in one line when the minute is over (by a
//! timer, and at shutdown), so a flood of bad handshakes cannot flood the operator's log. The
//! audit log is bounded the same way, per address.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one window of warnings.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Refusals per window that get a warning line of their own.
pub const LINES_PER_WINDOW: usize = 10;

/// Distinct addresses counted per window for the summary (beyond it, only refusals count).
const ADDRESSES: usize = 4096;

/// The refusals of one window that got no line of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// How many.
    pub refusals: u64,
    /// From how many addresses (at most [`ADDRESSES`]).
    pub addresses: usize,
    /// Over how many seconds (the window's length, or less at shutdown).
    pub seconds: u64,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: usize,
    held: u64,
    addresses: HashSet<IpAddr>,
}

/// The warning log of refusals: a line for each of the first [`LINES_PER_WINDOW`] refusals of
/// a [`WINDOW`], one summary line for the rest.
#[derive(Debug)]
pub struct RefusalWarnings {
    window: Mutex<Window>,
}

impl Default for RefusalWarnings {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl RefusalWarnings {
    /// A log whose first window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window: Mutex::new(Window {
                start: now,
                lines: 0,
                held: 0,
                addresses: HashSet::new(),
            }),
        }
    }

    /// Logs a refusal of `peer` (its address as text, the call or stage, and why) at warning
    /// level, or counts it for the window's summary.
    pub fn refused(&self, peer: IpAddr, shown_peer: &str, what: &str, reason: &str) {
        let (own_line, summary) = self.admit(peer, Instant::now());
        if let Some(held) = summary {
            log_summary(&held);
        }
        if own_line {
            tracing::warn!(peer = %shown_peer, %what, %reason, "refused");
        }
    }

    /// Writes the summary of a window that is over (`now` past its end), or of the current one
    /// whatever its age with `force` (at shutdown).
    pub fn flush(&self, now: Instant, force: bool) {
        if let Some(held) = self.take(now, force) {
            log_summary(&held);
        }
    }

    /// Whether a refusal of `peer` at `now` gets its own line, and the summary of the window
    /// that ended before it, if one is due.
    pub fn admit(&self, peer: IpAddr, now: Instant) -> (bool, Option<Held>) {
        let summary = self.take(now, false);
        let mut w = self.lock();
        if w.lines < LINES_PER_WINDOW {
            w.lines += 1;
            return (true, summary);
        }
        w.held += 1;
        if w.addresses.len() < ADDRESSES {
            w.addresses.insert(peer);
        }
        (false, summary)
    }

    /// Ends the window if it is over at `now` (or at once with `force`): its held-back
    /// refusals, if any, and a fresh window.
    pub fn take(&self, now: Instant, force: bool) -> Option<Held> {
        let mut w = self.lock();
        if !force && now.duration_since(w.start) < WINDOW {
            return None;
        }
        let held = Held {
            refusals: w.held,
            addresses: w.addresses.len(),
            seconds: now.duration_since(w.start).as_secs().max(1),
        };
        *w = Window {
            start: now,
            lines: 0,
            held: 0,
            addresses: HashSet::new(),
        };
        (held.refusals > 0).then_some(held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // Each critical section leaves the window consistent: a poisoned lock is still usable.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn log_summary(held: &Held) {
    let plural = if held.addresses == 1 { "" } else { "es" };
    tracing::warn!(
        refusals = held.refusals,
        addresses = held.addresses,
        "{} more refused connections or calls in the last {} s, from {} address{plural}, not \
         logged one by one (at most {LINES_PER_WINDOW} lines a minute; the audit log keeps one \
         entry per address and stage a minute, counting the rest)",
        held.refusals,
        held.seconds,
        held.addresses
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusals_of_a_window_get_lines_the_rest_one_summary() {
        let t0 = Instant::now();
        let log = RefusalWarnings::new(t0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let lines = (0..20_451u32)
            .filter(|i| {
                let peer = if i % 2 == 0 { a } else { b };
                let (line, summary) = log.admit(peer, t0 + Duration::from_millis(u64::from(*i)));
                assert_eq!(summary, None);
                line
            })
            .count();
        assert_eq!(lines, LINES_PER_WINDOW);
        // Nothing is due inside the window; the timer's flush after it sums the rest up.
        assert_eq!(log.take(t0 + WINDOW / 2, false), None);
        let held = log.take(t0 + WINDOW, false).unwrap();
        assert_eq!(
            held,
            Held {
                refusals: 20_451 - LINES_PER_WINDOW as u64,
                addresses: 2,
                seconds: WINDOW.as_secs()
            }
        );
        // A fresh window: lines again, and nothing left to flush at shutdown.
        assert_eq!(log.admit(a, t0 + WINDOW), (true, None));
        assert_eq!(log.take(t0 + WINDOW, true), None);
    }
}
