//! The report's charts as PNG files, for a paper: the same SVG the HTML page holds, drawn by
//! resvg (pure Rust) with the system's fonts. Without any font the charts are still drawn,
//! without their text.

use std::path::{Path, PathBuf};

use resvg::{tiny_skia, usvg};

use crate::html::{self, Chart};
use crate::run::{ReportError, RunRecord};

/// Pixels per SVG unit: twice the page's size, sharp enough for print.
pub const SCALE: f32 = 2.0;

/// Largest image drawn, in pixels (about 160 MB of canvas): the report's charts are bounded
/// well below it, so a bigger one is refused, never allocated.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Sans-serif families tried, in order, for the charts' text.
const SANS: [&str; 5] = [
    "DejaVu Sans",
    "Liberation Sans",
    "Noto Sans",
    "Arial",
    "Helvetica",
];

/// The chart styles of the page, for an SVG drawn on its own (the page sets them in its
/// `<style>`), on white.
const SVG_STYLE: &str = "text{font-family:sans-serif}.title{font-size:13px;font-weight:600}\
.tick{font-size:11px;fill:#444}.grid{stroke:#e4e4e4}.used{fill:#009e73}\
.excluded{fill:#d55e00}.idle{fill:#e8e8e8}";

/// Draws SVG text to PNG with one font database, loaded once.
pub struct Renderer {
    options: usvg::Options<'static>,
}

impl Renderer {
    /// Loads the system's fonts; with none found the charts are drawn without text.
    pub fn new() -> Self {
        let mut options = usvg::Options::default();
        let db = options.fontdb_mut();
        db.load_system_fonts();
        let family = SANS
            .iter()
            .map(ToString::to_string)
            .find(|name| {
                db.faces()
                    .any(|f| f.families.iter().any(|(n, _)| n == name))
            })
            .or_else(|| {
                db.faces()
                    .next()
                    .and_then(|f| f.families.first().map(|(n, _)| n.clone()))
            });
        if let Some(family) = family {
            db.set_sans_serif_family(family.clone());
            options.font_family = family;
        }
        Self { options }
    }

    /// How many font faces were found.
    pub fn fonts(&self) -> usize {
        self.options.fontdb.len()
    }

