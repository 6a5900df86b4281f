//! Malformed ML inputs as a researcher meets them at 3 a.m.: model folders, weights, tokenizers,
//! split files in every format, prompt files, label values, column types and settings. Each
//! case runs the built `promptgrid` (`tune`, `eval`, `activations` or `plan`) on a copy of the
//! worker's tiny BERT checkpoint and asserts the exit status (2: bad input), the message, and
//! that nothing was written: no prompt, no mask, no file anywhere in the case's folder.
//!
//! The cases run four at a time; a failure lists every case that went wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray, StringArray};
use arrow::datatypes::{Field, Int32Type, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

/// Exit status of bad input.
const BAD: i32 = 2;

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("ml/tests/data")
        .join(name)
}

const CATALOG: &str = r#"
name = "toy"
title = "Toy"
type = "sentiment"
kind = "classification"
metric = "accuracy"
labels = ["negative", "positive"]

[verbalizer]
encoder = ["terrible", "great"]
t5 = ["negative", "positive"]

[template]
encoder = "{text} it was {mask} ."
t5 = "{text}"

[columns]
text = "text"
label = "label"

[splits]
train = "train"
dev = "dev"
test = "test"
"#;

const GOOD_ROWS: &str = "{\"text\": \"the movie was great\", \"label\": 1}\n\
{\"text\": \"this film is boring\", \"label\": 0}\n\
{\"text\": \"i love it\", \"label\": \"positive\"}\n\
{\"text\": \"the plot is awful\", \"label\": \"negative\"}\n";

fn sweep(length: u32, layout: &str) -> String {
    format!(
        "[sweep]\nname = \"bad\"\ncatalog = \"catalog\"\n\n[prompt]\nlength = {length}\n\
         max_steps = 1\n\n[[model]]\nname = \"tiny\"\npath = \"model\"\narch = \"bert\"\n\
         head = \"tied\"\nlayout = \"{layout}\"\n\n[[task]]\nname = \"toy\"\n"
    )
}

