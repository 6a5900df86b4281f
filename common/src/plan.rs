//! What `promptgrid plan` says about a sweep: job counts per kind, the dependency depth, and
//! which jobs cannot run because an input they need is not where a worker would look.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{SpecError, SpecResult};
use crate::graph::{JobGraph, JobId, JobSpec, RANDOM};
use crate::limits;
use crate::spec::{Init, Layout, Sweep};

/// File endings a split may have, in the order a worker tries them.
pub const SPLIT_EXTENSIONS: [&str; 4] = ["parquet", "jsonl", "csv", "tsv"];

/// The roots a worker resolves names under; a plan checks inputs only for the roots it is given.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    pub models: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

/// An input that is not there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MissingInput {
    /// The first job that needs it.
    pub job: String,
    pub what: String,
    pub path: PathBuf,
    /// How many jobs cannot run because of it, counting those downstream.
    pub blocked_jobs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub sweep: String,
    pub jobs: usize,
    pub per_kind: BTreeMap<String, usize>,
    pub depth: usize,
    /// TPT candidates that run only if their source ranks in the top k (`top_k`), per model.
    pub gated: usize,
    pub missing: Vec<MissingInput>,
    /// Settings a model cannot run, found in its `config.json` under the models root.
    pub invalid: Vec<InvalidSetting>,
}

/// One planned job as `plan --json --jobs` lists it: what will run, with every setting
/// resolved, defaults included (the wire form leaves some out to keep ids stable).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedJob {
    pub id: String,
    pub key: String,
    /// The job's spec as workers receive it, its settings completed.
    pub spec: serde_json::Value,
    /// The ids of the jobs it waits for.
    pub deps: Vec<String>,
    /// The definitions versions of its models' families that entered the id
    /// (`Arch::definitions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub definitions: Vec<&'static str>,
}

/// Every job of `graph`, in plan order, with its resolved settings.
pub fn planned_jobs(sweep: &Sweep, graph: &JobGraph) -> Result<Vec<PlannedJob>, serde_json::Error> {
    graph
        .jobs()
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let mut spec = serde_json::to_value(&job.spec)?;
            if let Some(settings) = job.spec.prompt_settings() {
                spec["settings"] = settings.resolved()?;
            }
            Ok(PlannedJob {
                id: job.id.as_str().to_string(),
                key: job.key.clone(),
                spec,
                deps: graph.dep_ids(i).map(|d| d.as_str().to_string()).collect(),
                definitions: crate::graph::names_of(&job.spec)
                    .0
                    .into_iter()
                    .filter_map(|m| sweep.model(m)?.arch.definitions())
                    .collect(),
            })
        })
        .collect()
}

/// A setting that a model of the sweep cannot run (a prompt longer than it takes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InvalidSetting {
    pub model: String,
    /// The setting, as the sweep names it (`prompt.length`).
    pub key: String,
    pub value: u64,
    /// The tasks that run the model with this value.
    pub tasks: Vec<String>,
    /// The model's config.json.
    pub config: PathBuf,
    pub message: String,
}

impl Plan {
    pub fn new(sweep: &Sweep, graph: &JobGraph, roots: &Roots) -> Plan {
        let per_kind = graph
            .counts()
            .into_iter()
            .map(|(k, n)| (k.name().to_string(), n))
            .collect();
        Plan {
            sweep: sweep.name.clone(),
            jobs: graph.len(),
            per_kind,
            depth: graph.depth(),
            gated: graph.jobs().iter().filter(|j| j.gate.is_some()).count(),
            missing: missing_inputs(sweep, graph, roots),
            invalid: invalid_settings(sweep, roots),
        }
    }

