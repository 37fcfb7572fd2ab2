//! The Prometheus text exposition of a board (`/metrics`).

use std::fmt::Write;

use entente_core::engine::ErrorKind;

use crate::board::Snapshot;

/// The board's figures in Prometheus' text format.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "entente_rounds_completed_total",
        "counter",
        "Rounds completed.",
        &one(s.counters.rounds_completed as f64),
    );
    metric(
        "entente_round_duration_seconds",
        "gauge",
        "Wall time of the last completed round.",
        &one(s.rounds.last().map_or(0.0, |r| r.seconds)),
    );
    metric(
        "entente_connected_sites",
        "gauge",
        "Sites connected now.",
        &one(s.sites.values().filter(|v| v.connected).count() as f64),
    );
    metric(
        "entente_refused_handshakes_total",
        "counter",
        "Connections refused during the TLS handshake.",
        &one(s.counters.refused_handshakes as f64),
    );
    // Every kind has a series from the start (at 0), so rate() and absent() alerts work
    // before its first exclusion. Kind names are fixed snake_case words: no label escaping.
    let excluded: Vec<(String, f64)> = ErrorKind::ALL
        .iter()
        .map(|kind| {
            let n = s.counters.excluded_by_kind.get(kind).copied().unwrap_or(0);
            (format!("{{kind=\"{kind}\"}}"), n as f64)
        })
        .collect();
    metric(
        "entente_excluded_updates_total",
        "counter",
        "Updates left out of a round, by the kind of failure (refused, over_budget, timed_out, \
         transport, malformed_reply, internal).",
        &excluded,
    );
    metric(
        "entente_bytes_received_total",
        "counter",
        "Bytes received from nodes.",
        &one(s.sites.values().map(|v| v.bytes_received as f64).sum()),
    );
    metric(
        "entente_bytes_sent_total",
        "counter",
        "Bytes sent to nodes.",
        &one(s.sites.values().map(|v| v.bytes_sent as f64).sum()),
    );
    out
}
