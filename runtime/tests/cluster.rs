//! The runtime on a three-server JetStream cluster (real `nats-server` processes with routes
//! between them): every stream replicated three times, workers spread over the servers, and one
//! server SIGKILLed mid-sweep and restarted. Also the `--replicas` checks.

mod util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use promptgrid_common::JobId;
use promptgrid_common::names::SweepNames;
use promptgrid_results::schema::{JobRow, MetricRow};
use promptgrid_results::store::read_table;
use promptgrid_runtime::jobloop::{self, Synthetic, WorkerConfig, WorkerStats, synthetic_graph};
use promptgrid_runtime::parquet::{ParquetDoneSource, ParquetSink};
use promptgrid_runtime::streams::{StreamOptions, SweepStreams, existing_replicas};
use promptgrid_runtime::{CoordinatorConfig, NatsConfig, retry};
use tokio::sync::watch;
use util::cluster::Cluster;
use util::{assert_exactly_once, logs, server, synthetic, until};

/// Each test's own limit; the issue asks for under two minutes.
const LIMIT: Duration = Duration::from_secs(110);
const JOBS: u32 = 3_000;
/// Workers per server.
const PER_SERVER: usize = 4;

/// One cluster test at a time: three clusters of three servers with their workers at once would
/// measure the machine (CI runners have two cores), not the runtime.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `f` alone among the cluster tests, within `LIMIT` of its start.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    let _alone = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test ran past its time limit")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    /// The server that leads the work-queue stream.
    Leader,
    /// One that only follows it.
    Follower,
}

