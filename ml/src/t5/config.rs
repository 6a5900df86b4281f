//! T5's `config.json` (transformers' `T5Config`), with Hugging Face field names and defaults.

use std::path::Path;

use serde::Deserialize;

use crate::{MlError, MlResult};

/// The fields of `T5Config` that the model uses. Defaults are transformers' (`t5-small`'s).
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    /// Width of one attention head; `num_heads * d_kv` need not equal `d_model` (t5-11b).
    pub d_kv: i64,
    pub d_ff: i64,
    pub num_layers: i64,
    /// Decoder depth; transformers falls back to `num_layers`.
    #[serde(default)]
    pub num_decoder_layers: Option<i64>,
    pub num_heads: i64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: i64,
    /// `relu` (v1.0), `gated-gelu` (v1.1, flan-t5), or `[gated-]ACT` generally.
    #[serde(default = "default_ffn")]
    pub feed_forward_proj: String,
    /// v1.0 ties the LM head to `shared` and scales the decoder output by `d_model^-0.5`;
    /// v1.1 checkpoints say `false` and carry `lm_head.weight`.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Written by transformers 5, which always records `tie_word_embeddings: true` and keeps the
    /// v1.0/v1.1 distinction here instead.
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// T5 starts decoding with the pad token.
    #[serde(default)]
    pub decoder_start_token_id: Option<i64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<OneOrMany>,
    /// The input length T5 was pre-trained with (transformers' deprecated `n_positions`, 512).
    /// Relative attention has no hard limit; prompt plus text are kept within it.
    #[serde(default)]
    pub n_positions: Option<i64>,
}

/// A token id field that transformers allows to be one id or a list (`eos_token_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

/// The activation between `wi` (or `wi_0`) and `wo`; transformers' `ACT2FN` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact (erf) GELU, transformers' `gelu`.
    Gelu,
    /// The tanh approximation, transformers' `gelu_new`; what `gated-gelu` means.
    GeluNew,
    Silu,
}

fn default_buckets() -> i64 {
    32
}
fn default_max_distance() -> i64 {
    128
}
fn default_ffn() -> String {
    "relu".into()
}
fn default_eps() -> f64 {
    1e-6
}

impl T5Config {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> MlResult<T5Config> {
        let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
        let config: T5Config = serde_json::from_str(&text).map_err(|e| MlError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| MlError::Config {
            path: path.into(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
            ),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{name} must be positive, not {v}"));
        }
        // The bucket formula divides by log(max_distance / max_exact); it needs room for both.
        if self.relative_attention_num_buckets < 4 {
            return Err("relative_attention_num_buckets must be at least 4".into());
        }
        self.ffn().map(|_| ())?;
        let mut ids = vec![
            ("decoder_start_token_id", self.decoder_start_token_id()),
            ("pad_token_id", self.pad_token_id()),
        ];
        ids.extend(
            self.eos_token_ids()
                .into_iter()
                .map(|id| ("eos_token_id", id)),
        );
        if let Some((name, id)) = ids
            .iter()
            .find(|(_, id)| !(0..self.vocab_size).contains(id))
        {
            return Err(format!(
                "{name} {id} is outside the vocabulary of {}",
                self.vocab_size
            ));
        }
        Ok(())
    }

    pub fn decoder_layers(&self) -> i64 {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Whether the FFN is gated (`wi_0`, `wi_1`) and its activation, as transformers parses
    /// `feed_forward_proj`.
    pub fn ffn(&self) -> Result<(bool, Activation), String> {
        let proj = self.feed_forward_proj.as_str();
        let (gated, act) = match proj.split_once('-') {
            Some(("gated", act)) => (true, act),
            None => (false, proj),
            Some(_) => {
                return Err(format!(
                    "feed_forward_proj {proj:?} is not `ACT` or `gated-ACT`"
                ));
            }
        };
        let act = match act {
            "relu" => Activation::Relu,
            // transformers maps "gated-gelu" to gelu_new for backward compatibility.
            "gelu" if gated => Activation::GeluNew,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluNew,
            "silu" | "swish" => Activation::Silu,
            _ => {
                return Err(format!(
                    "feed_forward_proj {proj:?}: activation {act:?} is not supported"
                ));
            }
        };
        Ok((gated, act))
    }

    /// Whether the checkpoint is meant to share `shared.weight` as its LM head.
    pub fn tied(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(true)
    }

    /// Whether the decoder output is scaled by `d_model^-0.5` before the LM head (v1.0).
    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs.unwrap_or(self.tied())
    }

    pub fn pad_token_id(&self) -> i64 {
        self.pad_token_id.unwrap_or(0)
    }

    pub fn decoder_start_token_id(&self) -> i64 {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id())
    }

    /// The encoder input length (prompt included) that data encoding keeps within.
    pub fn max_input_tokens(&self) -> usize {
        self.n_positions.filter(|&n| n > 0).unwrap_or(512) as usize
    }

    /// End-of-sequence ids; generation stops a row at any of them.
    pub fn eos_token_ids(&self) -> Vec<i64> {
        match &self.eos_token_id {
            None => vec![1],
            Some(OneOrMany::One(id)) => vec![*id],
            Some(OneOrMany::Many(ids)) => ids.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> T5Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn v1_1_flags_and_defaults() {
        let c = parse(
            r#"{"vocab_size": 10, "d_model": 8, "d_kv": 2, "d_ff": 16, "num_layers": 2,
                "num_heads": 4, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
                "eos_token_id": [1, 3]}"#,
        );
        assert_eq!(c.ffn().unwrap(), (true, Activation::GeluNew));
        assert!(!c.tied() && !c.scales_decoder_output());
        assert_eq!((c.decoder_layers(), c.decoder_start_token_id()), (2, 0));
        assert_eq!(c.eos_token_ids(), vec![1, 3]);
        assert!(c.check().is_ok());
    }

    #[test]
    fn transformers_5_config_keeps_v1_1_unscaled() {
        let c = parse(
            r#"{"vocab_size": 10, "d_model": 8, "d_kv": 2, "d_ff": 16, "num_layers": 2,
                "num_heads": 4, "tie_word_embeddings": true, "scale_decoder_outputs": false}"#,
        );
        assert!(c.tied() && !c.scales_decoder_output());
        assert_eq!(c.ffn().unwrap(), (false, Activation::Relu));
    }

    #[test]
    fn rejects_unknown_activation_and_bad_ids() {
        let mut c = parse(
            r#"{"vocab_size": 10, "d_model": 8, "d_kv": 2, "d_ff": 16, "num_layers": 2,
                "num_heads": 4, "feed_forward_proj": "gated-tanhh"}"#,
        );
        assert!(c.check().unwrap_err().contains("tanhh"));
        c.feed_forward_proj = "relu".into();
        c.pad_token_id = Some(10);
        c.decoder_start_token_id = Some(0);
        assert!(c.check().unwrap_err().contains("pad_token_id 10"));
    }
}
