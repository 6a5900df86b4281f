//! `promptgrid status` and `promptgrid retry --failed`: read-only counts from the state bucket,
//! and the re-queueing of dead jobs.
//!
//! A running coordinator keeps a [`Summary`] of its counts in the artifact store; [`quick`]
//! answers from it in one read. Without one, [`status`] reads the coordinator's last state
//! snapshot and the bucket's changes since, and every job's state only where no snapshot fits.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use promptgrid_common::wire::{JobState, now_ms};
use promptgrid_common::{JobGraph, JobKind};
use serde::{Deserialize, Serialize};

use crate::connect::NatsConfig;
use crate::error::Result;
use crate::snapshot::{self, Tag};
use crate::streams::SweepStreams;
use crate::{manifest, state};

/// A running job as status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJob {
    pub key: String,
    pub worker: String,
    pub attempt: u32,
    pub age_s: f64,
}

/// What `promptgrid status` prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusReport {
    pub sweep: String,
    pub total: usize,
    /// State name -> kind -> count; jobs without a state are "waiting".
    pub counts: BTreeMap<String, BTreeMap<JobKind, usize>>,
    pub running: Vec<RunningJob>,
    /// (job key, reason), newest first.
    pub last_errors: Vec<(String, String)>,
    /// (job key, why it is not running), a sample.
    pub waits: Vec<(String, String)>,
    /// Read from the coordinator's summary of this age (ms) rather than from every job's state;
    /// its counts are by readiness: `queued` jobs can run now, `waiting` ones wait for others.
    pub summary_age_ms: Option<u64>,
}

impl StatusReport {
    pub fn count(&self, state: &str) -> usize {
        self.counts.get(state).map_or(0, |m| m.values().sum())
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sweep {}: {} jobs", self.sweep, self.total)?;
        if let Some(age) = self.summary_age_ms {
            writeln!(
                f,
                "  (the running coordinator's counts, {:.1} s old)",
                age as f64 / 1000.0
            )?;
        }
        for (state, kinds) in &self.counts {
            let per: Vec<String> = kinds
                .iter()
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect();
            writeln!(
                f,
                "  {state:8} {:6}  ({})",
                kinds.values().sum::<usize>(),
                per.join(", ")
            )?;
        }
        if !self.running.is_empty() {
            writeln!(f, "running:")?;
            for r in &self.running {
                writeln!(
                    f,
                    "  {}  on {} (attempt {}, {:.0} s)",
                    r.key, r.worker, r.attempt, r.age_s
                )?;
            }
        }
        if !self.last_errors.is_empty() {
            writeln!(f, "last errors:")?;
            for (k, e) in &self.last_errors {
                writeln!(f, "  {k}: {e}")?;
            }
        }
        if !self.waits.is_empty() {
            writeln!(f, "waiting:")?;
            for (k, w) in &self.waits {
                writeln!(f, "  {k}: {w}")?;
            }
        }
        Ok(())
    }
}

/// Where the coordinator keeps its [`Summary`].
pub const SUMMARY_ARTIFACT: &str = "manifest/status.json";

/// A summary older than this is from a coordinator that is gone.
const FRESH_MS: u64 = 5_000;

/// What a running coordinator knows of its sweep, written about once a second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub at_ms: u64,
    pub total: usize,
    /// Class (done, running, queued, waiting, failed, dead) -> kind -> jobs.
    pub counts: BTreeMap<String, BTreeMap<JobKind, usize>>,
    /// (job key, worker, attempt, started at ms).
    pub running: Vec<(String, String, u32, u64)>,
    /// (at ms, job key, reason), newest first.
    pub last_errors: Vec<(u64, String, String)>,
}

