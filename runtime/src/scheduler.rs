//! The coordinator: publishes jobs whose dependencies are done, follows the state bucket,
//! turns job errors into retries or dead jobs, and reports progress.
//!
//! The KV bucket is the truth; this process only keeps a cache of it. It follows the bucket
//! through a watcher that first replays every current state (that replay is the reconcile on
//! restart) and then streams changes, so it can die at any moment and pick up where it was.
//! Every few seconds it stores a compact copy of its cache ([`crate::snapshot`]) with the
//! bucket sequence it covers; a restart loads that and replays only the messages after it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use promptgrid_common::names::SWEEP_ARTIFACT;
use promptgrid_common::names::model_token;
use promptgrid_common::wire::{JobMessage, JobState, now_ms};
use promptgrid_common::{JobGraph, JobId, JobKind, Sweep};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use tracing::field::Empty;

use crate::connect::NatsConfig;
use crate::error::{Error, Result};
use crate::events::{DoneSource, Sink};
use crate::graphstore;
use crate::manifest::{self, GraphChanges};
use crate::progress::Progress;
use crate::retry;
use crate::snapshot::{self, JobEntry, Snapshot, Tag};
use crate::state;
use crate::status::{SUMMARY_ARTIFACT, Summary};
use crate::streams::{StreamOptions, SweepStreams};

/// Resolves to true when the caller wants the process to stop (Ctrl-C, SIGTERM, tests).
pub type Shutdown = watch::Receiver<bool>;

/// A shutdown signal that never fires. Its sender is leaked on purpose: with the sender
/// dropped, `changed()` would return at once, forever, and every `select!` on it would spin.
pub fn no_shutdown() -> Shutdown {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

/// Everything `coordinator::run` needs.
pub struct CoordinatorConfig {
    pub nats: NatsConfig,
    /// The sweep's name: it scopes every subject and bucket.
    pub sweep: String,
    pub graph: JobGraph,
    /// Where the graph comes from when `graph` is empty: the one stored by an earlier run of
    /// this sweep ([`crate::graphstore`]), or planned from this sweep and then stored.
    pub plan_from: Option<Sweep>,
    pub streams: StreamOptions,
    /// Job-error retries per job (a retryable error after this many is fatal).
    pub error_retries: u32,
    /// Lost workers (lease ran out) a job survives.
    pub lost_retries: u32,
    /// Stop once more than this many jobs are dead.
    pub max_failures: Option<usize>,
    /// Stop at the first dead job.
    pub fail_fast: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Receives every event in order (the Parquet writer); without one, events stay in the
    /// stream.
    pub sink: Option<Box<dyn Sink>>,
    /// Where the done set comes from when the server's data is gone.
    pub done_source: Option<Box<dyn DoneSource>>,
    pub shutdown: Option<Shutdown>,
    /// The sweep itself, stored as the `manifest/sweep.json` artifact so that workers learn
    /// models, tasks and settings from the server rather than from a file of their own.
    pub sweep_spec: Option<Sweep>,
    /// How often the coordinator stores its state snapshot (and once more at the end), at the
    /// latest: sooner once [`SNAPSHOT_CHANGES`] state changes are not in one.
    pub snapshot_every: Duration,
}

impl CoordinatorConfig {
    pub fn new(nats: NatsConfig, sweep: &str, graph: JobGraph) -> CoordinatorConfig {
        CoordinatorConfig {
            nats,
            sweep: sweep.to_string(),
            graph,
            plan_from: None,
            streams: StreamOptions::default(),
            error_retries: 2,
            lost_retries: 3,
            max_failures: None,
            fail_fast: false,
            progress: true,
            sink: None,
            done_source: None,
            shutdown: None,
            sweep_spec: None,
            snapshot_every: Duration::from_secs(10),
        }
    }
}

/// How a coordinator run ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub total: usize,
    pub done: usize,
    pub dead: usize,
    /// Jobs that can never run because a dependency is dead.
    pub blocked: usize,
    /// Stopped early: Ctrl-C, `--fail-fast` or `--max-failures`.
    pub stopped: Option<String>,
    /// What differs from the graph the previous run of this sweep published.
    pub changes: GraphChanges,
    /// Jobs this run published (not counting retries).
    pub published: usize,
    /// From the start of this run until its view of the state bucket was complete (the
    /// reconcile after a restart) and the first ready jobs were handed to the publisher.
    pub reconciled_after: Duration,
    /// When the first message the stream had not seen before was stored (a re-publish of a
    /// job already queued is a duplicate and does not count): the end of a resume.
    pub first_new_publish: Option<Instant>,
    /// The bucket sequence covered by the state snapshot this run started from, if it used one.
    pub snapshot_seq: Option<u64>,
    /// From the start of this run until that snapshot was loaded into the cache.
    pub snapshot_after: Option<Duration>,
    /// From the start of this run until its graph was restored or planned, and which: `None`
    /// when the caller handed it the graph.
    pub graph_after: Option<(Duration, bool)>,
}

impl Outcome {
    /// Every job done: exit status 0.
    pub fn complete(&self) -> bool {
        self.done == self.total
    }
}

/// The coordinator's cache of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// No entry in the bucket (yet).
    Absent,
    Pending {
        requeued: bool,
    },
    Running,
    Done,
    Failed,
    Dead,
}

