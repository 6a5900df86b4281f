//! A small driver of the runtime for synthetic sweeps, so that tests and `scripts/bench-runtime`
//! can run (and kill) coordinators and workers as separate processes before the `promptgrid`
//! CLI wires them. Usage:
//!
//! ```text
//! pg-runtime-test coordinator --nats URL --sweep NAME --count N [--fan-in F] [--duration-ms LO HI]
//!                 | --models M [--seeds S]   (a planned grid: M models x 17 tasks x S seeds)
//!                 [--fail-probability P] [--payload-bytes B] [--lease-ms L] [--error-retries R]
//!                 [--results DIR]   (a Parquet sink under DIR/NAME, and the done set read back)
//!                 [--replicas R]    (copies of each stream on a JetStream cluster)
//!                 [--snapshot-ms S] (how often the state snapshot is stored)
//! pg-runtime-test worker --nats URL --sweep NAME [--name W] [--step-ms S] [--workers K]
//!                 [--any-kind]      (jobs of every kind complete at once, for a planned grid)
//! pg-runtime-test bench [--count 10000 | --counts 10000,100000,1000000] [--workers 32]
//!                 [--processes 4] [--fan-in 2] [--grid M,S]  (a planned grid's row after them)
//! pg-runtime-test plan --sweep-file FILE | --models M [--seeds S] | --count N [--fan-in F]
//!                 (a sweep file, a grid of M models x 17 tasks x S seeds, or a synthetic sweep
//!                 planned as `promptgrid plan` plans it: time, jobs, peak RSS)
//! ```
//! The coordinator plans its graph once connected (or restores the one its sweep's first run
//! stored), so the resume it reports counts either from process start.
//! The coordinator prints its outcome as one JSON line and exits 0 when the sweep is complete.

mod bench;

use std::collections::HashMap;
use std::time::Duration;

use promptgrid_common::spec::SyntheticSpec;
use promptgrid_runtime::jobloop::{self, Synthetic, WorkerConfig};
use promptgrid_runtime::parquet::{ParquetDoneSource, ParquetSink};
use promptgrid_runtime::{CoordinatorConfig, NatsConfig, shutdown_on_signals};