/// The status from a running coordinator's summary, in one read; `None` when no coordinator
/// of the sweep has written one in the last few seconds (then [`status`] reads every state).
pub async fn quick(nats: &NatsConfig, sweep: &str) -> Result<Option<StatusReport>> {
    let client = nats.connect().await?;
    let streams = SweepStreams::open(client, sweep).await?;
    let Some(bytes) = crate::objects::read_object(&streams.artifacts, SUMMARY_ARTIFACT).await?
    else {
        return Ok(None);
    };
    let Ok(summary) = serde_json::from_slice::<Summary>(&bytes) else {
        return Ok(None);
    };
    let now = now_ms();
    let age = now.saturating_sub(summary.at_ms);
    if age > FRESH_MS {
        return Ok(None);
    }
    let mut running: Vec<RunningJob> = summary
        .running
        .into_iter()
        .map(|(key, worker, attempt, started_ms)| RunningJob {
            key,
            worker,
            attempt,
            age_s: now.saturating_sub(started_ms) as f64 / 1000.0,
        })
        .collect();
    running.sort_by(|a, b| b.age_s.total_cmp(&a.age_s));
    Ok(Some(StatusReport {
        sweep: sweep.to_string(),
        total: summary.total,
        counts: summary.counts,
        running,
        last_errors: summary
            .last_errors
            .into_iter()
            .map(|(_, k, e)| (k, e))
            .collect(),
        waits: Vec::new(),
        summary_age_ms: Some(age),
    }))
}

/// Every job's state as [`status`] shows it: its state's name, and the full state of the
/// running, failed and dead jobs whose state was read.
struct States {
    /// Per graph place; "waiting" for a job without a state.
    names: Vec<&'static str>,
    full: HashMap<u32, JobState>,
    /// (at ms, place, reason) from the snapshot: the newest errors it knew of.
    errors: Vec<(u64, u32, String)>,
}

impl States {
    /// The coordinator's state snapshot, if one fits this graph and bucket, plus the bucket's
    /// messages after it; else every message of the bucket. At a million jobs the full read
    /// moves a million messages through a server that may be busy with the sweep; the snapshot
    /// is one object and at most [`crate::scheduler`]'s snapshot interval of changes.
    async fn read(streams: &SweepStreams, graph: &JobGraph) -> Result<States> {
        // The snapshot before the bucket's position: it can only be older than that position.
        let bytes = snapshot::fetch(streams.clone()).await;
        let (created, last, messages) = snapshot::bucket_position(streams).await?;
        let snap = bytes.filter(|_| messages > 0).and_then(|b| {
            snapshot::load(&b, &manifest::digest(graph), graph.len(), (created, last))
        });
        let mut states = States {
            names: vec!["waiting"; graph.len()],
            full: HashMap::new(),
            errors: Vec::new(),
        };
        let start = match snap {
            Some(snap) => {
                for (name, e) in states.names.iter_mut().zip(&snap.jobs) {
                    *name = tag_name(e.tag);
                }
                states
                    .full
                    .extend(snap.details.into_iter().map(|(i, _, s)| (i, s)));
                states.errors = snap.errors;
                snap.seq + 1
            }
            None => 1,
        };
        state::scan(&streams.js, &streams.state, start, |key, v| {
            let Some(i) = graph.position_of(key) else {
                return;
            };
            let i32 = i as u32;
            states.full.remove(&i32);
            states.names[i] = match v {
                None => "waiting",
                Some(v) => {
                    let name = v.state.name();
                    if matches!(
                        v.state,
                        JobState::Running { .. } | JobState::Failed { .. } | JobState::Dead { .. }
                    ) {
                        states.full.insert(i32, v.state);
                    }
                    name
                }
            };
        })
        .await?;
        Ok(states)
    }

    /// The newest errors, one per job that is failed or dead now.
    fn last_errors(&self, graph: &JobGraph, n: usize) -> Vec<(String, String)> {
        let mut errors: Vec<(u64, u32, &str)> = self
            .full
            .iter()
            .filter_map(|(&i, s)| match s {
                JobState::Failed { failure, at_ms, .. } => {
                    Some((*at_ms, i, failure.reason.as_str()))
                }
                JobState::Dead { reason, at_ms, .. } => Some((*at_ms, i, reason.as_str())),
                _ => None,
            })
            .collect();
        // The snapshot's errors of dead jobs, whose full states it does not keep.
        errors.extend(self.errors.iter().filter_map(|(at, i, reason)| {
            let still = self.names[*i as usize] == "dead" && !self.full.contains_key(i);
            still.then_some((*at, *i, reason.as_str()))
        }));
        errors.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
        errors.dedup_by_key(|e| e.1);
        errors
            .into_iter()
            .take(n)
            .map(|(_, i, reason)| (graph.jobs()[i as usize].key.clone(), reason.to_string()))
            .collect()
    }
}

