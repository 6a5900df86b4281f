//! The worker's job loop (docs/design.md, "Worker"): pull a job, preferring the model the
//! executor holds; take it with a compare-and-set on its state; hold the lease with progress
//! acks; run it; commit the result only if the state still names this attempt; publish the
//! event; ack. On shutdown it takes no new job, lets the executor checkpoint, and hands the
//! job back.

mod executor;
mod synthetic;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{Consumer, pull};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use promptgrid_common::JobId;
use promptgrid_common::wire::{Event, Failure, JobMessage, JobState, now_ms};
use tracing::Instrument;
use tracing::field::Empty;

pub use executor::{Executor, JobContext, JobError};
pub use synthetic::{Synthetic, synthetic_graph};

use crate::connect::NatsConfig;
use crate::error::{Error, Result};
use crate::events;
use crate::retry::{self, persist};
use crate::scheduler::Shutdown;
use crate::state::{self, Versioned};
use crate::streams::{SweepStreams, sweeps_on_server};
use crate::telemetry::{self, JOB_LOG};

/// Everything `run` needs besides the executor.
#[derive(Clone)]
pub struct WorkerConfig {
    pub nats: NatsConfig,
    /// The sweep to serve; `None` serves every sweep on the server.
    pub sweep: Option<String>,
    /// Shown in job states and events.
    pub name: String,
    pub shutdown: Option<Shutdown>,
    /// Progress acks keep the lease; off only in tests that simulate a stalled worker.
    pub heartbeats: bool,
    /// How long a running job's calls on NATS (metrics, artifacts, checkpoints) retry through
    /// an outage before the attempt is handed back to the queue as an outage.
    pub patience: Duration,
}

