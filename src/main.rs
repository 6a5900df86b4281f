//! The `promptgrid` command: argument parsing, logging, and one library call per subcommand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use promptgrid_common::overrides::Override;
use promptgrid_common::plan::{Plan, Roots};
use promptgrid_common::{JobGraph, SpecError, Sweep};
use promptgrid_ml::Precision;
use promptgrid_results::activation::OnWindows;
use promptgrid_runtime::parquet::{ParquetDoneSource, ParquetSink};
use promptgrid_runtime::{CoordinatorConfig, NatsConfig, Outcome, telemetry};
use promptgrid_worker::exec::MlExecutor;
use promptgrid_worker::gpus::{self, GpuError};

#[derive(Parser)]
#[command(
    name = "promptgrid",
    version,
    about = "Soft-prompt transferability studies at scale"
)]
struct Cli {
    /// Log lines as JSON objects (for clusters) instead of human-readable text.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// A sweep file and the `--set` overrides applied to it.
#[derive(Args)]
struct SweepArgs {
    sweep: PathBuf,
    /// Override a setting of the sweep file: a dotted key and a TOML value, e.g.
    /// `--set prompt.max_steps=10`, `--set task.sst2.prompt.learning_rate=0.01`,
    /// `--set model.*.head=tied` (repeatable; the same overrides give the same job ids).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<Override>,
}

impl SweepArgs {
    fn load(&self) -> Result<Sweep, SpecError> {
        Sweep::load_with(&self.sweep, &self.set)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a sweep and show its jobs: counts per kind, dependency depth, missing inputs.
    Plan {
        #[command(flatten)]
        sweep: SweepArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        roots: RootArgs,
    },
    /// Run a whole sweep on this machine: a private nats-server, the coordinator, the results
    /// sink and local workers. Run it again to resume.
    // A flag given twice takes its last value: wrappers such as scripts/run-demo set defaults
    // that the user's own arguments, passed after them, replace.
    #[command(args_override_self = true)]
    Run {
        #[command(flatten)]
        sweep: SweepArgs,
        /// Local workers (each runs one job at a time).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[command(flatten)]
        results: ResultsArgs,
        #[command(flatten)]
        roots: RootArgs,
        #[command(flatten)]
        device: DeviceArgs,
        #[command(flatten)]
        failures: FailureArgs,
    },
    /// Schedule a sweep on a NATS server that workers serve; follow it until it completes.
    Coordinator {
        #[command(flatten)]
        sweep: SweepArgs,
        #[command(flatten)]
        nats: NatsArgs,
        /// A job's lease (JetStream ack wait): a worker that sends no heartbeat for this long
        /// is presumed lost and its job is redelivered. Fixed when the sweep's consumers are
        /// first created.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        lease_secs: u64,
        #[command(flatten)]
        results: ResultsArgs,
        #[command(flatten)]
        failures: FailureArgs,
    },
    /// Serve jobs from a NATS server: pull, run, commit, repeat.
    Worker {
        #[command(flatten)]
        nats: NatsArgs,
        /// One worker process per GPU: `all`, or GPU numbers such as 0,1,3. Each runs this
        /// command with --device cuda:N; a crashed one is restarted.
        #[arg(long, value_name = "all|N,N,..", conflicts_with = "device")]
        gpus: Option<String>,
        /// Serve only this sweep (default: every sweep on the server).
        #[arg(long)]
        sweep: Option<String>,
        /// Shown in job states and logs (default: host and process id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        roots: RootArgs,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Counts per state and kind, running jobs, recent errors and why queued jobs wait.
    Status {
        #[command(flatten)]
        sweep: SweepArgs,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Queue dead jobs again.
    Retry {
        #[command(flatten)]
        sweep: SweepArgs,
        /// Re-queue every dead job.
        #[arg(long, required = true)]
        failed: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Analyse a sweep's results folder: tables, report.md and figures.
    Report {
        /// `<results>/<sweep>`, the folder holding the tables.
        dir: PathBuf,
        /// The task catalog, for grouping tasks by type.
        #[arg(long, default_value = "sweeps/tasks")]
        catalog: PathBuf,
        /// Consecutive layers per window of the ON indicator.
        #[arg(long, default_value_t = promptgrid_results::activation::DEFAULT_WINDOW)]
        on_window: usize,
        /// ON on every window of --on-window layers (stride 1), not only the official
        /// non-overlapping ones.
        #[arg(long)]
        on_sliding: bool,
    },
    /// Prompt-only indicators (and, with transfer results, correlations) for prompts made
    /// elsewhere: safetensors files or PEFT adapters.
    Indicators {
        #[arg(long)]
        prompts: PathBuf,
        /// target_task,source_prompt,metric,value rows.
        #[arg(long)]
        transfer: Option<PathBuf>,
        #[arg(long, default_value = "indicators-out")]
        out: PathBuf,
    },
    /// Train and evaluate one prompt, without NATS (an encoder, or T5 detected from config.json).
    Tune {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        task: TaskArgs,
        /// Soft tokens L.
        #[arg(long, default_value_t = 100)]
        length: usize,
        /// random, vocab or from:<prompt file>.
        #[arg(long, default_value = "random")]
        init: String,
        #[arg(long, default_value_t = 1e-3)]
        learning_rate: f64,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long, default_value_t = 1)]
        grad_accum: usize,
        #[arg(long, default_value_t = 1000)]
        max_steps: usize,
        #[arg(long, default_value_t = 100)]
        eval_every: usize,
        #[arg(long, default_value_t = 128)]
        max_text_tokens: usize,
        /// Dev examples per evaluation; 0 = all.
        #[arg(long, default_value_t = 0)]
        dev_examples: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The prompt file to write (safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Also write a PEFT prompt-tuning adapter into this folder.
        #[arg(long)]
        peft: Option<PathBuf>,
    },
    /// Score prompt files on a task, all in one batched pass.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        task: TaskArgs,
        /// The split's file stem (default: the task's test split, else dev).
        #[arg(long)]
        split: Option<String>,
        #[arg(long, default_value_t = 128)]
        max_text_tokens: usize,
        /// Prompt files (same length).
        #[arg(required = true)]
        prompts: Vec<PathBuf>,
    },
    /// The readout of one input: token ids, the readout position, the top-10 tokens and, with
    /// --full-logits, the whole vocabulary's logits. For T5 (detected from config.json): the
    /// decoder's logits at the first decoding step, in the same JSON shape.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        text: Option<String>,
        /// Comma-separated token ids, special tokens included.
        #[arg(long, value_delimiter = ',')]
        ids: Option<Vec<i64>>,
        #[arg(long)]
        prompt: Option<PathBuf>,
        #[arg(long)]
        full_logits: bool,
        /// JSON output (the default and only format).
        #[arg(long)]
        json: bool,
    },
    /// The binary FFN activation mask (the ON indicator's input) that one prompt file induces,
    /// without NATS: an encoder in its layout, or T5 (detected from config.json).
    Activations {
        #[command(flatten)]
        model: ModelArgs,
        /// A prompt file (safetensors with a `prompt` [L, d] tensor).
        #[arg(long)]
        prompt: PathBuf,
        /// The mask file to write (safetensors, `promptgrid-mask/1`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Maintenance of a results folder.
    Results {
        #[command(subcommand)]
        command: ResultsCommand,
    },
}

#[derive(Subcommand)]
enum ResultsCommand {
    /// Merge each table's small part files, without changing a row.
    Compact {
        /// `<results>/<sweep>`.
        dir: PathBuf,
        /// Parts with fewer rows than this are merged.
        #[arg(long, default_value_t = 100_000)]
        small_rows: usize,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// A Hugging Face model folder: config.json, model.safetensors, tokenizer.json.
    #[arg(long = "model")]
    dir: PathBuf,
    /// mlm (the checkpoint's LM head) or tied (embedding rows).
    #[arg(long, default_value = "mlm")]
    head: String,
    /// prefix (PEFT) or official (mask at prompt slot 0).
    #[arg(long, default_value = "prefix")]
    layout: String,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The model of a one-job command: an encoder, or T5 (v1.0 or v1.1) when config.json says
/// `model_type` t5 (head and layout do not apply to it).
enum OneShotModel {
    Encoder(promptgrid_ml::EncoderModel),
    T5(promptgrid_ml::T5Backbone),
}

impl ModelArgs {
    fn worker_args(&self) -> anyhow::Result<promptgrid_worker::oneshot::ModelArgs> {
        Ok(promptgrid_worker::oneshot::ModelArgs {
            dir: self.dir.clone(),
            head: self.head.parse()?,
            layout: self.layout.parse()?,
            device: self.device.device()?,
            precision: self.device.precision()?,
        })
    }

    fn load(&self) -> anyhow::Result<OneShotModel> {
        let args = self.worker_args()?;
        Ok(if promptgrid_worker::oneshot::is_t5(&args.dir)? {
            OneShotModel::T5(args.load_t5()?)
        } else {
            OneShotModel::Encoder(args.load()?)
        })
    }
}

/// A catalog task and its data folder, for the one-job commands.
#[derive(Args)]
struct TaskArgs {
    /// A task of the catalog.
    #[arg(long)]
    task: String,
    /// The task's data folder (its split files).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "sweeps/tasks")]
    catalog: PathBuf,
}

impl TaskArgs {
    fn load(&self) -> anyhow::Result<promptgrid_common::catalog::TaskDef> {
        let name = &self.task;
        let catalog = promptgrid_common::catalog::Catalog::load(&self.catalog)?;
        catalog.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = catalog.names().collect();
            anyhow::Error::new(SpecError::Invalid {
                location: promptgrid_common::error::Location::whole(Path::new("--task")),
                key: "task".into(),
                message: format!(
                    "unknown task `{name}`; the catalog has: {}",
                    known.join(", ")
                ),
            })
        })
    }
}

#[derive(Args)]
struct RootArgs {
    /// Model folders are resolved under this root.
    #[arg(long, env = "PROMPTGRID_MODELS_ROOT")]
    models_root: Option<PathBuf>,
    /// Task data folders are resolved under this root.
    #[arg(long, env = "PROMPTGRID_DATA_ROOT")]
    data_root: Option<PathBuf>,
}

impl RootArgs {
    fn required(&self) -> anyhow::Result<promptgrid_worker::exec::Roots> {
        let need = |root: &Option<PathBuf>, flag: &str| {
            root.clone()
                .with_context(|| format!("{flag} is required to run jobs"))
        };
        Ok(promptgrid_worker::exec::Roots {
            models: need(&self.models_root, "--models-root")?,
            data: need(&self.data_root, "--data-root")?,
        })
    }
}

#[derive(Args)]
struct ResultsArgs {
    /// Tables go to `<results>/<sweep>/<table>/`.
    #[arg(long, default_value = "runs")]
    results: PathBuf,
}

#[derive(Args)]
struct DeviceArgs {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Intra-op threads of libtorch (default: its own choice).
    #[arg(long)]
    threads: Option<i32>,
    /// fp32, or bf16 for the frozen model's matrix products (autocast-style mixed precision,
    /// for GPUs with bf16 support; the prompt and its optimizer stay float32).
    #[arg(long, default_value = "fp32")]
    precision: String,
}

impl DeviceArgs {
    fn device(&self) -> anyhow::Result<promptgrid_worker::exec::Device> {
        Ok(promptgrid_worker::exec::device(&self.device, self.threads)?)
    }

    fn precision(&self) -> anyhow::Result<Precision> {
        Ok(self.precision.parse()?)
    }
}

#[derive(Args)]
struct FailureArgs {
    /// Stop once more than this many jobs are dead.
    #[arg(long)]
    max_failures: Option<usize>,
    /// Stop at the first dead job.
    #[arg(long)]
    fail_fast: bool,
}

#[derive(Args)]
struct NatsArgs {
    /// nats://[user:pass@]host:port (or NATS_URL).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long, env = "NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// A credentials file (JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// CA bundle for the server's TLS certificate.
    #[arg(long, env = "NATS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long, env = "NATS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "NATS_KEY")]
    tls_key: Option<PathBuf>,
}

impl NatsArgs {
    fn config(&self) -> NatsConfig {
        NatsConfig {
            url: self.nats.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            credentials: self.nats_creds.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            require_tls: self.nats.starts_with("tls://"),
            name: None,
        }
    }
}

/// Exit status of bad input (a sweep, a file, a flag), as opposed to a failure (1).
const BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the async runtime: the OTLP exporter's HTTP client must not start inside it.
    let telemetry = match telemetry::init(&log_options(&cli)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(BAD_INPUT);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if is_bad_input(&err) {
                ExitCode::from(BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    };
    // Flush the last spans outside the runtime (the exporter blocks).
    drop(runtime);
    drop(telemetry);
    code
}

fn is_bad_input(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<SpecError>()
            || e.is::<promptgrid_common::UnknownValue>()
            || e.downcast_ref::<promptgrid_ml::MlError>()
                .is_some_and(|m| m.is_bad_input())
            || e.downcast_ref::<promptgrid_results::ResultsError>()
                .is_some_and(|r| r.is_bad_input())
            || e.downcast_ref::<GpuError>()
                .is_some_and(|g| g.is_bad_input())
    })
}

/// Logs on stderr in the chosen format; spans to OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// named after the role of the process.
fn log_options(cli: &Cli) -> telemetry::LogOptions {
    let service = match &cli.command {
        Command::Coordinator { .. } => "promptgrid-coordinator",
        Command::Worker { .. } => "promptgrid-worker",
        _ => "promptgrid",
    };
    let mut default_filter = "info,async_nats=warn".to_string();
    if matches!(cli.command, Command::Run { .. }) {
        // A line per job would scroll under the progress bar; RUST_LOG brings them back.
        default_filter.push_str(&format!(",{}=warn", telemetry::JOB_LOG));
    }
    telemetry::LogOptions {
        format: match cli.log_format {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        },
        default_filter,
        service: service.to_string(),
    }
}

/// `worker --gpus`: checks the flags a child would refuse, then supervises one worker process
/// per GPU until a signal or a clean exit.
async fn supervise_gpus(gpus: &str, roots: &RootArgs) -> anyhow::Result<ExitCode> {
    let selection: gpus::GpuSelection = gpus.parse()?;
    let list = gpus::select(&selection, gpus::device_count())?;
    roots.required()?;
    let args = gpus::child_args(std::env::args_os().skip(1));
    let supervisor = gpus::Supervisor::new(args, list.clone())?;
    tracing::info!(gpus = ?list, "starting one worker per GPU");
    let restarts = supervisor
        .run(promptgrid_runtime::shutdown_on_signals())
        .await;
    tracing::info!(restarts, "GPU workers stopped");
    Ok(ExitCode::SUCCESS)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan { sweep, json, roots } => {
            let sweep = sweep.load()?;
            let graph = JobGraph::build(&sweep);
            let roots = Roots {
                models: roots.models_root,
                data: roots.data_root,
            };
            let plan = Plan::new(&sweep, &graph, &roots);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan).context("writing the plan")?
                );
            } else {
                print!("{plan}");
            }
            // After the plan is shown: a prompt no model can take fails every job (exit 2).
            plan.refuse_invalid(&sweep)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            sweep,
            workers,
            results,
            roots,
            device,
            failures,
        } => {
            let sweep = sweep.load()?;
            let roots = roots.required()?;
            let (device, precision) = (device.device()?, device.precision()?);
            let dir = results.results.join(&sweep.name);
            let mut config = coordinator_config(&sweep, NatsConfig::default(), &dir, &failures)?;
            config.shutdown = Some(promptgrid_runtime::shutdown_on_signals());
            let outcome =
                promptgrid_runtime::embedded::run(config, &results.results, workers.max(1), |_| {
                    MlExecutor::with_sweep(roots.clone(), device, sweep.clone())
                        .with_precision(precision)
                })
                .await?;
            finish(&outcome, Some(&dir), on_window(&sweep))
        }
        Command::Coordinator {
            sweep,
            nats,
            lease_secs,
            results,
            failures,
        } => {
            let sweep = sweep.load()?;
            let dir = results.results.join(&sweep.name);
            let mut config = coordinator_config(&sweep, nats.config(), &dir, &failures)?;
            config.streams.lease = std::time::Duration::from_secs(lease_secs.max(1));
            config.shutdown = Some(promptgrid_runtime::shutdown_on_signals());
            let outcome = promptgrid_runtime::run(config).await?;
            finish(&outcome, Some(&dir), on_window(&sweep))
        }
        Command::Worker {
            nats,
            gpus,
            sweep,
            name,
            roots,
            device,
        } => {
            // Refused here, not by every child `--gpus` would start and restart.
            let precision = device.precision()?;
            if let Some(gpus) = gpus {
                return supervise_gpus(&gpus, &roots).await;
            }
            let roots = roots.required()?;
            let executor = MlExecutor::new(roots, device.device()?).with_precision(precision);
            let mut config = promptgrid_runtime::jobloop::WorkerConfig::new(nats.config(), sweep);
            if let Some(name) = name {
                config.name = name;
            }
            config.shutdown = Some(promptgrid_runtime::shutdown_on_signals());
            let stats = promptgrid_runtime::jobloop::run(config, executor).await?;
            tracing::info!(done = stats.done, failed = stats.failed, "worker stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { sweep, nats } => {
            let sweep = sweep.load()?;
            let graph = JobGraph::build(&sweep);
            let report = promptgrid_runtime::status(&nats.config(), &sweep.name, &graph).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry {
            sweep,
            failed: _,
            nats,
        } => {
            let sweep = sweep.load()?;
            let graph = JobGraph::build(&sweep);
            let n = promptgrid_runtime::retry_failed(&nats.config(), &sweep.name, &graph).await?;
            println!("{n} dead job(s) queued again");
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            dir,
            catalog,
            on_window,
            on_sliding,
        } => {
            let windows = OnWindows {
                width: on_window,
                sliding: on_sliding,
            };
            let report = report(&dir, &catalog, windows)?;
            for line in report.summary_lines() {
                println!("{line}");
            }
            println!("report: {}", report.markdown_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Indicators {
            prompts,
            transfer,
            out,
        } => {
            let summary = tokio::task::block_in_place(|| {
                promptgrid_results::run_indicators(&prompts, transfer.as_deref(), &out)
            })?;
            println!(
                "{} prompts of {}: {} indicator values",
                summary.tasks.len(),
                summary.model,
                summary.indicators.len()
            );
            if let Some((indicator, rho)) = &summary.best {
                println!("best indicator: {indicator} (mean Spearman rho {rho:.3})");
            }
            println!("summary: {}", summary.markdown_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tune {
            model,
            task: task_args,
            length,
            init,
            learning_rate,
            batch_size,
            grad_accum,
            max_steps,
            eval_every,
            max_text_tokens,
            dev_examples,
            seed,
            out,
            peft,
        } => {
            let task = task_args.load()?;
            let data = task_args.data;
            let cfg = promptgrid_ml::TuneConfig {
                prompt_len: length,
                lr: learning_rate,
                weight_decay: 0.0,
                batch_size,
                grad_accum,
                max_steps,
                eval_every,
                eval_batch_size: 64,
                checkpoint_every: 0,
                seed,
                init: init.parse()?,
                metric: task.metric,
                // adam_eps, dropout: the library defaults (eval mode, eps 1e-8).
                ..Default::default()
            };
            let report = tokio::task::block_in_place(|| -> anyhow::Result<_> {
                use promptgrid_worker::oneshot::{tune_one, tune_one_t5};
                let (report, name, layers, heads) = match model.load()? {
                    OneShotModel::Encoder(model) => {
                        let report = tune_one(
                            &model,
                            &task,
                            &data,
                            &cfg,
                            max_text_tokens,
                            dev_examples,
                            &out,
                        )?;
                        let c = &model.config;
                        let (layers, heads) = (c.num_hidden_layers, c.num_attention_heads);
                        (report, model.name, layers, heads)
                    }
                    OneShotModel::T5(model) => {
                        let report = tune_one_t5(
                            &model,
                            &task,
                            &data,
                            &cfg,
                            max_text_tokens,
                            dev_examples,
                            &out,
                        )?;
                        let c = model.model.config();
                        (report, model.name, c.num_layers, c.num_heads)
                    }
                };
                if let Some(dir) = peft {
                    let file = promptgrid_ml::PromptFile::load(&out, None)?;
                    file.export_peft(&dir, &name, layers, heads)?;
                }
                Ok(report)
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            model,
            task: task_args,
            split,
            max_text_tokens,
            prompts,
        } => {
            let task = task_args.load()?;
            let data = task_args.data;
            let split = split
                .unwrap_or_else(|| task.splits.test.clone().unwrap_or(task.splits.dev.clone()));
            let scores = tokio::task::block_in_place(|| -> anyhow::Result<_> {
                use promptgrid_worker::oneshot::{eval_prompts, eval_prompts_t5};
                Ok(match model.load()? {
                    OneShotModel::Encoder(model) => {
                        eval_prompts(&model, &task, &data, &split, &prompts, max_text_tokens)?
                    }
                    OneShotModel::T5(model) => {
                        eval_prompts_t5(&model, &task, &data, &split, &prompts, max_text_tokens)?
                    }
                })
            })?;
            println!("{}", serde_json::to_string_pretty(&scores)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            model,
            text,
            ids,
            prompt,
            full_logits,
            json: _,
        } => {
            let inspection = tokio::task::block_in_place(|| -> anyhow::Result<_> {
                use promptgrid_worker::oneshot::{inspect, inspect_t5};
                let (text, prompt) = (text.as_deref(), prompt.as_deref());
                Ok(match model.load()? {
                    OneShotModel::Encoder(model) => {
                        inspect(&model, text, ids, prompt, full_logits)?
                    }
                    OneShotModel::T5(model) => inspect_t5(&model, text, ids, prompt, full_logits)?,
                })
            })?;
            println!("{}", serde_json::to_string(&inspection)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Activations { model, prompt, out } => {
            let args = model.worker_args()?;
            let report = tokio::task::block_in_place(|| {
                promptgrid_worker::oneshot::activation_mask(&args, &prompt, &out)
            })?;
            println!(
                "{} / {}: {} layers x {} neurons, {:.1}% active; mask written to {}",
                report.model,
                report.task,
                report.layers,
                report.neurons,
                100.0 * report.active_fraction,
                report.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Results {
            command: ResultsCommand::Compact { dir, small_rows },
        } => {
            let outcomes =
                tokio::task::block_in_place(|| promptgrid_results::compact_all(&dir, small_rows))?;
            for (table, o) in outcomes {
                println!(
                    "{table}: {} parts -> {} ({} rows)",
                    o.parts_before, o.parts_after, o.rows
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A coordinator writing Parquet under `dir` and rebuilding from it.
fn coordinator_config(
    sweep: &Sweep,
    nats: NatsConfig,
    dir: &Path,
    failures: &FailureArgs,
) -> anyhow::Result<CoordinatorConfig> {
    let mut config = CoordinatorConfig::new(nats, &sweep.name, JobGraph::build(sweep));
    config.sweep_spec = Some(sweep.clone());
    let task_types: BTreeMap<String, String> = sweep
        .tasks
        .iter()
        .map(|t| (t.def.name.clone(), t.def.task_type.clone()))
        .collect();
    config.sink = Some(Box::new(ParquetSink::open(dir.to_path_buf(), task_types)?));
    config.done_source = Some(Box::new(ParquetDoneSource {
        sweep_dir: dir.to_path_buf(),
    }));
    config.max_failures = failures.max_failures;
    config.fail_fast = failures.fail_fast;
    Ok(config)
}

/// The sweep's ON windows, or the default when it computes no ON.
fn on_window(sweep: &Sweep) -> OnWindows {
    sweep
        .studies
        .indicators
        .as_ref()
        .map_or_else(OnWindows::default, |i| OnWindows {
            width: i.on_window as usize,
            sliding: i.on_sliding,
        })
}

fn report(
    dir: &Path,
    catalog: &Path,
    on_window: OnWindows,
) -> anyhow::Result<promptgrid_results::Report> {
    let catalog = promptgrid_common::catalog::Catalog::load(catalog)?;
    let opts = promptgrid_results::ReportOptions::from_catalog(&catalog);
    Ok(tokio::task::block_in_place(|| {
        promptgrid_results::sink::derive_indicators(dir, on_window)?;
        promptgrid_results::report_with(dir, &opts)
    })?)
}

/// Prints how the sweep ended and, when it produced results, the report; the exit status says
/// whether every job is done.
fn finish(outcome: &Outcome, dir: Option<&Path>, on_window: OnWindows) -> anyhow::Result<ExitCode> {
    println!(
        "{} of {} jobs done, {} dead, {} blocked by dead dependencies{}",
        outcome.done,
        outcome.total,
        outcome.dead,
        outcome.blocked,
        outcome
            .stopped
            .as_ref()
            .map_or(String::new(), |why| format!(" (stopped: {why})"))
    );
    if let Some(dir) = dir.filter(|d| d.join("jobs").is_dir()) {
        match report(dir, Path::new("sweeps/tasks"), on_window) {
            Ok(r) => {
                println!("tables: {}", dir.display());
                println!("report: {}", r.markdown_path.display());
                for line in r.summary_lines() {
                    println!("  {line}");
                }
            }
            Err(e) => eprintln!("warning: the report failed: {e:#}"),
        }
    }
    Ok(if outcome.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
