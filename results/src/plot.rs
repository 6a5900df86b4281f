//! PNG figures with plotters' bitmap backend. Labels use DejaVu Sans from the `dejavu` crate,
//! registered once, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Result, ResultsError};

const FONT: &str = "sans-serif";

/// A name safe in a file name.
pub(crate) fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err()
        {
            tracing::warn!("could not register the DejaVu font; figure labels may be missing");
        }
    });
}

fn plot_err(path: &Path) -> impl Fn(String) -> ResultsError + '_ {
    move |message| ResultsError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

/// White (at `lo`) to dark blue (at `hi`); grey for a missing cell.
fn color(v: Option<f64>, lo: f64, hi: f64) -> RGBColor {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return RGBColor(200, 200, 200);
    };
    let t = if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// A heatmap: `values[r][c]` for row labels `rows` and column labels `cols`, each cell printed;
/// with `sds`, a cell that has one reads `mean` over `± sd` (the colour is the mean's).
pub fn heatmap(
    path: &Path,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
    sds: Option<&[Vec<Option<f64>>]>,
) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let cell = 48i32;
    let (left, top) = (170i32, 150i32);
    // Wide enough for the title at ~9 px per character.
    let width =
        (left + cell * cols.len() as i32 + 20).max(20 + 9 * title.chars().count() as i32) as u32;
    let height = (top + cell * rows.len() as i32 + 20) as u32;
    let finite = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite());
    // Scores and relative performance are non-negative: anchor white at 0 so the lowest
    // cell (often the random prompt) stays visible.
    let (lo, hi) = finite.fold((0.0f64, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let font = |size: f64| TextStyle::from((FONT, size).into_font()).color(&BLACK);
    root.draw(&Text::new(title.to_string(), (10, 10), font(18.0)))
        .map_err(|e| err(e.to_string()))?;
    for (c, label) in cols.iter().enumerate() {
        let x = left + cell * c as i32 + cell / 2;
        let style = font(12.0)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(label.clone(), (x, top - 6), style))
            .map_err(|e| err(e.to_string()))?;
    }
    for (r, label) in rows.iter().enumerate() {
        let y = top + cell * r as i32 + cell / 2;
        let style = font(12.0).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(label.clone(), (left - 6, y), style))
            .map_err(|e| err(e.to_string()))?;
        for (c, v) in values[r].iter().enumerate() {
            let (x0, y0) = (left + cell * c as i32, top + cell * r as i32);
            let fill = color(*v, lo, hi);
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell, y0 + cell)],
                fill.filled(),
            ))
            .and_then(|_| {
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    RGBColor(230, 230, 230),
                ))
            })
            .map_err(|e| err(e.to_string()))?;
            if let Some(v) = v {
                let dark = (fill.0 as u32 + fill.1 as u32 + fill.2 as u32) < 360;
                let style = |size: f64| {
                    font(size)
                        .color(if dark { &WHITE } else { &BLACK })
                        .pos(Pos::new(HPos::Center, VPos::Center))
                };
                let (cx, cy) = (x0 + cell / 2, y0 + cell / 2);
                match sds.and_then(|sd| sd[r][c]) {
                    Some(sd) => root
                        .draw(&Text::new(format!("{v:.0}"), (cx, cy - 7), style(11.0)))
                        .and_then(|_| {
                            root.draw(&Text::new(format!("±{sd:.1}"), (cx, cy + 8), style(10.0)))
                        }),
                    None => root.draw(&Text::new(format!("{v:.0}"), (cx, cy), style(11.0))),
                }
                .map_err(|e| err(e.to_string()))?;
            }
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// Horizontal bars, one per label (for "which indicator predicts transfer best"), each with a
/// whisker over its interval where `intervals` has one.
pub fn bars(
    path: &Path,
    title: &str,
    labels: &[String],
    values: &[f64],
    intervals: &[Option<(f64, f64)>],
) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let (left, row, scale) = (170i32, 28i32, 300.0f64);
    let height = (50 + row * labels.len() as i32 + 20) as u32;
    let root =
        BitMapBackend::new(path, (left as u32 + 2 * scale as u32 + 40, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let font = |size: f64| TextStyle::from((FONT, size).into_font()).color(&BLACK);
    root.draw(&Text::new(title.to_string(), (10, 10), font(16.0)))
        .map_err(|e| err(e.to_string()))?;
    // ρ lies in [-1, 1]: zero in the middle.
    let zero = left + scale as i32;
    for (i, (label, v)) in labels.iter().zip(values).enumerate() {
        let y = 50 + row * i as i32;
        let style = font(12.0).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(label.clone(), (left - 6, y + row / 2), style))
            .map_err(|e| err(e.to_string()))?;
        let end = zero + (v.clamp(-1.0, 1.0) * scale) as i32;
        let fill = if *v >= 0.0 {
            RGBColor(8, 81, 156)
        } else {
            RGBColor(203, 24, 29)
        };
        root.draw(&Rectangle::new(
            [(zero.min(end), y + 4), (zero.max(end), y + row - 4)],
            fill.filled(),
        ))
        .map_err(|e| err(e.to_string()))?;
        let x_of = |r: f64| zero + (r.clamp(-1.0, 1.0) * scale) as i32;
        let mut text_x = zero.max(end);
        if let Some((lo, hi)) = intervals.get(i).copied().flatten() {
            let (a, b, mid) = (x_of(lo), x_of(hi), y + row / 2);
            for line in [
                vec![(a, mid), (b, mid)],
                vec![(a, mid - 5), (a, mid + 5)],
                vec![(b, mid - 5), (b, mid + 5)],
            ] {
                root.draw(&PathElement::new(line, BLACK))
                    .map_err(|e| err(e.to_string()))?;
            }
            text_x = text_x.max(b);
        }
        let style = font(11.0).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(
            format!("{v:.3}"),
            (text_x + 4, y + row / 2),
            style,
        ))
        .map_err(|e| err(e.to_string()))?;
    }
    root.draw(&PathElement::new(
        vec![(zero, 45), (zero, height as i32 - 10)],
        BLACK,
    ))
    .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// One panel of a small-multiples figure: a job's dev score and its loss (scaled to its maximum).
