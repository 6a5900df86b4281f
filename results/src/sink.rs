//! Worker events to table rows. The NATS side (the coordinator's sink task) hands events here
//! in stream order and acknowledges them only after [`EventSink::commit`] returns: a crash
//! loses nothing (unacked events are redelivered) and duplicates nothing (the writers skip rows
//! whose key is committed, and the batch itself holds each key once).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use promptgrid_common::graph::TptSource;
use promptgrid_common::wire::{self, Event};
use promptgrid_common::{JobGraph, JobSpec};

use crate::Result;
use crate::activation::{ActivationMask, on_rows};
use crate::error::ResultsError;
use crate::schema::{EvalRow, JobRow, MetricRow, Table};
use crate::writer::{RowCode, TableWriter};

/// The names a job's rows carry, from its spec.
struct JobNames {
    kind: &'static str,
    model: String,
    task: Option<String>,
    src_task: Option<String>,
    src_model: Option<String>,
    seed: Option<i64>,
    objective: Option<String>,
    held_out: Option<bool>,
}

fn names_of(spec: &JobSpec) -> JobNames {
    let mut n = JobNames {
        kind: spec.kind().name(),
        model: spec.model().unwrap_or("").to_string(),
        task: None,
        src_task: None,
        src_model: None,
        seed: None,
        objective: None,
        held_out: None,
    };
    match spec {
        JobSpec::Train { task, seed, .. } | JobSpec::Activations { task, seed, .. } => {
            n.task = Some(task.to_string());
            n.seed = Some(*seed as i64);
        }
        JobSpec::Transfer { src, tgt, seed, .. } => {
            n.task = Some(tgt.to_string());
            n.src_task = Some(src.to_string());
            n.seed = Some(*seed as i64);
        }
        JobSpec::Tpt {
            source, tgt, seed, ..
        } => {
            n.task = Some(tgt.to_string());
            n.seed = Some(*seed as i64);
            match source {
                TptSource::Task { task } => n.src_task = Some(task.to_string()),
                TptSource::Projected {
                    task,
                    model,
                    objective,
                } => {
                    n.src_task = Some(task.to_string());
                    n.src_model = Some(model.to_string());
                    n.objective = Some(objective.name().to_string());
                }
            }
        }
        JobSpec::Projector {
            src_model,
            objective,
            seed,
            ..
        } => {
            n.src_model = Some(src_model.to_string());
            n.seed = Some(*seed as i64);
            n.objective = Some(objective.name().to_string());
        }
        JobSpec::CrossModel {
            task,
            src_model,
            objective,
            held_out,
            seed,
            ..
        } => {
            n.held_out = Some(*held_out);
            n.task = Some(task.to_string());
            n.src_task = Some(task.to_string());
            n.src_model = Some(src_model.to_string());
            n.seed = Some(*seed as i64);
            n.objective = Some(objective.name().to_string());
        }
        JobSpec::Synthetic { .. } => {}
    }
    n
}

/// Rows of one table waiting for the next commit, each key once.
struct Pending<T: Table> {
    rows: Vec<T>,
    keys: HashSet<RowCode>,
}

impl<T: Table> Pending<T> {
    fn new() -> Self {
        Pending {
            rows: Vec::new(),
            keys: HashSet::new(),
        }
    }

    /// Adds `row` unless the batch holds its key; `writer` numbers the keys.
    fn push(&mut self, writer: &mut TableWriter<T>, row: T) {
        if self.keys.insert(writer.code(&row)) {
            self.rows.push(row);
        }
    }

    fn commit(&mut self, writer: &mut TableWriter<T>) -> Result<()> {
        if !self.rows.is_empty() {
            writer.append(&self.rows)?;
            self.rows.clear();
            self.keys.clear();
        }
        Ok(())
    }
}

/// Turns events into `jobs`, `metrics` and `evals` rows, committed in batches.
pub struct EventSink {
    jobs: TableWriter<JobRow>,
    metrics: TableWriter<MetricRow>,
    evals: TableWriter<EvalRow>,
    pending_jobs: Pending<JobRow>,
    pending_metrics: Pending<MetricRow>,
    pending_evals: Pending<EvalRow>,
    /// Task name -> type, for the evals' `src_type` / `tgt_type`.
    task_types: BTreeMap<String, String>,
}

impl EventSink {
    /// Opens the tables of `sweep_dir` (`<results>/<sweep>`) as writer `writer`.
    pub fn open(
        sweep_dir: &Path,
        writer: &str,
        task_types: BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::open_with_jobs(sweep_dir, writer, task_types, None)
    }

