//! Errors of the runtime. NATS errors keep their text (their kinds differ per call and are not
//! matched on); the kinds callers act on are their own variants. One of them is
//! [`Error::Unavailable`]: the server or the stream's leader could not be reached, which is an
//! infrastructure fault to ride out, never a job's.

use promptgrid_common::JobId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS: {0}")]
    Nats(String),
    /// No server, no stream leader or no answer in time: a restart, a leader election or a
    /// lost link. Worth retrying; never the job's fault.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// `--replicas` differs from what the sweep's streams were created with.
    #[error(
        "sweep `{sweep}` was created with {existing} replica(s) per stream; --replicas {asked} \
         cannot change that (run it with --replicas {existing}, or under another sweep name)"
    )]
    Replicas {
        sweep: String,
        existing: usize,
        asked: usize,
    },
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
    /// Wraps any NATS client error; the many async-nats error kinds are only ever reported,
    /// except that an outage ([`is_outage`]) becomes [`Error::Unavailable`].
    pub fn nats(e: impl std::fmt::Display) -> Error {
        let text = e.to_string();
        if is_outage(&text) {
            Error::Unavailable(text)
        } else {
            Error::Nats(text)
        }
    }

    /// Whether the user's input (a flag, an address) is at fault: exit status 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Replicas { .. } | Error::Config(_))
    }

    /// Whether retrying later may succeed because the server side was only unreachable.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// What async-nats says (through the kinds of every call, whose texts it nests) when the server,
/// or the leader of a replicated stream, does not answer: a publish to a stream without a
/// leader finds "no stream", a request times out or has no responders, the JetStream API
/// answers 503, the connection breaks.
const OUTAGE: &[&str] = &[
    "no stream found for given subject",
    "timed out",
    "no responders",
    "requested JetStream resource does not exist",
    "temporarily unavailable",
    "broken pipe",
    "connection",
    "disconnected",
    "not connected",
    "stream is offline",
    "leader",
];

/// Whether a NATS error's text names an outage rather than a refusal.
pub fn is_outage(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    OUTAGE
        .iter()
        .any(|p| text.contains(&p.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{
        PublishError, PublishErrorKind, RequestError, RequestErrorKind,
    };

    #[test]
    fn outages_are_told_from_refusals_by_the_client_error_texts() {
        for kind in [
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
        ] {
            let e = Error::nats(PublishError::new(kind));
            assert!(e.is_unavailable(), "{e}");
        }
        for kind in [RequestErrorKind::TimedOut, RequestErrorKind::NoResponders] {
            assert!(Error::nats(RequestError::new(kind)).is_unavailable());
        }
        for kind in [
            PublishErrorKind::MaxPayloadExceeded,
            PublishErrorKind::WrongLastSequence,
        ] {
            let e = Error::nats(PublishError::new(kind));
            assert!(matches!(e, Error::Nats(_)), "{e}");
        }
        assert_eq!(
            Error::nats(PublishError::new(PublishErrorKind::StreamNotFound)).to_string(),
            "NATS unavailable: no stream found for given subject"
        );
    }
}