struct Sched {
    /// Shared with the publisher, which builds each message from it when it sends it.
    graph: Arc<JobGraph>,
    /// Dependents of job `i`: `dependents[first_dependent[i]..first_dependent[i + 1]]`. One
    /// flat list rather than a `Vec` per job: at a million jobs the per-job heap blocks alone
    /// would weigh more than the rest of the scheduler.
    first_dependent: Vec<u32>,
    dependents: Vec<u32>,
    /// Dependencies not yet done.
    remaining: Vec<u32>,
    local: Vec<Local>,
    /// (attempts, retries) of the last message this process published per job, so a state
    /// seen twice is not published twice.
    published: Vec<Option<(u32, u32)>>,
    counters: Vec<(u32, u32, u32)>,
    revision: Vec<u64>,
    /// The replay of current states is over: absent jobs really are absent.
    reconciled: bool,
    /// Jobs per class, moved with every change of a job's state or of its dependencies, so
    /// that the progress line and the end test do not scan every job on each tick.
    tally: Counts,
    /// The same per kind (by place in [`JobKind::ALL`]), for the status summary.
    by_kind: [Counts; JobKind::ALL.len()],
    /// Each job's kind's place in [`JobKind::ALL`].
    kinds: Vec<u8>,
    /// Running jobs: (worker, attempt, started at ms), for the status summary.
    running: HashMap<u32, (String, u32, u64)>,
    /// The newest job errors: (at ms, job, reason), at most [`SUMMARY_ERRORS`].
    errors: Vec<(u64, u32, String)>,
    publish_count: usize,
    reconciled_at: Option<Instant>,
    /// The bucket's stream sequence of the last message applied: every message up to it is in
    /// this cache (the watcher delivers in order), which is what a snapshot covers.
    seq: u64,
    /// The full states of running and failed jobs, for the snapshot (serialized only when one
    /// is written, not on every state change).
    detail: HashMap<u32, JobState>,
}

/// Job errors the status summary lists.
const SUMMARY_ERRORS: usize = 10;

/// How often the coordinator writes its status summary.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// State changes after which a snapshot is stored without waiting for `snapshot_every`: a
/// restart replays the changes since the last snapshot (and those made while it restarts)
/// before it publishes, so this bounds the replay however fast jobs finish. A million-job
/// sweep makes about 5,000 changes a second; its snapshot takes tens of ms to encode.
pub const SNAPSHOT_CHANGES: u64 = 20_000;

/// Whether a snapshot is due: state changed since the last one (`written`, a bucket sequence)
/// and either `every` has passed or [`SNAPSHOT_CHANGES`] changes are not in one.
fn snapshot_due(since: Duration, every: Duration, seq: u64, written: u64) -> bool {
    seq > written && (since >= every || seq - written >= SNAPSHOT_CHANGES)
}

/// One publish for the publisher task: which job and which counters; the publisher builds the
/// message from the graph when it sends it, so a queue of a million ready jobs stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Publish {
    index: u32,
    attempts: u32,
    /// Job-error retries before this message (0 for the first).
    retries: u32,
    /// No entry yet: create the pending state first (and skip if someone else did).
    create: bool,
}

/// Ready jobs handed to the publisher at once; the rest wait in the scheduler's own queue of
/// [`Publish`] records (16 bytes each) until the publisher takes them.
const PUBLISH_QUEUE: usize = 1024;

/// Publishes in flight at once.
const PUBLISH_CONCURRENCY: usize = 256;

/// The class a job counts in for progress and for the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Done,
    Running,
    Queued,
    Waiting,
    Failed,
    Dead,
}

impl Counts {
    fn slot(&mut self, c: Class) -> &mut usize {
        match c {
            Class::Done => &mut self.done,
            Class::Running => &mut self.running,
            Class::Queued => &mut self.queued,
            Class::Waiting => &mut self.waiting,
            Class::Failed => &mut self.failed,
            Class::Dead => &mut self.dead,
        }
    }

    fn shift(&mut self, from: Class, to: Class) {
        if from != to {
            *self.slot(from) -= 1;
            *self.slot(to) += 1;
        }
    }

    /// Jobs that can still move: running, failed-undecided, or ready and queued.
    fn active(&self) -> usize {
        self.running + self.failed + self.queued
    }
}

impl Sched {
    fn new(graph: Arc<JobGraph>) -> Sched {
        let n = graph.len();
        // The graph's dependencies turned around by a counting sort: the flat dependents list.
        let mut remaining = vec![0u32; n];
        let mut first_dependent = vec![0u32; n + 1];
        for (i, r) in remaining.iter_mut().enumerate() {
            let deps = graph.deps(i);
            *r = deps.len() as u32;
            for &k in deps {
                first_dependent[k as usize + 1] += 1;
            }
        }
        for k in 0..n {
            first_dependent[k + 1] += first_dependent[k];
        }
        let mut fill: Vec<u32> = first_dependent[..n].to_vec();
        let mut dependents = vec![0u32; graph.edge_count()];
        for i in 0..n {
            for &k in graph.deps(i) {
                dependents[fill[k as usize] as usize] = i as u32;
                fill[k as usize] += 1;
            }
        }
        let queued = remaining.iter().filter(|&&r| r == 0).count();
        let kinds: Vec<u8> = graph
            .jobs()
            .iter()
            .map(|j| {
                JobKind::ALL
                    .iter()
                    .position(|&k| k == j.kind())
                    .unwrap_or(0) as u8
            })
            .collect();
        let mut by_kind = [Counts::default(); JobKind::ALL.len()];
        for (i, &k) in kinds.iter().enumerate() {
            *by_kind[k as usize].slot(if remaining[i] == 0 {
                Class::Queued
            } else {
                Class::Waiting
            }) += 1;
        }
        Sched {
            graph,
            first_dependent,
            dependents,
            remaining,
            local: vec![Local::Absent; n],
            published: vec![None; n],
            counters: vec![(0, 0, 0); n],
            revision: vec![0; n],
            reconciled: false,
            tally: Counts {
                queued,
                waiting: n - queued,
                ..Counts::default()
            },
            by_kind,
            kinds,
            running: HashMap::new(),
            errors: Vec::new(),
            publish_count: 0,
            reconciled_at: None,
            seq: 0,
            detail: HashMap::new(),
        }
    }

    fn class(&self, i: usize) -> Class {
        match self.local[i] {
            Local::Done => Class::Done,
            Local::Running => Class::Running,
            Local::Failed => Class::Failed,
            Local::Dead => Class::Dead,
            Local::Absent | Local::Pending { .. } if self.remaining[i] == 0 => Class::Queued,
            Local::Absent | Local::Pending { .. } => Class::Waiting,
        }
    }

    fn set_local(&mut self, i: usize, new: Local) {
        let before = self.class(i);
        self.local[i] = new;
        self.shift(i, before);
    }