    /// [`Self::open`], with the sweep's graph, which numbers the keys of the rows' jobs: the
    /// dedup sets then hold 8 bytes a row (see [`crate::writer::KeyCodes`]).
    pub fn open_with_jobs(
        sweep_dir: &Path,
        writer: &str,
        task_types: BTreeMap<String, String>,
        jobs: Option<Arc<JobGraph>>,
    ) -> Result<Self> {
        Ok(EventSink {
            jobs: TableWriter::open_with_jobs(sweep_dir, writer, jobs.clone())?,
            metrics: TableWriter::open_with_jobs(sweep_dir, writer, jobs.clone())?,
            evals: TableWriter::open_with_jobs(sweep_dir, writer, jobs)?,
            pending_jobs: Pending::new(),
            pending_metrics: Pending::new(),
            pending_evals: Pending::new(),
            task_types,
        })
    }

    /// Rows waiting for [`Self::commit`].
    pub fn pending(&self) -> usize {
        self.pending_jobs.rows.len()
            + self.pending_metrics.rows.len()
            + self.pending_evals.rows.len()
    }

    /// Adds the rows an event stands for.
    pub fn add(&mut self, event: &Event) {
        match event {
            Event::Started { .. } => {}
            Event::Progress {
                job,
                attempt,
                metrics,
            } => {
                for m in metrics {
                    let row = metric_row(&job.0, *attempt, m);
                    self.pending_metrics.push(&mut self.metrics, row);
                }
            }
            Event::Finished {
                job,
                attempt,
                worker,
                started_ms,
                at_ms,
                spec,
                output,
                ..
            } => {
                let names = spec.as_ref().map(names_of);
                let prov = output.provenance.as_ref();
                let row = JobRow {
                    job_id: job.0.to_string(),
                    kind: names.as_ref().map_or("unknown", |n| n.kind).to_string(),
                    model: names.as_ref().map_or(String::new(), |n| n.model.clone()),
                    task: names.as_ref().and_then(|n| n.task.clone()),
                    src_task: names.as_ref().and_then(|n| n.src_task.clone()),
                    src_model: names.as_ref().and_then(|n| n.src_model.clone()),
                    objective: names.as_ref().and_then(|n| n.objective.clone()),
                    seed: names.as_ref().and_then(|n| n.seed),
                    attempt: i64::from(*attempt),
                    worker: Some(worker.clone()),
                    status: "done".into(),
                    error: None,
                    started_at: Some(*started_ms as i64),
                    finished_at: Some(*at_ms as i64),
                    duration_s: Some(at_ms.saturating_sub(*started_ms) as f64 / 1000.0),
                    promptgrid_version: prov.map(|p| p.version.clone()),
                    git_commit: prov.map(|p| p.commit.clone()),
                    torch_version: prov.map(|p| p.torch.clone()),
                    device: prov.map(|p| p.device.clone()),
                    precision: prov.map(|p| p.precision.clone()),
                    threads: prov.map(|p| i64::from(p.threads)),
                };
                self.pending_jobs.push(&mut self.jobs, row);
                for m in &output.metrics {
                    let row = metric_row(&job.0, *attempt, m);
                    self.pending_metrics.push(&mut self.metrics, row);
                }
                if let Some(names) = names {
                    for e in &output.evals {
                        let row = self.eval_row(&job.0, &names, e);
                        self.pending_evals.push(&mut self.evals, row);
                    }
                }
            }
            Event::Failed {
                job,
                attempt,
                worker,
                at_ms,
                failure,
                ..
            } => {
                let row = JobRow {
                    job_id: job.0.to_string(),
                    kind: "unknown".into(),
                    model: String::new(),
                    task: None,
                    src_task: None,
                    src_model: None,
                    objective: None,
                    seed: None,
                    attempt: i64::from(*attempt),
                    worker: Some(worker.clone()),
                    status: "failed".into(),
                    error: Some(failure.reason.clone()),
                    started_at: None,
                    finished_at: Some(*at_ms as i64),
                    duration_s: None,
                    // A failed attempt's event carries no provenance.
                    promptgrid_version: None,
                    git_commit: None,
                    torch_version: None,
                    device: None,
                    precision: None,
                    threads: None,
                };
                self.pending_jobs.push(&mut self.jobs, row);
            }
        }
    }

    fn eval_row(&self, job: &str, names: &JobNames, e: &wire::EvalRow) -> EvalRow {
        let src_task = e
            .src_task
            .clone()
            .or_else(|| names.src_task.clone())
            .unwrap_or_default();
        let tgt_task = e
            .tgt_task
            .clone()
            .or_else(|| names.task.clone())
            .unwrap_or_default();
        EvalRow {
            job_id: job.to_string(),
            kind: names.kind.to_string(),
            model: names.model.clone(),
            src_type: self.task_types.get(&src_task).cloned(),
            tgt_type: self.task_types.get(&tgt_task).cloned(),
            src_task,
            tgt_task,
            src_model: e.src_model.clone().or_else(|| names.src_model.clone()),
            split: e.split.clone(),
            metric: e.metric.clone(),
            value: e.value,
            n: e.n as i64,
            objective: names.objective.clone(),
            held_out: names.held_out,
        }
    }

