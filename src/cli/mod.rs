//! The command line, as clap parses it: the subcommands and their flags, nothing else. The
//! command reference (docs/commands.md) documents every flag here; `tests/operations.rs` checks the deployment
//! recipes against them. Flag groups shared by several subcommands are in args.rs; turning them
//! into the libraries' settings is in convert.rs.

mod args;
mod convert;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use promptgrid_common::spec::{Init, PromptSettings};

pub use args::{
    DeviceArgs, FailureArgs, ModelArgs, NatsArgs, ResultsArgs, RootArgs, SweepArgs, TaskArgs,
};

#[derive(Parser)]
#[command(
    name = "promptgrid",
    version,
    about = "Soft-prompt transferability studies at scale"
)]
pub struct Cli {
    /// Log lines as JSON objects (for clusters) instead of human-readable text.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Each subcommand's help text is the doc comment of its variant; the argument structs carry
// none, so that it is the only one.
#[derive(Subcommand)]
pub enum Command {
    /// Validate a sweep and show its jobs: counts per kind, dependency depth, missing inputs.
    Plan(PlanArgs),
    /// Run a whole sweep on this machine: a private nats-server, the coordinator, the results
    /// sink and local workers. Run it again to resume.
    // A flag given twice takes its last value: wrappers such as scripts/run-demo set defaults
    // that the user's own arguments, passed after them, replace.
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Schedule a sweep on a NATS server that workers serve; follow it until it completes.
    Coordinator(CoordinatorArgs),
    /// Serve jobs from a NATS server: pull, run, commit, repeat.
    Worker(WorkerArgs),
    /// Counts per state and kind, running jobs, recent errors and why queued jobs wait.
    Status(StatusArgs),
    /// Queue dead jobs again.
    Retry(RetryArgs),
    /// Analyse a sweep's results folder: tables, report.md and figures.
    Report(ReportArgs),
    /// Prompt-only indicators (and, with transfer results, correlations) for prompts made
    /// elsewhere: safetensors files or PEFT adapters.
    Indicators(IndicatorsArgs),
    /// Train and evaluate one prompt, without NATS (an encoder, or T5 detected from config.json).
    Tune(TuneArgs),
    /// Score prompt files on a task, all in one batched pass.
    Eval(EvalArgs),
    /// The readout of one input: token ids, the readout position, the top-10 tokens and, with
    /// --full-logits, the whole vocabulary's logits. For T5 (detected from config.json): the
    /// decoder's logits at the first decoding step, in the same JSON shape.
    Inspect(InspectArgs),
    /// The binary FFN activation mask (the ON indicator's input) that one prompt file induces,
    /// without NATS: an encoder in its layout, or T5 (detected from config.json).
    Activations(ActivationsArgs),
    /// Maintenance of a results folder.
    Results {
        #[command(subcommand)]
        command: ResultsCommand,
    },
}

#[derive(Subcommand)]
pub enum ResultsCommand {
    /// Merge each table's small part files, without changing a row.
    Compact(CompactArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// With --json: list every job with its id, dependencies and resolved settings.
    #[arg(long, requires = "json")]
    pub jobs: bool,
    #[command(flatten)]
    pub roots: RootArgs,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Local workers (each runs one job at a time).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[command(flatten)]
    pub roots: RootArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub failures: FailureArgs,
}

#[derive(Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// A job's lease (JetStream ack wait): a worker that sends no heartbeat for this long
    /// is presumed lost and its job is redelivered. Fixed when the sweep's consumers are
    /// first created.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub lease_secs: u64,
    /// Copies a JetStream cluster keeps of the sweep's streams, bucket and store: 1, or 3 or 5
    /// on a cluster of at least that many servers. Fixed when the sweep is created.
    #[arg(long, default_value = "1", value_name = "1|3|5", value_parser = args::replicas)]
    pub replicas: usize,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[command(flatten)]
    pub failures: FailureArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// One worker process per GPU: `all`, or GPU numbers such as 0,1,3. Each runs this
    /// command with --device cuda:N; a crashed one is restarted.
    #[arg(long, value_name = "all|N,N,..", conflicts_with = "device")]
    pub gpus: Option<String>,
    /// Serve only this sweep (default: every sweep on the server).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Shown in job states and logs (default: host and process id).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub roots: RootArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Re-queue every dead job.
    #[arg(long, required = true)]
    pub failed: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Args)]
pub struct ReportArgs {
    /// `<results>/<sweep>`, the folder holding the tables.
    pub dir: PathBuf,
    /// A task catalog folder (for grouping tasks by type) to use instead of the built-in one.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Consecutive layers per window of the ON indicator.
    #[arg(long, default_value_t = promptgrid_results::activation::DEFAULT_WINDOW)]
    pub on_window: usize,
    /// ON on every window of --on-window layers (stride 1), not only the official
    /// non-overlapping ones.
    #[arg(long)]
    pub on_sliding: bool,
}

#[derive(Args)]
pub struct IndicatorsArgs {
    #[arg(long)]
    pub prompts: PathBuf,
    /// target_task,source_prompt,metric,value rows.
    #[arg(long)]
    pub transfer: Option<PathBuf>,
    #[arg(long, default_value = "indicators-out")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Soft tokens L.
    #[arg(long, default_value_t = PromptSettings::default().length)]
    pub length: u32,
    /// random, vocab or from:<prompt file>.
    #[arg(long, default_value = "random")]
    pub init: Init<PathBuf>,
    #[arg(long, default_value_t = PromptSettings::default().learning_rate)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = PromptSettings::default().batch_size)]
    pub batch_size: u32,
    #[arg(long, default_value_t = PromptSettings::default().grad_accum)]
    pub grad_accum: u32,
    #[arg(long, default_value_t = PromptSettings::default().max_steps)]
    pub max_steps: u32,
    #[arg(long, default_value_t = PromptSettings::default().eval_every)]
    pub eval_every: u32,
    #[arg(long, default_value_t = PromptSettings::default().max_text_tokens)]
    pub max_text_tokens: u32,
    /// Dev examples per evaluation; 0 = all.
    #[arg(long, default_value_t = PromptSettings::default().dev_examples)]
    pub dev_examples: u32,
    /// Dropout inside the frozen model while training (the official code's: 0.1).
    #[arg(long, default_value_t = PromptSettings::default().dropout)]
    pub dropout: f64,
    /// AdamW's epsilon (the official transformers.AdamW's: 1e-6).
    #[arg(long, default_value_t = PromptSettings::default().adam_eps)]
    pub adam_eps: f64,
    /// T5: train on the official batches, inputs padded to max_text_tokens + 2, pads attended.
    #[arg(long)]
    pub official_padding: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The prompt file to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write a PEFT prompt-tuning adapter into this folder.
    #[arg(long)]
    pub peft: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// The split's file stem (default: the task's test split, else dev).
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_text_tokens: usize,
    /// Prompt files (same length).
    #[arg(required = true)]
    pub prompts: Vec<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    pub text: Option<String>,
    /// Comma-separated token ids, special tokens included.
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<i64>>,
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    #[arg(long)]
    pub full_logits: bool,
    /// JSON output (the default and only format).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ActivationsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A prompt file (safetensors with a `prompt` [L, d] tensor).
    #[arg(long)]
    pub prompt: PathBuf,
    /// The mask file to write (safetensors, `promptgrid-mask/1`).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct CompactArgs {
    /// `<results>/<sweep>`.
    pub dir: PathBuf,
    /// Parts with fewer rows than this are merged.
    #[arg(long, default_value_t = 100_000)]
    pub small_rows: usize,
}
