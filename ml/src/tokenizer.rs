//! The model's `tokenizer.json`, with what prompt tuning needs from it: the mask and pad ids,
//! single-token label words, and template encoding with truncation.
//!
//! In the official layout words are encoded as the official code encodes them: label words and
//! template segments on their own, without a leading space (model/PromptRoberta.py:162-179 lists
//! `tokenizer.encode("positive", add_special_tokens=False)` = 22173 and scores those ids;
//! formatter/*PromptRobertaFormatter.py encode each sentence the same way).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::config::Family;
use super::error::{MlError, MlResult};

/// A tokenizer with the special tokens the encoder reads.
pub struct EncoderTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    family: Family,
    /// The mask token's text, put into templates at `{mask}`.
    pub mask_token: String,
    pub mask_id: i64,
    pub pad_id: i64,
    /// The separator token's text (`[SEP]`, `</s>`), put into templates at `{sep}`.
    pub sep_token: String,
    /// Encode as the official code does (see the module doc); set by the official layout.
    official: bool,
}

impl std::fmt::Debug for EncoderTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

/// Reads a tokenizer.json with its padding and truncation switched off: exported tokenizers
/// often pad and truncate to a fixed length (sentence-transformers: 128), and batching and
/// truncation are ours.
pub(crate) fn load_tokenizer(path: &Path) -> MlResult<Tokenizer> {
    if !path.exists() {
        return Err(MlError::MissingFile { path: path.into() });
    }
    let mut inner = Tokenizer::from_file(path).map_err(|e| tokenizer_error(path, e))?;
    inner.with_padding(None);
    inner
        .with_truncation(None)
        .map_err(|e| tokenizer_error(path, e))?;
    Ok(inner)
}

/// A tokenizer failure, named by the tokenizer.json it came from.
pub(crate) fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> MlError {
    MlError::Tokenizer {
        path: path.into(),
        message: e.to_string(),
    }
}

/// Tokens of `text` without special tokens, with the byte offset where each starts; `path`
/// names the tokenizer in errors.
pub(crate) fn pieces(
    tokenizer: &Tokenizer,
    path: &Path,
    text: &str,
) -> MlResult<Vec<(String, usize)>> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| tokenizer_error(path, e))?;
    Ok(enc
        .get_tokens()
        .iter()
        .cloned()
        .zip(enc.get_offsets().iter().map(|o| o.0))
        .collect())
}

impl EncoderTokenizer {
    pub fn load(path: &Path, family: Family, pad_token_id: Option<i64>) -> MlResult<Self> {
        let inner = load_tokenizer(path)?;
        let find = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| inner.token_to_id(n).map(|id| (n.to_string(), id as i64)))
        };
        let (mask_token, mask_id) =
            find(&["[MASK]", "<mask>"]).ok_or_else(|| MlError::Tokenizer {
                path: path.into(),
                message: "no mask token ([MASK] or <mask>) in the vocabulary".into(),
            })?;
        let pad_id = pad_token_id
            .or_else(|| find(&["[PAD]", "<pad>"]).map(|(_, id)| id))
            .unwrap_or(0);
        let sep_token = find(&["[SEP]", "</s>"]).map(|(t, _)| t).unwrap_or_default();
        Ok(EncoderTokenizer {
            sep_token,
            inner,
            path: path.into(),
            family,
            mask_token,
            mask_id,
            pad_id,
            official: false,
        })
    }

    /// Switches to the official code's encoding (label words and template segments without a
    /// leading space, each segment on its own); the official layout sets it.
    pub fn with_official_encoding(mut self, official: bool) -> Self {
        self.official = official;
        self
    }

    /// Whether words are encoded as the official code encodes them.
    pub fn official_encoding(&self) -> bool {
        self.official
    }

    /// Ids of `text` without special tokens.
    pub(crate) fn encode_plain(&self, text: &str) -> MlResult<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tokenizer_error(&self.path, e))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// The id of a token of the vocabulary (special tokens included).
    pub(crate) fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// The ids the tokenizer's post-processor puts before and after one sequence (`<s>` and
    /// `</s>`, `[CLS]` and `[SEP]`), read from the encoding of an empty text.
    pub(crate) fn sequence_ends(&self) -> MlResult<(Option<i64>, Option<i64>)> {
        match self.encode("")?.as_slice() {
            [] => Ok((None, None)),
            [start, end] => Ok((Some(*start), Some(*end))),
            other => Err(MlError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "the post-processor wraps a text in {} tokens; the official encoding \
                     needs a start and an end token",
                    other.len()
                ),
            }),
        }
    }

    /// Ids of `text` with the tokenizer's special tokens (`[CLS] … [SEP]`, `<s> … </s>`).
    pub fn encode(&self, text: &str) -> MlResult<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| tokenizer_error(&self.path, e))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Tokens of `text` without special tokens, with the byte offset where each starts.
    pub(crate) fn pieces(&self, text: &str) -> MlResult<Vec<(String, usize)>> {
        pieces(&self.inner, &self.path, text)
    }

    /// The one token of each label word. In the prefix layout byte-level BPE (RoBERTa) reads a
    /// word after a space, as it stands in a sentence (`Ġpositive`); the official code encodes
    /// it alone (`positive`, model/PromptRoberta.py:162-179), and so does the official layout.
    pub fn label_ids(&self, words: &[String]) -> MlResult<Vec<i64>> {
        words
            .iter()
            .map(|word| {
                let text = match self.family {
                    Family::Roberta if !self.official => format!(" {word}"),
                    _ => word.clone(),
                };
                let enc = self
                    .inner
                    .encode(text.as_str(), false)
                    .map_err(|e| tokenizer_error(&self.path, e))?;
                // A word outside a WordPiece vocabulary is one token too: [UNK], equally wrong.
                let unknown = enc
                    .get_tokens()
                    .iter()
                    .any(|t| t == "[UNK]" || t == "<unk>");
                match enc.get_ids() {
                    [id] if !unknown => Ok(*id as i64),
                    _ => Err(MlError::MultiTokenLabelWord {
                        word: word.clone(),
                        pieces: enc.get_tokens().to_vec(),
                    }),
                }
            })
            .collect()
    }

    pub fn id_to_token(&self, id: i64) -> String {
        self.inner.id_to_token(id as u32).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