    /// Makes every pending row durable. Metrics and evals go first, the jobs row last, so a
    /// reader that sees a job as done also sees its numbers.
    pub fn commit(&mut self) -> Result<()> {
        self.pending_metrics.commit(&mut self.metrics)?;
        self.pending_evals.commit(&mut self.evals)?;
        self.pending_jobs.commit(&mut self.jobs)
    }
}

fn metric_row(job: &str, attempt: u32, m: &wire::MetricRow) -> MetricRow {
    MetricRow {
        job_id: job.to_string(),
        attempt: i64::from(attempt),
        step: m.step as i64,
        name: m.name.clone(),
        value: m.value,
        wall_s: Some(m.wall_s),
    }
}

/// Jobs the `jobs` table records as done: the done set a coordinator rebuilds from when the
/// NATS server's data is gone.
pub fn done_jobs(sweep_dir: &Path) -> Result<HashSet<String>> {
    if !sweep_dir.join(JobRow::NAME).is_dir() {
        return Ok(HashSet::new());
    }
    Ok(crate::store::read_table::<JobRow>(sweep_dir)?
        .into_iter()
        .filter(|r| r.status == "done")
        .map(|r| r.job_id)
        .collect())
}

/// Where the sink keeps a copy of each artifact a report needs (prompts, masks): the NATS
/// object store may be gone by the time the report runs.
pub fn artifact_path(sweep_dir: &Path, name: &str) -> std::path::PathBuf {
    sweep_dir.join("artifacts").join(name)
}

/// Writes an artifact copy atomically (temporary file, fsync, rename).
pub fn write_artifact(sweep_dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = artifact_path(sweep_dir, name);
    let dir = path.parent().unwrap_or(sweep_dir);
    std::fs::create_dir_all(dir).map_err(crate::error::io_at(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(crate::error::io_at(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(crate::error::io_at(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(crate::error::io_at(&path))?;
    Ok(())
}

/// The lowest seed's done job of `kind` per model and task (`task` column), from the `jobs`
/// table: the prompt or mask each indicator is computed from.
fn first_seed_jobs(
    jobs: &[JobRow],
    kind: &str,
) -> BTreeMap<String, BTreeMap<String, (i64, String)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (i64, String)>> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.kind == kind && j.status == "done") {
        let (Some(task), seed) = (&j.task, j.seed.unwrap_or(0)) else {
            continue;
        };
        let slot = out.entry(j.model.clone()).or_default();
        match slot.get(task) {
            Some((s, _)) if *s <= seed => {}
            _ => {
                slot.insert(task.clone(), (seed, j.job_id.clone()));
            }
        }
    }
    out
}

/// Recomputes the `indicators` table from the artifact copies: the prompt-only indicators of
/// every pair of trained prompts per model (the first seed's), and ON over all layers and each
/// window of `on_windows` (a width: the official non-overlapping windows) for every pair of
/// activation masks (the random prompt's included). Returns the rows written; the table is left
/// alone when there is nothing to write.
pub fn derive_indicators(
    sweep_dir: &Path,
    on_windows: impl Into<crate::activation::OnWindows>,
) -> Result<usize> {
    let on_windows = on_windows.into();
    use crate::indicators::prompt_indicator_rows;
    use crate::schema::IndicatorRow;
    let jobs: Vec<JobRow> = if sweep_dir.join(JobRow::NAME).is_dir() {
        crate::store::read_table(sweep_dir)?
    } else {
        Vec::new()
    };
    let mut rows: Vec<IndicatorRow> = Vec::new();
    for (model, tasks) in first_seed_jobs(&jobs, "train") {
        let mut prompts = Vec::new();
        for (task, (_, job)) in tasks {
            let path = artifact_path(sweep_dir, &format!("prompt/{job}"));
            if !path.is_file() {
                continue;
            }
            let mut p = crate::prompts::load_prompt(&path)?;
            p.name = task;
            prompts.push(p);
        }
        if prompts.len() < 2 {
            continue;
        }
        rows.extend(prompt_indicator_rows(&model, &prompts));
    }
    for (model, tasks) in first_seed_jobs(&jobs, "activations") {
        let mut masks = Vec::new();
        for (task, (_, job)) in tasks {
            let path = artifact_path(sweep_dir, &format!("mask/{job}"));
            if !path.is_file() {
                continue;
            }
            let file = promptgrid_common::mask::MaskFile::load(&path)
                .map_err(|e| ResultsError::Masks(e.to_string()))?;
            masks.push((task, ActivationMask::from_mask_file(&file)?));
        }
        if masks.len() >= 2 {
            rows.extend(on_rows(&model, &masks, on_windows)?);
        }
    }
    if !rows.is_empty() {
        crate::writer::replace_table(sweep_dir, "derived", &rows)?;
    }
    Ok(rows.len())
}
