//! `promptgrid indicators`: prompt-only indicators for prompts that come from elsewhere
//! (safetensors files or PEFT adapters), and, given zero-shot transfer results in the reference
//! CSV format, the relative matrix and the indicators' correlations with it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Result, ResultsError, io_at};
use crate::indicator_ranking::{IndicatorRanking, label};
use crate::indicators::prompt_indicator_rows;
use crate::plot::slug;
use crate::prompts::load_prompt_dir;
use crate::rho_uncertainty::Resampling;
use crate::schema::{CorrelationRow, IndicatorRow, TransferRelativeRow};
use crate::spearman::{GLOBAL, MEAN, SeededValues, correlation_rows};
use crate::transfer::{
    RANDOM_SOURCE, RelativeCell, read_transfer_csv, relative_map, relative_matrix,
};
use crate::writer::replace_table;

/// Writer name of the parts this command writes.
const WRITER: &str = "indicators";

/// What [`run_indicators`] computed and wrote.
#[derive(Debug, Clone)]
pub struct IndicatorSummary {
    pub model: String,
    /// Task names of the prompts, sorted.
    pub tasks: Vec<String>,
    pub indicators: Vec<IndicatorRow>,
    /// Empty without a transfer CSV.
    pub relative: Vec<RelativeCell>,
    pub correlations: Vec<CorrelationRow>,
    /// The indicator with the highest mean per-target ρ, with that ρ, when its bootstrap
    /// interval lies above every other's; `None` when they cannot be told apart.
    pub best: Option<(String, f64)>,
    /// The verdict behind `best`; `None` without correlations.
    pub ranking: Option<IndicatorRanking>,
    /// The markdown summary written to `out_dir/indicators.md`.
    pub markdown_path: PathBuf,
    /// The relative-transfer heatmap, when transfer results were given.
    pub figure: Option<PathBuf>,
}

/// The model a prompt folder belongs to: its name, or its parent's for `.../<model>/prompts`.
fn model_name(dir: &Path) -> String {
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    match name(dir).as_deref() {
        Some("prompts") => dir.parent().and_then(name),
        other => other.map(str::to_string),
    }
    .unwrap_or_else(|| "model".into())
}

/// Computes the prompt indicators of every pair of prompts in `prompts_dir` and writes the
/// `indicators` table under `out_dir`; with `transfer_csv`, also the `transfer_relative` and
/// `correlations` tables. Writes `indicators.md` with the summary. Re-running replaces the tables.
pub fn run_indicators(
    prompts_dir: &Path,
    transfer_csv: Option<&Path>,
    out_dir: &Path,
) -> Result<IndicatorSummary> {
    let prompts = load_prompt_dir(prompts_dir)?;
    let model = model_name(prompts_dir);
    let tasks: Vec<String> = prompts.iter().map(|p| p.name.clone()).collect();
    let indicators = prompt_indicator_rows(&model, &prompts);
    let (mut relative, mut correlations) = (Vec::new(), Vec::new());
    if let Some(csv) = transfer_csv {
        let scores = read_transfer_csv(csv)?;
        let known: BTreeSet<&str> = tasks.iter().map(String::as_str).collect();
        let unknown: BTreeSet<&str> = scores
            .iter()
            .flat_map(|s| [s.target.as_str(), s.source.as_str()])
            .filter(|t| !known.contains(t))
            .collect();
        if !unknown.is_empty() {
            return Err(ResultsError::Transfer {
                path: csv.to_path_buf(),
                message: format!(
                    "names tasks without a prompt in {}: {unknown:?}",
                    prompts_dir.display()
                ),
            });
        }
        relative = relative_matrix(&scores, csv)?;
        correlations = correlation_rows(
            &model,
            &indicators,
            &SeededValues::single(&relative_map(&relative)),
            &Resampling::default(),
        );
    }
    std::fs::create_dir_all(out_dir).map_err(io_at(out_dir))?;
    replace_table(out_dir, WRITER, &indicators)?;
    if transfer_csv.is_some() {
        // One seed: no spread, and no beats-random verdict.
        let rows: Vec<TransferRelativeRow> = relative.iter().map(|c| c.row(&model)).collect();
        replace_table(out_dir, WRITER, &rows)?;
        replace_table(out_dir, WRITER, &correlations)?;
    }
    let ranking = IndicatorRanking::of(&correlations);
    let best = ranking
        .as_ref()
        .and_then(IndicatorRanking::best)
        .map(|(l, r)| (l.to_string(), r));
    let figure = if relative.is_empty() {
        None
    } else {
        Some(relative_heatmap(&model, &relative, out_dir)?)
    };
    let markdown_path = out_dir.join("indicators.md");
    let mut md = markdown(&model, &tasks, &relative, &correlations, ranking.as_ref());
    if figure.is_some() {
        let _ = writeln!(
            md,
            "\n![relative transfer](figures/transfer_relative_{}.png)",
            slug(&model)
        );
    }
    std::fs::write(&markdown_path, md).map_err(io_at(&markdown_path))?;
    Ok(IndicatorSummary {
        model,
        tasks,
        indicators,
        relative,
        correlations,
        best,
        ranking,
        markdown_path,
        figure,
    })
}

