//! `promptgrid tune`: one prompt trained and scored without NATS.

use std::process::ExitCode;

use promptgrid_worker::oneshot::{self, TuneRequest};

use promptgrid_common::spec::PromptSettings;

use crate::cli::TuneArgs;

pub fn tune(args: TuneArgs) -> anyhow::Result<ExitCode> {
    let task = args.task.load()?;
    let request = TuneRequest {
        data_dir: args.task.data,
        settings: PromptSettings {
            length: args.length,
            learning_rate: args.learning_rate,
            batch_size: args.batch_size,
            grad_accum: args.grad_accum,
            max_steps: args.max_steps,
            eval_every: args.eval_every,
            max_text_tokens: args.max_text_tokens,
            dev_examples: args.dev_examples,
            // One run, nothing to resume: no checkpoints.
            checkpoint_every: 0,
            dropout: args.dropout,
            adam_eps: args.adam_eps,
            official_padding: args.official_padding,
            ..PromptSettings::default()
        },
        init: args.init,
        seed: args.seed,
        out: args.out,
        peft: args.peft,
    };
    let model = args.model.oneshot()?;
    let report = tokio::task::block_in_place(|| oneshot::tune(&model, &task, &request))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
