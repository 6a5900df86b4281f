//! Traces and logs for a cluster: one job is one trace across processes, and every
//! `--log-format json` line carries the fields of the spans it was emitted in.
//!
//! Spans (all at `INFO`):
//! * coordinator: `plan` (set-up, manifest, restore), `reconcile` (replay of the state bucket
//!   until caught up), and one root `publish` per job message, whose W3C `traceparent` goes
//!   into the message's NATS headers;
//! * worker: `job` (the child of that `publish`, whatever process published it), `execute`
//!   (the executor), `checkpoint`, `commit_state`; inside an executor, [`Phase`] spans
//!   (`load_model`, `train`, `evaluate`, `checkpoint`) through [`crate::jobloop::JobContext::phase`];
//! * sink: `sink` per event (the child of the span that published the event, so a job's events
//!   land in its trace) and `commit` per Parquet commit.
//!
//! [`init`] installs the process's subscriber: text or flat JSON logs on stderr filtered by
//! `RUST_LOG`, plus OTLP/HTTP span export when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Without it there is no exporter at all, so
//! nothing tries to connect, and spans carry no trace ids to propagate.

use std::fmt;

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::{Empty, Field, Visit};
use tracing::{Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::{Error, Result};

/// The target of the one-line-per-job events ("job started", "job finished", "job failed"):
/// a worker logs them at `INFO`; embedded mode turns them off by default so that they do not
/// scroll under its progress bar.
pub const JOB_LOG: &str = "promptgrid::job";

/// Targets whose spans and events are exported: promptgrid's own, never the NATS client's.
const OWN_TARGETS: [&str; 6] = [
    "promptgrid",
    "promptgrid_runtime",
    "promptgrid_worker",
    "promptgrid_ml",
    "promptgrid_results",
    "promptgrid_common",
];

// ---------------------------------------------------------------------------------------------
// Trace context in NATS headers

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes `span`'s trace context into `headers` (W3C `traceparent`, and `tracestate` when
/// there is one). Writes nothing when spans are not exported: the span has no trace id then.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// Makes `span` the child of the trace context that `headers` carry, if any. Call it before
/// the span is first entered.
pub fn adopt_parent(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else { return };
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
        let _ = span.set_parent(cx);
    }
}

// ---------------------------------------------------------------------------------------------
// Phases of a job, for executors

/// A phase of a job inside its executor; each is a span of its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading a model onto the device (fields: `model`).
    LoadModel,
    /// Prompt tuning or projector training (fields: `task`, `steps`).
    Train,
    /// Scoring on a split (fields: `task`, `split`, `examples`).
    Evaluate,
    /// Saving or loading a checkpoint (fields: `op`, `bytes`).
    Checkpoint,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::LoadModel => "load_model",
            Phase::Train => "train",
            Phase::Evaluate => "evaluate",
            Phase::Checkpoint => "checkpoint",
        }
    }

    /// The phase's span under `parent`. Its fields start empty; fill them with
    /// `span.record("task", name)`.
    pub fn span_in(self, parent: &tracing::Span) -> tracing::Span {
        // Span names must be literals: one macro call per phase.
        match self {
            Phase::LoadModel => tracing::info_span!(parent: parent, "load_model", model = Empty),
            Phase::Train => {
                tracing::info_span!(parent: parent, "train", task = Empty, steps = Empty)
            }
            Phase::Evaluate => tracing::info_span!(
                parent: parent,
                "evaluate",
                task = Empty,
                split = Empty,
                examples = Empty
            ),
            Phase::Checkpoint => {
                tracing::info_span!(parent: parent, "checkpoint", op = Empty, bytes = Empty)
            }
        }
    }

    /// The phase's span under the current span (for code that has no `JobContext` at hand;
    /// inside a job the current span is the job's `execute`).
    pub fn span(self) -> tracing::Span {
        self.span_in(&tracing::Span::current())
    }
}

// ---------------------------------------------------------------------------------------------
// The subscriber

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One flat JSON object per line ([`FlatJson`]).
    Json,
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub format: LogFormat,
    /// The log filter when `RUST_LOG` is unset.
    pub default_filter: String,
    /// `service.name` of exported spans, unless `OTEL_SERVICE_NAME` is set.
    pub service: String,
}

/// Flushes and stops span export when dropped (drop it outside any async runtime: the OTLP
/// client blocks).
#[must_use = "dropping it stops span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: span export did not flush: {e}");
        }
    }
}

/// Installs the global subscriber: logs on stderr, and span export over OTLP/HTTP when an
/// endpoint is configured. Call it once, before starting an async runtime.
pub fn init(opts: &LogOptions) -> Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&opts.default_filter));
    let logs = match opts.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours for a terminal only, not for journald or a log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => json_layer(std::io::stderr).with_filter(filter).boxed(),
    };
    let provider = otlp_provider(&opts.service)?;
    let spans = provider
        .as_ref()
        .map(|p| otel_layer(p.tracer("promptgrid")));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| Error::Telemetry(format!("cannot install the log subscriber: {e}")))?;
    Ok(Telemetry { provider })
}

fn env_set(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| !v.trim().is_empty())
}

/// A batch exporter over OTLP/HTTP (protobuf) when an endpoint is configured. The exporter
/// reads the standard variables itself (endpoint, headers, timeout).
fn otlp_provider(service: &str) -> Result<Option<SdkTracerProvider>> {
    if !env_set("OTEL_EXPORTER_OTLP_ENDPOINT") && !env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| Error::Telemetry(format!("cannot set up the OTLP exporter: {e}")))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(service.to_string());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The layer that turns promptgrid's spans into OpenTelemetry spans of `tracer` (the
/// production subscriber's, and the tests' with an in-memory exporter).
pub fn otel_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let targets = OWN_TARGETS.iter().fold(Targets::new(), |t, target| {
        t.with_target(*target, Level::INFO)
    });
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(targets)
}

/// The JSON log layer writing to `writer`: [`FlatJson`] lines, span fields kept as JSON.
pub fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(writer)
}

/// One JSON object per line: `timestamp`, `level`, `target`, the fields of every span the event
/// is in (outermost first, so an inner span's field wins), `spans` (their names, outermost
/// first, joined by `:`), then the event's own fields, `message` included. A line emitted while
/// a job runs therefore has `sweep`, `job`, `attempt` and `worker` at the top level.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = serde_json::Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        let meta = event.metadata();
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(span.name());
                let extensions = span.extensions();
                // JsonFields stores a span's fields as one JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(serde_json::Value::Object(map)) =
                        serde_json::from_str::<serde_json::Value>(fields.fields.as_str())
                {
                    line.extend(map);
                }
            }
            line.insert("spans".into(), names.join(":").into());
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
