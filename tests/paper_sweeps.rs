//! The paper's own sweeps, end to end: `sweeps/paper-roberta.toml` and `sweeps/paper-t5.toml`
//! run as they are, with only their step counts cut on the command line (`--set`), on tiny
//! random checkpoints in the paper's shapes and datasets shaped like the Hugging Face exports
//! (tests/data/paper, written by scripts/make-paper-fixtures.py).
//!
//! What broke before: the report picked one split per model and silently dropped every target
//! without it, so on the paper grid (GLUE has no test labels, other tasks do) most targets
//! vanished from the relative matrix and from every correlation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use promptgrid_ml::{EncoderModel, Head, Layout, random_baseline};
use promptgrid_results::schema::{EvalRow, JobRow, MetricRow, TransferRelativeRow};
use promptgrid_results::store::read_table;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    repo().join("tests/data/paper")
}

/// The tasks of a catalog entry that have a test split (the rest are scored on dev).
fn has_test_split(task: &str) -> bool {
    let text = std::fs::read_to_string(repo().join(format!("sweeps/tasks/{task}.toml"))).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["splits"].get("test").is_some()
}

/// Runs `promptgrid run <sweep>` on the fixtures with `sets`; returns the sweep's results folder.
fn run_sweep(results: &Path, sweep: &str, sets: &[&str]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptgrid"));
    cmd.current_dir(repo())
        .args([
            "run",
            sweep,
            "--workers",
            "2",
            "--threads",
            "1",
            "--results",
        ])
        .arg(results)
        .arg("--models-root")
        .arg(fixtures().join("models"))
        .arg("--data-root")
        .arg(fixtures().join("data"))
        .env("RUST_LOG", "warn");
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run promptgrid");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promptgrid run {sweep} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = Path::new(sweep).file_stem().unwrap().to_str().unwrap();
    results.join(name)
}

/// Every task is a row of the model's relative matrix and every target in `columns` a column,
/// the random prompt is a row, and each target is normalised on its own split (test where it
/// has one, else dev).
fn assert_full_matrix(dir: &Path, model: &str, tasks: &[&str], columns: &BTreeSet<&str>) {
    let rows: Vec<TransferRelativeRow> = read_table(dir).unwrap();
    let mine: Vec<&TransferRelativeRow> = rows.iter().filter(|r| r.model == model).collect();
    let targets: BTreeSet<&str> = mine.iter().map(|r| r.tgt_task.as_str()).collect();
    let sources: BTreeSet<&str> = mine.iter().map(|r| r.src_task.as_str()).collect();
    assert_eq!(&targets, columns, "{model}: targets of the relative matrix");
    let mut want_sources: BTreeSet<&str> = tasks.iter().copied().collect();
    want_sources.insert("random");
    assert_eq!(
        sources, want_sources,
        "{model}: sources of the relative matrix"
    );
    assert_eq!(
        mine.len(),
        columns.len() * (tasks.len() + 1),
        "{model}: cells"
    );
    let mut splits: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &mine {
        splits
            .entry(r.tgt_task.as_str())
            .or_default()
            .insert(r.split.as_deref().unwrap_or("?"));
    }
    for (task, s) in splits {
        let want = if has_test_split(task) { "test" } else { "dev" };
        assert_eq!(s, BTreeSet::from([want]), "{model}: split of target {task}");
    }
}

fn assert_all_done(dir: &Path, expected: usize) -> Vec<JobRow> {
    let jobs: Vec<JobRow> = read_table(dir).unwrap();
    let done: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| j.status == "done")
        .map(|j| j.job_id.as_str())
        .collect();
    assert_eq!(done.len(), expected, "done jobs");
    jobs
}

/// The (source, target) pairs of the official config/<Target>use<Source>PromptRoberta.config.
const OFFICIAL_TPT: [(&str, &str); 14] = [
    ("movierationales", "imdb"),
    ("snli", "mnli"),
    ("qqp", "mrpc"),
    ("mnli", "qnli"),
    ("mrpc", "qqp"),
    ("imdb", "sst2"),
    ("laptop", "sst2"),
    ("ethicsjustice", "ethicsdeontology"),
    ("ethicsdeontology", "ethicsjustice"),
    ("restaurant", "laptop"),
    ("imdb", "movierationales"),
    ("laptop", "restaurant"),
    ("mnli", "snli"),
    ("restaurant", "tweetevalsentiment"),
];

const ROBERTA_TASKS: [&str; 13] = [
    "imdb",
    "sst2",
    "laptop",
    "restaurant",
    "movierationales",
    "tweetevalsentiment",
    "mnli",
    "qnli",
    "snli",
    "ethicsdeontology",
    "ethicsjustice",
    "qqp",
    "mrpc",
];

