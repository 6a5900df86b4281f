//! Prompt tuning and evaluation: AdamW on the prompt alone (the backbone is frozen), gradient
//! accumulation, periodic dev evaluation keeping the best prompt, checkpoints that resume
//! exactly, and batched scoring of several prompts in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use promptgrid_common::catalog::Metric;
use tch::{Device, Kind, Tensor};

use super::data::TaskData;
use super::error::{MlError, MlResult};
use super::metrics;
use promptgrid_common::spec::{Init, Layout, PromptSettings};

use super::model::{Encoded, EncoderModel};
use super::prompt::{PromptFile, read_tensors, write_tensors};
use super::rng::{Draws, Sampler, SplitMix64};

/// Settings of one prompt-tuning run.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    pub prompt_len: usize,
    /// Constant learning rate of AdamW.
    pub lr: f64,
    /// AdamW's decoupled weight decay; the paper uses none.
    pub weight_decay: f64,
    /// AdamW's epsilon (the official `transformers.AdamW` default is 1e-6).
    pub adam_eps: f64,
    /// Dropout inside the frozen model during training steps (the official code trains in
    /// `train()` mode: 0.1); 0 trains in eval mode. Evaluation never drops.
    pub dropout: f64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub max_steps: usize,
    /// Evaluate on dev every this many steps (and after the last); 0 evaluates only at the end.
    pub eval_every: usize,
    /// Rows per forward pass when evaluating.
    pub eval_batch_size: usize,
    /// Hand a checkpoint to the observer every this many steps; 0 never.
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Random (Normal(0, [`PromptModel::random_init_std`]): the official prompt embedding's
    /// initialisation for the model family), vocabulary rows, or a prompt file whose length
    /// overrides `prompt_len` (transfer as initialisation). The random draw depends on the seed
    /// alone, so every task of a seed starts from the same prompt, as the official code's one
    /// saved initial model (model/PromptT5.py:56-70) makes it.
    pub init: Init<PathBuf>,
    /// The dev score that selects the best prompt.
    pub metric: Metric,
}

/// Rows per forward pass when scoring, in jobs and in `promptgrid tune` alike.
pub const EVAL_BATCH: usize = 64;

impl TuneConfig {
    /// The run a sweep's `settings` describe, from `init` (the settings' own init, resolved to a
    /// file where it names one), at `seed`, picking the best prompt by `metric`. A sweep's train
    /// job and `promptgrid tune` both build their run here, so that the same settings train the
    /// same prompt. No weight decay: the paper uses none.
    pub fn from_settings(
        settings: &PromptSettings,
        init: Init<PathBuf>,
        seed: u64,
        metric: Metric,
    ) -> TuneConfig {
        TuneConfig {
            prompt_len: settings.length as usize,
            lr: settings.learning_rate,
            weight_decay: 0.0,
            adam_eps: settings.adam_eps,
            dropout: settings.dropout,
            batch_size: settings.batch_size as usize,
            grad_accum: settings.grad_accum as usize,
            max_steps: settings.max_steps as usize,
            eval_every: settings.eval_every as usize,
            eval_batch_size: EVAL_BATCH,
            checkpoint_every: settings.checkpoint_every as usize,
            seed,
            init,
            metric,
        }
    }
}

/// A sweep's defaults ([`PromptSettings::default`]), seed 0, random init, accuracy.
impl Default for TuneConfig {
    fn default() -> TuneConfig {
        TuneConfig::from_settings(
            &PromptSettings::default(),
            Init::Random,
            0,
            Metric::Accuracy,
        )
    }
}

/// The job runner's view of a run: metrics as they come, checkpoints to store, and a way to
/// stop (take no more steps, checkpoint, return).
pub trait TuneObserver {
    /// After each optimizer step, with the mean training loss of its micro-batches.
    fn on_step(&mut self, _step: usize, _loss: f64) {}
    /// After each dev evaluation; `best` when it improved on all earlier ones.
    fn on_eval(&mut self, _step: usize, _dev_score: f64, _best: bool) {}
    /// A checkpoint to keep; an error ends the run.
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint) -> MlResult<()> {
        Ok(())
    }
    /// Asked after every step; true stops the run after a final checkpoint.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything.
impl TuneObserver for () {}

