//! The dashboard's HTML: one page whose small inline script fetches the panel (`/panel`, HTML
//! rendered and escaped here) every second and puts it in place, so the browser runs no
//! template of its own and nothing is fetched from anywhere else.

use std::fmt::Write;

use entente_report::html::escape;
use entente_report::svg::{self, Series};

use crate::board::{AuditView, RunState, Snapshot};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:20px auto;max-width:1000px;\
padding:0 16px;color:#222}h1{font-size:21px}h2{font-size:16px;margin-top:22px}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f3f3f3}.ok{color:#007a4d}.bad{color:#b00020}.note{color:#555}\
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:11px;fill:#444}\
svg .grid{stroke:#e4e4e4}#audit-latest code{word-break:break-all}\
#audit-latest td:nth-child(2){white-space:nowrap}";

/// The page: the panel as it is now, and the script that keeps it current. `token` (already
/// accepted) is passed on in the script's requests.
pub fn page(snapshot: &Snapshot, token: Option<&str>) -> String {
    let query = token.map_or(String::new(), |t| format!("?token={}", url_encode(t)));
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>entente: {name}</title>\
         <style>{STYLE}</style></head><body><div id=\"panel\">{panel}</div><script>\
         (function(){{var p=document.getElementById('panel');\
         function tick(){{fetch('panel{query}',{{cache:'no-store'}}).then(function(r){{return r.ok?r.text():null}})\
         .then(function(t){{if(t!==null)p.innerHTML=t}}).catch(function(){{}});}}\
         setInterval(tick,1000);}})();</script></body></html>",
        name = escape(&snapshot.federation),
        panel = panel(snapshot),
    )
}

/// The part of the page that changes: state, charts, sites, audit.
pub fn panel(s: &Snapshot) -> String {
    let mut out = String::new();
    let state = match &s.run {
        RunState::Waiting => "waiting for sites".to_string(),
        RunState::Running => format!("round {} of {}", s.rounds.len(), s.rounds_total),
        RunState::Finished => format!("finished: {} rounds", s.rounds.len()),
        RunState::Stopped { reason } => format!("stopped: {reason}"),
    };
    let _ = write!(
        out,
        "<h1>{}</h1><p><b id=\"state\">{}</b> &middot; manifest digest <code>{}</code></p>",
        escape(&s.federation),
        escape(&state),
        escape(&s.digest)
    );
    let series = |name, f: &dyn Fn(&crate::board::RoundLine) -> Option<f64>| Series {
        name,
        points: s
            .rounds
            .iter()
            .filter_map(|r| f(r).map(|v| (f64::from(r.round), v)))
            .collect(),
    };
    out.push_str(&svg::line_chart(
        "Accuracy",
        "accuracy",
        &[
            series("held-out test set", &|r| r.test_accuracy),
            series("sites' own test splits", &|r| r.federated_accuracy),
        ],
        Some(1.0),
    ));
    out.push_str(&svg::line_chart(
        "Loss",
        "loss",
        &[
            series("held-out test set", &|r| r.test_loss),
            series("sites' own test splits", &|r| r.federated_loss),
            series("training", &|r| Some(r.train_loss)),
        ],
        None,
    ));
    out.push_str("<h2>Sites</h2><table id=\"sites\"><tr><th>site</th><th>connected</th><th>last seen</th><th>rounds used</th><th>last left out</th><th>privacy spent / budget</th><th>received / sent</th></tr>");
    for (name, v) in &s.sites {
        let seen = v.last_seen.map_or("-".to_string(), |t| {
            format!("{:.0} s ago", (crate::now() - t).max(0.0))
        });
        let excluded = v
            .last_excluded
            .as_ref()
            .map_or("-".to_string(), |(r, why, kind)| {
                format!("round {r} ({kind}): {why}")
            });
        let privacy = v.privacy.map_or("-".to_string(), |(spent, budget)| {
            format!("{spent:.3} / {budget:.3}")
        });
        let moved = if v.bytes_received == 0 && v.bytes_sent == 0 {
            "-".to_string()
        } else {
            format!(
                "{} / {}",
                human_bytes(v.bytes_received),
                human_bytes(v.bytes_sent)
            )
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            if v.connected { "ok" } else { "bad" },
            if v.connected { "yes" } else { "no" },
            escape(&seen),
            v.rounds_used,
            escape(&excluded),
            escape(&privacy),
            moved
        );
    }
    let _ = write!(
        out,
        "</table><p class=\"note\">refused TLS handshakes: {}</p><h2>Audit log</h2>",
        s.counters.refused_handshakes
    );
    match &s.audit {
        Some(a) => audit(&mut out, a),
        None => out.push_str("<p class=\"note\">no audit log (a simulation keeps none)</p>"),
    }
    out
}

/// The audit chain's state and its newest entries.
fn audit(out: &mut String, a: &AuditView) {
    match &a.broken {
        None if a.intact => {
            let _ = write!(
                out,
                "<p class=\"ok\" id=\"audit-chain\">hash chain intact: {} entries</p>",
                a.entries
            );
        }
        broken => {
            let _ = write!(
                out,
                "<p class=\"bad\" id=\"audit-chain\">hash chain BROKEN ({} entries): {}; run \
                 `entente audit verify`</p>",
                a.entries,
                escape(broken.as_deref().unwrap_or("unknown"))
            );
        }
    }
    out.push_str(
        "<table id=\"audit-latest\"><tr><th>#</th><th>time (UTC)</th><th>kind</th>\
         <th>round</th><th>site</th><th>detail</th></tr>",
    );
    for e in &a.latest {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            e.seq,
            utc_time(e.at_unix_ms),
            escape(&e.kind),
            e.round.map_or("-".to_string(), |r| r.to_string()),
            escape(e.site.as_deref().unwrap_or("-")),
            escape(&excerpt(&e.detail, 160))
        );
    }
    out.push_str("</table>");
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A byte count in B, KiB, MiB or GiB.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Percent-encodes everything but unreserved characters, for a query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "17179869184.0 GiB");
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_796_215_200_500), "2026-12-02 12:40:00");
        assert_eq!(utc_time(-1000), "1969-12-31 23:59:59");
    }

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        assert_eq!(excerpt("abc", 5), "abc");
        assert_eq!(excerpt("ééééé", 2), "éé…");
    }
}
