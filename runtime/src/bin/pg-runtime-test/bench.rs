//! `pg-runtime-test bench`: the runtime benchmark of `scripts/bench-runtime`. For each size it
//! starts a private nats-server, a coordinator process with its Parquet sink (whose peak RSS it
//! reads from /proc) and worker processes, runs a sweep to its end, then runs a second sweep
//! whose coordinator it kills halfway and restarts. Jobs are counted as done in the Parquet
//! `jobs` table, as a reader of the results would count them, never by events; a run that is
//! cut short says so. One table row per size.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use promptgrid_common::JobGraph;
use promptgrid_common::spec::SyntheticSpec;
use promptgrid_common::wire::Event;
use promptgrid_results::schema::{EvalRow, JobRow, MetricRow, Table};
use promptgrid_results::store::read_table;
use promptgrid_runtime::NatsConfig;
use promptgrid_runtime::jobloop::synthetic_graph;
use promptgrid_runtime::server::NatsServer;
use promptgrid_runtime::streams::SweepStreams;

pub struct BenchArgs {
    /// One table row per size.
    pub counts: Vec<u32>,
    /// A planned grid of (models, seeds) x the 17 tasks of [`GRID_TASKS`]: one row after the
    /// synthetic sizes.
    pub grid: Option<(u32, u32)>,
    pub workers: usize,
    pub processes: usize,
    pub fan_in: u32,
}

/// What a row runs.
#[derive(Clone, Copy)]
enum Workload {
    Synthetic { count: u32, fan_in: u32 },
    Grid { models: u32, seeds: u32 },
}

impl Workload {
    /// The coordinator's arguments that plan it.
    fn args(self) -> Vec<String> {
        let (a, b, c, d) = match self {
            Workload::Synthetic { count, fan_in } => ("--count", count, "--fan-in", fan_in),
            Workload::Grid { models, seeds } => ("--models", models, "--seeds", seeds),
        };
        vec![a.into(), b.to_string(), c.into(), d.to_string()]
    }

    /// The graph the coordinator of sweep `name` runs.
    fn graph(self, name: &str) -> Result<JobGraph, String> {
        Ok(match self {
            Workload::Synthetic { count, fan_in } => {
                synthetic_graph(name, zero_duration(count, fan_in))
            }
            Workload::Grid { models, seeds } => JobGraph::build(&grid_sweep(name, models, seeds)?),
        })
    }

    fn label(self, jobs: usize) -> String {
        match self {
            Workload::Synthetic { .. } => jobs.to_string(),
            Workload::Grid { models, seeds } => {
                format!("{jobs} (grid: {models} models x 17 tasks x {seeds} seeds)")
            }
        }
    }
}

/// `count` synthetic jobs that never fail and take no time, each after `fan_in` earlier ones.
fn zero_duration(count: u32, fan_in: u32) -> SyntheticSpec {
    SyntheticSpec {
        count,
        fan_in,
        duration_ms: (0, 0),
        fail_probability: 0.0,
        payload_bytes: 0,
        seed: 0,
    }
}

/// Completes every job at once: synthetic ones as [`Synthetic`] does, any other kind with no
/// output, so that a planned grid runs through the runtime (queue, states, sink) without ML.
pub struct AnyKind(pub promptgrid_runtime::jobloop::Synthetic);

impl promptgrid_runtime::jobloop::Executor for AnyKind {
    async fn run(
        &self,
        job: &promptgrid_common::wire::JobMessage,
        ctx: &promptgrid_runtime::jobloop::JobContext,
    ) -> Result<promptgrid_common::wire::JobOutput, promptgrid_runtime::jobloop::JobError> {
        if matches!(job.spec, promptgrid_common::JobSpec::Synthetic { .. }) {
            return self.0.run(job, ctx).await;
        }
        Ok(promptgrid_common::wire::JobOutput {
            artifacts: vec![],
            metrics: vec![promptgrid_common::wire::MetricRow {
                step: 0,
                name: "attempt".into(),
                value: f64::from(ctx.attempt()),
                wall_s: ctx.wall_s(),
            }],
            evals: vec![],
            provenance: None,
        })
    }
}

