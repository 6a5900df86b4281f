//! `promptgrid report RESULTS_DIR`: the study's answers from the tables of one sweep folder,
//! written back as the derived tables `transfer_relative`, `tpt` and `correlations`, as
//! `report.md`, and as PNG figures under `figures/`.
//!
//! Task types come from `ReportOptions::task_types` (`promptgrid report` fills it from the
//! catalog, the end of a sweep from the sweep's own tasks: [`report_sweep`]) and,
//! for tasks it does not name, from the `src_type`/`tgt_type` columns of `evals`.

pub mod cross_model;
pub mod cross_task;
pub mod curves;
pub mod provenance;
mod sweep;
pub mod tpt;
mod transfer_section;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use promptgrid_common::catalog::TaskDef;

use crate::error::{Result, ResultsError, io_at};
use crate::external::correlation_markdown;
use crate::indicator_ranking::{IndicatorRanking, label as indicator_label};
use crate::plot::{self, slug};
use crate::rho_uncertainty::Resampling;
use crate::schema::{
    CorrelationRow, CrossModelRow, EvalRow, IndicatorRow, JobRow, TptRow, TransferRelativeRow,
};
use crate::seeds::mean;
use crate::spearman::{MEAN, correlation_rows};
use crate::store::{read_table, table_parts};
use crate::transfer::RANDOM_SOURCE;
use crate::writer::replace_table;
pub use cross_task::{CellSpread, ModelTransfer, OwnVerdict, OwnVsRandom, VsRandom};
pub use provenance::Provenance;
pub use sweep::{derive_and_report, report_sweep};

/// Writer name of the derived tables' parts.
const WRITER: &str = "report";

#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// task → type (sentiment, nli, ...), e.g. from `promptgrid_common::catalog::Catalog`.
    pub task_types: BTreeMap<String, String>,
    /// Bootstrap and permutation settings of the correlations' uncertainty.
    pub resampling: Resampling,
}

impl ReportOptions {
    /// Task types from the task catalog (`sweeps/tasks/`).
    pub fn from_catalog(catalog: &promptgrid_common::catalog::Catalog) -> Self {
        Self::from_tasks(catalog.names().filter_map(|n| catalog.get(n)))
    }

    /// Task types from task definitions, e.g. a sweep's own resolved tasks: the report of a
    /// sweep then needs no catalog folder.
    pub fn from_tasks<'a>(tasks: impl IntoIterator<Item = &'a TaskDef>) -> Self {
        Self {
            task_types: task_types(tasks),
            resampling: Resampling::default(),
        }
    }
}

/// task → type of task definitions; the results sink labels `evals` rows with the same map.
pub fn task_types<'a>(tasks: impl IntoIterator<Item = &'a TaskDef>) -> BTreeMap<String, String> {
    tasks
        .into_iter()
        .map(|t| (t.name.clone(), t.task_type.clone()))
        .collect()
}

/// Everything the report computed; the same numbers are in the tables and in `report.md`.
#[derive(Debug, Clone)]
pub struct Report {
    pub transfer: Vec<ModelTransfer>,
    pub tpt: Vec<TptRow>,
    /// TPT candidate pairs `top_k` did not run.
    pub tpt_gated_out: usize,
    pub cross_model: Vec<CrossModelRow>,
    pub correlations: Vec<CorrelationRow>,
    /// Per model, the indicator with the highest mean ρ over targets, named best only when its
    /// bootstrap interval lies above every other's. It counts the candidates (ON windows one by
    /// one): a maximum over many candidates is a selection, and the report says so.
    pub indicator_ranking: BTreeMap<String, IndicatorRanking>,
    /// Inputs that could not be analysed, each with its reason.
    pub gaps: Vec<String>,
    pub markdown_path: PathBuf,
    pub figures: Vec<PathBuf>,
    /// Training-curve figures: (path, jobs shown, jobs of that model).
    pub curves: Vec<(PathBuf, usize, usize)>,
    /// What produced the result set: the setups its done jobs ran on.
    pub provenance: Provenance,
}

