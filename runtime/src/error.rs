//! Errors of the runtime. NATS errors keep their text (their kinds differ per call and are not
//! matched on); the kinds callers act on are their own variants.

use promptgrid_common::JobId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS: {0}")]
    Nats(String),
    #[error("the state of job {job} is unreadable: {source}")]
    BadState {
        job: JobId,
        #[source]
        source: serde_json::Error,
    },
    #[error("sweep `{0}` has no streams on this server: run the coordinator first")]
    NoSweep(String),
    #[error("nats-server: {0}")]
    Server(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    /// The results sink could not write or commit.
    #[error("results sink: {0}")]
    Sink(String),
    /// Logging or span export could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
}

impl Error {
    /// Wraps any NATS client error; the many async-nats error kinds are only ever reported.
    pub fn nats(e: impl std::fmt::Display) -> Error {
        Error::Nats(e.to_string())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
