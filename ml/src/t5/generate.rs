//! Batched decoding with cached keys and values, as transformers' `generate`: the encoder runs
//! once, the cross-attention keys and values are projected once, and each step feeds only the
//! newest token.
//!
//! * Greedy (`num_beams=1, do_sample=False`): a row that has emitted an end-of-sequence id gets
//!   `pad_token_id` from then on, until every row has finished.
//! * Beam search: a port of transformers 5's vectorised `_beam_search` (top `2k` candidates per
//!   step, finished hypotheses scored `sum log p / generated_len ^ length_penalty`, the same
//!   early-stop heuristic), so that the same beams win.

use tch::{Kind, Tensor};

use super::layers::{CrossInput, LayerCache};
use super::{EncoderOutput, T5Model, additive_mask};
use crate::{MlError, MlResult};

/// Settings of [`T5Model::greedy_generate`].
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// Steps at most; fewer when every row has ended.
    pub max_new_tokens: usize,
    /// Steps before which end-of-sequence cannot be chosen (transformers' `min_length` less the
    /// decoder start: `MinLengthLogitsProcessor` sets its score to -inf).
    pub min_new_tokens: usize,
    /// Keep each step's logits (memory: B x steps x vocab floats).
    pub keep_logits: bool,
}

/// What [`T5Model::greedy_generate`] produced.
#[derive(Debug)]
pub struct Generation {
    /// [B, 1 + steps]: `decoder_start_token_id`, then the chosen tokens (pads after a row's
    /// end-of-sequence), as `generate` returns them.
    pub sequences: Tensor,
    /// [B, steps, vocab], the raw logits of each step, when asked for.
    pub logits: Option<Tensor>,
}

/// Settings of [`T5Model::beam_generate`]; transformers' `generate` arguments of the same names.
#[derive(Debug, Clone, Copy)]
pub struct BeamOptions {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    /// Exponent of the generated length that divides a finished hypothesis' log-probability;
    /// transformers' default is 1.0.
    pub length_penalty: f64,
    /// Stop a row as soon as it has `num_beams` finished hypotheses (transformers' `True`);
    /// otherwise stop when the running beams cannot beat them (its default, `False`).
    pub early_stopping: bool,
}

/// What [`T5Model::beam_generate`] produced: the best hypothesis per row.
#[derive(Debug)]
pub struct BeamGeneration {
    /// [B, 1 + longest]: `decoder_start_token_id`, the tokens (end-of-sequence included), then
    /// `pad_token_id`.
    pub sequences: Tensor,
    /// [B]: the length-penalised log-probability (transformers' `sequences_scores`).
    pub scores: Tensor,
}

/// One incremental decoding pass over an encoded batch (rows may be beams).
struct Session<'m> {
    model: &'m T5Model,
    cross_kv: Vec<(Tensor, Tensor)>,
    cross_bias: Tensor,
    caches: Vec<LayerCache>,
    /// Tokens fed so far.
    step: i64,
}

impl<'m> Session<'m> {
    fn new(model: &'m T5Model, enc: &EncoderOutput) -> Session<'m> {
        let cross_kv: Vec<(Tensor, Tensor)> = model
            .decoder
            .blocks()
            .iter()
            .filter_map(|block| block.cross_kv(&enc.hidden_states))
            .collect();
        let caches = cross_kv.iter().map(|_| LayerCache::default()).collect();
        Session {
            model,
            cross_kv,
            cross_bias: additive_mask(&enc.attention_mask),
            caches,
            step: 0,
        }
    }

    /// Feeds `tokens` [N] and returns the next-token logits [N, vocab].
    fn feed(&mut self, tokens: &Tensor) -> MlResult<Tensor> {
        let model = self.model;
        // Generated ids come from the head, so they need no range check (which would sync).
        let x = Tensor::embedding(&model.shared, &tokens.unsqueeze(1), -1, false, false);
        // The new query sits at position `step` and sees keys 0..=step: no causal mask needed.
        let self_bias = model
            .decoder
            .position_bias(1, self.step + 1, self.step, model.device());
        let cross = CrossInput::Cached {
            kv: &self.cross_kv,
            bias: &self.cross_bias,
        };
        let h = model.decoder.forward(
            &x,
            &self_bias,
            Some(&mut self.caches),
            Some(cross),
            None,
            0.0,
        );
        self.step += 1;
        Ok(model.lm_logits(&h).select(1, 0))
    }

    fn reorder(&mut self, index: &Tensor) {
        for cache in &mut self.caches {
            cache.reorder(index);
        }
    }
}

/// Whether each token of `tokens` is one of `eos` ([n] int64), same shape as `tokens`.
fn is_eos(tokens: &Tensor, eos: &Tensor) -> Tensor {
    tokens.unsqueeze(-1).eq_tensor(eos).any_dim(-1, false)
}

fn is_true(t: &Tensor) -> MlResult<bool> {
    Ok(t.f_all()?.f_int64_value(&[])? != 0)
}

impl T5Model {
    /// Greedy decoding over `[P ; input]` (see [`T5Model::encode`] for the prompt's shapes).
    /// Runs without autograd.
    pub fn greedy_generate(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        options: GenerateOptions,
    ) -> MlResult<Generation> {
        tch::no_grad(|| {
            let enc = self.encode(prompt, input_ids, attention_mask)?;
            self.greedy(&enc, options)
        })
    }