    /// Moves job `i` from class `before` to its class now in the counts.
    fn shift(&mut self, i: usize, before: Class) {
        let after = self.class(i);
        self.tally.shift(before, after);
        self.by_kind[self.kinds[i] as usize].shift(before, after);
    }

    /// One more (`up`) or one fewer dependency of `i` not done.
    fn move_remaining(&mut self, i: usize, up: bool) {
        let before = self.class(i);
        if up {
            self.remaining[i] += 1;
        } else {
            self.remaining[i] -= 1;
        }
        self.shift(i, before);
    }

    fn dependents_of(&self, i: usize) -> std::ops::Range<usize> {
        self.first_dependent[i] as usize..self.first_dependent[i + 1] as usize
    }

    /// Applies a state seen in the bucket; returns the follow-up it calls for.
    fn apply(
        &mut self,
        i: usize,
        v: &state::Versioned,
        out: &mut VecDeque<Publish>,
    ) -> Option<Decision> {
        let old = self.local[i];
        let new = match &v.state {
            JobState::Pending { requeued, .. } => Local::Pending {
                requeued: *requeued,
            },
            JobState::Running { .. } => Local::Running,
            JobState::Done { .. } => Local::Done,
            JobState::Failed { .. } => Local::Failed,
            JobState::Dead { .. } => Local::Dead,
        };
        self.set_local(i, new);
        self.counters[i] = v.state.counters();
        self.revision[i] = v.revision;
        self.note(i, &v.state);
        if matches!(new, Local::Running | Local::Failed) {
            self.detail.insert(i as u32, v.state.clone());
        } else {
            self.detail.remove(&(i as u32));
        }
        if old == Local::Done && new != Local::Done {
            for d in self.dependents_of(i) {
                let k = self.dependents[d] as usize;
                self.move_remaining(k, true);
            }
        }
        match &v.state {
            JobState::Done { .. } if old != Local::Done => {
                for d in self.dependents_of(i) {
                    let k = self.dependents[d] as usize;
                    self.move_remaining(k, false);
                    self.consider(k, out);
                }
            }
            JobState::Pending { .. } => self.consider(i, out),
            JobState::Failed {
                attempt,
                retries,
                lost,
                failure,
                ..
            } => {
                let next = if failure.retryable {
                    Some(JobState::Pending {
                        attempts: *attempt,
                        retries: retries + 1,
                        lost: *lost,
                        requeued: false,
                        outages: 0,
                    })
                } else {
                    None
                };
                return Some(Decision {
                    index: i,
                    retry: next,
                    failure: failure.reason.clone(),
                });
            }
            _ => {}
        }
        None
    }

    /// Keeps what the status summary lists: running jobs, the newest errors.
    fn note(&mut self, i: usize, state: &JobState) {
        match state {
            JobState::Running {
                worker,
                attempt,
                started_ms,
                ..
            } => {
                self.running
                    .insert(i as u32, (worker.clone(), *attempt, *started_ms));
                return;
            }
            JobState::Failed { failure, at_ms, .. } => {
                self.errors.retain(|e| e.1 != i as u32);
                self.errors.push((*at_ms, i as u32, failure.reason.clone()));
            }
            JobState::Dead { reason, at_ms, .. } => {
                // One line per job, its latest error, as the full read lists them.
                self.errors.retain(|e| e.1 != i as u32);
                self.errors.push((*at_ms, i as u32, reason.clone()));
            }
            _ => {}
        }
        self.running.remove(&(i as u32));
        if self.errors.len() > SUMMARY_ERRORS {
            self.errors.sort_by_key(|e| std::cmp::Reverse(e.0));
            self.errors.truncate(SUMMARY_ERRORS);
        }
    }

    /// The status summary of this moment.
    fn summary(&self) -> Summary {
        let mut counts: BTreeMap<String, BTreeMap<JobKind, usize>> = BTreeMap::new();
        for (k, c) in JobKind::ALL.iter().zip(&self.by_kind) {
            for (name, n) in [
                ("done", c.done),
                ("running", c.running),
                ("queued", c.queued),
                ("waiting", c.waiting),
                ("failed", c.failed),
                ("dead", c.dead),
            ] {
                if n > 0 {
                    *counts
                        .entry(name.to_string())
                        .or_default()
                        .entry(*k)
                        .or_default() += n;
                }
            }
        }
        let key = |i: u32| self.graph.jobs()[i as usize].key.clone();
        let mut errors = self.errors.clone();
        errors.sort_by_key(|e| std::cmp::Reverse(e.0));
        Summary {
            at_ms: now_ms(),
            total: self.local.len(),
            counts,
            running: self
                .running
                .iter()
                .map(|(&i, (w, a, t))| (key(i), w.clone(), *a, *t))
                .collect(),
            last_errors: errors.into_iter().map(|(t, i, e)| (t, key(i), e)).collect(),
        }
    }

    /// Queues a publish if the job is ready and has no message yet.
    fn consider(&mut self, i: usize, out: &mut VecDeque<Publish>) {
        if !self.reconciled || self.remaining[i] > 0 {
            return;
        }
        let create = match self.local[i] {
            Local::Absent => true,
            Local::Pending { requeued: false } => false,
            _ => return,
        };
        let (attempts, retries, _) = self.counters[i];
        if self.published[i] == Some((attempts, retries)) {
            return;
        }
        self.published[i] = Some((attempts, retries));
        self.publish_count += 1;
        out.push_back(Publish {
            index: i as u32,
            attempts,
            retries,
            create,
        });
    }

    /// The next publish: newly ready jobs first, then offers again, skipping those whose job
    /// moved on meanwhile (its message was delivered, so a copy would be a no-op anyway).
    fn next_publish(
        &mut self,
        ready: &mut VecDeque<Publish>,
        later: &mut VecDeque<Publish>,
    ) -> Option<Publish> {
        if let Some(p) = ready.pop_front() {
            return Some(p);
        }
        while let Some(p) = later.pop_front() {
            let i = p.index as usize;
            let (attempts, retries, _) = self.counters[i];
            if self.local[i] == (Local::Pending { requeued: false })
                && (attempts, retries) == (p.attempts, p.retries)
            {
                return Some(p);
            }
            self.publish_count -= 1;
        }
        None
    }

