//! The Parquet tables of docs/results.md ("Tables"): one row type and one explicit Arrow schema per table,
//! declared once here. Each `tables!` entry names every column once (its field, Rust type,
//! Arrow kind and doc; the column is named after the field, nullable when the field is an
//! `Option`), and the row struct, its schema and both conversions are generated from that one
//! list, so the schema, the written columns and the read columns cannot disagree. Reading looks
//! each column up by name and checks its type exactly.
//!
//! Extra columns beyond the key columns (docs/results.md, "Tables"): `evals.src_type`/`tgt_type` (the task type, from the
//! catalog, so the report can group tasks without the catalog at hand), `indicators.layers` and
//! `correlations.layers` (null for prompt indicators, `all` or `first-last` for ON), `tpt.seed`
//! and `tpt.tpt_best` (the best score TPT reached, kept when it never reaches vanilla's best),
//! `evals.objective` (the projector objective of cross-model evals), the uncertainty columns of
//! `correlations` (`rho_lo`, `rho_hi`, `n_boot`, `p_value`, `n_perm`, `n_seeds`), and the
//! derived `transfer_relative` (with its spread over seeds) and `cross_model` tables.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};

use crate::columns::{self, kind};
use crate::error::Result;

/// A value that can be part of a dedup key (strings, integers, options of them), written
/// exactly and delimiting itself, so that two keys' bytes are equal only when their fields are.
pub trait KeyPart {
    fn put(&self, out: &mut Vec<u8>);
    /// As the first field of a key, alone in its bytes: a string needs no length there, and a
    /// job id stays one that the sweep's graph can look up.
    fn put_head(&self, out: &mut Vec<u8>) {
        self.put(out)
    }
}
impl KeyPart for String {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        out.extend_from_slice(self.as_bytes());
    }
    fn put_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}
impl KeyPart for i64 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
impl<T: KeyPart> KeyPart for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
}

/// One table of docs/results.md ("Tables").
pub trait Table: Sized + Clone {
    /// Folder name under `results/<sweep>/`.
    const NAME: &'static str;
    fn schema() -> SchemaRef;
    /// The columns that identify a row (a second row with the same key is a replay and is
    /// skipped): the first into `head`, the others into `rest`, exactly ([`KeyPart`]).
    fn key_into(&self, head: &mut Vec<u8>, rest: &mut Vec<u8>);
    fn to_batch(rows: &[Self]) -> Result<RecordBatch>;
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>>;
}

/// Declares the tables: for each, the row struct, its [`Table`] impl (`NAME`, `schema`, `key`
/// over the listed fields in order, `to_batch`, `from_batch`) and the schema's column order,
/// which is the fields' order. `pub field: Type as Kind` stores the field in a column of
/// `columns::kind::Kind`; a Rust type that kind cannot hold does not compile.
macro_rules! tables {
    ($(
        $(#[doc = $doc:literal])*
        pub struct $row:ident in $name:literal, key($head:ident $(, $key:ident)*) {
            $(
                $(#[doc = $field_doc:literal])*
                pub $field:ident: $ty:ty as $kind:ident,
            )+
        }
    )+) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $row {
            $(
                $(#[doc = $field_doc])*
                pub $field: $ty,
            )+
        }

        impl Table for $row {
            const NAME: &'static str = $name;

            fn schema() -> SchemaRef {
                static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
                    Arc::new(Schema::new(vec![
                        $(columns::field::<kind::$kind, $ty>(stringify!($field)),)+
                    ]))
                });
                SCHEMA.clone()
            }

            fn key_into(&self, head: &mut Vec<u8>, rest: &mut Vec<u8>) {
                self.$head.put_head(head);
                $(self.$key.put(rest);)*
            }

            fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
                // The same field list, in the same order, as `schema()`.
                let arrays = vec![
                    $(columns::write::<kind::$kind, $ty>(rows.iter().map(|r| &r.$field)),)+
                ];
                Ok(RecordBatch::try_new(Self::schema(), arrays)?)
            }

            fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
                $(
                    let mut $field = columns::read::<kind::$kind, $ty>(
                        batch,
                        $name,
                        stringify!($field),
                    )?
                    .into_iter();
                )+
                // Every column of a batch has the batch's length: one row per index, no more.
                Ok(std::iter::from_fn(|| Some(Self { $($field: $field.next()?,)+ })).collect())
            }
        }
    )+};
}

