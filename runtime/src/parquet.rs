//! The results sink in the coordinator's process: events to Parquet through the results
//! crate, acknowledged only once committed; the done set rebuilt from the `jobs` table when
//! the NATS server's data is gone; and [`coordinator_config`], a coordinator wired to both.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptgrid_common::names::is_plain_name;
use promptgrid_common::wire::Event;
use promptgrid_common::{JobGraph, JobId, Sweep};
use promptgrid_results::report::task_types;
use promptgrid_results::sink::{EventSink, artifact_path, done_jobs, write_artifact};
use tracing::Instrument;

use crate::connect::NatsConfig;
use crate::error::{Error, Result};
use crate::events::{Ack, BoxFuture, DoneSource, Sink};
use crate::scheduler::CoordinatorConfig;

/// A coordinator of `sweep` that writes its results as Parquet under `sweep_dir`
/// (`<results>/<sweep>`) and rebuilds its done set from there; the sweep travels to the workers
/// as the manifest. Failure limits, lease and shutdown are the caller's to set.
pub fn coordinator_config(
    sweep: &Sweep,
    nats: NatsConfig,
    sweep_dir: &Path,
) -> Result<CoordinatorConfig> {
    // Planned (or restored) by the coordinator once it reaches the server.
    let mut config = CoordinatorConfig::new(nats, &sweep.name, JobGraph::default());
    config.plan_from = Some(sweep.clone());
    config.sweep_spec = Some(sweep.clone());
    let task_types = task_types(sweep.tasks.iter().map(|t| &t.def));
    config.sink = Some(Box::new(ParquetSink::open(
        sweep_dir.to_path_buf(),
        task_types,
    )?));
    config.done_source = Some(Box::new(ParquetDoneSource {
        sweep_dir: sweep_dir.to_path_buf(),
    }));
    Ok(config)
}

/// Rows held before a commit; one part file per table per commit.
const BATCH_ROWS: usize = 5_000;
/// A batch is committed at the latest this long after its first event.
const BATCH_AGE: Duration = Duration::from_secs(2);
/// A job's end commits at once (a reader of the tables sees it at once, and the commit belongs
/// to the job's trace), unless the last commit was less than this long ago; then it waits with
/// its batch until it is this old. Committing every job's end at once made a part file per job
/// under load: a million parts for a million jobs, two fsyncs each, all read back on resume.
const JOB_END_AGE: Duration = Duration::from_millis(200);

/// Writes `jobs`, `metrics` and `evals` under `<results>/<sweep>/`.
pub struct ParquetSink {
    sweep_dir: PathBuf,
    /// Opened at the first event: opening reads the keys of every committed row, which must not
    /// hold up a restarted coordinator before it publishes.
    inner: Option<EventSink>,
    /// For the evals' task types, until `inner` is opened.
    task_types: BTreeMap<String, String>,
    /// The sweep's graph, which numbers the dedup keys of the rows' jobs.
    graph: Option<Arc<JobGraph>>,
    acks: Vec<Ack>,
    /// When the first event of the batch came.
    since: Option<Instant>,
    /// When the first job end of the batch came.
    ends_since: Option<Instant>,
    /// When the last commit started.
    last_commit: Option<Instant>,
}

impl ParquetSink {
    pub fn open(sweep_dir: PathBuf, task_types: BTreeMap<String, String>) -> Result<ParquetSink> {
        // A folder that cannot be made fails now rather than at the first event.
        std::fs::create_dir_all(&sweep_dir)
            .map_err(|e| Error::io(format!("cannot create {}", sweep_dir.display()), e))?;
        Ok(ParquetSink {
            sweep_dir,
            inner: None,
            task_types,
            graph: None,
            acks: Vec::new(),
            since: None,
            ends_since: None,
            last_commit: None,
        })
    }

    fn inner(&mut self) -> Result<&mut EventSink> {
        let sink = match self.inner.take() {
            Some(sink) => sink,
            None => {
                let (dir, types) = (&self.sweep_dir, std::mem::take(&mut self.task_types));
                let graph = self.graph.clone();
                tokio::task::block_in_place(|| EventSink::open_with_jobs(dir, "sink", types, graph))
                    .map_err(results_error)?
            }
        };
        Ok(self.inner.insert(sink))
    }

    fn pending(&self) -> usize {
        self.inner.as_ref().map_or(0, EventSink::pending)
    }

    async fn commit(&mut self) -> Result<()> {
        let span = tracing::info_span!("commit", rows = self.pending(), events = self.acks.len());
        // From the start: a slow fsync must not hold back the next job's end.
        let started = Instant::now();
        async {
            let inner = self.inner()?;
            tokio::task::block_in_place(|| inner.commit()).map_err(results_error)?;
            self.since = None;
            self.ends_since = None;
            self.last_commit = Some(started);
            for ack in self.acks.drain(..) {
                ack.ack().await?;
            }
            Ok::<(), Error>(())
        }
        .instrument(span)
        .await
    }

    /// Whether the batch has waited its time: a job's end, or any event, for long enough.
    fn due(&self) -> bool {
        self.ends_since.is_some_and(|t| t.elapsed() >= JOB_END_AGE)
            || self.since.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }
}

fn results_error(e: promptgrid_results::ResultsError) -> Error {
    Error::Sink(format!("{e:#}"))
}

impl Sink for ParquetSink {
    fn accept(&mut self, _seq: u64, event: Event, ack: Ack) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.inner()?.add(&event);
            self.acks.push(ack);
            let now = Instant::now();
            self.since.get_or_insert(now);
            let ends_a_job = matches!(event, Event::Finished { .. } | Event::Failed { .. });
            if ends_a_job {
                self.ends_since.get_or_insert(now);
            }
            let at_once = ends_a_job
                && self
                    .last_commit
                    .is_none_or(|t| now.duration_since(t) >= JOB_END_AGE);
            if at_once || self.pending() >= BATCH_ROWS || self.due() {
                self.commit().await?;
            }
            Ok(())
        })
    }

    /// Commits a batch that holds a job's end, or has waited its time, when no event follows.
    fn idle(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.ends_since.is_some() || self.due() {
                self.commit().await?;
            }
            Ok(())
        })
    }

    fn graph(&mut self, graph: Arc<JobGraph>) {
        self.graph = Some(graph);
    }

    /// What later jobs or the report read: prompts, activation masks, projectors.
    fn wants_artifact(&self, name: &str) -> bool {
        ["prompt/", "mask/", "projector/"]
            .iter()
            .any(|p| name.starts_with(p))
    }

    fn artifact(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        tokio::task::block_in_place(|| write_artifact(&self.sweep_dir, name, &bytes))
            .map_err(results_error)
    }
}

/// The done set of the `jobs` table.
pub struct ParquetDoneSource {
    pub sweep_dir: PathBuf,
}

impl DoneSource for ParquetDoneSource {
    fn done_jobs(&self) -> Result<HashSet<JobId>> {
        Ok(done_jobs(&self.sweep_dir)
            .map_err(results_error)?
            .into_iter()
            .map(JobId::new)
            .collect())
    }

    /// The sink's artifact copies (written before the rows that name them were committed).
    fn artifacts(&self) -> Result<Vec<(String, PathBuf)>> {
        let root = artifact_path(&self.sweep_dir, "");
        let mut out = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&root)
                    && let Some(name) = rel.to_str()
                    && is_plain_name(name)
                {
                    out.push((name.to_string(), path.clone()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
