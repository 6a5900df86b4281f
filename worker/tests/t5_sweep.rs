//! A T5 sweep through the worker's executor, as `promptgrid run` runs it (a private
//! `nats-server`, the coordinator, one local worker): train, zero-shot transfer (the random
//! prompt included), TPT and activations jobs on a tiny T5, for a generation task and a
//! classification task. Needs `nats-server` on the PATH (scripts/env.sh puts the venv's there).

#[path = "../../ml/tests/t5util/mod.rs"]
mod t5util;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use promptgrid_common::wire::{Event, JobOutput};
use promptgrid_common::{JobGraph, Sweep};
use promptgrid_runtime::events::BoxFuture;
use promptgrid_runtime::{Ack, CoordinatorConfig, NatsConfig, Sink, embedded};
use promptgrid_worker::exec::{Device, MlExecutor, Roots};

use t5util::{qa_rows, sentiment_rows, write_jsonl, write_model};

const QA: &str = r#"
name = "toy_qa"
title = "Toy QA"
type = "qa"
kind = "generation"
metric = "squad_f1"

[template]
t5 = "question: {question}"

[columns]
question = "question"
target = "answer"

[splits]
train = "train"
dev = "dev"
"#;

const SENTIMENT: &str = r#"
name = "toy_sentiment"
title = "Toy sentiment"
type = "sentiment"
kind = "classification"
metric = "accuracy"
labels = ["negative", "positive"]

[verbalizer]
encoder = ["bad", "good"]
t5 = ["bad", "good"]

[template]
encoder = "{sentence} it was {mask} ."
t5 = "{sentence}"

[columns]
sentence = "sentence"
label = "label"

[splits]
train = "train"
dev = "dev"
"#;

const SWEEP: &str = r#"
[sweep]
name = "t5-toy"
catalog = "tasks"

[prompt]
length = 4
init = "random"
learning_rate = 0.3
batch_size = 4
max_text_tokens = 32
max_steps = 20
eval_every = 10
checkpoint_every = 10
seeds = [1]

[[model]]
name = "t5-tiny"
arch = "t5-v1_1"

[[task]]
name = "toy_qa"
[[task]]
name = "toy_sentiment"

[studies.cross_task]
split = "test"

[studies.tpt]
pairs = "all"

[studies.indicators]
list = ["c_mean", "on"]
on_window = 1
"#;

/// Keeps every finished and failed event.
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn accept(
        &mut self,
        _seq: u64,
        event: Event,
        ack: Ack,
    ) -> BoxFuture<'_, promptgrid_runtime::Result<()>> {
        let events = self.0.clone();
        Box::pin(async move {
            if matches!(event, Event::Finished { .. } | Event::Failed { .. }) {
                events.lock().unwrap().push(event);
            }
            ack.ack().await
        })
    }
}

#[test]
fn a_t5_sweep_runs_train_transfer_tpt_and_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_model("t5-v1_1", &root.join("models/t5-tiny"));
    for (task, rows) in [("toy_qa", qa_rows()), ("toy_sentiment", sentiment_rows())] {
        let dir = root.join("data").join(task);
        std::fs::create_dir_all(&dir).unwrap();
        write_jsonl(&dir.join("train.jsonl"), &rows);
        write_jsonl(&dir.join("dev.jsonl"), &rows);
    }
    std::fs::create_dir_all(root.join("sweep/tasks")).unwrap();
    std::fs::write(root.join("sweep/tasks/toy_qa.toml"), QA).unwrap();
    std::fs::write(root.join("sweep/tasks/toy_sentiment.toml"), SENTIMENT).unwrap();
    std::fs::write(root.join("sweep/t5.toml"), SWEEP).unwrap();
    let sweep = Sweep::load(&root.join("sweep/t5.toml")).unwrap();
    let roots = Roots {
        models: root.join("models"),
        data: root.join("data"),
    };

    let events = Arc::new(Mutex::new(Vec::new()));
    let mut config =
        CoordinatorConfig::new(NatsConfig::default(), &sweep.name, JobGraph::build(&sweep));
    config.sweep_spec = Some(sweep.clone());
    config.sink = Some(Box::new(Collect(events.clone())));
    config.fail_fast = true;
    config.progress = false;
    // The executor runs its ML work under `block_in_place`, which needs worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime
        .block_on(embedded::run(config, &root.join("results"), 1, |_| {
            MlExecutor::with_sweep(roots.clone(), Device::Cpu, sweep.clone())
        }))
        .unwrap();

    let events = events.lock().unwrap();
    let failures: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { key, failure, .. } => Some(format!("{key}: {}", failure.reason)),
            _ => None,
        })
        .collect();
    assert!(outcome.complete(), "{outcome:?}\n{failures:#?}");
    let finished: HashMap<&str, &JobOutput> = events
        .iter()
        .filter_map(|e| match e {
            Event::Finished { key, output, .. } => Some((key.as_str(), output)),
            _ => None,
        })
        .collect();
    // Every job reports what ran it, for the `jobs` table's provenance columns.
    for (key, output) in &finished {
        let p = output.provenance.as_ref();
        let p = p.unwrap_or_else(|| panic!("{key}: no provenance"));
        assert_eq!(
            (p.device.as_str(), p.precision.as_str()),
            ("cpu", "fp32"),
            "{key}"
        );
        assert_eq!(p.version, env!("CARGO_PKG_VERSION"), "{key}");
        assert!(p.threads >= 1 && !p.torch.is_empty(), "{key}: {p:?}");
    }

    let eval = |key: &str| {
        let output = finished
            .get(key)
            .unwrap_or_else(|| panic!("{key} did not finish: {:?}", finished.keys()));
        assert_eq!(output.evals.len(), 1, "{key}");
        output.evals[0].clone()
    };
    let qa = eval("train/toy_qa/t5-tiny/s1");
    assert_eq!(
        (qa.metric.as_str(), qa.n, qa.split.as_str()),
        ("squad_f1", 4, "dev")
    );
    assert!((0.0..=1.0).contains(&qa.value), "{qa:?}");
    let sentiment = eval("train/toy_sentiment/t5-tiny/s1");
    assert_eq!((sentiment.metric.as_str(), sentiment.n), ("accuracy", 6));
    assert!((0.0..=1.0).contains(&sentiment.value), "{sentiment:?}");

    // Zero-shot transfer across task kinds, and the random prompt as a source.
    for key in [
        "transfer/toy_qa->toy_sentiment/t5-tiny/s1",
        "transfer/toy_sentiment->toy_qa/t5-tiny/s1",
        "transfer/random->toy_qa/t5-tiny/s1",
        "transfer/random->toy_sentiment/t5-tiny/s1",
    ] {
        let row = eval(key);
        assert!((0.0..=1.0).contains(&row.value), "{key}: {row:?}");
    }
    for key in [
        "tpt/toy_qa->toy_sentiment/t5-tiny/s1",
        "tpt/toy_sentiment->toy_qa/t5-tiny/s1",
    ] {
        assert_eq!(finished[key].artifacts.len(), 1, "{key}");
        eval(key);
    }
    let masks = finished
        .iter()
        .filter(|(k, _)| k.starts_with("activations/"))
        .count();
    assert_eq!(masks, 3, "{:?}", finished.keys());
}
