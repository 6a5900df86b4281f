//! A compact copy of the coordinator's view of the state bucket, so that a restart reads one
//! object and replays only the bucket's messages after it instead of every job's state (at a
//! million jobs the full replay took tens of seconds).
//!
//! The bucket stays the truth: a snapshot says which stream sequence of the bucket it covers
//! and which graph and bucket it was taken of, and one that does not match (another graph, a
//! recreated bucket, a sequence the bucket has not reached, a bad checksum) is ignored, and the
//! coordinator replays the whole bucket as before.
//!
//! Layout (integers are LEB128 unless said otherwise): magic, graph digest, bucket creation
//! time (i128, little-endian), covered sequence, jobs, then per job its class and, unless it has
//! no state, its counters and revision; the full states of running and failed jobs (the status
//! summary lists the one, the coordinator decides the other); the summary's newest errors; and
//! a SHA-256 of everything before it.

use promptgrid_common::codec::{Malformed, Reader, Unsealed, put_bytes, put_varint, seal, unseal};
use promptgrid_common::wire::JobState;

use crate::error::{Error, Result};
use crate::streams::SweepStreams;

/// Where the coordinator keeps its snapshot, next to the manifest it is tied to.
pub const SNAPSHOT_ARTIFACT: &str = "manifest/states.bin";

const MAGIC: &[u8; 8] = b"PGSTATE1";

/// A job's class in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Absent = 0,
    Pending = 1,
    /// Pending and handed back by its worker (`requeued`).
    Requeued = 2,
    Running = 3,
    Done = 4,
    Failed = 5,
    Dead = 6,
}

impl Tag {
    fn from_u8(b: u8) -> Option<Tag> {
        Some(match b {
            0 => Tag::Absent,
            1 => Tag::Pending,
            2 => Tag::Requeued,
            3 => Tag::Running,
            4 => Tag::Done,
            5 => Tag::Failed,
            6 => Tag::Dead,
            _ => return None,
        })
    }

    /// Whether the snapshot carries the job's full state, not only its class.
    pub fn detailed(self) -> bool {
        matches!(self, Tag::Running | Tag::Failed)
    }
}

/// One job as the snapshot has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobEntry {
    pub tag: Tag,
    pub counters: (u32, u32, u32),
    pub revision: u64,
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("not a state snapshot")]
    Magic,
    #[error("truncated or malformed")]
    Malformed,
    #[error("checksum mismatch")]
    Checksum,
    #[error("taken of another graph")]
    OtherGraph,
    #[error("taken of another state bucket")]
    OtherBucket,
    #[error("covers sequence {0}, beyond the bucket's last {1}")]
    Ahead(u64, u64),
    #[error("has {0} jobs, the graph {1}")]
    Jobs(usize, usize),
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub graph_digest: String,
    /// The state bucket's stream creation time, ns since the epoch: a recreated bucket numbers
    /// its messages from 1 again.
    pub bucket_created_ns: i128,
    /// Every message of the bucket up to this stream sequence is in the snapshot.
    pub seq: u64,
    pub jobs: Vec<JobEntry>,
    /// (job, revision, full state) of the running and failed jobs.
    pub details: Vec<(u32, u64, JobState)>,
    /// (at ms, job, reason): the status summary's newest errors.
    pub errors: Vec<(u64, u32, String)>,
}

/// Writes a snapshot field by field, straight from the scheduler's arrays.
pub struct Encoder {
    out: Vec<u8>,
    jobs_left: usize,
}

