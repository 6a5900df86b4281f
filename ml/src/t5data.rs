//! T5 prompt tuning on a task (docs/design.md, "T5"): the model folder's tokenizer, a task's split
//! encoded for T5 ([`T5Data`]), and [`T5Backbone`], the frozen model with its tokenizer, which
//! [`tune`](super::tune) trains prompts on (it implements [`PromptModel`]).
//!
//! * Input: the task's T5 template filled with the example's fields, nothing appended: a
//!   template that ends in `</s>` writes it (`"{sentence}</s>"`), as the official formatters
//!   differ per task (formatter/SST2PromptT5Formatter.py:50 appends it, MNLIPromptT5Formatter.py:46
//!   and IMDBPromptT5Formatter.py:49 do not). The longest field is cut until the ids fit
//!   `max_text_tokens` and, together with the prompt, the input length T5 was pre-trained with
//!   (`n_positions`, 512; relative attention has no hard limit); the template's own text,
//!   `</s>` included, is never cut.
//! * Target: classification, the label's T5 verbalizer word without `</s>` (every official
//!   formatter: `target = tokenizer.encode(word, add_special_tokens=False)`, e.g.
//!   SST2PromptT5Formatter.py:64), cut to the task's official `target_len` where the catalog
//!   gives one (MNLIPromptT5Formatter.py:64-67: "entailment" trains on its first two pieces);
//!   generation, the first gold text then `</s>`, at most
//!   `max_target_tokens` tokens in all. The official generation formatters leave `</s>` out too
//!   (squadPromptT5Formatter.py:61), but then greedy decoding never learns to stop, and the
//!   text metrics score whatever follows the answer: promptgrid keeps it there. The loss is the
//!   teacher-forced cross-entropy over every target token of a micro-batch (transformers'
//!   `labels=` loss).
//! * Score: classification: the argmax over the label words' first-token logits at decoding
//!   step 0 (accuracy or macro F1). Generation: greedy decoding of up to `max_target_tokens`
//!   tokens, scored against every gold text with the task's metric: SQuAD F1 or exact match
//!   (best over the golds, so NQ-Open's answer lists count), ROUGE-L (best over the references).
//!   Accuracy on a generation task is the exact-match rate.
//! * Padding: a micro-batch pads to its longest input and masks the pads, unless
//!   [`T5Data::train_width`] asks for the official training batches (see there).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use promptgrid_common::catalog::{Metric, Rows, T5Lengths, TaskDef, TaskKind};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use super::data::SplitFile;
use super::data::{self, Example, TextExample};
use super::error::{MlError, MlResult};
use super::metrics;
use super::t5::{self, GenerateOptions, T5Model};
use super::template::{TemplateTokenizer, fit};
use super::tokenizer::{pieces, tokenizer_error};
use super::train::PromptModel;
use super::{bleu, holdout, textmetrics};

/// Target tokens of a question-answering task: answers are short
/// (the official code trains on 20), 64 keeps the long tail whole.
pub const QA_TARGET_TOKENS: usize = 64;
/// Target tokens of a summarization task (SAMSum summaries fit; Multi-News ones are cut).
pub const SUMMARY_TARGET_TOKENS: usize = 128;

/// The target length a task trains and decodes with when the sweep does not say: 128 tokens
/// for `type = "summarization"`, else 64.
pub fn default_max_target_tokens(task: &TaskDef) -> usize {
    match task.task_type.as_str() {
        "summarization" => SUMMARY_TARGET_TOKENS,
        _ => QA_TARGET_TOKENS,
    }
}

/// A T5 `tokenizer.json` (SentencePiece unigram for the released checkpoints).
pub struct T5Tokenizer {
    inner: Tokenizer,
    path: PathBuf,
    eos_id: i64,
    /// Put into templates at `{sep}`.
    eos_token: String,
    /// What `convert_ids_to_tokens(..., skip_special_tokens=True)` drops: the special added
    /// tokens (pad, end, unknown, sentinels) and the end-of-sequence id.
    special_ids: HashSet<i64>,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl T5Tokenizer {
    /// Loads `path`; `eos_id` is the model config's end-of-sequence id, the token `{sep}` puts
    /// into a template.
    pub fn load(path: &Path, eos_id: i64) -> MlResult<T5Tokenizer> {
        let inner = super::tokenizer::load_tokenizer(path)?;
        let eos_token = u32::try_from(eos_id)
            .ok()
            .and_then(|id| inner.id_to_token(id))
            .ok_or_else(|| MlError::Tokenizer {
                path: path.into(),
                message: format!("the end-of-sequence id {eos_id} is not in the vocabulary"),
            })?;
        let special_ids = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| i64::from(id))
            .chain(std::iter::once(eos_id))
            .collect();
        Ok(T5Tokenizer {
            inner,
            path: path.into(),
            eos_id,
            eos_token,
            special_ids,
        })
    }

