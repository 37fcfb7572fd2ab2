//! The report as one self-contained HTML page: styles inline, charts as inline SVG, nothing
//! fetched, so it opens offline and can be mailed or archived as one file. Every text that came
//! from a run (site names, reasons, the manifest) is escaped.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::path::Path;

use entente_core::text;

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

/// Replaces the characters HTML gives a meaning (`& < > " '`) by their references, and writes
/// out as `\u{..}` the characters XML forbids (the SVG charts are XML) or that reorder text
/// (see [`text::is_disruptive`]); line breaks and tabs stay.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\r' => out.push(c),
            c if text::is_disruptive(c) || matches!(c, '\u{fffe}' | '\u{ffff}') => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// A name or reason from a run as a page shows it: escaped, and cut to its beginning past
/// [`text::MAX_QUOTED`] bytes (the length named), so that no text blows up a chart or a table.
pub fn quote(text: &str) -> String {
    escape(&text::excerpt(text))
}

/// How every report begins, up to its title.
const HEAD: &str =
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>entente report: ";

/// Whether the file at `path` is a report [`render`] wrote (it begins as one does).
pub fn is_report(path: &Path) -> bool {
    crate::begins_with(path, HEAD.as_bytes())
}

/// One chart of the report, as inline SVG.
pub struct Chart {
    /// Its file name without extension (`accuracy`, `loss`, `collaboration`,
    /// `participation`, `privacy`).
    pub name: &'static str,
    /// The SVG element, as the page holds it.
    pub svg: String,
}

/// Every chart of `run`'s report, in page order: those a run has no figures for are left out.
pub fn charts(run: &RunRecord) -> Vec<Chart> {
    let mut charts = vec![
        Chart {
            name: "accuracy",
            svg: accuracy_chart(&run.rounds),
        },
        Chart {
            name: "loss",
            svg: loss_chart(&run.rounds),
        },
    ];
    if let Some(summary) = &run.summary {
        charts.push(Chart {
            name: "collaboration",
            svg: collaboration_chart(summary),
        });
    }
    charts.push(Chart {
        name: "participation",
        svg: participation_chart(run),
    });
    if let Some(svg) = privacy_chart(&run.rounds) {
        charts.push(Chart {
            name: "privacy",
            svg,
        });
    }
    charts
}

/// The whole report of one run.
pub fn render(run: &RunRecord) -> String {
    let name = run
        .summary
        .as_ref()
        .map(|s| s.federation.clone())
        .unwrap_or_else(|| run.folder.display().to_string());
    let mut out = format!(
        "{HEAD}{}</title><style>{STYLE}</style></head><body>",
        escape(&name)
    );
    let _ = write!(out, "<h1>entente report: {}</h1>", escape(&name));
    overview(&mut out, run);
    for chart in charts(run) {
        match chart.name {
            "accuracy" => out.push_str("<h2>Accuracy and loss per round</h2>"),
            "collaboration" => out.push_str("<h2>What joining bought each site</h2><p class=\"note\">Accuracy on each site's own test split: the federated model against the model the site trains alone (<code>--baselines</code>).</p>"),
            "participation" => out.push_str("<h2>Participation</h2>"),
            "privacy" => out.push_str("<h2>Privacy spent</h2><p class=\"note\">Epsilon each site has spent after each round, by the RDP accountant, against its budget: in a simulation as its ledger counts it (earlier runs on the same data included), in a deployment as the run&#39;s charges in the coordinator&#39;s audit log add up.</p>"),
            _ => {}
        }
        out.push_str(&chart.svg);
        match chart.name {
            "collaboration" => {
                if let Some(summary) = &run.summary {
                    collaboration_table(&mut out, summary);
                }
            }
            "privacy" => privacy_table(&mut out, &run.rounds),
            _ => {}
        }
    }
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

fn series<'a>(rounds: &[Round], name: &'a str, f: &dyn Fn(&Round) -> Option<f64>) -> Series<'a> {
    Series {
        name,
        points: rounds
            .iter()
            .filter_map(|r| f(r).map(|v| (f64::from(r.round), v)))
            .collect(),
    }
}

fn accuracy_chart(rounds: &[Round]) -> String {
    svg::line_chart(
        "Accuracy of the global model",
        "accuracy",
        &[
            series(rounds, "held-out test set", &|r| {
                r.test.as_ref().map(|e| e.accuracy)
            }),
            series(rounds, "sites' own test splits", &|r| {
                r.federated.as_ref().map(|e| e.accuracy)
            }),
        ],
        Some(1.0),
    )
}