impl WorkerConfig {
    pub fn new(nats: NatsConfig, sweep: Option<String>) -> WorkerConfig {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        WorkerConfig {
            nats,
            sweep,
            name: format!("{host}-{}", std::process::id()),
            shutdown: None,
            heartbeats: true,
            patience: retry::PATIENCE,
        }
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    pub done: usize,
    pub failed: usize,
    /// Messages dropped: duplicates, jobs already done, malformed ones.
    pub dropped: usize,
    /// Attempts handed back because NATS was unavailable (not job errors).
    pub outages: usize,
}

/// A source of jobs: one model's consumer of one sweep.
#[derive(Clone)]
struct Source {
    streams: SweepStreams,
    token: String,
    consumer: Consumer<pull::Config>,
    lease: Duration,
}

/// Pulls and runs jobs until shutdown.
pub async fn run<E: Executor>(config: WorkerConfig, executor: E) -> Result<WorkerStats> {
    let executor = Arc::new(executor);
    let client = config.nats.connect().await?;
    let js = jetstream::new(client.clone());
    let mut shutdown = config
        .shutdown
        .clone()
        .unwrap_or_else(crate::scheduler::no_shutdown);
    let mut stats = WorkerStats::default();
    let mut sources: Vec<Source> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    // The source of the last job: the likeliest to have the next one.
    let mut last = 0usize;
    while !*shutdown.borrow() {
        if refreshed.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) || sources.is_empty() {
            match discover(&js, &config, &sources).await {
                Ok(s) => sources = s,
                Err(e) => tracing::warn!(error = %e, "cannot list job sources"),
            }
            refreshed = Some(Instant::now());
            if sources.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        }
        // The resident model's source first, then the others in turn from the last one that
        // had a job.
        let resident = executor
            .resident_model()
            .map(|m| promptgrid_common::names::model_token(Some(&m)));
        let mut order: Vec<usize> = (0..sources.len())
            .map(|k| (last + k) % sources.len())
            .collect();
        order.sort_by_key(|&k| Some(&sources[k].token) != resident.as_ref());
        // Probe every source without waiting, then long-poll the first. Only the long poll
        // carries an expiry: the server holds an expiring pull on an empty consumer until it
        // expires, so 100 ms expiries on 160 models' consumers left a worker up to 16 s a
        // round to find the model that had jobs.
        let probes = if order.len() == 1 {
            &[][..]
        } else {
            &order[..]
        };
        let polls = probes
            .iter()
            .map(|&k| (k, None))
            .chain([(order[0], Some(Duration::from_secs(1)))]);
        let mut got = None;
        for (k, wait) in polls {
            let fetched = tokio::select! {
                m = fetch_one(&sources[k].consumer, wait) => m,
                _ = shutdown.changed() => break,
            };
            match fetched {
                Ok(Some(m)) => {
                    last = k;
                    got = Some((k, m));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let Some((k, msg)) = got else { continue };
        let src = &sources[k];
        let span = job_span(&config, src, &msg);
        match handle(&config, executor.as_ref(), src, msg, &span)
            .instrument(span.clone())
            .await
        {
            Ok(Handled::Done) => stats.done += 1,
            Ok(Handled::Failed) => stats.failed += 1,
            Ok(Handled::Dropped) => stats.dropped += 1,
            Ok(Handled::Outage) => stats.outages += 1,
            Ok(Handled::HandedBack) => break,
            Err(e) => span.in_scope(
                || tracing::warn!(error = %e, "job handling failed; the lease will bring it back"),
            ),
        }
    }
    client.flush().await.ok();
    Ok(stats)
}

/// One job message from `c`: at once (`wait` `None`) or within `wait`.
async fn fetch_one(
    c: &Consumer<pull::Config>,
    wait: Option<Duration>,
) -> Result<Option<jetstream::Message>> {
    let fetch = c.fetch().max_messages(1);
    let fetch = match wait {
        Some(w) => fetch.expires(w),
        None => fetch,
    };
    let mut batch = fetch.messages().await.map_err(Error::nats)?;
    match batch.next().await {
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(e)) => Err(Error::nats(e)),
        None => Ok(None),
    }
}

/// The sources to pull from now: the sweeps' model consumers. Known ones are kept as they are,
/// so a refresh costs one request per sweep (its consumers' names) plus one per new consumer:
/// 32 workers looking up 160 models' consumers every few seconds were 2,000 requests a second
/// on a server that was already the bottleneck.
async fn discover(
    js: &jetstream::Context,
    config: &WorkerConfig,
    known: &[Source],
) -> Result<Vec<Source>> {
    let sweeps = match &config.sweep {
        Some(s) => vec![s.clone()],
        None => sweeps_on_server(js).await?,
    };
    let known: HashMap<(&str, &str), &Source> = known
        .iter()
        .map(|s| ((s.streams.names.sweep.as_str(), s.token.as_str()), s))
        .collect();
    let mut out = Vec::new();
    for sweep in sweeps {
        let open = known
            .values()
            .find(|s| s.streams.names.sweep == sweep)
            .map(|s| s.streams.clone());
        let listed = match open {
            Some(streams) => match streams.model_tokens().await {
                Ok(tokens) => Some((streams, tokens)),
                // Gone, or an outage: opening it again tells which.
                Err(_) => None,
            },
            None => None,
        };
        let (streams, tokens) = match listed {
            Some(l) => l,
            None => match SweepStreams::open(js.client().clone(), &sweep).await {
                Ok(streams) => {
                    let tokens = streams.model_tokens().await?;
                    (streams, tokens)
                }
                Err(Error::NoSweep(_)) => continue,
                Err(e) => return Err(e),
            },
        };
        for token in tokens {
            if let Some(&source) = known.get(&(sweep.as_str(), token.as_str())) {
                out.push(source.clone());
                continue;
            }
            let name = streams.names.model_consumer(&token);
            let Ok(consumer) = streams.jobs.get_consumer::<pull::Config>(&name).await else {
                continue;
            };
            let lease = consumer.cached_info().config.ack_wait;
            out.push(Source {
                streams: streams.clone(),
                token,
                consumer,
                lease,
            });
        }
    }
    Ok(out)
}

/// The span of one delivery of a job message: every log line of the job carries its fields
/// (`job`, `kind` and `attempt` are filled in once known), and it continues the trace of the
/// `publish` span whose context the message's headers carry.
fn job_span(config: &WorkerConfig, src: &Source, msg: &jetstream::Message) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "job",
        sweep = %src.streams.names.sweep,
        job = Empty,
        job_id = Empty,
        kind = Empty,
        attempt = Empty,
        worker = %config.name,
    );
    // Before anything else touches the span: its OpenTelemetry parent is fixed once it starts.
    telemetry::adopt_parent(&span, msg.headers.as_ref());
    if let Some(id) = src.streams.names.job_id_of_subject(&msg.subject) {
        span.record("job_id", id.as_str());
    }
    span
}

enum Handled {
    Done,
    Failed,
    Dropped,
    HandedBack,
    /// Given back to the queue because NATS was unavailable.
    Outage,
}