pub struct CurvePanel {
    pub label: String,
    pub dev_score: Vec<(i64, f64)>,
    pub loss: Vec<(i64, f64)>,
}

/// Training curves as small multiples, four panels per row.
pub fn small_multiples(path: &Path, title: &str, panels: &[CurvePanel]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let cols = 4usize;
    let rows = panels.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (1200, 40 + 220 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(title, (FONT, 18))
        .map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas) {
        let steps = panel.dev_score.iter().chain(&panel.loss).map(|(s, _)| *s);
        let (x0, x1) = steps.fold((i64::MAX, i64::MIN), |(a, b), s| (a.min(s), b.max(s)));
        let (x0, x1) = if x0 > x1 {
            (0, 1)
        } else {
            (x0, x1.max(x0 + 1))
        };
        let max_loss = panel
            .loss
            .iter()
            .map(|(_, v)| v.abs())
            .fold(0.0f64, f64::max);
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.label, (FONT, 12))
            .margin(6)
            .x_label_area_size(18)
            .y_label_area_size(30)
            .build_cartesian_2d(x0..x1, 0.0f64..1.05)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_labels(4)
            .y_labels(3)
            .label_style((FONT, 10))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let blue = RGBColor(8, 81, 156);
        chart
            .draw_series(LineSeries::new(
                panel.dev_score.iter().copied(),
                blue.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        if max_loss > 0.0 {
            let red = RGBColor(203, 24, 29);
            let scaled = panel.loss.iter().map(|(s, v)| (*s, v / max_loss));
            chart
                .draw_series(LineSeries::new(scaled, red))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}
