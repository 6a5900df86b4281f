//! [`EncoderModel`]: a frozen BERT/RoBERTa with its tokenizer, the soft-prompt input layouts and
//! the label-word readouts.

use std::path::Path;

use promptgrid_common::spec::{Head, Layout};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::bert::{Dropout, Encoder, ObserveActivation, Rows};
use super::config::{EncoderConfig, Family};
use super::error::{MlError, MlResult};
use super::precision::Precision;
use super::tokenizer::EncoderTokenizer;
use super::weights;

/// One tokenized input: the template's ids with special tokens, and where its mask is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub mask_index: usize,
}

/// Padded token ids of several [`Encoded`] inputs, on the model's device.
#[derive(Debug)]
pub struct Batch {
    /// [N, T] token ids, right-padded.
    ids: Tensor,
    /// [N, T] 1 for tokens, 0 for padding.
    mask: Tensor,
    /// [N] the mask token's index in the text.
    mask_index: Tensor,
    /// Examples in the batch.
    pub len: usize,
}

/// A frozen encoder, its tokenizer, readout and layout. Cheap to share: forward passes take
/// `&self`.
#[derive(Debug)]
pub struct EncoderModel {
    /// Holds the frozen weights; the tensors in `encoder` are views into it.
    _vs: VarStore,
    encoder: Encoder,
    pub config: EncoderConfig,
    pub family: Family,
    pub tokenizer: EncoderTokenizer,
    pub head: Head,
    pub layout: Layout,
    pub device: Device,
    precision: Precision,
    /// The model folder's name, recorded in prompt files.
    pub name: String,
}

