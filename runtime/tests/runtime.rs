//! The runtime against a real nats-server: crashes of workers, the coordinator and the server,
//! late commits, malformed messages, authentication, and a chaos run.

mod util;

use std::time::Duration;

use async_nats::HeaderMap;
use promptgrid_common::JobId;
use promptgrid_common::wire::JobState;
use promptgrid_runtime::jobloop::{self, Synthetic, WorkerConfig, synthetic_graph};
use promptgrid_runtime::streams::{StreamOptions, SweepStreams};
use promptgrid_runtime::{CoordinatorConfig, NatsConfig};
use tokio::sync::watch;
use util::*;

const LIMIT: Duration = Duration::from_secs(120);

fn config(
    url: &str,
    sweep: &str,
    spec: promptgrid_common::spec::SyntheticSpec,
    lease_ms: u64,
) -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(NatsConfig::new(url), sweep, synthetic_graph(sweep, spec));
    c.streams.lease = Duration::from_millis(lease_ms);
    c.progress = false;
    c
}

fn ids(c: &CoordinatorConfig) -> Vec<JobId> {
    c.graph.jobs().iter().map(|j| j.id.clone()).collect()
}

/// In-process workers; send `true` to stop them.
fn workers(
    url: &str,
    sweep: &str,
    n: usize,
    step_ms: u64,
) -> (
    watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<promptgrid_runtime::Result<jobloop::WorkerStats>>>,
) {
    let (tx, rx) = watch::channel(false);
    let hs = (0..n)
        .map(|i| {
            let mut wc = WorkerConfig::new(NatsConfig::new(url), Some(sweep.to_string()));
            wc.name = format!("w{i}");
            wc.shutdown = Some(rx.clone());
            tokio::spawn(jobloop::run(
                wc,
                Synthetic {
                    step: Duration::from_millis(step_ms),
                },
            ))
        })
        .collect();
    (tx, hs)
}

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test ran past its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_with_dependencies_completes_and_reruns_as_a_no_op() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let cfg = config(&url, "deps", synthetic(200, 2, (0, 0)), 5_000);
        let all = ids(&cfg);
        let (stop, hs) = workers(&url, "deps", 3, 10);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete(), "{out:?}");
        assert_eq!(out.published, 200);
        assert_exactly_once(&url, "deps", &all).await;
        // Running it again publishes nothing; an edited sweep publishes only its new jobs.
        let again = promptgrid_runtime::run(config(&url, "deps", synthetic(200, 2, (0, 0)), 5_000))
            .await
            .unwrap();
        assert!(again.complete());
        assert_eq!(again.published, 0);
        let edited =
            promptgrid_runtime::run(config(&url, "deps", synthetic(230, 2, (0, 0)), 5_000))
                .await
                .unwrap();
        assert!(edited.complete());
        assert_eq!(
            (
                edited.published,
                edited.changes.reused,
                edited.changes.added.len()
            ),
            (30, 200, 30)
        );
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