/// Everything needed to continue a run exactly where it stopped. The example order is a pure
/// function of (seed, step), so the step is the generator's position.
#[derive(Debug)]
pub struct Checkpoint {
    pub step: usize,
    pub seed: u64,
    pub prompt: Tensor,
    /// AdamW's first and second moments.
    pub adam_m: Tensor,
    pub adam_v: Tensor,
    pub best_prompt: Tensor,
    pub best_score: Option<f64>,
    pub best_step: usize,
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> MlResult<()> {
        let mut meta = BTreeMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("seed".to_string(), self.seed.to_string());
        meta.insert("best_step".to_string(), self.best_step.to_string());
        if let Some(s) = self.best_score {
            meta.insert("best_score".to_string(), format!("{s}"));
        }
        let tensors = [
            ("prompt", &self.prompt),
            ("adam_m", &self.adam_m),
            ("adam_v", &self.adam_v),
            ("best_prompt", &self.best_prompt),
        ];
        write_tensors(path, &tensors, Some(&meta))
    }

    pub fn load(path: &Path) -> MlResult<Checkpoint> {
        let (mut t, meta) = read_tensors(path)?;
        let bad = |what: &str| MlError::Safetensors {
            path: path.into(),
            message: format!("not a checkpoint: no {what}"),
        };
        let mut take = |name: &str| t.remove(name).ok_or_else(|| bad(name));
        let (prompt, adam_m, adam_v, best_prompt) = (
            take("prompt")?,
            take("adam_m")?,
            take("adam_v")?,
            take("best_prompt")?,
        );
        let num = |key: &str| {
            meta.get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad(key))
        };
        Ok(Checkpoint {
            step: num("step")? as usize,
            seed: num("seed")?,
            best_step: num("best_step")? as usize,
            best_score: meta.get("best_score").and_then(|v| v.parse().ok()),
            prompt,
            adam_m,
            adam_v,
            best_prompt,
        })
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct TuneOutcome {
    /// The prompt with the best dev score (the last one without dev data), [L, d] on the CPU.
    pub best_prompt: Tensor,
    pub best_score: Option<f64>,
    /// The step that produced `best_prompt` (0: the initial prompt).
    pub best_step: usize,
    /// Steps done in total, resumed ones included.
    pub steps: usize,
    /// Mean training loss of each step this call ran, (step, loss).
    pub losses: Vec<(usize, f64)>,
    /// Dev scores, (step, score).
    pub dev_scores: Vec<(usize, f64)>,
    /// True when the observer stopped the run before `max_steps`.
    pub stopped: bool,
}

/// One prompt's scores on a task.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub predictions: Vec<i64>,
    /// Mean cross-entropy over the label words.
    pub loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
}

impl Evaluation {
    pub fn score(&self, metric: Metric) -> f64 {
        match metric {
            Metric::MacroF1 => self.macro_f1,
            _ => self.accuracy,
        }
    }
}

/// What [`tune`] needs from a frozen model: the prompt's shape, a differentiable loss on a
/// micro-batch, and a score on a whole split. [`EncoderModel`] implements it over
/// [`TaskData`], [`T5Backbone`](super::t5data::T5Backbone) over
/// [`T5Data`](super::t5data::T5Data).
pub trait PromptModel {
    /// A task's split, encoded for this model.
    type Data;
    fn device(&self) -> Device;
    /// A prompt's width: the hidden size.
    fn prompt_width(&self) -> i64;
    /// Rows of the input word embeddings that `Init::Vocab` samples from.
    fn vocab_size(&self) -> i64;
    /// The standard deviation of `Init::Random`: how the official code initialises the prompt
    /// embedding of this model family.
    fn random_init_std(&self) -> f64;
    /// The input word embeddings [V, d].
    fn input_embeddings(&self) -> &Tensor;
    /// Checks that `prompt` is [L, d] (or [K, L, d]) with this model's width.
    fn check_prompt(&self, prompt: &Tensor, what: &str) -> MlResult<()>;
    /// Checks `data` before any tensor sees it, for prompts of `prompt_len` tokens.
    fn check_data(&self, data: &Self::Data, prompt_len: usize) -> MlResult<()>;
    fn data_len(&self, data: &Self::Data) -> usize;
    /// The mean training loss of examples `idx` with `prompt` in front (autograd on).
    fn micro_batch_loss(
        &self,
        prompt: &Tensor,
        data: &Self::Data,
        idx: &[usize],
    ) -> MlResult<Tensor>;
    /// [`Self::micro_batch_loss`] of a training step with dropout `p` inside the frozen model.
    /// A model without dropout refuses `p > 0` rather than ignore it.
    fn train_loss(
        &self,
        prompt: &Tensor,
        data: &Self::Data,
        idx: &[usize],
        p: f64,
    ) -> MlResult<Tensor> {
        if p > 0.0 {
            return Err(MlError::Invalid(format!(
                "dropout {p}: this model trains without dropout only"
            )));
        }
        self.micro_batch_loss(prompt, data, idx)
    }
    /// `metric` of `prompt` on all of `data`, without autograd: the dev score.
    fn score(
        &self,
        prompt: &Tensor,
        data: &Self::Data,
        metric: Metric,
        eval_batch_size: usize,
    ) -> MlResult<f64>;
}