impl Report {
    /// The study's answers in a few lines: best and worst transfer pair, mean relative transfer
    /// within and across types, per model whether the own prompts beat the random prompt and
    /// the best indicator with its ρ, and the mean TPT speedup.
    pub fn summary_lines(&self) -> Vec<String> {
        let off_diagonal = || {
            self.transfer.iter().flat_map(|m| {
                m.cells
                    .iter()
                    .filter(|c| c.source != c.target && c.source != "random")
                    .map(move |c| (m, c))
            })
        };
        let pair = |(m, c): (&ModelTransfer, &crate::transfer::RelativeCell)| {
            format!(
                "{} -> {} on {} ({:.1}%)",
                c.source, c.target, m.model, c.relative
            )
        };
        let by_relative =
            |a: &(&ModelTransfer, &crate::transfer::RelativeCell),
             b: &(&ModelTransfer, &crate::transfer::RelativeCell)| {
                a.1.relative.total_cmp(&b.1.relative)
            };
        let mut lines = Vec::new();
        match (
            off_diagonal().max_by(by_relative),
            off_diagonal().min_by(by_relative),
        ) {
            (Some(best), Some(worst)) => {
                lines.push(format!("best transfer:  {}", pair(best)));
                lines.push(format!("worst transfer: {}", pair(worst)));
            }
            _ => lines.push("transfer: no cross-task results".into()),
        }
        let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.1}%"));
        let within: Vec<f64> = self.transfer.iter().filter_map(|m| m.within_type).collect();
        let across: Vec<f64> = self
            .transfer
            .iter()
            .filter_map(|m| m.across_types)
            .collect();
        let (within, across) = (mean(&within), mean(&across));
        lines.push(format!(
            "mean relative transfer: {} within types, {} across types",
            fmt(within),
            fmt(across)
        ));
        for m in &self.transfer {
            let verdicts = m.own_vs_random();
            if verdicts.is_empty() {
                continue;
            }
            let short: Vec<&str> = verdicts
                .iter()
                .filter(|v| v.verdict != OwnVerdict::Beats)
                .map(|v| v.target.as_str())
                .collect();
            let beyond = if m.seeded() {
                " beyond the seed spread"
            } else {
                ""
            };
            lines.push(format!(
                "own prompt beats random{beyond} on {}: {} of {} targets{}",
                m.model,
                verdicts.len() - short.len(),
                verdicts.len(),
                if short.is_empty() {
                    String::new()
                } else {
                    format!(" (not on {})", short.join(", "))
                }
            ));
        }
        for (model, r) in &self.indicator_ranking {
            let n = r.candidates;
            lines.push(match (r.best(), r.interval) {
                (Some((label, rho)), Some((lo, hi))) => format!(
                    "best indicator: {label} (mean Spearman rho {rho:.3} [{lo:.3}, {hi:.3}] on \
                     {model}; the highest of {n} candidates, its 95% interval above the others')"
                ),
                _ => format!(
                    "best indicator: none on {model}: the {n} candidates cannot be told apart at \
                     this size (the highest, {} at mean rho {:.3}, has a 95% interval overlapping \
                     others')",
                    r.leader, r.rho
                ),
            });
        }
        if self.indicator_ranking.is_empty() {
            lines.push("best indicator: n/a (no indicator correlations)".into());
        }
        let speedups: Vec<f64> = self.tpt.iter().filter_map(|t| t.speedup).collect();
        let reached = speedups.len();
        match mean(&speedups) {
            Some(s) => lines.push(format!(
                "mean TPT speedup: {s:.2}x ({reached} of {} pairs reached the vanilla best)",
                self.tpt.len()
            )),
            None => lines.push("mean TPT speedup: n/a".into()),
        }
        lines
    }
}

/// Analyses the sweep folder `results_dir` (`results/<sweep>`) with default options.
pub fn report(results_dir: &Path) -> Result<Report> {
    report_with(results_dir, &ReportOptions::default())
}

