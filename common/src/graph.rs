//! The job graph: a sweep expanded into jobs with dependency edges (docs/design.md, "The job graph").
//!
//! A job's id is a hash of everything that changes its result: its kind and names, the resolved
//! settings, the definitions of the models and tasks it touches, and the ids of the jobs it
//! depends on (so an upstream change ripples down). The sweep's name, worker counts and other
//! run-time choices are not part of it, so an edited sweep reuses every job it did not change.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::{
    CrossModelPair, Indicator, Objective, ProjectorSettings, PromptSettings, Sweep, SyntheticSpec,
    TaskSpec, TptPairs,
};
use crate::symbol::Symbol;

/// The name of the random-prompt source in transfer and activations jobs.
pub const RANDOM: &str = "random";

/// What the [`RANDOM`] prompt is, part of the id of every job that uses it: uniform on [0, 1)
/// as the official `torch.rand` baseline (it was the N(0, 0.02) training init before, whose
/// results must not be reused for it).
pub const RANDOM_PROMPT: &str = "uniform[0,1)";

/// The split a train job scores its prompt on when it ends (`dev` for a task without one). A
/// cross-task study scored on it plans no task→same-task transfer: the train job's eval is
/// that cell, computed once.
pub const SCORED_SPLIT: &str = "test";

/// A content hash, hex, 128 bits: collisions are not a concern at grid sizes. Shared, not
/// copied: a job's id, its dependents' edges and the graph's index hold one allocation, which
/// at a million jobs is hundreds of MB less than a `String` each. Serialized as the plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub Arc<str>);

impl JobId {
    pub fn new(id: impl Into<Arc<str>>) -> JobId {
        JobId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JobId, D::Error> {
        String::deserialize(d).map(JobId::new)
    }
}

/// Lets a map keyed by id be searched with a `&str` (a bucket key) without an allocation; the
/// derived `Hash` and `Eq` are the string's.
impl std::borrow::Borrow<str> for JobId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Train,
    Transfer,
    Tpt,
    Activations,
    Projector,
    CrossModel,
    Synthetic,
}

impl JobKind {
    pub const ALL: [JobKind; 7] = [
        JobKind::Train,
        JobKind::Transfer,
        JobKind::Tpt,
        JobKind::Activations,
        JobKind::Projector,
        JobKind::CrossModel,
        JobKind::Synthetic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Transfer => "transfer",
            JobKind::Tpt => "tpt",
            JobKind::Activations => "activations",
            JobKind::Projector => "projector",
            JobKind::CrossModel => "cross_model",
            JobKind::Synthetic => "synthetic",
        }
    }
}

/// Where a TPT job's initial prompt comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum TptSource {
    /// The source task's prompt on the same model (TPT-task).
    Task { task: Symbol },
    /// The same task's prompt of another model, through a projector (TPT-model).
    Projected {
        task: Symbol,
        model: Symbol,
        objective: Objective,
    },
}

