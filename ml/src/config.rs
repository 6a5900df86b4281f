//! The encoder's `config.json`, with Hugging Face field names and their defaults.

use std::path::Path;

use serde::Deserialize;

use super::error::{MlError, MlResult};

/// Which published architecture a checkpoint follows; decides position ids and the LM head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    /// BERT with positions offset by `pad_token_id + 1` and the `lm_head.*` head.
    Roberta,
}

/// The fields of `BertConfig` / `RobertaConfig` that the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct EncoderConfig {
    #[serde(default)]
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// HF ties the LM decoder to the word embeddings unless this is false.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> i64 {
    512
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_true() -> bool {
    true
}

impl EncoderConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> MlResult<EncoderConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
        let config: EncoderConfig = serde_json::from_str(&text).map_err(|e| MlError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        let bad = |message: String| {
            Err(MlError::Config {
                path: path.into(),
                message,
            })
        };
        if config.family().is_none() {
            return bad(format!(
                "model_type {:?} is not an encoder this worker runs (bert, roberta)",
                config.model_type
            ));
        }
        if config.hidden_size <= 0 || config.num_attention_heads <= 0 {
            return bad("hidden_size and num_attention_heads must be positive".into());
        }
        if config.hidden_size % config.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            ));
        }
        if !matches!(
            config.hidden_act.as_str(),
            "gelu" | "gelu_new" | "relu" | "gelu_pytorch_tanh"
        ) {
            return bad(format!(
                "hidden_act {:?} is not supported",
                config.hidden_act
            ));
        }
        if config.family() == Some(Family::Roberta) && config.pad_token_id.is_none() {
            return bad("a roberta config needs pad_token_id (positions start after it)".into());
        }
        Ok(config)
    }

    pub fn family(&self) -> Option<Family> {
        match self.model_type.as_str() {
            // Sentence-transformers exports sometimes omit model_type; they are BERT.
            "bert" | "" => Some(Family::Bert),
            "roberta" | "xlm-roberta" => Some(Family::Roberta),
            _ => None,
        }
    }

    /// The first position id of the text: RoBERTa counts from `padding_idx + 1`.
    pub fn position_offset(&self) -> i64 {
        match self.family() {
            Some(Family::Roberta) => self.pad_token_id.unwrap_or(1) + 1,
            _ => 0,
        }
    }

    /// How many tokens (prompt included, in the prefix layout) one input may hold.
    pub fn max_tokens(&self) -> usize {
        (self.max_position_embeddings - self.position_offset()).max(0) as usize
    }
}
