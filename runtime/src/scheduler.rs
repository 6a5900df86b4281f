//! The coordinator: publishes jobs whose dependencies are done, follows the state bucket,
//! turns job errors into retries or dead jobs, and reports progress.
//!
//! The KV bucket is the truth; this process only keeps a cache of it. It follows the bucket
//! through a watcher that first replays every current state (that replay is the reconcile on
//! restart) and then streams changes, so it can die at any moment and pick up where it was.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use promptgrid_common::names::SWEEP_ARTIFACT;
use promptgrid_common::names::{SweepNames, model_token};
use promptgrid_common::wire::{JobMessage, JobState, now_ms};
use promptgrid_common::{JobGraph, JobId, Sweep};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use tracing::field::Empty;

use crate::connect::NatsConfig;
use crate::error::{Error, Result};
use crate::events::{DoneSource, Sink};
use crate::manifest::{self, GraphChanges};
use crate::progress::Progress;
use crate::retry;
use crate::state;
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
}

impl CoordinatorConfig {
    pub fn new(nats: NatsConfig, sweep: &str, graph: JobGraph) -> CoordinatorConfig {
        CoordinatorConfig {
            nats,
            sweep: sweep.to_string(),
            graph,
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
    graph: JobGraph,
    index: HashMap<JobId, usize>,
    dependents: Vec<Vec<usize>>,
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
    done: usize,
    dead: usize,
    publish_count: usize,
    reconciled_at: Option<Instant>,
    names: SweepNames,
    lost_budget: u32,
}

/// One publish for the publisher task.
struct Publish {
    id: JobId,
    key: String,
    /// Job-error retries before this message (0 for the first).
    retries: u32,
    subject: String,
    msg_id: String,
    payload: Bytes,
    /// No entry yet: create the pending state first (and skip if someone else did).
    create: bool,
}

impl Sched {
    fn new(graph: JobGraph, names: SweepNames, lost_budget: u32) -> Sched {
        let n = graph.len();
        let index: HashMap<JobId, usize> = graph
            .jobs()
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.clone(), i))
            .collect();
        let mut dependents = vec![Vec::new(); n];
        let mut remaining = vec![0; n];
        for (i, j) in graph.jobs().iter().enumerate() {
            for d in &j.deps {
                if let Some(&k) = index.get(d) {
                    dependents[k].push(i);
                    remaining[i] += 1;
                }
            }
        }
        Sched {
            graph,
            index,
            dependents,
            remaining,
            local: vec![Local::Absent; n],
            published: vec![None; n],
            counters: vec![(0, 0, 0); n],
            revision: vec![0; n],
            reconciled: false,
            done: 0,
            dead: 0,
            publish_count: 0,
            reconciled_at: None,
            names,
            lost_budget,
        }
    }