/// What a job does: names and settings only, never paths. This is the wire payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    /// Prompt tuning of `task` on `model` from the settings' init.
    Train {
        task: Symbol,
        model: Symbol,
        seed: u64,
        /// Boxed, as in `Tpt`: inline, the settings made every job of every kind as large as
        /// the largest, which a million-job graph pays a million times.
        settings: Box<PromptSettings>,
    },
    /// Zero-shot: the prompt of `src` (a task, or [`RANDOM`]) on `tgt`'s template and split.
    Transfer {
        src: Symbol,
        tgt: Symbol,
        model: Symbol,
        seed: u64,
        split: Symbol,
    },
    /// Prompt tuning of `tgt` starting from another prompt, with the vanilla run's settings.
    Tpt {
        source: TptSource,
        tgt: Symbol,
        model: Symbol,
        seed: u64,
        settings: Box<PromptSettings>,
        /// Stop once a dev evaluation matches the vanilla run's best ([`TptStudy`]); left out
        /// of the wire form when false, so that the ids of existing sweeps stay the same.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stop_when_matched: bool,
    },
    /// The binary FFN activation mask the prompt of `task` (or [`RANDOM`]) induces.
    Activations {
        task: Symbol,
        model: Symbol,
        seed: u64,
    },
    /// A projector from `src_model`'s prompts to `tgt_model`'s.
    Projector {
        src_model: Symbol,
        tgt_model: Symbol,
        objective: Objective,
        train_tasks: Vec<Symbol>,
        seed: u64,
        /// Boxed: a projector job is rare, and inline its settings made every job larger.
        settings: Box<ProjectorSettings>,
    },
    /// `task`'s prompt of `src_model`, projected and scored zero-shot on `tgt_model`.
    CrossModel {
        task: Symbol,
        src_model: Symbol,
        tgt_model: Symbol,
        objective: Objective,
        held_out: bool,
        seed: u64,
        split: Symbol,
    },
    /// No ML: sleeps, maybe fails, and returns a payload; tests and benchmarks the runtime.
    Synthetic {
        index: u32,
        duration_ms: u32,
        fail: bool,
        payload_bytes: u32,
    },
}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Train { .. } => JobKind::Train,
            JobSpec::Transfer { .. } => JobKind::Transfer,
            JobSpec::Tpt { .. } => JobKind::Tpt,
            JobSpec::Activations { .. } => JobKind::Activations,
            JobSpec::Projector { .. } => JobKind::Projector,
            JobSpec::CrossModel { .. } => JobKind::CrossModel,
            JobSpec::Synthetic { .. } => JobKind::Synthetic,
        }
    }

    /// Prompt settings of a job that tunes a prompt (train and TPT jobs).
    pub fn prompt_settings(&self) -> Option<&PromptSettings> {
        match self {
            JobSpec::Train { settings, .. } | JobSpec::Tpt { settings, .. } => Some(settings),
            _ => None,
        }
    }

    /// The model a worker must hold to run it; the job subject carries it so that workers can
    /// prefer the model they have loaded.
    pub fn model(&self) -> Option<&str> {
        match self {
            JobSpec::Train { model, .. }
            | JobSpec::Transfer { model, .. }
            | JobSpec::Tpt { model, .. }
            | JobSpec::Activations { model, .. } => Some(model),
            JobSpec::Projector { tgt_model, .. } | JobSpec::CrossModel { tgt_model, .. } => {
                Some(tgt_model)
            }
            JobSpec::Synthetic { .. } => None,
        }
    }

    /// The readable key: `train/sst2/roberta-base/s1`, `transfer/imdb->sst2/roberta-base/s1`.
    pub fn key(&self) -> String {
        match self {
            JobSpec::Train {
                task, model, seed, ..
            } => format!("train/{task}/{model}/s{seed}"),
            JobSpec::Transfer {
                src,
                tgt,
                model,
                seed,
                ..
            } => {
                format!("transfer/{src}->{tgt}/{model}/s{seed}")
            }
            JobSpec::Tpt {
                source,
                tgt,
                model,
                seed,
                ..
            } => match source {
                TptSource::Task { task } => format!("tpt/{task}->{tgt}/{model}/s{seed}"),
                TptSource::Projected {
                    task,
                    model: src_model,
                    objective,
                } => format!(
                    "tpt/{task}@{src_model}:{}->{tgt}/{model}/s{seed}",
                    objective.name()
                ),
            },
            JobSpec::Activations { task, model, seed } => {
                format!("activations/{task}/{model}/s{seed}")
            }
            JobSpec::Projector {
                src_model,
                tgt_model,
                objective,
                seed,
                ..
            } => {
                format!(
                    "projector/{src_model}->{tgt_model}/{}/s{seed}",
                    objective.name()
                )
            }
            JobSpec::CrossModel {
                task,
                src_model,
                tgt_model,
                objective,
                seed,
                ..
            } => format!(
                "cross_model/{task}/{src_model}->{tgt_model}/{}/s{seed}",
                objective.name()
            ),
            JobSpec::Synthetic { index, .. } => format!("synthetic/{index:06}"),
        }
    }
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub key: String,
    pub spec: JobSpec,
    /// For TPT with `top_k`: the job runs only if its source is among the k best by this
    /// indicator, which is known once the prompts exist.
    pub gate: Option<(u32, Indicator)>,
}

impl Job {
    pub fn kind(&self) -> JobKind {
        self.spec.kind()
    }
}

/// Hashes job ids and names for the graph's maps: a multiply-and-rotate over 8 bytes at a
/// time (the scheme of rustc's FxHash). Ids are already uniform (hex of a SHA-256), and SipHash
/// was a sixth of the time to plan a million jobs. Not for keys an attacker chooses.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by job id (or name) with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Positions of jobs by id: an open-addressing table of `u32` places in the jobs' vector,
/// which compares ids in the jobs themselves. A map from id to place held a second reference
/// and a `usize` per slot: 50 MB at a million jobs, where this holds 8.
#[derive(Debug, Clone, Default)]
struct Index {
    /// A power of two long (or empty), at most half full; [`Index::EMPTY`] marks a free slot.
    slots: Vec<u32>,
}

impl Index {
    const EMPTY: u32 = u32::MAX;

    fn hash(id: &str) -> u64 {
        let mut h = IdHasher::default();
        h.write(id.as_bytes());
        h.finish()
    }