    /// Jobs that can still move: running, failed-undecided, or ready and queued.
    fn active(&self) -> usize {
        self.tally.active()
    }

    fn counts(&self) -> Counts {
        self.tally
    }

    fn done(&self) -> usize {
        self.tally.done
    }

    fn dead(&self) -> usize {
        self.tally.dead
    }

    /// This cache as a snapshot covering bucket sequence [`Sched::seq`].
    fn encode_snapshot(&self, graph_digest: &str, bucket_created_ns: i128) -> Vec<u8> {
        let mut e =
            snapshot::Encoder::new(graph_digest, bucket_created_ns, self.seq, self.local.len());
        for i in 0..self.local.len() {
            let tag = match self.local[i] {
                Local::Absent => Tag::Absent,
                Local::Pending { requeued: false } => Tag::Pending,
                Local::Pending { requeued: true } => Tag::Requeued,
                Local::Running => Tag::Running,
                Local::Done => Tag::Done,
                Local::Failed => Tag::Failed,
                Local::Dead => Tag::Dead,
            };
            e.job(JobEntry {
                tag,
                counters: self.counters[i],
                revision: self.revision[i],
            });
        }
        let mut details: Vec<(u32, u64, Vec<u8>)> = self
            .detail
            .iter()
            .map(|(&i, s)| (i, self.revision[i as usize], s.to_bytes()))
            .collect();
        details.sort_unstable_by_key(|d| d.0);
        e.finish(&details, &self.errors)
    }

    /// Loads a snapshot into a new cache, as if the bucket had been replayed up to its
    /// sequence; returns the decisions its failed jobs call for.
    fn restore(&mut self, s: &Snapshot) -> Vec<Decision> {
        debug_assert!(!self.reconciled && self.local.iter().all(|&l| l == Local::Absent));
        for (i, e) in s.jobs.iter().enumerate() {
            let local = match e.tag {
                // Running and failed jobs come with their full state, applied below.
                Tag::Absent | Tag::Running | Tag::Failed => continue,
                Tag::Pending => Local::Pending { requeued: false },
                Tag::Requeued => Local::Pending { requeued: true },
                Tag::Done => Local::Done,
                Tag::Dead => Local::Dead,
            };
            self.set_local(i, local);
            self.counters[i] = e.counters;
            self.revision[i] = e.revision;
            if local == Local::Done {
                for d in self.dependents_of(i) {
                    let k = self.dependents[d] as usize;
                    self.move_remaining(k, false);
                }
            }
        }
        // Not reconciled yet: nothing is queued for publishing here.
        let mut none = VecDeque::new();
        let mut decisions = Vec::new();
        for (i, revision, state) in &s.details {
            let v = state::Versioned {
                state: state.clone(),
                revision: *revision,
            };
            decisions.extend(self.apply(*i as usize, &v, &mut none));
        }
        self.errors = s.errors.clone();
        self.seq = s.seq;
        decisions
    }
}

/// What to do about a failed job: re-queue it, or declare it dead.
struct Decision {
    index: usize,
    retry: Option<JobState>,
    failure: String,
}

/// Counts for the progress bar.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub done: usize,
    pub running: usize,
    pub queued: usize,
    pub waiting: usize,
    pub failed: usize,
    pub dead: usize,
}

