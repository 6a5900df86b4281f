//! Embedded mode (`promptgrid run`): a private `nats-server -js` on a free port with its store
//! under `<results>/<sweep>/.nats`, the coordinator, and N workers in this process. The same
//! code path as a cluster; run it again and it resumes from the store.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::connect::NatsConfig;
use crate::error::{Error, Result};
use crate::events::{FileDoneSink, FileDoneSource};
use crate::jobloop::{self, Executor, WorkerConfig};
use crate::scheduler::{self, CoordinatorConfig, Outcome};
use crate::server::NatsServer;
use crate::shutdown_on_signals;

/// Runs a whole sweep locally. `executor(i)` builds worker i's executor. Without a sink or
/// done source in `config`, finished job ids go to `<results>/<sweep>/done-jobs.txt`, from
/// which a lost store is rebuilt.
pub async fn run<E, F>(
    mut config: CoordinatorConfig,
    results: &Path,
    workers: usize,
    executor: F,
) -> Result<Outcome>
where
    E: Executor,
    F: Fn(usize) -> E,
{
    let dir = results.join(&config.sweep);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let store = dir.join(".nats");
    let mut server = tokio::task::block_in_place(|| NatsServer::start(&store, &[]))?;
    config.nats = NatsConfig::new(server.url());
    let done_file = dir.join("done-jobs.txt");
    if config.sink.is_none() {
        config.sink = Some(Box::new(FileDoneSink {
            path: done_file.clone(),
        }));
    }
    if config.done_source.is_none() {
        config.done_source = Some(Box::new(FileDoneSource { path: done_file }));
    }
    let signals = config.shutdown.clone().unwrap_or_else(shutdown_on_signals);
    config.shutdown = Some(signals.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    // Workers stop on Ctrl-C too (checkpointing their jobs), or when the coordinator is done.
    let forward = {
        let stop_tx = stop_tx.clone();
        let mut signals = signals.clone();
        tokio::spawn(async move {
            if signals.wait_for(|s| *s).await.is_ok() {
                let _ = stop_tx.send(true);
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..workers {
        let mut wc = WorkerConfig::new(config.nats.clone(), Some(config.sweep.clone()));
        wc.name = format!("local-{i}");
        wc.shutdown = Some(stop_rx.clone());
        handles.push(tokio::spawn(jobloop::run(wc, executor(i))));
    }
    let outcome = scheduler::run(config).await;
    let _ = stop_tx.send(true);
    for h in handles {
        match tokio::time::timeout(Duration::from_secs(30), h).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "worker failed"),
            _ => tracing::warn!("a worker did not stop in time"),
        }
    }
    forward.abort();
    tokio::task::block_in_place(|| server.stop());
    outcome
}