/// What a run measured, printed for the record.
struct Measured {
    /// From the SIGKILL until a survivor names a new leader of the work queue.
    election: Option<Duration>,
    retries: u64,
    worker_outages: usize,
    elapsed: Duration,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(e) = self.election {
            write!(f, "new leader after {:.1}s, ", e.as_secs_f64())?;
        }
        write!(
            f,
            "{} retries, {} attempts handed back, {:.1}s in all",
            self.retries,
            self.worker_outages,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs `JOBS` zero-duration jobs (each depending on one other) on a three-server cluster with
/// `--replicas 3`, SIGKILLs `victim` once half the jobs have events, restarts it two seconds
/// later, and checks that every job is done exactly once in the Parquet tables.
async fn sweep_outlives_a_killed_server(victim: Victim) -> Measured {
    logs();
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    cluster.ready(Duration::from_secs(30)).await;
    let sweep = "ha";
    let names = SweepNames::new(sweep);
    let results = tempfile::tempdir().unwrap();
    let dir = results.path().join(sweep);
    let graph = synthetic_graph(sweep, synthetic(JOBS, 1, (0, 0)));
    let ids: Vec<JobId> = graph.jobs().iter().map(|j| j.id.clone()).collect();

    let mut cfg = CoordinatorConfig::new(NatsConfig::new(cluster.urls()), sweep, graph);
    cfg.streams.replicas = 3;
    cfg.streams.lease = Duration::from_secs(5);
    cfg.progress = false;
    // No job error is allowed at all: an outage charged to a job would make it dead.
    cfg.error_retries = 0;
    cfg.sink = Some(Box::new(
        ParquetSink::open(dir.clone(), Default::default()).unwrap(),
    ));
    cfg.done_source = Some(Box::new(ParquetDoneSource {
        sweep_dir: dir.clone(),
    }));
    let coordinator = tokio::spawn(promptgrid_runtime::run(cfg));
    let phase = |what: &str| eprintln!("{victim:?}: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    phase("cluster ready");

    // Each worker knows only its own server: it finds the others through the cluster.
    let (stop, rx) = watch::channel(false);
    let workers: Vec<_> = (0..3 * PER_SERVER)
        .map(|i| {
            let mut wc =
                WorkerConfig::new(NatsConfig::new(cluster.url(i % 3)), Some(sweep.to_string()));
            wc.name = format!("w{i}@n{}", i % 3);
            wc.shutdown = Some(rx.clone());
            tokio::spawn(jobloop::run(wc, Synthetic::default()))
        })
        .collect();

    // Halfway: a job that ran has a started and a finished event.
    let js = jetstream::new(NatsConfig::new(cluster.urls()).connect().await.unwrap());
    until(Duration::from_secs(60), "half the jobs", || async {
        match js.get_stream(names.events_stream()).await {
            Ok(mut s) => s
                .info()
                .await
                .is_ok_and(|i| i.state.messages >= u64::from(JOBS)),
            Err(_) => false,
        }
    })
    .await;
    phase("halfway");
    let leader = cluster.leader(0, &names.jobs_stream()).await.unwrap();
    let led = Cluster::index(&leader);
    let v = match victim {
        Victim::Leader => led,
        Victim::Follower => (led + 1) % 3,
    };
    let survivor = (v + 1) % 3;
    assert_eq!(victim == Victim::Leader, v == led);
    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.servers[v].kill());
    let election = if victim == Victim::Leader {
        let victim_name = Cluster::name(v);
        let mut elected = None;
        while killed.elapsed() < Duration::from_secs(30) {
            match cluster.leader(survivor, &names.jobs_stream()).await {
                Some(l) if l != victim_name => {
                    elected = Some(killed.elapsed());
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(elected.is_some(), "no new leader of the work queue");
        elected
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed())).await;
    tokio::task::block_in_place(|| cluster.servers[v].restart()).unwrap();
    phase("restarted");

    let out = coordinator.await.unwrap().unwrap();
    phase("coordinator finished");
    assert_eq!(
        (out.done, out.dead, out.total),
        (JOBS as usize, 0, JOBS as usize),
        "{out:?}"
    );
    stop.send(true).unwrap();
    let mut stats = WorkerStats::default();
    for w in workers {
        let s = w.await.unwrap().unwrap();
        stats.done += s.done;
        stats.failed += s.failed;
        stats.outages += s.outages;
    }
    assert_eq!(stats.failed, 0, "{stats:?}");

    // Every job done exactly once in the `jobs` table, and no job error at all.
    let jobs: Vec<JobRow> = read_table(&dir).unwrap();
    let done: Vec<&JobRow> = jobs.iter().filter(|r| r.status == "done").collect();
    let distinct: HashSet<&str> = done.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!((done.len(), distinct.len()), (JOBS as usize, JOBS as usize));
    assert_eq!(jobs.len(), JOBS as usize, "rows other than `done`");
    // No metric row doubled: three per job (start_step, steps, attempt), each once.
    let metrics: Vec<MetricRow> = read_table(&dir).unwrap();
    let keys: HashSet<(&str, i64, &str)> = metrics
        .iter()
        .map(|m| (m.job_id.as_str(), m.attempt, m.name.as_str()))
        .collect();
    assert_eq!(
        (metrics.len(), keys.len()),
        (3 * JOBS as usize, 3 * JOBS as usize)
    );
    // And in NATS: every state done, one finished event per job, no event stored twice.
    assert_exactly_once(&cluster.url(survivor), sweep, &ids).await;

    phase("checked");
    // The streams kept three copies, and the restarted server caught up with them.
    let client = NatsConfig::new(cluster.url(survivor))
        .connect()
        .await
        .unwrap();
    let replicas = existing_replicas(&jetstream::new(client), &names)
        .await
        .unwrap();
    assert_eq!(
        replicas.iter().map(|r| r.1).collect::<Vec<_>>(),
        [3, 3, 3, 3]
    );
    until(
        Duration::from_secs(20),
        "the restarted server to catch up",
        || async {
            let client = NatsConfig::new(cluster.url(survivor))
                .connect()
                .await
                .unwrap();
            let Ok(s) = jetstream::new(client).get_stream(names.jobs_stream()).await else {
                return false;
            };
            s.cached_info().cluster.as_ref().is_some_and(|c| {
                c.replicas.len() == 2 && c.replicas.iter().all(|p| p.current && !p.offline)
            })
        },
    )
    .await;
    phase("restarted server caught up");
    Measured {
        election,
        retries: retry::retries(),
        worker_outages: stats.outages,
        elapsed: t0.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_leader_killed_and_restarted_every_job_done_exactly_once() {
    let m = bounded(sweep_outlives_a_killed_server(Victim::Leader)).await;
    eprintln!("leader killed: {m}");
    // NATS's election timeouts are 4-9 s.
    assert!(
        m.election.is_some_and(|e| e < Duration::from_secs(15)),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_leader_killed_and_restarted_every_job_done_exactly_once() {
    let m = bounded(sweep_outlives_a_killed_server(Victim::Follower)).await;
    eprintln!("non-leader killed: {m}");
}

/// A sweep keeps the replica count it was created with; asking for another is refused before
/// anything changes, and so is asking a lone server for copies it cannot keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_an_existing_sweep_are_kept_and_a_lone_server_refuses_three() {
    let (_d, srv) = server(&[]);
    let client = NatsConfig::new(srv.url()).connect().await.unwrap();
    let js = jetstream::new(client.clone());
    let names = SweepNames::new("rep");
    let three = StreamOptions {
        replicas: 3,
        ..StreamOptions::default()
    };
    let refused = || async {
        let e = SweepStreams::setup(client.clone(), "rep", &three)
            .await
            .err();
        e.expect("three replicas refused").to_string()
    };
    assert_eq!(
        refused().await,
        "--replicas 3 needs a JetStream cluster of at least 3 servers; this NATS server runs \
         alone (use --replicas 1, or list a cluster's servers in --nats)"
    );
    assert!(existing_replicas(&js, &names).await.unwrap().is_empty());

    SweepStreams::setup(client.clone(), "rep", &StreamOptions::default())
        .await
        .unwrap();
    assert_eq!(
        refused().await,
        "sweep `rep` was created with 1 replica(s) per stream; --replicas 3 cannot change that \
         (run it with --replicas 1, or under another sweep name)"
    );
    let kept = existing_replicas(&js, &names).await.unwrap();
    assert_eq!(kept.iter().map(|r| r.1).collect::<Vec<_>>(), [1, 1, 1, 1]);
}

/// Issue 17: on a three-server cluster with one-replica streams, SIGKILLing the server that held
/// the artifact store turned running jobs' checkpoints into job errors ("no stream found for
/// given subject") that used up their error budget. An outage longer than the worker's patience
/// now hands the attempt back, counted as an outage, and the job finishes uncharged. Under load
/// a redelivered attempt could also find the store back but its chunks not yet readable: that
/// read's "timed out" was once reported as an I/O error and charged (2 of 4 jobs dead in about
/// one run in eight beside two busy CPU loops); a failure names the dead jobs' reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_store_lost_hands_jobs_back_without_a_job_error() {
    use promptgrid_common::wire::{Event, JobState};
    logs();
    let run = async {
        let mut cluster = Cluster::start(3);
        cluster.ready(Duration::from_secs(30)).await;
        let sweep = "r1";
        let names = SweepNames::new(sweep);
        // Created first, so that the server holding the store is known before anything runs.
        let client = NatsConfig::new(cluster.url(0)).connect().await.unwrap();
        SweepStreams::setup(client, sweep, &StreamOptions::default())
            .await
            .unwrap();
        let host = cluster
            .leader(0, &format!("OBJ_{}", names.artifact_bucket()))
            .await
            .unwrap();
        let v = Cluster::index(&host);
        let others = [(v + 1) % 3, (v + 2) % 3];
        let graph = synthetic_graph(sweep, synthetic(4, 0, (4_000, 4_000)));
        let ids: Vec<JobId> = graph.jobs().iter().map(|j| j.id.clone()).collect();
        let mut cfg = CoordinatorConfig::new(NatsConfig::new(cluster.url(others[0])), sweep, graph);
        // A long lease: nothing here may pass for a lost worker; and no job error is allowed.
        cfg.streams.lease = Duration::from_secs(60);
        cfg.error_retries = 0;
        cfg.progress = false;
        let coordinator = tokio::spawn(promptgrid_runtime::run(cfg));
        let (stop, rx) = watch::channel(false);
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let url = cluster.url(others[i % 2]);
                let mut wc = WorkerConfig::new(NatsConfig::new(url), Some(sweep.to_string()));
                wc.name = format!("w{i}");
                wc.shutdown = Some(rx.clone());
                wc.patience = Duration::from_millis(500);
                let step = Duration::from_millis(100);
                tokio::spawn(jobloop::run(wc, Synthetic { step }))
            })
            .collect();
        let url = cluster.url(others[0]);
        until(
            Duration::from_secs(30),
            "every job to run for a while",
            || async {
                let Ok(st) = util::try_states(&url, sweep).await else {
                    return false;
                };
                st.len() == 4
                    && st.values().all(|s| {
                        matches!(s, JobState::Running { started_ms, .. }
                    if promptgrid_common::wire::now_ms() > started_ms + 500)
                    })
            },
        )
        .await;
        // Checkpoints go out every 100 ms: each running job meets the outage.
        tokio::task::block_in_place(|| cluster.servers[v].kill());
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| cluster.servers[v].restart()).unwrap();
        let out = coordinator.await.unwrap().unwrap();
        let dead: Vec<String> = util::try_states(&url, sweep)
            .await
            .map(|st| {
                st.into_values()
                    .filter_map(|s| match s {
                        JobState::Dead { reason, .. } => Some(reason),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!((out.done, out.dead), (4, 0), "{out:?}; dead: {dead:?}");
        stop.send(true).unwrap();
        let mut outages = 0;
        for w in workers {
            let s = w.await.unwrap().unwrap();
            assert_eq!(s.failed, 0, "{s:?}");
            outages += s.outages;
        }
        // At least one attempt met the outage past its patience; how many depends on timing.
        assert!(
            outages >= 1,
            "no attempt was handed back: the outage was not exercised"
        );
        let evs = util::events(&url, sweep).await;
        let failed: Vec<_> = evs
            .iter()
            .filter(|(_, e)| matches!(e, Event::Failed { .. }))
            .collect();
        assert!(failed.is_empty(), "outages became job errors: {failed:?}");
        assert_exactly_once(&url, sweep, &ids).await;
        eprintln!(
            "one-replica store lost: {outages} attempts handed back, {} retries",
            retry::retries()
        );
    };
    bounded(run).await;
}