/// Far more jobs ready at once than the publisher's queue holds (1,024): the scheduler keeps
/// the rest and hands them over as room frees up, and every job is still published once. (The
/// queue was unbounded and held every ready job's whole message before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_publish_queue_publishes_every_ready_job_exactly_once() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let cfg = config(&url, "wide", synthetic(3_000, 0, (0, 0)), 5_000);
        let all = ids(&cfg);
        let (stop, hs) = workers(&url, "wide", 4, 10);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete(), "{out:?}");
        assert_eq!(out.published, 3_000);
        assert!(out.first_new_publish.is_some(), "{out:?}");
        assert_exactly_once(&url, "wide", &all).await;
        // One message per job ever stored in the work queue.
        let mut l = streams(&url, "wide").await;
        assert_eq!(l.jobs.info().await.unwrap().state.last_sequence, 3_000);
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_job_is_redelivered_and_resumes_from_its_checkpoint() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let cfg = config(&url, "kill", synthetic(1, 0, (3_000, 3_000)), 1_500);
        let all = ids(&cfg);
        let coord = tokio::spawn(promptgrid_runtime::run(cfg));
        let mut a = worker_proc(&url, "kill", "a", 100);
        // Kill it once it has checkpointed a few steps.
        until(Duration::from_secs(30), "a checkpoint", || async {
            let client = NatsConfig::new(&url).connect().await.unwrap();
            let Ok(l) = SweepStreams::open(client, "kill").await else {
                return false;
            };
            // Read the way workers do: the checkpoint is replaced every step.
            let name = format!("checkpoints/{}", all[0]);
            match promptgrid_runtime::objects::read_object(&l.artifacts, &name).await {
                Ok(Some(b)) => serde_json::from_slice::<u64>(&b).is_ok_and(|s| s >= 5),
                _ => false,
            }
        })
        .await;
        a.kill();
        let _b = worker_proc(&url, "kill", "b", 100);
        let out = coord.await.unwrap().unwrap();
        assert!(out.complete(), "{out:?}");
        assert_exactly_once(&url, "kill", &all).await;
        let st = states(&url, "kill").await;
        let Some(JobState::Done {
            attempt,
            worker,
            output,
            ..
        }) = st.get(&all[0])
        else {
            panic!()
        };
        assert_eq!((*attempt, worker.as_str()), (2, "b"));
        let start = output
            .metrics
            .iter()
            .find(|m| m.name == "start_step")
            .unwrap()
            .value;
        assert!(
            start >= 5.0,
            "resumed from step {start}, not from its checkpoint"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_and_restarted_publishes_only_missing_jobs() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let args = [
            "--count",
            "300",
            "--fan-in",
            "1",
            "--duration-ms",
            "0",
            "10",
            "--lease-ms",
            "3000",
        ];
        let all = ids(&config(
            &url,
            "crd",
            {
                let mut s = synthetic(300, 1, (0, 10));
                s.seed = 0;
                s
            },
            3_000,
        ));
        let mut c1 = coordinator_proc(&url, "crd", &args);
        let _w1 = worker_proc(&url, "crd", "w1", 10);
        let _w2 = worker_proc(&url, "crd", "w2", 10);
        until(Duration::from_secs(60), "30% done", || async {
            SweepStreams::open(NatsConfig::new(&url).connect().await.unwrap(), "crd")
                .await
                .is_ok()
                && count_done(&url, "crd").await >= 90
        })
        .await;
        c1.kill();
        let c2 = coordinator_proc(&url, "crd", &args);
        let (code, out) = c2
            .wait_output(Duration::from_secs(90))
            .expect("coordinator finishes");
        assert_eq!(code, 0, "{out}");
        assert_exactly_once(&url, "crd", &all).await;
        // One message per job ever stored: the restart re-published nothing that existed.
        let mut l = streams(&url, "crd").await;
        assert_eq!(l.jobs.info().await.unwrap().state.last_sequence, 300);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_and_restarted_mid_sweep_the_sweep_finishes() {
    bounded(async {
        let (_d, mut srv) = server(&[]);
        let url = srv.url();
        let cfg = config(&url, "srv", synthetic(300, 1, (0, 5)), 3_000);
        let all = ids(&cfg);
        let (stop, hs) = workers(&url, "srv", 3, 5);
        let coord = tokio::spawn(promptgrid_runtime::run(cfg));
        until(Duration::from_secs(60), "25% done", || async {
            SweepStreams::open(NatsConfig::new(&url).connect().await.unwrap(), "srv")
                .await
                .is_ok()
                && count_done(&url, "srv").await >= 75
        })
        .await;
        tokio::task::block_in_place(|| srv.kill());
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| srv.restart()).unwrap();
        let out = coord.await.unwrap().unwrap();
        assert!(out.complete(), "{out:?}");
        assert_exactly_once(&url, "srv", &all).await;
        stop.send(true).unwrap();
        for h in hs {
            let _ = h.await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commit_from_an_expired_lease_does_not_overwrite_the_newer_attempt() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let cfg = config(&url, "late", synthetic(1, 0, (2_500, 2_500)), 1_000);
        let all = ids(&cfg);
        let coord = tokio::spawn(promptgrid_runtime::run(cfg));
        // A stalled worker: no progress acks, so its lease runs out while it still works.
        let (stop, rx) = watch::channel(false);
        let mut wa = WorkerConfig::new(NatsConfig::new(&url), Some("late".into()));
        wa.name = "stalled".into();
        wa.heartbeats = false;
        wa.shutdown = Some(rx.clone());
        let a = tokio::spawn(jobloop::run(
            wa,
            Synthetic {
                step: Duration::from_millis(100),
            },
        ));
        until(
            Duration::from_secs(30),
            "the stalled worker to start",
            || async {
                matches!(
                    states(&url, "late").await.get(&all[0]),
                    Some(JobState::Running { .. })
                )
            },
        )
        .await;
        let mut wb = WorkerConfig::new(NatsConfig::new(&url), Some("late".into()));
        wb.name = "fresh".into();
        wb.shutdown = Some(rx);
        let b = tokio::spawn(jobloop::run(
            wb,
            Synthetic {
                step: Duration::from_millis(100),
            },
        ));
        let out = coord.await.unwrap().unwrap();
        assert!(out.complete());
        // Let the stalled worker finish its (late) attempt and try to commit.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.send(true).unwrap();
        let sa = a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        assert_eq!(sa.done, 0, "the stalled worker's commit must fail");
        let st = states(&url, "late").await;
        let Some(JobState::Done {
            worker, attempt, ..
        }) = st.get(&all[0])
        else {
            panic!("{st:?}")
        };
        assert_eq!((worker.as_str(), *attempt), ("fresh", 2));
        assert_exactly_once(&url, "late", &all).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_fails_its_job_with_a_clear_error_and_the_worker_goes_on() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let mut cfg = config(&url, "bad", synthetic(5, 0, (0, 0)), 5_000);
        cfg.error_retries = 0;
        let graph = cfg.graph.clone();
        let victim = graph.jobs()[0].clone();
        // Garbage on the victim's subject, queued before the coordinator publishes anything.
        let client = NatsConfig::new(&url).connect().await.unwrap();
        let streams = SweepStreams::setup(client, "bad", &StreamOptions::default())
            .await
            .unwrap();
        streams
            .model_consumer("none", Duration::from_secs(5))
            .await
            .unwrap();
        let subject = streams.names.job_subject(None, victim.kind(), &victim.id);
        let ack = streams
            .js
            .publish_with_headers(subject, HeaderMap::new(), "{not json".into())
            .await
            .unwrap();
        ack.await.unwrap();
        // And a message on a subject with no job id at all.
        let ack = streams
            .js
            .publish("pg.bad.jobs.none.synthetic.zz-not-an-id", "x".into())
            .await
            .unwrap();
        ack.await.unwrap();
        let (stop, hs) = workers(&url, "bad", 1, 10);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert_eq!((out.done, out.dead), (4, 1), "{out:?}");
        let report = promptgrid_runtime::status(&NatsConfig::new(&url), "bad", &graph)
            .await
            .unwrap();
        assert_eq!((report.count("done"), report.count("dead")), (4, 1));
        let (key, reason) = &report.last_errors[0];
        assert_eq!(key, &victim.key);
        assert!(reason.contains("malformed job message"), "{reason}");
        // retry --failed re-queues it; its real message is then published and runs.
        assert_eq!(
            promptgrid_runtime::retry_failed(&NatsConfig::new(&url), "bad", &graph)
                .await
                .unwrap(),
            1
        );
        let mut cfg = config(&url, "bad", synthetic(5, 0, (0, 0)), 5_000);
        cfg.error_retries = 0;
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete(), "{out:?}");
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

/// Without a running coordinator, `status` reads the coordinator's state snapshot and the
/// bucket's changes after it (a full read of a million states took 17 s on a busy server):
/// it shows those changes, agrees with the full read it falls back to where the snapshot does
/// not fit, and trusts a fitting snapshot for what it covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_coordinator_reads_its_snapshot_and_the_changes_after_it() {
    use promptgrid_runtime::snapshot::{self, Encoder, JobEntry, SNAPSHOT_ARTIFACT, Tag};
    use promptgrid_runtime::state;
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let mut spec = synthetic(50, 0, (0, 0));
        spec.fail_probability = 0.1;
        let mut cfg = config(&url, "stt", spec, 5_000);
        cfg.error_retries = 0;
        let graph = cfg.graph.clone();
        let (stop, hs) = workers(&url, "stt", 2, 0);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
        assert!(out.dead > 0 && out.done + out.dead == 50, "{out:?}");
        let nats = NatsConfig::new(&url);
        let l = streams(&url, "stt").await;
        let snap = promptgrid_runtime::objects::read_object(&l.artifacts, SNAPSHOT_ARTIFACT)
            .await
            .unwrap()
            .expect("the coordinator's last snapshot");
        let (_, covered, _) = snapshot::bucket_position(&l).await.unwrap();

        // After the snapshot: a done job running again, another dead, a third pending.
        let done: Vec<&promptgrid_common::Job> = graph
            .jobs()
            .iter()
            .filter(|j| {
                matches!(
                    j.spec,
                    promptgrid_common::JobSpec::Synthetic { fail: false, .. }
                )
            })
            .take(3)
            .collect();
        let set = |job: &promptgrid_common::Job, next: JobState| {
            let l = l.clone();
            let id = job.id.clone();
            async move {
                let v = state::read(&l.state, &id).await.unwrap().unwrap();
                state::cas(&l.state, &id, &next, v.revision)
                    .await
                    .unwrap()
                    .unwrap();
            }
        };
        set(
            done[0],
            JobState::Running {
                attempt: 2,
                retries: 0,
                lost: 0,
                worker: "late-worker".into(),
                started_ms: promptgrid_common::wire::now_ms(),
                lease_ms: 5_000,
                msg_seq: 1,
                outages: 0,
            },
        )
        .await;
        set(
            done[1],
            JobState::Dead {
                attempt: 1,
                retries: 0,
                lost: 0,
                reason: "killed after the snapshot".into(),
                at_ms: promptgrid_common::wire::now_ms() + 60_000,
            },
        )
        .await;
        set(
            done[2],
            JobState::Pending {
                attempts: 1,
                retries: 0,
                lost: 0,
                requeued: false,
                outages: 0,
            },
        )
        .await;
        let (_, last, _) = snapshot::bucket_position(&l).await.unwrap();
        assert_eq!(last, covered + 3);

        let from_snapshot = promptgrid_runtime::status(&nats, "stt", &graph)
            .await
            .unwrap();
        assert_eq!(from_snapshot.summary_age_ms, None);
        assert_eq!(
            (
                from_snapshot.count("done"),
                from_snapshot.count("dead"),
                from_snapshot.count("running"),
                from_snapshot.count("pending")
            ),
            (out.done - 3, out.dead + 1, 1, 1),
            "{from_snapshot}"
        );
        assert_eq!(from_snapshot.running.len(), 1);
        assert_eq!(
            (
                from_snapshot.running[0].key.as_str(),
                from_snapshot.running[0].worker.as_str()
            ),
            (done[0].key.as_str(), "late-worker")
        );
        assert_eq!(
            from_snapshot.last_errors[0],
            (done[1].key.clone(), "killed after the snapshot".to_string())
        );
        assert_eq!(from_snapshot.last_errors.len(), (out.dead + 1).min(10));
        assert!(
            from_snapshot.last_errors[1..]
                .iter()
                .all(|(_, e)| e.contains("fails by design")),
            "{from_snapshot}"
        );

        // The pending job waits for its model's consumer: with no pull request on it, no
        // worker serves the model; with one, workers are busy. Polled, as a stopped worker's
        // last long poll lingers on the server until it expires.
        let reason = |want: &'static str| {
            let (nats, graph, key) = (nats.clone(), graph.clone(), done[2].key.clone());
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let r = promptgrid_runtime::status(&nats, "stt", &graph)
                        .await
                        .unwrap();
                    let why = r.waits.into_iter().find(|(k, _)| *k == key).map(|w| w.1);
                    if why.as_deref() == Some(want) || std::time::Instant::now() > deadline {
                        return why;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let idle = "queued; no worker is pulling jobs for model `none`";
        assert_eq!(reason(idle).await.as_deref(), Some(idle));
        let consumer = l
            .model_consumer(promptgrid_common::names::NO_MODEL, Duration::from_secs(5))
            .await
            .unwrap();
        let pull = tokio::spawn(async move {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(20))
                .messages()
                .await
                .unwrap();
            futures::StreamExt::next(&mut batch).await.is_none()
        });
        let busy = "queued; workers are busy";
        assert_eq!(reason(busy).await.as_deref(), Some(busy));
        pull.abort();

        // A damaged snapshot: the full read, with the same answer.
        let mut damaged = snap.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        l.artifacts
            .put(SNAPSHOT_ARTIFACT, &mut damaged.as_slice())
            .await
            .unwrap();
        let full = promptgrid_runtime::status(&nats, "stt", &graph)
            .await
            .unwrap();
        assert_eq!(
            (&full.counts, &full.last_errors, full.running.len()),
            (
                &from_snapshot.counts,
                &from_snapshot.last_errors,
                from_snapshot.running.len()
            )
        );

        // A fitting snapshot is trusted for what it covers: one that says every job is done,
        // up to the bucket's last message, is what status shows.
        let (created, last, _) = snapshot::bucket_position(&l).await.unwrap();
        let mut e = Encoder::new(
            &promptgrid_runtime::manifest::digest(&graph),
            created,
            last,
            50,
        );
        for _ in 0..50 {
            e.job(JobEntry {
                tag: Tag::Done,
                counters: (1, 0, 0),
                revision: last,
            });
        }
        l.artifacts
            .put(SNAPSHOT_ARTIFACT, &mut e.finish(&[], &[]).as_slice())
            .await
            .unwrap();
        let trusted = promptgrid_runtime::status(&nats, "stt", &graph)
            .await
            .unwrap();
        assert_eq!(trusted.count("done"), 50, "{trusted}");
        assert!(trusted.last_errors.is_empty() && trusted.running.is_empty());
    })
    .await;
}