impl EncoderModel {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`. With
    /// `Head::Mlm` the checkpoint must carry its LM head.
    pub fn load(dir: &Path, head: Head, layout: Layout, device: Device) -> MlResult<EncoderModel> {
        if !dir.is_dir() {
            return Err(MlError::MissingFile { path: dir.into() });
        }
        let config = EncoderConfig::load(&dir.join("config.json"))?;
        let family = config.family().unwrap_or(Family::Bert);
        let tokenizer =
            EncoderTokenizer::load(&dir.join("tokenizer.json"), family, config.pad_token_id)?
                .with_official_encoding(layout == Layout::Official);
        if tokenizer.vocab_size() as i64 > config.vocab_size {
            return Err(MlError::Config {
                path: dir.join("config.json"),
                message: format!(
                    "vocab_size {} is smaller than the tokenizer's {} tokens",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        let mut vs = VarStore::new(device);
        let encoder = Encoder::new(&vs.root(), &config, family, head == Head::Mlm);
        let optional: &[&str] = if head == Head::Mlm {
            &[]
        } else {
            &["cls.", "lm_head."]
        };
        weights::load_into(&mut vs, &dir.join("model.safetensors"), optional)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(EncoderModel {
            _vs: vs,
            encoder,
            config,
            family,
            tokenizer,
            head,
            layout,
            device,
            precision: Precision::F32,
            name,
        })
    }

    /// Runs the frozen model's matrix products in `precision` from now on (see
    /// [`Precision`]). Float32 back from bf16 is not offered: the float32 weights are gone.
    pub fn set_precision(&mut self, precision: Precision) -> MlResult<()> {
        if self.precision == Precision::Bf16 && precision == Precision::F32 {
            return Err(MlError::Invalid(
                "the model's weights are already bf16; load it again for float32".into(),
            ));
        }
        self.encoder.convert_linears(precision.matmul_kind());
        self.precision = precision;
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn hidden_size(&self) -> i64 {
        self.config.hidden_size
    }

    /// The word-embedding matrix [V, d] (frozen), e.g. to initialise prompts from the vocabulary.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.encoder.embeddings.word_embeddings
    }

    /// How many text tokens fit next to a prompt of `prompt_len` tokens.
    pub fn text_budget(&self, prompt_len: usize) -> usize {
        match self.layout {
            Layout::Prefix => self.config.max_tokens().saturating_sub(prompt_len),
            // The mask leaves the text for prompt slot 0, so one more token fits.
            Layout::Official => self.config.max_tokens() + 1,
        }
    }

    /// Checks that `prompt` is [L, d] or [K, L, d] with this model's width.
    pub fn check_prompt(&self, prompt: &Tensor, what: &str) -> MlResult<()> {
        let size = prompt.size();
        let width = *size.last().unwrap_or(&0);
        if !(size.len() == 2 || size.len() == 3) || width != self.hidden_size() {
            return Err(MlError::PromptWidth {
                what: format!("{what} (shape {size:?})"),
                got: width,
                expected: self.hidden_size(),
            });
        }
        if self.layout == Layout::Official && size[size.len() - 2] == 0 {
            return Err(MlError::Invalid(
                "the official layout needs a prompt of at least one token".into(),
            ));
        }
        super::limits::check_prompt_len(
            &self.config,
            self.layout,
            size[size.len() - 2] as usize,
            &self.name,
        )
    }

    /// Pads `inputs` into a batch on the model's device.
    pub fn batch(&self, inputs: &[&Encoded]) -> Batch {
        let width = inputs.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(inputs.len() * width);
        let mut mask = Vec::with_capacity(inputs.len() * width);
        for e in inputs {
            ids.extend(e.ids.iter().copied().chain(std::iter::repeat_n(
                self.tokenizer.pad_id,
                width - e.ids.len(),
            )));
            mask.extend((0..width).map(|j| i64::from(j < e.ids.len())));
        }
        let n = inputs.len() as i64;
        let mask_index: Vec<i64> = inputs.iter().map(|e| e.mask_index as i64).collect();
        Batch {
            ids: Tensor::from_slice(&ids)
                .view([n, width as i64])
                .to(self.device),
            mask: Tensor::from_slice(&mask)
                .view([n, width as i64])
                .to(self.device),
            mask_index: Tensor::from_slice(&mask_index).to(self.device),
            len: inputs.len(),
        }
    }

    /// Builds the encoder input for `prompt` ([L, d], shared, or [N, L, d], one per example):
    /// (inputs_embeds, position ids, position keep, attention mask, readout rows).
    fn assemble(
        &self,
        prompt: &Tensor,
        batch: &Batch,
    ) -> (Tensor, Tensor, Option<Tensor>, Tensor, Tensor) {
        let n = batch.len as i64;
        let d = self.hidden_size();
        let prompt = if prompt.dim() == 2 {
            prompt.unsqueeze(0).expand([n, -1, -1], false)
        } else {
            prompt.shallow_clone()
        };
        let l = prompt.size()[1];
        let words = self
            .word_embeddings()
            .index_select(0, &batch.ids.flatten(0, -1))
            .view([n, -1, d]);
        let offset = self.config.position_offset();
        let opts = (Kind::Int64, self.device);
        match self.layout {
            Layout::Prefix => {
                let t = words.size()[1];
                let embeds = Tensor::cat(&[prompt.to_kind(words.kind()), words], 1);
                let mask =
                    Tensor::cat(&[Tensor::ones([n, l], opts), batch.mask.shallow_clone()], 1);
                let positions = Tensor::arange_start(offset, offset + l + t, opts);
                (embeds, positions, None, mask, &batch.mask_index + l)
            }
            Layout::Official => {
                // Drop the template's mask token; it moves to prompt slot 0.
                let t = words.size()[1];
                let idx = Tensor::arange(t, opts).unsqueeze(0);
                let keep = idx.ne_tensor(&batch.mask_index.unsqueeze(1));
                // Text positions in order, the mask's last. The keys are distinct: an unstable
                // argsort of 0/1 keys may (and on the CPU does) reorder the text.
                let key = &idx + keep.logical_not().to_kind(Kind::Int64) * t;
                let order = key.argsort(1, false);
                let words = words
                    .gather(1, &order.unsqueeze(-1).expand([n, t, d], false), false)
                    .narrow(1, 0, t - 1);
                let text_mask = batch.mask.gather(1, &order, false).narrow(1, 0, t - 1);
                let mask_emb = self
                    .word_embeddings()
                    .get(self.tokenizer.mask_id)
                    .view([1, 1, d])
                    .expand([n, 1, d], false);
                // The official forward writes the mask's embedding into slot 0 through `.data`
                // (modelling_roberta.py:198-202), which autograd does not see: the value is the
                // mask's, yet slot 0's gradient still flows to prompt row 0, which so trains
                // without ever entering a forward pass. `row0 - row0.detach()` is exactly zero
                // with gradient one: the same value, the same gradient.
                let row0 = prompt.narrow(1, 0, 1).to_kind(words.kind());
                let slot0 = mask_emb + (&row0 - row0.detach());
                let prompt = Tensor::cat(
                    &[slot0, prompt.narrow(1, 1, l - 1).to_kind(words.kind())],
                    1,
                );
                let embeds = Tensor::cat(&[prompt, words], 1);
                let mask = Tensor::cat(&[Tensor::ones([n, l], opts), text_mask], 1);
                let positions = Tensor::cat(
                    &[
                        Tensor::zeros([l], opts),
                        Tensor::arange_start(offset, offset + t - 1, opts),
                    ],
                    0,
                );
                let keep = Tensor::cat(
                    &[
                        Tensor::zeros([l], (Kind::Float, self.device)),
                        Tensor::ones([t - 1], (Kind::Float, self.device)),
                    ],
                    0,
                );
                (
                    embeds,
                    positions,
                    Some(keep),
                    mask,
                    Tensor::zeros([n], opts),
                )
            }
        }
    }

    /// The row of the assembled sequence that the readout reads, for an input whose mask is at
    /// `mask_index` of its ids behind a prompt of `prompt_len` tokens (as `assemble` places it).
    pub fn readout_position(&self, prompt_len: usize, mask_index: usize) -> usize {
        match self.layout {
            Layout::Prefix => prompt_len + mask_index,
            // The mask moved to prompt slot 0.
            Layout::Official => 0,
        }
    }

    /// Checks a prompt against a batch: [L, d] shared, or [N, L, d] one per example.
    fn check_rows(&self, prompt: &Tensor, batch: &Batch) -> MlResult<()> {
        self.check_prompt(prompt, "prompt")?;
        if prompt.dim() == 3 && prompt.size()[0] != batch.len as i64 {
            return Err(MlError::Invalid(format!(
                "{} prompt rows for a batch of {} inputs",
                prompt.size()[0],
                batch.len
            )));
        }
        if batch.len == 0 {
            return Err(MlError::Invalid("an empty batch".into()));
        }
        let longest = batch.ids.size()[1] as usize;
        let prompt_len = prompt.size()[prompt.dim() - 2] as usize;
        let max_positions = self.config.max_tokens();
        let fits = match self.layout {
            Layout::Prefix => prompt_len + longest <= max_positions,
            Layout::Official => longest <= max_positions + 1,
        };
        if !fits {
            return Err(MlError::PromptTooLong {
                prompt_len,
                template_len: longest,
                max_positions,
            });
        }
        Ok(())
    }

    /// The last layer's hidden state at the readout position, [N, d].
    pub fn readout_hidden(&self, prompt: &Tensor, batch: &Batch) -> MlResult<Tensor> {
        self.readout_hidden_dropout(prompt, batch, 0.0, None)
    }

    /// [`Self::readout_hidden`], handing every layer's FFN activation to `observe` (layer
    /// index, [N, S, I]; the last layer's holds only the readout row, [N, 1, I]).
    pub fn readout_hidden_with(
        &self,
        prompt: &Tensor,
        batch: &Batch,
        observe: &mut dyn FnMut(usize, &Tensor),
    ) -> MlResult<Tensor> {
        self.readout_hidden_dropout(prompt, batch, 0.0, Some(observe))
    }

    /// The readout hidden state with dropout `p` inside the frozen model, as PyTorch's
    /// `train()` mode runs it: on attention probabilities and on both residual branches; after
    /// the embeddings too in the prefix layout (HF's embeddings), not in the official one, whose
    /// embeddings comment it out (modelling_roberta.py:221, modelling_bert.py:336).
    fn readout_hidden_dropout(
        &self,
        prompt: &Tensor,
        batch: &Batch,
        p: f64,
        observe: Option<ObserveActivation<'_>>,
    ) -> MlResult<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(MlError::Invalid(format!(
                "dropout {p}: expected a probability in [0, 1)"
            )));
        }
        self.check_rows(prompt, batch)?;
        let (embeds, positions, keep, mask, readout) = self.assemble(prompt, batch);
        let drop = Dropout {
            embeddings: if self.layout == Layout::Prefix {
                p
            } else {
                0.0
            },
            attention: p,
            hidden: p,
        };
        Ok(self.encoder.forward_readout(
            &embeds,
            &positions,
            keep.as_ref(),
            &mask,
            &readout,
            drop,
            observe,
        ))
    }

    /// The last layer's hidden states at every position, [N, S, d], for hidden-state parity
    /// checks.
    pub fn hidden_states(&self, prompt: &Tensor, batch: &Batch) -> MlResult<Tensor> {
        self.check_rows(prompt, batch)?;
        let (embeds, positions, keep, mask, _) = self.assemble(prompt, batch);
        Ok(self
            .encoder
            .forward_all(&embeds, &positions, keep.as_ref(), &mask))
    }

    /// Tokenizes `text` (with the tokenizer's special tokens); it must hold one mask token.
    pub fn encode_text(&self, text: &str) -> MlResult<Encoded> {
        self.encode_ids(self.tokenizer.encode(text)?)
    }

    /// Wraps token ids (special tokens included) as an input, checking them against the
    /// vocabulary and locating the mask.
    pub fn encode_ids(&self, ids: Vec<i64>) -> MlResult<Encoded> {
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= self.config.vocab_size) {
            return Err(MlError::Invalid(format!(
                "token id {bad} is outside the vocabulary (0..{})",
                self.config.vocab_size
            )));
        }
        let mask_index = ids
            .iter()
            .position(|&i| i == self.tokenizer.mask_id)
            .ok_or_else(|| {
                MlError::Invalid(format!(
                    "the input has no mask token {} (id {})",
                    self.tokenizer.mask_token, self.tokenizer.mask_id
                ))
            })?;
        Ok(Encoded { ids, mask_index })
    }

    fn readout(&self, h: &Tensor, rows: Rows) -> MlResult<Tensor> {
        match self.head {
            Head::Tied => Ok(self.encoder.tied_logits(h, rows)),
            Head::Mlm => self.encoder.mlm_logits(h, rows).ok_or_else(|| {
                MlError::Invalid("head mlm but the model was loaded without its LM head".into())
            }),
        }
    }

    /// Class scores [N, K]: the readout at the mask for the label words `label_ids` [K].
    pub fn label_scores(
        &self,
        prompt: &Tensor,
        batch: &Batch,
        label_ids: &Tensor,
    ) -> MlResult<Tensor> {
        let h = self.readout_hidden(prompt, batch)?;
        self.readout(&h, Rows::Only(label_ids))
    }

    /// [`Self::label_scores`] of a training step: dropout `p` inside the frozen model (see
    /// [`Self::readout_hidden_dropout`]); 0 is [`Self::label_scores`].
    pub fn label_scores_train(
        &self,
        prompt: &Tensor,
        batch: &Batch,
        label_ids: &Tensor,
        p: f64,
    ) -> MlResult<Tensor> {
        let h = self.readout_hidden_dropout(prompt, batch, p, None)?;
        self.readout(&h, Rows::Only(label_ids))
    }

    /// The whole vocabulary's logits at the readout position, [N, V] (`promptgrid inspect`).
    pub fn full_logits(&self, prompt: &Tensor, batch: &Batch) -> MlResult<Tensor> {
        let h = self.readout_hidden(prompt, batch)?;
        self.readout(&h, Rows::All)
    }

    /// An empty prompt [0, d] for inputs without one (prefix layout only).
    pub fn no_prompt(&self) -> Tensor {
        Tensor::zeros([0, self.hidden_size()], (Kind::Float, self.device))
    }

    /// Label ids as a tensor on the device, checking each word is one token.
    pub fn label_tensor(&self, words: &[String]) -> MlResult<Tensor> {
        Ok(Tensor::from_slice(&self.tokenizer.label_ids(words)?).to(self.device))
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (the first GPU when there is one, else the CPU).
/// A CUDA device loads libtorch's CUDA kernels first (cuda.rs) and must exist.
pub fn parse_device(s: &str) -> MlResult<Device> {
    let index = match s {
        "cpu" => return Ok(Device::Cpu),
        "auto" => {
            let gpu = crate::cuda::load().is_ok() && tch::Cuda::is_available();
            return Ok(if gpu { Device::Cuda(0) } else { Device::Cpu });
        }
        "cuda" => 0,
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                MlError::Invalid(format!("device {s:?}: expected cpu, cuda:N or auto"))
            })?,
    };
    crate::cuda::load().map_err(|why| {
        MlError::Invalid(format!(
            "device {s}: libtorch's CUDA kernels could not be loaded ({why}); a CPU-only torch has none"
        ))
    })?;
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(MlError::Invalid(match count {
            0 => format!("device {s}: no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES)"),
            n => format!("device {s}: only {n} CUDA devices"),
        }));
    }
    Ok(Device::Cuda(index))
}