    /// The plan's invalid settings as one error, located at the sweep's `length` setting; a
    /// sweep with any would fail job after job on its workers.
    pub fn refuse_invalid(&self, sweep: &Sweep) -> SpecResult<()> {
        let Some(first) = self.invalid.first() else {
            return Ok(());
        };
        let lines: Vec<String> = self
            .invalid
            .iter()
            .map(|i| {
                if i.tasks.is_empty() {
                    format!("model `{}`: {}", i.model, i.message)
                } else {
                    format!(
                        "{} for model `{}` ({}; tasks {}): {}",
                        i.value,
                        i.model,
                        i.config.display(),
                        i.tasks.join(", "),
                        i.message
                    )
                }
            })
            .collect();
        let source = std::fs::read_to_string(&sweep.file).unwrap_or_default();
        let short = first.key.rsplit('.').next().unwrap_or(&first.key);
        let mut err = SpecError::at_key(&sweep.file, &source, short, lines.join("; "));
        if let SpecError::Invalid { key, .. } = &mut err {
            key.clone_from(&first.key);
        }
        Err(err)
    }
}

/// Prompt lengths over what a model's config.json allows (`limits`), for models whose folder
/// is under the models root; the worker would refuse every job that uses them.
fn invalid_settings(sweep: &Sweep, roots: &Roots) -> Vec<InvalidSetting> {
    let Some(root) = &roots.models else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for model in &sweep.models {
        let config = root.join(&model.path).join("config.json");
        if !config.is_file() {
            continue; // a missing input, reported as such
        }
        // Lengths and the tasks using each; prompts from files (`init = "from:..."`) have
        // their own length, checked by the worker when it reads them.
        let mut lengths: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for task in sweep.tasks_for(model) {
            let settings = sweep.settings(&model.name, task.name());
            lengths
                .entry(settings.length)
                .or_default()
                .push(task.name().to_string());
        }
        let official = model.layout == Layout::Official && model.arch.is_encoder();
        let (positions, placement) = match limits::read_limits(&config, official) {
            Ok(l) => l,
            Err(message) => {
                out.push(InvalidSetting {
                    model: model.name.clone(),
                    key: "model.path".into(),
                    value: 0,
                    tasks: Vec::new(),
                    config: config.clone(),
                    message,
                });
                continue;
            }
        };
        for (length, tasks) in lengths {
            if let Err(message) = limits::check_prompt_len(placement, positions, length as usize) {
                out.push(InvalidSetting {
                    model: model.name.clone(),
                    key: "prompt.length".into(),
                    value: u64::from(length),
                    tasks,
                    config: config.clone(),
                    message,
                });
            }
        }
    }
    out
}