impl Encoder {
    pub fn new(graph_digest: &str, bucket_created_ns: i128, seq: u64, jobs: usize) -> Encoder {
        // Most jobs take 4 to 8 bytes.
        let mut out = Vec::with_capacity(64 + jobs * 8);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, graph_digest.as_bytes());
        out.extend_from_slice(&bucket_created_ns.to_le_bytes());
        put_varint(&mut out, seq);
        put_varint(&mut out, jobs as u64);
        Encoder {
            out,
            jobs_left: jobs,
        }
    }

    /// The next job, in graph order.
    pub fn job(&mut self, e: JobEntry) {
        self.jobs_left -= 1;
        self.out.push(e.tag as u8);
        if e.tag != Tag::Absent {
            put_varint(&mut self.out, u64::from(e.counters.0));
            put_varint(&mut self.out, u64::from(e.counters.1));
            put_varint(&mut self.out, u64::from(e.counters.2));
            put_varint(&mut self.out, e.revision);
        }
    }

    /// After the jobs: the full states of the [`Tag::detailed`] ones, then the errors.
    pub fn finish(
        mut self,
        details: &[(u32, u64, Vec<u8>)],
        errors: &[(u64, u32, String)],
    ) -> Vec<u8> {
        debug_assert_eq!(self.jobs_left, 0);
        let out = &mut self.out;
        put_varint(out, details.len() as u64);
        for (i, rev, state) in details {
            put_varint(out, u64::from(*i));
            put_varint(out, *rev);
            put_bytes(out, state);
        }
        put_varint(out, errors.len() as u64);
        for (at, i, reason) in errors {
            put_varint(out, *at);
            put_varint(out, u64::from(*i));
            put_bytes(out, reason.as_bytes());
        }
        seal(out);
        self.out
    }
}

impl From<Malformed> for Invalid {
    fn from(_: Malformed) -> Invalid {
        Invalid::Malformed
    }
}

/// Decodes and checks a snapshot's own consistency (not yet whether it fits the sweep).
pub fn decode(bytes: &[u8]) -> Result<Snapshot, Invalid> {
    let body = unseal(bytes, MAGIC).map_err(|e| match e {
        Unsealed::Magic => Invalid::Magic,
        Unsealed::Checksum => Invalid::Checksum,
    })?;
    let mut r = Reader { b: body };
    let graph_digest = r.string()?;
    let created: [u8; 16] = r.take(16)?.try_into().map_err(|_| Invalid::Malformed)?;
    let seq = r.varint()?;
    let n = r.usize()?;
    // At least one byte per job: a corrupt count cannot make us reserve memory for nothing.
    if n > r.b.len() {
        return Err(Invalid::Malformed);
    }
    let mut jobs = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = Tag::from_u8(r.byte()?).ok_or(Invalid::Malformed)?;
        let e = if tag == Tag::Absent {
            JobEntry {
                tag,
                counters: (0, 0, 0),
                revision: 0,
            }
        } else {
            JobEntry {
                tag,
                counters: (r.u32()?, r.u32()?, r.u32()?),
                revision: r.varint()?,
            }
        };
        jobs.push(e);
    }
    let mut details = Vec::new();
    for _ in 0..r.varint()? {
        let i = r.u32()?;
        let rev = r.varint()?;
        let state = JobState::from_bytes(r.bytes()?).map_err(|_| Invalid::Malformed)?;
        details.push((i, rev, state));
    }
    let mut errors = Vec::new();
    for _ in 0..r.varint()? {
        let at = r.varint()?;
        let i = r.u32()?;
        let reason = r.string()?;
        errors.push((at, i, reason));
    }
    if !r.b.is_empty() {
        return Err(Invalid::Malformed);
    }
    // Every detailed job has its state, at the revision its entry says, and only those.
    let detailed = jobs.iter().filter(|e| e.tag.detailed()).count();
    let details_fit = details.iter().all(|(i, rev, _)| {
        jobs.get(*i as usize)
            .is_some_and(|e| e.tag.detailed() && e.revision == *rev)
    });
    if detailed != details.len() || !details_fit || errors.iter().any(|e| e.1 as usize >= n) {
        return Err(Invalid::Malformed);
    }
    Ok(Snapshot {
        graph_digest,
        bucket_created_ns: i128::from_le_bytes(created),
        seq,
        jobs,
        details,
        errors,
    })
}

/// Where the state bucket is: its stream's creation time (ns), last sequence and messages.
pub async fn bucket_position(streams: &SweepStreams) -> Result<(i128, u64, u64)> {
    let mut stream = streams
        .js
        .get_stream(&streams.state.stream_name)
        .await
        .map_err(Error::nats)?;
    let info = stream.info().await.map_err(Error::nats)?;
    Ok((
        info.created.unix_timestamp_nanos(),
        info.state.last_sequence,
        info.state.messages,
    ))
}

