//! The sweep file: which models, which tasks, which prompt settings and which studies.
//!
//! Parsing happens in two steps. Serde turns the TOML into [`raw`] structs that keep the byte
//! span of every value a check can reject; [`Sweep::parse`] then validates against the catalog
//! and resolves the per-model and per-task overrides, so that everything downstream works with
//! plain, checked values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::catalog::{Catalog, TaskDef, TaskKind};
use crate::error::{SpecError, SpecResult};
use crate::overrides::{self, Override};

/// Model families promptgrid runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Bert,
    Roberta,
    /// T5 v1.0: ReLU feed-forward, tied embeddings.
    T5,
    /// T5 v1.1: gated-GELU feed-forward, untied LM head.
    #[serde(rename = "t5-v1_1")]
    T5V1_1,
}

impl Arch {
    pub fn is_encoder(self) -> bool {
        matches!(self, Arch::Bert | Arch::Roberta)
    }
}

/// How an encoder turns the mask state into class scores (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// The checkpoint's pretrained MLM head.
    Mlm,
    /// Mask state against the label words' input-embedding rows, for checkpoints without a head.
    Tied,
}

/// Where the prompt sits among the positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// PEFT prompt tuning: the prompt takes ordinary consecutive positions.
    Prefix,
    /// The official code's: mask at prompt slot 0, prompt positions without position embeddings.
    Official,
}

/// How a fresh prompt starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Normal(0, 0.02).
    Random,
    /// Rows of the word embedding matrix, sampled.
    Vocab,
    /// A prompt file, named relative to the worker's models root.
    From(String),
}

impl Init {
    fn parse(text: &str) -> Option<Init> {
        match text {
            "random" => Some(Init::Random),
            "vocab" => Some(Init::Vocab),
            _ => text
                .strip_prefix("from:")
                .filter(|f| !f.is_empty())
                .map(|f| Init::From(f.to_string())),
        }
    }
}

/// Prompt-tuning settings after all overrides: what a train or tpt job runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSettings {
    /// Soft tokens L.
    pub length: u32,
    pub init: Init,
    pub learning_rate: f64,
    pub batch_size: u32,
    pub grad_accum: u32,
    pub max_steps: u32,
    /// Dev evaluation (and best-prompt selection) every this many steps.
    pub eval_every: u32,
    /// Text tokens kept per example before the prompt; longer text is truncated.
    pub max_text_tokens: u32,
    /// At most this many dev examples per evaluation; 0 means all.
    pub dev_examples: u32,
    /// Checkpoint to the object store every this many steps; 0 turns it off.
    pub checkpoint_every: u32,
    /// Dropout inside the frozen model during training steps; 0 (the default) trains in eval
    /// mode. The official code trains in `train()` mode: 0.1. Left out of the wire form (and
    /// so of job ids) at its default, so that existing sweeps keep their ids.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f64,
    /// AdamW's epsilon; the official `transformers.AdamW` uses 1e-6. Left out of the wire form
    /// at its default, 1e-8.
    #[serde(
        default = "default_adam_eps",
        skip_serializing_if = "is_default_adam_eps"
    )]
    pub adam_eps: f64,
}

/// AdamW's epsilon when a sweep does not set one.
pub const DEFAULT_ADAM_EPS: f64 = 1e-8;

fn default_adam_eps() -> f64 {
    DEFAULT_ADAM_EPS
}

fn is_default_adam_eps(v: &f64) -> bool {
    *v == DEFAULT_ADAM_EPS
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Default for PromptSettings {
    fn default() -> Self {
        PromptSettings {
            length: 100,
            init: Init::Random,
            learning_rate: 1e-3,
            batch_size: 16,
            grad_accum: 1,
            max_steps: 1000,
            eval_every: 100,
            max_text_tokens: 128,
            dev_examples: 0,
            checkpoint_every: 100,
            dropout: 0.0,
            adam_eps: DEFAULT_ADAM_EPS,
        }
    }
}

/// A model of the sweep, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    /// Folder under the worker's models root (relative, never `..`): jobs carry names only.
    pub path: String,
    pub arch: Arch,
    pub head: Head,
    pub layout: Layout,
}

/// A task of the sweep: its catalog definition with the sweep's overrides applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub def: TaskDef,
}

impl TaskSpec {
    pub fn name(&self) -> &str {
        &self.def.name
    }
}

