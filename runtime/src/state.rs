//! Job states in the KV bucket, written only by compare-and-set on the entry's revision.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use promptgrid_common::JobId;
use promptgrid_common::graph::IdMap;
use promptgrid_common::wire::JobState;

use crate::error::{Error, Result};

/// A job state and the revision to compare against when changing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub state: JobState,
    pub revision: u64,
}

pub async fn read(store: &kv::Store, id: &JobId) -> Result<Option<Versioned>> {
    let Some(entry) = store.entry(id.as_str()).await.map_err(Error::nats)? else {
        return Ok(None);
    };
    if !matches!(entry.operation, kv::Operation::Put) {
        return Ok(None);
    }
    let state = JobState::from_bytes(&entry.value).map_err(|source| Error::BadState {
        job: id.clone(),
        source,
    })?;
    Ok(Some(Versioned {
        state,
        revision: entry.revision,
    }))
}

/// Writes `state` if the entry is still at `revision` (0: if there is no entry yet).
/// `Ok(None)` means someone else changed it first.
pub async fn cas(
    store: &kv::Store,
    id: &JobId,
    state: &JobState,
    revision: u64,
) -> Result<Option<u64>> {
    let value = Bytes::from(state.to_bytes());
    if revision == 0 {
        return match store.create(id.as_str(), value).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::nats(e)),
        };
    }
    match store.update(id.as_str(), value, revision).await {
        Ok(rev) => Ok(Some(rev)),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || is_conflict(&e) => Ok(None),
        Err(e) => Err(Error::nats(e)),
    }
}

/// Whether an update failed because the entry moved on. A clustered server says so with
/// error code 10164, which async-nats 0.51 reports as an unknown publish error rather than
/// `WrongLastRevision` (a lone server's 10071).
fn is_conflict(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::{self, ErrorCode};
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(js) = e.downcast_ref::<jetstream::Error>()
            && [
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
            ]
            .contains(&js.error_code())
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// [`cas`] retried through outages (see [`crate::retry::persist`]). A try whose answer was lost
/// may still have been applied; the conflict its retry then meets is told apart from another
/// writer's by reading the entry back: holding exactly this value, it is this write, and its
/// revision is returned (a job state carries its worker and times, so two writers' values
/// never coincide).
pub async fn cas_persist(
    store: &kv::Store,
    id: &JobId,
    state: &JobState,
    revision: u64,
) -> Result<Option<u64>> {
    let mut uncertain = false;
    crate::retry::persist("write a job state", || {
        let was_uncertain = uncertain;
        uncertain = true;
        async move {
            match cas(store, id, state, revision).await? {
                Some(rev) => Ok(Some(rev)),
                None if was_uncertain => Ok(read(store, id)
                    .await?
                    .filter(|v| v.state == *state)
                    .map(|v| v.revision)),
                None => Ok(None),
            }
        }
    })
    .await
}

/// How many values the bucket holds now (`Store::status` answers from a cached stream info).
pub async fn count(js: &async_nats::jetstream::Context, store: &kv::Store) -> Result<u64> {
    let mut stream = js
        .get_stream(&store.stream_name)
        .await
        .map_err(Error::nats)?;
    Ok(stream.info().await.map_err(Error::nats)?.state.messages)
}

/// Messages one pull of the full read asks for.
const SCAN_BATCH: usize = 10_000;

/// A full read that hears nothing for this long has lost its server: an error, never a
/// silently short read.
const SCAN_STALL: Duration = Duration::from_secs(30);

/// Every job state in the bucket (see [`scan`]).
pub async fn snapshot(
    js: &async_nats::jetstream::Context,
    store: &kv::Store,
) -> Result<IdMap<JobId, Versioned>> {
    let mut out = IdMap::default();
    scan(js, store, 1, |key, state| match state {
        Some(v) => {
            out.insert(JobId::new(key), v);
        }
        None => {
            out.remove(key);
        }
    })
    .await?;
    Ok(out)
}

/// Reads the bucket's messages in stream order, from sequence `start` up to the last one
/// stored when the read began, through a pull consumer of its own, and hands each to `visit`:
/// the key and its state, `None` for a delete or a purge. A later message of a key supersedes
/// an earlier one. A watcher (a push consumer) was pushed more than it could take at a million
/// keys: the client dropped messages, the consumer restarted, and a quiet second, taken for
/// the end, cut the read short.
pub async fn scan(
    js: &async_nats::jetstream::Context,
    store: &kv::Store,
    start: u64,
    mut visit: impl FnMut(&str, Option<Versioned>),
) -> Result<()> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let mut stream = js
        .get_stream(&store.stream_name)
        .await
        .map_err(Error::nats)?;
    let at_start = stream.info().await.map_err(Error::nats)?.state.clone();
    if at_start.messages == 0 || start > at_start.last_sequence {
        return Ok(());
    }
    let filter = format!("{}>", store.prefix);
    let deliver_policy = if start <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            filter_subject: filter.clone(),
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: SCAN_STALL,
            ..Default::default()
        })
        .await
        .map_err(Error::nats)?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(SCAN_BATCH)
        .messages()
        .await
        .map_err(Error::nats)?;
    let mut read = 0u64;
    loop {
        let next = tokio::time::timeout(SCAN_STALL, messages.next()).await;
        let Ok(Some(message)) = next else {
            return Err(Error::nats(format!(
                "the read of the job states stopped after {read} messages, before sequence {}",
                at_start.last_sequence
            )));
        };
        let message = message.map_err(Error::nats)?;
        read += 1;
        let info = message.info().map_err(Error::nats)?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let key = message
            .subject
            .as_str()
            .strip_prefix(store.prefix.as_str())
            .unwrap_or_default();
        // As async-nats reads a KV entry: a delete or purge, or a server's marker of one.
        let headers = message.headers.as_ref();
        let op = headers
            .and_then(|h| h.get("KV-Operation"))
            .map(|v| v.as_str());
        let marker = headers.is_some_and(|h| h.get("Nats-Marker-Reason").is_some());
        if marker || matches!(op, Some("DEL" | "PURGE")) {
            visit(key, None);
        } else {
            let state =
                JobState::from_bytes(&message.payload).map_err(|source| Error::BadState {
                    job: JobId::new(key),
                    source,
                })?;
            visit(
                key,
                Some(Versioned {
                    state,
                    revision: seq,
                }),
            );
        }
        if seq >= at_start.last_sequence
            || (pending == 0 && !more_up_to(&stream, &filter, seq, at_start.last_sequence).await?)
        {
            break;
        }
    }
    Ok(())
}

/// Whether the stream's leader holds a message of `filter` after `seq` and at most `last`.
/// A consumer's "nothing pending" speaks for the replica it was placed on, which may lag the
/// leader whose last sequence the read aims for; only where the leader agrees (the messages
/// up to `last` were deleted since) is the read complete.
async fn more_up_to(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
    seq: u64,
    last: u64,
) -> Result<bool> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let next = stream
        .raw_message_builder()
        .sequence(seq + 1)
        .next_by_subject(filter.to_string())
        .send()
        .await;
    match next {
        Ok(m) => Ok(m.sequence <= last),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(Error::nats(e)),
    }
}