/// Checks a decoded snapshot against the sweep's graph and state bucket.
pub fn validate(
    s: &Snapshot,
    graph_digest: &str,
    jobs: usize,
    bucket: (i128, u64),
) -> Result<(), Invalid> {
    if s.graph_digest != graph_digest {
        return Err(Invalid::OtherGraph);
    }
    if s.jobs.len() != jobs {
        return Err(Invalid::Jobs(s.jobs.len(), jobs));
    }
    if s.bucket_created_ns != bucket.0 {
        return Err(Invalid::OtherBucket);
    }
    if s.seq > bucket.1 {
        return Err(Invalid::Ahead(s.seq, bucket.1));
    }
    Ok(())
}

/// The bytes of the sweep's snapshot, if there is one it can read. A restart fetches them
/// while it reads its graph back: only the coordinator writes a snapshot, and one read before
/// the bucket's position is at worst older than that position, which [`load`] accepts.
pub async fn fetch(streams: SweepStreams) -> Option<Vec<u8>> {
    match crate::objects::read_object(&streams.artifacts, SNAPSHOT_ARTIFACT).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the state snapshot; replaying every state");
            None
        }
    }
}

/// The snapshot in `bytes` (from [`fetch`]) if it fits `graph_digest`, `jobs` and the bucket
/// as it is now (`bucket`: its creation time and last sequence, from [`bucket_position`]);
/// `None` (and a log line saying why) otherwise.
pub fn load(
    bytes: &[u8],
    graph_digest: &str,
    jobs: usize,
    bucket: (i128, u64),
) -> Option<Snapshot> {
    match decode(bytes).and_then(|s| validate(&s, graph_digest, jobs, bucket).map(|()| s)) {
        Ok(s) => Some(s),
        Err(why) => {
            tracing::info!(%why, "the state snapshot does not fit; replaying every state");
            None
        }
    }
}

/// Stores a snapshot, replacing the previous one.
pub async fn store(streams: &SweepStreams, bytes: &[u8]) -> Result<()> {
    let mut reader = bytes;
    streams
        .artifacts
        .put(SNAPSHOT_ARTIFACT, &mut reader)
        .await
        .map_err(Error::nats)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use promptgrid_common::wire::Failure;

    use super::*;

    fn sample() -> Vec<u8> {
        let failed = JobState::Failed {
            attempt: 1,
            retries: 0,
            lost: 0,
            worker: "w".into(),
            failure: Failure {
                reason: "boom".into(),
                retryable: true,
            },
            at_ms: 7,
        };
        let mut e = Encoder::new("abc", -5, 1_000_000, 3);
        e.job(JobEntry {
            tag: Tag::Done,
            counters: (1, 0, 0),
            revision: 300,
        });
        e.job(JobEntry {
            tag: Tag::Absent,
            counters: (0, 0, 0),
            revision: 0,
        });
        e.job(JobEntry {
            tag: Tag::Failed,
            counters: (1, 0, 0),
            revision: 999_999,
        });
        e.finish(&[(2, 999_999, failed.to_bytes())], &[(7, 2, "boom".into())])
    }

    #[test]
    fn round_trips() {
        let s = decode(&sample()).unwrap();
        assert_eq!(s.graph_digest, "abc");
        assert_eq!(s.bucket_created_ns, -5);
        assert_eq!(s.seq, 1_000_000);
        assert_eq!(s.jobs.len(), 3);
        assert_eq!(s.jobs[0].revision, 300);
        assert_eq!(s.jobs[1].tag, Tag::Absent);
        assert_eq!(s.details[0].0, 2);
        assert_eq!(s.errors, vec![(7, 2, "boom".to_string())]);
        assert_eq!(validate(&s, "abc", 3, (-5, 1_000_000)), Ok(()));
        assert_eq!(
            validate(&s, "abd", 3, (-5, 1_000_000)),
            Err(Invalid::OtherGraph)
        );
        assert_eq!(
            validate(&s, "abc", 3, (-4, 1_000_000)),
            Err(Invalid::OtherBucket)
        );
        assert_eq!(
            validate(&s, "abc", 3, (-5, 10)),
            Err(Invalid::Ahead(1_000_000, 10))
        );
    }

    #[test]
    fn any_damage_is_refused() {
        let good = sample();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipped byte {i}");
        }
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "cut at {n}");
        }
    }
}
