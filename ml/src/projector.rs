//! The cross-model projector (docs/design.md, "Cross-model projector"): maps a soft prompt of a source model, [L, d_src], to
//! one for a target model, [L, d_tgt]. The architecture is the official Prompt-Transferability
//! `AE_1_layer_mutiple_100_paper` (tools/projector.py): flatten, Linear(L·d_src → h), tanh,
//! Linear(h → L·d_tgt), reshape, LayerNorm(d_tgt) per token. Tensor names equal that module's
//! `state_dict` keys (`encoder.*`, `decoder.*`, `layer_norm.*`), so files map one to one.
//!
//! Two objectives train it, both with AdamW (eps 1e-6, no weight decay) as the official
//! tools/train_tool_cross.py:176 does: [`train_distance`] (MSE to the target model's own prompts
//! of the same tasks) and [`train_task`] (cross-entropy over the union of the training tasks'
//! label words, through the frozen target model, as model/crossPrompt.py:321 and
//! dataset/crossDataset.py do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use super::data::TaskData;
use super::error::{MlError, MlResult};
use super::model::EncoderModel;
use super::prompt::tensors_to_bytes;
use super::rng::{Draws, Sampler, SplitMix64};
use super::train::check_data;

/// The `format` metadata value of projector files.
pub const PROJECTOR_FORMAT: &str = "promptgrid-projector/1";

/// PyTorch's `nn.LayerNorm` default, which the official projector uses.
const LAYER_NORM_EPS: f64 = 1e-5;

/// The official projector optimizer's epsilon: `transformers.AdamW(eps=1e-06, lr=0.005,
/// weight_decay=0.0, correct_bias=True)` (tools/train_tool_cross.py:176).
pub const PROJECTOR_ADAM_EPS: f64 = 1e-6;

/// The tensors of a projector file, in the order they are checked on load: each check can then
/// blame one metadata field (d_tgt, then prompt_len, then hidden, then d_src).
const TENSORS: [&str; 6] = [
    "layer_norm.weight",
    "layer_norm.bias",
    "decoder.bias",
    "encoder.bias",
    "decoder.weight",
    "encoder.weight",
];

/// Settings of one projector training run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorConfig {
    /// Width of the hidden layer; the paper's 768. Used by the caller for [`Projector::new`].
    pub hidden: i64,
    /// AdamW's constant learning rate. The official value is 0.005, hard-coded in
    /// tools/train_tool_cross.py:176 (the configs' `learning_rate = 0.001` is never read).
    pub learning_rate: f64,
    pub steps: usize,
    /// Prompt pairs per step (`distance`) or examples per step (`task`).
    pub batch_size: usize,
    /// Seeds the order of pairs / examples; the weights' seed is [`Projector::new`]'s.
    pub seed: u64,
}

impl Default for ProjectorConfig {
    fn default() -> ProjectorConfig {
        ProjectorConfig {
            hidden: 768,
            learning_rate: 0.005,
            steps: 1000,
            batch_size: 16,
            seed: 0,
        }
    }
}

/// What a projector was trained for and on, stored in its file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectorMeta {
    pub src_model: String,
    pub tgt_model: String,
    /// `distance` or `task`.
    pub objective: String,
    /// Stored as a comma list, so a name may not hold a comma.
    pub train_tasks: Vec<String>,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorOutcome {
    /// Steps taken.
    pub steps: usize,
    pub first_loss: f64,
    pub final_loss: f64,
    /// True when `on_step` stopped the run before `cfg.steps`.
    pub stopped: bool,
    /// The loss of every step, (step, loss), steps counted from 1.
    pub losses: Vec<(usize, f64)>,
}

/// A cross-model projector with its trainable weights.
#[derive(Debug)]
pub struct Projector {
    /// Owns the weights; the optimizer is built on it alone (the target model stays frozen).
    vs: VarStore,
    encoder_w: Tensor,
    encoder_b: Tensor,
    decoder_w: Tensor,
    decoder_b: Tensor,
    norm_w: Tensor,
    norm_b: Tensor,
    prompt_len: i64,
    d_src: i64,
    d_tgt: i64,
    hidden: i64,
}

/// Uniform(-bound, bound) values from our own generator: the init is a pure function of the
/// seed, whatever else uses torch's global generator (tests run in parallel threads).
fn uniform(rng: &mut SplitMix64, shape: &[i64], bound: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
        .collect();
    Tensor::from_slice(&values).view(shape)
}