fn loss_chart(rounds: &[Round]) -> String {
    svg::line_chart(
        "Loss",
        "loss",
        &[
            series(rounds, "held-out test set", &|r| {
                r.test.as_ref().map(|e| e.loss)
            }),
            series(rounds, "sites' own test splits", &|r| {
                r.federated.as_ref().map(|e| e.loss)
            }),
            series(rounds, "training (accepted updates)", &|r| {
                Some(r.train_loss)
            }),
        ],
        None,
    )
}

fn collaboration_chart(summary: &Summary) -> String {
    let rows: Vec<(String, Vec<Option<f64>>)> = summary
        .sites
        .iter()
        .take(MAX_CHART_SITES)
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
    let title = format!(
        "Own-test accuracy per site{}",
        first_of(summary.sites.len(), MAX_CHART_SITES, "sites")
    );
    svg::bar_chart(&title, &rows, &["alone", "federated"])
}

/// Sites a chart draws a row for at most (the tables list every one), so that a run of
/// thousands of sites still gives a chart a page and an image can hold.
pub const MAX_CHART_SITES: usize = 200;

/// Rounds the participation grid draws at most.
pub const MAX_GRID_ROUNDS: usize = 500;

/// A title's note that only the first `max` of `total` things are drawn; empty when all are.
fn first_of(total: usize, max: usize, what: &str) -> String {
    if total > max {
        format!(" (the first {max} of {total} {what})")
    } else {
        String::new()
    }
}

fn collaboration_table(out: &mut String, summary: &Summary) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    out.push_str("<table><tr><th>site</th><th>examples</th><th>alone, global test</th><th>alone, own test</th><th>federated, own test</th></tr>");
    for s in &summary.sites {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            quote(&s.site),
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

fn participation_chart(run: &RunRecord) -> String {
    let mut sites: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let summary = run
        .summary
        .iter()
        .flat_map(|s| s.sites.iter().map(|s| s.site.as_str()));
    let selected = run
        .rounds
        .iter()
        .flat_map(|r| r.selected.iter().map(String::as_str));
    for site in summary.chain(selected) {
        if seen.insert(site) {
            sites.push(site);
        }
    }
    let total_sites = sites.len();
    sites.truncate(MAX_CHART_SITES);
    let rounds = &run.rounds[..run.rounds.len().min(MAX_GRID_ROUNDS)];
    // Per drawn round, what became of each drawn site: one pass over each of its lists.
    let row: HashMap<&str, usize> = sites.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let grid: Vec<Vec<Cell<'_>>> = rounds
        .iter()
        .map(|round| {
            let mut cells = vec![Cell::NotSelected; sites.len()];
            let selected = round
                .selected
                .iter()
                .map(|s| (s, Cell::Excluded("selected, no update used")));
            let excluded = round
                .excluded
                .iter()
                .map(|e| (&e.site, Cell::Excluded(&e.reason)));
            let used = round.accepted.iter().map(|s| (s, Cell::Used));
            // Later marks win: used over left out over selected.
            for (site, cell) in selected.chain(excluded).chain(used) {
                if let Some(&i) = row.get(site.as_str()) {
                    cells[i] = cell;
                }
            }
            cells
        })
        .collect();
    let numbers: Vec<u32> = rounds.iter().map(|r| r.round).collect();
    let note = first_of(total_sites, MAX_CHART_SITES, "sites")
        + &first_of(run.rounds.len(), MAX_GRID_ROUNDS, "rounds");
    svg::participation(&sites, &numbers, &note, |s, r| grid[r][s])
}

/// One site's privacy over a run: its budget, its epsilon after each round that records it,
/// and the last epsilon with its delta.
struct PrivacyTrack<'a> {
    site: &'a str,
    budget: f64,
    points: Vec<(f64, f64)>,
    last: (f64, f64),
}

/// The sites under a privacy budget, in the order of the first round that records them, read
/// in one pass over the rounds.
fn privacy_tracks(rounds: &[Round]) -> Vec<PrivacyTrack<'_>> {
    let mut tracks: Vec<PrivacyTrack<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for r in rounds {
        let Some(p) = &r.privacy else { continue };
        for s in &p.sites {
            let i = *index.entry(&s.site).or_insert_with(|| {
                tracks.push(PrivacyTrack {
                    site: &s.site,
                    budget: s.budget,
                    points: Vec::new(),
                    last: (s.epsilon, p.delta),
                });
                tracks.len() - 1
            });
            tracks[i].points.push((f64::from(r.round), s.epsilon));
            tracks[i].last = (s.epsilon, p.delta);
        }
    }
    tracks
}

