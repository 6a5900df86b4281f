//! Job states in the KV bucket, written only by compare-and-set on the entry's revision.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use promptgrid_common::JobId;
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

/// Every job state in the bucket, read through a watcher until it is current. The watcher
/// reads the bucket's messages in order from the first (the bucket keeps one value per key,
/// and a later value of a key replaces an earlier one here in any case), which spares the
/// server working out the last message of each of a million keys first.
pub async fn snapshot(
    js: &async_nats::jetstream::Context,
    store: &kv::Store,
) -> Result<HashMap<JobId, Versioned>> {
    let mut out = HashMap::new();
    if count(js, store).await? == 0 {
        return Ok(out);
    }
    let mut watch = store
        .watch_all_from_revision(1)
        .await
        .map_err(Error::nats)?;
    loop {
        // A bucket whose last values were deletes never reports `seen_current` on a value;
        // a quiet second means the replay is over.
        let next = tokio::time::timeout(Duration::from_secs(1), watch.next()).await;
        let Ok(Some(entry)) = next else { break };
        let entry = entry.map_err(Error::nats)?;
        let current = entry.seen_current || entry.delta == 0;
        if !matches!(entry.operation, kv::Operation::Put) {
            out.remove(entry.key.as_str());
        } else {
            let id = JobId::new(entry.key.as_str());
            let state = JobState::from_bytes(&entry.value).map_err(|source| Error::BadState {
                job: id.clone(),
                source,
            })?;
            out.insert(
                id,
                Versioned {
                    state,
                    revision: entry.revision,
                },
            );
        }
        if current {
            break;
        }
    }
    Ok(out)
}
