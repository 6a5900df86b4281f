//! Shared helpers of the runtime tests: a real nats-server, runtime processes that can be
//! killed, and readers of the final state and of the events stream.
#![allow(dead_code)]

pub mod cluster;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use promptgrid_common::JobId;
use promptgrid_common::spec::SyntheticSpec;
use promptgrid_common::wire::{Event, JobState};
use promptgrid_runtime::server::NatsServer;
use promptgrid_runtime::streams::SweepStreams;
use promptgrid_runtime::{NatsConfig, state};

/// Log lines of the runtime under test (`RUST_LOG=promptgrid_runtime=debug` shows every retry).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server with a file store in a temporary folder; fails loudly without the binary.
pub fn server(args: &[&str]) -> (tempfile::TempDir, NatsServer) {
    let dir = tempfile::tempdir().unwrap();
    let s = NatsServer::start(&dir.path().join("store"), args)
        .unwrap_or_else(|e| panic!("{e} (CI must install nats-server)"));
    (dir, s)
}

pub fn synthetic(count: u32, fan_in: u32, duration_ms: (u32, u32)) -> SyntheticSpec {
    SyntheticSpec {
        count,
        fan_in,
        duration_ms,
        fail_probability: 0.0,
        payload_bytes: 0,
        seed: 7,
    }
}

/// A runtime process, SIGKILLed when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for it to exit and returns its stdout, or None after `limit`.
    pub fn wait_output(mut self, limit: Duration) -> Option<(i32, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                let mut out = String::new();
                if let Some(mut s) = self.0.stdout.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut out);
                }
                return Some((status.code().unwrap_or(-1), out));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pg-runtime-test"))
}

pub fn worker_proc(url: &str, sweep: &str, name: &str, step_ms: u64) -> Proc {
    let child = bin()
        .args(["worker", "--nats", url, "--sweep", sweep, "--name", name])
        .args(["--step-ms", &step_ms.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

pub fn coordinator_proc(url: &str, sweep: &str, extra: &[&str]) -> Proc {
    let child = bin()
        .args(["coordinator", "--nats", url, "--sweep", sweep])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

pub async fn streams(url: &str, sweep: &str) -> SweepStreams {
    let client = NatsConfig::new(url).connect().await.unwrap();
    SweepStreams::open(client, sweep).await.unwrap()
}

/// Job states; empty while the sweep has no bucket yet. Rides out a cluster that cannot
/// answer for a moment, as the runtime does.
pub async fn states(url: &str, sweep: &str) -> HashMap<JobId, JobState> {
    promptgrid_runtime::retry::through_outages(
        "read the job states",
        Duration::from_secs(30),
        || try_states(url, sweep),
    )
    .await
    .unwrap()
}

/// [`states`], or the error of a cluster that cannot answer now (a JetStream cluster under
/// load can say "no responders" for a moment), for polls that try again.
pub async fn try_states(
    url: &str,
    sweep: &str,
) -> promptgrid_runtime::Result<HashMap<JobId, JobState>> {
    let client = NatsConfig::new(url).connect().await?;
    // Only a missing sweep reads as no states; an outage is the caller's to ride out.
    let l = match SweepStreams::open(client, sweep).await {
        Err(promptgrid_runtime::Error::NoSweep(_)) => return Ok(HashMap::new()),
        opened => opened?,
    };
    Ok(state::snapshot(&l.js, &l.state)
        .await?
        .into_iter()
        .map(|(k, v)| (k, v.state))
        .collect())
}

pub async fn count_done(url: &str, sweep: &str) -> usize {
    states(url, sweep)
        .await
        .values()
        .filter(|s| matches!(s, JobState::Done { .. }))
        .count()
}

/// Every event in the stream, with its `Nats-Msg-Id`. Read again from the start if the read
/// fails (a cluster may still be placing the reading consumer).
pub async fn events(url: &str, sweep: &str) -> Vec<(String, Event)> {
    let mut tries = 0;
    loop {
        match try_events(url, sweep).await {
            Ok(evs) => return evs,
            Err(e) if tries < 10 => {
                tries += 1;
                eprintln!("reading the events failed ({e}); reading them again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("cannot read the events: {e}"),
        }
    }
}

async fn try_events(url: &str, sweep: &str) -> Result<Vec<(String, Event)>, async_nats::Error> {
    let client = NatsConfig::new(url).connect().await?;
    let js = jetstream::new(client);
    let names = promptgrid_common::names::SweepNames::new(sweep);
    let mut stream = js.get_stream(names.events_stream()).await?;
    let total = stream.info().await?.state.messages;
    let c = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    let mut msgs = c.messages().await?;
    while (out.len() as u64) < total {
        let m = tokio::time::timeout(Duration::from_secs(5), msgs.next())
            .await?
            .ok_or("the events ended early")??;
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&m.payload)?));
    }
    Ok(out)
}

/// Asserts the invariants of a finished sweep: every job done once, exactly one finished
/// event per job, and no event stored twice.
pub async fn assert_exactly_once(url: &str, sweep: &str, jobs: &[JobId]) {
    let st = states(url, sweep).await;
    for id in jobs {
        assert!(
            matches!(st.get(id), Some(JobState::Done { .. })),
            "job {id} is {:?}",
            st.get(id)
        );
    }
    let evs = events(url, sweep).await;
    let mut ids = std::collections::HashSet::new();
    for (id, _) in &evs {
        assert!(ids.insert(id.clone()), "event {id} stored twice");
    }
    let mut finished: HashMap<&JobId, usize> = HashMap::new();
    for (_, e) in &evs {
        if let Event::Finished { job, .. } = e {
            *finished.entry(job).or_default() += 1;
        }
    }
    for id in jobs {
        assert_eq!(
            finished.get(id).copied().unwrap_or(0),
            1,
            "finished events of {id}"
        );
    }
}

/// Polls `f` until it is true, panicking after `limit`.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