impl PromptModel for EncoderModel {
    type Data = TaskData;

    fn device(&self) -> Device {
        self.device
    }

    fn prompt_width(&self) -> i64 {
        self.hidden_size()
    }

    fn vocab_size(&self) -> i64 {
        self.config.vocab_size
    }

    /// 0.02: the prompt embedding is a module of the official RoBERTa/BERT, so their
    /// `_init_weights` draws it from Normal(0, initializer_range) (modelling_roberta.py:125-132).
    fn random_init_std(&self) -> f64 {
        0.02
    }

    fn input_embeddings(&self) -> &Tensor {
        self.word_embeddings()
    }

    fn check_prompt(&self, prompt: &Tensor, what: &str) -> MlResult<()> {
        EncoderModel::check_prompt(self, prompt, what)
    }

    fn check_data(&self, data: &TaskData, prompt_len: usize) -> MlResult<()> {
        check_data(self, data, prompt_len)
    }

    fn data_len(&self, data: &TaskData) -> usize {
        data.len()
    }

    fn micro_batch_loss(
        &self,
        prompt: &Tensor,
        data: &TaskData,
        idx: &[usize],
    ) -> MlResult<Tensor> {
        let label_ids = Tensor::from_slice(&data.label_ids).to(self.device);
        batch_loss(self, prompt, data, idx, &label_ids)
    }

    fn train_loss(
        &self,
        prompt: &Tensor,
        data: &TaskData,
        idx: &[usize],
        p: f64,
    ) -> MlResult<Tensor> {
        let label_ids = Tensor::from_slice(&data.label_ids).to(self.device);
        loss_with_dropout(self, prompt, data, idx, &label_ids, p)
    }

    fn score(
        &self,
        prompt: &Tensor,
        data: &TaskData,
        metric: Metric,
        eval_batch_size: usize,
    ) -> MlResult<f64> {
        let eval = evaluate_prompts(self, &[prompt], data, eval_batch_size)?;
        eval.first()
            .map(|e| e.score(metric))
            .ok_or_else(|| MlError::Invalid("no evaluation for the prompt".into()))
    }
}

/// The initial prompt [L, d] on the model's device.
pub fn init_prompt<M: PromptModel + ?Sized>(
    model: &M,
    init: &Init<PathBuf>,
    prompt_len: usize,
    seed: u64,
) -> MlResult<Tensor> {
    let d = model.prompt_width();
    let mut rng = SplitMix64::new(seed ^ 0x05EE_D0F9_A0E7);
    let std = model.random_init_std();
    let prompt = match init {
        Init::Random => {
            let values: Vec<f32> = (0..prompt_len * d as usize)
                .map(|_| (rng.normal() * std) as f32)
                .collect();
            Tensor::from_slice(&values).view([prompt_len as i64, d])
        }
        Init::Vocab => {
            let vocab = model.vocab_size() as u64;
            let ids: Vec<i64> = (0..prompt_len).map(|_| rng.below(vocab) as i64).collect();
            model
                .input_embeddings()
                .index_select(0, &Tensor::from_slice(&ids).to(model.device()))
                .to_device(tch::Device::Cpu)
        }
        Init::From(path) => PromptFile::load(path, Some(d))?.prompt,
    };
    Ok(prompt.to_kind(Kind::Float).to(model.device()).detach())
}

