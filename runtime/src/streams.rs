//! The JetStream objects of one sweep (docs/design.md, "Architecture"): the work-queue stream of jobs with one
//! durable pull consumer per model, the events stream, the state bucket and the artifact store.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, consumer, kv, object_store, stream};
use futures::TryStreamExt;
use promptgrid_common::names::SweepNames;

use crate::error::{Error, Result};

/// Run-time knobs of the streams; both sides must agree on them only through the server.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The lease of a job: a worker that sends no progress ack for this long is presumed lost
    /// and its job is redelivered.
    pub lease: Duration,
    /// How long a `Nats-Msg-Id` is remembered: re-publishing a job or an event within it is a
    /// no-op, which is what makes coordinator restarts and retried publishes exact.
    pub dedup_window: Duration,
    /// Copies of every stream, bucket and store kept by a JetStream cluster (1, 3 or 5); fixed
    /// when the sweep is created.
    pub replicas: usize,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            lease: Duration::from_secs(30),
            dedup_window: Duration::from_secs(6 * 3600),
            replicas: 1,
        }
    }
}

/// Consumers the artifact store's stream allows. Every object read is an ephemeral ordered
/// consumer that the server keeps for 30 s after the read, so a sweep running tens of jobs a
/// second holds thousands at once; nats-server 2.15 caps a stream at 1,000 unless the stream
/// sets its own limit (and no longer accepts -1 for unlimited), and past the cap every read
/// fails with "maximum consumers limit reached".
pub const ARTIFACT_READERS: i32 = 1_000_000;

/// Gives the artifact store's stream an explicit consumer limit of [`ARTIFACT_READERS`].
async fn allow_artifact_readers(js: &jetstream::Context, bucket: &str) -> Result<()> {
    let mut stream = js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(Error::nats)?;
    let mut config = stream.info().await.map_err(Error::nats)?.config.clone();
    if config.max_consumers < ARTIFACT_READERS {
        config.max_consumers = ARTIFACT_READERS;
        js.update_stream(config).await.map_err(Error::nats)?;
    }
    Ok(())
}

/// The names of the JetStream streams behind a sweep's queue, events, bucket and store.
fn stream_names(names: &SweepNames) -> [String; 4] {
    [
        names.jobs_stream(),
        names.events_stream(),
        format!("KV_{}", names.state_bucket()),
        format!("OBJ_{}", names.artifact_bucket()),
    ]
}

/// Replicas of the sweep's streams that exist, by stream name.
pub async fn existing_replicas(
    js: &jetstream::Context,
    names: &SweepNames,
) -> Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    for name in stream_names(names) {
        match js.get_stream(&name).await {
            Ok(stream) => out.push((name, stream.cached_info().config.num_replicas.max(1))),
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {}
            Err(e) => return Err(Error::nats(e)),
        }
    }
    Ok(out)
}

/// Refuses `asked` replicas for a sweep whose streams were created with another count.
async fn check_replicas(js: &jetstream::Context, names: &SweepNames, asked: usize) -> Result<()> {
    if let Some((_, existing)) = existing_replicas(js, names)
        .await?
        .into_iter()
        .find(|(_, n)| *n != asked)
    {
        return Err(Error::Replicas {
            sweep: names.sweep.clone(),
            existing,
            asked,
        });
    }
    // A server that runs alone would keep one copy without a word.
    if asked > 1 && js.client().server_info().cluster.is_none() {
        return Err(Error::Config(format!(
            "--replicas {asked} needs a JetStream cluster of at least {asked} servers; this \
             NATS server runs alone (use --replicas 1, or list a cluster's servers in --nats)"
        )));
    }
    Ok(())
}

/// A stream that cannot be created: with more than one replica, say what that needs.
fn create_error(e: impl std::fmt::Display, replicas: usize) -> Error {
    match Error::nats(e) {
        Error::Nats(text) if replicas > 1 => Error::Nats(format!(
            "{text} (--replicas {replicas} needs a JetStream cluster of at least {replicas} \
             servers)"
        )),
        other => other,
    }
}

/// Handles on a sweep's streams and buckets.
#[derive(Clone)]
pub struct SweepStreams {
    pub names: SweepNames,
    pub js: jetstream::Context,
    pub jobs: stream::Stream,
    pub state: kv::Store,
    pub artifacts: object_store::ObjectStore,
}

