//! The Parquet tables of DESIGN.md §5: one row type and one explicit Arrow schema per table,
//! declared once here, next to the conversions that write and read them.
//!
//! Extra columns beyond DESIGN.md §5: `evals.src_type`/`tgt_type` (the task type, from the
//! catalog, so the report can group tasks without the catalog at hand), `indicators.layers` and
//! `correlations.layers` (null for prompt indicators, `all` or `first-last` for ON), `tpt.seed`
//! and `tpt.tpt_best` (the best score TPT reached, kept when it never reaches vanilla's best),
//! `evals.objective` (the projector objective of cross-model evals), and the derived
//! `transfer_relative` and `cross_model` tables.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::columns::*;
use crate::error::Result;

/// A 128-bit digest of a row's dedup key: 16 bytes per committed row keeps the writer's key set
/// small for millions of metric rows; a collision is ~n²/2¹²⁹, i.e. never.
pub type RowKey = u128;

/// Hashes the key fields twice with different salts; `DefaultHasher::new()` is deterministic.
pub fn row_key(fields: &[&dyn KeyPart]) -> RowKey {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        for f in fields {
            f.feed(&mut h);
        }
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

/// A value that can be part of a dedup key (strings, integers, options of them).
pub trait KeyPart {
    fn feed(&self, h: &mut DefaultHasher);
}
impl KeyPart for String {
    fn feed(&self, h: &mut DefaultHasher) {
        self.hash(h)
    }
}
impl KeyPart for i64 {
    fn feed(&self, h: &mut DefaultHasher) {
        self.hash(h)
    }
}
impl<T: Hash> KeyPart for Option<T> {
    fn feed(&self, h: &mut DefaultHasher) {
        self.hash(h)
    }
}

/// One table of DESIGN.md §5.
pub trait Table: Sized + Clone {
    /// Folder name under `results/<sweep>/`.
    const NAME: &'static str;
    fn schema() -> SchemaRef;
    /// The columns that identify a row: a second row with the same key is a replay and is skipped.
    fn key(&self) -> RowKey;
    fn to_batch(rows: &[Self]) -> Result<RecordBatch>;
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>>;
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn boolf(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Boolean, nullable)
}
fn i64f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}
fn f64f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}
fn ts(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    )
}

fn batch(schema: SchemaRef, cols: Vec<arrow::array::ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// One attempt of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub job_id: String,
    pub kind: String,
    pub model: String,
    pub task: Option<String>,
    pub src_task: Option<String>,
    pub src_model: Option<String>,
    /// The projector objective of projector, cross_model and TPT-model jobs.
    pub objective: Option<String>,
    pub seed: Option<i64>,
    pub attempt: i64,
    pub worker: Option<String>,
    /// done, failed, lost, dead.
    pub status: String,
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch, UTC.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_s: Option<f64>,
}

static JOBS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("job_id", false),
        utf8("kind", false),
        utf8("model", false),
        utf8("task", true),
        utf8("src_task", true),
        utf8("src_model", true),
        utf8("objective", true),
        i64f("seed", true),
        i64f("attempt", false),
        utf8("worker", true),
        utf8("status", false),
        utf8("error", true),
        ts("started_at"),
        ts("finished_at"),
        f64f("duration_s", true),
    ]))
});

