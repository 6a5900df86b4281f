//! Shared by the T5 task tests: a copy of a tiny T5 fixture with a word-level `tokenizer.json`
//! (the fixtures ship without one), two toy tasks and their rows.
#![allow(dead_code)]

use std::path::Path;

use promptgrid_common::catalog::TaskDef;
use promptgrid_ml::T5Backbone;
use serde_json::json;
use tch::Device;

mod vocab;
pub use vocab::*;

/// A copy of a T5 fixture with the test tokenizer, loaded.
pub fn backbone(fixture: &str) -> (tempfile::TempDir, T5Backbone, Vocab) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t5-tiny");
    let vocab = write_model(fixture, &dir);
    let model = T5Backbone::load(&dir, Device::Cpu).unwrap();
    assert_eq!(model.name, "t5-tiny");
    (tmp, model, vocab)
}

pub fn qa_task() -> TaskDef {
    serde_json::from_value(json!({
        "name": "toy_qa", "title": "Toy QA", "type": "qa", "kind": "generation",
        "metric": "squad_f1",
        "template": {"t5": "question: {question}"},
        "columns": {"question": "question", "target": "answer"},
        "splits": {"train": "train", "dev": "dev"}
    }))
    .unwrap()
}

pub fn sentiment_task() -> TaskDef {
    serde_json::from_value(json!({
        "name": "toy_sentiment", "title": "Toy sentiment", "type": "sentiment",
        "kind": "classification", "metric": "accuracy",
        "labels": ["negative", "positive"],
        "verbalizer": {"encoder": ["bad", "good"], "t5": ["bad", "good"]},
        "template": {"encoder": "{sentence} it was {mask} .", "t5": "{sentence}"},
        "columns": {"sentence": "sentence", "label": "label"},
        "splits": {"train": "train", "dev": "dev"}
    }))
    .unwrap()
}

pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

/// Each colour's question and its answers (the first is the training target).
pub fn qa_rows() -> Vec<serde_json::Value> {
    vec![
        json!({"question": "what is red ?", "answer": ["apple", "a red apple"]}),
        json!({"question": "what is blue ?", "answer": ["sky"]}),
        json!({"question": "what is green ?", "answer": ["grass"]}),
        json!({"question": "what is yellow ?", "answer": ["the sun", "banana"]}),
    ]
}

pub fn sentiment_rows() -> Vec<serde_json::Value> {
    vec![
        json!({"sentence": "the movie was good", "label": 1}),
        json!({"sentence": "the film was bad", "label": 0}),
        json!({"sentence": "a nice story", "label": 1}),
        json!({"sentence": "an awful plot", "label": 0}),
        json!({"sentence": "it was great", "label": 1}),
        json!({"sentence": "it was terrible", "label": 0}),
    ]
}