/// Runs the coordinator of one sweep until every job is done or dead (or it is stopped).
pub async fn run(mut config: CoordinatorConfig) -> Result<Outcome> {
    let t0 = Instant::now();
    let plan = tracing::info_span!(
        parent: None,
        "plan",
        sweep = %config.sweep,
        jobs = Empty,
        graph_restored = Empty,
        reused = Empty,
        added = Empty,
        changed = Empty,
        removed = Empty,
        restored = Empty,
    );
    let mut graph_after = None;
    let (client, streams, changes, snapshot_bytes) = async {
        let client = config.nats.connect().await?;
        // A cluster that is still electing its leaders answers "unavailable" for a while.
        let streams = retry::through_outages("set up the sweep's streams", retry::PATIENCE, || {
            SweepStreams::setup(client.clone(), &config.sweep, &config.streams)
        })
        .await?;
        let snapshot_bytes = tokio::spawn(snapshot::fetch(streams.clone()));
        let span = tracing::Span::current();
        let planned_from = match config.plan_from.take() {
            Some(sweep) if config.graph.is_empty() => {
                let (graph, restored) = graphstore::restore_or_plan(&streams, &sweep).await;
                config.graph = graph;
                graph_after = Some((t0.elapsed(), restored));
                span.record("graph_restored", restored);
                (!restored).then_some(sweep)
            }
            _ => None,
        };
        span.record("jobs", config.graph.len());
        let changes = manifest::update(&streams, &config.graph).await?;
        if let Some(sweep) = planned_from
            && let Err(e) = graphstore::store(&streams, &config.graph, &sweep).await
        {
            // Only later restarts lose by it: they plan the graph again.
            tracing::warn!(sweep = %config.sweep, error = %e, "cannot store the planned graph");
        }
        span.record("reused", changes.reused);
        span.record("added", changes.added_count());
        span.record("changed", changes.changed.len());
        span.record("removed", changes.removed.len());
        if let Some(spec) = &config.sweep_spec {
            let bytes = serde_json::to_vec(spec).unwrap_or_default();
            streams
                .artifacts
                .put(SWEEP_ARTIFACT, &mut bytes.as_slice())
                .await
                .map_err(Error::nats)?;
        }
        if !changes.is_empty() {
            tracing::info!(sweep = %config.sweep, "{changes}");
        }
        // An empty state bucket knows nothing: the server's data is new or was lost.
        let empty = state::count(&streams.js, &streams.state).await? == 0;
        span.record("restored", empty && config.done_source.is_some());
        if empty && let Some(source) = &config.done_source {
            restore_done(&streams, &config.graph, source.as_ref()).await?;
        }
        for token in model_tokens(&config.graph) {
            streams.model_consumer(&token, config.streams.lease).await?;
        }
        Ok::<_, Error>((client, streams, changes, snapshot_bytes))
    }
    .instrument(plan)
    .await?;
    // The sink starts once the replay is over: its first act, reading back the keys of every
    // committed row, would otherwise compete with the replay a restart waits for.
    let mut sink = config.sink.take();
    let mut sink_task = None;

    // The scheduler and the publisher share the one graph; the config keeps none.
    let total = config.graph.len();
    let graph = Arc::new(std::mem::take(&mut config.graph));
    let mut sched = Sched::new(graph.clone());
    // A snapshot of this graph and this bucket saves replaying every state before it.
    let (bucket_created, bucket_last, bucket_messages) =
        snapshot::bucket_position(&streams).await?;
    let snapshot_bytes = snapshot_bytes.await.ok().flatten();
    let snapshot_seq = if bucket_messages == 0 {
        None
    } else if let Some(snap) = snapshot_bytes
        .and_then(|b| snapshot::load(&b, &changes.digest, total, (bucket_created, bucket_last)))
    {
        let decisions = sched.restore(&snap);
        tracing::info!(sweep = %config.sweep, seq = snap.seq, "loaded the state snapshot");
        for d in decisions {
            decide(&streams, &sched, d, config.error_retries).await?;
        }
        Some(snap.seq)
    } else {
        None
    };
    let snapshot_after = snapshot_seq.map(|_| t0.elapsed());
    let (pub_tx, pub_rx) = mpsc::channel::<Publish>(PUBLISH_QUEUE);
    let first_new = Arc::new(OnceLock::new());
    let publisher = tokio::spawn(publisher(
        Publisher {
            streams: streams.clone(),
            graph,
            lost_budget: config.lost_retries,
            first_new: first_new.clone(),
        },
        pub_rx,
    ));
    let mut shutdown = config
        .shutdown
        .clone()
        .unwrap_or_else(crate::scheduler::no_shutdown);
    let mut progress = Progress::new(total, config.progress);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let started = Instant::now();

    // The status summary: written from the ticks, one write at a time, never waited for. The
    // first at the first tick that may write one, so that `status` after a restart does not
    // find only the killed coordinator's summary, gone stale, and read every state instead.
    let mut last_summary = Instant::now()
        .checked_sub(SUMMARY_EVERY)
        .unwrap_or_else(Instant::now);
    let mut summary_put: Option<tokio::task::JoinHandle<()>> = None;
    // The state snapshot: written from the ticks like the summary, one write at a time.
    let mut last_snapshot = Instant::now();
    let mut snapshot_put: Option<tokio::task::JoinHandle<()>> = None;
    let mut snapshot_written = sched.seq;
    let mut reconciling = Reconciling::new(&config.sweep);
    let (mut watcher, mut current) = open_watch(&streams, sched.seq + 1).await?;
    // Ready jobs the publisher has not taken yet, in the order they became ready; then the
    // pending jobs a restart offers again (see `reconcile`).
    let mut ready: VecDeque<Publish> = VecDeque::new();
    let mut later: VecDeque<Publish> = VecDeque::new();
    let stopped = loop {
        // Nothing left to replay (an empty bucket, or a snapshot that covers all of it) sends
        // no entry that would say "caught up".
        if current && !sched.reconciled {
            reconcile(&mut sched, &mut ready, &mut later);
            reconciling.done(ready.len() + later.len());
            if let Some(mut s) = sink.take() {
                s.graph(sched.graph.clone());
                sink_task = Some(tokio::spawn(crate::sinkrun::run(streams.clone(), s)));
            }
        }
        tokio::select! {
            entry = watcher.next() => {
                let entry = match entry {
                    Some(Ok(e)) => e,
                    other => {
                        if let Some(Err(e)) = other {
                            tracing::warn!(error = %e, "state watcher failed; reopening");
                        }
                        // From the next message this cache has not seen.
                        (watcher, current) = reopen(&streams, sched.seq + 1).await?;
                        continue;
                    }
                };
                current = entry.seen_current || entry.delta == 0;
                reconciling.seen();
                sched.seq = sched.seq.max(entry.revision);
                if let Some(i) = sched.graph.position_of(&entry.key)
                    && matches!(entry.operation, async_nats::jetstream::kv::Operation::Put)
                    // Older than the state this cache holds (read with a snapshot).
                    && entry.revision >= sched.revision[i]
                {
                    match JobState::from_bytes(&entry.value) {
                        Ok(state) => {
                            let v = state::Versioned { state, revision: entry.revision };
                            if let Some(d) = sched.apply(i, &v, &mut ready) {
                                decide(&streams, &sched, d, config.error_retries).await?;
                            }
                        }
                        Err(e) => tracing::warn!(job = %entry.key, error = %e, "unreadable job state"),
                    }
                }
            }
            // The publisher's queue is full: wait for room rather than queue without bound.
            permit = pub_tx.reserve(), if !ready.is_empty() || !later.is_empty() => {
                let Ok(permit) = permit else {
                    break Some("the publisher stopped".to_string());
                };
                if let Some(p) = sched.next_publish(&mut ready, &mut later) {
                    permit.send(p);
                }
            }
            _ = tick.tick() => {
                progress.update(sched.counts(), started.elapsed());
                if sched.reconciled
                    && snapshot_due(last_snapshot.elapsed(), config.snapshot_every, sched.seq, snapshot_written)
                    && snapshot_put.as_ref().is_none_or(|p| p.is_finished())
                {
                    last_snapshot = Instant::now();
                    snapshot_written = sched.seq;
                    let bytes = sched.encode_snapshot(&changes.digest, bucket_created);
                    snapshot_put = Some(tokio::spawn(put_snapshot(streams.clone(), bytes)));
                }
                // Before the replay is over only with a snapshot, whose counts are nearly
                // current; without one they would start from nothing.
                if (sched.reconciled || snapshot_seq.is_some())
                    && last_summary.elapsed() >= SUMMARY_EVERY
                    && summary_put.as_ref().is_none_or(|p| p.is_finished())
                {
                    last_summary = Instant::now();
                    summary_put = Some(tokio::spawn(put_summary(streams.clone(), sched.summary())));
                }
                if sched.reconciled && sched.active() == 0 {
                    break None;
                }
                if config.fail_fast && sched.dead() > 0 {
                    break Some("--fail-fast: a job is dead".to_string());
                }
                if let Some(max) = config.max_failures && sched.dead() > max {
                    break Some(format!("--max-failures {max}: {} jobs are dead", sched.dead()));
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Some("interrupted; run the same command again to resume".to_string());
                }
            }
        }
        while !ready.is_empty() || !later.is_empty() {
            let Ok(permit) = pub_tx.try_reserve() else {
                break;
            };
            match sched.next_publish(&mut ready, &mut later) {
                Some(p) => permit.send(p),
                None => break,
            }
        }
    };
    progress.finish(sched.counts(), started.elapsed());
    // The last counts, for a `status` right after the end (bounded: the server may be gone).
    let last = sched.summary();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if let Some(p) = summary_put.take() {
            let _ = p.await;
        }
        put_summary(streams.clone(), last).await;
    })
    .await;
    // And the cache as it ends, so that the next run of the sweep replays nothing.
    let last = (sched.seq > snapshot_written)
        .then(|| sched.encode_snapshot(&changes.digest, bucket_created));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if let Some(p) = snapshot_put.take() {
            let _ = p.await;
        }
        if let Some(bytes) = last {
            put_snapshot(streams.clone(), bytes).await;
        }
    })
    .await;
    drop(pub_tx);
    // Let queued publishes reach the server before returning (bounded: the server may be gone).
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    if let Some(t) = sink_task {
        // The sink commits what is in the stream now. Events a killed sink took but never
        // acked come back only after the consumer's ack wait, so a finished sweep waits that
        // long before it reports the tables complete; a stopped one comes back for them later.
        let limit = if stopped.is_some() {
            Duration::from_secs(10)
        } else {
            crate::sinkrun::SINK_ACK_WAIT + Duration::from_secs(30)
        };
        let drained = crate::sinkrun::drained(&streams);
        let timed_out = tokio::time::timeout(limit, drained).await.is_err();
        t.abort();
        if timed_out && stopped.is_none() {
            return Err(Error::Sink(format!(
                "the results sink did not commit every event within {}s; run the sweep again to \
                 finish writing the tables",
                limit.as_secs()
            )));
        }
    }
    let blocked = total - sched.done() - sched.dead() - sched.active();
    let blocked = if stopped.is_some() { 0 } else { blocked };
    client.flush().await.ok();
    Ok(Outcome {
        total,
        done: sched.done(),
        dead: sched.dead(),
        blocked,
        stopped,
        changes,
        published: sched.publish_count,
        reconciled_after: sched.reconciled_at.map_or(Duration::ZERO, |t| t - t0),
        first_new_publish: first_new.get().copied(),
        snapshot_seq,
        snapshot_after,
        graph_after,
    })
}

