//! Errors of the results crate: every variant names the file or the input that caused it, so a
//! researcher can fix the input instead of guessing.

use std::path::PathBuf;

use thiserror::Error;

pub type Result<T, E = ResultsError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// A prompt file or adapter that is not a single `[L, d]` float tensor.
    #[error("prompt {path}: {message}")]
    Prompt { path: PathBuf, message: String },
    /// Prompts of one study that cannot be compared (different shapes, none at all).
    #[error("prompts in {dir}: {message}")]
    Prompts { dir: PathBuf, message: String },
    /// A transfer CSV that names unknown tasks, lacks a diagonal, or is malformed.
    #[error("transfer results {path}: {message}")]
    Transfer { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// A file inside a table folder that is not a committed part, or a part with the wrong schema.
    #[error("table {table} at {path}: {message}")]
    Table {
        table: &'static str,
        path: PathBuf,
        message: String,
    },
    /// Activation masks that cannot be compared.
    #[error("activation masks: {0}")]
    Masks(String),
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Drawing a figure failed (the report still says which one).
    #[error("figure {path}: {message}")]
    Plot { path: PathBuf, message: String },
    /// Nothing to analyse: the report refuses to print an empty study as if it were a result.
    #[error("empty study in {0}: no evals, metrics or indicators rows")]
    EmptyStudy(PathBuf),
}

impl ResultsError {
    /// True when the input is at fault (a foreign file, a malformed prompt or CSV, an empty
    /// study), not the machine: the command exits 2.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ResultsError::Io { .. } | ResultsError::Plot { .. })
    }
}

/// Attaches a path to an I/O error; used with `map_err(io_at(&path))`.
pub(crate) fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn parquet_at(
    path: &std::path::Path,
) -> impl FnOnce(parquet::errors::ParquetError) -> ResultsError + '_ {
    move |source| ResultsError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}