/// The split file of a task under a data root, whichever supported ending it has.
pub fn find_split(data_root: &Path, data_dir: &str, stem: &str) -> Option<PathBuf> {
    SPLIT_EXTENSIONS
        .iter()
        .map(|ext| data_root.join(data_dir).join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

fn missing_inputs(sweep: &Sweep, graph: &JobGraph, roots: &Roots) -> Vec<MissingInput> {
    // Each missing input, with the jobs that need it directly.
    let mut direct: BTreeMap<(String, PathBuf), Vec<JobId>> = BTreeMap::new();
    for job in graph.jobs() {
        for (what, path) in inputs_of(sweep, &job.spec, roots) {
            direct.entry((what, path)).or_default().push(job.id.clone());
        }
    }
    let mut out = Vec::new();
    for ((what, path), jobs) in direct {
        let blocked = downstream(graph, &jobs);
        let first = graph
            .jobs()
            .iter()
            .find(|j| blocked.contains(&j.id))
            .map(|j| j.key.clone());
        out.push(MissingInput {
            job: first.unwrap_or_default(),
            what,
            path,
            blocked_jobs: blocked.len(),
        });
    }
    out
}

/// Inputs a job reads that are absent under the given roots.
fn inputs_of(sweep: &Sweep, spec: &JobSpec, roots: &Roots) -> Vec<(String, PathBuf)> {
    let mut missing = Vec::new();
    let mut need_model = |name: &str| {
        if let (Some(root), Some(m)) = (&roots.models, sweep.model(name)) {
            let config = root.join(&m.path).join("config.json");
            if !config.is_file() {
                missing.push((format!("model `{name}`"), config));
            }
        }
    };
    let models: Vec<&str> = match spec {
        JobSpec::Projector {
            src_model,
            tgt_model,
            ..
        }
        | JobSpec::CrossModel {
            src_model,
            tgt_model,
            ..
        } => vec![src_model, tgt_model],
        other => other.model().into_iter().collect(),
    };
    for m in models {
        need_model(m);
    }
    let mut splits: Vec<(&str, &str)> = Vec::new();
    match spec {
        JobSpec::Train { task, settings, .. } => {
            splits.push((task, "train"));
            splits.push((task, "dev"));
            if let (Init::From(file), Some(root)) = (&settings.init, &roots.models) {
                let p = root.join(file);
                if !p.is_file() {
                    missing.push((format!("initial prompt `{file}`"), p));
                }
            }
        }
        JobSpec::Tpt { tgt, .. } => {
            splits.push((tgt, "train"));
            splits.push((tgt, "dev"));
        }
        JobSpec::Transfer { tgt, .. } => splits.push((tgt, "eval")),
        JobSpec::CrossModel { task, .. } => splits.push((task, "eval")),
        JobSpec::Projector {
            objective,
            train_tasks,
            ..
        } => {
            if *objective == crate::spec::Objective::Task {
                for t in train_tasks {
                    splits.push((t, "train"));
                }
            }
        }
        JobSpec::Activations { .. } | JobSpec::Synthetic { .. } => {}
    }
    if let Some(root) = &roots.data {
        for (task, split) in splits {
            if task == RANDOM {
                continue;
            }
            let Some(t) = sweep.task(task) else { continue };
            let s = &t.def.splits;
            let stem = match split {
                "train" => s.train.as_str(),
                "dev" => s.dev.as_str(),
                // Transfer scores the test split where the task has one, else dev.
                _ => s.test.as_deref().unwrap_or(&s.dev),
            };
            if find_split(root, t.def.data_dir(), stem).is_none() {
                let path = root
                    .join(t.def.data_dir())
                    .join(format!("{stem}.{{{}}}", SPLIT_EXTENSIONS.join(",")));
                missing.push((format!("{split} split of `{task}`"), path));
            }
        }
    }
    missing
}

/// `start` and every job that depends on one of them, transitively.
fn downstream(graph: &JobGraph, start: &[JobId]) -> HashSet<JobId> {
    let mut blocked = vec![false; graph.len()];
    for i in start.iter().filter_map(|id| graph.position(id)) {
        blocked[i] = true;
    }
    // Jobs are in topological order, so one pass suffices.
    for i in 0..graph.len() {
        if graph.deps(i).iter().any(|&k| blocked[k as usize]) {
            blocked[i] = true;
        }
    }
    let mut out: HashSet<JobId> = start.iter().cloned().collect();
    out.extend(
        graph
            .jobs()
            .iter()
            .zip(&blocked)
            .filter(|(_, b)| **b)
            .map(|(j, _)| j.id.clone()),
    );
    out
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sweep {}: {} jobs, dependency depth {}",
            self.sweep, self.jobs, self.depth
        )?;
        for (kind, n) in &self.per_kind {
            writeln!(f, "  {kind:<12} {n:>7}")?;
        }
        if self.gated > 0 {
            writeln!(
                f,
                "  ({} TPT candidates run only if their source ranks in the top k)",
                self.gated
            )?;
        }
        if !self.invalid.is_empty() {
            writeln!(f, "settings the models cannot run:")?;
            for i in &self.invalid {
                if i.tasks.is_empty() {
                    writeln!(f, "  model {}: {}", i.model, i.message)?;
                } else {
                    writeln!(
                        f,
                        "  {} = {} for model {} (tasks {}): {} ({})",
                        i.key,
                        i.value,
                        i.model,
                        i.tasks.join(", "),
                        i.message,
                        i.config.display()
                    )?;
                }
            }
        }
        if self.missing.is_empty() {
            return Ok(());
        }
        writeln!(f, "missing inputs:")?;
        for m in &self.missing {
            writeln!(
                f,
                "  {} ({}), needed by {} and {} job(s) in all",
                m.what,
                m.path.display(),
                m.job,
                m.blocked_jobs
            )?;
        }
        Ok(())
    }
}