/// How long the first coordinator of the resume sweep may take to reach half of its jobs.
const HALF_LIMIT: Duration = Duration::from_secs(900);

/// `results compact`'s default: parts with fewer rows are merged.
const COMPACT_SMALL_ROWS: usize = 100_000;

fn me() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "pg-runtime-test".into())
}

fn coordinator(url: &str, sweep: &str, results: &Path, work: Workload) -> Result<Child, String> {
    Command::new(me())
        .args(["coordinator", "--nats", url, "--sweep", sweep])
        .arg("--results")
        .arg(results)
        .args(work.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a coordinator: {e}"))
}

fn workers(url: &str, sweep: &str, a: &BenchArgs) -> Result<Vec<Child>, String> {
    let per = a.workers.div_ceil(a.processes.max(1));
    (0..a.processes.max(1))
        .map(|p| {
            Command::new(me())
                .args(["worker", "--nats", url, "--sweep", sweep])
                .args(["--name", &format!("p{p}"), "--workers", &per.to_string()])
                .arg("--any-kind")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))
        })
        .collect()
}

fn stop(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Peak resident memory of a process in MiB (VmHWM), polled while it runs.
fn hwm_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Polls `child` until it exits, keeping its peak RSS; `during` runs once, its delay into the
/// run. Returns whether it succeeded and its stdout.
fn wait(
    child: &mut Child,
    peak: &mut f64,
    mut during: Option<(Duration, &mut dyn FnMut())>,
) -> Result<(bool, String), String> {
    let t0 = Instant::now();
    loop {
        if let Some(m) = hwm_mib(child.id()) {
            *peak = peak.max(m);
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            // A run shorter than `after` is measured at its end (the same bucket, complete).
            if let Some((_, f)) = &mut during {
                f();
            }
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                use std::io::Read;
                s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            }
            return Ok((status.success(), out));
        }
        if let Some((after, f)) = &mut during
            && t0.elapsed() >= *after
        {
            f();
            during = None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A number from the coordinator's JSON outcome line.
fn field(out: &str, name: &str) -> Option<f64> {
    out.split(&format!("\"{name}\":"))
        .nth(1)?
        .split(['}', ','])
        .next()?
        .parse()
        .ok()
}

/// Distinct jobs with a `done` row in the sweep's Parquet `jobs` table, and all its rows.
fn parquet_done(sweep_dir: &Path) -> Result<(usize, usize), String> {
    if !sweep_dir.join(JobRow::NAME).is_dir() {
        return Ok((0, 0));
    }
    let rows: Vec<JobRow> = read_table(sweep_dir).map_err(|e| e.to_string())?;
    let done: HashSet<&str> = rows
        .iter()
        .filter(|r| r.status == "done")
        .map(|r| r.job_id.as_str())
        .collect();
    Ok((done.len(), rows.len()))
}

/// Rows in the tables the sink writes (`jobs`, `metrics`, `evals`).
fn sink_rows(sweep_dir: &Path) -> Result<usize, String> {
    fn rows<T: Table>(dir: &Path) -> Result<usize, String> {
        if !dir.join(T::NAME).is_dir() {
            return Ok(0);
        }
        Ok(read_table::<T>(dir).map_err(|e| e.to_string())?.len())
    }
    Ok(rows::<JobRow>(sweep_dir)? + rows::<MetricRow>(sweep_dir)? + rows::<EvalRow>(sweep_dir)?)
}

/// Part files in the sweep's tables.
fn part_files(sweep_dir: &Path) -> usize {
    let Ok(tables) = std::fs::read_dir(sweep_dir) else {
        return 0;
    };
    tables
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
        .count()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Ready -> start latencies (ms) of the jobs with dependencies, from the events stream: ready
/// is when the last dependency finished. Jobs without dependencies are ready at once and only
/// measure the queue, so they are left out.
async fn latencies(url: &str, sweep: &str, graph: &JobGraph) -> Result<Vec<f64>, String> {
    let client = NatsConfig::new(url)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    let names = promptgrid_common::names::SweepNames::new(sweep);
    let mut stream = js
        .get_stream(names.events_stream())
        .await
        .map_err(|e| e.to_string())?;
    let total = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .messages;
    let c = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut msgs = c.messages().await.map_err(|e| e.to_string())?;
    // Per job index: first start, last finish (u64::MAX: none seen).
    let n = graph.len();
    let (mut started, mut finished) = (vec![u64::MAX; n], vec![u64::MAX; n]);
    let mut seen = 0u64;
    while seen < total {
        let m = match tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => return Err("events stream ended early".into()),
        };
        seen += 1;
        match serde_json::from_slice::<Event>(&m.payload).map_err(|e| e.to_string())? {
            Event::Finished { job, at_ms, .. } => {
                if let Some(i) = graph.position(&job) {
                    finished[i] = at_ms;
                }
            }
            Event::Started { job, at_ms, .. } => {
                if let Some(i) = graph.position(&job) {
                    started[i] = started[i].min(at_ms);
                }
            }
            _ => {}
        }
    }
    Ok(graph
        .jobs()
        .iter()
        .enumerate()
        .filter(|&(i, _)| !graph.deps(i).is_empty())
        .filter_map(|(i, _)| {
            let mut ready = 0;
            for &d in graph.deps(i) {
                let f = finished[d as usize];
                if f == u64::MAX {
                    return None;
                }
                ready = ready.max(f);
            }
            (started[i] != u64::MAX).then(|| started[i].saturating_sub(ready) as f64)
        })
        .collect())
}

/// One size's figures.
struct Row {
    jobs: u32,
    /// What the row ran, as its first column shows it.
    label: String,
    /// Distinct jobs done in the Parquet `jobs` table of the first sweep, and its rows.
    done: usize,
    wall_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The highest peak RSS of the three coordinators (the full run, the killed one, the
    /// restarted one), MiB.
    peak_mib: f64,
    /// From the restarted coordinator's process start to the first job message the stream
    /// had not stored before.
    resume_s: f64,
    /// From the restarted coordinator's `run` (after its graph is planned) until its replay of
    /// the state bucket was over.
    reconciled_s: f64,
    /// One `status` of the resumed sweep while its restarted coordinator runs (once it has
    /// written its first summary), the way `promptgrid status` answers: from the
    /// coordinator's summary, else from every job's state.
    status_s: f64,
    /// `status` as it answers with no coordinator running: the coordinator's last state
    /// snapshot and the bucket's changes after it.
    status_alone_s: f64,
    /// A read of every job's state, what that falls back to where no snapshot fits.
    every_state_s: f64,
    sink_rows_per_s: f64,
    parts_before: usize,
    parts_after: usize,
    /// What went wrong (cut short, incomplete tables), and where the resume's time went.
    notes: Vec<String>,
}

impl Row {
    fn jobs_per_s(&self) -> f64 {
        self.done as f64 / self.wall_s
    }
}

const HEADER: &str = "| jobs | jobs/s | vs 10k | coordinator peak RSS MiB | resume: first new publish (reconciled) s | status s | status, no coordinator s | every state read s | sink rows/s | part files before -> after compact | ready->start p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|";

fn line(r: &Row, base: Option<f64>) -> String {
    let ratio = base.map_or("-".to_string(), |b| format!("{:.2}", r.jobs_per_s() / b));
    format!(
        "| {} | {:.0} | {ratio} | {:.1} | {:.2} ({:.2}) | {:.2} | {:.2} | {:.2} | {:.0} | {} -> {} | {:.0} / {:.0} |",
        r.label,
        r.jobs_per_s(),
        r.peak_mib,
        r.resume_s,
        r.reconciled_s,
        r.status_s,
        r.status_alone_s,
        r.every_state_s,
        r.sink_rows_per_s,
        r.parts_before,
        r.parts_after,
        r.p50_ms,
        r.p99_ms
    )
}

pub fn run(a: BenchArgs) -> Result<(), String> {
    println!(
        "runtime benchmark: synthetic zero-duration jobs (fan-in {}), {} workers in {} processes; \
         jobs counted done in the Parquet `jobs` table",
        a.fan_in, a.workers, a.processes
    );
    let mut rows: Vec<Row> = Vec::new();
    let fan_in = a.fan_in;
    let works = a
        .counts
        .iter()
        .map(|&count| Workload::Synthetic { count, fan_in })
        .chain(
            a.grid
                .map(|(models, seeds)| Workload::Grid { models, seeds }),
        );
    for work in works {
        let row = size(work, &a)?;
        println!("{HEADER}\n{}", line(&row, None));
        for n in &row.notes {
            println!("{}: {n}", row.label);
        }
        rows.push(row);
    }
    let base = rows
        .iter()
        .find(|r| r.jobs == 10_000)
        .or(rows.first())
        .map(Row::jobs_per_s);
    println!("\nall sizes (vs 10k: jobs/s over the 10,000-job row of this run)\n{HEADER}");
    for r in &rows {
        println!("{}", line(r, base));
    }
    for r in &rows {
        for n in &r.notes {
            println!("{}: {n}", r.label);
        }
    }
    Ok(())
}

fn size(work: Workload, a: &BenchArgs) -> Result<Row, String> {
    // Sweep names are not part of job ids: one graph serves both sweeps.
    let graph = work.graph("bench")?;
    let count = graph.len() as u32;
    let label = work.label(graph.len());
    let dir = std::env::temp_dir().join(format!("pg-bench-{}-{count}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let results = dir.join("results");
    let srv = NatsServer::start(&dir.join("store"), &[]).map_err(|e| e.to_string())?;
    let url = srv.url();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let mut notes = Vec::new();

    // 1. Throughput, latency, memory, the sink, compaction.
    let t0 = Instant::now();
    let mut coord = coordinator(&url, "bench", &results, work)?;
    let mut ws = workers(&url, "bench", a)?;
    let mut peak = 0.0f64;
    let (ok, out) = wait(&mut coord, &mut peak, None)?;
    let wall_s = t0.elapsed().as_secs_f64();
    stop(&mut ws);
    if !ok {
        notes.push(format!("the first coordinator failed: {out}"));
    }
    let bench_dir = results.join("bench");
    let (done, _) = parquet_done(&bench_dir)?;
    if done < count as usize {
        notes.push(format!(
            "incomplete: {done} of {count} jobs done in the Parquet `jobs` table"
        ));
    }
    let sink_rows_per_s = sink_rows(&bench_dir)? as f64 / wall_s;
    let parts_before = part_files(&bench_dir);
    promptgrid_results::compact_all(&bench_dir, COMPACT_SMALL_ROWS).map_err(|e| e.to_string())?;
    let parts_after = part_files(&bench_dir);
    if parquet_done(&bench_dir)?.0 != done {
        notes.push("compaction changed the done count".into());
    }
    let mut lat = rt.block_on(latencies(&url, "bench", &graph))?;
    let (p50_ms, p99_ms) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));

    // 2. Resume: kill the coordinator at 50%, restart it, time its first new publish and a
    // `status` while it runs. The kill is triggered from the events stream (two events per
    // job: started, finished), which is cheap to poll.
    let mut coord = coordinator(&url, "resume", &results, work)?;
    let mut ws = workers(&url, "resume", a)?;
    let half = u64::from(count / 2);
    let deadline = Instant::now() + HALF_LIMIT;
    let mut peak_killed = 0.0f64;
    let killed_at = loop {
        if let Some(m) = hwm_mib(coord.id()) {
            peak_killed = peak_killed.max(m);
        }
        let done = rt.block_on(async {
            let client = NatsConfig::new(&url).connect().await.ok()?;
            let mut s = jetstream::new(client)
                .get_stream("PG_resume_EVENTS")
                .await
                .ok()?;
            Some(s.info().await.ok()?.state.messages / 2)
        });
        let done = done.unwrap_or(0);
        if done >= half || Instant::now() > deadline {
            break done;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if killed_at < half {
        notes.push(format!(
            "cut short: the first coordinator of the resume run reached {killed_at} of {half} \
             jobs in {} s; it was killed there",
            HALF_LIMIT.as_secs()
        ));
    }
    stop(std::slice::from_mut(&mut coord));
    let resume_dir = results.join("resume");
    let mut coord = coordinator(&url, "resume", &results, work)?;
    let mut peak2 = 0.0f64;
    let (mut status_s, mut status_alone_s, mut every_state_s) = (f64::NAN, f64::NAN, f64::NAN);
    let restarted_ms = promptgrid_common::wire::now_ms();
    let mut measure_status = || {
        let nats = NatsConfig::new(&url);
        // Once the restarted coordinator has written its own summary, so that the status reads
        // do not compete with its replay (nor read the killed one's summary).
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let now = promptgrid_common::wire::now_ms();
            let fresh = rt
                .block_on(promptgrid_runtime::status::quick(&nats, "resume"))
                .ok()
                .flatten()
                .and_then(|r| r.summary_age_ms)
                .is_some_and(|age| now.saturating_sub(age) > restarted_ms);
            if fresh {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // As `promptgrid status` answers: the coordinator's summary, else every state.
        let t = Instant::now();
        let r = match rt.block_on(promptgrid_runtime::status::quick(&nats, "resume")) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => rt
                .block_on(promptgrid_runtime::status(&nats, "resume", &graph))
                .map(drop),
            Err(e) => Err(e),
        };
        status_s = t.elapsed().as_secs_f64();
        // As it answers with no coordinator: the snapshot and the changes after it.
        let t = Instant::now();
        let alone = rt.block_on(promptgrid_runtime::status(&nats, "resume", &graph));
        status_alone_s = t.elapsed().as_secs_f64();
        // And the read of every state, where no snapshot fits.
        let t = Instant::now();
        let every = rt.block_on(async {
            let streams = SweepStreams::open(nats.connect().await?, "resume").await?;
            promptgrid_runtime::state::snapshot(&streams.js, &streams.state).await
        });
        every_state_s = t.elapsed().as_secs_f64();
        if let Some(e) = r.err().or(alone.err()).or(every.err()) {
            eprintln!("status failed: {e}");
            (status_s, status_alone_s, every_state_s) = (f64::NAN, f64::NAN, f64::NAN);
        }
    };
    let during: (Duration, &mut dyn FnMut()) = (Duration::from_secs(1), &mut measure_status);
    let (ok2, out2) = wait(&mut coord, &mut peak2, Some(during))?;
    stop(&mut ws);
    if !ok2 {
        notes.push(format!(
            "the restarted coordinator did not complete: {out2}"
        ));
    }
    // -1: every job had a message before the kill (a grid's last jobs become ready early).
    let resume_s = field(&out2, "first_new_ms")
        .filter(|&ms| ms >= 0.0)
        .map_or(f64::NAN, |ms| ms / 1000.0);
    if resume_s.is_nan() {
        notes.push(
            "resume: no job was left to publish for the first time after the kill; the \
             replay's end is when the restarted coordinator took over"
                .into(),
        );
    }
    let reconciled_s = field(&out2, "reconciled_ms").map_or(f64::NAN, |ms| ms / 1000.0);
    // Where the resume's time goes, each from the restarted process's start.
    let run_s = field(&out2, "run_ms").map_or(f64::NAN, |ms| ms / 1000.0);
    let snapshot = match field(&out2, "snapshot_ms") {
        Some(ms) if ms >= 0.0 => format!("{:.2} s", run_s + ms / 1000.0),
        _ => "none".to_string(),
    };
    let graph_at = match (
        field(&out2, "graph_ms"),
        out2.contains("\"graph_restored\":true"),
    ) {
        (Some(ms), restored) if ms >= 0.0 => format!(
            "{} at {:.2} s",
            if restored { "restored" } else { "planned" },
            run_s + ms / 1000.0
        ),
        _ => "planned before run".to_string(),
    };
    notes.push(format!(
        "resume: run started at {run_s:.2} s, graph {graph_at}, snapshot loaded at {snapshot}, \
         replay over at {:.2} s, first new publish at {resume_s:.2} s",
        run_s + reconciled_s
    ));
    let (done2, _) = parquet_done(&resume_dir)?;
    if done2 < count as usize {
        notes.push(format!(
            "incomplete: {done2} of {count} jobs of the resume run done in the Parquet `jobs` table"
        ));
    }
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        jobs: count,
        label,
        done,
        wall_s,
        p50_ms,
        p99_ms,
        peak_mib: peak.max(peak_killed).max(peak2),
        resume_s,
        reconciled_s,
        status_s,
        status_alone_s,
        every_state_s,
        sink_rows_per_s,
        parts_before,
        parts_after,
        notes,
    })
}

/// What `plan` plans.
pub enum PlanOf {
    File(std::path::PathBuf),
    /// `models` models x the 17 tasks of [`GRID_TASKS`] x `seeds` seeds, every study.
    Grid {
        models: u32,
        seeds: u32,
    },
    Synthetic {
        count: u32,
        fan_in: u32,
    },
}

/// Seventeen classification tasks of the catalog: the paper's thirteen and four demo tasks.
const GRID_TASKS: [&str; 17] = [
    "imdb",
    "sst2",
    "laptop",
    "restaurant",
    "movierationales",
    "tweetevalsentiment",
    "mnli",
    "qnli",
    "snli",
    "ethicsdeontology",
    "ethicsjustice",
    "qqp",
    "mrpc",
    "demo-movies",
    "demo-rt",
    "demo-tweets",
    "demo-amazon",
];

/// The sweep `name` of `models` RoBERTa models x 17 tasks x `seeds` seeds with every study.
pub fn grid_sweep(name: &str, models: u32, seeds: u32) -> Result<promptgrid_common::Sweep, String> {
    let catalog = promptgrid_common::catalog::Catalog::builtin().map_err(|e| e.to_string())?;
    let file = Path::new("grid.toml");
    promptgrid_common::Sweep::parse(file, &grid_toml(name, models, seeds), &catalog)
        .map_err(|e| e.to_string())
}

/// A sweep file of `models` RoBERTa models x 17 tasks x `seeds` seeds with every study.
fn grid_toml(name: &str, models: u32, seeds: u32) -> String {
    let seeds: Vec<String> = (1..=seeds).map(|s| s.to_string()).collect();
    let mut t = format!(
        "[sweep]\nname = \"{name}\"\n\n[prompt]\nlength = 100\ninit = \"random\"\n\
         learning_rate = 1e-3\nbatch_size = 16\nmax_text_tokens = 128\nmax_steps = 20000\n\
         eval_every = 500\nseeds = [{}]\n\n",
        seeds.join(", ")
    );
    for m in 0..models {
        t.push_str(&format!(
            "[[model]]\nname = \"model{m:04}\"\narch = \"roberta\"\nhead = \"mlm\"\n\n"
        ));
    }
    for task in GRID_TASKS {
        t.push_str(&format!("[[task]]\nname = \"{task}\"\n"));
    }
    t.push_str(
        "\n[studies.cross_task]\nsplit = \"test\"\n\n[studies.tpt]\npairs = \"all\"\n\n\
         [studies.indicators]\nlist = [\"c_average\", \"on\"]\n",
    );
    t
}

/// Plans a sweep the way `promptgrid plan` does (load and validate, expand the graph, build
/// the plan) and prints the jobs, the time from process start and the peak RSS.
pub fn plan(what: PlanOf, process_start: Instant) -> Result<(), String> {
    use promptgrid_common::Sweep;
    let graph = match what {
        PlanOf::Synthetic { count, fan_in } => {
            synthetic_graph("plan", zero_duration(count, fan_in))
        }
        PlanOf::File(file) => {
            let sweep = Sweep::load(&file).map_err(|e| e.to_string())?;
            plan_sweep(&sweep)
        }
        PlanOf::Grid { models, seeds } => plan_sweep(&grid_sweep("grid", models, seeds)?),
    };
    let secs = process_start.elapsed().as_secs_f64();
    let rss = hwm_mib(std::process::id()).unwrap_or(f64::NAN);
    println!(
        "{{\"jobs\":{},\"plan_s\":{secs:.2},\"peak_rss_mib\":{rss:.1},\"per_kind\":{:?}}}",
        graph.len(),
        graph
            .counts()
            .iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect::<Vec<_>>()
    );
    Ok(())
}

fn plan_sweep(sweep: &promptgrid_common::Sweep) -> JobGraph {
    let graph = JobGraph::build(sweep);
    let plan = promptgrid_common::plan::Plan::new(sweep, &graph, &Default::default());
    // What `promptgrid plan` prints, made and dropped.
    drop(plan.to_string());
    graph
}