/// JetStream API requests the server has answered, from its monitoring port's `/jsz`.
fn api_requests(monitor: u16) -> u64 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", monitor)).unwrap();
    conn.write_all(b"GET /jsz HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let jsz: serde_json::Value = serde_json::from_str(body).unwrap();
    jsz["api"]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no api.total in {body}"))
}

/// An idle worker keeps the model consumers it found: a refresh of 40 models' sources every
/// 5 s costs one request, where it looked up every consumer again (2 requests a model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_refreshes_its_sources_without_a_request_per_model() {
    bounded(async {
        let monitor = promptgrid_runtime::server::free_port().unwrap();
        let (_d, srv) = server(&["-m", &monitor.to_string()]);
        let url = srv.url();
        let client = NatsConfig::new(&url).connect().await.unwrap();
        let l = SweepStreams::setup(client, "idle", &StreamOptions::default())
            .await
            .unwrap();
        for m in 0..40 {
            l.model_consumer(&format!("m{m}"), Duration::from_secs(5))
                .await
                .unwrap();
        }
        let (stop, hs) = workers(&url, "idle", 1, 0);
        // Past its first look, then two refreshes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = api_requests(monitor);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let during = api_requests(monitor) - before;
        stop.send(true).unwrap();
        for h in hs {
            let stats = h.await.unwrap().unwrap();
            assert_eq!(stats, jobloop::WorkerStats::default());
        }
        assert!(
            (1..=6).contains(&during),
            "{during} API requests in two refreshes"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_use_their_error_budget_then_are_dead() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let mut spec = synthetic(20, 0, (0, 0));
        spec.fail_probability = 0.3;
        let mut cfg = config(&url, "fail", spec, 5_000);
        cfg.error_retries = 2;
        let graph = cfg.graph.clone();
        let failing = graph
            .jobs()
            .iter()
            .filter(|j| {
                matches!(
                    j.spec,
                    promptgrid_common::JobSpec::Synthetic { fail: true, .. }
                )
            })
            .count();
        assert!(failing > 0);
        let (stop, hs) = workers(&url, "fail", 2, 10);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert_eq!((out.done, out.dead), (20 - failing, failing), "{out:?}");
        let st = states(&url, "fail").await;
        for s in st.values() {
            if let JobState::Dead {
                attempt,
                retries,
                reason,
                ..
            } = s
            {
                assert_eq!((*attempt, *retries), (3, 2), "{reason}");
                assert!(reason.contains("fails by design"));
            }
        }
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

/// `status` answers from the running coordinator's summary in one read (a full read of every
/// state took seconds at a million jobs): its counts add up to the sweep, and right after the
/// end they agree with the full read and list each dead job's error once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_the_coordinators_summary_agrees_with_the_full_read() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let mut spec = synthetic(60, 1, (20, 60));
        spec.fail_probability = 0.1;
        let mut cfg = config(&url, "sum", spec, 5_000);
        cfg.error_retries = 0;
        let graph = cfg.graph.clone();
        let (stop, hs) = workers(&url, "sum", 2, 10);
        let coordinator = tokio::spawn(promptgrid_runtime::run(cfg));
        let nats = NatsConfig::new(&url);
        let quick = || promptgrid_runtime::status::quick(&nats, "sum");
        let first = loop {
            if let Ok(Some(r)) = quick().await {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(first.total, 60);
        let sum: usize = first.counts.values().flat_map(|m| m.values()).sum();
        assert_eq!(sum, 60, "{first}");
        let out = coordinator.await.unwrap().unwrap();
        assert!(out.dead > 0, "{out:?}");
        let last = quick().await.unwrap().expect("the summary of the end");
        let full = promptgrid_runtime::status(&nats, "sum", &graph)
            .await
            .unwrap();
        for state in ["done", "dead"] {
            assert_eq!(last.count(state), full.count(state), "{last}\n{full}");
        }
        assert_eq!(
            (last.count("done"), last.count("dead")),
            (out.done, out.dead)
        );
        assert_eq!(last.last_errors.len(), out.dead.min(10), "{last}");
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_server_needs_and_accepts_credentials() {
    bounded(async {
        let (_d, srv) = server(&["--user", "pg", "--pass", "s3cret"]);
        let url = srv.url();
        let err = NatsConfig::new(&url)
            .connect()
            .await
            .expect_err("anonymous connect must fail");
        assert!(
            matches!(err, promptgrid_runtime::Error::Connect { .. }),
            "{err}"
        );
        let nats = NatsConfig {
            user: Some("pg".into()),
            password: Some("s3cret".into()),
            ..NatsConfig::new(&url)
        };
        let mut cfg = config(&url, "auth", synthetic(10, 0, (0, 0)), 5_000);
        cfg.nats = nats.clone();
        let (tx, rx) = watch::channel(false);
        let mut wc = WorkerConfig::new(nats, Some("auth".into()));
        wc.shutdown = Some(rx);
        let w = tokio::spawn(jobloop::run(wc, Synthetic::default()));
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete());
        tx.send(true).unwrap();
        assert_eq!(w.await.unwrap().unwrap().done, 10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_runs_resumes_and_rebuilds_a_lost_store() {
    bounded(async {
        let results = tempfile::tempdir().unwrap();
        let graph = synthetic_graph("emb", synthetic(50, 1, (0, 0)));
        let cfg = || {
            let mut c = CoordinatorConfig::new(NatsConfig::default(), "emb", graph.clone());
            c.progress = false;
            c
        };
        let run =
            |c| promptgrid_runtime::embedded::run(c, results.path(), 2, |_| Synthetic::default());
        let out = run(cfg()).await.unwrap();
        assert!(out.complete() && out.published == 50, "{out:?}");
        let done =
            std::fs::read_to_string(results.path().join("emb/done-jobs.txt")).unwrap_or_default();
        assert_eq!(
            done.lines().count(),
            50,
            "the sink records every finished job"
        );
        let out = run(cfg()).await.unwrap();
        assert!(out.complete() && out.published == 0, "{out:?}");
        // The store is gone: the done set comes back from the results folder.
        std::fs::remove_dir_all(results.path().join("emb/.nats")).unwrap();
        let out = run(cfg()).await.unwrap();
        assert!(out.complete(), "{out:?}");
        assert!(
            out.published < 50,
            "{out:?} republished jobs the results already hold"
        );
    })
    .await;
}

/// 2,000 short jobs (0-20 ms), 8 worker processes killed at random and restarted, the
/// coordinator killed once: every job is done exactly once and no event is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_every_job_done_exactly_once() {
    use rand::Rng;
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let args = [
            "--count",
            "2000",
            "--fan-in",
            "2",
            "--duration-ms",
            "0",
            "20",
            "--lease-ms",
            "1000",
        ];
        let all = ids(&config(
            &url,
            "chaos",
            {
                let mut s = synthetic(2000, 2, (0, 20));
                s.seed = 0;
                s
            },
            2_000,
        ));
        let mut coord = coordinator_proc(&url, "chaos", &args);
        let mut ws: Vec<Proc> = (0..8)
            .map(|i| worker_proc(&url, "chaos", &format!("w{i}"), 10))
            .collect();
        let mut coordinator_killed = false;
        let mut kills = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(100);
        loop {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if let Ok(Some(_)) = coord.0.try_wait() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chaos run did not finish"
            );
            let i = rand::rng().random_range(0..ws.len());
            ws[i].kill();
            ws[i] = worker_proc(&url, "chaos", &format!("w{i}-{kills}"), 10);
            kills += 1;
            if !coordinator_killed && count_done(&url, "chaos").await >= 600 {
                coord.kill();
                coord = coordinator_proc(&url, "chaos", &args);
                coordinator_killed = true;
            }
        }
        let (code, out) = coord.wait_output(Duration::from_secs(5)).unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(
            coordinator_killed,
            "the coordinator was never killed (sweep too fast?)"
        );
        assert_exactly_once(&url, "chaos", &all).await;
        eprintln!("chaos: {kills} worker kills");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_and_the_next_worker_resumes_it() {
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let cfg = config(&url, "term", synthetic(1, 0, (3_000, 3_000)), 30_000);
        let all = ids(&cfg);
        let coord = tokio::spawn(promptgrid_runtime::run(cfg));
        let mut a = worker_proc(&url, "term", "a", 100);
        until(Duration::from_secs(30), "the job to run for a while", || async {
            matches!(states(&url, "term").await.get(&all[0]),
                Some(JobState::Running { started_ms, .. }) if promptgrid_common::wire::now_ms() > started_ms + 800)
        })
        .await;
        let pid = a.0.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = tokio::task::block_in_place(|| a.0.wait()).unwrap();
        assert!(status.success(), "the worker exits cleanly on SIGTERM");
        // Handed back, not lost: the lease (30 s) need not run out for the next worker.
        let st = states(&url, "term").await;
        assert!(
            matches!(st.get(&all[0]), Some(JobState::Pending { requeued: true, lost: 0, .. })),
            "{st:?}"
        );
        let _b = worker_proc(&url, "term", "b", 100);
        let out = coord.await.unwrap().unwrap();
        assert!(out.complete());
        let st = states(&url, "term").await;
        let Some(JobState::Done { worker, output, .. }) = st.get(&all[0]) else { panic!() };
        assert_eq!(worker, "b");
        let start = output.metrics.iter().find(|m| m.name == "start_step").unwrap().value;
        assert!(start >= 5.0, "resumed from step {start}");
        assert_exactly_once(&url, "term", &all).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_killed_mid_stream_and_restarted_writes_every_row_exactly_once() {
    use promptgrid_results::schema::{JobRow, MetricRow};
    use promptgrid_results::store::read_table;
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let results = tempfile::tempdir().unwrap();
        let dir = results.path().join("snk");
        let results_arg = results.path().to_str().unwrap();
        let count = 400;
        let args = [
            "--count",
            "400",
            "--fan-in",
            "1",
            "--duration-ms",
            "0",
            "10",
            "--lease-ms",
            "3000",
            "--results",
            results_arg,
        ];
        let committed = || {
            read_table::<JobRow>(&dir)
                .map(|rows| rows.iter().filter(|r| r.status == "done").count())
                .unwrap_or(0)
        };
        let mut c1 = coordinator_proc(&url, "snk", &args);
        let _w1 = worker_proc(&url, "snk", "w1", 10);
        let _w2 = worker_proc(&url, "snk", "w2", 10);
        // Kill the sink's process while events are in flight: some committed, most not.
        until(Duration::from_secs(60), "rows committed", || async {
            committed() >= 60
        })
        .await;
        c1.kill();
        let before = committed();
        assert!(before < count, "the sweep finished before the kill");
        let c2 = coordinator_proc(&url, "snk", &args);
        let (code, out) = c2
            .wait_output(Duration::from_secs(90))
            .expect("coordinator finishes");
        assert_eq!(code, 0, "{out}");

        // Every job has exactly one `done` row, every metric exactly one row.
        let jobs: Vec<JobRow> = read_table(&dir).unwrap();
        let done: Vec<&JobRow> = jobs.iter().filter(|r| r.status == "done").collect();
        let ids: std::collections::HashSet<&str> = done.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!((done.len(), ids.len()), (count, count));
        let metrics: Vec<MetricRow> = read_table(&dir).unwrap();
        let keys: std::collections::HashSet<(&str, i64, &str)> = metrics
            .iter()
            .map(|m| (m.job_id.as_str(), m.attempt, m.name.as_str()))
            .collect();
        assert_eq!(keys.len(), metrics.len(), "duplicate metric rows");
        // A synthetic job reports start_step, steps and attempt once per finished attempt.
        assert_eq!(metrics.len(), 3 * count, "missing or extra metric rows");
        // Nothing but committed parts in the table folders.
        for table in ["jobs", "metrics"] {
            for entry in std::fs::read_dir(dir.join(table)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(name.ends_with(".parquet"), "{table}/{name}");
            }
        }
    })
    .await;
}

/// A coordinator killed after it stored a state snapshot restarts from that snapshot (and the
/// bucket's messages after it): every job done once, one job message per job ever stored, one
/// `done` row per job in the Parquet table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restarted_from_its_snapshot_runs_every_job_exactly_once() {
    use promptgrid_results::schema::JobRow;
    use promptgrid_results::store::read_table;
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let results = tempfile::tempdir().unwrap();
        let results_arg = results.path().to_str().unwrap();
        let args = [
            "--count",
            "400",
            "--fan-in",
            "2",
            "--duration-ms",
            "0",
            "10",
            "--lease-ms",
            "3000",
            "--snapshot-ms",
            "100",
            "--results",
            results_arg,
        ];
        let all = ids(&config(
            &url,
            "snp",
            {
                let mut s = synthetic(400, 2, (0, 10));
                s.seed = 0;
                s
            },
            3_000,
        ));
        let mut c1 = coordinator_proc(&url, "snp", &args);
        let _w1 = worker_proc(&url, "snp", "w1", 10);
        let _w2 = worker_proc(&url, "snp", "w2", 10);
        until(
            Duration::from_secs(60),
            "30% done and a snapshot",
            || async {
                let Ok(client) = NatsConfig::new(&url).connect().await else {
                    return false;
                };
                let Ok(l) = SweepStreams::open(client, "snp").await else {
                    return false;
                };
                let snap = promptgrid_runtime::objects::read_object(
                    &l.artifacts,
                    promptgrid_runtime::snapshot::SNAPSHOT_ARTIFACT,
                )
                .await;
                matches!(snap, Ok(Some(_))) && count_done(&url, "snp").await >= 120
            },
        )
        .await;
        c1.kill();
        assert!(
            count_done(&url, "snp").await < 400,
            "finished before the kill"
        );
        let c2 = coordinator_proc(&url, "snp", &args);
        let (code, out) = c2
            .wait_output(Duration::from_secs(90))
            .expect("coordinator finishes");
        assert_eq!(code, 0, "{out}");
        let seq: i64 = out
            .split("\"snapshot_seq\":")
            .nth(1)
            .and_then(|s| s.split([',', '}']).next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no snapshot_seq in {out}"));
        assert!(seq > 0, "the restart did not use the snapshot: {out}");
        assert!(
            out.contains("\"graph_restored\":true"),
            "the restart planned its graph again: {out}"
        );
        assert_exactly_once(&url, "snp", &all).await;
        let mut l = streams(&url, "snp").await;
        assert_eq!(l.jobs.info().await.unwrap().state.last_sequence, 400);
        let rows: Vec<JobRow> = read_table(&results.path().join("snp")).unwrap();
        let done: Vec<&str> = rows
            .iter()
            .filter(|r| r.status == "done")
            .map(|r| r.job_id.as_str())
            .collect();
        let distinct: std::collections::HashSet<&str> = done.iter().copied().collect();
        assert_eq!((done.len(), distinct.len()), (400, 400));
        assert!(all.iter().all(|id| distinct.contains(id.as_str())));
    })
    .await;
}

/// A snapshot that does not fit is ignored and the whole bucket replayed: unreadable bytes,
/// one of another graph, one that claims more of the bucket than there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_stale_snapshot_is_ignored() {
    use promptgrid_runtime::snapshot::{self, Encoder, JobEntry, SNAPSHOT_ARTIFACT, Tag};
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let (stop, hs) = workers(&url, "stl", 3, 0);
        let cfg = config(&url, "stl", synthetic(100, 2, (0, 0)), 5_000);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete(), "{out:?}");
        assert_eq!(out.snapshot_seq, None);
        // The run stored its last view: the rerun replays nothing.
        let cfg = config(&url, "stl", synthetic(100, 2, (0, 0)), 5_000);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete() && out.published == 0, "{out:?}");
        assert!(out.snapshot_seq.is_some(), "{out:?}");
        let digest = out.changes.digest.clone();

        let l = streams(&url, "stl").await;
        let put = |bytes: Vec<u8>| {
            let l = l.clone();
            async move {
                l.artifacts
                    .put(SNAPSHOT_ARTIFACT, &mut bytes.as_slice())
                    .await
                    .unwrap();
            }
        };
        // Damaged.
        let mut bytes = promptgrid_runtime::objects::read_object(&l.artifacts, SNAPSHOT_ARTIFACT)
            .await
            .unwrap()
            .unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        put(bytes).await;
        let cfg = config(&url, "stl", synthetic(100, 2, (0, 0)), 5_000);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete() && out.published == 0, "{out:?}");
        assert_eq!(out.snapshot_seq, None);

        // Ahead of the bucket, for this graph: every job "done" at a sequence never written.
        let (created, last, _) = snapshot::bucket_position(&l).await.unwrap();
        let mut e = Encoder::new(&digest, created, last + 1_000, 100);
        for _ in 0..100 {
            e.job(JobEntry {
                tag: Tag::Done,
                counters: (1, 0, 0),
                revision: last + 1_000,
            });
        }
        put(e.finish(&[], &[])).await;
        let cfg = config(&url, "stl", synthetic(100, 2, (0, 0)), 5_000);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete() && out.published == 0, "{out:?}");
        assert_eq!(out.snapshot_seq, None);

        // Of another graph: an edited sweep (more jobs) replays the bucket and runs the new
        // jobs, each once.
        let cfg = config(&url, "stl", synthetic(130, 2, (0, 0)), 5_000);
        let all = ids(&cfg);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete(), "{out:?}");
        assert_eq!(out.snapshot_seq, None);
        assert_exactly_once(&url, "stl", &all).await;
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