impl Table for JobRow {
    const NAME: &'static str = "jobs";
    fn schema() -> SchemaRef {
        JOBS.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[&self.job_id, &self.attempt])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.job_id.as_str())),
                str_col(r.iter().map(|x| x.kind.as_str())),
                str_col(r.iter().map(|x| x.model.as_str())),
                opt_str_col(r.iter().map(|x| x.task.as_deref())),
                opt_str_col(r.iter().map(|x| x.src_task.as_deref())),
                opt_str_col(r.iter().map(|x| x.src_model.as_deref())),
                opt_str_col(r.iter().map(|x| x.objective.as_deref())),
                opt_int_col(r.iter().map(|x| x.seed)),
                int_col(r.iter().map(|x| x.attempt)),
                opt_str_col(r.iter().map(|x| x.worker.as_deref())),
                str_col(r.iter().map(|x| x.status.as_str())),
                opt_str_col(r.iter().map(|x| x.error.as_deref())),
                opt_time_col(r.iter().map(|x| x.started_at)),
                opt_time_col(r.iter().map(|x| x.finished_at)),
                opt_float_col(r.iter().map(|x| x.duration_s)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (job_id, kind, model) = (
            strings(b, t, "job_id")?,
            strings(b, t, "kind")?,
            strings(b, t, "model")?,
        );
        let (task, src_task, src_model) = (
            opt_strings(b, t, "task")?,
            opt_strings(b, t, "src_task")?,
            opt_strings(b, t, "src_model")?,
        );
        let objective = opt_strings(b, t, "objective")?;
        let (seed, attempt, worker) = (
            opt_ints(b, t, "seed")?,
            ints(b, t, "attempt")?,
            opt_strings(b, t, "worker")?,
        );
        let (status, error) = (strings(b, t, "status")?, opt_strings(b, t, "error")?);
        let (started_at, finished_at) = (
            opt_times(b, t, "started_at")?,
            opt_times(b, t, "finished_at")?,
        );
        let duration_s = opt_floats(b, t, "duration_s")?;
        Ok((0..b.num_rows())
            .map(|i| JobRow {
                job_id: job_id[i].clone(),
                kind: kind[i].clone(),
                model: model[i].clone(),
                task: task[i].clone(),
                src_task: src_task[i].clone(),
                src_model: src_model[i].clone(),
                objective: objective[i].clone(),
                seed: seed[i],
                attempt: attempt[i],
                worker: worker[i].clone(),
                status: status[i].clone(),
                error: error[i].clone(),
                started_at: started_at[i],
                finished_at: finished_at[i],
                duration_s: duration_s[i],
            })
            .collect())
    }
}

/// One logged value of a training or evaluation curve.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub job_id: String,
    pub attempt: i64,
    pub step: i64,
    /// loss, lr, dev_score, ...
    pub name: String,
    pub value: f64,
    /// Seconds since the attempt started.
    pub wall_s: Option<f64>,
}

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("job_id", false),
        i64f("attempt", false),
        i64f("step", false),
        utf8("name", false),
        f64f("value", false),
        f64f("wall_s", true),
    ]))
});

impl Table for MetricRow {
    const NAME: &'static str = "metrics";
    fn schema() -> SchemaRef {
        METRICS.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[&self.job_id, &self.attempt, &self.step, &self.name])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.job_id.as_str())),
                int_col(r.iter().map(|x| x.attempt)),
                int_col(r.iter().map(|x| x.step)),
                str_col(r.iter().map(|x| x.name.as_str())),
                float_col(r.iter().map(|x| x.value)),
                opt_float_col(r.iter().map(|x| x.wall_s)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (job_id, attempt, step) = (
            strings(b, t, "job_id")?,
            ints(b, t, "attempt")?,
            ints(b, t, "step")?,
        );
        let (name, value, wall_s) = (
            strings(b, t, "name")?,
            floats(b, t, "value")?,
            opt_floats(b, t, "wall_s")?,
        );
        Ok((0..b.num_rows())
            .map(|i| MetricRow {
                job_id: job_id[i].clone(),
                attempt: attempt[i],
                step: step[i],
                name: name[i].clone(),
                value: value[i],
                wall_s: wall_s[i],
            })
            .collect())
    }
}

/// One final score: a prompt (of `src_task`, on `src_model`) evaluated on `tgt_task`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub job_id: String,
    pub kind: String,
    pub model: String,
    /// The prompt's task; `random` for the random-prompt baseline.
    pub src_task: String,
    pub tgt_task: String,
    /// Set for cross-model jobs (the prompt's model); null when it is `model`.
    pub src_model: Option<String>,
    pub split: String,
    pub metric: String,
    pub value: f64,
    /// Examples scored.
    pub n: i64,
    /// Task types from the catalog (sentiment, nli, ...); null when unknown.
    pub src_type: Option<String>,
    pub tgt_type: Option<String>,
    /// The projector's objective (`distance`, `task`) for cross-model evals; null otherwise.
    pub objective: Option<String>,
    /// Cross-model evals: whether the task was left out of the projector's training tasks.
    pub held_out: Option<bool>,
}

