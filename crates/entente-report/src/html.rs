//! The report as one self-contained HTML page: styles inline, charts as inline SVG, nothing
//! fetched, so it opens offline and can be mailed or archived as one file. Every text that came
//! from a run (site names, reasons, the manifest) is escaped.

use std::fmt::Write;

use crate::run::{Round, RunRecord, Summary};
use crate::svg::{self, Cell, Series};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;\
color:#222;padding:0 16px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}svg{display:block;margin:8px 0}\
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:11px;fill:#444}\
svg .grid{stroke:#e4e4e4}svg .used{fill:#009e73}svg .excluded{fill:#d55e00}\
svg .idle{fill:#e8e8e8}.note{color:#555}";

/// Replaces the characters HTML gives a meaning (`& < > " '`) by their references.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole report of one run.
pub fn render(run: &RunRecord) -> String {
    let name = run
        .summary
        .as_ref()
        .map(|s| s.federation.clone())
        .unwrap_or_else(|| run.folder.display().to_string());
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>entente report: {}</title><style>{STYLE}</style></head><body>",
        escape(&name)
    );
    let _ = write!(out, "<h1>entente report: {}</h1>", escape(&name));
    overview(&mut out, run);
    curves(&mut out, &run.rounds);
    if let Some(summary) = &run.summary {
        collaboration(&mut out, summary);
    }
    participation(&mut out, run);
    let _ = write!(
        out,
        "<h2>Manifest</h2><pre>{}</pre><p class=\"note\">Written by entente {} from {}.</p></body></html>",
        escape(&run.manifest),
        env!("CARGO_PKG_VERSION"),
        escape(&run.folder.display().to_string())
    );
    out
}

fn overview(out: &mut String, run: &RunRecord) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    out.push_str("<table>");
    let mut row = |k: &str, v: String| {
        let _ = write!(out, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    };
    row("rounds completed", run.rounds.len().to_string());
    if let Some(s) = &run.summary {
        row("aggregation rule", s.strategy.clone());
        row("federated model, test accuracy", pct(s.federated_accuracy));
        row(
            "centralized model, test accuracy",
            pct(s.centralized_accuracy),
        );
        row("wall time", format!("{:.1} s", s.wall_seconds));
    } else {
        row("state", "running or stopped before its summary".to_string());
    }
    if let Some(last) = run.rounds.last() {
        row(
            "last round, federated evaluation",
            pct(last.federated.as_ref().map(|e| e.accuracy)),
        );
    }
    out.push_str("</table>");
}

fn curves(out: &mut String, rounds: &[Round]) {
    let series = |name, f: &dyn Fn(&Round) -> Option<f64>| Series {
        name,
        points: rounds
            .iter()
            .filter_map(|r| f(r).map(|v| (f64::from(r.round), v)))
            .collect(),
    };
    out.push_str("<h2>Accuracy and loss per round</h2>");
    out.push_str(&svg::line_chart(
        "Accuracy of the global model",
        "accuracy",
        &[
            series("held-out test set", &|r| {
                r.test.as_ref().map(|e| e.accuracy)
            }),
            series("sites' own test splits", &|r| {
                r.federated.as_ref().map(|e| e.accuracy)
            }),
        ],
        Some(1.0),
    ));
    out.push_str(&svg::line_chart(
        "Loss",
        "loss",
        &[
            series("held-out test set", &|r| r.test.as_ref().map(|e| e.loss)),
            series("sites' own test splits", &|r| {
                r.federated.as_ref().map(|e| e.loss)
            }),
            series("training (accepted updates)", &|r| Some(r.train_loss)),
        ],
        None,
    ));
}

fn collaboration(out: &mut String, summary: &Summary) {
    out.push_str("<h2>What joining bought each site</h2><p class=\"note\">Accuracy on each site's own test split: the federated model against the model the site trains alone (<code>--baselines</code>).</p>");
    let rows: Vec<(String, Vec<Option<f64>>)> = summary
        .sites
        .iter()
        .map(|s| {
            (
                s.site.clone(),
                vec![
                    s.local_only_own_test_accuracy,
                    s.federated_own_test_accuracy,
                ],
            )
        })
        .collect();
    out.push_str(&svg::bar_chart(
        "Own-test accuracy per site",
        &rows,
        &["alone", "federated"],
    ));
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    out.push_str("<table><tr><th>site</th><th>examples</th><th>alone, global test</th><th>alone, own test</th><th>federated, own test</th></tr>");
    for s in &summary.sites {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.site),
            s.examples,
            pct(s.local_only_accuracy),
            pct(s.local_only_own_test_accuracy),
            pct(s.federated_own_test_accuracy)
        );
    }
    let _ = write!(
        out,
        "<tr><th>federated model, global test</th><td colspan=\"4\">{}</td></tr><tr><th>centralized model, global test</th><td colspan=\"4\">{}</td></tr></table>",
        pct(summary.federated_accuracy),
        pct(summary.centralized_accuracy)
    );
}