/// A coordinator that plans its graph itself, or restores the one stored for the sweep.
fn planning_config(url: &str, sweep: &str, seed: u64) -> (CoordinatorConfig, Vec<JobId>) {
    let mut spec = synthetic(120, 2, (0, 0));
    spec.seed = seed;
    let all = synthetic_graph(sweep, spec.clone())
        .jobs()
        .iter()
        .map(|j| j.id.clone())
        .collect();
    let mut c = config(url, sweep, spec.clone(), 5_000);
    c.graph = Default::default();
    c.plan_from = Some(promptgrid_common::Sweep::synthetic_only(sweep, spec));
    (c, all)
}

/// The first run plans and stores its graph, a rerun restores it; a damaged one, or one of
/// another sweep file, is ignored (planned again and replaced), and every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_graph_is_restored_and_a_damaged_or_other_one_ignored() {
    use promptgrid_runtime::graphstore::GRAPH_ARTIFACT;
    bounded(async {
        let (_d, srv) = server(&[]);
        let url = srv.url();
        let (stop, hs) = workers(&url, "gst", 3, 0);
        let restored = |o: &promptgrid_runtime::Outcome| o.graph_after.map(|g| g.1);

        let (cfg, all) = planning_config(&url, "gst", 1);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete() && out.total == 120, "{out:?}");
        assert_eq!(restored(&out), Some(false));
        assert_exactly_once(&url, "gst", &all).await;

        let (cfg, _) = planning_config(&url, "gst", 1);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete() && out.published == 0, "{out:?}");
        assert_eq!(restored(&out), Some(true));

        // Damaged: planned again, nothing to publish, and stored anew.
        let l = streams(&url, "gst").await;
        let mut bytes = promptgrid_runtime::objects::read_object(&l.artifacts, GRAPH_ARTIFACT)
            .await
            .unwrap()
            .unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        l.artifacts
            .put(GRAPH_ARTIFACT, &mut bytes.as_slice())
            .await
            .unwrap();
        let (cfg, _) = planning_config(&url, "gst", 1);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete() && out.published == 0, "{out:?}");
        assert_eq!(restored(&out), Some(false));
        let (cfg, _) = planning_config(&url, "gst", 1);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert_eq!(restored(&out), Some(true));

        // Another sweep file (other dependencies, so other ids): the stored graph is not its.
        let (cfg, all) = planning_config(&url, "gst", 2);
        let out = promptgrid_runtime::run(cfg).await.unwrap();
        assert!(out.complete(), "{out:?}");
        assert_eq!(restored(&out), Some(false));
        assert_exactly_once(&url, "gst", &all).await;
        stop.send(true).unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
    })
    .await;
}