static EVALS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("job_id", false),
        utf8("kind", false),
        utf8("model", false),
        utf8("src_task", false),
        utf8("tgt_task", false),
        utf8("src_model", true),
        utf8("split", false),
        utf8("metric", false),
        f64f("value", false),
        i64f("n", false),
        utf8("src_type", true),
        utf8("tgt_type", true),
        utf8("objective", true),
        boolf("held_out", true),
    ]))
});

impl Table for EvalRow {
    const NAME: &'static str = "evals";
    fn schema() -> SchemaRef {
        EVALS.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[&self.job_id, &self.tgt_task, &self.split, &self.metric])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.job_id.as_str())),
                str_col(r.iter().map(|x| x.kind.as_str())),
                str_col(r.iter().map(|x| x.model.as_str())),
                str_col(r.iter().map(|x| x.src_task.as_str())),
                str_col(r.iter().map(|x| x.tgt_task.as_str())),
                opt_str_col(r.iter().map(|x| x.src_model.as_deref())),
                str_col(r.iter().map(|x| x.split.as_str())),
                str_col(r.iter().map(|x| x.metric.as_str())),
                float_col(r.iter().map(|x| x.value)),
                int_col(r.iter().map(|x| x.n)),
                opt_str_col(r.iter().map(|x| x.src_type.as_deref())),
                opt_str_col(r.iter().map(|x| x.tgt_type.as_deref())),
                opt_str_col(r.iter().map(|x| x.objective.as_deref())),
                opt_bool_col(r.iter().map(|x| x.held_out)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (objective, held_out) = (
            opt_strings(b, t, "objective")?,
            opt_bools(b, t, "held_out")?,
        );
        let (job_id, kind, model) = (
            strings(b, t, "job_id")?,
            strings(b, t, "kind")?,
            strings(b, t, "model")?,
        );
        let (src_task, tgt_task, src_model) = (
            strings(b, t, "src_task")?,
            strings(b, t, "tgt_task")?,
            opt_strings(b, t, "src_model")?,
        );
        let (split, metric, value, n) = (
            strings(b, t, "split")?,
            strings(b, t, "metric")?,
            floats(b, t, "value")?,
            ints(b, t, "n")?,
        );
        let (src_type, tgt_type) = (
            opt_strings(b, t, "src_type")?,
            opt_strings(b, t, "tgt_type")?,
        );
        Ok((0..b.num_rows())
            .map(|i| EvalRow {
                job_id: job_id[i].clone(),
                kind: kind[i].clone(),
                model: model[i].clone(),
                src_task: src_task[i].clone(),
                tgt_task: tgt_task[i].clone(),
                src_model: src_model[i].clone(),
                split: split[i].clone(),
                metric: metric[i].clone(),
                value: value[i],
                n: n[i],
                src_type: src_type[i].clone(),
                tgt_type: tgt_type[i].clone(),
                objective: objective[i].clone(),
                held_out: held_out[i],
            })
            .collect())
    }
}

/// One indicator value for one ordered prompt pair.
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorRow {
    pub model: String,
    pub task_a: String,
    pub task_b: String,
    pub indicator: String,
    /// Null for prompt indicators; `all` or `first-last` for ON.
    pub layers: Option<String>,
    /// Null when undefined (an all-zero activation mask), never a made-up number.
    pub value: Option<f64>,
}

static INDICATORS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("model", false),
        utf8("task_a", false),
        utf8("task_b", false),
        utf8("indicator", false),
        utf8("layers", true),
        f64f("value", true),
    ]))
});