impl SweepStreams {
    /// Creates what is missing and returns handles on all of it (the coordinator's side).
    pub async fn setup(
        client: async_nats::Client,
        sweep: &str,
        opts: &StreamOptions,
    ) -> Result<SweepStreams> {
        let names = SweepNames::new(sweep);
        let js = jetstream::new(client);
        // Before anything is created: a mismatch must leave the server as it was.
        check_replicas(&js, &names, opts.replicas).await?;
        let replicas = opts.replicas;
        let jobs = js
            .get_or_create_stream(stream::Config {
                name: names.jobs_stream(),
                subjects: vec![names.jobs_wildcard()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: opts.dedup_window,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| create_error(e, replicas))?;
        js.get_or_create_stream(stream::Config {
            name: names.events_stream(),
            subjects: vec![names.events_wildcard()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            duplicate_window: opts.dedup_window,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| create_error(e, replicas))?;
        let state = js
            .create_key_value(kv::Config {
                bucket: names.state_bucket(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| create_error(e, replicas))?;
        let artifacts = match js.get_object_store(names.artifact_bucket()).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: names.artifact_bucket(),
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| create_error(e, replicas))?,
        };
        allow_artifact_readers(&js, &names.artifact_bucket()).await?;
        Ok(SweepStreams {
            names,
            js,
            jobs,
            state,
            artifacts,
        })
    }

    /// Handles on an existing sweep (the worker's and the status query's side).
    pub async fn open(client: async_nats::Client, sweep: &str) -> Result<SweepStreams> {
        let names = SweepNames::new(sweep);
        let js = jetstream::new(client);
        // An outage is not a missing sweep: the caller retries the one, skips the other.
        let missing = |e: &dyn std::fmt::Display| match Error::nats(e) {
            e @ Error::Unavailable(_) => e,
            _ => Error::NoSweep(sweep.to_string()),
        };
        let jobs = js
            .get_stream(names.jobs_stream())
            .await
            .map_err(|e| missing(&e))?;
        let state = js
            .get_key_value(names.state_bucket())
            .await
            .map_err(|e| missing(&e))?;
        let artifacts = js
            .get_object_store(names.artifact_bucket())
            .await
            .map_err(|e| missing(&e))?;
        Ok(SweepStreams {
            names,
            js,
            jobs,
            state,
            artifacts,
        })
    }

    /// The durable pull consumer of one model's jobs, created if missing.
    pub async fn model_consumer(
        &self,
        model_token: &str,
        lease: Duration,
    ) -> Result<consumer::Consumer<consumer::pull::Config>> {
        let name = self.names.model_consumer(model_token);
        self.jobs
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.names.model_filter(model_token),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: lease,
                    // Lost workers are counted in the job state, where a graceful hand-back
                    // is told apart from a crash; the server redelivers without limit.
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(Error::nats)
    }

    /// Names of the model consumers that exist now (`jobs-<model token>`).
    pub async fn model_tokens(&self) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .jobs
            .consumer_names()
            .try_collect()
            .await
            .map_err(Error::nats)?;
        Ok(names
            .into_iter()
            .filter_map(|n| self.names.model_of_consumer(&n).map(str::to_string))
            .collect())
    }

    /// Model token -> pull requests waiting plus messages delivered and unacknowledged on its
    /// consumer: 0 means no worker serves that model now. One listing (256 consumers a page),
    /// not one request per model.
    pub async fn model_demand(&self) -> Result<BTreeMap<String, usize>> {
        let infos: Vec<consumer::Info> = self
            .jobs
            .consumers()
            .try_collect()
            .await
            .map_err(Error::nats)?;
        Ok(infos
            .into_iter()
            .filter_map(|i| {
                let token = self.names.model_of_consumer(&i.name)?.to_string();
                Some((token, i.num_waiting + i.num_ack_pending))
            })
            .collect())
    }
}

/// Sweeps with a jobs stream on this server (for workers started without a sweep).
pub async fn sweeps_on_server(js: &jetstream::Context) -> Result<Vec<String>> {
    let names: Vec<String> = js.stream_names().try_collect().await.map_err(Error::nats)?;
    Ok(names
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("PG_")?
                .strip_suffix("_JOBS")
                .map(str::to_string)
        })
        .collect())
}
