//! What travels over NATS: job messages, worker events and the job-state records of the KV
//! bucket. JSON, tagged, so a reader of the stream (or `nats kv get`) can follow it by eye.

use serde::{Deserialize, Serialize};

use crate::graph::{JobId, JobSpec};
use crate::names::is_plain_name;

/// A job on the work queue: names and settings only, never paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub id: JobId,
    pub key: String,
    pub spec: JobSpec,
    /// How many times the coordinator has queued this job after job errors (0 first).
    pub retry: u32,
    /// How many lost workers (redeliveries after a lease ran out) the job survives before it
    /// is dead; workers enforce it, because only they see the redelivery.
    pub lost_budget: u32,
}

impl JobMessage {
    /// Every name the spec carries must be a plain name: a path in a job message is refused.
    pub fn check_names(&self) -> Result<(), String> {
        let value = serde_json::to_value(&self.spec).map_err(|e| e.to_string())?;
        let mut bad = None;
        walk_strings(&value, &mut |s| {
            if bad.is_none() && !is_plain_name(s) {
                bad = Some(s.to_string());
            }
        });
        match bad {
            Some(s) => Err(format!(
                "`{s}` is not a plain name (job messages never carry paths)"
            )),
            None => Ok(()),
        }
    }
}

/// The spec fields that hold names; settings are numbers and enums and are not checked.
const NAME_FIELDS: [&str; 8] = [
    "model",
    "task",
    "src",
    "tgt",
    "src_model",
    "tgt_model",
    "split",
    "train_tasks",
];

fn walk_strings(v: &serde_json::Value, f: &mut impl FnMut(&str)) {
    let serde_json::Value::Object(o) = v else {
        return;
    };
    for (k, x) in o {
        match x {
            serde_json::Value::String(s) if NAME_FIELDS.contains(&k.as_str()) => f(s),
            serde_json::Value::Array(a) if NAME_FIELDS.contains(&k.as_str()) => {
                a.iter().filter_map(|s| s.as_str()).for_each(&mut *f)
            }
            // A TPT job's `source` holds a task and a model.
            serde_json::Value::Object(_) if k == "source" => walk_strings(x, f),
            _ => {}
        }
    }
}

/// One logged value of a running job (a row of the `metrics` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub step: u64,
    pub name: String,
    pub value: f64,
    /// Seconds since the attempt started.
    pub wall_s: f64,
}

/// A final score (a row of the `evals` table); the job's kind and names come with the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub src_task: Option<String>,
    pub tgt_task: Option<String>,
    pub src_model: Option<String>,
    pub split: String,
    pub metric: String,
    pub value: f64,
    pub n: u64,
}

/// What a finished job produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOutput {
    /// Object-store names of the artifacts it wrote.
    pub artifacts: Vec<String>,
    /// Final metrics (the streamed ones went out in progress events).
    pub metrics: Vec<MetricRow>,
    pub evals: Vec<EvalRow>,
    /// What ran the job; absent in messages from workers older than this field, and for jobs
    /// that ran no model (synthetic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// What produced a job's results, so that two result sets can be compared: scores and prompt
/// bytes depend on the code, libtorch, the device, the precision and the thread count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The promptgrid version (Cargo's package version).
    pub version: String,
    /// The git commit the worker was built from; `unknown` when built outside a git checkout.
    pub commit: String,
    /// The libtorch version it links (`2.13.0+cpu`), `unknown` when the build could not tell.
    pub torch: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `fp32` or `bf16`.
    pub precision: String,
    /// libtorch's intra-op threads.
    pub threads: u32,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    /// False for deterministic errors (bad data, NaN, a malformed message): retrying would
    /// fail the same way.
    pub retryable: bool,
}

/// A worker event, published to `pg.<sweep>.events.<kind>.<job id>`.
// Events are built once and serialized at once; boxing the big variant would only cost readers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        job: JobId,
        key: String,
        attempt: u32,
        worker: String,
        at_ms: u64,
    },
    Progress {
        job: JobId,
        attempt: u32,
        metrics: Vec<MetricRow>,
    },
    Finished {
        job: JobId,
        key: String,
        attempt: u32,
        worker: String,
        started_ms: u64,
        at_ms: u64,
        spec: Option<JobSpec>,
        output: JobOutput,
    },
    Failed {
        job: JobId,
        key: String,
        attempt: u32,
        worker: String,
        at_ms: u64,
        failure: Failure,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Progress { .. } => "progress",
            Event::Finished { .. } => "finished",
            Event::Failed { .. } => "failed",
        }
    }

    pub fn job(&self) -> &JobId {
        match self {
            Event::Started { job, .. }
            | Event::Progress { job, .. }
            | Event::Finished { job, .. }
            | Event::Failed { job, .. } => job,
        }
    }

    /// The `Nats-Msg-Id` that makes a re-published event a no-op: a finished event is unique
    /// per job, others per attempt.
    pub fn msg_id(&self, seq: u64) -> String {
        match self {
            Event::Started { job, attempt, .. } => format!("{job}.started.{attempt}"),
            Event::Progress { job, attempt, .. } => format!("{job}.progress.{attempt}.{seq}"),
            Event::Finished { job, .. } => format!("{job}.finished"),
            Event::Failed { job, attempt, .. } => format!("{job}.failed.{attempt}"),
        }
    }
}

