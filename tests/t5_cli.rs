//! `promptgrid tune`, `eval`, `inspect` and `activations` on T5 v1.0 and v1.1, detected from
//! config.json, on copies of the worker's tiny T5 fixtures with the tests' word-level tokenizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use promptgrid_common::mask::MaskFile;
use serde_json::Value;

#[path = "../ml/tests/t5util/vocab.rs"]
mod t5vocab;

use t5vocab::{Vocab, write_model};

fn promptgrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run promptgrid")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of T5 fixture `fixture` with the test tokenizer, in `dir`/`fixture`.
fn model(dir: &Path, fixture: &str) -> (PathBuf, Vocab) {
    let path = dir.join(fixture);
    let vocab = write_model(fixture, &path);
    (path, vocab)
}

/// A toy sentiment task over the test vocabulary (input ends in `</s>`, as the official SST-2
/// formatter's) in a catalog folder, and its data folder.
fn task(dir: &Path) -> (PathBuf, PathBuf) {
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("toy.toml"),
        r#"name = "toy"
title = "Toy sentiment"
type = "sentiment"
kind = "classification"
metric = "accuracy"
labels = ["negative", "positive"]

[verbalizer]
encoder = ["bad", "good"]
t5 = ["bad", "good"]

[template]
encoder = "{mask} {sentence}"
t5 = "{sentence}</s>"

[columns]
sentence = "sentence"
label = "label"

[splits]
train = "train"
dev = "dev"
"#,
    )
    .unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rows = [
        ("the movie was good", 1),
        ("the film was bad", 0),
        ("a nice story", 1),
        ("an awful plot", 0),
        ("it was great", 1),
        ("it was terrible", 0),
    ];
    let text: Vec<String> = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"sentence": t, "label": l}).to_string())
        .collect();
    for split in ["train", "dev"] {
        std::fs::write(data.join(format!("{split}.jsonl")), text.join("\n")).unwrap();
    }
    (catalog, data)
}

fn inspect(model: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--model", s(model), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&promptgrid(&args))).unwrap()
}

#[test]
fn inspect_reads_the_first_decoding_step_of_both_t5_versions() {
    let tmp = tempfile::tempdir().unwrap();
    for fixture in ["t5-v1_0", "t5-v1_1"] {
        let (dir, v) = model(tmp.path(), fixture);
        let out = inspect(&dir, &["--text", "the movie was good", "--full-logits"]);
        // The same JSON shape as for encoders.
        let keys: Vec<&str> = out
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "full_logits",
                "ids",
                "prompt_tokens",
                "readout_index",
                "tokens",
                "top10"
            ],
            "{fixture}"
        );
        // Text is encoded as T5's tokenizer does: the words, then `</s>`.
        let ids: Vec<i64> = serde_json::from_value(out["ids"].clone()).unwrap();
        assert_eq!(ids, v.encode("the movie was good"), "{fixture}");
        assert_eq!(out["tokens"][4], "</s>");
        assert_eq!(
            (out["readout_index"].as_u64(), out["prompt_tokens"].as_u64()),
            (Some(0), Some(0))
        );
        let logits: Vec<f64> = serde_json::from_value(out["full_logits"].clone()).unwrap();
        assert_eq!(logits.len(), 96, "{fixture}: the decoder's vocabulary");
        // top10 is the best of the full logits, best first.
        let top: Vec<(i64, String, f64)> = serde_json::from_value(out["top10"].clone()).unwrap();
        assert_eq!(top.len(), 10);
        let best = logits.iter().cloned().fold(f64::MIN, f64::max);
        assert!((top[0].2 - best).abs() < 1e-5, "{fixture}");
        assert!(top.windows(2).all(|w| w[0].2 >= w[1].2));
        assert!((logits[top[3].0 as usize] - top[3].2).abs() < 1e-5);

        // --ids gives the same readout as the text they encode; without --full-logits the key
        // is left out, as for encoders.
        let ids_arg = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let again = inspect(&dir, &["--ids", &ids_arg]);
        assert_eq!(again["top10"], out["top10"]);
        assert!(again.get("full_logits").is_none());
    }
}