    /// Applies a state seen in the bucket; returns the follow-up it calls for.
    fn apply(
        &mut self,
        i: usize,
        v: &state::Versioned,
        out: &mut Vec<Publish>,
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
        self.local[i] = new;
        self.counters[i] = v.state.counters();
        self.revision[i] = v.revision;
        if old == Local::Done && new != Local::Done {
            self.done -= 1;
            for k in self.dependents[i].clone() {
                self.remaining[k] += 1;
            }
        }
        if old == Local::Dead && new != Local::Dead {
            self.dead -= 1;
        }
        match &v.state {
            JobState::Done { .. } if old != Local::Done => {
                self.done += 1;
                for k in self.dependents[i].clone() {
                    self.remaining[k] -= 1;
                    self.consider(k, out);
                }
            }
            JobState::Dead { .. } if old != Local::Dead => self.dead += 1,
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

    /// Queues a publish if the job is ready and has no message yet.
    fn consider(&mut self, i: usize, out: &mut Vec<Publish>) {
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
        out.push(self.message(i, attempts, retries, create));
    }

    fn message(&self, i: usize, attempts: u32, retries: u32, create: bool) -> Publish {
        let job = &self.graph.jobs()[i];
        let msg = JobMessage {
            id: job.id.clone(),
            key: job.key.clone(),
            spec: job.spec.clone(),
            retry: retries,
            lost_budget: self.lost_budget,
        };
        Publish {
            id: job.id.clone(),
            key: job.key.clone(),
            retries,
            subject: self
                .names
                .job_subject(job.spec.model(), job.kind(), &job.id),
            // Unique per (attempts, retries): a restarted coordinator re-publishing the same
            // pending job within the dedup window stores nothing.
            msg_id: format!("{}.a{attempts}.r{retries}", job.id),
            payload: Bytes::from(serde_json::to_vec(&msg).unwrap_or_default()),
            create,
        }
    }

    /// Jobs that can still move: running, failed-undecided, or ready and queued.
    fn active(&self) -> usize {
        (0..self.local.len())
            .filter(|&i| match self.local[i] {
                Local::Running | Local::Failed => true,
                Local::Absent | Local::Pending { .. } => self.remaining[i] == 0,
                Local::Done | Local::Dead => false,
            })
            .count()
    }

    fn counts(&self) -> Counts {
        let mut c = Counts {
            done: self.done,
            dead: self.dead,
            ..Counts::default()
        };
        for i in 0..self.local.len() {
            match self.local[i] {
                Local::Running => c.running += 1,
                Local::Failed => c.failed += 1,
                Local::Absent | Local::Pending { .. } if self.remaining[i] == 0 => c.queued += 1,
                Local::Absent | Local::Pending { .. } => c.waiting += 1,
                _ => {}
            }
        }
        c
    }
}

/// What to do about a failed job: re-queue it, or declare it dead.
struct Decision {
    index: usize,
    retry: Option<JobState>,
    failure: String,
}

/// Counts for the progress bar.
#[derive(Debug, Default, Clone, Copy)]
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
    let total = config.graph.len();
    let plan = tracing::info_span!(
        parent: None,
        "plan",
        sweep = %config.sweep,
        jobs = total,
        reused = Empty,
        added = Empty,
        changed = Empty,
        removed = Empty,
        restored = Empty,
    );
    let (client, streams, changes) = async {
        let client = config.nats.connect().await?;
        // A cluster that is still electing its leaders answers "unavailable" for a while.
        let streams = retry::through_outages("set up the sweep's streams", retry::PATIENCE, || {
            SweepStreams::setup(client.clone(), &config.sweep, &config.streams)
        })
        .await?;
        let changes = manifest::update(&streams, &config.graph).await?;
        let span = tracing::Span::current();
        span.record("reused", changes.reused);
        span.record("added", changes.added.len());
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
        Ok::<_, Error>((client, streams, changes))
    }
    .instrument(plan)
    .await?;
    let sink_task = config
        .sink
        .take()
        .map(|sink| tokio::spawn(crate::sinkrun::run(streams.clone(), sink)));

    let mut sched = Sched::new(
        config.graph.clone(),
        streams.names.clone(),
        config.lost_retries,
    );
    let (pub_tx, pub_rx) = mpsc::unbounded_channel::<Publish>();
    let publisher = tokio::spawn(publisher(streams.clone(), pub_rx));
    let mut shutdown = config
        .shutdown
        .clone()
        .unwrap_or_else(crate::scheduler::no_shutdown);
    let mut progress = Progress::new(total, config.progress);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let started = Instant::now();

    let mut reconciling = Reconciling::new(&config.sweep);
    let mut watcher = open_watch(&streams, &mut sched).await?;
    let mut out = Vec::new();
    // An empty bucket replays nothing, so no entry would say "caught up".
    if state::count(&streams.js, &streams.state).await? == 0 {
        reconcile(&mut sched, &mut out);
        reconciling.done(out.len());
    }
    let stopped = loop {
        tokio::select! {
            entry = watcher.next() => {
                let Some(entry) = entry else {
                    watcher = reopen(&streams, &mut sched).await?;
                    continue;
                };
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "state watcher failed; reopening");
                        watcher = reopen(&streams, &mut sched).await?;
                        continue;
                    }
                };
                let caught_up = entry.seen_current || entry.delta == 0;
                reconciling.seen();
                if let Some(i) = sched.index.get(entry.key.as_str()).copied()
                    && matches!(entry.operation, async_nats::jetstream::kv::Operation::Put)
                {
                    match JobState::from_bytes(&entry.value) {
                        Ok(state) => {
                            let v = state::Versioned { state, revision: entry.revision };
                            if let Some(d) = sched.apply(i, &v, &mut out) {
                                decide(&streams, &sched, d, config.error_retries).await?;
                            }
                        }
                        Err(e) => tracing::warn!(job = %entry.key, error = %e, "unreadable job state"),
                    }
                }
                if caught_up && !sched.reconciled {
                    reconcile(&mut sched, &mut out);
                    reconciling.done(out.len());
                }
            }
            _ = tick.tick() => {
                progress.update(sched.counts(), started.elapsed());
                if sched.reconciled && sched.active() == 0 {
                    break None;
                }
                if config.fail_fast && sched.dead > 0 {
                    break Some("--fail-fast: a job is dead".to_string());
                }
                if let Some(max) = config.max_failures && sched.dead > max {
                    break Some(format!("--max-failures {max}: {} jobs are dead", sched.dead));
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Some("interrupted; run the same command again to resume".to_string());
                }
            }
        }
        for p in out.drain(..) {
            let _ = pub_tx.send(p);
        }
    };
    progress.finish(sched.counts(), started.elapsed());
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
    let blocked = total - sched.done - sched.dead - sched.active();
    let blocked = if stopped.is_some() { 0 } else { blocked };
    client.flush().await.ok();
    Ok(Outcome {
        total,
        done: sched.done,
        dead: sched.dead,
        blocked,
        stopped,
        changes,
        published: sched.publish_count,
        reconciled_after: sched.reconciled_at.map_or(Duration::ZERO, |t| t - t0),
    })
}

