//! The settings that take one word out of a few: an encoder's readout [`Head`], the prompt's
//! [`Layout`] and how a prompt starts ([`Init`]). Sweep files name them through serde; command
//! lines and the ML code through [`FromStr`], which accepts the same words.

use std::str::FromStr;

use serde::de::{DeserializeOwned, IntoDeserializer, value};
use serde::{Deserialize, Serialize};

use crate::error::UnknownValue;

/// How an encoder turns the mask state into class scores (docs/design.md, "Readouts: mlm and tied").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// The checkpoint's pretrained MLM head.
    Mlm,
    /// Mask state against the label words' input-embedding rows, for checkpoints without a head.
    Tied,
}

/// Where the prompt sits among the positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// PEFT prompt tuning: the prompt takes ordinary consecutive positions.
    Prefix,
    /// The official code's: mask at prompt slot 0, prompt positions without position embeddings.
    Official,
}

/// How a fresh prompt starts. `P` is how the prompt file is named: a sweep names it relative to
/// the worker's models root (`String`); the worker resolves it to a path with [`Init::try_map`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init<P = String> {
    /// Normal(0, σ), σ the official initialisation of the model family's prompt (0.02 for
    /// BERT and RoBERTa, 1 for T5).
    Random,
    /// Rows of the word embedding matrix, sampled.
    Vocab,
    /// A prompt file.
    From(P),
}

impl<P> Init<P> {
    /// The same start, borrowing the prompt file's name.
    pub fn as_ref(&self) -> Init<&P> {
        match self {
            Init::Random => Init::Random,
            Init::Vocab => Init::Vocab,
            Init::From(file) => Init::From(file),
        }
    }

    /// The same start with the prompt file named by `f(file)`.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Init<Q> {
        match self.try_map(|file| Ok::<Q, std::convert::Infallible>(f(file))) {
            Ok(init) => init,
            Err(never) => match never {},
        }
    }

    /// The same start with the prompt file named by `f(file)`, or `f`'s error (`f` runs only
    /// for [`Init::From`]).
    pub fn try_map<Q, E>(self, f: impl FnOnce(P) -> Result<Q, E>) -> Result<Init<Q>, E> {
        Ok(match self {
            Init::Random => Init::Random,
            Init::Vocab => Init::Vocab,
            Init::From(file) => Init::From(f(file)?),
        })
    }
}

/// The words of a unit-variant enum are its serde names, so that a sweep file and a command
/// line spell them alike.
fn from_word<T: DeserializeOwned>(
    word: &str,
    what: &'static str,
    expected: &'static str,
) -> Result<T, UnknownValue> {
    T::deserialize(IntoDeserializer::<value::Error>::into_deserializer(word))
        .map_err(|_| UnknownValue::new(what, word, expected))
}

impl FromStr for Head {
    type Err = UnknownValue;

    /// `mlm` or `tied`.
    fn from_str(word: &str) -> Result<Head, UnknownValue> {
        from_word(word, "head", "mlm or tied")
    }
}

impl FromStr for Layout {
    type Err = UnknownValue;

    /// `prefix` or `official`.
    fn from_str(word: &str) -> Result<Layout, UnknownValue> {
        from_word(word, "layout", "prefix or official")
    }
}

impl<P: From<String>> FromStr for Init<P> {
    type Err = UnknownValue;

    /// `random`, `vocab` or `from:<prompt file>`, as in a sweep's `init`.
    fn from_str(text: &str) -> Result<Init<P>, UnknownValue> {
        match text {
            "random" => Ok(Init::Random),
            "vocab" => Ok(Init::Vocab),
            _ => match text.strip_prefix("from:") {
                Some(file) if !file.is_empty() => Ok(Init::From(P::from(file.to_string()))),
                _ => Err(UnknownValue::new(
                    "prompt init",
                    text,
                    "random, vocab or from:<prompt file>",
                )),
            },
        }
    }
}