    fn greedy(&self, enc: &EncoderOutput, options: GenerateOptions) -> MlResult<Generation> {
        let device = self.device();
        let b = enc.hidden_states.size()[0];
        if b == 0 {
            return Err(MlError::Invalid("generation: empty batch".into()));
        }
        let mut session = Session::new(self, enc);
        let eos = Tensor::from_slice(&self.config.eos_token_ids()).to_device(device);
        let pad = Tensor::full([b], self.config.pad_token_id(), (Kind::Int64, device));
        let mut token = Tensor::full(
            [b],
            self.config.decoder_start_token_id(),
            (Kind::Int64, device),
        );
        let mut sequence = vec![token.shallow_clone()];
        let mut logits = Vec::new();
        let mut finished = Tensor::zeros([b], (Kind::Bool, device));
        for step in 0..options.max_new_tokens {
            let step_logits = session.feed(&token)?;
            let choose = if step < options.min_new_tokens {
                step_logits.index_fill(1, &eos, f64::NEG_INFINITY)
            } else {
                step_logits.shallow_clone()
            };
            let next = choose
                .argmax(-1, false)
                .where_self(&finished.logical_not(), &pad);
            if options.keep_logits {
                logits.push(step_logits);
            }
            finished = finished.logical_or(&is_eos(&next, &eos));
            sequence.push(next.shallow_clone());
            token = next;
            if is_true(&finished)? {
                break;
            }
        }
        let vocab = self.config.vocab_size;
        Ok(Generation {
            sequences: Tensor::stack(&sequence, 1),
            logits: options.keep_logits.then(|| {
                if logits.is_empty() {
                    Tensor::zeros([b, 0, vocab], (Kind::Float, device))
                } else {
                    Tensor::stack(&logits, 1)
                }
            }),
        })
    }

    /// Beam search over `[P ; input]`, returning each row's best hypothesis. Runs without
    /// autograd.
    pub fn beam_generate(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        options: BeamOptions,
    ) -> MlResult<BeamGeneration> {
        if options.num_beams == 0 || options.max_new_tokens == 0 {
            return Err(MlError::Invalid(
                "beam search needs num_beams and max_new_tokens >= 1".into(),
            ));
        }
        tch::no_grad(|| {
            let enc = self.encode(prompt, input_ids, attention_mask)?;
            self.beam(&enc, options)
        })
    }