/// The replay is over: queues every ready job that needs a message. Jobs without a state were
/// never published, and go first, so that a restart moves the sweep on at once. Pending jobs
/// were published by an earlier run, most likely (it may have died between creating a state
/// and publishing its message), so they are offered again after those, into `later`, where the
/// message id makes a copy of a stored message a no-op.
fn reconcile(sched: &mut Sched, ready: &mut VecDeque<Publish>, later: &mut VecDeque<Publish>) {
    sched.reconciled = true;
    sched.reconciled_at = Some(Instant::now());
    for i in 0..sched.local.len() {
        if sched.local[i] == Local::Absent {
            sched.consider(i, ready);
        }
    }
    for i in 0..sched.local.len() {
        if sched.local[i] != Local::Absent {
            sched.consider(i, later);
        }
    }
}

/// The `reconcile` span: open from the first look at the state bucket until the replay of its
/// current states is over (a restart's catch-up), with how many it replayed and how many jobs
/// were then ready.
struct Reconciling {
    span: Option<tracing::Span>,
    replayed: usize,
}

impl Reconciling {
    fn new(sweep: &str) -> Reconciling {
        Reconciling {
            span: Some(tracing::info_span!(
                parent: None,
                "reconcile",
                sweep = %sweep,
                states = Empty,
                ready = Empty
            )),
            replayed: 0,
        }
    }

    fn seen(&mut self) {
        if self.span.is_some() {
            self.replayed += 1;
        }
    }

    fn done(&mut self, ready: usize) {
        if let Some(span) = self.span.take() {
            span.record("states", self.replayed);
            span.record("ready", ready);
        }
    }
}

/// Watches the bucket's messages from stream sequence `from` on, and says whether there is
/// nothing to replay (no entry would say "caught up" then). The bucket keeps one value per
/// key, so from sequence 1 this is every current state, without the server first working out
/// the last message per key (which took tens of seconds at a million keys).
async fn open_watch(
    streams: &SweepStreams,
    from: u64,
) -> Result<(async_nats::jetstream::kv::Watch, bool)> {
    // Before the watch: a message stored in between is then delivered by it.
    let (_, last, messages) = snapshot::bucket_position(streams).await?;
    // A bucket behind this cache was made anew: replay all of it, as a first start would.
    let from = if last + 1 < from { 1 } else { from };
    let watch = streams
        .state
        .watch_all_from_revision(from)
        .await
        .map_err(Error::nats)?;
    Ok((watch, messages == 0 || last < from))
}

