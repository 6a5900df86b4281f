//! The `promptgrid` command: parse the arguments (cli), set up logging and telemetry, run one
//! subcommand (commands), and map its error to an exit status: 2 for bad input, 1 for a failure.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use promptgrid_common::SpecError;
use promptgrid_runtime::telemetry;
use promptgrid_worker::gpus::GpuError;

use cli::{Cli, Command, LogFormat};

/// Exit status of bad input (a sweep, a file, a flag), as opposed to a failure (1).
const BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    // Before any tensor is allocated: see heap.rs (page faults were 12% of an evaluation).
    promptgrid_ml::heap::retain_freed_memory();
    let cli = Cli::parse();
    if prints_for_a_pipe(&cli.command) {
        die_quietly_on_a_closed_pipe();
    }
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
    let code = match runtime.block_on(commands::dispatch(cli.command)) {
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

/// Commands whose output a user pipes into `head`, `jq` or `less`. The long-running processes
/// keep Rust's default (an ignored SIGPIPE, an error from the write) so that no stray signal can
/// take a coordinator or a worker down.
fn prints_for_a_pipe(command: &Command) -> bool {
    !matches!(
        command,
        Command::Run(_) | Command::Coordinator(_) | Command::Worker(_)
    )
}

/// Ends the process the way `cat` ends when its reader goes away: by the default SIGPIPE, not by
/// a panic in `println!` ("failed printing to stdout: Broken pipe").
#[allow(unsafe_code)]
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: restoring a signal's default disposition, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether any error in the chain is one its library calls bad input.
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
            || e.downcast_ref::<promptgrid_runtime::Error>()
                .is_some_and(|r| r.is_bad_input())
    })
}

/// Logs on stderr in the chosen format; spans to OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// named after the role of the process.
fn log_options(cli: &Cli) -> telemetry::LogOptions {
    let service = match &cli.command {
        Command::Coordinator(_) => "promptgrid-coordinator",
        Command::Worker(_) => "promptgrid-worker",
        _ => "promptgrid",
    };
    let mut default_filter = "info,async_nats=warn".to_string();
    if matches!(cli.command, Command::Run(_)) {
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
