//! `pg-runtime-test bench`: the runtime benchmark of `scripts/bench-runtime`. It starts a
//! private nats-server, a coordinator process with its Parquet sink (whose peak RSS it reads
//! from /proc) and worker processes, then reads the events stream back for latencies, and
//! measures a resume. Jobs are counted as done in the Parquet `jobs` table, as a reader of the
//! results would count them; a run that is cut short says so.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use promptgrid_common::JobId;
use promptgrid_common::spec::SyntheticSpec;
use promptgrid_common::wire::Event;
use promptgrid_results::schema::JobRow;
use promptgrid_results::store::read_table;
use promptgrid_runtime::NatsConfig;
use promptgrid_runtime::jobloop::synthetic_graph;
use promptgrid_runtime::server::NatsServer;

pub struct BenchArgs {
    pub count: u32,
    pub workers: usize,
    pub processes: usize,
    pub fan_in: u32,
}

fn me() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "pg-runtime-test".into())
}

fn coordinator(url: &str, sweep: &str, results: &Path, a: &BenchArgs) -> std::io::Result<Child> {
    Command::new(me())
        .args(["coordinator", "--nats", url, "--sweep", sweep])
        .arg("--results")
        .arg(results)
        .args([
            "--count",
            &a.count.to_string(),
            "--fan-in",
            &a.fan_in.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

fn workers(url: &str, sweep: &str, a: &BenchArgs) -> std::io::Result<Vec<Child>> {
    let per = a.workers.div_ceil(a.processes.max(1));
    (0..a.processes.max(1))
        .map(|p| {
            Command::new(me())
                .args([
                    "worker",
                    "--nats",
                    url,
                    "--sweep",
                    sweep,
                    "--name",
                    &format!("p{p}"),
                ])
                .args(["--workers", &per.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect()
}

/// Peak resident memory of a process in MiB (VmHWM), polled while it runs.
fn hwm_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn wait(child: &mut Child, peak: &mut f64) -> std::io::Result<(bool, String)> {
    loop {
        if let Some(m) = hwm_mib(child.id()) {
            *peak = peak.max(m);
        }
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                use std::io::Read;
                s.read_to_string(&mut out)?;
            }
            return Ok((status.success(), out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Distinct jobs with a `done` row in the sweep's Parquet `jobs` table, and all its rows.
fn parquet_done(results: &Path, sweep: &str) -> Result<(usize, usize), String> {
    let rows: Vec<JobRow> = read_table(&results.join(sweep)).map_err(|e| e.to_string())?;
    let done: HashSet<&str> = rows
        .iter()
        .filter(|r| r.status == "done")
        .map(|r| r.job_id.as_str())
        .collect();
    Ok((done.len(), rows.len()))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn events(url: &str, sweep: &str) -> Result<Vec<Event>, String> {
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
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        match tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
            Ok(Some(Ok(m))) => {
                out.push(serde_json::from_slice(&m.payload).map_err(|e| e.to_string())?)
            }
            _ => return Err("events stream ended early".into()),
        }
    }
    Ok(out)
}

pub fn run(a: BenchArgs) -> Result<(), String> {
    let dir = tempfile_dir()?;
    let results = dir.join("results");
    let srv = NatsServer::start(&dir.join("store"), &[]).map_err(|e| e.to_string())?;
    let url = srv.url();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;

    // 1. Throughput, latency, memory.
    let t0 = Instant::now();
    let mut coord = coordinator(&url, "bench", &results, &a).map_err(|e| e.to_string())?;
    let mut ws = workers(&url, "bench", &a).map_err(|e| e.to_string())?;
    let mut peak = 0.0;
    let (ok, out) = wait(&mut coord, &mut peak).map_err(|e| e.to_string())?;
    let wall = t0.elapsed().as_secs_f64();
    for w in &mut ws {
        let _ = w.kill();
        let _ = w.wait();
    }
    if !ok {
        return Err(format!("coordinator failed: {out}"));
    }
    let (done, rows) = parquet_done(&results, "bench")?;
    let evs = rt.block_on(events(&url, "bench"))?;
    let graph = synthetic_graph(
        "bench",
        SyntheticSpec {
            count: a.count,
            fan_in: a.fan_in,
            duration_ms: (0, 0),
            fail_probability: 0.0,
            payload_bytes: 0,
            seed: 0,
        },
    );
    let mut finished: HashMap<&JobId, u64> = HashMap::new();
    let mut started: HashMap<&JobId, u64> = HashMap::new();
    for e in &evs {
        match e {
            Event::Finished { job, at_ms, .. } => {
                finished.insert(job, *at_ms);
            }
            Event::Started { job, at_ms, .. } => {
                started.entry(job).or_insert(*at_ms);
            }
            _ => {}
        }
    }
    // Ready = the last dependency finished; jobs without dependencies are ready at once and
    // only measure the queue, so they are left out.
    let mut lat: Vec<f64> = graph
        .jobs()
        .iter()
        .filter(|j| !j.deps.is_empty())
        .filter_map(|j| {
            let ready = j
                .deps
                .iter()
                .map(|d| finished.get(d).copied())
                .collect::<Option<Vec<u64>>>()?;
            let ready = ready.into_iter().max()?;
            Some(started.get(&j.id)?.saturating_sub(ready) as f64)
        })
        .collect();
    let n = lat.len();
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));

    // 2. Resume: kill the coordinator at 50%, time the restart until it has reconciled.
    let mut coord = coordinator(&url, "resume", &results, &a).map_err(|e| e.to_string())?;
    let mut ws = workers(&url, "resume", &a).map_err(|e| e.to_string())?;
    // The kill is triggered from the events stream (two events per job: started, finished),
    // which is cheap to poll; the Parquet table is the count that the table reports.
    let half = u64::from(a.count / 2);
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed_at = loop {
        let done = rt.block_on(async {
            let client = NatsConfig::new(&url).connect().await.ok()?;
            let mut s = jetstream::new(client)
                .get_stream("PG_resume_EVENTS")
                .await
                .ok()?;
            let info = s.info().await.ok()?;
            Some(info.state.messages / 2)
        });
        let done = done.unwrap_or(0);
        if done >= half || Instant::now() > deadline {
            break done;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = coord.kill();
    let _ = coord.wait();
    let before_kill = parquet_done(&results, "resume")?.0;
    let t1 = Instant::now();
    let mut coord = coordinator(&url, "resume", &results, &a).map_err(|e| e.to_string())?;
    let mut peak2 = 0.0;
    let (ok2, out2) = wait(&mut coord, &mut peak2).map_err(|e| e.to_string())?;
    let total2 = t1.elapsed().as_secs_f64();
    for w in &mut ws {
        let _ = w.kill();
        let _ = w.wait();
    }
    let reconciled_ms = out2
        .split("\"reconciled_ms\":")
        .nth(1)
        .and_then(|s| s.split(['}', ',']).next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN);

    println!(
        "runtime benchmark: {} synthetic zero-duration jobs (fan-in {}), {} workers in {} processes",
        a.count, a.fan_in, a.workers, a.processes
    );
    println!("| metric | value |\n|---|---|");
    println!(
        "| jobs done (Parquet `jobs` table) | {done} of {} ({rows} rows) |",
        a.count
    );
    println!("| end-to-end wall time | {wall:.2} s |");
    println!(
        "| throughput | {:.0} jobs/s (done jobs ÷ wall time) |",
        done as f64 / wall
    );
    println!("| ready -> start latency p50 | {p50:.0} ms (over {n} jobs with dependencies) |");
    println!("| ready -> start latency p99 | {p99:.0} ms |");
    println!("| coordinator peak RSS | {peak:.1} MiB |");
    println!(
        "| resume after a kill at 50%: reconciled after | {reconciled_ms:.0} ms (process start to first publish, incl. connect) |"
    );
    println!(
        "| resume: killed at | {killed_at} of {} jobs by the events stream, {before_kill} in Parquet |",
        a.count
    );
    println!("| resume: rest of the sweep | {total2:.2} s (complete: {ok2}) |");
    let (done2, rows2) = parquet_done(&results, "resume")?;
    println!(
        "| resume: jobs done (Parquet `jobs` table) | {done2} of {} ({rows2} rows) |",
        a.count
    );
    if killed_at < half {
        println!("cut short: the first coordinator reached {killed_at} of {half} jobs in 600 s");
    }
    if done < a.count as usize || done2 < a.count as usize || !ok2 {
        println!("incomplete: not every job is done in the Parquet tables (see the rows above)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("pg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}
