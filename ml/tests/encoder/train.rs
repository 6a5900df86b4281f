//! Prompt tuning on a small generated task with a tiny random model: the loss falls, held-out
//! accuracy beats chance, runs are deterministic, and a resumed run equals an uninterrupted one.

use promptgrid_ml::{
    Checkpoint, EncoderModel, Example, Head, Init, Layout, MlResult, Precision, TaskData,
    TuneConfig, TuneObserver, evaluate_prompts, tune,
};

use crate::util::{load, max_abs_diff};

/// The toy task with the label words themselves as cues.
fn generate(n: usize, seed: u64) -> Vec<Example> {
    crate::toy::generate(n, seed, ["terrible", "great"])
}

fn words() -> Vec<String> {
    vec!["terrible".into(), "great".into()]
}

const TEMPLATE: &str = "{text} it was {mask} .";

#[derive(Default)]
struct Recorder {
    steps: Vec<(usize, f64)>,
    evals: Vec<(usize, f64)>,
    checkpoints: Vec<Checkpoint>,
    stop_at: Option<usize>,
}

impl TuneObserver for Recorder {
    fn on_step(&mut self, step: usize, loss: f64) {
        self.steps.push((step, loss));
    }
    fn on_eval(&mut self, step: usize, score: f64, _best: bool) {
        self.evals.push((step, score));
    }
    fn on_checkpoint(&mut self, ck: &Checkpoint) -> MlResult<()> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ck.safetensors");
        ck.save(&path)?;
        self.checkpoints.push(Checkpoint::load(&path)?);
        Ok(())
    }
    fn should_stop(&mut self) -> bool {
        self.stop_at
            .is_some_and(|s| self.steps.last().is_some_and(|l| l.0 >= s))
    }
}

fn cfg(steps: usize) -> TuneConfig {
    TuneConfig {
        prompt_len: 8,
        lr: 0.2,
        batch_size: 16,
        grad_accum: 2,
        max_steps: steps,
        eval_every: 30,
        eval_batch_size: 64,
        seed: 3,
        init: Init::Vocab,
        ..TuneConfig::default()
    }
}

/// `n` toy examples from `seed`, encoded for a prompt of 8 tokens.
fn toy_data(model: &EncoderModel, n: usize, seed: u64) -> TaskData {
    TaskData::encode_with(model, TEMPLATE, &words(), &generate(n, seed), 8, None).unwrap()
}

/// The mean training loss of the first and of the last 10 steps.
fn first_and_last_losses(losses: &[(usize, f64)]) -> (f64, f64) {
    let mean = |s: &[(usize, f64)]| s.iter().map(|x| x.1).sum::<f64>() / s.len() as f64;
    (mean(&losses[..10]), mean(&losses[losses.len() - 10..]))
}

#[test]
fn tuning_lowers_the_loss_and_beats_chance() {
    let model = load("tiny-bert-train", Head::Mlm, Layout::Prefix);
    let (train, test) = (toy_data(&model, 256, 1), toy_data(&model, 200, 2));
    let config = cfg(150);
    let init = promptgrid_ml::init_prompt(&model, &config.init, 8, config.seed).unwrap();
    let before = &evaluate_prompts(&model, &[&init], &test, 64).unwrap()[0];
    let mut rec = Recorder::default();
    let out = tune(&model, &train, Some(&test), &config, None, &mut rec).unwrap();
    let after = &evaluate_prompts(&model, &[&out.best_prompt], &test, 64).unwrap()[0];
    let (first, last) = first_and_last_losses(&out.losses);
    println!(
        "train loss {first:.3} -> {last:.3}; held-out loss {:.3} -> {:.3}, accuracy {:.3} -> {:.3}",
        before.loss, after.loss, before.accuracy, after.accuracy
    );
    assert!(last < first * 0.8, "training loss {first} -> {last}");
    assert!(
        after.loss < before.loss,
        "held-out loss {} -> {}",
        before.loss,
        after.loss
    );
    assert!(after.accuracy > 0.7, "held-out accuracy {}", after.accuracy);
    assert_eq!(rec.steps.len(), 150);
    assert_eq!(
        rec.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![30, 60, 90, 120, 150]
    );
    assert_eq!(
        out.best_score,
        rec.evals.iter().map(|e| e.1).reduce(f64::max)
    );
}