/// A prompt file as `PromptFile::save` writes it (safetensors, `prompt` [rows, cols] float32),
/// by hand: this crate has no tensor library.
fn prompt_bytes(name: &str, shape: &[usize], values: &[f32]) -> Vec<u8> {
    let header = serde_json::json!({
        "__metadata__": { "model": "tiny-bert", "task": "toy" },
        name: { "dtype": "F32", "shape": shape, "data_offsets": [0, values.len() * 4] },
    })
    .to_string();
    let header = format!("{header:<width$}", width = header.len().next_multiple_of(8));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

fn write_prompt(path: &Path, rows: usize, cols: usize, edit: impl Fn(usize) -> Option<f32>) {
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| edit(i).unwrap_or(((i as f32) * 0.37).sin() * 0.1))
        .collect();
    std::fs::write(path, prompt_bytes("prompt", &[rows, cols], &values)).unwrap();
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn texts(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn ints(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

const FOUR: [Option<&str>; 4] = [
    Some("the movie was great"),
    Some("this film is boring"),
    Some("i love it"),
    Some("the plot is awful"),
];

/// Sets `key` of the case's model config.
fn edit_config(root: &Path, key: &str, value: serde_json::Value) {
    let path = root.join("model/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&path, v.to_string()).unwrap();
}

/// Replaces `from` with `to` in the case's catalog entry.
fn edit_catalog(root: &Path, from: &str, to: &str) {
    let path = root.join("catalog/toy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// Every split of the case's data replaced by `name` with `contents` (the JSONL ones removed
/// so that the new file is the one found).
fn splits(root: &Path, name: &str, contents: &[u8]) {
    for stem in ["train", "dev", "test"] {
        std::fs::remove_file(root.join(format!("data/{stem}.jsonl"))).ok();
        let ext = Path::new(name).extension().unwrap().to_str().unwrap();
        std::fs::write(root.join(format!("data/{stem}.{ext}")), contents).unwrap();
    }
}

/// [`splits`] for Parquet.
fn parquet_splits(root: &Path, columns: impl Fn() -> Vec<(&'static str, ArrayRef)>) {
    for stem in ["train", "dev", "test"] {
        std::fs::remove_file(root.join(format!("data/{stem}.jsonl"))).ok();
        write_parquet(&root.join(format!("data/{stem}.parquet")), columns());
    }
}

/// The good inputs every case starts from.
fn fixture(root: &Path) {
    let model = root.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny("tiny-bert").join(f), model.join(f)).unwrap();
    }
    std::fs::create_dir_all(root.join("catalog")).unwrap();
    std::fs::write(root.join("catalog/toy.toml"), CATALOG).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    for stem in ["train", "dev", "test"] {
        std::fs::write(root.join(format!("data/{stem}.jsonl")), GOOD_ROWS).unwrap();
    }
    write_prompt(&root.join("prompt.safetensors"), 4, 32, |_| None);
    std::fs::write(root.join("sweep.toml"), sweep(4, "prefix")).unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Cmd {
    Tune,
    Eval,
    Activations,
    Plan,
}

/// The command line of `cmd` on the case in `root`, each `(flag, value)` of `set` replacing
/// the default of that flag (or added).
fn command_line(cmd: Cmd, root: &Path, set: &[(&str, &str)]) -> Vec<String> {
    let p = |rel: &str| root.join(rel).display().to_string();
    let model = [
        ("--model", p("model")),
        ("--head", "tied".into()),
        ("--threads", "1".into()),
    ];
    let task = [
        ("--task", "toy".into()),
        ("--data", p("data")),
        ("--catalog", p("catalog")),
    ];
    let (name, mut flags, positional): (&str, Vec<(&str, String)>, Option<String>) = match cmd {
        Cmd::Tune => (
            "tune",
            model
                .into_iter()
                .chain(task)
                .chain([
                    ("--length", "4".to_string()),
                    ("--max-steps", "1".into()),
                    ("--eval-every", "1".into()),
                    ("--batch-size", "2".into()),
                    ("--out", p("out/prompt.safetensors")),
                ])
                .collect(),
            None,
        ),
        Cmd::Eval => (
            "eval",
            model.into_iter().chain(task).collect(),
            Some(p("prompt.safetensors")),
        ),
        Cmd::Activations => (
            "activations",
            model
                .into_iter()
                .chain([
                    ("--prompt", p("prompt.safetensors")),
                    ("--out", p("out/mask.safetensors")),
                ])
                .collect(),
            None,
        ),
        Cmd::Plan => (
            "plan",
            vec![("--models-root", p(""))],
            Some(p("sweep.toml")),
        ),
    };
    for (flag, value) in set {
        match flags.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value.replace("{root}", &p("")),
            None => flags.push((flag, value.replace("{root}", &p("")))),
        }
    }
    let mut args = vec![name.to_string()];
    for (flag, value) in flags {
        args.push(flag.to_string());
        args.push(value);
    }
    args.extend(positional);
    args
}

/// Every file under `dir` with its size: a run that wrote anything changes it.
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                out.insert(e.path(), 0);
                stack.push(e.path());
            } else {
                out.insert(e.path(), meta.len());
            }
        }
    }
    out
}

type Setup = Box<dyn Fn(&Path) + Send + Sync>;

struct Case {
    name: &'static str,
    cmd: Cmd,
    setup: Setup,
    set: Vec<(&'static str, &'static str)>,
    code: i32,
    /// Pieces the message must hold (the file, the field, the setting).
    want: Vec<&'static str>,
}

fn bad(
    name: &'static str,
    cmd: Cmd,
    setup: impl Fn(&Path) + Send + Sync + 'static,
    want: &[&'static str],
) -> Case {
    Case {
        name,
        cmd,
        setup: Box::new(setup),
        set: Vec::new(),
        code: BAD,
        want: want.to_vec(),
    }
}

fn with(mut case: Case, set: &[(&'static str, &'static str)]) -> Case {
    case.set = set.to_vec();
    case
}

fn none(_: &Path) {}

fn cases() -> Vec<Case> {
    use Cmd::*;
    vec![
        // Model folders.
        bad(
            "model folder missing",
            Tune,
            |r| std::fs::remove_dir_all(r.join("model")).unwrap(),
            &["model/config.json: file not found"],
        ),
        bad(
            "config.json missing",
            Eval,
            |r| std::fs::remove_file(r.join("model/config.json")).unwrap(),
            &["model/config.json: file not found"],
        ),
        bad(
            "config.json not JSON",
            Tune,
            |r| std::fs::write(r.join("model/config.json"), "{\"hidden_size\": 32,").unwrap(),
            &["model/config.json: invalid config"],
        ),
        bad(
            "config hidden_act unsupported",
            Activations,
            |r| edit_config(r, "hidden_act", "swish".into()),
            &["config.json", "hidden_act \"swish\" is not supported"],
        ),
        bad(
            "config model_type not an encoder",
            Tune,
            |r| edit_config(r, "model_type", "gpt2".into()),
            &["config.json", "model_type \"gpt2\""],
        ),
        bad(
            "config hidden_size not a multiple of the heads",
            Eval,
            |r| edit_config(r, "num_attention_heads", 5.into()),
            &[
                "config.json",
                "hidden_size 32 is not a multiple of num_attention_heads 5",
            ],
        ),
        bad(
            "config vocab_size below the tokenizer's",
            Tune,
            |r| edit_config(r, "vocab_size", 10.into()),
            &[
                "config.json",
                "vocab_size 10 is smaller than the tokenizer's 81 tokens",
            ],
        ),
        // Weights.
        bad(
            "weights missing",
            Tune,
            |r| std::fs::remove_file(r.join("model/model.safetensors")).unwrap(),
            &["model/model.safetensors: file not found"],
        ),
        bad(
            "weights truncated",
            Eval,
            |r| {
                let p = r.join("model/model.safetensors");
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            },
            &["model.safetensors"],
        ),
        bad(
            "weights for fewer layers than the config",
            Activations,
            |r| edit_config(r, "num_hidden_layers", 3.into()),
            &["model.safetensors", "missing tensor encoder.layer.2."],
        ),
        bad(
            "weights of another width",
            Tune,
            |r| edit_config(r, "intermediate_size", 48.into()),
            &["encoder.layer.0.intermediate.dense.weight", "[64, 32]"],
        ),
        // Tokenizers.
        bad(
            "tokenizer missing",
            Tune,
            |r| std::fs::remove_file(r.join("model/tokenizer.json")).unwrap(),
            &["model/tokenizer.json: file not found"],
        ),
        bad(
            "tokenizer not a tokenizer",
            Eval,
            |r| std::fs::write(r.join("model/tokenizer.json"), "{\"version\": 1}").unwrap(),
            &["model/tokenizer.json: tokenizer"],
        ),
        bad(
            "label word of several tokens",
            Tune,
            |r| edit_catalog(r, "[\"terrible\", \"great\"]", "[\"terrible\", \"goods\"]"),
            &["label word \"goods\" is not one token", "\"##s\""],
        ),
        // Split files: every format.
        bad(
            "split file missing",
            Tune,
            |r| std::fs::remove_file(r.join("data/train.jsonl")).unwrap(),
            &["data/train.{parquet,jsonl,json,tsv,csv}: file not found"],
        ),
        bad(
            "jsonl line not JSON",
            Tune,
            |r| {
                splits(
                    r,
                    "x.jsonl",
                    b"{\"text\": \"great\", \"label\": 1}\n{\"text\": \"bad\n",
                )
            },
            &["data/train.jsonl: line 2:"],
        ),
        // Only the test split is broken: tune must fail before it trains and writes its
        // prompt file (it used to read the test split last, after both).
        bad(
            "test split broken, train and dev fine",
            Tune,
            |r| std::fs::write(r.join("data/test.jsonl"), b"{\"text\": \"great\"\n").unwrap(),
            &["data/test.jsonl: line 1:"],
        ),
        bad(
            "jsonl without the text column",
            Eval,
            |r| splits(r, "x.jsonl", b"{\"sentence\": \"great\", \"label\": 1}\n"),
            &["data/test.jsonl: line 1: no column \"text\"; the row has [\"label\", \"sentence\"]"],
        ),
        bad(
            "jsonl text column holds numbers",
            Tune,
            |r| splits(r, "x.jsonl", b"{\"text\": 17, \"label\": 1}\n"),
            &[
                "data/train.jsonl: line 1: column \"text\" (template field {text}) holds a number, not text",
            ],
        ),
        bad(
            "jsonl label out of range",
            Tune,
            |r| splits(r, "x.jsonl", b"{\"text\": \"great\", \"label\": 7}\n"),
            &[
                "data/train.jsonl: row 1: label \"7\" (column \"label\") is not one of [\"negative\", \"positive\"]",
            ],
        ),
        bad(
            "jsonl label is a list",
            Tune,
            |r| splits(r, "x.jsonl", b"{\"text\": \"great\", \"label\": [1]}\n"),
            &["data/train.jsonl: line 1: label column \"label\" holds a list"],
        ),
        bad(
            "json array of non-objects",
            Tune,
            |r| splits(r, "x.json", b"[[\"great\", 1]]"),
            &["data/train.json: row 1: a list where a row (a JSON object) belongs"],
        ),
        bad(
            "csv without the text column",
            Tune,
            |r| splits(r, "x.csv", b"sentence,label\ngreat,1\n"),
            &["data/train.csv: no column \"text\" in the header [\"sentence\", \"label\"]"],
        ),
        bad(
            "csv row short of fields",
            Tune,
            |r| splits(r, "x.csv", b"text,label\ngreat,1\nbad\n"),
            &["data/train.csv: row 3: 1 fields, the header has 2"],
        ),
        bad(
            "csv empty",
            Eval,
            |r| splits(r, "x.csv", b""),
            &["data/test.csv: empty file: no header row"],
        ),
        bad(
            "csv not UTF-8",
            Tune,
            |r| splits(r, "x.csv", b"text,label\n\xe9t\xe9 great,1\n"),
            &["data/train.csv: not UTF-8 text"],
        ),
        bad(
            "tsv label name not a label",
            Tune,
            |r| splits(r, "x.tsv", b"text\tlabel\ngreat\tmaybe\n"),
            &["data/train.tsv: row 1: label \"maybe\""],
        ),
        bad(
            "tsv label empty",
            Tune,
            |r| splits(r, "x.tsv", b"text\tlabel\ngreat\t\n"),
            &["data/train.tsv: row 1: the label (column \"label\") is null or empty"],
        ),
        bad(
            "parquet file that is not Parquet",
            Tune,
            |r| splits(r, "x.parquet", b"PAR1 but not really"),
            &["data/train.parquet:"],
        ),
        bad(
            "parquet text column of integers",
            Tune,
            |r| {
                parquet_splits(r, || {
                    vec![("text", ints(&[1, 2])), ("label", ints(&[0, 1]))]
                })
            },
            &["data/train.parquet: column \"text\" (template field {text}) is Int64, not text"],
        ),
        bad(
            "parquet label column of lists",
            Tune,
            |r| {
                parquet_splits(r, || {
                    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                        Some(vec![Some(0)]),
                        Some(vec![Some(1)]),
                    ]);
                    vec![("text", texts(&FOUR[..2])), ("label", Arc::new(list))]
                })
            },
            &["data/train.parquet: label column \"label\" is List"],
        ),
        bad(
            "parquet label 0.5",
            Tune,
            |r| {
                parquet_splits(r, || {
                    vec![
                        ("text", texts(&FOUR[..2])),
                        ("label", Arc::new(Float64Array::from(vec![0.0, 0.5]))),
                    ]
                })
            },
            &["data/train.parquet: row 2: label \"0.5\""],
        ),
        bad(
            "parquet text all null",
            Tune,
            |r| {
                parquet_splits(r, || {
                    vec![
                        ("text", texts(&[None, None, None])),
                        ("label", ints(&[0, 1, 0])),
                    ]
                })
            },
            &[
                "data/train.parquet: no usable rows: all 3 rows were dropped: 3 with null or empty text (column \"text\": 3)",
            ],
        ),
        bad(
            "parquet labels all -1 (no gold label)",
            Eval,
            |r| {
                parquet_splits(r, || {
                    vec![("text", texts(&FOUR)), ("label", ints(&[-1; 4]))]
                })
            },
            &[
                "data/test.parquet: no usable rows: all 4 rows were dropped: 4 with label -1 (no gold label)",
            ],
        ),
        bad(
            "split without rows",
            Tune,
            |r| splits(r, "x.jsonl", b"\n\n"),
            &["data/train.jsonl: the split has no rows"],
        ),
        // Prompt files.
        bad(
            "prompt file missing",
            Eval,
            |r| std::fs::remove_file(r.join("prompt.safetensors")).unwrap(),
            &["prompt.safetensors: file not found"],
        ),
        bad(
            "prompt file not safetensors",
            Activations,
            |r| std::fs::write(r.join("prompt.safetensors"), b"not a tensor file").unwrap(),
            &["prompt.safetensors: safetensors"],
        ),
        bad(
            "prompt file without a prompt tensor",
            Eval,
            |r| {
                let bytes = prompt_bytes("embedding", &[4, 32], &[0.1; 128]);
                std::fs::write(r.join("prompt.safetensors"), bytes).unwrap();
            },
            &["prompt.safetensors: safetensors: no tensor named \"prompt\""],
        ),
        bad(
            "prompt of another width",
            Eval,
            |r| write_prompt(&r.join("prompt.safetensors"), 4, 48, |_| None),
            &[
                "prompt.safetensors",
                "the prompt is 48 wide but the model's hidden size is 32",
            ],
        ),
        bad(
            "prompt of NaN",
            Eval,
            |r| write_prompt(&r.join("prompt.safetensors"), 4, 32, |_| Some(f32::NAN)),
            &[
                "prompt.safetensors: tensor \"prompt\" holds 128 non-finite values (NaN or infinity) of 128",
            ],
        ),
        bad(
            "prompt with one infinity",
            Activations,
            |r| {
                write_prompt(&r.join("prompt.safetensors"), 4, 32, |i| {
                    (i == 5).then_some(f32::INFINITY)
                })
            },
            &["prompt.safetensors: tensor \"prompt\" holds 1 non-finite values"],
        ),
        with(
            bad(
                "initial prompt of NaN (--init from:)",
                Tune,
                |r| write_prompt(&r.join("prompt.safetensors"), 4, 32, |_| Some(f32::NAN)),
                &["prompt.safetensors: tensor \"prompt\" holds 128 non-finite values"],
            ),
            &[("--init", "from:{root}/prompt.safetensors")],
        ),
        // Words the command line takes from a few (the sweep spec's enums).
        with(
            bad(
                "--head of no kind",
                Tune,
                none,
                &["head \"bogus\": expected mlm or tied"],
            ),
            &[("--head", "bogus")],
        ),
        with(
            bad(
                "--init of no kind",
                Tune,
                none,
                &["prompt init \"zeros\": expected random, vocab or from:<prompt file>"],
            ),
            &[("--init", "zeros")],
        ),
        // Settings the model cannot take.
        with(
            bad(
                "prompt length 100000 in the official layout",
                Tune,
                none,
                &[
                    "prompt length 100000 (prompt.length / --length)",
                    "over the ceiling of 64",
                ],
            ),
            &[("--length", "100000"), ("--layout", "official")],
        ),
        with(
            bad(
                "prompt length over the positions in the prefix layout",
                Tune,
                none,
                &[
                    "a prompt of 62 tokens and a template of 3 tokens do not fit the model's 64 positions",
                ],
            ),
            &[("--length", "62")],
        ),
        with(
            bad(
                "--max-text-tokens 0",
                Tune,
                none,
                &["max_text_tokens is 0 (--max-text-tokens", "allow at least"],
            ),
            &[("--max-text-tokens", "0")],
        ),
        bad(
            "plan: prompt.length 100000 in the official layout",
            Plan,
            |r| std::fs::write(r.join("sweep.toml"), sweep(100_000, "official")).unwrap(),
            &[
                "sweep.toml:6:1: `prompt.length`: 100000 for model `tiny`",
                "model/config.json; tasks toy",
                "over the ceiling of 64",
            ],
        ),
        bad(
            "plan: prompt.length over the positions in the prefix layout",
            Plan,
            |r| std::fs::write(r.join("sweep.toml"), sweep(62, "prefix")).unwrap(),
            &["`prompt.length`: 62 for model `tiny`", "at most 61"],
        ),
    ]
}

