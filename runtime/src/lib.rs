//! promptgrid-runtime: the distributed runtime over NATS JetStream (docs/design.md, "Architecture"): both sides
//! of it, the coordinator ([`scheduler`]) and the job loop workers run ([`jobloop`]).
//!
//! Layout:
//! * [`connect`]: NATS connection options (user/password, token, credentials, TLS);
//! * [`streams`]: a sweep's JetStream objects ([`streams::SweepStreams`]): streams, consumers, buckets;
//! * [`objects`]: reading an artifact whole while it may be replaced;
//! * [`retry`]: riding out outages and leader elections with bounded backoff;
//! * [`state`]: job states in the KV bucket, changed only by compare-and-set;
//! * [`snapshot`]: the coordinator's compact copy of the bucket, which a restart starts from;
//! * [`scheduler`]: the coordinator ([`run`]);
//! * [`status`]: `status` and `retry --failed`;
//! * [`events`]: event publishing, the [`Sink`] and [`DoneSource`] hooks;
//! * [`parquet`]: the results crate's Parquet writer as a [`Sink`] and [`DoneSource`];
//! * [`jobloop`]: the loop every worker runs (pull, lease, checkpoint, commit) and the
//!   [`jobloop::Executor`] trait that `promptgrid-worker` implements on the ML core (no tch
//!   here, so the runtime and its crash tests build without libtorch);
//! * [`embedded`]: a private nats-server plus coordinator and workers in one command;
//! * [`server`]: starting and stopping a `nats-server` child process;
//! * [`telemetry`]: spans across processes (trace context in NATS headers), JSON logs, OTLP.
pub mod connect;
pub mod embedded;
pub mod error;
pub mod events;
pub mod graphstore;
pub mod jobloop;
pub mod manifest;
pub mod objects;
pub mod parquet;
mod progress;
pub mod retry;
pub mod scheduler;
pub mod server;
mod sinkrun;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod streams;
pub mod telemetry;

pub use connect::NatsConfig;
pub use error::{Error, Result};
pub use events::{Ack, DoneSource, FileDoneSink, FileDoneSource, Sink};
pub use scheduler::{CoordinatorConfig, Outcome, Shutdown, run};
pub use status::{StatusReport, retry_failed, status};

/// A shutdown signal that turns true on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> Shutdown {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                // No signals to wait for: never fire (dropping `tx` would read as "changed").
                std::future::pending::<()>().await;
                return;
            };
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    rx
}