/// Checks `data` against the model before any tensor sees it (TaskData's fields are public,
/// so it may not come from [`TaskData::encode`]): ids in the vocabulary, labels in range, and
/// every input fitting next to a prompt of `prompt_len` tokens.
pub(crate) fn check_data(model: &EncoderModel, data: &TaskData, prompt_len: usize) -> MlResult<()> {
    let vocab = model.config.vocab_size;
    let in_vocab = |i: &i64| (0..vocab).contains(i);
    if data.label_ids.is_empty() || !data.label_ids.iter().all(in_vocab) {
        return Err(MlError::Invalid(format!(
            "label ids {:?} are not in the vocabulary (0..{vocab})",
            data.label_ids
        )));
    }
    if data.labels.len() != data.inputs.len() {
        return Err(MlError::Invalid(format!(
            "{} labels for {} inputs",
            data.labels.len(),
            data.inputs.len()
        )));
    }
    if let Some(l) = data
        .labels
        .iter()
        .find(|l| !(0..data.label_ids.len() as i64).contains(l))
    {
        return Err(MlError::Invalid(format!(
            "label {l} but only {} label words",
            data.label_ids.len()
        )));
    }
    for (n, e) in data.inputs.iter().enumerate() {
        if e.mask_index >= e.ids.len() || !e.ids.iter().all(in_vocab) {
            return Err(MlError::Invalid(format!(
                "input {n}: token ids outside the vocabulary or mask index out of range"
            )));
        }
    }
    let max_positions = model.config.max_tokens();
    let longest = data.inputs.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let fits = match model.layout {
        Layout::Prefix => prompt_len + longest <= max_positions,
        Layout::Official => longest <= max_positions + 1 && prompt_len >= 1,
    };
    if fits {
        Ok(())
    } else {
        Err(MlError::PromptTooLong {
            prompt_len,
            template_len: longest,
            max_positions,
        })
    }
}

/// The prompt-tuning loss of examples `idx` of `data` (checked by [`check_data`]): the mean
/// cross-entropy of the label-word scores at the mask with `prompt` in front. Shared with the
/// projector's task objective, so that both optimize the same quantity.
pub(crate) fn batch_loss(
    model: &EncoderModel,
    prompt: &Tensor,
    data: &TaskData,
    idx: &[usize],
    label_ids: &Tensor,
) -> MlResult<Tensor> {
    loss_with_dropout(model, prompt, data, idx, label_ids, 0.0)
}

/// [`batch_loss`] with dropout `p` inside the frozen model.
fn loss_with_dropout(
    model: &EncoderModel,
    prompt: &Tensor,
    data: &TaskData,
    idx: &[usize],
    label_ids: &Tensor,
    p: f64,
) -> MlResult<Tensor> {
    let inputs: Vec<_> = idx.iter().map(|&i| &data.inputs[i]).collect();
    let labels: Vec<i64> = idx.iter().map(|&i| data.labels[i]).collect();
    let batch = model.batch(&inputs);
    let scores = model.label_scores_train(prompt, &batch, label_ids, p)?;
    Ok(scores
        .to_kind(Kind::Float)
        .cross_entropy_for_logits(&Tensor::from_slice(&labels).to(model.device)))
}

/// AdamW state of the prompt: the update of `transformers.AdamW`, which the official code
/// uses (model/optimizer.py:2,31): betas 0.9/0.999, `eps` added to sqrt(v) before bias
/// correction (torch.optim.AdamW adds it after: the two differ by eps·(1/sqrt(1-β2^t) - 1)).
struct AdamW {
    m: Tensor,
    v: Tensor,
    t: usize,
    eps: f64,
}

impl AdamW {
    fn step(&mut self, p: &mut Tensor, g: &Tensor, lr: f64, wd: f64) {
        let (b1, b2, eps) = (0.9, 0.999, self.eps);
        self.t += 1;
        tch::no_grad(|| {
            let _ = self.m.g_mul_scalar_(b1).g_add_(&(g * (1.0 - b1)));
            let _ = self.v.g_mul_scalar_(b2).g_add_(&(g * g * (1.0 - b2)));
            let bc1 = 1.0 - b1.powi(self.t as i32);
            let bc2 = 1.0 - b2.powi(self.t as i32);
            let denom = self.v.sqrt() + eps;
            let _ = p.g_sub_(&(&self.m / denom * (lr * bc2.sqrt() / bc1)));
            // transformers.AdamW decays after the Adam step.
            if wd > 0.0 {
                let _ = p.g_mul_scalar_(1.0 - lr * wd);
            }
        });
    }
}

/// The torch seed of micro-batch `a` of step `step`: dropout masks are a pure function of
/// (seed, step, micro-batch), so a resumed run drops what an uninterrupted one would.
fn dropout_seed(seed: u64, step: usize, a: usize) -> i64 {
    let mut rng = SplitMix64::new(seed ^ 0xD80F_0A75_EED5 ^ ((step as u64) << 20) ^ a as u64);
    (rng.next_u64() >> 1) as i64
}