pub fn report_with(results_dir: &Path, opts: &ReportOptions) -> Result<Report> {
    let evals: Vec<EvalRow> = read_table(results_dir)?;
    let jobs: Vec<JobRow> = read_table(results_dir)?;
    let indicators: Vec<IndicatorRow> = read_table(results_dir)?;
    let has_metrics = !table_parts(results_dir, "metrics")?.is_empty();
    if evals.is_empty() && indicators.is_empty() && !has_metrics {
        return Err(ResultsError::EmptyStudy(results_dir.to_path_buf()));
    }
    let job_seeds: cross_task::JobSeeds = jobs.iter().map(|j| (j.job_id.clone(), j.seed)).collect();
    let transfer = cross_task::analyse(&evals, &opts.task_types, &trained_tasks(&jobs), &job_seeds);
    let tpt::TptAnalysis {
        rows: tpt,
        mut gaps,
        gated_out: tpt_gated_out,
    } = tpt::analyse(results_dir, &jobs)?;
    let (cross_model, cross_gaps) = cross_model::analyse(&evals);
    gaps.extend(cross_gaps);
    let mut correlations = Vec::new();
    let mut ranking = BTreeMap::new();
    let mut models: Vec<&str> = indicators.iter().map(|r| r.model.as_str()).collect();
    models.sort();
    models.dedup();
    for model in models {
        let Some(t) = transfer.iter().find(|t| t.model == model) else {
            gaps.push(format!(
                "indicators of {model}: no transfer results to correlate with"
            ));
            continue;
        };
        let rows = correlation_rows(model, &indicators, &t.seeded_relative(), &opts.resampling);
        if let Some(r) = IndicatorRanking::of(&rows) {
            ranking.insert(model.to_string(), r);
        }
        correlations.extend(rows);
    }
    for t in &transfer {
        gaps.extend(t.gaps.iter().map(|g| format!("{}: {g}", t.model)));
    }

    let relative_rows: Vec<TransferRelativeRow> =
        transfer.iter().flat_map(ModelTransfer::rows).collect();
    replace_table(results_dir, WRITER, &relative_rows)?;
    replace_table(results_dir, WRITER, &tpt)?;
    replace_table(results_dir, WRITER, &cross_model)?;
    replace_table(results_dir, WRITER, &correlations)?;

    let fig_dir = results_dir.join("figures");
    std::fs::create_dir_all(&fig_dir).map_err(io_at(&fig_dir))?;
    let mut figures = Vec::new();
    for t in &transfer {
        let mut sources = t.tasks.clone();
        if t.cells.iter().any(|c| c.source == RANDOM_SOURCE) {
            sources.push(RANDOM_SOURCE.to_string());
        }
        let label = |task: &String| {
            format!(
                "{} ({})",
                task,
                t.types.get(task).map_or("-", String::as_str)
            )
        };
        let rows: Vec<String> = sources
            .iter()
            .map(|s| {
                if s == RANDOM_SOURCE {
                    s.clone()
                } else {
                    label(s)
                }
            })
            .collect();
        let cols: Vec<String> = t.tasks.iter().map(label).collect();
        let grid = |f: &dyn Fn(&str, &str) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
            sources
                .iter()
                .map(|s| t.tasks.iter().map(|tg| f(s, tg)).collect())
                .collect()
        };
        for (kind, pick) in [("raw", 0usize), ("relative", 1)] {
            // Raw scores in percent, like relative transfer.
            let values = grid(&|s, tg| {
                t.relative(s, tg)
                    .map(|c| if pick == 0 { 100.0 * c.raw } else { c.relative })
            });
            // Several seeds: each cell reads `mean ± sd`; one seed: the mean alone, as before.
            let sds = t.seeded().then(|| {
                grid(&|s, tg| {
                    let c = t.spread(s, tg)?;
                    if pick == 0 {
                        c.raw.sd.map(|sd| 100.0 * sd)
                    } else {
                        c.relative.sd
                    }
                })
            });
            let path = fig_dir.join(format!("transfer_{kind}_{}.png", slug(&t.model)));
            let title = format!(
                "{}: {kind} zero-shot transfer (rows: source, columns: target)",
                t.model
            );
            plot::heatmap(&path, &title, &rows, &cols, &values, sds.as_deref())?;
            figures.push(path);
        }
    }
    let mut by_model: BTreeMap<&str, Vec<&CorrelationRow>> = BTreeMap::new();
    for c in correlations.iter().filter(|c| c.target == MEAN) {
        by_model.entry(c.model.as_str()).or_default().push(c);
    }
    for (model, rows) in by_model {
        let defined: Vec<&&CorrelationRow> = rows.iter().filter(|c| c.spearman.is_some()).collect();
        if defined.is_empty() {
            continue;
        }
        let path = fig_dir.join(format!("indicators_{}.png", slug(model)));
        let labels: Vec<String> = defined
            .iter()
            .map(|c| indicator_label(&c.indicator, c.layers.as_deref()))
            .collect();
        let values: Vec<f64> = defined.iter().filter_map(|c| c.spearman).collect();
        let intervals: Vec<Option<(f64, f64)>> =
            defined.iter().map(|c| c.rho_lo.zip(c.rho_hi)).collect();
        plot::bars(
            &path,
            &format!(
                "{model}: mean Spearman ρ with relative transfer (whiskers: 95% bootstrap interval)"
            ),
            &labels,
            &values,
            &intervals,
        )?;
        figures.push(path);
    }
    let curves = curves::draw(results_dir, &jobs, &fig_dir)?;

    let markdown_path = results_dir.join("report.md");
    let report = Report {
        transfer,
        tpt,
        tpt_gated_out,
        cross_model,
        correlations,
        indicator_ranking: ranking,
        gaps,
        markdown_path,
        figures,
        curves,
        provenance: Provenance::of(&jobs),
    };
    let md = markdown(results_dir, &report, &opts.resampling);
    std::fs::write(&report.markdown_path, md).map_err(io_at(&report.markdown_path))?;
    Ok(report)
}