/// Where an in-memory projector's errors say it came from.
const BYTES_ORIGIN: &str = "(projector bytes)";

impl Projector {
    /// A fresh projector. Weights and biases of both layers start as PyTorch's `nn.Linear`
    /// default, U(±1/√fan_in); the LayerNorm as the identity affine map.
    pub fn new(
        prompt_len: i64,
        d_src: i64,
        d_tgt: i64,
        hidden: i64,
        seed: u64,
        device: Device,
    ) -> MlResult<Projector> {
        check_dims(prompt_len, d_src, d_tgt, hidden)?;
        let mut rng = SplitMix64::new(seed ^ 0x9F0_1EC7_0A5E_ED00);
        let (n_in, n_out) = (prompt_len * d_src, prompt_len * d_tgt);
        let (b_in, b_h) = (1.0 / (n_in as f64).sqrt(), 1.0 / (hidden as f64).sqrt());
        let tensors = [
            uniform(&mut rng, &[hidden, n_in], b_in),
            uniform(&mut rng, &[hidden], b_in),
            uniform(&mut rng, &[n_out, hidden], b_h),
            uniform(&mut rng, &[n_out], b_h),
            Tensor::ones([d_tgt], (Kind::Float, Device::Cpu)),
            Tensor::zeros([d_tgt], (Kind::Float, Device::Cpu)),
        ];
        Projector::from_tensors(prompt_len, d_src, d_tgt, hidden, tensors, device)
    }

    /// Builds the VarStore from (encoder w, b, decoder w, b, layer-norm w, b), shapes checked.
    fn from_tensors(
        prompt_len: i64,
        d_src: i64,
        d_tgt: i64,
        hidden: i64,
        [ew, eb, dw, db, nw, nb]: [Tensor; 6],
        device: Device,
    ) -> MlResult<Projector> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let (enc, dec, norm) = (&root / "encoder", &root / "decoder", &root / "layer_norm");
        Ok(Projector {
            encoder_w: enc.f_var_copy("weight", &ew)?,
            encoder_b: enc.f_var_copy("bias", &eb)?,
            decoder_w: dec.f_var_copy("weight", &dw)?,
            decoder_b: dec.f_var_copy("bias", &db)?,
            norm_w: norm.f_var_copy("weight", &nw)?,
            norm_b: norm.f_var_copy("bias", &nb)?,
            vs,
            prompt_len,
            d_src,
            d_tgt,
            hidden,
        })
    }

    pub fn prompt_len(&self) -> i64 {
        self.prompt_len
    }
    pub fn d_src(&self) -> i64 {
        self.d_src
    }
    pub fn d_tgt(&self) -> i64 {
        self.d_tgt
    }
    pub fn hidden(&self) -> i64 {
        self.hidden
    }
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Checks that `src` is [L, d_src] or [B, L, d_src] for this projector.
    pub fn check_source(&self, src: &Tensor, what: &str) -> MlResult<()> {
        check_prompt(src, what, self.prompt_len, self.d_src, "width (d_src)")
    }

    /// Projects [L, d_src] to [L, d_tgt] (or [B, L, d_src] to [B, L, d_tgt]) on the projector's
    /// device, keeping the graph for training.
    pub fn forward(&self, src: &Tensor) -> MlResult<Tensor> {
        self.check_source(src, "source prompt")?;
        let batched = src.dim() == 3;
        let x = src.to_device(self.device()).to_kind(Kind::Float);
        let b = if batched { x.size()[0] } else { 1 };
        let out = x
            .reshape([b, self.prompt_len * self.d_src])
            .linear(&self.encoder_w, Some(&self.encoder_b))
            .tanh()
            .linear(&self.decoder_w, Some(&self.decoder_b))
            .view([b, self.prompt_len, self.d_tgt])
            .layer_norm(
                [self.d_tgt],
                Some(&self.norm_w),
                Some(&self.norm_b),
                LAYER_NORM_EPS,
                false,
            );
        Ok(if batched { out } else { out.squeeze_dim(0) })
    }

    /// [`Self::forward`] without autograd: the projected prompt to use or store.
    pub fn project(&self, src: &Tensor) -> MlResult<Tensor> {
        tch::no_grad(|| self.forward(src)).map(|t| t.detach())
    }

    /// The safetensors bytes of the weights with `meta` and the dimensions as metadata.
    pub fn to_bytes(&self, meta: &ProjectorMeta) -> MlResult<Vec<u8>> {
        if let Some(t) = meta.train_tasks.iter().find(|t| t.contains(',')) {
            return Err(MlError::Invalid(format!(
                "projector metadata: task name {t:?} holds a comma (train_tasks is a comma list)"
            )));
        }
        let metadata: BTreeMap<String, String> = [
            ("format", PROJECTOR_FORMAT.to_string()),
            ("prompt_len", self.prompt_len.to_string()),
            ("d_src", self.d_src.to_string()),
            ("d_tgt", self.d_tgt.to_string()),
            ("hidden", self.hidden.to_string()),
            ("src_model", meta.src_model.clone()),
            ("tgt_model", meta.tgt_model.clone()),
            ("objective", meta.objective.clone()),
            ("train_tasks", meta.train_tasks.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let named: Vec<(&str, &Tensor)> = TENSORS.iter().copied().zip(self.tensors()).collect();
        tensors_to_bytes(&named, Some(&metadata), Path::new(BYTES_ORIGIN))
    }

    /// Reads [`Self::to_bytes`]'s output, checking the metadata against the tensors.
    pub fn from_bytes(bytes: &[u8], device: Device) -> MlResult<(Projector, ProjectorMeta)> {
        decode(bytes, Path::new(BYTES_ORIGIN), device)
    }

    /// Writes a safetensors file (through a temporary file, so a crash leaves no half file).
    pub fn save(&self, path: &Path, meta: &ProjectorMeta) -> MlResult<()> {
        let bytes = self.to_bytes(meta)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| MlError::io(parent, e))?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| MlError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| MlError::io(path, e))
    }

    /// Reads a file written by [`Self::save`]; errors name the file and the field at fault.
    pub fn load(path: &Path, device: Device) -> MlResult<(Projector, ProjectorMeta)> {
        let bytes = std::fs::read(path).map_err(|e| MlError::io(path, e))?;
        decode(&bytes, path, device)
    }

    /// The weights in [`TENSORS`] order.
    fn tensors(&self) -> [&Tensor; 6] {
        [
            &self.norm_w,
            &self.norm_b,
            &self.decoder_b,
            &self.encoder_b,
            &self.decoder_w,
            &self.encoder_w,
        ]
    }
}