tables! {
    /// One attempt of one job.
    pub struct JobRow in "jobs", key(job_id, attempt) {
        pub job_id: String as Utf8,
        pub kind: String as Utf8,
        pub model: String as Utf8,
        pub task: Option<String> as Utf8,
        pub src_task: Option<String> as Utf8,
        pub src_model: Option<String> as Utf8,
        /// The projector objective of projector, cross_model and TPT-model jobs.
        pub objective: Option<String> as Utf8,
        pub seed: Option<i64> as Int64,
        pub attempt: i64 as Int64,
        pub worker: Option<String> as Utf8,
        /// done, failed, lost, dead.
        pub status: String as Utf8,
        pub error: Option<String> as Utf8,
        /// Milliseconds since the Unix epoch, UTC.
        pub started_at: Option<i64> as TimestampMsUtc,
        pub finished_at: Option<i64> as TimestampMsUtc,
        pub duration_s: Option<f64> as Float64,
        /// What produced the attempt, as its worker reported it; null for failed attempts and
        /// workers older than these columns. The promptgrid version (package version).
        pub promptgrid_version: Option<String> as Utf8,
        /// The git commit the worker was built from, or `unknown`.
        pub git_commit: Option<String> as Utf8,
        /// The libtorch version the worker links (`2.13.0+cpu`), or `unknown`.
        pub torch_version: Option<String> as Utf8,
        /// `cpu` or `cuda:N`.
        pub device: Option<String> as Utf8,
        /// `fp32` or `bf16`: the precision of the models' matrix products.
        pub precision: Option<String> as Utf8,
        /// libtorch's intra-op threads.
        pub threads: Option<i64> as Int64,
    }

    /// One logged value of a training or evaluation curve.
    pub struct MetricRow in "metrics", key(job_id, attempt, step, name) {
        pub job_id: String as Utf8,
        pub attempt: i64 as Int64,
        pub step: i64 as Int64,
        /// loss, lr, dev_score, ...
        pub name: String as Utf8,
        pub value: f64 as Float64,
        /// Seconds since the attempt started.
        pub wall_s: Option<f64> as Float64,
    }

    /// One final score: a prompt (of `src_task`, on `src_model`) evaluated on `tgt_task`.
    pub struct EvalRow in "evals", key(job_id, tgt_task, split, metric) {
        pub job_id: String as Utf8,
        pub kind: String as Utf8,
        pub model: String as Utf8,
        /// The prompt's task; `random` for the random-prompt baseline.
        pub src_task: String as Utf8,
        pub tgt_task: String as Utf8,
        /// Set for cross-model jobs (the prompt's model); null when it is `model`.
        pub src_model: Option<String> as Utf8,
        pub split: String as Utf8,
        pub metric: String as Utf8,
        pub value: f64 as Float64,
        /// Examples scored.
        pub n: i64 as Int64,
        /// Task types from the catalog (sentiment, nli, ...); null when unknown.
        pub src_type: Option<String> as Utf8,
        pub tgt_type: Option<String> as Utf8,
        /// The projector's objective (`distance`, `task`) for cross-model evals; null otherwise.
        pub objective: Option<String> as Utf8,
        /// Cross-model evals: whether the task was left out of the projector's training tasks.
        pub held_out: Option<bool> as Boolean,
    }

    /// One indicator value for one ordered prompt pair.
    pub struct IndicatorRow in "indicators", key(model, task_a, task_b, indicator, layers) {
        pub model: String as Utf8,
        pub task_a: String as Utf8,
        pub task_b: String as Utf8,
        pub indicator: String as Utf8,
        /// Null for prompt indicators; `all` or `first-last` for ON.
        pub layers: Option<String> as Utf8,
        /// Null when undefined (an all-zero activation mask), never a made-up number.
        pub value: Option<f64> as Float64,
    }

    /// Spearman's ρ of one indicator with relative transfer, for one target, `mean` or `global`.
    pub struct CorrelationRow in "correlations", key(model, indicator, layers, target) {
        pub model: String as Utf8,
        pub indicator: String as Utf8,
        pub layers: Option<String> as Utf8,
        pub target: String as Utf8,
        /// Null when undefined (too few pairs, or a constant side).
        pub spearman: Option<f64> as Float64,
        pub n: i64 as Int64,
        /// 95% percentile bootstrap interval of `spearman` (pairs resampled, and seeds where
        /// there are several); null where ρ is undefined.
        pub rho_lo: Option<f64> as Float64,
        pub rho_hi: Option<f64> as Float64,
        /// Bootstrap replicates behind the interval: those of the drawn ones where ρ was defined.
        pub n_boot: i64 as Int64,
        /// Two-sided permutation p-value, (k + 1) / (n_perm + 1); null where ρ is undefined.
        pub p_value: Option<f64> as Float64,
        /// Permutations drawn.
        pub n_perm: i64 as Int64,
        /// Seeds of relative transfer behind `spearman` (averaged) and resampled by the bootstrap.
        pub n_seeds: i64 as Int64,
    }

    /// Convergence of transfer-as-initialization against vanilla prompt tuning, for one pair.
    pub struct TptRow in "tpt", key(model, src, tgt, src_model, objective, seed) {
        pub model: String as Utf8,
        pub src: String as Utf8,
        pub tgt: String as Utf8,
        /// TPT-model: the model whose prompt of `src` was projected; null for TPT-task.
        pub src_model: Option<String> as Utf8,
        /// TPT-model: the projector's objective.
        pub objective: Option<String> as Utf8,
        pub seed: Option<i64> as Int64,
        /// Vanilla's best dev score.
        pub vanilla_best: f64 as Float64,
        /// First step at which vanilla reached its best.
        pub steps_vanilla: i64 as Int64,
        /// First step at which TPT reached `vanilla_best`; null if it never did.
        pub steps_tpt: Option<i64> as Int64,
        /// steps_vanilla / steps_tpt; null if TPT never reached `vanilla_best`.
        pub speedup: Option<f64> as Float64,
        /// TPT's own best dev score (kept when it never reaches vanilla's).
        pub tpt_best: f64 as Float64,
    }

    /// One cell of the raw and relative zero-shot transfer matrix (derived by the analysis).
    pub struct TransferRelativeRow in "transfer_relative", key(model, src_task, tgt_task, metric) {
        pub model: String as Utf8,
        pub src_task: String as Utf8,
        pub tgt_task: String as Utf8,
        pub metric: String as Utf8,
        /// score(s→t), the mean over `n_seeds` seeds.
        pub raw: f64 as Float64,
        /// score(t→t), the mean over the same seeds.
        pub own: f64 as Float64,
        /// 100 · raw / own per seed, then the mean over seeds (one seed: 100 · raw / own).
        pub relative: f64 as Float64,
        pub src_type: Option<String> as Utf8,
        pub tgt_type: Option<String> as Utf8,
        /// The split the target is scored on (its own test split, or dev where it has none).
        pub split: Option<String> as Utf8,
        /// Seeds that scored this cell.
        pub n_seeds: i64 as Int64,
        /// Sample standard deviations (n − 1) over the seeds; null with one seed.
        pub raw_sd: Option<f64> as Float64,
        pub own_sd: Option<f64> as Float64,
        pub relative_sd: Option<f64> as Float64,
        /// relative(s→t) − relative(random→t), paired by seed, mean over the seeds with both;
        /// null for the random source or where the random prompt was not scored.
        pub random_margin: Option<f64> as Float64,
        /// Its sample standard deviation over those seeds.
        pub random_margin_sd: Option<f64> as Float64,
        /// random_margin > 2 · random_margin_sd: beats the random prompt beyond the seed
        /// spread; null with fewer than two paired seeds.
        pub beats_random: Option<bool> as Boolean,
    }

    /// A projected prompt's score on the target model, relative to the target model's own prompt.
    pub struct CrossModelRow in "cross_model",
        key(model, src_model, objective, src_task, tgt_task, metric)
    {
        /// The target model.
        pub model: String as Utf8,
        pub src_model: String as Utf8,
        pub objective: Option<String> as Utf8,
        pub src_task: String as Utf8,
        pub tgt_task: String as Utf8,
        /// Whether the task was left out of the projector's training tasks (zero-shot projection).
        pub held_out: Option<bool> as Boolean,
        pub metric: String as Utf8,
        /// Score of the projected prompt.
        pub value: f64 as Float64,
        /// Score of the target model's own prompt on `tgt_task`.
        pub own: f64 as Float64,
        /// 100 · value / own.
        pub relative: f64 as Float64,
    }
}