/// Runs one case in a fresh folder; `Err` says what went wrong.
fn run(case: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixture(root);
    (case.setup)(root);
    let before = listing(root);
    let args = command_line(case.cmd, root, &case.set);
    let out = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run promptgrid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut problems = Vec::new();
    if out.status.code() != Some(case.code) {
        problems.push(format!(
            "exit status {:?}, expected {}",
            out.status.code(),
            case.code
        ));
    }
    for want in &case.want {
        if !stderr.contains(want) {
            problems.push(format!("the message lacks {want:?}"));
        }
    }
    if stderr.contains("panicked") {
        problems.push("it panicked".into());
    }
    // Plan prints the plan before refusing; the others print results only on success.
    if !matches!(case.cmd, Cmd::Plan) && !stdout.trim().is_empty() {
        problems.push(format!("it printed results: {stdout}"));
    }
    let after = listing(root);
    if after != before {
        let new: Vec<_> = after
            .keys()
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        problems.push(format!("it wrote {new:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} ({:?} {}):\n    {}\n    stderr: {}",
            case.name,
            case.cmd,
            args.join(" "),
            problems.join("\n    "),
            stderr.trim()
        ))
    }
}

#[test]
fn malformed_ml_inputs_exit_2_with_a_message_and_write_nothing() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    if let Err(e) = run(case) {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The same fixture, unbroken, runs: the table above fails for its one fault. Rows without a
/// gold label or text are dropped with a warning that names the file and counts them.
#[test]
fn good_inputs_run_and_dropped_rows_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixture(root);
    // HF SNLI style: -1 marks a pair without a gold label; one row has null text.
    write_parquet(
        &root.join("data/train.parquet"),
        vec![
            (
                "text",
                texts(&[
                    Some("the movie was great"),
                    Some("this film is boring"),
                    None,
                    Some("i love it"),
                    Some("so so"),
                ]),
            ),
            ("label", ints(&[1, 0, 1, 1, -1])),
        ],
    );
    std::fs::remove_file(root.join("data/train.jsonl")).unwrap();
    for cmd in [Cmd::Tune, Cmd::Eval, Cmd::Activations, Cmd::Plan] {
        let out = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
            .args(command_line(cmd, root, &[]))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cmd:?}: {stderr}");
        if matches!(cmd, Cmd::Tune) {
            assert!(
                stderr.contains(
                    "data/train.parquet: dropped 2 of 5 rows: 1 with label -1 (no gold label), \
                     1 with null or empty text (column \"text\": 1)"
                ),
                "{stderr}"
            );
        }
    }
    assert!(root.join("out/prompt.safetensors").is_file());
    assert!(root.join("out/mask.safetensors").is_file());
}