    /// The slots `id` probes, in order, from its hash's high bits (the multiply mixes upward).
    fn probe(&self, id: &str) -> impl Iterator<Item = usize> + use<> {
        let mask = self.slots.len() - 1;
        let bits = self.slots.len().trailing_zeros();
        let start = (Self::hash(id) >> (64 - bits.max(1))) as usize & mask;
        (0..self.slots.len()).map(move |k| (start + k) & mask)
    }

    fn find(&self, jobs: &[Job], id: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        for slot in self.probe(id) {
            match self.slots[slot] {
                Self::EMPTY => return None,
                i if jobs[i as usize].id.as_str() == id => return Some(i as usize),
                _ => {}
            }
        }
        None
    }

    /// Makes room for `n` jobs in all, rehashing `jobs` if the table grows.
    fn reserve(&mut self, jobs: &[Job], n: usize) {
        let want = (n.max(1) * 2).next_power_of_two();
        if want <= self.slots.len() {
            return;
        }
        self.slots = vec![Self::EMPTY; want];
        for (i, j) in jobs.iter().enumerate() {
            self.insert_new(j.id.as_str(), i);
        }
    }

    /// Adds job `i` unless its id is in the table already (then false): one probe for both.
    fn insert_unique(&mut self, jobs: &[Job], id: &str, i: usize) -> bool {
        for slot in self.probe(id) {
            match self.slots[slot] {
                Self::EMPTY => {
                    self.slots[slot] = u32::try_from(i).expect("fewer than 4 billion jobs");
                    return true;
                }
                k if jobs[k as usize].id.as_str() == id => return false,
                _ => {}
            }
        }
        false
    }

    /// Adds job `i`, whose id is not in the table.
    fn insert_new(&mut self, id: &str, i: usize) {
        let slot = self
            .probe(id)
            .find(|&s| self.slots[s] == Self::EMPTY)
            .expect("the index is never full");
        self.slots[slot] = u32::try_from(i).expect("fewer than 4 billion jobs");
    }
}

/// All jobs of a sweep in a topological order (every job after its dependencies).
///
/// A job's dependencies (the jobs that must be done before it is published) are kept here as
/// their places in [`Self::jobs`], all jobs' in one table: a vector of ids per job cost an
/// allocation and a reference count touched at a random place per edge, which at a million
/// jobs was most of the time a restart took to read its graph back.
#[derive(Debug, Clone, Default)]
pub struct JobGraph {
    jobs: Vec<Job>,
    index: Index,
    /// Job `i`'s dependencies are `deps[dep_end[i - 1]..dep_end[i]]` (from 0 for job 0).
    dep_end: Vec<u32>,
    deps: Vec<u32>,
}

impl JobGraph {
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    pub fn get(&self, id: &JobId) -> Option<&Job> {
        self.position_of(id.as_str()).map(|i| &self.jobs[i])
    }

    /// The job's place in [`Self::jobs`].
    pub fn position(&self, id: &JobId) -> Option<usize> {
        self.position_of(id.as_str())
    }

    /// [`Self::position`] of an id given as text (a bucket key).
    pub fn position_of(&self, id: &str) -> Option<usize> {
        self.index.find(&self.jobs, id)
    }

    /// The places of job `i`'s dependencies, each before `i`.
    pub fn deps(&self, i: usize) -> &[u32] {
        let start = i.checked_sub(1).map_or(0, |p| self.dep_end[p] as usize);
        &self.deps[start..self.dep_end[i] as usize]
    }

    /// The ids of job `i`'s dependencies.
    pub fn dep_ids(&self, i: usize) -> impl Iterator<Item = &JobId> {
        self.deps(i).iter().map(|&k| &self.jobs[k as usize].id)
    }

    /// Dependency edges in all.
    pub fn edge_count(&self) -> usize {
        self.deps.len()
    }