async fn handle<E: Executor>(
    config: &WorkerConfig,
    executor: &E,
    src: &Source,
    msg: jetstream::Message,
    span: &tracing::Span,
) -> Result<Handled> {
    let streams = &src.streams;
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
    let Some(id) = streams.names.job_id_of_subject(&msg.subject) else {
        tracing::warn!(subject = %msg.subject, "message on the jobs stream without a job id; dropped");
        msg.ack_with(AckKind::Term).await.map_err(Error::nats)?;
        return Ok(Handled::Dropped);
    };
    let job = serde_json::from_slice::<JobMessage>(&msg.payload)
        .map_err(|e| format!("malformed job message: {e}"))
        .and_then(|j| {
            if j.id != id {
                return Err(format!(
                    "malformed job message: its id {} is not the subject's {id}",
                    j.id
                ));
            }
            j.check_names()
                .map_err(|e| format!("refused job message: {e}"))?;
            Ok(j)
        });
    let job = match job {
        Ok(j) => j,
        Err(reason) => {
            span.record("job", id.as_str());
            tracing::warn!(job = %id, %reason, "failing a job whose message cannot be run");
            fail_unrunnable(config, streams, &id, &reason).await?;
            msg.ack_with(AckKind::Term).await.map_err(Error::nats)?;
            return Ok(Handled::Failed);
        }
    };
    span.record("job", job.key.as_str());
    span.record("kind", job.spec.kind().name());

    // Take the job: a compare-and-set from the state we read, so two workers never both run it.
    let (attempt, revision, counts) = loop {
        let current = persist("read state", || state::read(&streams.state, &id)).await?;
        let outages = current.as_ref().map_or(0, |v| v.state.outages());
        let (rev, mut next) = match current {
            None => (0, running(config, src, 1, job.retry, 0, seq)),
            Some(Versioned {
                state:
                    JobState::Pending {
                        attempts,
                        retries,
                        lost,
                        ..
                    },
                revision,
            }) => (
                revision,
                running(config, src, attempts + 1, retries, lost, seq),
            ),
            Some(Versioned {
                state:
                    JobState::Running {
                        attempt,
                        retries,
                        lost,
                        msg_seq,
                        worker,
                        ..
                    },
                revision,
            }) => {
                if msg_seq != seq {
                    // Another message of the same job is held by a live worker (or will be
                    // redelivered if it is not): this one is a duplicate.
                    msg.ack().await.map_err(Error::nats)?;
                    return Ok(Handled::Dropped);
                }
                // Our own message again: its last holder's lease ran out.
                tracing::info!(job = %job.key, lost_worker = %worker, attempt, "redelivered after a lost worker");
                if lost + 1 > job.lost_budget {
                    let failure = Failure {
                        reason: format!("lost its worker {} times (last: {worker})", lost + 1),
                        retryable: false,
                    };
                    let failed = FailedAttempt {
                        id: &id,
                        key: &job.key,
                        attempt,
                        retries,
                        lost: lost + 1,
                        worker: &config.name,
                        failure,
                    };
                    if commit_failure(streams, failed, revision).await? {
                        msg.ack().await.map_err(Error::nats)?;
                        return Ok(Handled::Failed);
                    }
                    continue;
                }
                (
                    revision,
                    running(config, src, attempt + 1, retries, lost + 1, seq),
                )
            }
            Some(Versioned {
                state: done @ JobState::Done { .. },
                ..
            }) => {
                // Committed, but the event or the ack may not have gone out: repeat both (the
                // event's dedup id makes a repeat a no-op).
                announce_done(streams, &msg, &id, &job, done).await?;
                return Ok(Handled::Dropped);
            }
            Some(_) => {
                msg.ack().await.map_err(Error::nats)?;
                return Ok(Handled::Dropped);
            }
        };
        if let JobState::Running { outages: o, .. } = &mut next {
            *o = outages;
        }
        let (attempt, retries, lost) = next.counters();
        if let Some(rev) = state::cas_persist(&streams.state, &id, &next, rev).await? {
            break (
                attempt,
                rev,
                Counts {
                    retries,
                    lost,
                    outages,
                },
            );
        }
    };
    span.record("attempt", attempt);
    let started_ms = now_ms();
    tracing::info!(target: JOB_LOG, "job started");
    publish(
        streams,
        &Event::Started {
            job: id.clone(),
            key: job.key.clone(),
            attempt,
            worker: config.name.clone(),
            at_ms: started_ms,
        },
    )
    .await?;

    // Hold the lease while the executor runs.
    let msg = Arc::new(msg);
    let heartbeat = config.heartbeats.then(|| {
        let msg = msg.clone();
        let every = src.lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        })
    });
    let cancel = config
        .shutdown
        .clone()
        .unwrap_or_else(crate::scheduler::no_shutdown);
    let execute = tracing::info_span!(
        parent: span,
        "execute",
        kind = job.spec.kind().name(),
        model_loaded = Empty
    );
    let mut ctx = JobContext {
        streams: streams.clone(),
        job: id.clone(),
        attempt,
        cancel,
        started: Instant::now(),
        seq: AtomicU64::new(0),
        span: execute.clone(),
        patience: config.patience,
    };
    let resident = executor.resident_model();
    let result = executor.run(&job, &ctx).instrument(execute.clone()).await;
    if let Some(h) = heartbeat {
        h.abort();
    }
    // The executor does not say when it loads a model; a change of resident model means it did.
    execute.record("model_loaded", executor.resident_model() != resident);
    // Close `execute` here: its last handles would otherwise keep it open through the commit.
    ctx.span = tracing::Span::none();
    drop(execute);
    let elapsed_ms = ctx.started.elapsed().as_millis() as u64;

    let commit = tracing::info_span!(parent: span, "commit_state", outcome = Empty);
    finish(
        config,
        &msg,
        &ctx,
        &job,
        result,
        (revision, counts),
        started_ms,
    )
    .instrument(commit.clone())
    .await
    .inspect(|handled| {
        let outcome = match handled {
            Handled::Done => "done",
            Handled::Failed => "failed",
            Handled::Dropped => "discarded",
            Handled::HandedBack => "handed back",
            Handled::Outage => "handed back (NATS unavailable)",
        };
        commit.record("outcome", outcome);
        if matches!(handled, Handled::Done) {
            tracing::info!(target: JOB_LOG, elapsed_ms, "job finished");
        }
    })
}

