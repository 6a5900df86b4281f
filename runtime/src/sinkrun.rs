//! Feeds the events stream to a [`Sink`] through the durable consumer `sink`, in order.

use async_nats::jetstream::consumer;
use futures::StreamExt;
use promptgrid_common::wire::Event;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::events::{Ack, Sink};
use crate::retry::{PATIENCE, through_outages};
use crate::streams::SweepStreams;
use crate::telemetry;

/// Resolves once the sink consumer has acked everything in the events stream.
pub async fn drained(streams: &SweepStreams) {
    loop {
        if let Ok(stream) = streams.js.get_stream(streams.names.events_stream()).await
            && let Ok(mut c) = stream.get_consumer::<consumer::pull::Config>(SINK).await
            && let Ok(info) = c.info().await
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Hands the sink the artifacts it keeps. One that is gone from the store (a job finished
/// twice, the second copy replacing it) is skipped with a warning: the event still commits.
async fn copy_artifacts(
    streams: &SweepStreams,
    sink: &mut dyn Sink,
    names: &[String],
) -> Result<()> {
    let wanted: Vec<&String> = names.iter().filter(|n| sink.wants_artifact(n)).collect();
    for name in wanted {
        let read = || crate::objects::read_object(&streams.artifacts, name);
        let Some(bytes) = through_outages("copy an artifact", PATIENCE, read).await? else {
            tracing::warn!(artifact = %name, "artifact not in the store");
            continue;
        };
        sink.artifact(name, bytes)?;
    }
    Ok(())
}

/// The durable consumer of the sink.
const SINK: &str = "sink";

/// A sink hears of a quiet stream after this long without an event: the wait of the last job
/// end that came too soon after a commit to be committed at once.
const IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long an event the sink took stays unacked before the server hands it out again: longer
/// than a slow commit (a batch commits within a few seconds of its first event), short enough
/// that a restarted sink soon gets what a killed one held, and that events lost in flight when
/// a server of a cluster dies come back soon.
pub const SINK_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(streams: SweepStreams, sink: Box<dyn Sink>) -> Result<()> {
    let r = follow(streams, sink).await;
    if let Err(e) = &r {
        tracing::error!(error = %e, "the results sink stopped");
    }
    r
}

async fn follow(streams: SweepStreams, mut sink: Box<dyn Sink>) -> Result<()> {
    let stream = streams
        .js
        .get_stream(streams.names.events_stream())
        .await
        .map_err(Error::nats)?;
    let consumer = stream
        .get_or_create_consumer(
            SINK,
            consumer::pull::Config {
                durable_name: Some(SINK.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                // A sink acks a batch at once when it commits: the window must hold a whole
                // batch, and the ack wait must outlast a slow commit, or the server would stop
                // delivering (or redeliver) mid-batch.
                max_ack_pending: 50_000,
                ack_wait: SINK_ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(Error::nats)?;
    loop {
        // Heartbeats every second: a pull whose server died is noticed (a missed heartbeat
        // ends the stream, and it is opened again) within seconds, not the default 30.
        let pull = consumer
            .stream()
            .heartbeat(std::time::Duration::from_secs(1))
            .expires(std::time::Duration::from_secs(5));
        let mut messages = match pull.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "sink consumer failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let msg = match tokio::time::timeout(IDLE, messages.next()).await {
                Ok(Some(Ok(msg))) => msg,
                Ok(_) => break,
                Err(_) => {
                    sink.idle().await?;
                    continue;
                }
            };
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let (message, acker) = msg.split();
            // A plain ack: one lost while a server of a cluster dies brings its event back after
            // SINK_ACK_WAIT, and the writers skip the rows already committed. Waiting for each
            // ack's confirmation would halve the sink's pace on a replicated stream.
            let ack = Ack(Box::new(move || {
                Box::pin(async move { acker.ack().await.map_err(Error::nats) })
            }));
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(event) => {
                    // A child of the span that published the event: a job's events, and the
                    // commits they trigger, belong to the job's trace.
                    let span = tracing::info_span!(
                        parent: None,
                        "sink",
                        sweep = %streams.names.sweep,
                        event = event.name(),
                        job_id = %event.job(),
                        seq,
                    );
                    telemetry::adopt_parent(&span, message.headers.as_ref());
                    async {
                        if let Event::Finished { output, .. } = &event {
                            copy_artifacts(&streams, sink.as_mut(), &output.artifacts).await?;
                        }
                        sink.accept(seq, event, ack).await
                    }
                    .instrument(span)
                    .await?
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "undecodable event skipped");
                    ack.ack().await?;
                }
            }
        }
    }
}
