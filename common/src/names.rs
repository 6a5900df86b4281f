//! Names of everything a sweep owns in NATS: subjects, streams, consumers and buckets.
//!
//! Every name is scoped by the sweep's name, so two sweeps share a server without seeing each
//! other's jobs. Sweep names are validated by the spec (`[A-Za-z0-9_-]`), which is a valid token
//! for subjects, stream names and bucket names alike; model names are sanitized here because a
//! subject token may not hold `.`, `*`, `>` or spaces.

use crate::graph::{JobId, JobKind};

/// The artifact holding the sweep (JSON) the coordinator runs: workers rebuild the same graph
/// from it and resolve its names through their own roots.
pub const SWEEP_ARTIFACT: &str = "manifest/sweep.json";

/// The token standing for "any model" in job subjects (synthetic jobs).
pub const NO_MODEL: &str = "none";

/// Model consumers are `jobs-<model token>`.
const MODEL_CONSUMER_PREFIX: &str = "jobs-";

/// All names of one sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepNames {
    pub sweep: String,
}

impl SweepNames {
    pub fn new(sweep: &str) -> SweepNames {
        SweepNames {
            sweep: sweep.to_string(),
        }
    }

    /// Work-queue stream of job messages.
    pub fn jobs_stream(&self) -> String {
        format!("PG_{}_JOBS", self.sweep)
    }

    /// Durable stream of worker events.
    pub fn events_stream(&self) -> String {
        format!("PG_{}_EVENTS", self.sweep)
    }

    /// KV bucket of job states, keyed by job id.
    pub fn state_bucket(&self) -> String {
        format!("pg_{}_state", self.sweep)
    }

    /// Object store of artifacts and checkpoints.
    pub fn artifact_bucket(&self) -> String {
        format!("pg_{}_artifacts", self.sweep)
    }

    /// `pg.<sweep>.jobs.<model>.<kind>.<job id>`: the model lets workers prefer the one they
    /// hold, the id lets a worker fail a job whose payload it cannot decode.
    pub fn job_subject(&self, model: Option<&str>, kind: JobKind, id: &JobId) -> String {
        format!(
            "pg.{}.jobs.{}.{}.{}",
            self.sweep,
            model_token(model),
            kind.name(),
            id
        )
    }

    pub fn jobs_wildcard(&self) -> String {
        format!("pg.{}.jobs.>", self.sweep)
    }

    /// Filter of one model's jobs; work-queue consumers must not overlap, so there is exactly
    /// one durable consumer per model token.
    pub fn model_filter(&self, model_token: &str) -> String {
        format!("pg.{}.jobs.{}.>", self.sweep, model_token)
    }

    /// The durable consumer name of one model's jobs.
    pub fn model_consumer(&self, model_token: &str) -> String {
        format!("{MODEL_CONSUMER_PREFIX}{model_token}")
    }

    /// The model token of a consumer named by [`Self::model_consumer`]; `None` for others.
    pub fn model_of_consumer<'a>(&self, consumer: &'a str) -> Option<&'a str> {
        consumer.strip_prefix(MODEL_CONSUMER_PREFIX)
    }

    /// `pg.<sweep>.events.<event kind>.<job id>`.
    pub fn event_subject(&self, event: &str, id: &JobId) -> String {
        format!("pg.{}.events.{}.{}", self.sweep, event, id)
    }

    pub fn events_wildcard(&self) -> String {
        format!("pg.{}.events.>", self.sweep)
    }

    /// The job id a job subject names, if it is one of this sweep's job subjects.
    pub fn job_id_of_subject(&self, subject: &str) -> Option<JobId> {
        let rest = subject.strip_prefix(&format!("pg.{}.jobs.", self.sweep))?;
        let id = rest.rsplit('.').next()?;
        (rest.split('.').count() == 3 && is_job_id(id)).then(|| JobId::new(id))
    }
}

/// The subject token of a model: its name with anything a subject token cannot hold replaced.
pub fn model_token(model: Option<&str>) -> String {
    match model {
        None => NO_MODEL.to_string(),
        Some(m) => m
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

/// Job ids are lowercase hex (see `graph::content_id`).
pub fn is_job_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a plain name (a model, task or artifact name) rather than a path: workers
/// resolve names under their own roots and refuse anything that could escape them.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.contains("..")
        && !name.starts_with('/')
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@>".contains(c))
        && !name.contains("//")
        && !name.contains(":\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_consumers_round_trip_the_model_token() {
        let n = SweepNames::new("demo");
        let c = n.model_consumer("roberta_base");
        assert_eq!(c, "jobs-roberta_base");
        assert_eq!(n.model_of_consumer(&c), Some("roberta_base"));
        assert_eq!(n.model_of_consumer("sink"), None);
    }

    #[test]
    fn subjects_round_trip_the_job_id() {
        let n = SweepNames::new("demo");
        let id = JobId::new("0123abcd");
        let s = n.job_subject(Some("roberta.base"), JobKind::Train, &id);
        assert_eq!(s, "pg.demo.jobs.roberta_base.train.0123abcd");
        assert_eq!(n.job_id_of_subject(&s), Some(id));
        assert_eq!(n.job_id_of_subject("pg.other.jobs.x.train.00"), None);
        assert_eq!(n.job_id_of_subject("pg.demo.jobs.x.train.zz"), None);
    }

    #[test]
    fn paths_are_not_names() {
        assert!(is_plain_name("sst2"));
        assert!(is_plain_name("prompts/sst2.safetensors"));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../b",
            "",
            ".hidden",
            "a\\b",
            "a b",
        ] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
