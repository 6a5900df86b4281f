//! Shared by the T5 task tests: a copy of a tiny T5 fixture with a word-level `tokenizer.json`
//! (the fixtures ship without one), two toy tasks and their rows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use promptgrid_common::catalog::TaskDef;
use promptgrid_worker::ml::T5Backbone;
use serde_json::json;
use tch::Device;

pub const WORDS: &[&str] = &[
    "question", "context", ":", "?", ".", "what", "is", "the", "a", "red", "blue", "green",
    "yellow", "apple", "sky", "grass", "sun", "banana", "good", "bad", "nice", "awful", "movie",
    "film", "was", "it", "great", "terrible", "plot", "story",
];

/// The test vocabulary around a fixture's end-of-sequence id: `<pad>` 0, `<unk>` 2, `</s>` the
/// config's `eos_token_id`, the words in order on the other ids.
#[derive(Clone, Copy)]
pub struct Vocab {
    pub eos: i64,
}

impl Vocab {
    fn entries(self) -> Vec<(String, i64)> {
        let mut out = vec![
            ("<pad>".to_string(), 0),
            ("<unk>".to_string(), 2),
            ("</s>".to_string(), self.eos),
        ];
        let free = (1..96).filter(|i| *i != 2 && *i != self.eos);
        out.extend(WORDS.iter().map(|w| w.to_string()).zip(free));
        out
    }

    pub fn id(self, word: &str) -> i64 {
        self.entries()
            .into_iter()
            .find(|(w, _)| w == word)
            .map(|(_, i)| i)
            .unwrap_or_else(|| panic!("{word} is not in the test vocabulary"))
    }

    /// Ids of space-separated words, then the end.
    pub fn encode(self, text: &str) -> Vec<i64> {
        let mut ids: Vec<i64> = text.split_whitespace().map(|w| self.id(w)).collect();
        ids.push(self.eos);
        ids
    }

    fn tokenizer_json(self) -> serde_json::Value {
        let special = |content: &str, id: i64| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        };
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .entries()
            .into_iter()
            .map(|(w, i)| (w, json!(i)))
            .collect();
        let mut added = vec![
            special("<pad>", 0),
            special("<unk>", 2),
            special("</s>", self.eos),
        ];
        added.sort_by_key(|t| t["id"].as_i64());
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        })
    }
}

/// Copies T5 fixture `fixture` (tests/data) into the new folder `dir`, with the test tokenizer.
pub fn write_model(fixture: &str, dir: &Path) -> Vocab {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(fixture);
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let vocab = Vocab {
        eos: config["eos_token_id"].as_i64().unwrap(),
    };
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&vocab.tokenizer_json()).unwrap(),
    )
    .unwrap();
    vocab
}

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