fn check_dims(prompt_len: i64, d_src: i64, d_tgt: i64, hidden: i64) -> MlResult<()> {
    if prompt_len < 1 || d_src < 1 || d_tgt < 1 || hidden < 1 {
        return Err(MlError::Invalid(format!(
            "projector dimensions must be at least 1: prompt_len {prompt_len}, d_src {d_src}, \
             d_tgt {d_tgt}, hidden {hidden}"
        )));
    }
    Ok(())
}

/// `t` must be [L, width] or [B, L, width].
fn check_prompt(
    t: &Tensor,
    what: &str,
    prompt_len: i64,
    width: i64,
    width_name: &'static str,
) -> MlResult<()> {
    let size = t.size();
    let what = format!("{what} of shape {size:?}");
    if !(size.len() == 2 || size.len() == 3) {
        return Err(MlError::Invalid(format!(
            "{what}: expected [L, d] or [B, L, d]"
        )));
    }
    let (len, got) = (size[size.len() - 2], size[size.len() - 1]);
    if len != prompt_len {
        return Err(MlError::ProjectorShape {
            what,
            field: "length (prompt_len)",
            got: len,
            expected: prompt_len,
        });
    }
    if got != width {
        return Err(MlError::ProjectorShape {
            what,
            field: width_name,
            got,
            expected: width,
        });
    }
    Ok(())
}

