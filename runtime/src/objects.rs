//! Reading an artifact whole, safe against the object being replaced while it is read.
//!
//! A reader of the object store first reads the object's metadata, then subscribes to the
//! chunks it names. If the object is replaced in between (a checkpoint saved again by a worker
//! that still runs), the old chunks are purged and the subscription waits forever for them.
//! So a read that gets no chunk for a while looks again: if the object changed it starts over,
//! and if it did not the server is only slow, up to a limit.

use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectStore};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};

/// How long a read waits for the next chunk before it checks whether the object changed.
const RECHECK: Duration = Duration::from_millis(250);
/// How long an unchanged object may go without delivering a chunk before the read fails.
const STALLED: Duration = Duration::from_secs(30);
/// Replacements a read outlasts; one that keeps losing to a writer gives up.
const RESTARTS: usize = 20;

/// The whole object, `None` if there is none.
pub async fn read_object(store: &ObjectStore, name: &str) -> Result<Option<Vec<u8>>> {
    for _ in 0..RESTARTS {
        let mut object = match store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::nats(format!("cannot read artifact {name}: {e}"))),
        };
        let nuid = object.info().nuid.clone();
        let mut bytes = Vec::with_capacity(object.info().size);
        let mut chunk = vec![0u8; 128 * 1024];
        let mut last = Instant::now();
        let replaced = loop {
            match tokio::time::timeout(RECHECK, object.read(&mut chunk)).await {
                Ok(Ok(0)) => return Ok(Some(bytes)),
                Ok(Ok(n)) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    last = Instant::now();
                }
                // The chunks come from a consumer on the server: its failures (a server
                // gone mid-read times out) are NATS errors, an outage among them.
                Ok(Err(e)) => return Err(Error::nats(format!("cannot read artifact {name}: {e}"))),
                Err(_) => {
                    match store.info(name).await {
                        Ok(i) if i.deleted => return Ok(None),
                        Ok(i) if i.nuid != nuid => break true,
                        Err(e) if e.kind() == InfoErrorKind::NotFound => return Ok(None),
                        // Unchanged, or the server cannot say now: keep waiting.
                        _ => {}
                    }
                    if last.elapsed() > STALLED {
                        break false;
                    }
                }
            }
        };
        if !replaced {
            return Err(Error::Unavailable(format!(
                "cannot read artifact {name}: no data from the server for {}s",
                STALLED.as_secs()
            )));
        }
        tracing::debug!(artifact = %name, "artifact replaced while being read; reading it again");
    }
    Err(Error::Nats(format!(
        "cannot read artifact {name}: it was replaced {RESTARTS} times while being read"
    )))
}
