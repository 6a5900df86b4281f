//! The word-level test vocabulary and `tokenizer.json` of the tiny T5 fixtures, without a tensor
//! library, so that the CLI tests of the root crate can use it too (`#[path]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::json;

pub const WORDS: &[&str] = &[
    "question", "context", ":", "?", ".", "what", "is", "the", "a", "red", "blue", "green",
    "yellow", "apple", "sky", "grass", "sun", "banana", "good", "bad", "nice", "awful", "movie",
    "film", "was", "it", "great", "terrible", "plot", "story",
];

/// The test vocabulary around a fixture's end-of-sequence id: `<pad>` 0, `<unk>` 2, `</s>` the
/// config's `eos_token_id`, `<extra_id_0>` the last id ([`EXTRA_ID_0`], where T5 keeps its
/// sentinels), the words in order on the other ids.
#[derive(Clone, Copy)]
pub struct Vocab {
    pub eos: i64,
}

/// The id of `<extra_id_0>`, the official T5 activation probe, in the test vocabulary (the
/// fixtures' vocab_size is 96); scripts/make-activation-fixtures.py uses the same id.
pub const EXTRA_ID_0: i64 = 95;

impl Vocab {
    fn entries(self) -> Vec<(String, i64)> {
        let mut out = vec![
            ("<pad>".to_string(), 0),
            ("<unk>".to_string(), 2),
            ("</s>".to_string(), self.eos),
            ("<extra_id_0>".to_string(), EXTRA_ID_0),
        ];
        let free = (1..EXTRA_ID_0).filter(|i| *i != 2 && *i != self.eos);
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

    /// Ids of space-separated words (what T5 data holds: no end unless the template writes it).
    pub fn ids(self, text: &str) -> Vec<i64> {
        text.split_whitespace().map(|w| self.id(w)).collect()
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
            special("<extra_id_0>", EXTRA_ID_0),
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
    let src = fixture_dir(fixture);
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

/// The folder of T5 fixture `fixture` (ml/tests/data), from the tests of any crate.
pub fn fixture_dir(fixture: &str) -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The workspace root holds `ml/`; a member crate's folder sits beside it.
    let workspace = if crate_dir.join("ml").is_dir() {
        crate_dir.as_path()
    } else {
        crate_dir.parent().unwrap()
    };
    workspace.join("ml/tests/data").join(fixture)
}
