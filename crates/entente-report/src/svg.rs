//! The report's charts as inline SVG: no script, no font files, no external reference, so the
//! page opens offline and prints as it shows.

use std::fmt::Write;

use crate::html::{escape, quote};

/// Colours of the series, in order (Okabe-Ito, legible to colour-blind readers).
pub const PALETTE: [&str; 6] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
];

/// One line of a chart: its name in the legend and its `(x, y)` points.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// Points, in x order; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 58.0;

/// A horizontal line across a chart at `value`, such as a privacy budget.
pub struct Limit<'a> {
    /// Its label, at the right end of the line.
    pub name: &'a str,
    /// Where it is drawn on the y axis.
    pub value: f64,
}

/// Legend entries drawn at most; a chart of more series names the rest on hover only.
pub const MAX_LEGEND: usize = 12;

/// Legend entries in a row.
const LEGEND_PER_ROW: usize = 3;

/// A line chart of `series` over rounds; `y_max` fixes the top of the axis (1 for accuracies),
/// else it is the largest value.
pub fn line_chart(title: &str, y_label: &str, series: &[Series<'_>], y_max: Option<f64>) -> String {
    line_chart_with_limits(title, y_label, series, y_max, &[])
}

/// [`line_chart`] with dashed horizontal `limits` (taken into the axis when `y_max` is
/// `None`); the legend wraps, and names at most [`MAX_LEGEND`] series.
pub fn line_chart_with_limits(
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    y_max: Option<f64>,
    limits: &[Limit<'_>],
) -> String {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().copied().filter(finite))
    };
    let x_max = points().map(|(x, _)| x).fold(1.0, f64::max);
    let top = y_max.unwrap_or_else(|| {
        points()
            .map(|(_, y)| y)
            .chain(limits.iter().map(|l| l.value).filter(|v| v.is_finite()))
            .fold(0.0, f64::max)
    });
    let top = if top > 0.0 { top } else { 1.0 };
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + (x - 1.0).max(0.0) / (x_max - 1.0).max(1.0) * w;
    let py = |y: f64| TOP + h - (y / top).clamp(0.0, 1.0) * h;
    let shown = series.len().min(MAX_LEGEND) + usize::from(series.len() > MAX_LEGEND);
    let legend_rows = shown.div_ceil(LEGEND_PER_ROW).max(1);
    let height = HEIGHT + 14.0 * (legend_rows - 1) as f64;

    let mut out = open(WIDTH, height, title);
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="18" class="title">{}</text>"#,
        escape(title)
    );
    for i in 0..=4 {
        let y = top * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LEFT + w,
            LEFT - 6.0,
            py(y) + 4.0,
            tick(y),
            py = py(y),
        );
    }
    let step = (x_max / 10.0).ceil().max(1.0);
    let mut x = 1.0;
    while x <= x_max {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{x}</text>"#,
            px(x),
            TOP + h + 16.0
        );
        x += step;
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" class="tick" text-anchor="middle">round</text><text x="14" y="{}" class="tick" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        LEFT + w / 2.0,
        TOP + h + 30.0,
        TOP + h / 2.0,
        TOP + h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| finite(p))
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        match path.as_slice() {
            [] => continue,
            // One round: a dot, as a one-point line draws nothing.
            [(cx, cy)] => {
                let _ = write!(
                    out,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3.5" fill="{colour}"><title>{}</title></circle>"#,
                    quote(s.name)
                );
            }
            _ => {
                let points: Vec<String> =
                    path.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = write!(
                    out,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></polyline>"#,
                    points.join(" "),
                    quote(s.name)
                );
            }
        }
        if i >= MAX_LEGEND {
            continue;
        }
        let (lx, ly) = legend_at(i, TOP + h);
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="{ly}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}" class="tick">{}</text>"#,
            lx + 16.0,
            ly + 4.0,
            quote(s.name)
        );
    }
    if series.len() > MAX_LEGEND {
        let (lx, ly) = legend_at(MAX_LEGEND, TOP + h);
        let _ = write!(
            out,
            r#"<text x="{lx}" y="{}" class="tick">and {} more (hover a line)</text>"#,
            ly + 4.0,
            series.len() - MAX_LEGEND
        );
    }
    for limit in limits.iter().filter(|l| l.value.is_finite()) {
        let y = py(limit.value);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#222" stroke-width="1.5" stroke-dasharray="6 4"><title>{}</title></line><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            LEFT + w,
            quote(limit.name),
            LEFT + w - 4.0,
            y - 4.0,
            quote(limit.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Where legend entry `i` of a line chart whose plot ends at `bottom` goes.
fn legend_at(i: usize, bottom: f64) -> (f64, f64) {
    (
        LEFT + 8.0 + 170.0 * (i % LEGEND_PER_ROW) as f64,
        bottom + 43.0 + 14.0 * (i / LEGEND_PER_ROW) as f64,
    )
}

/// Grouped horizontal bars, one group per row label, one bar per series, values in `[0, 1]`
/// (accuracies); a missing value leaves its bar out.
pub fn bar_chart(title: &str, rows: &[(String, Vec<Option<f64>>)], series: &[&str]) -> String {
    const LABEL: f64 = 150.0;
    const BAR: f64 = 9.0;
    let group = BAR * series.len() as f64 + 8.0;
    let height = TOP + group * rows.len() as f64 + 40.0;
    let w = WIDTH - LABEL - RIGHT - 40.0;
    let mut out = open(WIDTH, height, title);
    let _ = write!(
        out,
        r#"<text x="8" y="18" class="title">{}</text>"#,
        escape(title)
    );
    for (r, (label, values)) in rows.iter().enumerate() {
        let y0 = TOP + group * r as f64;
        let _ = write!(
            out,
            r#"<text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LABEL - 6.0,
            y0 + group / 2.0,
            quote(label)
        );
        for (i, value) in values.iter().enumerate() {
            let Some(v) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let colour = PALETTE[i % PALETTE.len()];
            let name = series.get(i).copied().unwrap_or("");
            let _ = write!(
                out,
                r#"<rect x="{LABEL}" y="{:.1}" width="{:.1}" height="{}" fill="{colour}"><title>{}: {} {:.2}%</title></rect>"#,
                y0 + BAR * i as f64,
                v.clamp(0.0, 1.0) * w,
                BAR - 1.0,
                quote(label),
                quote(name),
                100.0 * v
            );
        }
    }
    let axis = TOP + group * rows.len() as f64;
    for i in 0..=4 {
        let v = f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{}%</text>"#,
            LABEL + v * w,
            axis + 14.0,
            100 * i / 4
        );
    }
    for (i, name) in series.iter().enumerate() {
        let lx = LABEL + 200.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="{}" width="12" height="8" fill="{}"/><text x="{}" y="{}" class="tick">{}</text>"#,
            axis + 24.0,
            PALETTE[i % PALETTE.len()],
            lx + 16.0,
            axis + 32.0,
            quote(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// What became of a site in a round, for the participation grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    /// Its update was used.
    Used,
    /// It was selected and left out, for this reason.
    Excluded(&'a str),
    /// It was not selected.
    NotSelected,
}

/// Rounds across, sites down: a square per round and site; `note` follows the title.
pub fn participation<'a>(
    sites: &[&str],
    rounds: &[u32],
    note: &str,
    cell: impl Fn(usize, usize) -> Cell<'a>,
) -> String {
    const LABEL: f64 = 150.0;
    let size = (560.0 / rounds.len().max(1) as f64).clamp(3.0, 14.0);
    let width = LABEL + size * rounds.len() as f64 + RIGHT;
    let height = TOP + size * sites.len() as f64 + 36.0;
    let mut out = open(width.max(LABEL + 3.0 * 170.0), height, "participation");
    let _ = write!(
        out,
        r#"<text x="8" y="18" class="title">Participation: rounds across, sites down{}</text>"#,
        escape(note)
    );
    for (s, site) in sites.iter().enumerate() {
        let y = TOP + size * s as f64;
        let _ = write!(
            out,
            r#"<text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LABEL - 6.0,
            y + size - 2.0,
            quote(site)
        );
        for (r, round) in rounds.iter().enumerate() {
            let (class, what) = match cell(s, r) {
                Cell::Used => ("used", "update used".to_string()),
                Cell::Excluded(reason) => ("excluded", format!("left out: {reason}")),
                Cell::NotSelected => ("idle", "not selected".to_string()),
            };
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" class="{class}"><title>round {round}, {}: {}</title></rect>"#,
                LABEL + size * r as f64,
                size - 1.0,
                size - 1.0,
                quote(site),
                quote(&what)
            );
        }
    }
    let legend = TOP + size * sites.len() as f64 + 18.0;
    for (i, (class, text)) in [
        ("used", "used"),
        ("excluded", "left out (hover for why)"),
        ("idle", "not selected"),
    ]
    .iter()
    .enumerate()
    {
        let lx = LABEL + 170.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="{}" width="10" height="10" class="{class}"/><text x="{}" y="{}" class="tick">{text}</text>"#,
            legend - 9.0,
            lx + 14.0,
            legend
        );
    }
    out.push_str("</svg>");
    out
}

fn open(width: f64, height: f64, label: &str) -> String {
    format!(
        r#"<svg width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="{}">"#,
        quote(label)
    )
}

/// An axis label: two decimals below 10, none above.
fn tick(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}