/// Parses and validates a projector's safetensors bytes; `path` names them in errors.
fn decode(bytes: &[u8], path: &Path, device: Device) -> MlResult<(Projector, ProjectorMeta)> {
    let bad = |field: &str, message: String| MlError::ProjectorFile {
        path: PathBuf::from(path),
        field: field.to_string(),
        message,
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| MlError::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| MlError::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })?;
    let meta = header.metadata().clone().unwrap_or_default();
    let text = |key: &str| {
        meta.get(key)
            .cloned()
            .ok_or_else(|| bad(key, "missing from the metadata".into()))
    };
    let format = text("format")?;
    if format != PROJECTOR_FORMAT {
        return Err(bad(
            "format",
            format!("{format:?}, expected {PROJECTOR_FORMAT:?}"),
        ));
    }
    let dim = |key: &str| -> MlResult<i64> {
        let v = text(key)?;
        v.parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(key, format!("{v:?} is not a positive integer")))
    };
    let (prompt_len, d_src, d_tgt, hidden) = (
        dim("prompt_len")?,
        dim("d_src")?,
        dim("d_tgt")?,
        dim("hidden")?,
    );
    let train_tasks = text("train_tasks")?;
    let info = ProjectorMeta {
        src_model: text("src_model")?,
        tgt_model: text("tgt_model")?,
        objective: text("objective")?,
        train_tasks: train_tasks
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let (n_in, n_out) = (prompt_len * d_src, prompt_len * d_tgt);
    // What each tensor's shape must be, and the field a mismatch blames given that the
    // tensors checked before it matched (see TENSORS).
    let expected: [(&[i64], &str); 6] = [
        (&[d_tgt], "d_tgt"),
        (&[d_tgt], "d_tgt"),
        (&[n_out], "prompt_len"),
        (&[hidden], "hidden"),
        (&[n_out, hidden], "hidden"),
        (&[hidden, n_in], "d_src"),
    ];
    if let Some(extra) = st.names().into_iter().find(|n| !TENSORS.contains(n)) {
        return Err(bad(extra, "unexpected tensor".into()));
    }
    let mut tensors = Vec::with_capacity(TENSORS.len());
    for (name, (shape, field)) in TENSORS.iter().zip(expected) {
        let view = st
            .tensor(name)
            .map_err(|_| bad(name, "tensor missing".into()))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(name, format!("dtype {:?}, expected F32", view.dtype())));
        }
        let got: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        if got != shape {
            return Err(bad(
                field,
                format!(
                    "the metadata (prompt_len {prompt_len}, d_src {d_src}, d_tgt {d_tgt}, \
                     hidden {hidden}) needs {name} of shape {shape:?}, but it is {got:?}"
                ),
            ));
        }
        let tensor = Tensor::f_from_data_size(view.data(), &got, Kind::Float)?;
        // NaN weights would project NaN prompts that score plausible-looking numbers.
        super::prompt::check_finite(&tensor, path, name)?;
        tensors.push(tensor);
    }
    // TENSORS order back to the constructor's (encoder, decoder, layer norm).
    let [nw, nb, db, eb, dw, ew]: [Tensor; 6] = tensors
        .try_into()
        .map_err(|_| bad("tensors", "wrong count".into()))?;
    let projector = Projector::from_tensors(
        prompt_len,
        d_src,
        d_tgt,
        hidden,
        [ew, eb, dw, db, nw, nb],
        device,
    )?;
    Ok((projector, info))
}

fn check_config(cfg: &ProjectorConfig) -> MlResult<()> {
    if cfg.steps == 0 || cfg.batch_size == 0 {
        return Err(MlError::Invalid(format!(
            "projector training needs steps and batch_size of at least 1 (got {} and {})",
            cfg.steps, cfg.batch_size
        )));
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return Err(MlError::Invalid(format!(
            "projector learning rate {} is not a positive number",
            cfg.learning_rate
        )));
    }
    Ok(())
}

/// `transformers.AdamW` (tools/train_tool_cross.py:176: betas 0.9/0.999, eps 1e-6, no weight
/// decay, `correct_bias=True`). Its update differs from `torch.optim.AdamW`'s where eps enters:
/// `p -= lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + eps)`, i.e. eps is not bias-corrected (torch divides
/// by `√v/√(1−β2ᵗ) + eps`), which matters while gradients are small.
struct HfAdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

impl HfAdamW {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;

    fn new(params: &[&Tensor]) -> HfAdamW {
        HfAdamW {
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
            t: 0,
        }
    }

    /// One update of every parameter from its gradient, which is then zeroed.
    fn step(&mut self, params: &[&Tensor], lr: f64) {
        self.t += 1;
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        let step_size = lr * (1.0 - b2.powi(self.t)).sqrt() / (1.0 - b1.powi(self.t));
        tch::no_grad(|| {
            for ((p, m), v) in params.iter().zip(&mut self.m).zip(&mut self.v) {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let update = &*m / (v.sqrt() + PROJECTOR_ADAM_EPS) * step_size;
                let _ = p.shallow_clone().g_sub_(&update);
                let _ = g.zero_();
            }
        });
    }
}