impl Table for IndicatorRow {
    const NAME: &'static str = "indicators";
    fn schema() -> SchemaRef {
        INDICATORS.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[
            &self.model,
            &self.task_a,
            &self.task_b,
            &self.indicator,
            &self.layers,
        ])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.model.as_str())),
                str_col(r.iter().map(|x| x.task_a.as_str())),
                str_col(r.iter().map(|x| x.task_b.as_str())),
                str_col(r.iter().map(|x| x.indicator.as_str())),
                opt_str_col(r.iter().map(|x| x.layers.as_deref())),
                opt_float_col(r.iter().map(|x| x.value)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (model, task_a, task_b) = (
            strings(b, t, "model")?,
            strings(b, t, "task_a")?,
            strings(b, t, "task_b")?,
        );
        let (indicator, layers, value) = (
            strings(b, t, "indicator")?,
            opt_strings(b, t, "layers")?,
            opt_floats(b, t, "value")?,
        );
        Ok((0..b.num_rows())
            .map(|i| IndicatorRow {
                model: model[i].clone(),
                task_a: task_a[i].clone(),
                task_b: task_b[i].clone(),
                indicator: indicator[i].clone(),
                layers: layers[i].clone(),
                value: value[i],
            })
            .collect())
    }
}

/// Spearman's ρ of one indicator with relative transfer, for one target, `mean` or `global`.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationRow {
    pub model: String,
    pub indicator: String,
    pub layers: Option<String>,
    pub target: String,
    /// Null when undefined (too few pairs, or a constant side).
    pub spearman: Option<f64>,
    pub n: i64,
}

static CORRELATIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("model", false),
        utf8("indicator", false),
        utf8("layers", true),
        utf8("target", false),
        f64f("spearman", true),
        i64f("n", false),
    ]))
});

impl Table for CorrelationRow {
    const NAME: &'static str = "correlations";
    fn schema() -> SchemaRef {
        CORRELATIONS.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[&self.model, &self.indicator, &self.layers, &self.target])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.model.as_str())),
                str_col(r.iter().map(|x| x.indicator.as_str())),
                opt_str_col(r.iter().map(|x| x.layers.as_deref())),
                str_col(r.iter().map(|x| x.target.as_str())),
                opt_float_col(r.iter().map(|x| x.spearman)),
                int_col(r.iter().map(|x| x.n)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (model, indicator, layers) = (
            strings(b, t, "model")?,
            strings(b, t, "indicator")?,
            opt_strings(b, t, "layers")?,
        );
        let (target, spearman, n) = (
            strings(b, t, "target")?,
            opt_floats(b, t, "spearman")?,
            ints(b, t, "n")?,
        );
        Ok((0..b.num_rows())
            .map(|i| CorrelationRow {
                model: model[i].clone(),
                indicator: indicator[i].clone(),
                layers: layers[i].clone(),
                target: target[i].clone(),
                spearman: spearman[i],
                n: n[i],
            })
            .collect())
    }
}

/// Convergence of transfer-as-initialization against vanilla prompt tuning, for one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct TptRow {
    pub model: String,
    pub src: String,
    pub tgt: String,
    /// TPT-model: the model whose prompt of `src` was projected; null for TPT-task.
    pub src_model: Option<String>,
    /// TPT-model: the projector's objective.
    pub objective: Option<String>,
    pub seed: Option<i64>,
    /// Vanilla's best dev score.
    pub vanilla_best: f64,
    /// First step at which vanilla reached its best.
    pub steps_vanilla: i64,
    /// First step at which TPT reached `vanilla_best`; null if it never did.
    pub steps_tpt: Option<i64>,
    /// steps_vanilla / steps_tpt; null if TPT never reached `vanilla_best`.
    pub speedup: Option<f64>,
    /// TPT's own best dev score (kept when it never reaches vanilla's).
    pub tpt_best: f64,
}

static TPT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("model", false),
        utf8("src", false),
        utf8("tgt", false),
        utf8("src_model", true),
        utf8("objective", true),
        i64f("seed", true),
        f64f("vanilla_best", false),
        i64f("steps_vanilla", false),
        i64f("steps_tpt", true),
        f64f("speedup", true),
        f64f("tpt_best", false),
    ]))
});

