//! One function per subcommand: it turns the parsed flags into the libraries' settings, makes
//! the library calls, and prints what the user reads. The exit status is its `Ok` value, or the
//! error's kind (see main.rs).

mod activations;
mod coordinator;
mod eval;
mod indicators;
mod inspect;
mod outcome;
mod plan;
mod report;
mod results;
mod retry;
mod run;
mod status;
mod tune;
mod worker;

use std::process::ExitCode;

use crate::cli::{Command, ResultsCommand};

/// Runs one subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan(args) => plan::plan(args),
        Command::Run(args) => run::run(args).await,
        Command::Coordinator(args) => coordinator::coordinator(args).await,
        Command::Worker(args) => worker::worker(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Retry(args) => retry::retry(args).await,
        Command::Report(args) => report::report(args),
        Command::Indicators(args) => indicators::indicators(args),
        Command::Tune(args) => tune::tune(args),
        Command::Eval(args) => eval::eval(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Activations(args) => activations::activations(args),
        Command::Results {
            command: ResultsCommand::Compact(args),
        } => results::compact(args),
    }
}