/// The shared loop: [`HfAdamW`] on the projector's weights alone, `loss(step)` per step (0-based),
/// `on_step(step, loss)` after each (1-based), stopping when it returns false.
fn run(
    p: &Projector,
    cfg: &ProjectorConfig,
    on_step: &mut dyn FnMut(usize, f64) -> bool,
    loss: &mut dyn FnMut(usize) -> MlResult<Tensor>,
) -> MlResult<ProjectorOutcome> {
    let params = p.tensors();
    let mut opt = HfAdamW::new(&params);
    let mut outcome = ProjectorOutcome {
        steps: 0,
        first_loss: f64::NAN,
        final_loss: f64::NAN,
        stopped: false,
        losses: Vec::with_capacity(cfg.steps),
    };
    for step in 0..cfg.steps {
        let l = loss(step)?;
        let value = l.double_value(&[]);
        if !value.is_finite() {
            return Err(MlError::NanLoss { step: step + 1 });
        }
        l.backward();
        opt.step(&params, cfg.learning_rate);
        let done = step + 1;
        if done == 1 {
            outcome.first_loss = value;
        }
        outcome.final_loss = value;
        outcome.steps = done;
        outcome.losses.push((done, value));
        if !on_step(done, value) && done < cfg.steps {
            outcome.stopped = true;
            break;
        }
    }
    Ok(outcome)
}

/// Trains `p` to map each source prompt to its target prompt, `pairs` = (P_src [L, d_src],
/// P_tgt [L, d_tgt]) of the same task. Each step takes `batch_size` pairs (all of them when
/// there are no more), in an order drawn from `cfg.seed`.
///
/// The distance is the mean squared error over elements, the paper's distance minimization
/// between the projected prompt and the target model's own prompt of the same task. The only
/// official code for it, model/crossPrompt_proj_and_target.py, is never run (model/__init__.py
/// registers `crossPrompt` from model/crossPrompt.py), and sums more than a distance:
/// `loss_total = loss + loss_target + loss_kl` (line 590), where `loss_kl` is
/// `nn.MSELoss(reduction='elementwise_mean')` (lines 482, 585) between the projected prompt and
/// the target encoder's single built-in prompt embedding (line 527, the same for every task,
/// never trained: only the projector is optimized, tools/train_tool_cross.py:176), `loss` the
/// task cross-entropy through the projected prompt, and `loss_target` one through that
/// built-in prompt (no gradient reaches the projector from it). promptgrid keeps the distance
/// alone, against prompts trained per task; a mean keeps the learning rate independent of L
/// and d_tgt.
pub fn train_distance(
    p: &mut Projector,
    pairs: &[(Tensor, Tensor)],
    cfg: &ProjectorConfig,
    on_step: &mut dyn FnMut(usize, f64) -> bool,
) -> MlResult<ProjectorOutcome> {
    check_config(cfg)?;
    if pairs.is_empty() {
        return Err(MlError::Invalid(
            "projector training (distance) needs at least one prompt pair".into(),
        ));
    }
    let device = p.device();
    let mut srcs = Vec::with_capacity(pairs.len());
    let mut tgts = Vec::with_capacity(pairs.len());
    for (i, (src, tgt)) in pairs.iter().enumerate() {
        if src.dim() != 2 || tgt.dim() != 2 {
            return Err(MlError::Invalid(format!(
                "prompt pair {i}: expected [L, d] prompts, got {:?} and {:?}",
                src.size(),
                tgt.size()
            )));
        }
        p.check_source(src, &format!("source prompt of pair {i}"))?;
        check_prompt(
            tgt,
            &format!("target prompt of pair {i}"),
            p.prompt_len,
            p.d_tgt,
            "width (d_tgt)",
        )?;
        srcs.push(src.detach().to_device(device).to_kind(Kind::Float));
        tgts.push(tgt.detach().to_device(device).to_kind(Kind::Float));
    }
    let (srcs, tgts) = (Tensor::stack(&srcs, 0), Tensor::stack(&tgts, 0));
    let n = pairs.len();
    let mut sampler = Sampler::new(cfg.seed, n);
    let p = &*p;
    run(p, cfg, on_step, &mut |step| {
        let (x, y) = if cfg.batch_size >= n {
            (srcs.shallow_clone(), tgts.shallow_clone())
        } else {
            let idx: Vec<i64> = sampler
                .micro_batch(step, cfg.batch_size)
                .into_iter()
                .map(|i| i as i64)
                .collect();
            let idx = Tensor::from_slice(&idx).to(device);
            (srcs.index_select(0, &idx), tgts.index_select(0, &idx))
        };
        Ok(p.forward(&x)?.mse_loss(&y, Reduction::Mean))
    })
}