#[test]
fn tune_eval_and_activations_run_on_t5() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, data) = task(tmp.path());
    for fixture in ["t5-v1_0", "t5-v1_1"] {
        let (dir, _) = model(tmp.path(), fixture);
        let prompt = tmp.path().join(format!("{fixture}.prompt.safetensors"));
        let out = ok(&promptgrid(&[
            "tune",
            "--model",
            s(&dir),
            "--task",
            "toy",
            "--data",
            s(&data),
            "--catalog",
            s(&catalog),
            "--length",
            "8",
            "--init",
            "vocab",
            "--learning-rate",
            "0.3",
            "--batch-size",
            "4",
            "--max-steps",
            "100",
            "--eval-every",
            "50",
            "--out",
            s(&prompt),
        ]));
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["steps"], 100, "{out}");
        assert_eq!(
            (report["metric"].as_str(), report["test_split"].as_str()),
            (Some("accuracy"), Some("dev"))
        );
        let tuned = report["test_score"].as_f64().unwrap();
        assert!(tuned >= 5.0 / 6.0, "{fixture}: {out}");
        assert!(prompt.is_file());

        let scores: Value = serde_json::from_str(&ok(&promptgrid(&[
            "eval",
            "--model",
            s(&dir),
            "--task",
            "toy",
            "--data",
            s(&data),
            "--catalog",
            s(&catalog),
            s(&prompt),
        ])))
        .unwrap();
        let row = &scores[0];
        assert_eq!(
            (row["n"].as_u64(), row["metric"].as_str()),
            (Some(6), Some("accuracy"))
        );
        assert!(
            (row["value"].as_f64().unwrap() - tuned).abs() < 1e-9,
            "{scores}"
        );
        assert_eq!(row["accuracy"], row["value"]);
        assert!(row["macro_f1"].as_f64().is_some());

        // The tuned prompt moves the first-step logits toward the label words.
        let with = inspect(&dir, &["--text", "it was great", "--prompt", s(&prompt)]);
        assert_eq!(with["prompt_tokens"], 8);

        let mask = tmp.path().join(format!("{fixture}.mask.safetensors"));
        let line = ok(&promptgrid(&[
            "activations",
            "--model",
            s(&dir),
            "--prompt",
            s(&prompt),
            "--out",
            s(&mask),
        ]));
        assert!(line.starts_with(&format!("{fixture} / toy: ")), "{line}");
        assert!(MaskFile::load(&mask).unwrap().active() > 0);
    }
}

#[test]
fn a_t5_folder_without_the_probe_token_is_a_clear_activations_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = model(tmp.path(), "t5-v1_1");
    let json = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&json)
        .unwrap()
        .replace("<extra_id_0>", "<other>");
    std::fs::write(&json, text).unwrap();
    let prompt = tmp.path().join("p.safetensors");
    let (catalog, data) = task(tmp.path());
    ok(&promptgrid(&[
        "tune",
        "--model",
        s(&dir),
        "--task",
        "toy",
        "--data",
        s(&data),
        "--catalog",
        s(&catalog),
        "--length",
        "2",
        "--max-steps",
        "1",
        "--out",
        s(&prompt),
    ]));
    let o = promptgrid(&[
        "activations",
        "--model",
        s(&dir),
        "--prompt",
        s(&prompt),
        "--out",
        s(&tmp.path().join("m.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("has no <extra_id_0>"), "{err}");
}

/// The prompt `tune --max-steps 0` writes: the initial prompt, as a flat list.
fn initial_prompt(dir: &Path, data: &Path, catalog: &Path, task: &str, seed: &str) -> Vec<f32> {
    let out = dir.join(format!("{task}-{seed}.safetensors"));
    ok(&promptgrid(&[
        "tune",
        "--model",
        s(&dir.join("t5-v1_0")),
        "--task",
        task,
        "--data",
        s(data),
        "--catalog",
        s(catalog),
        "--length",
        "20",
        "--max-steps",
        "0",
        "--seed",
        seed,
        "--out",
        s(&out),
    ]));
    let prompt = tch::Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "prompt")
        .unwrap()
        .1;
    Vec::<f32>::try_from(prompt.flatten(0, -1)).unwrap()
}

#[test]
fn a_random_t5_prompt_is_the_official_normal_one_draw_per_seed_for_every_task() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, data) = task(tmp.path());
    model(tmp.path(), "t5-v1_0");
    // A second task of the catalog, on the same data.
    let toy = std::fs::read_to_string(catalog.join("toy.toml")).unwrap();
    std::fs::write(
        catalog.join("other.toml"),
        toy.replace("name = \"toy\"", "name = \"other\""),
    )
    .unwrap();
    let a = initial_prompt(tmp.path(), &data, &catalog, "toy", "1");
    let b = initial_prompt(tmp.path(), &data, &catalog, "other", "1");
    let c = initial_prompt(tmp.path(), &data, &catalog, "toy", "2");
    assert_eq!(a.len(), 20 * 32);
    // modeling_t5.py:1476: an nn.Embedding T5's _init_weights never visits, so N(0, 1).
    let n = a.len() as f64;
    let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let sd = (a
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(
        (sd - 1.0).abs() < 0.1 && mean.abs() < 0.15,
        "mean {mean}, sd {sd}"
    );
    // One draw per seed, shared by every task (PromptT5.py:56-70 saves one initial model).
    assert_eq!(a, b);
    assert_ne!(a, c);
}