/// Tunes a prompt on `train`, evaluating on `dev` (when given) to keep the best one. Resumes
/// from `resume` when given. Deterministic for a seed on the CPU.
pub fn tune<M: PromptModel + ?Sized>(
    model: &M,
    train: &M::Data,
    dev: Option<&M::Data>,
    cfg: &TuneConfig,
    resume: Option<Checkpoint>,
    observer: &mut dyn TuneObserver,
) -> MlResult<TuneOutcome> {
    if model.data_len(train) == 0 {
        return Err(MlError::Invalid("no training examples".into()));
    }
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return Err(MlError::Invalid(
            "batch_size and grad_accum must be at least 1".into(),
        ));
    }
    let eps_ok = cfg.adam_eps.is_finite() && cfg.adam_eps > 0.0;
    if !(0.0..1.0).contains(&cfg.dropout) || !eps_ok {
        return Err(MlError::Invalid(format!(
            "dropout {} must be in [0, 1) and adam_eps {} positive",
            cfg.dropout, cfg.adam_eps
        )));
    }
    tch::manual_seed(cfg.seed as i64);
    let device = model.device();
    let (mut prompt, mut adam, start, mut best) = match resume {
        Some(ck) => {
            model.check_prompt(&ck.prompt, "checkpoint prompt")?;
            let adam = AdamW {
                m: ck.adam_m.to(device),
                v: ck.adam_v.to(device),
                t: ck.step,
                eps: cfg.adam_eps,
            };
            (
                ck.prompt.to(device),
                adam,
                ck.step,
                (ck.best_prompt.to(device), ck.best_score, ck.best_step),
            )
        }
        None => {
            let p = init_prompt(model, &cfg.init, cfg.prompt_len, cfg.seed)?;
            model.check_prompt(&p, "initial prompt")?;
            let adam = AdamW {
                m: p.zeros_like(),
                v: p.zeros_like(),
                t: 0,
                eps: cfg.adam_eps,
            };
            let best = (p.copy(), None, 0);
            (p, adam, 0, best)
        }
    };
    let prompt_len = prompt.size()[0] as usize;
    if prompt_len == 0 || prompt.dim() != 2 {
        return Err(MlError::Invalid(format!(
            "the prompt to tune must be [L >= 1, d], not {:?}",
            prompt.size()
        )));
    }
    if adam.m.size() != prompt.size() || adam.v.size() != prompt.size() {
        return Err(MlError::Invalid(format!(
            "checkpoint: optimizer state {:?} / {:?} for a prompt {:?}",
            adam.m.size(),
            adam.v.size(),
            prompt.size()
        )));
    }
    model.check_data(train, prompt_len)?;
    if let Some(dev) = dev {
        model.check_data(dev, prompt_len)?;
    }
    let mut sampler = Sampler::new(cfg.seed, model.data_len(train));
    let checkpoint = |step: usize,
                      prompt: &Tensor,
                      adam: &AdamW,
                      best: &(Tensor, Option<f64>, usize)| Checkpoint {
        step,
        seed: cfg.seed,
        prompt: prompt.detach().copy(),
        adam_m: adam.m.copy(),
        adam_v: adam.v.copy(),
        best_prompt: best.0.copy(),
        best_score: best.1,
        best_step: best.2,
    };
    let mut outcome = TuneOutcome {
        best_prompt: Tensor::new(),
        best_score: None,
        best_step: 0,
        steps: start,
        losses: Vec::new(),
        dev_scores: Vec::new(),
        stopped: false,
    };
    prompt = prompt.set_requires_grad(true);
    for step in start..cfg.max_steps {
        let mut total = 0.0;
        for a in 0..cfg.grad_accum {
            let idx = sampler.micro_batch(step * cfg.grad_accum + a, cfg.batch_size);
            if cfg.dropout > 0.0 {
                tch::manual_seed(dropout_seed(cfg.seed, step, a));
            }
            let loss = model.train_loss(&prompt, train, &idx, cfg.dropout)?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(MlError::NanLoss { step: step + 1 });
            }
            total += value;
            (loss / cfg.grad_accum as f64).backward();
        }
        let mut grad = prompt.grad();
        adam.step(&mut prompt, &grad, cfg.lr, cfg.weight_decay);
        let _ = grad.zero_();
        let done = step + 1;
        let loss = total / cfg.grad_accum as f64;
        outcome.losses.push((done, loss));
        outcome.steps = done;
        observer.on_step(done, loss);
        let eval_now = (cfg.eval_every > 0 && done % cfg.eval_every == 0) || done == cfg.max_steps;
        if let (Some(dev), true) = (dev, eval_now) {
            let score = model.score(&prompt.detach(), dev, cfg.metric, cfg.eval_batch_size)?;
            let better = best.1.is_none_or(|b| score > b);
            if better {
                best = (prompt.detach().copy(), Some(score), done);
            }
            outcome.dev_scores.push((done, score));
            observer.on_eval(done, score, better);
        }
        let stop = done < cfg.max_steps && observer.should_stop();
        if stop || (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) {
            observer.on_checkpoint(&checkpoint(done, &prompt, &adam, &best))?;
        }
        if stop {
            outcome.stopped = true;
            break;
        }
    }
    if dev.is_none() {
        best = (prompt.detach().copy(), None, outcome.steps);
    }
    outcome.best_prompt = best.0.to_device(tch::Device::Cpu);
    outcome.best_score = best.1;
    outcome.best_step = best.2;
    Ok(outcome)
}