    pub fn by_key(&self, key: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.key == key)
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Jobs per kind.
    pub fn counts(&self) -> BTreeMap<JobKind, usize> {
        let mut counts = BTreeMap::new();
        for j in &self.jobs {
            *counts.entry(j.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// The number of jobs on the longest dependency chain (1 when nothing depends on anything).
    pub fn depth(&self) -> usize {
        let mut depth: Vec<usize> = Vec::with_capacity(self.jobs.len());
        for i in 0..self.jobs.len() {
            let d = self
                .deps(i)
                .iter()
                .map(|&k| depth[k as usize])
                .max()
                .unwrap_or(0)
                + 1;
            depth.push(d);
        }
        depth.into_iter().max().unwrap_or(0)
    }

    /// Expands a validated sweep.
    pub fn build(sweep: &Sweep) -> JobGraph {
        let mut b = Builder::new(sweep);
        if let Some(synthetic) = &sweep.synthetic {
            b.synthetic(synthetic);
        }
        // The sweep's seeds, then any that only a model runs: with one list for all, the
        // graph is what it was before models could have their own.
        let mut seeds = sweep.seeds.clone();
        for m in &sweep.models {
            for &s in sweep.seeds_of(m) {
                if !seeds.contains(&s) {
                    seeds.push(s);
                }
            }
        }
        for seed in seeds {
            b.seed(seed);
        }
        b.graph
    }

    /// A graph of jobs given in a topological order, with their dependencies as
    /// [`Self::deps`] gives them (`dep_end[i]`: where job `i`'s end in `deps`); `None` when two
    /// jobs share an id or the dependencies do not fit (a place not before its job's own).
    pub fn from_jobs(jobs: Vec<Job>, dep_end: Vec<u32>, deps: Vec<u32>) -> Option<JobGraph> {
        if dep_end.len() != jobs.len() || dep_end.last().map_or(0, |&e| e as usize) != deps.len() {
            return None;
        }
        let mut start = 0;
        for (i, &end) in dep_end.iter().enumerate() {
            let end = end as usize;
            if end < start || deps[start..end].iter().any(|&k| k as usize >= i) {
                return None;
            }
            start = end;
        }
        let mut index = Index::default();
        index.reserve(&[], jobs.len());
        for (i, j) in jobs.iter().enumerate() {
            if !index.insert_unique(&jobs, j.id.as_str(), i) {
                return None;
            }
        }
        Some(JobGraph {
            jobs,
            index,
            dep_end,
            deps,
        })
    }

    /// The graph's dependency table, as [`Self::from_jobs`] takes it.
    pub fn dep_table(&self) -> (&[u32], &[u32]) {
        (&self.dep_end, &self.deps)
    }

    /// Whether `sample` jobs spread over the graph have the ids this planner gives their specs
    /// and dependencies under `sweep`: a stored graph of a build that derived ids otherwise
    /// fails here, whatever its version said.
    pub fn ids_agree(&self, sweep: &Sweep, sample: usize) -> bool {
        let mut b = Builder::new(sweep);
        let step = (self.jobs.len() / sample.max(1)).max(1);
        let last = self.jobs.len().checked_sub(1);
        (0..self.jobs.len()).step_by(step).chain(last).all(|i| {
            let j = &self.jobs[i];
            let ids = self.dep_ids(i).collect();
            let defs = Defs {
                models: &b.model_json,
                tasks: &b.task_json,
                versions: &b.model_defs,
            };
            content_id(&mut b.buf, &defs, &j.spec, ids) == j.id
        })
    }

    /// Adds `job` after its dependencies `deps` (places), unless a job of its id is in the
    /// graph already; either way, the job's place.
    fn push(&mut self, job: Job, deps: &[u32]) -> u32 {
        if let Some(i) = self.position(&job.id) {
            return i as u32;
        }
        let i = self.jobs.len();
        self.index.reserve(&self.jobs, i + 1);
        self.index.insert_new(job.id.as_str(), i);
        self.jobs.push(job);
        self.deps.extend_from_slice(deps);
        self.dep_end.push(self.deps.len() as u32);
        i as u32
    }
}

/// Serializing a model or task definition once, for [`Builder::content_id`].
mod erased {
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// Expansion state: the graph so far and the train job of each (task, model, seed).
struct Builder<'a> {
    sweep: &'a Sweep,
    graph: JobGraph,
    /// seed -> model -> task -> train job's place: looked up by `&str` without building a key.
    train: IdMap<u64, IdMap<String, IdMap<String, u32>>>,
    /// The JSON of each model and task definition, part of the hashed content of every job
    /// that names it: serialized once rather than once per job (a task definition is most of
    /// the bytes a planned job hashes).
    model_json: IdMap<&'a str, Vec<u8>>,
    task_json: IdMap<&'a str, Vec<u8>>,
    /// The version of what each model's family computes ([`Arch::definitions`]), for the
    /// models that have one.
    model_defs: IdMap<&'a str, &'static str>,
    /// The content being hashed, reused from job to job.
    buf: Vec<u8>,
}

impl<'a> Builder<'a> {
    fn new(sweep: &'a Sweep) -> Builder<'a> {
        let json = |v: &dyn erased::Json| v.json();
        let mut b = Builder {
            sweep,
            graph: JobGraph::default(),
            train: IdMap::default(),
            model_json: IdMap::default(),
            task_json: IdMap::default(),
            model_defs: IdMap::default(),
            buf: Vec::new(),
        };
        for m in &sweep.models {
            b.model_json
                .entry(m.name.as_str())
                .or_insert_with(|| json(m));
            if let Some(v) = m.arch.definitions() {
                b.model_defs.insert(m.name.as_str(), v);
            }
        }
        for t in &sweep.tasks {
            b.task_json.entry(t.name()).or_insert_with(|| json(t));
        }
        b
    }

    /// Adds the job of `spec` after the jobs at places `deps`; its place.
    fn add(&mut self, spec: JobSpec, deps: Vec<u32>, gate: Option<(u32, Indicator)>) -> u32 {
        let ids = deps
            .iter()
            .map(|&k| &self.graph.jobs[k as usize].id)
            .collect();
        let defs = Defs {
            models: &self.model_json,
            tasks: &self.task_json,
            versions: &self.model_defs,
        };
        let id = content_id(&mut self.buf, &defs, &spec, ids);
        let key = spec.key();
        self.graph.push(
            Job {
                id,
                key,
                spec,
                gate,
            },
            &deps,
        )
    }

    #[cfg(test)]
    fn names_in(&self, spec: &JobSpec) -> (Vec<&crate::spec::ModelSpec>, Vec<&TaskSpec>) {
        let (models, tasks) = names_of(spec);
        (
            models
                .into_iter()
                .filter_map(|m| self.sweep.model(m))
                .collect(),
            tasks
                .into_iter()
                .filter_map(|t| self.sweep.task(t))
                .collect(),
        )
    }

    fn settings(&self, model: &str, task: &str) -> Box<PromptSettings> {
        Box::new(self.sweep.settings(model, task).clone())
    }

    /// The place of the train job of `task` on `model`, added on first use.
    fn train_job(&mut self, task: &str, model: &str, seed: u64) -> u32 {
        let known = self.train.get(&seed).and_then(|m| m.get(model));
        if let Some(&k) = known.and_then(|t| t.get(task)) {
            return k;
        }
        let settings = self.settings(model, task);
        let spec = JobSpec::Train {
            task: task.into(),
            model: model.into(),
            seed,
            settings,
        };
        let id = self.add(spec, vec![], None);
        self.train
            .entry(seed)
            .or_default()
            .entry(model.to_string())
            .or_default()
            .insert(task.to_string(), id);
        id
    }

    /// The activations job of a task's prompt (or the random one); adding it twice is a no-op.
    fn activations_job(&mut self, task: &str, model: &str, seed: u64) -> u32 {
        let deps = if task == RANDOM {
            vec![]
        } else {
            vec![self.train_job(task, model, seed)]
        };
        let spec = JobSpec::Activations {
            task: task.into(),
            model: model.into(),
            seed,
        };
        self.add(spec, deps, None)
    }

    fn seed(&mut self, seed: u64) {
        let sweep = self.sweep;
        let studies = &sweep.studies;
        for model in sweep
            .models
            .iter()
            .filter(|m| sweep.seeds_of(m).contains(&seed))
        {
            let tasks: Vec<&TaskSpec> = sweep.tasks_for(model).collect();
            if studies.train {
                for t in &tasks {
                    self.train_job(t.name(), &model.name, seed);
                }
            }
            if let Some(ct) = &studies.cross_task {
                for tgt in &tasks {
                    let sources = tasks.iter().map(|t| t.name()).chain([RANDOM]);
                    for src in sources {
                        // A task's own prompt on the scored split is what its train job scores
                        // last; the matrix takes its diagonal from that eval.
                        if src == tgt.name() && ct.split == SCORED_SPLIT {
                            continue;
                        }
                        let mut deps = vec![];
                        if src != RANDOM {
                            deps.push(self.train_job(src, &model.name, seed));
                        }
                        let spec = JobSpec::Transfer {
                            src: src.into(),
                            tgt: tgt.name().into(),
                            model: Symbol::new(&model.name),
                            seed,
                            split: Symbol::new(&ct.split),
                        };
                        self.add(spec, deps, None);
                    }
                }
            }
            if let Some(tpt) = &studies.tpt
                && tpt.models.as_ref().is_none_or(|m| m.contains(&model.name))
                && tpt.seeds.as_ref().is_none_or(|s| s.contains(&seed))
            {
                let pairs = tpt_pairs(&tpt.pairs, &tasks);
                for (src, tgt) in &pairs {
                    let (src, tgt) = (src.clone(), tgt.clone());
                    let mut deps = vec![
                        self.train_job(&src, &model.name, seed),
                        self.train_job(&tgt, &model.name, seed),
                    ];
                    // A gated job ranks every candidate source of its target when it runs, so it
                    // waits for all of their prompts (and masks, when ranked by ON).
                    if let Some((_, by)) = tpt.top_k {
                        let mut ranked: Vec<&str> = vec![&tgt];
                        ranked.extend(pairs.iter().filter(|p| p.1 == tgt).map(|p| p.0.as_str()));
                        for task in ranked {
                            deps.push(self.train_job(task, &model.name, seed));
                            if by == Indicator::On {
                                deps.push(self.activations_job(task, &model.name, seed));
                            }
                        }
                        deps.sort();
                        deps.dedup();
                    }
                    let spec = JobSpec::Tpt {
                        source: TptSource::Task {
                            task: Symbol::new(&src),
                        },
                        settings: Box::new(
                            tpt.settings.apply(self.sweep.settings(&model.name, &tgt)),
                        ),
                        tgt: Symbol::new(&tgt),
                        model: Symbol::new(&model.name),
                        seed,
                        stop_when_matched: tpt.stop_when_matched,
                    };
                    self.add(spec, deps, tpt.top_k);
                }
            }
            if let Some(ind) = &studies.indicators
                && ind.list.contains(&Indicator::On)
            {
                for task in tasks.iter().map(|t| t.name()).chain([RANDOM]) {
                    self.activations_job(task, &model.name, seed);
                }
            }
        }
        for pair in &studies.cross_model {
            self.cross_model(pair, seed);
        }
    }

    fn cross_model(&mut self, pair: &CrossModelPair, seed: u64) {
        let sweep = self.sweep;
        let (Some(src), Some(tgt)) = (sweep.model(&pair.src), sweep.model(&pair.tgt)) else {
            return;
        };
        // A projector learns from both models' prompts of one seed.
        if !(sweep.seeds_of(src).contains(&seed) && sweep.seeds_of(tgt).contains(&seed)) {
            return;
        }
        // A task both models can run.
        let shared: Vec<String> = sweep
            .tasks_for(src)
            .filter(|t| sweep.tasks_for(tgt).any(|u| u.name() == t.name()))
            .map(|t| t.name().to_string())
            .collect();
        for &objective in &pair.objectives {
            let mut deps = Vec::new();
            for task in &pair.train_tasks {
                deps.push(self.train_job(task, &src.name, seed));
                if objective == Objective::Distance {
                    deps.push(self.train_job(task, &tgt.name, seed));
                }
            }
            let projector = self.add(
                JobSpec::Projector {
                    src_model: Symbol::new(&src.name),
                    tgt_model: Symbol::new(&tgt.name),
                    objective,
                    train_tasks: pair.train_tasks.iter().map(Symbol::from).collect(),
                    seed,
                    settings: Box::new(pair.settings.clone()),
                },
                deps,
                None,
            );
            let split = sweep
                .studies
                .cross_task
                .as_ref()
                .map_or("test", |c| c.split.as_str());
            for task in &shared {
                let src_prompt = self.train_job(task, &src.name, seed);
                let spec = JobSpec::CrossModel {
                    task: Symbol::new(task),
                    src_model: Symbol::new(&src.name),
                    tgt_model: Symbol::new(&tgt.name),
                    objective,
                    held_out: !pair.train_tasks.contains(task),
                    seed,
                    split: Symbol::new(split),
                };
                self.add(spec, vec![projector, src_prompt], None);
                if let Some(tpt) = sweep.studies.tpt.as_ref().filter(|t| t.from_projected) {
                    let vanilla = self.train_job(task, &tgt.name, seed);
                    let spec = JobSpec::Tpt {
                        source: TptSource::Projected {
                            task: Symbol::new(task),
                            model: Symbol::new(&src.name),
                            objective,
                        },
                        tgt: Symbol::new(task),
                        model: Symbol::new(&tgt.name),
                        seed,
                        settings: Box::new(
                            tpt.settings.apply(self.sweep.settings(&tgt.name, task)),
                        ),
                        stop_when_matched: tpt.stop_when_matched,
                    };
                    self.add(spec, vec![projector, src_prompt, vanilla], None);
                }
            }
        }
    }

    fn synthetic(&mut self, s: &SyntheticSpec) {
        // A small deterministic generator: the graph must be the same on every run.
        let mut state = s.seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Synthetic jobs come first and are all distinct (each has its own index), so job
        // `i` of the graph is synthetic job `i`: its dependencies are looked up there.
        debug_assert!(self.graph.jobs.is_empty());
        // Room for every job at once: growing by doubling left a quarter of a million-job
        // graph's largest blocks unused, and briefly held the old table next to the new one.
        self.graph.jobs.reserve(s.count as usize);
        self.graph.index.reserve(&self.graph.jobs, s.count as usize);
        for index in 0..s.count {
            let (lo, hi) = s.duration_ms;
            let duration_ms = lo + (next() % (u64::from(hi - lo) + 1)) as u32;
            let fail = (next() as f64 / u64::MAX as f64) < s.fail_probability;
            // Exactly as large as it needs: a million small vectors grown from empty had room
            // for twice the edges.
            let mut deps = Vec::with_capacity(if index > 0 { s.fan_in as usize } else { 0 });
            if index > 0 {
                for _ in 0..s.fan_in {
                    let d = (next() % u64::from(index)) as u32;
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
            }
            let spec = JobSpec::Synthetic {
                index,
                duration_ms,
                fail,
                payload_bytes: s.payload_bytes,
            };
            self.add(spec, deps, None);
        }
    }
}

/// Hash of the spec, the definitions it names and its dependencies' ids: the bytes
/// `serde_json` writes for `Content` (see the test), put together from the definitions' JSON
/// made once, in `buf`.
fn content_id(
    buf: &mut Vec<u8>,
    defs: &Defs<'_, '_>,
    spec: &JobSpec,
    mut deps: Vec<&JobId>,
) -> JobId {
    let uses_random = uses_random(spec);
    let (models, tasks) = names_of(spec);
    deps.sort();
    buf.clear();
    buf.extend_from_slice(b"{\"v\":1,\"spec\":");
    let _ = serde_json::to_writer(&mut *buf, spec);
    let versions: Vec<&str> = models
        .iter()
        .filter_map(|m| defs.versions.get(m).copied())
        .collect();
    for (field, names, json) in [
        ("models", models, defs.models),
        ("tasks", tasks, defs.tasks),
    ] {
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(field.as_bytes());
        buf.extend_from_slice(b"\":[");
        let mut first = true;
        for j in names.iter().filter_map(|n| json.get(n)) {
            if !first {
                buf.push(b',');
            }
            first = false;
            buf.extend_from_slice(j);
        }
        buf.push(b']');
    }
    buf.extend_from_slice(b",\"deps\":");
    let _ = serde_json::to_writer(&mut *buf, &deps);
    if uses_random {
        buf.extend_from_slice(b",\"random\":");
        let _ = serde_json::to_writer(&mut *buf, RANDOM_PROMPT);
    }
    if !versions.is_empty() {
        buf.extend_from_slice(b",\"defs\":");
        let _ = serde_json::to_writer(&mut *buf, &versions);
    }
    buf.push(b'}');
    let digest = Sha256::digest(&buf[..]);
    JobId::new(hex::encode(&digest[..16]))
}

/// The definitions a job's content names, serialized once per sweep (see [`Builder`]).
struct Defs<'m, 'a> {
    models: &'m IdMap<&'a str, Vec<u8>>,
    tasks: &'m IdMap<&'a str, Vec<u8>>,
    versions: &'m IdMap<&'a str, &'static str>,
}

/// Whether a job uses the random prompt, which is then part of its content.
fn uses_random(spec: &JobSpec) -> bool {
    match spec {
        JobSpec::Transfer { src, .. } => src == RANDOM,
        JobSpec::Activations { task, .. } => task == RANDOM,
        _ => false,
    }
}

/// The models and tasks a job names, in the order its content lists their definitions.
pub(crate) fn names_of(spec: &JobSpec) -> (Vec<&str>, Vec<&str>) {
    match spec {
        JobSpec::Train { task, model, .. } | JobSpec::Activations { task, model, .. } => {
            (vec![model], vec![task])
        }
        JobSpec::Transfer {
            src, tgt, model, ..
        } => (vec![model], vec![src, tgt]),
        JobSpec::Tpt {
            source, tgt, model, ..
        } => match source {
            TptSource::Task { task } => (vec![model], vec![task, tgt]),
            TptSource::Projected {
                task, model: src, ..
            } => (vec![src, model], vec![task, tgt]),
        },
        JobSpec::Projector {
            src_model,
            tgt_model,
            train_tasks,
            ..
        } => (
            vec![src_model, tgt_model],
            train_tasks.iter().map(Symbol::as_str).collect(),
        ),
        JobSpec::CrossModel {
            task,
            src_model,
            tgt_model,
            ..
        } => (vec![src_model, tgt_model], vec![task]),
        JobSpec::Synthetic { .. } => (vec![], vec![]),
    }
}

/// The (source, target) task pairs of a TPT study, among the tasks a model runs.
fn tpt_pairs(pairs: &TptPairs, tasks: &[&TaskSpec]) -> Vec<(String, String)> {
    let runs = |name: &str| tasks.iter().any(|t| t.name() == name);
    match pairs {
        TptPairs::Listed(list) => list
            .iter()
            .filter(|(s, t)| runs(s) && runs(t))
            .cloned()
            .collect(),
        TptPairs::All | TptPairs::WithinType => {
            let mut out = Vec::new();
            for s in tasks {
                for t in tasks {
                    let same_type = s.def.task_type == t.def.task_type;
                    let wanted = matches!(pairs, TptPairs::All) || same_type;
                    if s.name() != t.name() && wanted {
                        out.push((s.name().to_string(), t.name().to_string()));
                    }
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million-job graph holds a million of these: a field that makes every spec larger
    /// costs the coordinator that many times its size (names are interned [`Symbol`]s,
    /// settings rare or large are boxed, and dependencies live in the graph's table).
    #[test]
    fn a_job_and_its_spec_stay_small() {
        assert_eq!(std::mem::size_of::<Symbol>(), 8);
        assert_eq!(std::mem::size_of::<JobSpec>(), 64);
        assert_eq!(std::mem::size_of::<Job>(), 112);
    }

    /// The index finds every job at its place, through every growth of its table, keeps one
    /// job per id, and finds nothing else.
    #[test]
    fn index_finds_every_job_and_nothing_else() {
        let mut g = JobGraph::default();
        let job = |i: u32| Job {
            id: JobId::new(format!("{:032x}", u128::from(i) * 0x9e37_79b9)),
            key: format!("synthetic/{i:06}"),
            spec: JobSpec::Synthetic {
                index: i,
                duration_ms: 0,
                fail: false,
                payload_bytes: 0,
            },
            gate: None,
        };
        for i in 0..5_000 {
            g.push(job(i), &[]);
            g.push(job(i / 2), &[]);
        }
        assert_eq!(g.len(), 5_000);
        for (i, j) in g.jobs().iter().enumerate() {
            assert_eq!(g.position(&j.id), Some(i));
            assert_eq!(g.get(&j.id).map(|j| &j.key), Some(&j.key));
        }
        assert_eq!(g.position_of("not an id"), None);
        assert_eq!(JobGraph::default().position_of("x"), None);
    }

    /// The content hash put together from cached definitions hashes exactly the bytes that
    /// `serde_json` writes for the content struct, so that no job id changes.
    #[test]
    fn assembled_content_hashes_as_the_serialized_struct() {
        #[derive(Serialize)]
        struct Content<'a> {
            v: u32,
            spec: &'a JobSpec,
            models: Vec<&'a crate::spec::ModelSpec>,
            tasks: Vec<&'a TaskSpec>,
            deps: Vec<&'a JobId>,
            #[serde(skip_serializing_if = "Option::is_none")]
            random: Option<&'static str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            defs: Vec<&'static str>,
        }
        let demo = include_str!("../../sweeps/demo.toml");
        // The demo with its first model on T5 (the projectors' source): its jobs name the
        // family's definitions version, the other model's do not.
        let t5 = demo.replacen(
            "arch = \"bert\"\nhead = \"tied\"\nlayout = \"official\"",
            "arch = \"t5\"",
            1,
        );
        assert_ne!(t5, demo);
        let catalog = crate::catalog::Catalog::builtin().unwrap();
        for (source, versioned) in [(demo, false), (t5.as_str(), true)] {
            let mut with_defs = 0;
            let sweep = Sweep::parse(std::path::Path::new("demo.toml"), source, &catalog).unwrap();
            let graph = JobGraph::build(&sweep);
            assert!(graph.len() > 100);
            let b = Builder::new(&sweep);
            for (i, job) in graph.jobs().iter().enumerate() {
                let (models, tasks) = b.names_in(&job.spec);
                let mut deps: Vec<&JobId> = graph.dep_ids(i).collect();
                deps.sort();
                let mut content = Content {
                    v: 1,
                    spec: &job.spec,
                    models,
                    tasks,
                    deps,
                    random: uses_random(&job.spec).then_some(RANDOM_PROMPT),
                    defs: vec![],
                };
                content.defs = content
                    .models
                    .iter()
                    .filter_map(|m| m.arch.definitions())
                    .collect();
                let defs = content.defs.clone();
                let id = |c: &Content| {
                    hex::encode(&Sha256::digest(serde_json::to_vec(c).unwrap())[..16])
                };
                assert_eq!(job.id.as_str(), id(&content), "{}", job.key);
                if !defs.is_empty() {
                    // Without the version the same job would have another id.
                    with_defs += 1;
                    content.defs.clear();
                    assert_ne!(job.id.as_str(), id(&content), "{}", job.key);
                }
            }
            assert_eq!(with_defs > 0, versioned);
        }
    }
}