/// model → the tasks it trained prompts for (the targets its matrix must show). A train job that
/// never finished still counts: its target is then named as missing, not left out.
fn trained_tasks(jobs: &[JobRow]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.kind == "train") {
        if let Some(task) = &j.task {
            out.entry(j.model.clone()).or_default().insert(task.clone());
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn markdown(dir: &Path, r: &Report, resampling: &Resampling) -> String {
    let rel = |p: &PathBuf| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut md = String::from("# promptgrid report\n\n");
    md.push_str(&r.provenance.markdown());
    for t in &r.transfer {
        md.push_str(&transfer_section::transfer_section(t));
    }
    if !r.tpt.is_empty() {
        md.push_str("## Transfer as initialization (TPT)\n\n| model | source | target | seed | vanilla best | steps vanilla | steps TPT | speedup | TPT best |\n|---|---|---|---|---|---|---|---|---|\n");
        for t in &r.tpt {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.4} | {} | {} | {} | {:.4} |",
                t.model,
                // TPT-model: the source is another model's prompt through a projector.
                match (&t.src_model, &t.objective) {
                    (Some(m), Some(o)) => format!("{} @ {m} ({o} projector)", t.src),
                    (Some(m), None) => format!("{} @ {m}", t.src),
                    _ => t.src.clone(),
                },
                t.tgt,
                t.seed.map_or("–".into(), |s| s.to_string()),
                t.vanilla_best,
                t.steps_vanilla,
                t.steps_tpt.map_or("never".into(), |s| s.to_string()),
                opt(t.speedup, 2),
                t.tpt_best
            );
        }
        if r.tpt_gated_out > 0 {
            let _ = writeln!(
                md,
                "\n{} candidate pairs did not train: their source was not among the `top_k` most similar to the target.",
                r.tpt_gated_out
            );
        }
        md.push('\n');
    }
    if !r.cross_model.is_empty() {
        md.push_str("## Cross-model transfer (projected prompts)\n\n| target model | source model | objective | task | held out | score | own prompt | relative (%) |\n|---|---|---|---|---|---|---|---|\n");
        for c in &r.cross_model {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.1} |",
                c.model,
                c.src_model,
                c.objective.as_deref().unwrap_or("–"),
                c.tgt_task,
                match c.held_out {
                    Some(true) => "yes",
                    Some(false) => "no (trained on)",
                    None => "–",
                },
                c.value,
                c.own,
                c.relative
            );
        }
        md.push('\n');
    }
    let mut models: Vec<&str> = r.correlations.iter().map(|c| c.model.as_str()).collect();
    models.dedup();
    for model in models {
        let rows: Vec<CorrelationRow> = r
            .correlations
            .iter()
            .filter(|c| c.model == model)
            .cloned()
            .collect();
        let _ = writeln!(
            md,
            "## Indicators: {model}\n\nSpearman's ρ with relative transfer (sources s ≠ t, random prompt left out):\n"
        );
        md.push_str(&correlation_markdown(&rows, resampling));
        if let Some(ranking) = r.indicator_ranking.get(model) {
            let _ = writeln!(md, "\n{}", ranking.sentence());
        }
        md.push('\n');
    }
    if !r.figures.is_empty() {
        md.push_str("## Figures\n\n");
        for f in &r.figures {
            let _ = writeln!(md, "![{}]({})", rel(f), rel(f));
        }
        md.push('\n');
    }
    if !r.curves.is_empty() {
        md.push_str("## Training curves\n\n");
        for (f, shown, total) in &r.curves {
            let _ = writeln!(
                md,
                "![{}]({})\n\n{shown} of {total} train/TPT jobs shown.\n",
                rel(f),
                rel(f)
            );
        }
    }
    if !r.gaps.is_empty() {
        md.push_str("## Gaps (inputs that could not be analysed)\n\n");
        for g in &r.gaps {
            let _ = writeln!(md, "* {g}");
        }
    }
    md
}
