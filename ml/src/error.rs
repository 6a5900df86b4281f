//! Errors of the ML core. Every variant says what went wrong and where (file, tensor, word), so
//! that a job that ends with one tells its user what to fix.

use std::path::PathBuf;

/// Everything the ML core can fail with; callers match on the kind (bad input vs. failure).
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("{path}: file not found")]
    MissingFile { path: PathBuf },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid config: {message}")]
    Config { path: PathBuf, message: String },

    /// The config and the checkpoint disagree: tensors missing, unexpected or of another shape.
    #[error("{path}: the weights do not match the config:\n{}", details.join("\n"))]
    WeightsMismatch { path: PathBuf, details: Vec<String> },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error(
        "label word {word:?} is not one token of the model's vocabulary: it splits into {pieces:?}"
    )]
    MultiTokenLabelWord { word: String, pieces: Vec<String> },

    #[error(
        "a prompt of {prompt_len} tokens and a template of {template_len} tokens do not fit the model's {max_positions} positions (shorten prompt.length / --length)"
    )]
    PromptTooLong {
        prompt_len: usize,
        template_len: usize,
        max_positions: usize,
    },

    /// A prompt over the length a model takes in a layout whose positions do not bound it
    /// (see `promptgrid_common::limits`).
    #[error("model {model}: prompt length {prompt_len} (prompt.length / --length): {message}")]
    PromptLength {
        model: String,
        prompt_len: usize,
        message: String,
    },

    /// `max_text_tokens` below what the template needs with its fields empty.
    #[error(
        "max_text_tokens is {cap} (--max-text-tokens / prompt.max_text_tokens), but the template {template:?} takes {needed} tokens even with its text fields empty: allow at least {needed}"
    )]
    TextCap {
        cap: usize,
        needed: usize,
        template: String,
    },

    /// A tensor read from a file (prompt, projector, ...) holding NaN or infinity: scored, it
    /// would give a plausible-looking number.
    #[error(
        "{path}: tensor {tensor:?} holds {count} non-finite values (NaN or infinity) of {total}"
    )]
    NonFinite {
        path: PathBuf,
        tensor: String,
        count: usize,
        total: usize,
    },

    #[error("{what}: the prompt is {got} wide but the model's hidden size is {expected}")]
    PromptWidth {
        what: String,
        got: i64,
        expected: i64,
    },

    /// A prompt that does not fit a cross-model projector: `field` names the dimension.
    #[error("{what}: the {field} is {got}, but the projector expects {expected}")]
    ProjectorShape {
        what: String,
        field: &'static str,
        got: i64,
        expected: i64,
    },

    /// A projector file (or byte buffer) whose metadata is missing, malformed or contradicts
    /// its tensors.
    #[error("{path}: projector file: {field}: {message}")]
    ProjectorFile {
        path: PathBuf,
        field: String,
        message: String,
    },

    #[error("the loss is NaN at step {step}")]
    NanLoss { step: usize },

    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },

    #[error("{0}")]
    Invalid(String),

    #[error("{path}: safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type MlResult<T> = Result<T, MlError>;

impl MlError {
    /// An I/O failure on `path`; a missing file reads as bad input, not as a failure.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> MlError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            MlError::MissingFile { path }
        } else {
            MlError::Io { path, source }
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> MlError {
        MlError::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// True when the input (files, task, settings) is at fault rather than the machine; the
    /// CLI maps it to exit code 2.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            MlError::Io { .. } | MlError::Torch(_) | MlError::NanLoss { .. }
        )
    }
}