fn reconcile(sched: &mut Sched, out: &mut Vec<Publish>) {
    sched.reconciled = true;
    sched.reconciled_at = Some(Instant::now());
    for i in 0..sched.local.len() {
        sched.consider(i, out);
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

async fn open_watch(
    streams: &SweepStreams,
    _sched: &mut Sched,
) -> Result<async_nats::jetstream::kv::Watch> {
    streams
        .state
        .watch_with_history(">")
        .await
        .map_err(Error::nats)
}

/// A new watcher replays every current state; applying a state twice is a no-op.
async fn reopen(
    streams: &SweepStreams,
    sched: &mut Sched,
) -> Result<async_nats::jetstream::kv::Watch> {
    loop {
        match open_watch(streams, sched).await {
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

/// Creates pending states and publishes job messages, many at a time, retrying through
/// server restarts.
async fn publisher(streams: SweepStreams, rx: mpsc::UnboundedReceiver<Publish>) {
    let stream = tokio_stream_from(rx);
    stream
        .for_each_concurrent(256, |p| {
            let streams = streams.clone();
            // A root span: each job message starts its own trace, which the worker continues
            // through the message's headers (one job, one trace).
            let span = tracing::info_span!(
                parent: None,
                "publish",
                sweep = %streams.names.sweep,
                job = %p.key,
                job_id = %p.id,
                retry = p.retries,
            );
            async move {
                let mut delay = Duration::from_millis(50);
                loop {
                    match publish_one(&streams, &p).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(job = %p.id, error = %e, "publish failed; retrying");
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

async fn publish_one(streams: &SweepStreams, p: &Publish) -> Result<()> {
    if p.create {
        match state::read(&streams.state, &p.id).await? {
            None => {
                if state::cas(&streams.state, &p.id, &JobState::fresh(), 0)
                    .await?
                    .is_none()
                {
                    return Ok(());
                }
            }
            // Created by an earlier try of this publish, whose message may not have made it.
            Some(v)
                if matches!(
                    v.state,
                    JobState::Pending {
                        attempts: 0,
                        retries: 0,
                        ..
                    }
                ) => {}
            Some(_) => return Ok(()),
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, p.msg_id.as_str());
    crate::telemetry::inject(&tracing::Span::current(), &mut headers);
    streams
        .js
        .publish_with_headers(p.subject.clone(), headers, p.payload.clone())
        .await
        .map_err(Error::nats)?
        .await
        .map_err(Error::nats)?;
    Ok(())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Model tokens of the graph's jobs: one durable consumer each.
pub fn model_tokens(graph: &JobGraph) -> Vec<String> {
    let mut tokens: Vec<String> = graph
        .jobs()
        .iter()
        .map(|j| model_token(j.spec.model()))
        .collect();
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