/// The union verbalizer of the task objective: every distinct label token of `label_ids` (one
/// list per task), in order of first appearance, and each task's labels as positions in it.
/// The official projector scores all tasks over one shared list of label words and remaps every
/// task's labels into it (model/crossPrompt.py:321, dataset/crossDataset.py:534-577, 609, 657,
/// 698, 728, 757); the union of the training tasks' own label words is that list for the tasks
/// a projector is trained on.
pub fn union_verbalizer(label_ids: &[&[i64]]) -> (Vec<i64>, Vec<Vec<i64>>) {
    let mut union: Vec<i64> = Vec::new();
    let remap = label_ids
        .iter()
        .map(|ids| {
            ids.iter()
                .map(|id| {
                    let at = union.iter().position(|u| u == id).unwrap_or_else(|| {
                        union.push(*id);
                        union.len() - 1
                    });
                    at as i64
                })
                .collect()
        })
        .collect();
    (union, remap)
}

/// Trains `p` on the target tasks' loss: step `s` takes task `s mod T` (round robin), projects
/// its source prompt and scores a batch of the task's data at the mask over the union verbalizer
/// of all `tasks` ([`union_verbalizer`]), with cross-entropy against the remapped labels, as the
/// official crossPrompt.py:321-332 does. With one task, or tasks sharing their label words, this
/// is the prompt-tuning loss of [`crate::tune`]. Batches hold `batch_size` examples in the
/// order prompt tuning would draw them. `target` is frozen (its weights carry no gradient), so
/// the gradient reaches only the projector. Each `TaskData` must be encoded for `target` with
/// room for the prompt.
pub fn train_task(
    p: &mut Projector,
    target: &EncoderModel,
    tasks: &[(Tensor, &TaskData)],
    cfg: &ProjectorConfig,
    on_step: &mut dyn FnMut(usize, f64) -> bool,
) -> MlResult<ProjectorOutcome> {
    check_config(cfg)?;
    if tasks.is_empty() {
        return Err(MlError::Invalid(
            "projector training (task) needs at least one task".into(),
        ));
    }
    if target.hidden_size() != p.d_tgt {
        return Err(MlError::ProjectorShape {
            what: format!("target model {}", target.name),
            field: "hidden size (d_tgt)",
            got: target.hidden_size(),
            expected: p.d_tgt,
        });
    }
    let mut srcs = Vec::with_capacity(tasks.len());
    let mut samplers = Vec::with_capacity(tasks.len());
    for (i, (src, data)) in tasks.iter().enumerate() {
        if src.dim() != 2 {
            return Err(MlError::Invalid(format!(
                "source prompt of task {i}: expected [L, d_src], got {:?}",
                src.size()
            )));
        }
        p.check_source(src, &format!("source prompt of task {i}"))?;
        if data.is_empty() {
            return Err(MlError::Invalid(format!("task {i}: no training examples")));
        }
        check_data(target, data, p.prompt_len as usize)?;
        srcs.push(src.detach().to_device(p.device()).to_kind(Kind::Float));
        // A stream per task, so that adding a task leaves the others' batches as they were.
        let seed = cfg.seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        samplers.push(Sampler::new(seed, data.len()));
    }
    let ids: Vec<&[i64]> = tasks.iter().map(|(_, d)| d.label_ids.as_slice()).collect();
    let (union, remap) = union_verbalizer(&ids);
    let union = Tensor::from_slice(&union).to(target.device);
    let t = tasks.len();
    let p = &*p;
    run(p, cfg, on_step, &mut |step| {
        let task = step % t;
        let idx = samplers[task].micro_batch(step / t, cfg.batch_size);
        let prompt = p.forward(&srcs[task])?.to_device(target.device);
        let data = tasks[task].1;
        let inputs: Vec<_> = idx.iter().map(|&i| &data.inputs[i]).collect();
        let labels: Vec<i64> = idx
            .iter()
            .map(|&i| remap[task][data.labels[i] as usize])
            .collect();
        let scores = target.label_scores(&prompt, &target.batch(&inputs), &union)?;
        Ok(scores
            .to_kind(Kind::Float)
            .cross_entropy_for_logits(&Tensor::from_slice(&labels).to(target.device)))
    })
}