/// Which (source, target) pairs a TPT study trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TptPairs {
    /// Every ordered pair of distinct tasks.
    All,
    /// Pairs whose tasks share a type.
    WithinType,
    /// The listed (source, target) pairs.
    Listed(Vec<(String, String)>),
}

/// Transfer as initialization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TptStudy {
    pub pairs: TptPairs,
    /// When set, only the k sources most similar to each target by `by` run (chosen once the
    /// prompts exist); the plan lists every candidate.
    pub top_k: Option<(u32, Indicator)>,
    /// Also train each cross-model target from the projected source prompt (TPT-model).
    pub from_projected: bool,
    /// The models TPT runs on; all when `None`.
    pub models: Option<Vec<String>>,
    /// Stop a TPT run at the first evaluation that matches its target's vanilla best dev
    /// score: the run then measures convergence speedup only, and its final score is that
    /// evaluation's prompt. Runs that never match use the whole budget.
    #[serde(default)]
    pub stop_when_matched: bool,
}

/// How a projector learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Match the target model's own prompt for the same task.
    Distance,
    /// The target task's loss through the frozen target model.
    Task,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Distance => "distance",
            Objective::Task => "task",
        }
    }
}

/// Projector training settings (DESIGN.md §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorSettings {
    pub hidden: u32,
    pub learning_rate: f64,
    pub steps: u32,
    pub batch_size: u32,
}

/// One source→target model pair of the cross-model study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossModelPair {
    pub src: String,
    pub tgt: String,
    pub objectives: Vec<Objective>,
    /// Tasks the projector learns from; the others are held out.
    pub train_tasks: Vec<String>,
    pub settings: ProjectorSettings,
}

/// Transferability indicators (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    EConcat,
    EAverage,
    CConcat,
    CAverage,
    CMean,
    /// Overlap of activated feed-forward neurons; needs activations jobs.
    On,
}

impl Indicator {
    pub const ALL: [Indicator; 6] = [
        Indicator::EConcat,
        Indicator::EAverage,
        Indicator::CConcat,
        Indicator::CAverage,
        Indicator::CMean,
        Indicator::On,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Indicator::EConcat => "e_concat",
            Indicator::EAverage => "e_average",
            Indicator::CConcat => "c_concat",
            Indicator::CAverage => "c_average",
            Indicator::CMean => "c_mean",
            Indicator::On => "on",
        }
    }

    fn parse(name: &str) -> Option<Indicator> {
        Indicator::ALL.into_iter().find(|i| i.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndicatorStudy {
    pub list: Vec<Indicator>,
    /// Consecutive layers per ON window.
    pub on_window: u32,
    /// Report ON on every window of `on_window` layers (stride 1), not only on the official
    /// non-overlapping ones: more candidates, so a best one among them is a selection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_sliding: bool,
}

/// Zero-shot cross-task transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossTaskStudy {
    /// The split transfer is scored on.
    pub split: String,
}

/// Jobs without ML, for testing and benchmarking the runtime through the same path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    pub count: u32,
    /// Each job depends on up to this many earlier ones.
    pub fan_in: u32,
    pub duration_ms: (u32, u32),
    pub fail_probability: f64,
    pub payload_bytes: u32,
    pub seed: u64,
}

/// The studies a sweep runs; `train` is implied by any study that needs prompts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Studies {
    pub train: bool,
    pub cross_task: Option<CrossTaskStudy>,
    pub tpt: Option<TptStudy>,
    pub cross_model: Vec<CrossModelPair>,
    pub indicators: Option<IndicatorStudy>,
}

/// A validated sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub name: String,
    /// Free text for the reader of the sweep and of its report.
    pub description: Option<String>,
    pub file: PathBuf,
    pub seeds: Vec<u64>,
    pub models: Vec<ModelSpec>,
    pub tasks: Vec<TaskSpec>,
    /// Resolved settings per model, then task.
    pub settings: BTreeMap<String, BTreeMap<String, PromptSettings>>,
    pub studies: Studies,
    pub synthetic: Option<SyntheticSpec>,
}

