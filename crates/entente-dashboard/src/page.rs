//! The dashboard's HTML: one page whose small inline script fetches the panel (`/panel`, HTML
//! rendered and escaped here) every second and puts it in place, so the browser runs no
//! template of its own and nothing is fetched from anywhere else.

use std::fmt::Write;

use entente_report::html::escape;
use entente_report::svg::{self, Series};

use crate::board::{RunState, Snapshot};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:20px auto;max-width:1000px;\
padding:0 16px;color:#222}h1{font-size:21px}h2{font-size:16px;margin-top:22px}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f3f3f3}.ok{color:#007a4d}.bad{color:#b00020}.note{color:#555}\
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:11px;fill:#444}\
svg .grid{stroke:#e4e4e4}";

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
    out.push_str("<h2>Sites</h2><table id=\"sites\"><tr><th>site</th><th>connected</th><th>last seen</th><th>rounds used</th><th>last left out</th><th>privacy spent / budget</th></tr>");
    for (name, v) in &s.sites {
        let seen = v.last_seen.map_or("-".to_string(), |t| {
            format!("{:.0} s ago", (crate::now() - t).max(0.0))
        });
        let excluded = v
            .last_excluded
            .as_ref()
            .map_or("-".to_string(), |(r, why)| format!("round {r}: {why}"));
        let privacy = v.privacy.map_or("-".to_string(), |(spent, budget)| {
            format!("{spent:.3} / {budget:.3}")
        });
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            if v.connected { "ok" } else { "bad" },
            if v.connected { "yes" } else { "no" },
            escape(&seen),
            v.rounds_used,
            escape(&excluded),
            escape(&privacy)
        );
    }
    out.push_str("</table><h2>Audit log</h2>");
    out.push_str(&match s.audit {
        Some((true, n)) => format!("<p class=\"ok\">hash chain intact: {n} entries</p>"),
        Some((false, n)) => format!(
            "<p class=\"bad\">hash chain BROKEN ({n} entries): run `entente audit verify`</p>"
        ),
        None => "<p class=\"note\">no audit log (a simulation keeps none)</p>".to_string(),
    });
    out
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