/// Epsilon spent per round, one line per site (the first [`MAX_CHART_SITES`]), with each
/// distinct budget of those as a dashed line; `None` when no round records privacy.
fn privacy_chart(rounds: &[Round]) -> Option<String> {
    let mut tracks = privacy_tracks(rounds);
    if tracks.is_empty() {
        return None;
    }
    let title = format!(
        "Privacy spent per site{}",
        first_of(tracks.len(), MAX_CHART_SITES, "sites")
    );
    tracks.truncate(MAX_CHART_SITES);
    let mut budgets: Vec<f64> = tracks.iter().map(|t| t.budget).collect();
    let lines: Vec<Series<'_>> = tracks
        .into_iter()
        .map(|t| Series {
            name: t.site,
            points: t.points,
        })
        .collect();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    let names: Vec<String> = budgets.iter().map(|b| format!("budget {b}")).collect();
    let limits: Vec<svg::Limit<'_>> = names
        .iter()
        .zip(&budgets)
        .map(|(name, &value)| svg::Limit { name, value })
        .collect();
    Some(svg::line_chart_with_limits(
        &title, "epsilon", &lines, None, &limits,
    ))
}

/// Per site: epsilon spent after its last recorded round, its budget and the delta.
fn privacy_table(out: &mut String, rounds: &[Round]) {
    out.push_str(
        "<table><tr><th>site</th><th>epsilon spent</th><th>budget</th><th>delta</th></tr>",
    );
    for t in privacy_tracks(rounds) {
        let (epsilon, delta) = t.last;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{epsilon:.3}</td><td>{}</td><td>{delta:e}</td></tr>",
            quote(t.site),
            t.budget
        );
    }
    out.push_str("</table>");
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ReportError;
    use crate::run::{Evaluation, Excluded, RoundPrivacy, SitePrivacy, SiteSummary};

    /// A run whose every text tries to break out of the page, with a privacy ledger.
    pub(crate) fn hostile_run() -> RunRecord {
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
                privacy: Some(RoundPrivacy {
                    delta: 1e-5,
                    sites: vec![
                        SitePrivacy {
                            site: site.clone(),
                            epsilon: 0.25,
                            budget: 3.0,
                        },
                        SitePrivacy {
                            site: "b".into(),
                            epsilon: 0.5,
                            budget: 2.0,
                        },
                    ],
                }),
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
    fn a_report_replaces_an_earlier_report_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("report.html");
        crate::write_record(&hostile_run(), &page).unwrap();
        assert!(is_report(&page));
        crate::write_record(&hostile_run(), &page).unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        std::fs::write(&metrics, "{}\n").unwrap();
        let err = crate::write_record(&hostile_run(), &metrics).unwrap_err();
        assert!(matches!(err, ReportError::WouldReplace(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&metrics).unwrap(), "{}\n");
    }

    #[test]
    fn many_budgeted_sites_give_a_bounded_chart_and_a_full_table() {
        let mut run = hostile_run();
        let sites: Vec<SitePrivacy> = (0..5_000)
            .map(|i| SitePrivacy {
                site: format!("s{i}-{}", "x".repeat(1_000)),
                epsilon: 1.0,
                budget: 1.0 + f64::from(i),
            })
            .collect();
        run.rounds[0].privacy = Some(RoundPrivacy { delta: 1e-5, sites });
        let chart = privacy_chart(&run.rounds).unwrap();
        assert_eq!(chart.matches("<circle").count(), MAX_CHART_SITES);
        assert_eq!(chart.matches("stroke-dasharray").count(), MAX_CHART_SITES);
        assert!(chart.contains("(the first 200 of 5000 sites)"));
        // Names are quoted, not copied: 5,000 names of 1 KB would be 5 MB.
        assert!(chart.len() < 400_000, "{}", chart.len());
        let mut table = String::new();
        privacy_table(&mut table, &run.rounds);
        assert_eq!(table.matches("<tr><td>s").count(), 5_000);
        assert!(table.contains("(1005 bytes in all)"));
    }

    #[test]
    fn a_link_or_a_pipe_in_the_way_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        std::fs::write(&metrics, "{}\n").unwrap();
        let link = dir.path().join("report.html");
        std::os::unix::fs::symlink(&metrics, &link).unwrap();
        assert!(crate::write_record(&hostile_run(), &link).is_err());
        let pngs = dir.path().join("png");
        std::fs::create_dir(&pngs).unwrap();
        std::os::unix::fs::symlink(&metrics, pngs.join("accuracy.png")).unwrap();
        let err = crate::write_pngs(&hostile_run(), &pngs).unwrap_err();
        assert!(matches!(err, ReportError::WouldReplace(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&metrics).unwrap(), "{}\n");
        // A pipe is not opened (opening one for reading would wait for a writer).
        let pipe = dir.path().join("pipe.html");
        let made = std::process::Command::new("mkfifo").arg(&pipe).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(crate::write_record(&hostile_run(), &pipe).is_err());
        }
    }

    #[test]
    fn a_one_round_line_is_drawn_as_a_dot() {
        let svg = accuracy_chart(&hostile_run().rounds);
        assert!(svg.contains("<circle"), "{svg}");
        assert!(!svg.contains("<polyline"), "{svg}");
    }

    #[test]
    fn the_grid_marks_used_left_out_and_not_selected() {
        let mut run = private_run();
        run.rounds[1].selected = vec!["<script>alert(1)</script>".into()];
        run.rounds[1].accepted = vec!["<script>alert(1)</script>".into()];
        run.rounds[1].excluded.clear();
        let svg = participation_chart(&run);
        let cells: Vec<&str> = svg
            .split("class=\"")
            .skip(1)
            .map(|c| &c[..c.find('"').unwrap()])
            .filter(|c| ["used", "excluded", "idle"].contains(c))
            .collect();
        // Sites down (the summary's, then b), rounds across; then the legend.
        assert_eq!(
            cells,
            [
                "excluded", "used", "used", "idle", "used", "excluded", "idle"
            ]
        );
    }

    /// Two rounds: `a` trains in both, `b` only in the second.
    fn private_run() -> RunRecord {
        let mut run = hostile_run();
        let round = |n: u32, a: f64, b: f64| {
            let mut r = run.rounds[0].clone();
            r.round = n;
            r.privacy = Some(RoundPrivacy {
                delta: 1e-5,
                sites: vec![
                    SitePrivacy {
                        site: "a".into(),
                        epsilon: a,
                        budget: 4.0,
                    },
                    SitePrivacy {
                        site: "b".into(),
                        epsilon: b,
                        budget: 4.0,
                    },
                ],
            });
            r
        };
        run.rounds = vec![round(1, 1.25, 0.0), round(2, 2.5, 1.125)];
        run
    }

    #[test]
    fn privacy_spent_is_charted_and_tabled_with_the_last_figures() {
        let page = render(&private_run());
        assert!(page.contains("<h2>Privacy spent</h2>"));
        // The last round's epsilon, the budget and the delta.
        assert!(
            page.contains("<tr><td>a</td><td>2.500</td><td>4</td><td>1e-5</td></tr>"),
            "{page}"
        );
        assert!(page.contains("<tr><td>b</td><td>1.125</td><td>4</td><td>1e-5</td></tr>"));
        let chart = charts(&private_run()).pop().unwrap();
        assert_eq!(chart.name, "privacy");
        // One line per site; the budget, the top of the axis, at the plot's top (y = 28).
        assert_eq!(chart.svg.matches("<polyline").count(), 2);
        assert!(
            chart.svg.contains(r##"y1="28.0" y2="28.0" stroke="#222""##),
            "{}",
            chart.svg
        );
        assert!(chart.svg.contains("budget 4"));
        // a at 2.5 of 4 in round 2 (x = 624): 28 + 214 * (1 - 2.5 / 4) = 108.25.
        assert!(chart.svg.contains("624.0,108.2"), "{}", chart.svg);
    }

    #[test]
    fn a_run_without_a_ledger_has_no_privacy_section() {
        let mut run = hostile_run();
        run.rounds[0].privacy = None;
        assert!(!render(&run).contains("Privacy spent"));
        assert!(charts(&run).iter().all(|c| c.name != "privacy"));
    }

    #[test]
    fn hostile_site_names_are_escaped_in_the_privacy_section() {
        let page = render(&hostile_run());
        let privacy = &page[page.find("<h2>Privacy spent").unwrap()..];
        assert!(privacy.contains(
            "<tr><td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td>0.250</td><td>3</td>"
        ));
        assert!(!privacy.contains("<script"));
    }

    #[test]
    fn old_round_lines_without_privacy_still_read() {
        let line = r#"{"round":1,"selected":["a"],"accepted":["a"],"train_loss":1.0,"test":null,"federated":null,"seconds":0.5}"#;
        let run = RunRecord::from_round_records("old", String::new(), &[line.to_string()]).unwrap();
        assert_eq!(run.rounds[0].privacy, None);
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
        assert_eq!(
            escape("a\u{0}b\u{1b}]0;x\u{7}\u{202e}\u{ffff}\nc"),
            "a\\u{0}b\\u{1b}]0;x\\u{7}\\u{202e}\\u{ffff}\nc"
        );
    }
}