/// `--set a=1 --set b=2`, for messages.
fn describe(overrides: &[Override]) -> String {
    overrides
        .iter()
        .map(|o| format!("--set {o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sweep {
    /// Reads and validates a sweep file; the catalog folder is the sweep's `catalog` setting,
    /// relative to the sweep file (default `tasks`).
    pub fn load(file: &Path) -> SpecResult<Sweep> {
        let source = std::fs::read_to_string(file).map_err(|e| SpecError::io(file, e))?;
        Sweep::from_source(file, &source)
    }

    /// Validates `source`, the text of `file`, against the catalog it names.
    fn from_source(file: &Path, source: &str) -> SpecResult<Sweep> {
        let raw: raw::Sweep =
            toml::from_str(source).map_err(|e| SpecError::toml(file, source, &e))?;
        let catalog_dir = file
            .parent()
            .unwrap_or(Path::new("."))
            .join(raw.sweep.catalog.as_deref().unwrap_or("tasks"));
        let catalog = Catalog::load(&catalog_dir)?;
        Sweep::resolve(file, source, raw, &catalog)
    }

    /// [`Sweep::load`] with `--set` overrides applied to the file's document first. An error
    /// that the file alone also has is reported at its line; one that only the overrides cause
    /// names them.
    pub fn load_with(file: &Path, overrides: &[Override]) -> SpecResult<Sweep> {
        if overrides.is_empty() {
            return Sweep::load(file);
        }
        let source = std::fs::read_to_string(file).map_err(|e| SpecError::io(file, e))?;
        let mut doc: toml::Table =
            toml::from_str(&source).map_err(|e| SpecError::toml(file, &source, &e))?;
        overrides::apply(&mut doc, overrides)?;
        let edited = toml::to_string(&doc).map_err(|e| SpecError::WithOverrides {
            file: file.into(),
            overrides: describe(overrides),
            message: e.to_string(),
        })?;
        match Sweep::from_source(file, &edited) {
            Ok(sweep) => Ok(sweep),
            // Blame the file where it is at fault on its own, at its line.
            Err(e) => Err(match Sweep::from_source(file, &source) {
                Err(original) => original,
                Ok(_) => SpecError::WithOverrides {
                    file: file.into(),
                    overrides: describe(overrides),
                    message: match e {
                        SpecError::Invalid { key, message, .. } => format!("`{key}`: {message}"),
                        SpecError::Toml { message, .. } => message,
                        other => other.to_string(),
                    },
                },
            }),
        }
    }

    /// Validates sweep text against a given catalog.
    pub fn parse(file: &Path, source: &str, catalog: &Catalog) -> SpecResult<Sweep> {
        let raw: raw::Sweep =
            toml::from_str(source).map_err(|e| SpecError::toml(file, source, &e))?;
        Sweep::resolve(file, source, raw, catalog)
    }

    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|t| t.name() == name)
    }

    /// The settings a (model, task) prompt trains with.
    pub fn settings(&self, model: &str, task: &str) -> &PromptSettings {
        &self.settings[model][task]
    }

    /// Tasks a model can run: generation tasks are T5-only.
    pub fn tasks_for(&self, model: &ModelSpec) -> impl Iterator<Item = &TaskSpec> {
        self.tasks
            .iter()
            .filter(move |t| !model.arch.is_encoder() || t.def.kind == TaskKind::Classification)
    }

    fn resolve(file: &Path, source: &str, raw: raw::Sweep, catalog: &Catalog) -> SpecResult<Sweep> {
        let ctx = Ctx { file, source };
        let name = raw.sweep.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ctx.err(
                &raw.sweep.name,
                "sweep.name",
                "use letters, digits, '-' and '_' only (it scopes NATS subjects and buckets)",
            ));
        }

        let base = PromptSettings::default();
        let sweep_prompt = raw.prompt.unwrap_or_default();
        let seeds = match &sweep_prompt.seeds {
            Some(seeds) if seeds.get_ref().is_empty() => {
                return Err(ctx.err(seeds, "prompt.seeds", "list at least one seed"));
            }
            Some(seeds) => {
                let mut unique = BTreeSet::new();
                for s in seeds.get_ref() {
                    if !unique.insert(s) {
                        return Err(ctx.err(
                            seeds,
                            "prompt.seeds",
                            format!("seed {s} is listed twice"),
                        ));
                    }
                }
                seeds.get_ref().clone()
            }
            None => vec![1],
        };
        let base = sweep_prompt.apply(&ctx, "prompt", base)?;

        // Models.
        if raw.models.is_empty() {
            return Err(SpecError::at_key(
                file,
                source,
                "model",
                "the sweep names no [[model]]",
            ));
        }
        let mut models = Vec::new();
        let mut model_prompts = BTreeMap::new();
        for m in raw.models {
            let model_name = m.name.get_ref().clone();
            check_name(&ctx, &m.name, "model.name")?;
            if models.iter().any(|x: &ModelSpec| x.name == model_name) {
                return Err(ctx.err(
                    &m.name,
                    "model.name",
                    format!("model `{model_name}` is defined twice"),
                ));
            }
            let path = match &m.path {
                Some(p) => {
                    check_relative(&ctx, p, "model.path")?;
                    p.get_ref().clone()
                }
                None => model_name.clone(),
            };
            let arch = *m.arch.get_ref();
            if !arch.is_encoder() && (m.head.is_some() || m.layout.is_some()) {
                let at = m
                    .head
                    .as_ref()
                    .map(Spanned::span)
                    .or(m.layout.as_ref().map(Spanned::span));
                return Err(SpecError::at(
                    file,
                    source,
                    at.map_or(0, |s| s.start),
                    "model.head",
                    format!("model `{model_name}` is T5: head and layout are for encoders"),
                ));
            }
            let settings = match m.prompt {
                Some(p) => {
                    if let Some(seeds) = &p.seeds {
                        return Err(ctx.err(
                            seeds,
                            "model.prompt.seeds",
                            "seeds are set for the whole sweep, in [prompt]",
                        ));
                    }
                    p.apply(&ctx, "model.prompt", base.clone())?
                }
                None => base.clone(),
            };
            model_prompts.insert(model_name.clone(), settings);
            models.push(ModelSpec {
                name: model_name,
                path,
                arch,
                head: m.head.map_or(Head::Mlm, |h| *h.get_ref()),
                layout: m.layout.map_or(Layout::Prefix, |l| *l.get_ref()),
            });
        }

        // Tasks.
        if raw.tasks.is_empty() {
            return Err(SpecError::at_key(
                file,
                source,
                "task",
                "the sweep names no [[task]]",
            ));
        }
        let mut tasks: Vec<TaskSpec> = Vec::new();
        let mut task_prompts = BTreeMap::new();
        for t in raw.tasks {
            let task_name = t.name.get_ref().clone();
            let Some(def) = catalog.get(&task_name) else {
                let known: Vec<&str> = catalog.names().collect();
                return Err(ctx.err(
                    &t.name,
                    "task.name",
                    format!(
                        "unknown task `{task_name}`; the catalog has: {}",
                        known.join(", ")
                    ),
                ));
            };
            if tasks.iter().any(|x| x.name() == task_name) {
                return Err(ctx.err(
                    &t.name,
                    "task.name",
                    format!("task `{task_name}` is listed twice"),
                ));
            }
            let mut def = def.clone();
            if let Some(words) = &t.verbalizer {
                if def.kind != TaskKind::Classification {
                    return Err(ctx.err(
                        words,
                        "task.verbalizer",
                        format!("`{task_name}` generates text: it has no verbalizer"),
                    ));
                }
                if words.get_ref().len() != def.labels.len() {
                    return Err(ctx.err(
                        words,
                        "task.verbalizer",
                        format!(
                            "{} words for the {} labels {:?} of `{task_name}`",
                            words.get_ref().len(),
                            def.labels.len(),
                            def.labels
                        ),
                    ));
                }
                if let Some(v) = def.verbalizer.as_mut() {
                    v.encoder = words.get_ref().clone();
                    v.bert = None;
                }
            }
            if let Some(dir) = &t.data_dir {
                check_relative(&ctx, dir, "task.data_dir")?;
                def.data_dir = Some(dir.get_ref().clone());
            }
            if let Some(p) = t.prompt {
                if let Some(seeds) = &p.seeds {
                    return Err(ctx.err(
                        seeds,
                        "task.prompt.seeds",
                        "seeds are set for the whole sweep, in [prompt]",
                    ));
                }
                task_prompts.insert(task_name.clone(), p);
            }
            // Generation tasks on an encoder: no template, no mask, nothing to read out.
            if def.kind == TaskKind::Generation
                && let Some(m) = models.iter().find(|m| m.arch.is_encoder())
            {
                return Err(ctx.err(
                    &t.name,
                    "task.name",
                    format!(
                        "`{task_name}` is a generation task, T5 only, but model `{}` is an encoder",
                        m.name
                    ),
                ));
            }
            tasks.push(TaskSpec { def });
        }

        // Settings per (model, task): sweep < model < task.
        let mut settings = BTreeMap::new();
        for m in &models {
            for t in &tasks {
                let mut s = model_prompts[&m.name].clone();
                if let Some(p) = task_prompts.get(t.name()) {
                    s = p.apply(&ctx, "task.prompt", s)?;
                }
                // Refused here rather than by every T5 job at run time.
                if !m.arch.is_encoder() && s.dropout > 0.0 {
                    return Err(SpecError::at_key(
                        file,
                        source,
                        "dropout",
                        format!(
                            "model `{}` is T5, which promptgrid trains without dropout \
                             (task `{}`: dropout {}); set it on the encoder models only",
                            m.name,
                            t.name(),
                            s.dropout
                        ),
                    ));
                }
                settings
                    .entry(m.name.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(t.name().to_string(), s);
            }
        }

        let task_names: BTreeSet<&str> = tasks.iter().map(|t| t.name()).collect();
        let studies = raw
            .studies
            .map(|s| s.resolve(&ctx, &models, &task_names))
            .transpose()?
            .unwrap_or_default();
        let synthetic = raw.synthetic.map(|s| s.resolve(&ctx)).transpose()?;

        Ok(Sweep {
            name,
            description: raw.sweep.description,
            file: file.to_path_buf(),
            seeds,
            models,
            tasks,
            settings,
            studies,
            synthetic,
        })
    }
}