/// Commits what the executor returned: the result, a failure, or the job handed back.
async fn finish(
    config: &WorkerConfig,
    msg: &jetstream::Message,
    ctx: &JobContext,
    job: &JobMessage,
    result: Result<promptgrid_common::wire::JobOutput, JobError>,
    (revision, counts): (u64, Counts),
    started_ms: u64,
) -> Result<Handled> {
    let Counts {
        retries,
        lost,
        outages,
    } = counts;
    let streams = &ctx.streams;
    let id = &ctx.job;
    let attempt = ctx.attempt;
    let worker = config.name.clone();
    match result {
        Ok(output) => {
            let finished_ms = now_ms();
            let done = JobState::Done {
                attempt,
                worker: worker.clone(),
                started_ms,
                finished_ms,
                output,
            };
            if state::cas_persist(&streams.state, id, &done, revision)
                .await?
                .is_none()
            {
                tracing::warn!("lease lost: a newer attempt owns this job; result discarded");
                return Ok(Handled::Dropped);
            }
            announce_done(streams, msg, id, job, done).await?;
            ctx.drop_checkpoint().await;
            Ok(Handled::Done)
        }
        Err(JobError::Cancelled) => {
            hand_back(streams, msg, id, attempt, counts, revision, None).await?;
            tracing::info!(target: JOB_LOG, "job handed back on shutdown");
            Ok(Handled::HandedBack)
        }
        Err(JobError::Unavailable(reason)) => {
            // Not the job's fault: back to the queue, counted apart, after a pause that lets
            // the cluster settle.
            let outage = Counts {
                outages: outages + 1,
                ..counts
            };
            hand_back(
                streams,
                msg,
                id,
                attempt,
                outage,
                revision,
                Some(OUTAGE_PAUSE),
            )
            .await?;
            tracing::warn!(target: JOB_LOG, %reason, "job handed back: NATS unavailable");
            Ok(Handled::Outage)
        }
        Err(e) => {
            let failure = Failure {
                reason: e.to_string(),
                retryable: matches!(e, JobError::Retryable(_)),
            };
            let (reason, retryable) = (failure.reason.clone(), failure.retryable);
            let failed = FailedAttempt {
                id,
                key: &job.key,
                attempt,
                retries,
                lost,
                worker: &worker,
                failure,
            };
            if !commit_failure(streams, failed, revision).await? {
                tracing::warn!("lease lost: a newer attempt owns this job; failure discarded");
                return Ok(Handled::Dropped);
            }
            tracing::warn!(target: JOB_LOG, reason = %reason, retryable, "job failed");
            msg.ack().await.map_err(Error::nats)?;
            Ok(Handled::Failed)
        }
    }
}

/// How long a job given back for an outage waits before it is delivered again.
const OUTAGE_PAUSE: Duration = Duration::from_secs(1);

/// The counters an attempt carries from its taking to its end.
#[derive(Debug, Clone, Copy)]
struct Counts {
    retries: u32,
    lost: u32,
    outages: u32,
}

