//! Spans across processes, captured with the OpenTelemetry SDK's in-memory exporter: the
//! coordinator's `publish` span of a job travels as a W3C `traceparent` in the job message's
//! headers through a real nats-server, the worker's `job` span continues that trace (its parent
//! is remote: it came from the headers, nothing else links them), and the sink's spans join it
//! through the events' headers. One job, one trace.

mod util;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use promptgrid_common::names::SweepNames;
use promptgrid_runtime::jobloop::{self, Synthetic, WorkerConfig, synthetic_graph};
use promptgrid_runtime::parquet::ParquetSink;
use promptgrid_runtime::{CoordinatorConfig, NatsConfig, telemetry};
use tracing_subscriber::layer::SubscriberExt;
use util::*;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_from_the_coordinator_through_nats_to_the_worker_and_the_sink() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // The production layer (promptgrid's targets, INFO) over the in-memory exporter.
    let subscriber =
        tracing_subscriber::registry().with(telemetry::otel_layer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (_d, srv) = server(&[]);
    let url = srv.url();
    let sweep = "otel";
    let names = SweepNames::new(sweep);
    // The job messages as the server delivers them, headers included.
    let client = NatsConfig::new(&url).connect().await.unwrap();
    let mut delivered = client.subscribe(names.jobs_wildcard()).await.unwrap();
    client.flush().await.unwrap();

    let results = tempfile::tempdir().unwrap();
    let graph = synthetic_graph(sweep, synthetic(3, 0, (250, 250)));
    let mut cfg = CoordinatorConfig::new(NatsConfig::new(&url), sweep, graph.clone());
    cfg.progress = false;
    cfg.sink = Some(Box::new(
        ParquetSink::open(results.path().join(sweep), Default::default()).unwrap(),
    ));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut wc = WorkerConfig::new(NatsConfig::new(&url), Some(sweep.into()));
    wc.name = "w-otel".into();
    wc.shutdown = Some(rx);
    let worker = tokio::spawn(jobloop::run(
        wc,
        Synthetic {
            step: Duration::from_millis(100),
        },
    ));
    let out = tokio::time::timeout(Duration::from_secs(60), promptgrid_runtime::run(cfg))
        .await
        .expect("the sweep finishes")
        .unwrap();
    assert!(out.complete(), "{out:?}");
    stop.send(true).unwrap();
    assert_eq!(worker.await.unwrap().unwrap().done, 3);

    let mut traceparents = HashMap::new();
    while traceparents.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), delivered.next())
            .await
            .expect("three job messages")
            .unwrap();
        let id = names.job_id_of_subject(&m.subject).unwrap();
        let tp = m
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.to_string())
            .unwrap_or_else(|| panic!("job message {id} has no traceparent"));
        traceparents.insert(id, tp);
    }

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);

    // The coordinator's own phases are roots of their own traces.
    let plans: Vec<&SpanData> = named("plan").collect();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].parent_span_id, SpanId::INVALID);
    assert_eq!(attr(plans[0], "sweep").as_deref(), Some("otel"));
    assert_eq!(attr(plans[0], "jobs").as_deref(), Some("3"));
    assert_eq!(attr(plans[0], "added").as_deref(), Some("3"));
    let reconciles: Vec<&SpanData> = named("reconcile").collect();
    assert_eq!(reconciles.len(), 1);
    // A new sweep: nothing to replay, all three jobs ready at once.
    assert_eq!(attr(reconciles[0], "states").as_deref(), Some("0"));
    assert_eq!(attr(reconciles[0], "ready").as_deref(), Some("3"));

    for job in graph.jobs() {
        let key = job.key.as_str();
        let of_job = |name: &'static str| {
            named(name)
                .filter(|s| attr(s, "job").as_deref() == Some(key))
                .collect::<Vec<_>>()
        };
        let publish = of_job("publish");
        assert_eq!(publish.len(), 1, "publish spans of {key}");
        let publish = publish[0];
        assert_eq!(
            publish.parent_span_id,
            SpanId::INVALID,
            "publish starts the trace"
        );
        let trace = publish.span_context.trace_id();
        assert_ne!(trace, plans[0].span_context.trace_id());
        // What travelled in the headers is exactly the publish span's context.
        assert_eq!(
            traceparents[&job.id],
            format!("00-{trace}-{}-01", publish.span_context.span_id())
        );

        let worked = of_job("job");
        assert_eq!(worked.len(), 1, "job spans of {key}");
        let worked = worked[0];
        assert_eq!(worked.span_context.trace_id(), trace);
        assert_eq!(worked.parent_span_id, publish.span_context.span_id());
        assert!(
            worked.parent_span_is_remote,
            "the parent came from the headers"
        );
        for (field, value) in [
            ("sweep", "otel"),
            ("attempt", "1"),
            ("worker", "w-otel"),
            ("kind", "synthetic"),
        ] {
            assert_eq!(attr(worked, field).as_deref(), Some(value), "{field}");
        }

        let in_trace = |name: &'static str| {
            named(name)
                .filter(|s| s.span_context.trace_id() == trace)
                .collect::<Vec<_>>()
        };
        let execute = in_trace("execute");
        assert_eq!(execute.len(), 1);
        assert_eq!(execute[0].parent_span_id, worked.span_context.span_id());
        // 250 ms in steps of 100 ms: a look for a checkpoint, then one saved per step.
        let checkpoints = in_trace("checkpoint");
        let mut ops: Vec<String> = checkpoints
            .iter()
            .map(|s| attr(s, "op").unwrap_or_default())
            .collect();
        ops.sort();
        assert_eq!(ops, ["load", "save", "save", "save"]);
        for c in &checkpoints {
            assert_eq!(c.parent_span_id, execute[0].span_context.span_id());
        }
        let commit_state = in_trace("commit_state");
        assert_eq!(commit_state.len(), 1);
        assert_eq!(
            commit_state[0].parent_span_id,
            worked.span_context.span_id()
        );
        assert_eq!(attr(commit_state[0], "outcome").as_deref(), Some("done"));

        // The sink handled the job's events in its trace: `started` under the job span,
        // `finished` under commit_state, and the Parquet commit the finish triggers below it.
        let sinks = in_trace("sink");
        let sink_of = |event: &str| {
            let found: Vec<&&SpanData> = sinks
                .iter()
                .filter(|s| attr(s, "event").as_deref() == Some(event))
                .collect();
            assert_eq!(found.len(), 1, "sink spans of {key}'s {event} event");
            *found[0]
        };
        let started = sink_of("started");
        assert!(started.parent_span_is_remote);
        assert_eq!(started.parent_span_id, worked.span_context.span_id());
        let finished = sink_of("finished");
        assert_eq!(
            finished.parent_span_id,
            commit_state[0].span_context.span_id()
        );
        let commits = in_trace("commit");
        assert_eq!(commits.len(), 1, "Parquet commits in {key}'s trace");
        assert_eq!(commits[0].parent_span_id, finished.span_context.span_id());
    }
}