/// The state name of a snapshot's class.
fn tag_name(tag: Tag) -> &'static str {
    match tag {
        Tag::Absent => "waiting",
        Tag::Pending | Tag::Requeued => "pending",
        Tag::Running => "running",
        Tag::Done => "done",
        Tag::Failed => "failed",
        Tag::Dead => "dead",
    }
}

/// Counts per state and kind, running jobs, the last errors and why queued jobs wait.
pub async fn status(nats: &NatsConfig, sweep: &str, graph: &JobGraph) -> Result<StatusReport> {
    let client = nats.connect().await?;
    let streams = SweepStreams::open(client, sweep).await?;
    let states = States::read(&streams, graph).await?;
    let mut report = StatusReport {
        sweep: sweep.to_string(),
        total: graph.len(),
        last_errors: states.last_errors(graph, 10),
        ..Default::default()
    };
    let now = now_ms();
    // No pull request on a model's consumer means no worker serves that model.
    let pulling = streams.model_demand().await?;
    // Counted by (name, kind) first: a string per job would be a million allocations.
    let mut counts: HashMap<(&str, JobKind), usize> = HashMap::new();
    for (i, job) in graph.jobs().iter().enumerate() {
        let name = states.names[i];
        *counts.entry((name, job.kind())).or_default() += 1;
        if !matches!(name, "pending" | "waiting") || report.waits.len() >= 20 {
            continue;
        }
        let blocker = graph
            .deps(i)
            .iter()
            .find(|&&d| states.names[d as usize] != "done");
        let why = match blocker {
            Some(&d) => format!(
                "dependency {} is {}",
                graph.jobs()[d as usize].key,
                states.names[d as usize]
            ),
            None => {
                let token = promptgrid_common::names::model_token(job.spec.model());
                if pulling.get(&token).copied().unwrap_or(0) == 0 {
                    format!("queued; no worker is pulling jobs for model `{token}`")
                } else {
                    "queued; workers are busy".to_string()
                }
            }
        };
        report.waits.push((job.key.clone(), why));
    }
    for ((name, kind), n) in counts {
        report
            .counts
            .entry(name.to_string())
            .or_default()
            .insert(kind, n);
    }
    for (&i, s) in &states.full {
        if let JobState::Running {
            worker,
            attempt,
            started_ms,
            ..
        } = s
        {
            report.running.push(RunningJob {
                key: graph.jobs()[i as usize].key.clone(),
                worker: worker.clone(),
                attempt: *attempt,
                age_s: now.saturating_sub(*started_ms) as f64 / 1000.0,
            });
        }
    }
    report
        .running
        .sort_by(|a, b| b.age_s.total_cmp(&a.age_s).then_with(|| a.key.cmp(&b.key)));
    Ok(report)
}

/// Re-queues dead jobs (and undecided failed ones) with fresh budgets; a running coordinator
/// publishes them. Returns how many were re-queued.
pub async fn retry_failed(nats: &NatsConfig, sweep: &str, graph: &JobGraph) -> Result<usize> {
    let client = nats.connect().await?;
    let streams = SweepStreams::open(client, sweep).await?;
    let states = state::snapshot(&streams.js, &streams.state).await?;
    let mut n = 0;
    for job in graph.jobs() {
        let Some(v) = states.get(&job.id) else {
            continue;
        };
        if let JobState::Dead { attempt, .. } | JobState::Failed { attempt, .. } = v.state {
            let next = JobState::Pending {
                attempts: attempt,
                retries: 0,
                lost: 0,
                requeued: false,
                outages: 0,
            };
            if state::cas(&streams.state, &job.id, &next, v.revision)
                .await?
                .is_some()
            {
                n += 1;
            }
        }
    }
    Ok(n)
}
