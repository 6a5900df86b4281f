//! The public types of a validated sweep: models, tasks, prompt settings and studies, as the
//! job graph, the coordinator and the workers use them (and as `manifest/sweep.json` carries
//! them to workers).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::choices::{Head, Init, Layout};
use crate::catalog::{CatalogSource, TaskDef, TaskKind};

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

    /// The version of what this family's jobs compute beyond their settings, for the families
    /// whose definitions changed since promptgrid first ran them. It enters the id of every job
    /// that names a model of the family, so a sweep planned again recomputes the results of
    /// the old definition instead of reusing them. Raise it with every change that moves a
    /// result; the list is the history.
    ///
    /// * `t5@2`: random init Normal(0, 1) (was Normal(0, 0.02)), classification targets cut to
    ///   the task's official `target_len`, dropout honoured in training.
    pub fn definitions(self) -> Option<&'static str> {
        match self {
            Arch::T5 | Arch::T5V1_1 => Some("t5@2"),
            Arch::Bert | Arch::Roberta => None,
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
    /// T5 only: train on the official batches, every input padded to `max_text_tokens + 2`
    /// tokens with the pads attended (model/PromptT5.py:91 passes no `attention_mask`). Left
    /// out of the wire form at its default, off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub official_padding: bool,
}

impl PromptSettings {
    /// With `official_padding`, the official T5 formatters' input width: `max_len + 2` text
    /// tokens, the prompt apart (MNLIPromptT5Formatter.py:39).
    pub fn official_width(&self) -> Option<usize> {
        self.official_padding
            .then_some(self.max_text_tokens as usize + 2)
    }

    /// Every setting as JSON, including those the wire form leaves out at their defaults.
    pub fn resolved(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut v = serde_json::to_value(self)?;
        v["dropout"] = self.dropout.into();
        v["adam_eps"] = self.adam_eps.into();
        v["official_padding"] = self.official_padding.into();
        Ok(v)
    }
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
            official_padding: false,
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
    /// This model's own seeds, when they differ from the sweep's (`Sweep::seeds_of`). Absent
    /// from a stored sweep that has none, so such a sweep reads and resumes as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
}

impl ModelSpec {
    /// The seeds this model runs in a sweep whose own list is `sweep_seeds`
    /// ([`Sweep::seeds_of`], and the sweep's validation before the `Sweep` exists).
    pub fn seeds_or<'a>(&'a self, sweep_seeds: &'a [u64]) -> &'a [u64] {
        self.seeds.as_deref().unwrap_or(sweep_seeds)
    }
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
    /// The seeds TPT runs at (of those its model has); all when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// What TPT runs differently from its target's vanilla run.
    #[serde(default, skip_serializing_if = "TptSettings::is_empty")]
    pub settings: TptSettings,
}

/// Settings of TPT runs that replace their target's vanilla settings: the official
/// `<Target>use<Source>PromptRoberta*.config` train at lr 1e-3 on both backbones, with their
/// own epochs. Absent ones keep the vanilla value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TptSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
}

impl TptSettings {
    pub fn is_empty(&self) -> bool {
        *self == TptSettings::default()
    }

    /// `vanilla` with these settings in place.
    pub fn apply(&self, vanilla: &PromptSettings) -> PromptSettings {
        PromptSettings {
            learning_rate: self.learning_rate.unwrap_or(vanilla.learning_rate),
            batch_size: self.batch_size.unwrap_or(vanilla.batch_size),
            max_steps: self.max_steps.unwrap_or(vanilla.max_steps),
            ..vanilla.clone()
        }
    }
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

/// Projector training settings (docs/design.md, "Cross-model projector").
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

/// Transferability indicators (docs/design.md, "Transferability indicators").
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

    pub(super) fn parse(name: &str) -> Option<Indicator> {
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
    /// The task catalog the tasks were resolved from (see the module docs). A `sweep.json`
    /// written before this field existed reads as the built-in catalog.
    #[serde(default)]
    pub catalog: CatalogSource,
    pub seeds: Vec<u64>,
    pub models: Vec<ModelSpec>,
    pub tasks: Vec<TaskSpec>,
    /// Resolved settings per model, then task.
    pub settings: BTreeMap<String, BTreeMap<String, PromptSettings>>,
    pub studies: Studies,
    pub synthetic: Option<SyntheticSpec>,
}

impl Sweep {
    /// A sweep of synthetic jobs only, without a sweep file (tests and benchmarks).
    pub fn synthetic_only(name: &str, spec: SyntheticSpec) -> Sweep {
        Sweep {
            name: name.to_string(),
            description: None,
            file: PathBuf::from(format!("{name}.toml")),
            catalog: Default::default(),
            seeds: vec![],
            models: vec![],
            tasks: vec![],
            settings: Default::default(),
            studies: Default::default(),
            synthetic: Some(spec),
        }
    }

    /// The seeds a model runs: its own list, else the sweep's.
    pub fn seeds_of<'a>(&'a self, model: &'a ModelSpec) -> &'a [u64] {
        model.seeds_or(&self.seeds)
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
}