/// Sources in name order with the random prompt last, and targets in name order.
fn matrix_axes(cells: &[RelativeCell]) -> (Vec<String>, Vec<String>) {
    let targets: BTreeSet<&str> = cells.iter().map(|c| c.target.as_str()).collect();
    let mut sources: Vec<String> = cells
        .iter()
        .map(|c| c.source.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sources.sort_by_key(|s| (s == RANDOM_SOURCE, s.clone()));
    (sources, targets.into_iter().map(str::to_string).collect())
}

fn relative_heatmap(model: &str, cells: &[RelativeCell], out_dir: &Path) -> Result<PathBuf> {
    let dir = out_dir.join("figures");
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let path = dir.join(format!("transfer_relative_{}.png", slug(model)));
    let (sources, targets) = matrix_axes(cells);
    let values: Vec<Vec<Option<f64>>> = sources
        .iter()
        .map(|s| {
            targets
                .iter()
                .map(|t| {
                    cells
                        .iter()
                        .find(|c| &c.source == s && &c.target == t)
                        .map(|c| c.relative)
                })
                .collect()
        })
        .collect();
    let title = format!("{model}: relative zero-shot transfer % (rows: source, columns: target)");
    crate::plot::heatmap(&path, &title, &sources, &targets, &values, None)?;
    Ok(path)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

/// ρ with its 95% interval and permutation p: `0.512 [0.310, 0.702] p=0.003`.
fn rho_cell(c: Option<&CorrelationRow>) -> String {
    let Some(c) = c else { return "–".into() };
    let mut out = fmt_opt(c.spearman);
    if let (Some(lo), Some(hi)) = (c.rho_lo, c.rho_hi) {
        let _ = write!(out, " [{lo:.3}, {hi:.3}]");
    }
    if let Some(p) = c.p_value {
        let _ = write!(out, " p={p:.4}");
    }
    out
}

/// The correlation summary as a markdown table: mean and global ρ per indicator, each with its
/// 95% bootstrap interval and permutation p-value.
pub(crate) fn correlation_markdown(correlations: &[CorrelationRow], r: &Resampling) -> String {
    let mut md = String::from(
        "| indicator | mean ρ over targets [95% CI] p | targets | global ρ [95% CI] p | pairs |\n|---|---|---|---|---|\n",
    );
    let mut labels: Vec<(String, Option<&str>, &str)> = correlations
        .iter()
        .map(|c| {
            (
                label(&c.indicator, c.layers.as_deref()),
                c.layers.as_deref(),
                c.indicator.as_str(),
            )
        })
        .collect();
    labels.dedup();
    let mut seen = BTreeSet::new();
    for (label, layers, indicator) in labels {
        if !seen.insert(label.clone()) {
            continue;
        }
        let get = |t: &str| {
            correlations.iter().find(|c| {
                c.indicator == indicator && c.layers.as_deref() == layers && c.target == t
            })
        };
        let (m, g) = (get(MEAN), get(GLOBAL));
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} |",
            rho_cell(m),
            m.map_or(0, |c| c.n),
            rho_cell(g),
            g.map_or(0, |c| c.n)
        );
    }
    if let Some(c) = correlations.first() {
        let _ = writeln!(
            md,
            "\n95% percentile bootstrap intervals from {} replicates (pairs resampled{}), \
             two-sided permutation p-values from {} permutations, p = (k + 1) / ({} + 1); \
             `mean` resamples within each target.",
            r.n_boot,
            if c.n_seeds > 1 {
                format!(", and the {} seeds", c.n_seeds)
            } else {
                String::new()
            },
            r.n_perm,
            r.n_perm
        );
    }
    md
}

/// A relative matrix as markdown, rows = sources, columns = targets, in the given order.
pub(crate) fn matrix_markdown(
    cells: &[RelativeCell],
    sources: &[String],
    targets: &[String],
) -> String {
    matrix_markdown_with(sources, targets, |s, t| {
        cells
            .iter()
            .find(|c| c.source == s && c.target == t)
            .map(|c| format!("{:.1}", c.relative))
    })
}

/// A matrix as markdown with `cell(source, target)` as each cell's text (`–` where `None`).
pub(crate) fn matrix_markdown_with(
    sources: &[String],
    targets: &[String],
    cell: impl Fn(&str, &str) -> Option<String>,
) -> String {
    let mut md = format!(
        "| source \\ target | {} |\n|---|{}\n",
        targets.join(" | "),
        "---|".repeat(targets.len())
    );
    for s in sources {
        let _ = write!(md, "| {s} |");
        for t in targets {
            let _ = write!(md, " {} |", cell(s, t).unwrap_or_else(|| "–".into()));
        }
        md.push('\n');
    }
    md
}

fn markdown(
    model: &str,
    tasks: &[String],
    relative: &[RelativeCell],
    correlations: &[CorrelationRow],
    ranking: Option<&IndicatorRanking>,
) -> String {
    let mut md = format!(
        "# Prompt indicators: {model}\n\n{} prompts: {}.\n\n",
        tasks.len(),
        tasks.join(", ")
    );
    if relative.is_empty() {
        md.push_str("No transfer results given: indicators only (table `indicators`).\n");
        return md;
    }
    let (sources, targets) = matrix_axes(relative);
    md.push_str("## Relative zero-shot transfer (%), 100 · score(s→t) / score(t→t)\n\n");
    md.push_str(&matrix_markdown(relative, &sources, &targets));
    md.push_str(
        "\n## Spearman's ρ with relative transfer (sources s ≠ t, random prompt left out)\n\n",
    );
    md.push_str(&correlation_markdown(correlations, &Resampling::default()));
    if let Some(r) = ranking {
        let _ = writeln!(md, "\n{}", r.sentence());
    }
    md
}