impl Table for TptRow {
    const NAME: &'static str = "tpt";
    fn schema() -> SchemaRef {
        TPT.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[
            &self.model,
            &self.src,
            &self.tgt,
            &self.src_model,
            &self.objective,
            &self.seed,
        ])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.model.as_str())),
                str_col(r.iter().map(|x| x.src.as_str())),
                str_col(r.iter().map(|x| x.tgt.as_str())),
                opt_str_col(r.iter().map(|x| x.src_model.as_deref())),
                opt_str_col(r.iter().map(|x| x.objective.as_deref())),
                opt_int_col(r.iter().map(|x| x.seed)),
                float_col(r.iter().map(|x| x.vanilla_best)),
                int_col(r.iter().map(|x| x.steps_vanilla)),
                opt_int_col(r.iter().map(|x| x.steps_tpt)),
                opt_float_col(r.iter().map(|x| x.speedup)),
                float_col(r.iter().map(|x| x.tpt_best)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (model, src, tgt, seed) = (
            strings(b, t, "model")?,
            strings(b, t, "src")?,
            strings(b, t, "tgt")?,
            opt_ints(b, t, "seed")?,
        );
        let (src_model, objective) = (
            opt_strings(b, t, "src_model")?,
            opt_strings(b, t, "objective")?,
        );
        let (vanilla_best, steps_vanilla) =
            (floats(b, t, "vanilla_best")?, ints(b, t, "steps_vanilla")?);
        let (steps_tpt, speedup, tpt_best) = (
            opt_ints(b, t, "steps_tpt")?,
            opt_floats(b, t, "speedup")?,
            floats(b, t, "tpt_best")?,
        );
        Ok((0..b.num_rows())
            .map(|i| TptRow {
                model: model[i].clone(),
                src: src[i].clone(),
                tgt: tgt[i].clone(),
                src_model: src_model[i].clone(),
                objective: objective[i].clone(),
                seed: seed[i],
                vanilla_best: vanilla_best[i],
                steps_vanilla: steps_vanilla[i],
                steps_tpt: steps_tpt[i],
                speedup: speedup[i],
                tpt_best: tpt_best[i],
            })
            .collect())
    }
}

/// One cell of the raw and relative zero-shot transfer matrix (derived by the analysis).
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRelativeRow {
    pub model: String,
    pub src_task: String,
    pub tgt_task: String,
    pub metric: String,
    /// score(s→t).
    pub raw: f64,
    /// score(t→t).
    pub own: f64,
    /// 100 · raw / own.
    pub relative: f64,
    pub src_type: Option<String>,
    pub tgt_type: Option<String>,
    /// The split the target is scored on (its own test split, or dev where it has none).
    pub split: Option<String>,
}

static TRANSFER_RELATIVE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("model", false),
        utf8("src_task", false),
        utf8("tgt_task", false),
        utf8("metric", false),
        f64f("raw", false),
        f64f("own", false),
        f64f("relative", false),
        utf8("src_type", true),
        utf8("tgt_type", true),
        utf8("split", true),
    ]))
});

impl Table for TransferRelativeRow {
    const NAME: &'static str = "transfer_relative";
    fn schema() -> SchemaRef {
        TRANSFER_RELATIVE.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[&self.model, &self.src_task, &self.tgt_task, &self.metric])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.model.as_str())),
                str_col(r.iter().map(|x| x.src_task.as_str())),
                str_col(r.iter().map(|x| x.tgt_task.as_str())),
                str_col(r.iter().map(|x| x.metric.as_str())),
                float_col(r.iter().map(|x| x.raw)),
                float_col(r.iter().map(|x| x.own)),
                float_col(r.iter().map(|x| x.relative)),
                opt_str_col(r.iter().map(|x| x.src_type.as_deref())),
                opt_str_col(r.iter().map(|x| x.tgt_type.as_deref())),
                opt_str_col(r.iter().map(|x| x.split.as_deref())),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (model, src_task, tgt_task) = (
            strings(b, t, "model")?,
            strings(b, t, "src_task")?,
            strings(b, t, "tgt_task")?,
        );
        let (metric, raw, own, relative) = (
            strings(b, t, "metric")?,
            floats(b, t, "raw")?,
            floats(b, t, "own")?,
            floats(b, t, "relative")?,
        );
        let (src_type, tgt_type, split) = (
            opt_strings(b, t, "src_type")?,
            opt_strings(b, t, "tgt_type")?,
            opt_strings(b, t, "split")?,
        );
        Ok((0..b.num_rows())
            .map(|i| TransferRelativeRow {
                model: model[i].clone(),
                src_task: src_task[i].clone(),
                tgt_task: tgt_task[i].clone(),
                metric: metric[i].clone(),
                raw: raw[i],
                own: own[i],
                relative: relative[i],
                src_type: src_type[i].clone(),
                tgt_type: tgt_type[i].clone(),
                split: split[i].clone(),
            })
            .collect())
    }
}

