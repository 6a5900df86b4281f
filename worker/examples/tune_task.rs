//! Tunes one prompt on a catalog task and scores it on the test split, printing the metrics as
//! JSON lines: `tune_task CATALOG_DIR TASK DATA_ROOT MODEL_DIR [steps prompt_len lr]`. A
//! reference for the `promptgrid tune` subcommand, and an end-to-end check on the demo data.

use std::path::PathBuf;
use std::time::Instant;

use promptgrid_common::catalog::Catalog;
use promptgrid_worker::ml::{
    EncoderModel, Head, Layout, PromptInit, TaskData, TuneConfig, TuneObserver, data,
    evaluate_prompts, tune,
};

struct Printer(Instant);

impl TuneObserver for Printer {
    fn on_step(&mut self, step: usize, loss: f64) {
        if step % 10 == 0 {
            println!(
                "{{\"step\": {step}, \"loss\": {loss:.4}, \"wall_s\": {:.1}}}",
                self.0.elapsed().as_secs_f64()
            );
        }
    }
    fn on_eval(&mut self, step: usize, dev_score: f64, best: bool) {
        println!("{{\"step\": {step}, \"dev_score\": {dev_score:.4}, \"best\": {best}}}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err(
            "usage: tune_task CATALOG_DIR TASK DATA_ROOT MODEL_DIR [steps prompt_len lr]".into(),
        );
    }
    let catalog = Catalog::load(args[1].as_ref())?;
    let task = catalog.get(&args[2]).ok_or("unknown task")?;
    let dir = PathBuf::from(&args[3]).join(task.data_dir());
    let steps = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(100);
    let prompt_len = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(20);
    let lr = args.get(7).and_then(|s| s.parse().ok()).unwrap_or(0.3);
    let model = EncoderModel::load(
        args[4].as_ref(),
        Head::Tied,
        Layout::Prefix,
        tch::Device::Cpu,
    )?;
    let split = |stem: &str, limit: usize| -> Result<TaskData, Box<dyn std::error::Error>> {
        let mut examples = data::load_split(&data::find_split(&dir, stem)?, task)?;
        examples.truncate(limit);
        Ok(TaskData::encode(
            &model,
            task,
            &examples,
            prompt_len,
            Some(128),
        )?)
    };
    let train = split(&task.splits.train, usize::MAX)?;
    let dev = split(&task.splits.dev, 200)?;
    let test = split(
        task.splits.test.as_deref().unwrap_or(&task.splits.dev),
        1000,
    )?;
    let cfg = TuneConfig {
        prompt_len,
        lr,
        max_steps: steps,
        eval_every: (steps / 4).max(1),
        init: PromptInit::Vocab,
        metric: task.metric,
        ..TuneConfig::default()
    };
    let out = tune(
        &model,
        &train,
        Some(&dev),
        &cfg,
        None,
        &mut Printer(Instant::now()),
    )?;
    let init = promptgrid_worker::ml::init_prompt(&model, &cfg.init, prompt_len, cfg.seed)?;
    let scores = evaluate_prompts(&model, &[&init, &out.best_prompt], &test, 64)?;
    println!(
        "{{\"task\": \"{}\", \"test_examples\": {}, \"init_accuracy\": {:.4}, \"tuned_accuracy\": {:.4}, \"tuned_macro_f1\": {:.4}, \"best_step\": {}}}",
        task.name,
        test.len(),
        scores[0].accuracy,
        scores[1].accuracy,
        scores[1].macro_f1,
        out.best_step
    );
    Ok(())
}