fn main() {
    // The resume time is counted from here: process start, before the graph is planned.
    let process_start = std::time::Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(role) = args.first().cloned() else {
        eprintln!("usage: pg-runtime-test coordinator|worker --nats URL --sweep NAME ...");
        std::process::exit(2);
    };
    let mut opts: HashMap<String, Vec<String>> = HashMap::new();
    let mut key = String::new();
    for a in &args[1..] {
        if let Some(k) = a.strip_prefix("--") {
            key = k.to_string();
            opts.entry(key.clone()).or_default();
        } else {
            opts.entry(key.clone()).or_default().push(a.clone());
        }
    }
    let get = |k: &str| opts.get(k).and_then(|v| v.first()).cloned();
    let num = |k: &str, d: f64| get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(d);
    if role == "bench" {
        // `--counts 10000,100000,1000000`: one table row each; `--count N`: one size.
        let counts = get("counts")
            .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![num("count", 10_000.0) as u32]);
        let grid = get("grid").and_then(|g| {
            let (m, s) = g.split_once(',')?;
            Some((m.trim().parse().ok()?, s.trim().parse().ok()?))
        });
        let a = bench::BenchArgs {
            counts,
            grid,
            workers: num("workers", 32.0) as usize,
            processes: num("processes", 4.0) as usize,
            fan_in: num("fan-in", 2.0) as u32,
        };
        if let Err(e) = bench::run(a) {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if role == "plan" {
        let what = match get("sweep-file") {
            Some(file) => bench::PlanOf::File(file.into()),
            None => match get("models") {
                Some(m) => bench::PlanOf::Grid {
                    models: m.parse().unwrap_or(1),
                    seeds: num("seeds", 1.0) as u32,
                },
                None => bench::PlanOf::Synthetic {
                    count: num("count", 10_000.0) as u32,
                    fan_in: num("fan-in", 2.0) as u32,
                },
            },
        };
        if let Err(e) = bench::plan(what, process_start) {
            eprintln!("plan failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let Some(sweep) = get("sweep") else {
        eprintln!("--sweep is required");
        std::process::exit(2);
    };
    let nats = NatsConfig {
        url: get("nats").unwrap_or_default(),
        ..NatsConfig::default()
    }
    .with_env();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match role.as_str() {
            "coordinator" => {
                let duration = opts.get("duration-ms").cloned().unwrap_or_default();
                let lo = duration.first().and_then(|v| v.parse().ok()).unwrap_or(0);
                let hi = duration.get(1).and_then(|v| v.parse().ok()).unwrap_or(lo);
                let spec = SyntheticSpec {
                    count: num("count", 10.0) as u32,
                    fan_in: num("fan-in", 0.0) as u32,
                    duration_ms: (lo, hi),
                    fail_probability: num("fail-probability", 0.0),
                    payload_bytes: num("payload-bytes", 0.0) as u32,
                    seed: num("seed", 0.0) as u64,
                };
                let plan_from = match get("models") {
                    Some(m) => {
                        let (models, seeds) = (m.parse().unwrap_or(1), num("seeds", 1.0) as u32);
                        match bench::grid_sweep(&sweep, models, seeds) {
                            Ok(s) => s,
                            Err(e) => {
                                eprintln!("error: {e}");
                                return 1;
                            }
                        }
                    }
                    None => promptgrid_common::Sweep::synthetic_only(&sweep, spec),
                };
                // Planned in `run`, or restored from the graph the first run stored.
                let mut config = CoordinatorConfig::new(nats, &sweep, Default::default());
                config.plan_from = Some(plan_from);
                config.streams.lease = Duration::from_millis(num("lease-ms", 30_000.0) as u64);
                config.error_retries = num("error-retries", 2.0) as u32;
                config.streams.replicas = num("replicas", 1.0) as usize;
                config.snapshot_every =
                    Duration::from_millis(num("snapshot-ms", 10_000.0) as u64);
                config.progress = false;
                config.shutdown = Some(shutdown_on_signals());
                if let Some(results) = get("results") {
                    let dir = std::path::Path::new(&results).join(&sweep);
                    match ParquetSink::open(dir.clone(), Default::default()) {
                        Ok(sink) => config.sink = Some(Box::new(sink)),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return 1;
                        }
                    }
                    config.done_source = Some(Box::new(ParquetDoneSource { sweep_dir: dir }));
                }
                let run_ms = process_start.elapsed().as_millis();
                match promptgrid_runtime::run(config).await {
                    Ok(o) => {
                        println!(
                            "{{\"total\":{},\"done\":{},\"dead\":{},\"published\":{},\"reused\":{},\"reconciled_ms\":{},\"first_new_ms\":{},\"snapshot_seq\":{},\"run_ms\":{run_ms},\"snapshot_ms\":{},\"graph_ms\":{},\"graph_restored\":{}}}",
                            o.total,
                            o.done,
                            o.dead,
                            o.published,
                            o.changes.reused,
                            o.reconciled_after.as_millis(),
                            o.first_new_publish
                                .map_or(-1, |t| (t - process_start).as_millis() as i64),
                            o.snapshot_seq.map_or(-1, |s| s as i64),
                            o.snapshot_after.map_or(-1, |d| d.as_millis() as i64),
                            o.graph_after.map_or(-1, |(d, _)| d.as_millis() as i64),
                            o.graph_after.is_some_and(|(_, r)| r)
                        );
                        i32::from(!o.complete())
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        1
                    }
                }
            }
            "worker" => {
                let shutdown = shutdown_on_signals();
                let step = Duration::from_millis(num("step-ms", 100.0) as u64);
                let k = num("workers", 1.0) as usize;
                let any_kind = opts.contains_key("any-kind");
                let base = get("name").unwrap_or_else(|| format!("w{}", std::process::id()));
                let mut handles = Vec::new();
                for i in 0..k {
                    let mut wc = WorkerConfig::new(nats.clone(), Some(sweep.clone()));
                    wc.name = if k == 1 { base.clone() } else { format!("{base}-{i}") };
                    wc.shutdown = Some(shutdown.clone());
                    let synthetic = Synthetic { step };
                    handles.push(tokio::spawn(async move {
                        if any_kind {
                            jobloop::run(wc, bench::AnyKind(synthetic)).await
                        } else {
                            jobloop::run(wc, synthetic).await
                        }
                    }));
                }
                let mut code = 0;
                for h in handles {
                    if !matches!(h.await, Ok(Ok(_))) {
                        code = 1;
                    }
                }
                code
            }
            other => {
                eprintln!("unknown role `{other}`");
                2
            }
        }
    });
    std::process::exit(code);
}