/// Puts the job back to pending, `requeued` (its message stays in the queue, so the
/// coordinator publishes none), then naks the message for redelivery after `delay`. Nothing is
/// nak'd if another writer moved the job first.
async fn hand_back(
    streams: &SweepStreams,
    msg: &jetstream::Message,
    id: &JobId,
    attempts: u32,
    c: Counts,
    revision: u64,
    delay: Option<Duration>,
) -> Result<()> {
    let back = JobState::Pending {
        attempts,
        retries: c.retries,
        lost: c.lost,
        requeued: true,
        outages: c.outages,
    };
    if state::cas_persist(&streams.state, id, &back, revision)
        .await?
        .is_some()
    {
        msg.ack_with(AckKind::Nak(delay))
            .await
            .map_err(Error::nats)?;
    }
    Ok(())
}

fn running(
    config: &WorkerConfig,
    src: &Source,
    attempt: u32,
    retries: u32,
    lost: u32,
    msg_seq: u64,
) -> JobState {
    JobState::Running {
        attempt,
        retries,
        lost,
        worker: config.name.clone(),
        started_ms: now_ms(),
        lease_ms: src.lease.as_millis() as u64,
        msg_seq,
        outages: 0,
    }
}

/// Publishes the finished event of a committed job (`done`, its `Done` state), then acks its
/// message.
async fn announce_done(
    streams: &SweepStreams,
    msg: &jetstream::Message,
    id: &JobId,
    job: &JobMessage,
    done: JobState,
) -> Result<()> {
    let JobState::Done {
        attempt,
        worker,
        started_ms,
        finished_ms,
        output,
    } = done
    else {
        return Err(Error::Config(format!(
            "job {id} is not done: nothing to announce"
        )));
    };
    let ev = Event::Finished {
        job: id.clone(),
        key: job.key.clone(),
        attempt,
        worker,
        started_ms,
        at_ms: finished_ms,
        spec: Some(job.spec.clone()),
        output,
    };
    publish(streams, &ev).await?;
    msg.ack().await.map_err(Error::nats)
}

async fn publish(streams: &SweepStreams, event: &Event) -> Result<()> {
    persist("publish event", || {
        events::publish(&streams.js, &streams.names, event, 0)
    })
    .await
}

/// A message that cannot be run (undecodable, or naming a path) fails its job for good.
async fn fail_unrunnable(
    config: &WorkerConfig,
    streams: &SweepStreams,
    id: &JobId,
    reason: &str,
) -> Result<()> {
    // Retried on a lost compare-and-set: the coordinator may be creating the job's pending
    // state at this very moment, and giving up would let the job run as if nothing were wrong.
    loop {
        let current = persist("read state", || state::read(&streams.state, id)).await?;
        let (rev, (attempt, retries, lost)) = match &current {
            Some(v) if matches!(v.state, JobState::Done { .. } | JobState::Dead { .. }) => {
                return Ok(());
            }
            Some(v) => (v.revision, v.state.counters()),
            None => (0, (0, 0, 0)),
        };
        let failure = Failure {
            reason: reason.to_string(),
            retryable: false,
        };
        let failed = FailedAttempt {
            id,
            key: id.as_str(),
            attempt: attempt + 1,
            retries,
            lost,
            worker: &config.name,
            failure,
        };
        if commit_failure(streams, failed, rev).await? {
            return Ok(());
        }
    }
}

/// One attempt's failure, as both the job's state and its `Failed` event record it.
struct FailedAttempt<'a> {
    id: &'a JobId,
    key: &'a str,
    attempt: u32,
    retries: u32,
    lost: u32,
    worker: &'a str,
    failure: Failure,
}

/// Writes the failed state if the job's state is still at `revision`, then publishes the
/// `Failed` event. False, with nothing published, when another writer changed the state first.
async fn commit_failure(
    streams: &SweepStreams,
    f: FailedAttempt<'_>,
    revision: u64,
) -> Result<bool> {
    let failed = JobState::Failed {
        attempt: f.attempt,
        retries: f.retries,
        lost: f.lost,
        worker: f.worker.to_string(),
        failure: f.failure.clone(),
        at_ms: now_ms(),
    };
    if state::cas_persist(&streams.state, f.id, &failed, revision)
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let event = Event::Failed {
        job: f.id.clone(),
        key: f.key.to_string(),
        attempt: f.attempt,
        worker: f.worker.to_string(),
        at_ms: now_ms(),
        failure: f.failure,
    };
    publish(streams, &event).await?;
    Ok(true)
}