    fn beam(&self, enc: &EncoderOutput, options: BeamOptions) -> MlResult<BeamGeneration> {
        let device = self.device();
        let b = enc.hidden_states.size()[0];
        if b == 0 {
            return Err(MlError::Invalid("generation: empty batch".into()));
        }
        let k = options.num_beams as i64;
        let vocab = self.config.vocab_size;
        let max_length = 1 + options.max_new_tokens as i64;
        let eos_ids = self.config.eos_token_ids();
        let eos = Tensor::from_slice(&eos_ids).to_device(device);
        // Enough candidates that `k` survive even if all the best ones end here.
        let keep = 2.max(1 + eos_ids.len() as i64) * k;
        let top_k_mask = Tensor::arange(keep, (Kind::Int64, device))
            .lt(k)
            .unsqueeze(0);
        let float = (Kind::Float, device);
        let long = (Kind::Int64, device);

        // Rows are repeated per beam: row i's beams are rows i*k .. i*k + k.
        let beams = EncoderOutput {
            hidden_states: enc.hidden_states.repeat_interleave_self_int(k, 0, None),
            attention_mask: enc.attention_mask.repeat_interleave_self_int(k, 0, None),
        };
        let mut session = Session::new(self, &beams);

        let mut running = Tensor::full([b, k, max_length], self.config.pad_token_id(), long);
        let _ = running
            .select(2, 0)
            .fill_(self.config.decoder_start_token_id());
        let mut finished_seqs = running.copy();
        // Only the first beam is live at first, so the beams don't all pick the same token.
        let mut running_scores = Tensor::full([b, k], -1e9, float);
        let _ = running_scores.select(1, 0).fill_(0.0);
        let mut finished_scores = Tensor::full([b, k], -1e9, float);
        let mut is_finished = Tensor::zeros([b, k], (Kind::Bool, device));
        let mut improvable = Tensor::ones([b, 1], (Kind::Bool, device));
        // Per beam, the flat row (i*k + beam) each step's token came from; -1 where not generated.
        let mut running_origin = Tensor::full([b, k, max_length - 1], -1, long);
        let mut finished_origin = running_origin.copy();
        let batch_offset = Tensor::arange(b, long).view([-1, 1]) * k;

        let mut cur_len = 1i64;
        loop {
            let tokens = running.select(2, cur_len - 1).reshape([-1]);
            let logits = session.feed(&tokens)?;
            let log_probs = logits.log_softmax(-1, Kind::Float).view([b, k, vocab])
                + running_scores.unsqueeze(2);
            let (top_scores, top_index) =
                log_probs.reshape([b, k * vocab]).topk(keep, 1, true, true);

            let top_beam = top_index.floor_divide_scalar(vocab);
            let top_tokens = top_index.remainder(vocab);
            let gather = |t: &Tensor, index: &Tensor| t.take_along_dim(&index.unsqueeze(-1), 1);
            let top_seqs = gather(&running, &top_beam);
            top_seqs.select(2, cur_len).copy_(&top_tokens);
            let top_origin = gather(&running_origin, &top_beam);
            top_origin
                .select(2, cur_len - 1)
                .copy_(&(&top_beam + &batch_offset));

            // transformers' stopping criteria: an end-of-sequence token, or the maximum length.
            let hits = if cur_len + 1 >= max_length {
                top_tokens.ones_like().to_kind(Kind::Bool)
            } else {
                is_eos(&top_tokens, &eos)
            };

            // The best `k` candidates that go on.
            let top_running_scores = &top_scores + hits.to_kind(Kind::Float) * -1e9;
            let next = top_running_scores.topk(k, 1, true, true).1;
            running = gather(&top_seqs, &next);
            running_scores = top_running_scores.take_along_dim(&next, 1);
            running_origin = gather(&top_origin, &next);

            // Candidates among the top `k` that just ended compete with the finished ones.
            let just_finished = hits.logical_and(&top_k_mask);
            let mut scores = &top_scores / ((cur_len) as f64).powf(options.length_penalty);
            if options.early_stopping {
                scores += is_finished.all_dim(1, true).to_kind(Kind::Float) * -1e9;
            }
            scores += improvable.logical_not().to_kind(Kind::Float) * -1e9;
            scores += just_finished.logical_not().to_kind(Kind::Float) * -1e9;
            let merged_scores = Tensor::cat(&[&finished_scores, &scores], 1);
            let best = merged_scores.topk(k, 1, true, true).1;
            finished_seqs = gather(&Tensor::cat(&[&finished_seqs, &top_seqs], 1), &best);
            finished_scores = merged_scores.take_along_dim(&best, 1);
            finished_origin = gather(&Tensor::cat(&[&finished_origin, &top_origin], 1), &best);
            is_finished = Tensor::cat(&[&is_finished, &just_finished], 1).take_along_dim(&best, 1);

            session.reorder(&running_origin.select(2, cur_len - 1).reshape([-1]));
            cur_len += 1;

            // Can a running beam still beat the worst finished one (at the current length)?
            let best_possible = running_scores.narrow(1, 0, 1)
                / ((cur_len - 1) as f64).powf(options.length_penalty);
            let worst_finished = finished_scores.min_dim(1, true).0.expand([b, k], false);
            let worst_finished =
                worst_finished.where_self(&is_finished, &Tensor::full([b, k], -1e9, float));
            improvable =
                improvable.logical_and(&best_possible.gt_tensor(&worst_finished).any_dim(1, true));

            let all_full = options.early_stopping && is_true(&is_finished)?;
            if !is_true(&improvable.any())? || all_full || is_true(&hits)? {
                break;
            }
        }

        let generated = finished_origin
            .select(1, 0)
            .ne(-1)
            .sum_dim_intlist(1, false, Kind::Int64);
        let longest = generated.f_max()?.f_int64_value(&[])?;
        // Positions past a hypothesis' end keep the pad it was initialised with (transformers fills
        // them with the end-of-sequence id instead when pad_token_id is 0).
        Ok(BeamGeneration {
            sequences: finished_seqs.select(1, 0).narrow(1, 0, 1 + longest),
            scores: finished_scores.select(1, 0),
        })
    }
}