/// A new watcher from the first message the cache has not applied.
async fn reopen(
    streams: &SweepStreams,
    from: u64,
) -> Result<(async_nats::jetstream::kv::Watch, bool)> {
    loop {
        match open_watch(streams, from).await {
            Ok(w) => return Ok(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch job states; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Re-queues a failed job within its error budget, or declares it dead.
async fn decide(streams: &SweepStreams, sched: &Sched, d: Decision, budget: u32) -> Result<()> {
    let job = &sched.graph.jobs()[d.index];
    let (attempt, retries, lost) = sched.counters[d.index];
    let next = match d.retry {
        Some(next) if retries < budget => next,
        _ => {
            let why = if d.retry.is_some() {
                format!("{} (after {retries} retries)", d.failure)
            } else {
                d.failure
            };
            JobState::Dead {
                attempt,
                retries,
                lost,
                reason: why,
                at_ms: now_ms(),
            }
        }
    };
    tracing::info!(job = %job.key, attempt, state = next.name(), "job failed");
    // A conflict means someone moved it first; the watcher brings that state.
    state::cas_persist(&streams.state, &job.id, &next, sched.revision[d.index]).await?;
    Ok(())
}

/// Writes the status summary; a failure only makes `status` read every state instead.
async fn put_summary(streams: SweepStreams, summary: Summary) {
    let bytes = serde_json::to_vec(&summary).unwrap_or_default();
    if let Err(e) = streams
        .artifacts
        .put(SUMMARY_ARTIFACT, &mut bytes.as_slice())
        .await
    {
        tracing::debug!(error = %e, "cannot write the status summary");
    }
}

/// Stores the state snapshot; a failure only makes the next restart replay more.
async fn put_snapshot(streams: SweepStreams, bytes: Vec<u8>) {
    if let Err(e) = snapshot::store(&streams, &bytes).await {
        tracing::debug!(error = %e, "cannot write the state snapshot");
    }
}

/// What the publisher needs to turn a [`Publish`] into a job message.
struct Publisher {
    streams: SweepStreams,
    graph: Arc<JobGraph>,
    lost_budget: u32,
    /// Set at the first message the stream stores as new (see [`Outcome::first_new_publish`]).
    first_new: Arc<OnceLock<Instant>>,
}

/// A job message, built when it is sent.
struct Message {
    id: JobId,
    subject: String,
    msg_id: String,
    payload: Bytes,
    create: bool,
}

impl Publisher {
    fn message(&self, p: &Publish) -> Message {
        let job = &self.graph.jobs()[p.index as usize];
        let msg = JobMessage {
            id: job.id.clone(),
            key: job.key.clone(),
            spec: job.spec.clone(),
            retry: p.retries,
            lost_budget: self.lost_budget,
        };
        Message {
            id: job.id.clone(),
            subject: self
                .streams
                .names
                .job_subject(job.spec.model(), job.kind(), &job.id),
            // Unique per (attempts, retries): a restarted coordinator re-publishing the same
            // pending job within the dedup window stores nothing.
            msg_id: format!("{}.a{}.r{}", job.id, p.attempts, p.retries),
            payload: Bytes::from(serde_json::to_vec(&msg).unwrap_or_default()),
            create: p.create,
        }
    }
}

/// Creates pending states and publishes job messages, many at a time, retrying through
/// server restarts.
async fn publisher(publisher: Publisher, mut rx: mpsc::Receiver<Publish>) {
    let publisher = &publisher;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .for_each_concurrent(PUBLISH_CONCURRENCY, |p| {
            let msg = publisher.message(&p);
            let job = &publisher.graph.jobs()[p.index as usize];
            // A root span: each job message starts its own trace, which the worker continues
            // through the message's headers (one job, one trace).
            let span = tracing::info_span!(
                parent: None,
                "publish",
                sweep = %publisher.streams.names.sweep,
                job = %job.key,
                job_id = %job.id,
                retry = p.retries,
            );
            async move {
                let mut delay = Duration::from_millis(50);
                loop {
                    match publish_one(&publisher.streams, &msg).await {
                        Ok(Some(true)) => {
                            if publisher.first_new.set(Instant::now()).is_ok() {
                                tracing::info!(job = %msg.id, "first job published by this coordinator");
                            }
                            return;
                        }
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(job = %msg.id, error = %e, "publish failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
            .instrument(span)
        })
        .await;
}

/// Publishes one job message; `Some(new)` once the stream holds it, where `new` is false for a
/// duplicate of a message already stored, `None` when the job's state says it needs none.
async fn publish_one(streams: &SweepStreams, m: &Message) -> Result<Option<bool>> {
    // Create first, read only on a conflict: one round trip per new job instead of two.
    if m.create
        && state::cas(&streams.state, &m.id, &JobState::fresh(), 0)
            .await?
            .is_none()
    {
        match state::read(&streams.state, &m.id).await? {
            // Created by an earlier try of this publish, whose message may not have made it
            // (or by another publisher: the message id makes the second copy a no-op).
            Some(v)
                if matches!(
                    v.state,
                    JobState::Pending {
                        attempts: 0,
                        retries: 0,
                        ..
                    }
                ) => {}
            _ => return Ok(None),
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
    crate::telemetry::inject(&tracing::Span::current(), &mut headers);
    let ack = streams
        .js
        .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
        .await
        .map_err(Error::nats)?
        .await
        .map_err(Error::nats)?;
    Ok(Some(!ack.duplicate))
}

/// Model tokens of the graph's jobs: one durable consumer each.
pub fn model_tokens(graph: &JobGraph) -> Vec<String> {
    // The distinct models first: a token per job is a million strings at a million jobs.
    let models: std::collections::HashSet<Option<&str>> =
        graph.jobs().iter().map(|j| j.spec.model()).collect();
    let mut tokens: Vec<String> = models.into_iter().map(model_token).collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

/// Rebuilds done states from a durable record after the server's data was lost.
async fn restore_done(
    streams: &SweepStreams,
    graph: &JobGraph,
    source: &dyn DoneSource,
) -> Result<()> {
    let done = source.done_jobs()?;
    let ids: Vec<JobId> = graph
        .jobs()
        .iter()
        .map(|j| j.id.clone())
        .filter(|id| done.contains(id))
        .collect();
    tracing::info!(
        jobs = ids.len(),
        "NATS data is new: restoring done jobs from the results"
    );
    let results: Vec<Result<Option<u64>>> = futures::stream::iter(ids)
        .map(|id| {
            let store = streams.state.clone();
            async move {
                let state = JobState::Done {
                    attempt: 0,
                    worker: "restored".into(),
                    started_ms: 0,
                    finished_ms: now_ms(),
                    output: Default::default(),
                };
                state::cas(&store, &id, &state, 0).await
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let artifacts = source.artifacts()?;
    tracing::info!(
        artifacts = artifacts.len(),
        "restoring artifacts from the results"
    );
    for (name, path) in artifacts {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        streams
            .artifacts
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(Error::nats)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use promptgrid_common::wire::Failure;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The counts by a scan of every job, as `counts()` computed them before they were kept
    /// incrementally.
    fn recount(s: &Sched) -> Counts {
        let mut c = Counts::default();
        for i in 0..s.local.len() {
            match s.local[i] {
                Local::Done => c.done += 1,
                Local::Dead => c.dead += 1,
                Local::Running => c.running += 1,
                Local::Failed => c.failed += 1,
                Local::Absent | Local::Pending { .. } if s.remaining[i] == 0 => c.queued += 1,
                Local::Absent | Local::Pending { .. } => c.waiting += 1,
            }
        }
        c
    }

    fn random_state(rng: &mut impl Rng) -> JobState {
        let worker = "w".to_string();
        match rng.random_range(0..5) {
            0 => JobState::Pending {
                attempts: rng.random_range(0..3),
                retries: rng.random_range(0..3),
                lost: 0,
                requeued: rng.random_bool(0.3),
                outages: 0,
            },
            1 => JobState::Running {
                attempt: 1,
                retries: 0,
                lost: 0,
                worker,
                started_ms: 0,
                lease_ms: 0,
                msg_seq: 1,
                outages: 0,
            },
            2 => JobState::Done {
                attempt: 1,
                worker,
                started_ms: 0,
                finished_ms: 1,
                output: Default::default(),
            },
            3 => JobState::Failed {
                attempt: 1,
                retries: 0,
                lost: 0,
                worker,
                failure: Failure {
                    reason: "x".into(),
                    retryable: true,
                },
                at_ms: 0,
            },
            _ => JobState::Dead {
                attempt: 1,
                retries: 0,
                lost: 0,
                reason: "x".into(),
                at_ms: 0,
            },
        }
    }

    /// A cache restored from its snapshot is the cache: same classes, counters, revisions,
    /// readiness, counts and summary, and it encodes to the same bytes.
    #[test]
    fn a_restored_snapshot_equals_the_cache_it_was_taken_of() {
        let spec = promptgrid_common::spec::SyntheticSpec {
            count: 300,
            fan_in: 2,
            duration_ms: (0, 0),
            fail_probability: 0.0,
            payload_bytes: 0,
            seed: 5,
        };
        let graph = Arc::new(crate::jobloop::synthetic_graph("snap", spec));
        let mut a = Sched::new(graph.clone());
        let mut out = VecDeque::new();
        reconcile(&mut a, &mut out, &mut VecDeque::new());
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        for step in 0..3_000u64 {
            let i = rng.random_range(0..a.local.len());
            let v = state::Versioned {
                state: random_state(&mut rng),
                revision: step + 1,
            };
            a.apply(i, &v, &mut out);
            a.seq = step + 1;
        }
        let bytes = a.encode_snapshot("digest", 42);
        let snap = snapshot::decode(&bytes).unwrap();
        let mut b = Sched::new(graph);
        let decisions = b.restore(&snap);
        let failed = a.local.iter().filter(|&&l| l == Local::Failed).count();
        assert_eq!(decisions.len(), failed);
        assert_eq!(a.local, b.local);
        assert_eq!(a.counters, b.counters);
        assert_eq!(a.revision, b.revision);
        assert_eq!(a.remaining, b.remaining);
        assert_eq!(a.counts(), b.counts());
        assert_eq!(a.by_kind, b.by_kind);
        assert_eq!(a.running, b.running);
        assert_eq!(a.seq, b.seq);
        let (mut sa, mut sb) = (a.summary(), b.summary());
        sb.at_ms = sa.at_ms;
        sa.running.sort();
        sb.running.sort();
        assert_eq!(sa, sb);
        assert_eq!(b.encode_snapshot("digest", 42), bytes);
    }

    #[test]
    fn a_snapshot_is_due_after_its_interval_or_enough_changes() {
        let every = Duration::from_secs(10);
        let (early, late) = (Duration::from_secs(1), Duration::from_secs(10));
        assert!(!snapshot_due(late, every, 500, 500), "nothing changed");
        assert!(snapshot_due(late, every, 501, 500));
        assert!(!snapshot_due(early, every, 500 + SNAPSHOT_CHANGES - 1, 500));
        assert!(snapshot_due(early, every, 500 + SNAPSHOT_CHANGES, 500));
    }

    #[test]
    fn counters_equal_a_full_recount_after_random_state_transitions() {
        let spec = promptgrid_common::spec::SyntheticSpec {
            count: 400,
            fan_in: 3,
            duration_ms: (0, 0),
            fail_probability: 0.0,
            payload_bytes: 0,
            seed: 3,
        };
        let graph = crate::jobloop::synthetic_graph("counts", spec);
        let mut s = Sched::new(Arc::new(graph));
        let mut out = VecDeque::new();
        assert_eq!(s.counts(), recount(&s));
        reconcile(&mut s, &mut out, &mut VecDeque::new());
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for step in 0..20_000u64 {
            let i = rng.random_range(0..s.local.len());
            let v = state::Versioned {
                state: random_state(&mut rng),
                revision: step + 1,
            };
            s.apply(i, &v, &mut out);
            for p in out.drain(..) {
                assert_eq!(s.remaining[p.index as usize], 0, "{p:?} is not ready");
            }
            assert_eq!(s.counts(), recount(&s), "after step {step}");
            let c = s.counts();
            assert_eq!(
                c.done + c.dead + c.running + c.failed + c.queued + c.waiting,
                400
            );
        }
    }
}