    /// Ids of `text` without special tokens.
    pub fn ids(&self, text: &str) -> MlResult<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tokenizer_error(&self.path, e))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Ids of `text` followed by end-of-sequence, as T5's tokenizer encodes an input. The end is
    /// appended here rather than by the file's post-processor, which not every export has.
    pub fn encode(&self, text: &str) -> MlResult<Vec<i64>> {
        let mut ids = self.ids(text)?;
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Text of generated ids, without special tokens (pads, end-of-sequence).
    pub fn decode(&self, ids: &[i64]) -> MlResult<String> {
        let ids: Vec<u32> = ids.iter().filter_map(|&i| u32::try_from(i).ok()).collect();
        self.inner
            .decode(&ids, true)
            .map_err(|e| tokenizer_error(&self.path, e))
    }

    /// The first token of each label word (what decoding step 0 is scored on). Two words that
    /// start with the same token could never be told apart, so they are an error.
    pub fn first_token_ids(&self, words: &[String]) -> MlResult<Vec<i64>> {
        let mut out: Vec<i64> = Vec::with_capacity(words.len());
        for word in words {
            let id = self.ids(word)?.first().copied().ok_or_else(|| {
                MlError::Invalid(format!("T5 label word {word:?} encodes to no token"))
            })?;
            if let Some(j) = out.iter().position(|&o| o == id) {
                return Err(MlError::Invalid(format!(
                    "T5 label words {:?} and {word:?} start with the same token {id}",
                    words[j]
                )));
            }
            out.push(id);
        }
        Ok(out)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token of the vocabulary (added tokens included), e.g. `<extra_id_0>`.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// The pieces of `ids` as the official BLEU reads them:
    /// `convert_ids_to_tokens(ids, skip_special_tokens=True)`.
    pub fn pieces(&self, ids: &[i64]) -> Vec<String> {
        ids.iter()
            .filter(|id| !self.special_ids.contains(id))
            .map(|&id| self.token(id))
            .collect()
    }

    /// The token of an id, or `<id>` when the vocabulary has none.
    pub fn token(&self, id: i64) -> String {
        u32::try_from(id)
            .ok()
            .and_then(|i| self.inner.id_to_token(i))
            .unwrap_or_else(|| format!("<{id}>"))
    }
}

impl TemplateTokenizer for T5Tokenizer {
    // Nothing appended: the template says where `</s>` goes (see the module).
    fn template_ids(&self, text: &str) -> MlResult<Vec<i64>> {
        self.ids(text)
    }
    fn field_pieces(&self, text: &str) -> MlResult<Vec<(String, usize)>> {
        pieces(&self.inner, &self.path, text)
    }
    // T5 reads its answer from the decoder: a `{mask}` has nothing to stand for.
    fn mask_text(&self) -> &str {
        ""
    }
    fn sep_text(&self) -> &str {
        &self.eos_token
    }
}

/// A frozen T5 with its tokenizer: what a worker keeps resident for T5 jobs.
#[derive(Debug)]
pub struct T5Backbone {
    pub model: T5Model,
    pub tokenizer: T5Tokenizer,
    /// The model folder's name, recorded in prompt files.
    pub name: String,
}

impl T5Backbone {
    /// Loads `config.json`, the weights and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, device: Device) -> MlResult<T5Backbone> {
        if !dir.is_dir() {
            return Err(MlError::MissingFile { path: dir.into() });
        }
        let model = t5::load(dir, device)?;
        let eos = model
            .config()
            .eos_token_ids()
            .first()
            .copied()
            .ok_or_else(|| MlError::Config {
                path: dir.join("config.json"),
                message: "eos_token_id is an empty list".into(),
            })?;
        let tokenizer = T5Tokenizer::load(&dir.join("tokenizer.json"), eos)?;
        if tokenizer.vocab_size() as i64 > model.config().vocab_size {
            return Err(MlError::Config {
                path: dir.join("config.json"),
                message: format!(
                    "vocab_size {} is smaller than the tokenizer's {} tokens",
                    model.config().vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(T5Backbone {
            model,
            tokenizer,
            name,
        })
    }

    pub fn d_model(&self) -> i64 {
        self.model.d_model()
    }

    /// How many input tokens fit next to a prompt of `prompt_len`, or the error saying it does
    /// not fit at all.
    fn input_budget(&self, prompt_len: usize, max_text_tokens: Option<usize>) -> MlResult<usize> {
        let max_positions = self.model.config().max_input_tokens();
        if prompt_len >= max_positions {
            return Err(MlError::PromptTooLong {
                prompt_len,
                template_len: 0,
                max_positions,
            });
        }
        let budget = max_positions - prompt_len;
        Ok(max_text_tokens.map_or(budget, |cap| budget.min(cap)))
    }

    /// `template` filled with each example's fields, fitted to the budget.
    fn encode_inputs<'e>(
        &self,
        template: &str,
        fields: impl Iterator<Item = &'e std::collections::BTreeMap<String, String>>,
        prompt_len: usize,
        max_text_tokens: Option<usize>,
    ) -> MlResult<Vec<Vec<i64>>> {
        let budget = self.input_budget(prompt_len, max_text_tokens)?;
        let max_positions = self.model.config().max_input_tokens();
        fields
            .map(|f| {
                fit(
                    &self.tokenizer,
                    template,
                    f,
                    budget,
                    prompt_len,
                    max_positions,
                )
            })
            .collect()
    }

    /// Rows of ids, right-padded, and their 1/0 mask, on the device.
    fn pad(&self, rows: &[&[i64]]) -> (Tensor, Tensor) {
        self.pad_to(rows, 0)
    }

    /// [`Self::pad`] to at least `min_width` tokens.
    fn pad_to(&self, rows: &[&[i64]], min_width: usize) -> (Tensor, Tensor) {
        let width = rows
            .iter()
            .map(|r| r.len())
            .max()
            .unwrap_or(0)
            .max(min_width);
        let pad = self.model.config().pad_token_id();
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut mask = Vec::with_capacity(rows.len() * width);
        for r in rows {
            ids.extend(
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, width - r.len())),
            );
            mask.extend((0..width).map(|j| i64::from(j < r.len())));
        }
        let shape = [rows.len() as i64, width as i64];
        let device = self.model.device();
        (
            Tensor::from_slice(&ids).view(shape).to(device),
            Tensor::from_slice(&mask).view(shape).to(device),
        )
    }

    fn input_batch(&self, data: &T5Data, idx: impl Iterator<Item = usize>) -> (Tensor, Tensor) {
        let rows: Vec<&[i64]> = idx.map(|i| data.inputs[i].as_slice()).collect();
        self.pad(&rows)
    }

    /// A training micro-batch: [`Self::input_batch`], or with [`T5Data::train_width`] every row
    /// padded to that width and every position attended, pads included.
    fn train_batch(&self, data: &T5Data, idx: &[usize]) -> (Tensor, Tensor) {
        let Some(width) = data.train_width else {
            return self.input_batch(data, idx.iter().copied());
        };
        let rows: Vec<&[i64]> = idx.iter().map(|&i| data.inputs[i].as_slice()).collect();
        let (ids, mask) = self.pad_to(&rows, width);
        (ids, mask.ones_like())
    }

    /// Classification: the predicted label of every example (argmax over the label words'
    /// first-token logits at decoding step 0).
    pub fn classify(
        &self,
        prompt: &Tensor,
        data: &T5Data,
        eval_batch_size: usize,
    ) -> MlResult<Vec<i64>> {
        let batch = eval_batch_size.max(1);
        let mut predictions = Vec::with_capacity(data.len());
        tch::no_grad(|| -> MlResult<()> {
            for start in (0..data.len()).step_by(batch) {
                let end = (start + batch).min(data.len());
                let (ids, mask) = self.input_batch(data, start..end);
                let scores = self
                    .model
                    .label_logits(Some(prompt), &ids, &mask, &data.label_ids)?;
                predictions.extend(Vec::<i64>::try_from(
                    scores.argmax(-1, false).to_device(Device::Cpu),
                )?);
            }
            Ok(())
        })?;
        Ok(predictions)
    }

    /// The official generation score ([`Metric::Bleu`]): greedy decoding within the task's
    /// official `min_length`/`max_length`, each hypothesis' pieces scored by
    /// [`bleu::official_bleu`] against its reference's, the mean over the examples. The official
    /// evaluator adds each batch's sum through `int()` (PromptT5.py:310), which lowers the
    /// score by about half an example per batch; that truncation is left out.
    pub fn official_bleu(
        &self,
        prompt: &Tensor,
        data: &T5Data,
        eval_batch_size: usize,
    ) -> MlResult<f64> {
        let lengths = data.lengths.as_ref().ok_or_else(|| {
            MlError::Invalid("bleu: the task has no [t5] lengths to decode and cut with".into())
        })?;
        if data.bleu_refs.len() != data.len() {
            return Err(MlError::Invalid(format!(
                "bleu: {} references for {} examples",
                data.bleu_refs.len(),
                data.len()
            )));
        }
        let options = GenerateOptions {
            max_new_tokens: (lengths.max_length as usize).saturating_sub(1),
            min_new_tokens: (lengths.min_length as usize).saturating_sub(1),
            keep_logits: false,
        };
        let rows = self.decode(prompt, data, eval_batch_size, options)?;
        let total: f64 = rows
            .iter()
            .zip(&data.bleu_refs)
            .map(|(row, reference)| {
                let hypothesis = self.tokenizer.pieces(&row[1..]);
                bleu::official_bleu(&hypothesis, &self.tokenizer.pieces(reference))
            })
            .sum();
        Ok(if data.is_empty() {
            0.0
        } else {
            total / data.len() as f64
        })
    }

    /// Every example's greedy decoding in batches of `eval_batch_size`: the decoder start, then
    /// the chosen tokens (pads after a row's end), as `generate` returns them.
    fn decode(
        &self,
        prompt: &Tensor,
        data: &T5Data,
        eval_batch_size: usize,
        options: GenerateOptions,
    ) -> MlResult<Vec<Vec<i64>>> {
        let batch = eval_batch_size.max(1);
        let mut rows = Vec::with_capacity(data.len());
        for start in (0..data.len()).step_by(batch) {
            let end = (start + batch).min(data.len());
            let (ids, mask) = self.input_batch(data, start..end);
            let out = self
                .model
                .greedy_generate(Some(prompt), &ids, &mask, options)?;
            rows.extend(Vec::<Vec<i64>>::try_from(
                &out.sequences.to_device(Device::Cpu),
            )?);
        }
        Ok(rows)
    }

    /// Generation: every example's greedily decoded text, at most `max_target_tokens` tokens.
    pub fn generate(
        &self,
        prompt: &Tensor,
        data: &T5Data,
        eval_batch_size: usize,
    ) -> MlResult<Vec<String>> {
        let options = GenerateOptions {
            max_new_tokens: data.max_target_tokens,
            min_new_tokens: 0,
            keep_logits: false,
        };
        let eos = self.model.config().eos_token_ids();
        self.decode(prompt, data, eval_batch_size, options)?
            .into_iter()
            .map(|row| {
                // Column 0 is the decoder start; a row ends at its first end-of-sequence.
                let tokens: Vec<i64> = row
                    .into_iter()
                    .skip(1)
                    .take_while(|t| !eos.contains(t))
                    .collect();
                self.tokenizer.decode(&tokens)
            })
            .collect()
    }
}

/// A task's examples encoded for T5.
#[derive(Debug, Clone)]
pub struct T5Data {
    pub kind: TaskKind,
    /// Encoder input ids per example (`</s>` only where the template writes it).
    pub inputs: Vec<Vec<i64>>,
    /// Teacher-forcing target ids per example: end-of-sequence only in generation targets.
    pub targets: Vec<Vec<i64>>,
    /// Classification: each example's label index; empty for generation.
    pub labels: Vec<i64>,
    /// Classification: the first token of each label word; empty for generation.
    pub label_ids: Vec<i64>,
    /// Generation: each example's gold texts; empty for classification.
    pub golds: Vec<Vec<String>>,
    /// The longest target in tokens, and generation's decode length.
    pub max_target_tokens: usize,
    /// The task's official T5 lengths, which [`Metric::Bleu`] decodes with.
    pub lengths: Option<T5Lengths>,
    /// Generation: each example's first gold text cut to the official `target_len` pieces,
    /// the reference of [`Metric::Bleu`] (squadPromptT5Formatter.py:61-66).
    pub bleu_refs: Vec<Vec<i64>>,
    /// Official T5 training: model/PromptT5.py:91 calls the model without `attention_mask`,
    /// and the formatters pad every input to `max_len + 2 + prompt_num` tokens
    /// (MNLIPromptT5Formatter.py:39, 52), so the pads are attended. When set, each training
    /// micro-batch pads its inputs (the prompt excluded) to this many tokens and attends to all
    /// of them. Scoring masks the pads either way, as the official `generate` does.
    pub train_width: Option<usize>,
}

impl T5Data {
    /// A classification split: `template` filled per example, targets the label words (cut to
    /// `target_len` tokens when given).
    pub fn classification(
        backbone: &T5Backbone,
        template: &str,
        label_words: &[String],
        examples: &[Example],
        prompt_len: usize,
        max_text_tokens: Option<usize>,
        target_len: Option<usize>,
    ) -> MlResult<T5Data> {
        let tok = &backbone.tokenizer;
        let label_ids = tok.first_token_ids(label_words)?;
        let words = label_words
            .iter()
            .map(|w| {
                let mut ids = tok.ids(w)?;
                if let Some(n) = target_len {
                    ids.truncate(n.max(1));
                }
                Ok(ids)
            })
            .collect::<MlResult<Vec<_>>>()?;
        let targets = examples
            .iter()
            .map(|e| {
                words.get(e.label).cloned().ok_or_else(|| {
                    MlError::Invalid(format!(
                        "label {} but only {} T5 label words",
                        e.label,
                        words.len()
                    ))
                })
            })
            .collect::<MlResult<Vec<_>>>()?;
        let inputs = backbone.encode_inputs(
            template,
            examples.iter().map(|e| &e.fields),
            prompt_len,
            max_text_tokens,
        )?;
        Ok(T5Data {
            kind: TaskKind::Classification,
            inputs,
            targets,
            labels: examples.iter().map(|e| e.label as i64).collect(),
            label_ids,
            golds: Vec::new(),
            max_target_tokens: words.iter().map(Vec::len).max().unwrap_or(1),
            lengths: None,
            bleu_refs: Vec::new(),
            train_width: None,
        })
    }

    /// A generation split: `template` filled per example, the target its first gold text cut
    /// to `max_target_tokens` (end-of-sequence included).
    pub fn generation(
        backbone: &T5Backbone,
        template: &str,
        examples: &[TextExample],
        prompt_len: usize,
        max_text_tokens: Option<usize>,
        max_target_tokens: usize,
    ) -> MlResult<T5Data> {
        if max_target_tokens < 2 {
            return Err(MlError::Invalid(format!(
                "max_target_tokens {max_target_tokens}: a target needs a token and the end"
            )));
        }
        let tok = &backbone.tokenizer;
        let targets = examples
            .iter()
            .map(|e| {
                let first = e.targets.first().ok_or_else(|| {
                    MlError::Invalid("a generation example without a gold text".into())
                })?;
                let mut ids = tok.ids(first)?;
                ids.truncate(max_target_tokens - 1);
                ids.push(tok.eos_id);
                Ok(ids)
            })
            .collect::<MlResult<Vec<_>>>()?;
        let inputs = backbone.encode_inputs(
            template,
            examples.iter().map(|e| &e.fields),
            prompt_len,
            max_text_tokens,
        )?;
        Ok(T5Data {
            kind: TaskKind::Generation,
            inputs,
            targets,
            labels: Vec::new(),
            label_ids: Vec::new(),
            golds: examples.iter().map(|e| e.targets.clone()).collect(),
            max_target_tokens,
            lengths: None,
            bleu_refs: Vec::new(),
            train_width: None,
        })
    }

    /// Reads `path` (a split of `task`) and encodes its first `limit` examples (0: all) with
    /// the task's T5 template and, for classification, its T5 label words.
    pub fn load(
        backbone: &T5Backbone,
        task: &TaskDef,
        path: &Path,
        prompt_len: usize,
        max_text_tokens: Option<usize>,
        max_target_tokens: usize,
        limit: usize,
    ) -> MlResult<T5Data> {
        let file = SplitFile {
            path,
            rows: Rows::All,
        };
        Self::load_rows(
            backbone,
            task,
            file,
            prompt_len,
            max_text_tokens,
            max_target_tokens,
            limit,
        )
    }

    /// [`Self::load`] of the rows of a split file that a role reads (a held-out dev set).
    pub fn load_rows(
        backbone: &T5Backbone,
        task: &TaskDef,
        file: SplitFile<'_>,
        prompt_len: usize,
        max_text_tokens: Option<usize>,
        max_target_tokens: usize,
        limit: usize,
    ) -> MlResult<T5Data> {
        let path = file.path;
        let template = &task.template.t5;
        let cut = |n: usize| if limit > 0 { n.min(limit) } else { n };
        let mut data = match task.kind {
            TaskKind::Classification => {
                let words = &task
                    .verbalizer
                    .as_ref()
                    .ok_or_else(|| MlError::Invalid(format!("task {}: no verbalizer", task.name)))?
                    .t5;
                let mut examples = data::load_split_rows(file, task)?;
                examples.truncate(cut(examples.len()));
                Self::classification(
                    backbone,
                    template,
                    words,
                    &examples,
                    prompt_len,
                    max_text_tokens,
                    task.t5.as_ref().map(|t| t.target_len as usize),
                )?
            }
            TaskKind::Generation => {
                let mut examples = holdout::select(
                    data::load_text_split(path, task)?,
                    file.rows,
                    &task.name,
                    path,
                )?;
                examples.truncate(cut(examples.len()));
                let mut data = Self::generation(
                    backbone,
                    template,
                    &examples,
                    prompt_len,
                    max_text_tokens,
                    max_target_tokens,
                )?;
                if let Some(t5) = &task.t5 {
                    data.bleu_refs = examples
                        .iter()
                        .map(|e| {
                            let first = e.targets.first().map_or("", String::as_str);
                            let mut ids = backbone.tokenizer.ids(first)?;
                            ids.truncate(t5.target_len as usize);
                            Ok(ids)
                        })
                        .collect::<MlResult<_>>()?;
                }
                data
            }
        };
        data.lengths = task.t5.clone();
        Ok(data)
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

/// Mean over the examples of the best `score` over each one's gold texts.
fn mean_best(
    predictions: &[String],
    golds: &[Vec<String>],
    score: impl Fn(&str, &[String]) -> MlResult<f64>,
) -> MlResult<f64> {
    if predictions.len() != golds.len() {
        return Err(MlError::Invalid(format!(
            "{} predictions for {} examples",
            predictions.len(),
            golds.len()
        )));
    }
    if predictions.is_empty() {
        return Ok(0.0);
    }
    let total = predictions
        .iter()
        .zip(golds)
        .map(|(p, g)| score(p, g))
        .sum::<MlResult<f64>>()?;
    Ok(total / predictions.len() as f64)
}

/// `metric` of generated texts against each example's gold texts (see the module).
pub fn generation_score(
    metric: Metric,
    predictions: &[String],
    golds: &[Vec<String>],
) -> MlResult<f64> {
    match metric {
        Metric::SquadF1 => mean_best(predictions, golds, textmetrics::max_token_f1::<String>),
        Metric::ExactMatch | Metric::Accuracy | Metric::MacroF1 => {
            mean_best(predictions, golds, textmetrics::max_exact_match::<String>)
        }
        Metric::RougeL => mean_best(predictions, golds, |p, refs| {
            refs.iter()
                .map(|r| textmetrics::rouge(r, p).rouge_l.fmeasure)
                .reduce(f64::max)
                .ok_or_else(|| MlError::Invalid("ROUGE: an example has no reference".into()))
        }),
        Metric::Bleu => Err(MlError::Invalid(
            "bleu scores decoded pieces, not texts: use T5Backbone::official_bleu".into(),
        )),
    }
}

impl PromptModel for T5Backbone {
    type Data = T5Data;

    fn device(&self) -> Device {
        self.model.device()
    }

    fn prompt_width(&self) -> i64 {
        self.d_model()
    }

    fn vocab_size(&self) -> i64 {
        self.model.config().vocab_size
    }

    /// 1: the official T5 prompt is an `nn.Embedding` (model/modeling_t5.py:1476) that T5's
    /// `_init_weights` (:728-770) never visits, so it keeps PyTorch's default Normal(0, 1).
    fn random_init_std(&self) -> f64 {
        1.0
    }

    fn input_embeddings(&self) -> &Tensor {
        self.model.word_embeddings()
    }

    fn check_prompt(&self, prompt: &Tensor, what: &str) -> MlResult<()> {
        let size = prompt.size();
        let width = size.last().copied().unwrap_or(0);
        if !(size.len() == 2 || size.len() == 3) || width != self.d_model() {
            return Err(MlError::PromptWidth {
                what: format!("{what} (shape {size:?})"),
                got: width,
                expected: self.d_model(),
            });
        }
        Ok(())
    }

    fn check_data(&self, data: &T5Data, prompt_len: usize) -> MlResult<()> {
        let n = data.inputs.len();
        let per_example = match data.kind {
            TaskKind::Classification => data.labels.len(),
            TaskKind::Generation => data.golds.len(),
        };
        if data.targets.len() != n || per_example != n {
            return Err(MlError::Invalid(format!(
                "T5 data: {n} inputs, {} targets, {per_example} labels or golds",
                data.targets.len()
            )));
        }
        let vocab = self.model.config().vocab_size;
        let in_vocab = |i: &i64| (0..vocab).contains(i);
        let rows = data.inputs.iter().chain(&data.targets);
        if let Some((i, _)) = rows
            .enumerate()
            .find(|(_, r)| r.is_empty() || !r.iter().all(in_vocab))
        {
            let (what, row) = if i < n {
                ("input", i)
            } else {
                ("target", i - n)
            };
            return Err(MlError::Invalid(format!(
                "T5 data: {what} {row} is empty or has ids outside the vocabulary (0..{vocab})"
            )));
        }
        if data.kind == TaskKind::Classification {
            let k = data.label_ids.len() as i64;
            if k == 0 || !data.label_ids.iter().all(in_vocab) {
                return Err(MlError::Invalid(format!(
                    "T5 label ids {:?} are not in the vocabulary (0..{vocab})",
                    data.label_ids
                )));
            }
            if let Some(l) = data.labels.iter().find(|l| !(0..k).contains(l)) {
                return Err(MlError::Invalid(format!(
                    "label {l} but only {k} label words"
                )));
            }
        }
        let max_positions = self.model.config().max_input_tokens();
        let longest = data.inputs.iter().map(Vec::len).max().unwrap_or(0);
        if prompt_len + longest > max_positions {
            return Err(MlError::PromptTooLong {
                prompt_len,
                template_len: longest,
                max_positions,
            });
        }
        Ok(())
    }

    fn data_len(&self, data: &T5Data) -> usize {
        data.len()
    }

    fn micro_batch_loss(&self, prompt: &Tensor, data: &T5Data, idx: &[usize]) -> MlResult<Tensor> {
        self.train_loss(prompt, data, idx, 0.0)
    }

    fn train_loss(
        &self,
        prompt: &Tensor,
        data: &T5Data,
        idx: &[usize],
        p: f64,
    ) -> MlResult<Tensor> {
        let (ids, mask) = self.train_batch(data, idx);
        let targets: Vec<&[i64]> = idx.iter().map(|&i| data.targets[i].as_slice()).collect();
        let (target, target_mask) = self.pad(&targets);
        Ok(self
            .model
            .teacher_forced_loss_dropout(Some(prompt), &ids, &mask, &target, &target_mask, p)?
            .to_kind(Kind::Float))
    }

    fn score(
        &self,
        prompt: &Tensor,
        data: &T5Data,
        metric: Metric,
        eval_batch_size: usize,
    ) -> MlResult<f64> {
        self.check_prompt(prompt, "prompt")?;
        match data.kind {
            TaskKind::Classification => {
                let predictions = self.classify(prompt, data, eval_batch_size)?;
                Ok(match metric {
                    Metric::MacroF1 => {
                        metrics::macro_f1(&predictions, &data.labels, data.label_ids.len())
                    }
                    _ => metrics::accuracy(&predictions, &data.labels),
                })
            }
            TaskKind::Generation if metric == Metric::Bleu => {
                self.official_bleu(prompt, data, eval_batch_size)
            }
            TaskKind::Generation => {
                let predictions = self.generate(prompt, data, eval_batch_size)?;
                generation_score(metric, &predictions, &data.golds)
            }
        }
    }
}