fn participation(out: &mut String, run: &RunRecord) {
    let mut sites: Vec<String> = match &run.summary {
        Some(s) => s.sites.iter().map(|s| s.site.clone()).collect(),
        None => Vec::new(),
    };
    for r in &run.rounds {
        for s in &r.selected {
            if !sites.contains(s) {
                sites.push(s.clone());
            }
        }
    }
    let numbers: Vec<u32> = run.rounds.iter().map(|r| r.round).collect();
    out.push_str("<h2>Participation</h2>");
    out.push_str(&svg::participation(&sites, &numbers, |s, r| {
        let (site, round) = (&sites[s], &run.rounds[r]);
        if round.accepted.contains(site) {
            Cell::Used
        } else if let Some(e) = round.excluded.iter().find(|e| &e.site == site) {
            Cell::Excluded(&e.reason)
        } else if round.selected.contains(site) {
            Cell::Excluded("selected, no update used")
        } else {
            Cell::NotSelected
        }
    }));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::run::{Evaluation, Excluded, SiteSummary};

    fn hostile_run() -> RunRecord {
        let site = "<script>alert(1)</script>".to_string();
        RunRecord {
            folder: PathBuf::from("runs/x"),
            manifest: "name = \"<img src=x onerror=alert(2)>\"".into(),
            rounds: vec![Round {
                round: 1,
                selected: vec![site.clone(), "b".into()],
                accepted: vec!["b".into()],
                excluded: vec![Excluded {
                    site: site.clone(),
                    reason: "tensor `<b>` is NaN & \"bad\"".into(),
                }],
                train_loss: 1.0,
                test: Some(Evaluation {
                    loss: 1.0,
                    accuracy: 0.5,
                }),
                federated: None,
                seconds: 0.1,
            }],
            summary: Some(Summary {
                federation: "fed'<".into(),
                strategy: "fedavg".into(),
                rounds: 1,
                federated_accuracy: Some(0.5),
                centralized_accuracy: None,
                sites: vec![SiteSummary {
                    site,
                    examples: 3,
                    federated_own_test_accuracy: Some(0.5),
                    local_only_accuracy: None,
                    local_only_own_test_accuracy: Some(f64::NAN),
                }],
                wall_seconds: 1.0,
            }),
        }
    }

    #[test]
    fn text_from_a_run_is_escaped_everywhere() {
        let page = render(&hostile_run());
        assert!(!page.contains("<script"), "a site name was not escaped");
        assert!(!page.contains("<img"), "the manifest was not escaped");
        assert!(!page.contains("<b>"), "a reason was not escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("left out: tensor `&lt;b&gt;` is NaN &amp; &quot;bad&quot;"));
        assert!(page.contains("fed&#39;&lt;"));
    }

    #[test]
    fn the_page_fetches_nothing() {
        let mut run = hostile_run();
        run.manifest = "[federation]\nname = \"plain\"".into();
        let page = render(&run);
        for needle in [
            "http:", "https:", "//", "src=", "href=", "@import", "url(", "<link",
        ] {
            assert!(!page.contains(needle), "the page holds {needle}");
        }
    }

    #[test]
    fn escape_replaces_every_special_character() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