#[test]
fn paper_roberta_sweep_reports_every_target_on_its_own_split() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_sweep(
        tmp.path(),
        "sweeps/paper-roberta.toml",
        &[
            "prompt.max_steps=2",
            "prompt.eval_every=1",
            "prompt.checkpoint_every=0",
            "studies.cross_model.*.steps=2",
        ],
    );
    // 2 models × (13 train + 13·13 transfer (the diagonal is the train job's eval) + the 14
    // official TPT pairs + 14 activations), the official projector, and 13 projected prompts.
    let per_model = 13 + 13 * 13 + OFFICIAL_TPT.len() + 14;
    let jobs = assert_all_done(&dir, 2 * per_model + 1 + 13);
    for model in ["roberta-base", "roberta-large"] {
        let pairs: BTreeSet<(&str, &str)> = jobs
            .iter()
            .filter(|j| j.kind == "tpt" && j.model == model)
            .map(|j| (j.src_task.as_deref().unwrap(), j.task.as_deref().unwrap()))
            .collect();
        assert_eq!(pairs, BTreeSet::from(OFFICIAL_TPT), "{model}: TPT pairs");
    }
    // The official base -> large projector (crossPromptRobertaLarge_restaurant_100.config):
    // the task objective, trained on restaurant.
    let projectors: Vec<&JobRow> = jobs.iter().filter(|j| j.kind == "projector").collect();
    assert_eq!(projectors.len(), 1);
    assert_eq!(
        (
            projectors[0].src_model.as_deref(),
            projectors[0].model.as_str(),
            projectors[0].objective.as_deref()
        ),
        (Some("roberta-base"), "roberta-large", Some("task"))
    );
    let held_in: Vec<&str> = jobs
        .iter()
        .filter(|j| j.kind == "cross_model")
        .filter_map(|j| j.task.as_deref())
        .collect();
    assert_eq!(held_in.len(), 13);

    // IMDB's dev is held out of train: the best prompt is picked on data it is not scored on.
    let text = std::fs::read_to_string(repo().join("sweeps/tasks/imdb.toml")).unwrap();
    let imdb: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(imdb["splits"]["dev"].as_str(), Some("train"));
    assert_eq!(imdb["splits"]["test"].as_str(), Some("test"));
    assert_eq!(imdb["splits"]["dev_holdout_percent"].as_integer(), Some(10));
    let all: BTreeSet<&str> = ROBERTA_TASKS.iter().copied().collect();
    for model in ["roberta-base", "roberta-large"] {
        assert_full_matrix(&dir, model, &ROBERTA_TASKS, &all);
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(!report.contains("missing from the matrix"), "{report}");
    assert!(!report.contains(" eval(s) on "), "{report}");
    assert!(
        report.contains("Each target is scored and normalised on its own split: dev ("),
        "{report}"
    );

    // The paper's layout scores the label words as the official code does: encoded alone, without
    // a leading space (`positive`, not `Ġpositive`), for every task of the sweep.
    let model_dir = fixtures().join("models/roberta-base");
    let vocab: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = &vocab["model"]["vocab"];
    let official =
        EncoderModel::load(&model_dir, Head::Mlm, Layout::Official, tch::Device::Cpu).unwrap();
    let prefix =
        EncoderModel::load(&model_dir, Head::Mlm, Layout::Prefix, tch::Device::Cpu).unwrap();
    for task in ROBERTA_TASKS {
        let text =
            std::fs::read_to_string(repo().join(format!("sweeps/tasks/{task}.toml"))).unwrap();
        let def: toml::Table = toml::from_str(&text).unwrap();
        let words: Vec<String> = def["verbalizer"]["encoder"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        let ids = official.tokenizer.label_ids(&words).unwrap();
        let spaced = prefix.tokenizer.label_ids(&words).unwrap();
        for ((word, id), spaced) in words.iter().zip(&ids).zip(&spaced) {
            assert_eq!(Some(*id), vocab[word.as_str()].as_i64(), "{task}: {word}");
            assert_eq!(
                Some(*spaced),
                vocab[format!("Ġ{word}")].as_i64(),
                "{task}: {word}"
            );
            assert_ne!(id, spaced, "{task}: {word}");
        }
    }
    // The random-prompt baseline of the transfer and ON jobs is the official torch.rand: uniform
    // on [0, 1), seeded so that a rerun scores the same prompt.
    let baseline = random_baseline(100, 32, 1);
    let values: Vec<f32> = Vec::try_from(baseline.flatten(0, -1)).unwrap();
    assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    assert!(random_baseline(100, 32, 1).equal(&baseline));

    // SNLI's rows without a gold label (-1) are dropped, not refused: 2 of its 8 test rows.
    let evals: Vec<EvalRow> = read_table(&dir).unwrap();
    let snli = evals
        .iter()
        .find(|e| e.kind == "train" && e.tgt_task == "snli")
        .unwrap();
    assert_eq!((snli.split.as_str(), snli.n), ("test", 6), "{snli:?}");
}

#[test]
fn paper_t5_sweep_reports_all_seventeen_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_sweep(
        tmp.path(),
        "sweeps/paper-t5.toml",
        &[
            "prompt.max_steps=2",
            "prompt.eval_every=1",
            "prompt.checkpoint_every=0",
            "task.multi_news.prompt.max_text_tokens=64",
        ],
    );
    let tasks: Vec<&str> = ROBERTA_TASKS
        .iter()
        .copied()
        .chain(["squad", "nq_open", "multi_news", "samsum"])
        .collect();
    let n = tasks.len();
    assert_all_done(&dir, n + n * n + n * (n - 1) + n + 1);
    // A random tiny T5 may generate nothing that overlaps the gold text: a generation target
    // whose own prompt scores 0 cannot be normalised. It must then be named in the report, and
    // every other target is a column.
    let evals: Vec<EvalRow> = read_table(&dir).unwrap();
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let mut columns: BTreeSet<&str> = tasks.iter().copied().collect();
    for e in evals.iter().filter(|e| e.kind == "train" && e.value <= 0.0) {
        assert!(
            ["squad", "nq_open", "multi_news", "samsum"].contains(&e.tgt_task.as_str()),
            "a classification prompt scored 0: {e:?}"
        );
        assert!(
            report.contains(&format!(
                "target {}: its own prompt scores 0 ({})",
                e.tgt_task, e.metric
            )),
            "{report}"
        );
        columns.remove(e.tgt_task.as_str());
    }
    assert_full_matrix(&dir, "t5-base", &tasks, &columns);
    assert!(!report.contains("missing from the matrix"), "{report}");
    let metric = |task: &str| {
        evals
            .iter()
            .find(|e| e.kind == "train" && e.tgt_task == task)
            .map(|e| e.metric.clone())
            .unwrap()
    };
    assert_eq!(metric("sst2"), "accuracy");
    // The generation tasks are scored with the official BLEU; their own metric lands in the
    // metrics table beside it.
    for task in ["squad", "nq_open", "multi_news", "samsum"] {
        assert_eq!(metric(task), "bleu", "{task}");
    }
    let jobs: Vec<JobRow> = read_table(&dir).unwrap();
    let metrics: Vec<MetricRow> = read_table(&dir).unwrap();
    for (task, also) in [
        ("squad", "squad_f1"),
        ("nq_open", "squad_f1"),
        ("multi_news", "rouge_l"),
        ("samsum", "rouge_l"),
    ] {
        let train = jobs
            .iter()
            .find(|j| j.kind == "train" && j.task.as_deref() == Some(task))
            .unwrap();
        let row = metrics
            .iter()
            .find(|m| m.job_id == train.job_id && m.name == also)
            .unwrap_or_else(|| panic!("{task}: no {also} metric row"));
        assert!(
            (0.0..=1.0).contains(&row.value),
            "{task}: {also} {}",
            row.value
        );
    }
}

#[test]
fn plan_lists_every_paper_t5_job_with_the_official_training_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .current_dir(repo())
        .args(["plan", "sweeps/paper-t5.toml", "--json", "--jobs"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = plan["job_list"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, plan["jobs"].as_u64().unwrap());
    let train: Vec<&serde_json::Value> = jobs
        .iter()
        .filter(|j| j["spec"]["kind"] == "train")
        .collect();
    assert_eq!(train.len(), 17);
    for j in train {
        let s = &j["spec"]["settings"];
        assert_eq!(
            (&s["adam_eps"], &s["dropout"], &s["official_padding"]),
            (
                &serde_json::json!(1e-6),
                &serde_json::json!(0.1),
                &serde_json::json!(true)
            ),
            "{}",
            j["key"]
        );
        assert_eq!(
            j["definitions"],
            serde_json::json!(["t5@2"]),
            "{}",
            j["key"]
        );
    }
    // Without --json, --jobs is refused rather than ignored.
    let bare = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .current_dir(repo())
        .args(["plan", "sweeps/paper-t5.toml", "--jobs"])
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2));
}
