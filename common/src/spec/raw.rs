//! The serde side of the sweep file: every checked value keeps its span, so that a check
//! can name the line at fault.

use serde::Deserialize;
use toml::Spanned;

use super::{Arch, Head, Layout, Objective};

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
    /// Catalog folder relative to the sweep file; without it, `tasks/` beside the file or the
    /// built-in catalog.
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
    pub official_padding: Option<bool>,
    pub seeds: Option<Spanned<Vec<u64>>>,
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
    pub seeds: Option<Spanned<Vec<u64>>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<i64>>,
    pub max_steps: Option<Spanned<i64>>,
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
