//! `promptgrid activations`: the activation mask one prompt file induces, without NATS.

use std::process::ExitCode;

use promptgrid_worker::oneshot;

use crate::cli::ActivationsArgs;

pub fn activations(args: ActivationsArgs) -> anyhow::Result<ExitCode> {
    let model = args.model.oneshot()?;
    let report =
        tokio::task::block_in_place(|| oneshot::activation_mask(&model, &args.prompt, &args.out))?;
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
