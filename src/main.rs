//! The `promptgrid` command: argument parsing, logging, and one library call per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use promptgrid_common::plan::{Plan, Roots};
use promptgrid_common::{JobGraph, SpecError, Sweep};

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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a sweep and show its jobs: counts per kind, dependency depth, missing inputs.
    Plan {
        sweep: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Check that each model's folder exists under this root.
        #[arg(long, env = "PROMPTGRID_MODELS_ROOT")]
        models_root: Option<PathBuf>,
        /// Check that each task's split files exist under this root.
        #[arg(long, env = "PROMPTGRID_DATA_ROOT")]
        data_root: Option<PathBuf>,
    },
}

/// Exit status of bad input (a sweep, a file, a flag), as opposed to a failure (1).
const BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.chain().any(|e| e.is::<SpecError>()) {
                ExitCode::from(BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan {
            sweep,
            json,
            models_root,
            data_root,
        } => {
            let sweep = Sweep::load(&sweep)?;
            let graph = JobGraph::build(&sweep);
            let plan = Plan::new(
                &sweep,
                &graph,
                &Roots {
                    models: models_root,
                    data: data_root,
                },
            );
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan).context("writing the plan")?
                );
            } else {
                print!("{plan}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
