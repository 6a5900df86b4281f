//! [`OneShotModel`] for both model kinds: an encoder reads its verbalizer's label scores (or the
//! whole vocabulary) at the mask, T5 the decoder's logits at the first decoding step.

use std::path::Path;

use promptgrid_common::catalog::{Metric, Rows, TaskDef, TaskKind};
use promptgrid_common::spec::PromptSettings;
use tch::{Device, Kind, Tensor};

use promptgrid_ml::data::SplitFile;
use promptgrid_ml::t5data::default_max_target_tokens;
use promptgrid_ml::{
    EVAL_BATCH, Encoded, EncoderModel, MlError, MlResult, PromptModel, T5Backbone, T5Data,
    TaskData, data, evaluate_prompts, metrics,
};

use super::{Input, OneShotModel, Scores};

impl OneShotModel for EncoderModel {
    type Input = Encoded;

    fn name(&self) -> &str {
        &self.name
    }

    fn peft_shape(&self) -> (i64, i64) {
        (
            self.config.num_hidden_layers,
            self.config.num_attention_heads,
        )
    }

    /// The task's encoder template and verbalizer ([`TaskData::encode`]).
    fn load_split(
        &self,
        task: &TaskDef,
        data_dir: &Path,
        (stem, rows): (&str, Rows),
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> MlResult<TaskData> {
        let max_text_tokens = settings.max_text_tokens as usize;
        let path = data::find_split(data_dir, stem)?;
        let mut examples = data::load_split_rows(SplitFile { path: &path, rows }, task)?;
        if limit > 0 {
            examples.truncate(limit);
        }
        TaskData::encode(self, task, &examples, prompt_len, Some(max_text_tokens))
    }

    /// All prompts in one batched pass.
    fn score_prompts(
        &self,
        task: &TaskDef,
        prompts: &[Tensor],
        data: &TaskData,
    ) -> MlResult<Vec<Scores>> {
        let refs: Vec<&Tensor> = prompts.iter().collect();
        Ok(evaluate_prompts(self, &refs, data, EVAL_BATCH)?
            .into_iter()
            .map(|e| Scores {
                value: e.score(task.metric),
                accuracy: Some(e.accuracy),
                macro_f1: Some(e.macro_f1),
            })
            .collect())
    }

    /// Text through tokenizer.json, with its special tokens.
    fn encode_input(&self, input: Input<'_>) -> MlResult<Encoded> {
        match input {
            Input::Text(t) => self.encode_text(t),
            Input::Ids(ids) => self.encode_ids(ids),
        }
    }

    /// The whole vocabulary's logits at the mask.
    fn readout_logits(
        &self,
        input: Encoded,
        prompt: Option<&Tensor>,
    ) -> MlResult<(Tensor, Vec<i64>, usize)> {
        let prompt = prompt.map_or_else(|| self.no_prompt(), Tensor::shallow_clone);
        let batch = self.batch(&[&input]);
        let logits = tch::no_grad(|| self.full_logits(&prompt, &batch))?
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        Ok((logits.get(0), input.ids, input.mask_index))
    }

    fn token(&self, id: i64) -> String {
        self.tokenizer.id_to_token(id)
    }
}

impl OneShotModel for T5Backbone {
    type Input = Vec<i64>;

    fn name(&self) -> &str {
        &self.name
    }

    fn peft_shape(&self) -> (i64, i64) {
        let c = self.model.config();
        (c.num_layers, c.num_heads)
    }

    /// The task's T5 template and label words (targets without `</s>`).
    fn load_split(
        &self,
        task: &TaskDef,
        data_dir: &Path,
        (stem, rows): (&str, Rows),
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> MlResult<T5Data> {
        let mut data = T5Data::load_rows(
            self,
            task,
            SplitFile {
                path: &data::find_split(data_dir, stem)?,
                rows,
            },
            prompt_len,
            Some(settings.max_text_tokens as usize),
            default_max_target_tokens(task),
            limit,
        )?;
        data.train_width = settings.official_width();
        Ok(data)
    }

    /// One prompt at a time: classification by the label words' first-token logits (with
    /// accuracy and macro F1), generation by decoding and the task's metric.
    fn score_prompts(
        &self,
        task: &TaskDef,
        prompts: &[Tensor],
        data: &T5Data,
    ) -> MlResult<Vec<Scores>> {
        prompts
            .iter()
            .map(|prompt| match task.kind {
                TaskKind::Classification => {
                    let predictions = self.classify(prompt, data, EVAL_BATCH)?;
                    let accuracy = metrics::accuracy(&predictions, &data.labels);
                    let macro_f1 =
                        metrics::macro_f1(&predictions, &data.labels, data.label_ids.len());
                    let value = match task.metric {
                        Metric::MacroF1 => macro_f1,
                        _ => accuracy,
                    };
                    Ok(Scores {
                        value,
                        accuracy: Some(accuracy),
                        macro_f1: Some(macro_f1),
                    })
                }
                TaskKind::Generation => Ok(Scores {
                    value: self.score(prompt, data, task.metric, EVAL_BATCH)?,
                    accuracy: None,
                    macro_f1: None,
                }),
            })
            .collect()
    }

    /// Text as T5's tokenizer encodes it (with `</s>`), or the ids as given.
    fn encode_input(&self, input: Input<'_>) -> MlResult<Vec<i64>> {
        let ids = match input {
            Input::Text(t) => self.tokenizer.encode(t)?,
            Input::Ids(ids) => ids,
        };
        let vocab = self.model.config().vocab_size;
        if ids.is_empty() || ids.iter().any(|i| !(0..vocab).contains(i)) {
            return Err(MlError::Invalid(format!(
                "T5 input ids {ids:?}: need at least one id, each in 0..{vocab}"
            )));
        }
        Ok(ids)
    }

    /// The decoder's logits at the first decoding step (input `decoder_start_token_id`), the
    /// step T5 classification is scored on; it reads no input position: index 0.
    fn readout_logits(
        &self,
        ids: Vec<i64>,
        prompt: Option<&Tensor>,
    ) -> MlResult<(Tensor, Vec<i64>, usize)> {
        let input = Tensor::from_slice(&ids)
            .view([1, ids.len() as i64])
            .to(self.device());
        let mask = input.ones_like();
        let logits = tch::no_grad(|| self.model.first_step_logits(prompt, &input, &mask))?
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        Ok((logits.get(0), ids, 0))
    }

    fn token(&self, id: i64) -> String {
        self.tokenizer.token(id)
    }
}
