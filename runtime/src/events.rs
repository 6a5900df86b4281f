//! Publishing worker events, and the hooks through which the results side consumes them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use promptgrid_common::names::SweepNames;
use promptgrid_common::wire::Event;
use promptgrid_common::{JobGraph, JobId};

use crate::error::{Error, Result};

/// Publishes an event and waits for the stream to store it. The `Nats-Msg-Id` makes a repeat
/// (after a crash between commit and ack) a no-op within the dedup window.
pub async fn publish(
    js: &jetstream::Context,
    names: &SweepNames,
    event: &Event,
    seq: u64,
) -> Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event.msg_id(seq).as_str(),
    );
    // The span that publishes an event (a job's) becomes the parent of the sink's span for it.
    crate::telemetry::inject(&tracing::Span::current(), &mut headers);
    let subject = names.event_subject(event.name(), event.job());
    let payload = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
    js.publish_with_headers(subject, headers, payload)
        .await
        .map_err(Error::nats)?
        .await
        .map_err(Error::nats)?;
    Ok(())
}

pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Acknowledges one event to the stream; until it is called the event is redelivered to the
/// sink after a restart, so a sink acks only what it has made durable.
pub struct Ack(pub(crate) Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>);

impl Ack {
    pub async fn ack(self) -> Result<()> {
        (self.0)().await
    }
}

/// Receives every event of the sweep, in stream order, through a durable consumer (the
/// Parquet writer of the results crate implements it).
pub trait Sink: Send + 'static {
    fn accept(&mut self, seq: u64, event: Event, ack: Ack) -> BoxFuture<'_, Result<()>>;

    /// Whether the sink keeps a copy of the finished job's artifact `name`; those it wants are
    /// handed to [`Sink::artifact`] before the event that lists them.
    fn wants_artifact(&self, _name: &str) -> bool {
        false
    }

    fn artifact(&mut self, _name: &str, _bytes: Vec<u8>) -> Result<()> {
        Ok(())
    }

    /// Called when no event has come for a while: a sink that batches commits (and acks) what
    /// it holds, or events with nothing after them would wait unacked forever.
    fn idle(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The sweep's graph, handed over before the first event, for a sink that keys what it
    /// keeps by the jobs' places in it.
    fn graph(&mut self, _graph: Arc<JobGraph>) {}
}

/// Where the done set comes from when the NATS server's data is gone.
pub trait DoneSource: Send + Sync {
    fn done_jobs(&self) -> Result<HashSet<JobId>>;

    /// Artifacts of those jobs kept outside NATS, as (artifact name, file): put back into the
    /// new store so that the jobs that depend on them can run.
    fn artifacts(&self) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }
}

/// The simplest durable record: a text file with one finished job id per line (the embedded
/// runner appends to it; the results crate's Parquet `jobs` table replaces it later).
pub struct FileDoneSource {
    pub path: PathBuf,
}

impl DoneSource for FileDoneSource {
    fn done_jobs(&self) -> Result<HashSet<JobId>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| promptgrid_common::names::is_job_id(l))
                .map(JobId::new)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(Error::io(format!("cannot read {}", self.path.display()), e)),
        }
    }
}

/// A sink that appends each finished job's id to a file (the [`FileDoneSource`] format).
pub struct FileDoneSink {
    pub path: PathBuf,
}

impl Sink for FileDoneSink {
    fn accept(&mut self, _seq: u64, event: Event, ack: Ack) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Event::Finished { job, .. } = &event {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| Error::io(format!("cannot open {}", self.path.display()), e))?;
                writeln!(f, "{job}").map_err(|e| Error::io("cannot append a done job", e))?;
            }
            ack.ack().await
        })
    }
}