/// The file and its text, to turn spans into locations.
struct Ctx<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, at: &Spanned<T>, key: &str, message: impl Into<String>) -> SpecError {
        SpecError::at(self.file, self.source, at.span().start, key, message)
    }
}

fn check_name(ctx: &Ctx, name: &Spanned<String>, key: &str) -> SpecResult<()> {
    let n = name.get_ref();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.err(
            name,
            key,
            format!("`{n}`: use letters, digits, '-', '_' and '.' only"),
        ));
    }
    Ok(())
}

/// Paths in a sweep are resolved under a worker's roots: they must stay inside them.
fn check_relative(ctx: &Ctx, path: &Spanned<String>, key: &str) -> SpecResult<()> {
    let p = Path::new(path.get_ref());
    if path.get_ref().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ctx.err(
            path,
            key,
            format!(
                "`{}` must be a relative path inside the worker's root, without `..`",
                path.get_ref()
            ),
        ));
    }
    Ok(())
}

/// The serde side of the sweep file: every checked value keeps its span.
mod raw {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sweep {
        pub sweep: Header,
        pub prompt: Option<Prompt>,
        #[serde(rename = "model", default)]
        pub models: Vec<Model>,
        #[serde(rename = "task", default)]
        pub tasks: Vec<Task>,
        pub studies: Option<Studies>,
        pub synthetic: Option<Synthetic>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Header {
        pub name: Spanned<String>,
        #[serde(default)]
        pub description: Option<String>,
        /// Catalog folder relative to the sweep file.
        #[serde(default)]
        pub catalog: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Prompt {
        pub length: Option<Spanned<i64>>,
        pub init: Option<Spanned<String>>,
        pub learning_rate: Option<Spanned<f64>>,
        pub batch_size: Option<Spanned<i64>>,
        pub grad_accum: Option<Spanned<i64>>,
        pub max_steps: Option<Spanned<i64>>,
        pub eval_every: Option<Spanned<i64>>,
        pub max_text_tokens: Option<Spanned<i64>>,
        pub dev_examples: Option<Spanned<i64>>,
        pub checkpoint_every: Option<Spanned<i64>>,
        pub dropout: Option<Spanned<f64>>,
        pub adam_eps: Option<Spanned<f64>>,
        pub seeds: Option<Spanned<Vec<u64>>>,
    }

    fn positive(
        ctx: &Ctx,
        v: &Option<Spanned<i64>>,
        key: &str,
        allow_zero: bool,
    ) -> SpecResult<Option<u32>> {
        let Some(v) = v else { return Ok(None) };
        let n = *v.get_ref();
        let min = if allow_zero { 0 } else { 1 };
        if n < min || n > i64::from(u32::MAX) {
            let what = if allow_zero {
                "zero or a positive whole number"
            } else {
                "a positive whole number"
            };
            return Err(ctx.err(v, key, format!("must be {what}, not {n}")));
        }
        Ok(Some(n as u32))
    }

    impl Prompt {
        /// These settings on top of `base`; `at` names the table in errors.
        pub fn apply(
            &self,
            ctx: &Ctx,
            at: &str,
            mut base: PromptSettings,
        ) -> SpecResult<PromptSettings> {
            let key = |k: &str| format!("{at}.{k}");
            if let Some(v) = positive(ctx, &self.length, &key("length"), false)? {
                base.length = v;
            }
            if let Some(init) = &self.init {
                base.init = Init::parse(init.get_ref()).ok_or_else(|| {
                    ctx.err(
                        init,
                        &key("init"),
                        format!(
                            "`{}`: use \"random\", \"vocab\" or \"from:<prompt file>\"",
                            init.get_ref()
                        ),
                    )
                })?;
            }
            if let Some(lr) = &self.learning_rate {
                let v = *lr.get_ref();
                if !(v.is_finite() && v > 0.0) {
                    return Err(ctx.err(
                        lr,
                        &key("learning_rate"),
                        format!("must be a positive number, not {v}"),
                    ));
                }
                base.learning_rate = v;
            }
            if let Some(p) = &self.dropout {
                let v = *p.get_ref();
                if !(0.0..1.0).contains(&v) {
                    return Err(ctx.err(
                        p,
                        &key("dropout"),
                        format!("must be a probability in [0, 1), not {v}"),
                    ));
                }
                base.dropout = v;
            }
            if let Some(eps) = &self.adam_eps {
                let v = *eps.get_ref();
                if !(v.is_finite() && v > 0.0) {
                    return Err(ctx.err(
                        eps,
                        &key("adam_eps"),
                        format!("must be a positive number, not {v}"),
                    ));
                }
                base.adam_eps = v;
            }
            let fields: [(&Option<Spanned<i64>>, &str, bool, &mut u32); 7] = [
                (&self.batch_size, "batch_size", false, &mut base.batch_size),
                (&self.grad_accum, "grad_accum", false, &mut base.grad_accum),
                (&self.max_steps, "max_steps", false, &mut base.max_steps),
                (&self.eval_every, "eval_every", false, &mut base.eval_every),
                (
                    &self.max_text_tokens,
                    "max_text_tokens",
                    false,
                    &mut base.max_text_tokens,
                ),
                (
                    &self.dev_examples,
                    "dev_examples",
                    true,
                    &mut base.dev_examples,
                ),
                (
                    &self.checkpoint_every,
                    "checkpoint_every",
                    true,
                    &mut base.checkpoint_every,
                ),
            ];
            for (value, name, allow_zero, slot) in fields {
                if let Some(v) = positive(ctx, value, &key(name), allow_zero)? {
                    *slot = v;
                }
            }
            Ok(base)
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Model {
        pub name: Spanned<String>,
        pub path: Option<Spanned<String>>,
        pub arch: Spanned<Arch>,
        pub head: Option<Spanned<Head>>,
        pub layout: Option<Spanned<Layout>>,
        pub prompt: Option<Prompt>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Task {
        pub name: Spanned<String>,
        pub data_dir: Option<Spanned<String>>,
        /// Encoder label words replacing the catalog's, one per label.
        pub verbalizer: Option<Spanned<Vec<String>>>,
        pub prompt: Option<Prompt>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Studies {
        pub train: Option<toml::Table>,
        pub cross_task: Option<CrossTask>,
        pub tpt: Option<Tpt>,
        #[serde(default)]
        pub cross_model: Vec<CrossModel>,
        pub indicators: Option<Indicators>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CrossTask {
        pub split: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Pairs {
        Named(String),
        Listed(Vec<(String, String)>),
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tpt {
        pub pairs: Option<Spanned<Pairs>>,
        pub top_k: Option<Spanned<i64>>,
        pub by: Option<Spanned<String>>,
        #[serde(default)]
        pub from_projected: bool,
        pub models: Option<Spanned<Vec<String>>>,
        #[serde(default)]
        pub stop_when_matched: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CrossModel {
        pub src: Spanned<String>,
        pub tgt: Spanned<String>,
        pub objectives: Spanned<Vec<Objective>>,
        pub train_tasks: Spanned<Vec<String>>,
        pub hidden: Option<Spanned<i64>>,
        pub learning_rate: Option<Spanned<f64>>,
        pub steps: Option<Spanned<i64>>,
        pub batch_size: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Indicators {
        pub list: Spanned<Vec<String>>,
        pub on_window: Option<Spanned<i64>>,
        pub on_sliding: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Synthetic {
        pub count: Spanned<i64>,
        pub fan_in: Option<Spanned<i64>>,
        pub duration_ms: Option<Spanned<(i64, i64)>>,
        pub fail_probability: Option<Spanned<f64>>,
        pub payload_bytes: Option<Spanned<i64>>,
        pub seed: Option<u64>,
    }

    impl Synthetic {
        pub fn resolve(self, ctx: &Ctx) -> SpecResult<SyntheticSpec> {
            let count = positive(ctx, &Some(self.count), "synthetic.count", false)?.unwrap_or(1);
            let fan_in = positive(ctx, &self.fan_in, "synthetic.fan_in", true)?.unwrap_or(0);
            let duration_ms = match &self.duration_ms {
                Some(d) => {
                    let (lo, hi) = *d.get_ref();
                    if lo < 0 || hi < lo || hi > i64::from(u32::MAX) {
                        return Err(ctx.err(
                            d,
                            "synthetic.duration_ms",
                            format!("[min, max] with 0 <= min <= max, not [{lo}, {hi}]"),
                        ));
                    }
                    (lo as u32, hi as u32)
                }
                None => (0, 0),
            };
            let fail_probability = match &self.fail_probability {
                Some(p) if !(0.0..=1.0).contains(p.get_ref()) => {
                    return Err(ctx.err(
                        p,
                        "synthetic.fail_probability",
                        format!("must lie in [0, 1], not {}", p.get_ref()),
                    ));
                }
                Some(p) => *p.get_ref(),
                None => 0.0,
            };
            let payload_bytes =
                positive(ctx, &self.payload_bytes, "synthetic.payload_bytes", true)?.unwrap_or(0);
            Ok(SyntheticSpec {
                count,
                fan_in,
                duration_ms,
                fail_probability,
                payload_bytes,
                seed: self.seed.unwrap_or(0),
            })
        }
    }

    impl Studies {
        pub fn resolve(
            self,
            ctx: &Ctx,
            models: &[ModelSpec],
            tasks: &BTreeSet<&str>,
        ) -> SpecResult<super::Studies> {
            let known_task = |name: &str, at: &dyn Fn(String) -> SpecError| -> SpecResult<()> {
                if tasks.contains(name) {
                    Ok(())
                } else {
                    Err(at(format!("`{name}` is not a task of this sweep")))
                }
            };
            let cross_task = self.cross_task.map(|c| CrossTaskStudy {
                split: c.split.map_or("test".to_string(), |s| s.into_inner()),
            });
            let indicators = match self.indicators {
                Some(i) => {
                    let mut list = Vec::new();
                    for name in i.list.get_ref() {
                        let Some(ind) = Indicator::parse(name) else {
                            let all: Vec<&str> = Indicator::ALL.iter().map(|i| i.name()).collect();
                            return Err(ctx.err(
                                &i.list,
                                "studies.indicators.list",
                                format!("unknown indicator `{name}`; use {}", all.join(", ")),
                            ));
                        };
                        if !list.contains(&ind) {
                            list.push(ind);
                        }
                    }
                    let on_window =
                        positive(ctx, &i.on_window, "studies.indicators.on_window", false)?
                            .unwrap_or(3);
                    Some(IndicatorStudy {
                        list,
                        on_window,
                        on_sliding: i.on_sliding.unwrap_or(false),
                    })
                }
                None => None,
            };
            let tpt = match self.tpt {
                Some(t) => {
                    let pairs = match t.pairs {
                        None => TptPairs::All,
                        Some(spanned) => {
                            match spanned.get_ref() {
                                Pairs::Named(n) => match n.as_str() {
                                    "all" => TptPairs::All,
                                    "within_type" => TptPairs::WithinType,
                                    other => {
                                        return Err(ctx.err(&spanned, "studies.tpt.pairs", format!("`{other}`: use \"all\", \"within_type\" or a list of [source, target] pairs")));
                                    }
                                },
                                Pairs::Listed(list) => {
                                    for (s, t) in list {
                                        for name in [s, t] {
                                            known_task(name, &|m| {
                                                ctx.err(&spanned, "studies.tpt.pairs", m)
                                            })?;
                                        }
                                        if s == t {
                                            return Err(ctx.err(&spanned, "studies.tpt.pairs", format!("[{s}, {t}]: a task cannot be its own TPT source")));
                                        }
                                    }
                                    TptPairs::Listed(list.clone())
                                }
                            }
                        }
                    };
                    let top_k = match (t.top_k, t.by) {
                        (None, None) => None,
                        (Some(k), Some(by)) => {
                            let k =
                                positive(ctx, &Some(k), "studies.tpt.top_k", false)?.unwrap_or(1);
                            let ind = Indicator::parse(by.get_ref()).ok_or_else(|| {
                                ctx.err(
                                    &by,
                                    "studies.tpt.by",
                                    format!("unknown indicator `{}`", by.get_ref()),
                                )
                            })?;
                            Some((k, ind))
                        }
                        (Some(k), None) => {
                            return Err(ctx.err(
                                &k,
                                "studies.tpt.top_k",
                                "top_k needs `by`, the indicator that ranks sources",
                            ));
                        }
                        (None, Some(by)) => {
                            return Err(ctx.err(&by, "studies.tpt.by", "`by` needs top_k"));
                        }
                    };
                    let models = match t.models {
                        Some(list) => {
                            for m in list.get_ref() {
                                if !models.iter().any(|x| &x.name == m) {
                                    return Err(ctx.err(
                                        &list,
                                        "studies.tpt.models",
                                        format!("unknown model `{m}`"),
                                    ));
                                }
                            }
                            Some(list.into_inner())
                        }
                        None => None,
                    };
                    Some(TptStudy {
                        pairs,
                        top_k,
                        from_projected: t.from_projected,
                        models,
                        stop_when_matched: t.stop_when_matched,
                    })
                }
                None => None,
            };
            let mut cross_model = Vec::new();
            for c in self.cross_model {
                for (m, key) in [
                    (&c.src, "studies.cross_model.src"),
                    (&c.tgt, "studies.cross_model.tgt"),
                ] {
                    if !models.iter().any(|x| &x.name == m.get_ref()) {
                        return Err(ctx.err(m, key, format!("unknown model `{}`", m.get_ref())));
                    }
                }
                if c.src.get_ref() == c.tgt.get_ref() {
                    return Err(ctx.err(
                        &c.tgt,
                        "studies.cross_model.tgt",
                        "source and target model are the same",
                    ));
                }
                if c.objectives.get_ref().is_empty() {
                    return Err(ctx.err(
                        &c.objectives,
                        "studies.cross_model.objectives",
                        "list at least one objective",
                    ));
                }
                if c.train_tasks.get_ref().is_empty() {
                    return Err(ctx.err(
                        &c.train_tasks,
                        "studies.cross_model.train_tasks",
                        "list at least one training task",
                    ));
                }
                for t in c.train_tasks.get_ref() {
                    known_task(t, &|m| {
                        ctx.err(&c.train_tasks, "studies.cross_model.train_tasks", m)
                    })?;
                }
                if cross_model.iter().any(|p: &CrossModelPair| {
                    &p.src == c.src.get_ref() && &p.tgt == c.tgt.get_ref()
                }) {
                    return Err(ctx.err(
                        &c.src,
                        "studies.cross_model",
                        format!(
                            "the pair {} -> {} is listed twice",
                            c.src.get_ref(),
                            c.tgt.get_ref()
                        ),
                    ));
                }
                let learning_rate = match &c.learning_rate {
                    Some(lr) if !(lr.get_ref().is_finite() && *lr.get_ref() > 0.0) => {
                        return Err(ctx.err(
                            lr,
                            "studies.cross_model.learning_rate",
                            format!("must be a positive number, not {}", lr.get_ref()),
                        ));
                    }
                    Some(lr) => *lr.get_ref(),
                    None => 1e-4,
                };
                let mut objectives = c.objectives.get_ref().clone();
                objectives.sort();
                objectives.dedup();
                cross_model.push(CrossModelPair {
                    src: c.src.get_ref().clone(),
                    tgt: c.tgt.get_ref().clone(),
                    objectives,
                    train_tasks: c.train_tasks.get_ref().clone(),
                    settings: ProjectorSettings {
                        hidden: positive(ctx, &c.hidden, "studies.cross_model.hidden", false)?
                            .unwrap_or(768),
                        learning_rate,
                        steps: positive(ctx, &c.steps, "studies.cross_model.steps", false)?
                            .unwrap_or(1000),
                        batch_size: positive(
                            ctx,
                            &c.batch_size,
                            "studies.cross_model.batch_size",
                            false,
                        )?
                        .unwrap_or(16),
                    },
                });
            }
            if tpt.as_ref().is_some_and(|t| t.from_projected) && cross_model.is_empty() {
                return Err(SpecError::at_key(
                    ctx.file,
                    ctx.source,
                    "from_projected",
                    "TPT from projected prompts needs a [[studies.cross_model]] pair",
                ));
            }
            let train = self.train.is_some()
                || cross_task.is_some()
                || tpt.is_some()
                || !cross_model.is_empty()
                || indicators.is_some();
            Ok(super::Studies {
                train,
                cross_task,
                tpt,
                cross_model,
                indicators,
            })
        }
    }
}