/// The state of a job, the value of its key in the state bucket. Writers use the entry's
/// revision for compare-and-set, so two parties can never both move a job forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Queued for a worker. `requeued`: a worker handed it back and its message is still in
    /// the queue, so the coordinator must not publish another.
    Pending {
        attempts: u32,
        retries: u32,
        lost: u32,
        #[serde(default)]
        requeued: bool,
        /// Attempts handed back because NATS was unavailable: counted apart from job errors
        /// and lost workers, and charged to neither budget.
        #[serde(default, skip_serializing_if = "is_zero")]
        outages: u32,
    },
    /// A worker holds it; `attempt` counts starts, including redeliveries.
    Running {
        attempt: u32,
        retries: u32,
        lost: u32,
        worker: String,
        started_ms: u64,
        lease_ms: u64,
        /// Stream sequence of the message it runs, to tell a redelivery from a duplicate.
        msg_seq: u64,
        /// Carried from [`JobState::Pending`].
        #[serde(default, skip_serializing_if = "is_zero")]
        outages: u32,
    },
    Done {
        attempt: u32,
        worker: String,
        started_ms: u64,
        finished_ms: u64,
        output: JobOutput,
    },
    /// A job error the coordinator has not yet decided on (retry or dead).
    Failed {
        attempt: u32,
        retries: u32,
        lost: u32,
        worker: String,
        failure: Failure,
        at_ms: u64,
    },
    Dead {
        attempt: u32,
        retries: u32,
        lost: u32,
        reason: String,
        at_ms: u64,
    },
}

impl JobState {
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Pending { .. } => "pending",
            JobState::Running { .. } => "running",
            JobState::Done { .. } => "done",
            JobState::Failed { .. } => "failed",
            JobState::Dead { .. } => "dead",
        }
    }

    pub fn fresh() -> JobState {
        JobState::Pending {
            attempts: 0,
            retries: 0,
            lost: 0,
            requeued: false,
            outages: 0,
        }
    }

    /// Attempts handed back because NATS was unavailable (0 once done, failed or dead).
    pub fn outages(&self) -> u32 {
        match *self {
            JobState::Pending { outages, .. } | JobState::Running { outages, .. } => outages,
            _ => 0,
        }
    }

    /// (attempts so far, job-error retries, lost-worker redeliveries).
    pub fn counters(&self) -> (u32, u32, u32) {
        match *self {
            JobState::Pending {
                attempts,
                retries,
                lost,
                ..
            } => (attempts, retries, lost),
            JobState::Running {
                attempt,
                retries,
                lost,
                ..
            }
            | JobState::Failed {
                attempt,
                retries,
                lost,
                ..
            }
            | JobState::Dead {
                attempt,
                retries,
                lost,
                ..
            } => (attempt, retries, lost),
            JobState::Done { attempt, .. } => (attempt, 0, 0),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(b: &[u8]) -> Result<JobState, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        let s = JobState::Running {
            attempt: 2,
            retries: 1,
            lost: 1,
            worker: "w1".into(),
            started_ms: 5,
            lease_ms: 30_000,
            msg_seq: 9,
            outages: 3,
        };
        assert_eq!(JobState::from_bytes(&s.to_bytes()).unwrap(), s);
        // A state written before outages were counted reads as none; none is not written.
        let old = br#"{"state":"pending","attempts":1,"retries":0,"lost":0}"#;
        assert_eq!(JobState::from_bytes(old).unwrap().outages(), 0);
        let fresh = String::from_utf8(JobState::fresh().to_bytes()).unwrap();
        assert!(!fresh.contains("outages"), "{fresh}");
    }

    #[test]
    fn paths_in_messages_are_refused() {
        let spec = JobSpec::Transfer {
            src: "../../etc".into(),
            tgt: "sst2".into(),
            model: "m".into(),
            seed: 1,
            split: "test".into(),
        };
        let msg = JobMessage {
            id: JobId::new("ab"),
            key: "k".into(),
            spec,
            retry: 0,
            lost_budget: 3,
        };
        assert!(msg.check_names().unwrap_err().contains("../../etc"));
    }

    /// A worker older than the provenance field sends outputs without it: they still decode.
    #[test]
    fn outputs_with_and_without_provenance_decode() {
        let old: JobOutput =
            serde_json::from_str(r#"{"artifacts":["prompt/x"],"metrics":[],"evals":[]}"#).unwrap();
        assert_eq!(old.provenance, None);
        assert_eq!(old.artifacts, ["prompt/x"]);
        let new = JobOutput {
            provenance: Some(Provenance {
                version: "0.1.0".into(),
                commit: "abc".into(),
                torch: "2.13.0+cpu".into(),
                device: "cuda:1".into(),
                precision: "bf16".into(),
                threads: 4,
            }),
            ..old
        };
        let back: JobOutput = serde_json::from_slice(&serde_json::to_vec(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