/// The full read of the job states aims for the bucket's last sequence at its start, and
/// trusts a consumer's "nothing pending" only where the stream's leader agrees. Here the newest
/// messages were erased after being stored: the read ends at once with the states left, rather
/// than waiting for messages that will never come.
#[tokio::test]
async fn a_full_read_whose_newest_messages_were_erased_ends_with_what_is_left() {
    use promptgrid_runtime::state;
    bounded(async {
        let (_d, srv) = server(&[]);
        let client = NatsConfig::new(srv.url()).connect().await.unwrap();
        let js = async_nats::jetstream::new(client);
        // A bucket's own stream refuses erasures; this one, laid out as a bucket, allows them
        // (as an operator's tool, or a per-message expiry, could remove a message).
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KV_erased".into(),
            subjects: vec!["$KV.erased.>".into()],
            max_messages_per_subject: 1,
            allow_rollup: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let store = js.get_key_value("erased").await.unwrap();
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let s = JobState::Dead {
                attempt: 1,
                retries: 0,
                lost: 0,
                reason: format!("r{i}"),
                at_ms: 0,
            };
            store.put(key, s.to_bytes().into()).await.unwrap();
        }
        let stream = js.get_stream("KV_erased").await.unwrap();
        for seq in [3, 4] {
            assert!(stream.delete_message(seq).await.unwrap());
        }
        let t = std::time::Instant::now();
        let got = state::snapshot(&js, &store).await.unwrap();
        let mut keys: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["a", "b"]);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    })
    .await;
}