#[test]
fn runs_are_deterministic_and_resume_exactly() {
    let model = load("tiny-roberta", Head::Tied, Layout::Prefix);
    let (train, dev) = (toy_data(&model, 40, 5), toy_data(&model, 30, 6));
    let config = TuneConfig {
        init: Init::Random,
        eval_every: 3,
        checkpoint_every: 4,
        ..cfg(10)
    };
    let a = tune(&model, &train, Some(&dev), &config, None, &mut ()).unwrap();
    let b = tune(&model, &train, Some(&dev), &config, None, &mut ()).unwrap();
    assert_eq!(a.losses, b.losses);
    assert_eq!(max_abs_diff(&a.best_prompt, &b.best_prompt), 0.0);

    // Stop after 5 steps (the runner's shutdown), then resume from the checkpoint it handed over.
    let mut rec = Recorder {
        stop_at: Some(5),
        ..Recorder::default()
    };
    let first = tune(&model, &train, Some(&dev), &config, None, &mut rec).unwrap();
    assert!(first.stopped);
    assert_eq!(
        rec.checkpoints.iter().map(|c| c.step).collect::<Vec<_>>(),
        vec![4, 5]
    );
    let ck = rec.checkpoints.pop().unwrap();
    let rest = tune(&model, &train, Some(&dev), &config, Some(ck), &mut ()).unwrap();
    let resumed: Vec<_> = first.losses.iter().chain(&rest.losses).cloned().collect();
    for ((s1, l1), (s2, l2)) in resumed.iter().zip(&a.losses) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-6, "step {s1}: {l1} vs {l2}");
    }
    assert_eq!(rest.steps, 10);
    assert_eq!(rest.best_step, a.best_step);
    assert!(max_abs_diff(&rest.best_prompt, &a.best_prompt) < 1e-6);
}

#[test]
fn tpt_from_a_prompt_trained_on_the_same_data_starts_above_random_init() {
    let model = load("tiny-bert-train", Head::Mlm, Layout::Prefix);
    let (train, dev) = (toy_data(&model, 256, 1), toy_data(&model, 200, 2));
    let source = tune(&model, &train, Some(&dev), &cfg(150), None, &mut ()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.safetensors");
    promptgrid_ml::PromptFile::new(&source.best_prompt, "tiny", "toy", 150, None)
        .save(&path)
        .unwrap();

    // The same budget and evaluation interval for both runs: the first evaluation compares
    // like with like.
    let first_eval = |init: Init<std::path::PathBuf>| {
        let config = TuneConfig {
            max_steps: 10,
            eval_every: 5,
            init,
            ..cfg(10)
        };
        let mut rec = Recorder::default();
        tune(&model, &train, Some(&dev), &config, None, &mut rec).unwrap();
        rec.evals[0]
    };
    let (step_tpt, tpt) = first_eval(Init::From(path.clone()));
    let (step_random, random) = first_eval(Init::Random);
    assert_eq!((step_tpt, step_random), (5, 5));
    println!("dev accuracy at step 5: TPT {tpt:.3}, random init {random:.3}");
    assert!(
        tpt > random + 0.1,
        "TPT {tpt} should start well above random init {random}"
    );
}

/// Tuning through bf16 products learns as float32 does: the prompt stays float32 and the
/// gradient reaches it through the casts.
#[test]
fn tuning_with_bf16_products_lowers_the_loss_and_beats_chance() {
    let mut model = load("tiny-bert-train", Head::Mlm, Layout::Prefix);
    model.set_precision(Precision::Bf16).unwrap();
    let (train, test) = (toy_data(&model, 256, 1), toy_data(&model, 200, 2));
    let config = cfg(150);
    let out = tune(&model, &train, None, &config, None, &mut ()).unwrap();
    assert_eq!(out.best_prompt.kind(), tch::Kind::Float);
    let after = &evaluate_prompts(&model, &[&out.best_prompt], &test, 64).unwrap()[0];
    let (first, last) = first_and_last_losses(&out.losses);
    println!(
        "bf16: train loss {first:.3} -> {last:.3}, held-out accuracy {:.3}",
        after.accuracy
    );
    assert!(last < first * 0.8, "training loss {first} -> {last}");
    assert!(after.accuracy > 0.7, "held-out accuracy {}", after.accuracy);
}