    /// The PNG of `svg`, one of [`crate::svg`]'s charts, at [`SCALE`] pixels per unit;
    /// `name` names it in errors.
    pub fn png(&self, name: &str, svg: &str) -> Result<Vec<u8>, ReportError> {
        let render = |reason: String| ReportError::Render {
            chart: name.to_string(),
            reason,
        };
        let standalone = standalone(svg);
        let tree =
            usvg::Tree::from_str(&standalone, &self.options).map_err(|e| render(e.to_string()))?;
        let size = tree.size();
        let (width, height) = (
            (size.width() * SCALE).ceil() as u32,
            (size.height() * SCALE).ceil() as u32,
        );
        if u64::from(width) * u64::from(height) > MAX_PIXELS {
            return Err(render(format!(
                "a {width}x{height} image is more than the {MAX_PIXELS} pixels drawn at most"
            )));
        }
        let mut pixmap = tiny_skia::Pixmap::new(width, height)
            .ok_or_else(|| render(format!("a {width}x{height} image cannot be drawn")))?;
        pixmap.fill(tiny_skia::Color::WHITE);
        resvg::render(
            &tree,
            tiny_skia::Transform::from_scale(SCALE, SCALE),
            &mut pixmap.as_mut(),
        );
        pixmap.encode_png().map_err(|e| render(e.to_string()))
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes every chart of `run`'s report into `dir` (created if need be) as `NAME.png`, and
/// returns the files written.
pub fn write_pngs(run: &RunRecord, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    write_charts(&html::charts(run), dir, &Renderer::new())
}

/// Writes `charts` into `dir` as `NAME.png` with `renderer`.
pub fn write_charts(
    charts: &[Chart],
    dir: &Path,
    renderer: &Renderer,
) -> Result<Vec<PathBuf>, ReportError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Write { path, source }
    };
    if dir.exists() && !dir.is_dir() {
        return Err(ReportError::NotAFolder(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut written = Vec::with_capacity(charts.len());
    for chart in charts {
        let path = dir.join(format!("{}.png", chart.name));
        if !crate::may_replace(&path, |p| crate::begins_with(p, b"\x89PNG")) {
            return Err(ReportError::WouldReplace(path));
        }
        let png = renderer.png(chart.name, &chart.svg)?;
        std::fs::write(&path, png).map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// An inline SVG of the page as a file of its own: the SVG namespace (the page leaves it
/// out, as HTML allows) and the page's chart styles.
fn standalone(svg: &str) -> String {
    let body = svg.strip_prefix("<svg").unwrap_or(svg);
    format!(
        "<svg xmlns=\"{}\"{body}",
        concat!("http", "://www.w3.org/2000/svg")
    )
    .replacen('>', &format!("><style>{SVG_STYLE}</style>"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svg::{Series, line_chart};

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "the first chunk is not IHDR");
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        (be(16), be(20))
    }

    fn chart() -> String {
        line_chart(
            "Accuracy",
            "accuracy",
            &[Series {
                name: "test <&>",
                points: vec![(1.0, 0.2), (2.0, 0.5), (3.0, 0.7)],
            }],
            Some(1.0),
        )
    }

    #[test]
    fn a_chart_becomes_a_png_of_twice_its_size() {
        let png = Renderer::new().png("accuracy", &chart()).unwrap();
        assert_eq!(png_size(&png), (1280, 600));
    }

    #[test]
    fn without_fonts_the_png_is_still_drawn() {
        let mut renderer = Renderer::new();
        *renderer.options.fontdb_mut() = usvg::fontdb::Database::new();
        assert_eq!(renderer.fonts(), 0);
        let png = renderer.png("accuracy", &chart()).unwrap();
        assert_eq!(png_size(&png), (1280, 600));
    }

    #[test]
    fn the_charts_of_a_run_are_written_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("png/nested");
        let written = write_pngs(&crate::html::tests::hostile_run(), &out).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "accuracy.png",
                "loss.png",
                "collaboration.png",
                "participation.png",
                "privacy.png"
            ]
        );
        for p in &written {
            let (w, _) = png_size(&std::fs::read(p).unwrap());
            assert!(w >= 1280, "{} is {w} pixels wide", p.display());
        }
    }

    #[test]
    fn an_uncreatable_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = write_pngs(&crate::html::tests::hostile_run(), &file.join("png")).unwrap_err();
        assert!(err.to_string().contains("a-file"), "{err}");
    }

    #[test]
    fn a_file_given_as_the_folder_is_refused_as_no_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics.csv");
        std::fs::write(&file, "x").unwrap();
        let err = write_pngs(&crate::html::tests::hostile_run(), &file).unwrap_err();
        assert!(matches!(err, ReportError::NotAFolder(_)), "{err}");
    }

    #[test]
    fn control_characters_a_site_sent_do_not_stop_the_images() {
        let mut run = crate::html::tests::hostile_run();
        run.rounds[0].excluded[0].reason = "bad \u{0} \u{1b}]0;pwned\u{7} \u{202e} evil".into();
        let dir = tempfile::tempdir().unwrap();
        let written = write_pngs(&run, dir.path()).unwrap();
        assert_eq!(written.len(), 5);
    }

    #[test]
    fn a_run_of_many_sites_gives_images_of_bounded_size() {
        let mut run = crate::html::tests::hostile_run();
        let sites: Vec<String> = (0..20_000).map(|i| format!("site-{i}")).collect();
        run.rounds[0].selected.clone_from(&sites);
        run.rounds[0].accepted = sites;
        let chart = crate::html::charts(&run)
            .into_iter()
            .find(|c| c.name == "participation")
            .unwrap();
        assert_eq!(chart.svg.matches("<rect").count(), 200 + 3);
        assert!(chart.svg.contains("(the first 200 of 20001 sites)"));
        let (w, h) = png_size(&Renderer::new().png("participation", &chart.svg).unwrap());
        assert!(u64::from(w) * u64::from(h) < MAX_PIXELS / 4, "{w}x{h}");
        let huge = r#"<svg width="9000" height="9000" viewBox="0 0 9000 9000"></svg>"#;
        let err = Renderer::new().png("huge", huge).unwrap_err();
        assert!(err.to_string().contains("pixels drawn at most"), "{err}");
    }
}