/// Scores every prompt of `prompts` (each [L, d], all the same L) on `data` without autograd.
/// The prompts share each forward pass: a batch holds `eval_batch_size` rows, examples
/// repeated once per prompt.
pub fn evaluate_prompts(
    model: &EncoderModel,
    prompts: &[&Tensor],
    data: &TaskData,
    eval_batch_size: usize,
) -> MlResult<Vec<Evaluation>> {
    let k = prompts.len();
    if k == 0 {
        return Ok(Vec::new());
    }
    for p in prompts {
        model.check_prompt(p, "prompt")?;
        if p.dim() != 2 || p.size() != prompts[0].size() {
            return Err(MlError::Invalid(format!(
                "prompts scored together must all have one shape [L, d]; got {:?} and {:?}",
                prompts[0].size(),
                p.size()
            )));
        }
    }
    let prompt_len = prompts[0].size()[0] as usize;
    check_data(model, data, prompt_len)?;
    let stacked = Tensor::stack(
        &prompts
            .iter()
            .map(|p| p.to(model.device).to_kind(Kind::Float))
            .collect::<Vec<_>>(),
        0,
    );
    let label_ids = Tensor::from_slice(&data.label_ids).to(model.device);
    let chunk = (eval_batch_size / k).max(1);
    // Batches of similar lengths pad little: in data order nearly every batch pads to the
    // longest text. Predictions go back to data order.
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| data.inputs[i].ids.len());
    let mut predictions = vec![vec![0i64; data.len()]; k];
    let mut losses = vec![0.0; k];
    tch::no_grad(|| -> MlResult<()> {
        for indices in order.chunks(chunk) {
            let n = indices.len() as i64;
            let inputs: Vec<&Encoded> = indices.iter().map(|&i| &data.inputs[i]).collect();
            let rows: Vec<&_> = (0..k).flat_map(|_| inputs.iter().copied()).collect();
            let batch = model.batch(&rows);
            let prompt_rows = stacked.repeat_interleave_self_int(n, Some(0), None);
            let scores = model
                .label_scores(&prompt_rows, &batch, &label_ids)?
                .to_kind(Kind::Float)
                .view([k as i64, n, -1]);
            let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();
            let labels = Tensor::from_slice(&labels).to(model.device);
            for (j, preds) in predictions.iter_mut().enumerate() {
                let s = scores.get(j as i64);
                let argmax = Vec::<i64>::try_from(s.argmax(-1, false).to_device(tch::Device::Cpu))?;
                for (&i, p) in indices.iter().zip(argmax) {
                    preds[i] = p;
                }
                losses[j] += s
                    .cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Sum, -100, 0.0)
                    .double_value(&[]);
            }
        }
        Ok(())
    })?;
    let n = data.len().max(1) as f64;
    Ok(predictions
        .into_iter()
        .zip(losses)
        .map(|(p, loss)| Evaluation {
            accuracy: metrics::accuracy(&p, &data.labels),
            macro_f1: metrics::macro_f1(&p, &data.labels, data.num_labels()),
            loss: loss / n,
            predictions: p,
        })
        .collect())
}