/// A projected prompt's score on the target model, relative to the target model's own prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossModelRow {
    /// The target model.
    pub model: String,
    pub src_model: String,
    pub objective: Option<String>,
    pub src_task: String,
    pub tgt_task: String,
    /// Whether the task was left out of the projector's training tasks (zero-shot projection).
    pub held_out: Option<bool>,
    pub metric: String,
    /// Score of the projected prompt.
    pub value: f64,
    /// Score of the target model's own prompt on `tgt_task`.
    pub own: f64,
    /// 100 · value / own.
    pub relative: f64,
}

static CROSS_MODEL: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("model", false),
        utf8("src_model", false),
        utf8("objective", true),
        utf8("src_task", false),
        utf8("tgt_task", false),
        boolf("held_out", true),
        utf8("metric", false),
        f64f("value", false),
        f64f("own", false),
        f64f("relative", false),
    ]))
});

impl Table for CrossModelRow {
    const NAME: &'static str = "cross_model";
    fn schema() -> SchemaRef {
        CROSS_MODEL.clone()
    }
    fn key(&self) -> RowKey {
        row_key(&[
            &self.model,
            &self.src_model,
            &self.objective,
            &self.src_task,
            &self.tgt_task,
            &self.metric,
        ])
    }
    fn to_batch(r: &[Self]) -> Result<RecordBatch> {
        batch(
            Self::schema(),
            vec![
                str_col(r.iter().map(|x| x.model.as_str())),
                str_col(r.iter().map(|x| x.src_model.as_str())),
                opt_str_col(r.iter().map(|x| x.objective.as_deref())),
                str_col(r.iter().map(|x| x.src_task.as_str())),
                str_col(r.iter().map(|x| x.tgt_task.as_str())),
                opt_bool_col(r.iter().map(|x| x.held_out)),
                str_col(r.iter().map(|x| x.metric.as_str())),
                float_col(r.iter().map(|x| x.value)),
                float_col(r.iter().map(|x| x.own)),
                float_col(r.iter().map(|x| x.relative)),
            ],
        )
    }
    fn from_batch(b: &RecordBatch) -> Result<Vec<Self>> {
        let t = Self::NAME;
        let (model, src_model, objective) = (
            strings(b, t, "model")?,
            strings(b, t, "src_model")?,
            opt_strings(b, t, "objective")?,
        );
        let (src_task, tgt_task, metric) = (
            strings(b, t, "src_task")?,
            strings(b, t, "tgt_task")?,
            strings(b, t, "metric")?,
        );
        let held_out = opt_bools(b, t, "held_out")?;
        let (value, own, relative) = (
            floats(b, t, "value")?,
            floats(b, t, "own")?,
            floats(b, t, "relative")?,
        );
        Ok((0..b.num_rows())
            .map(|i| CrossModelRow {
                model: model[i].clone(),
                src_model: src_model[i].clone(),
                objective: objective[i].clone(),
                src_task: src_task[i].clone(),
                tgt_task: tgt_task[i].clone(),
                held_out: held_out[i],
                metric: metric[i].clone(),
                value: value[i],
                own: own[i],
                relative: relative[i],
            })
            .collect())
    }
}
