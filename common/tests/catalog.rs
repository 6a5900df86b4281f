//! The paper's 17 tasks in `sweeps/tasks/`, as written out from the official Prompt-Transferability
//! code: names, kinds, types, labels in the official order, verbalizers, templates and metrics.
//! Other files in the folder (the demo tasks) are loaded too but not checked here.

use std::path::{Path, PathBuf};

use promptgrid_common::catalog::{Catalog, CatalogSource, MASK_FIELD, Metric, TaskDef, TaskKind};

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/tasks")
}

fn catalog() -> Catalog {
    let dir = catalog_dir();
    match Catalog::load(&dir) {
        Ok(c) => c,
        Err(e) => panic!("loading {}: {e}", dir.display()),
    }
}

/// One paper task: name, kind, type, labels in the official order, metric.
struct Expected {
    name: &'static str,
    kind: TaskKind,
    task_type: &'static str,
    labels: &'static [&'static str],
    metric: Metric,
}

const fn cls(
    name: &'static str,
    task_type: &'static str,
    labels: &'static [&'static str],
) -> Expected {
    Expected {
        name,
        kind: TaskKind::Classification,
        task_type,
        labels,
        metric: Metric::Accuracy,
    }
}

const fn generation(name: &'static str, task_type: &'static str, metric: Metric) -> Expected {
    Expected {
        name,
        kind: TaskKind::Generation,
        task_type,
        labels: &[],
        metric,
    }
}

const NEG_POS: &[&str] = &["negative", "positive"];
const ABSA: &[&str] = &["negative", "neutral", "positive", "conflict"];
const NLI3: &[&str] = &["contradiction", "neutral", "entailment"];
const ETHICS: &[&str] = &["unacceptable", "acceptable"];

/// The paper's 17 tasks, in the paper's order.
const PAPER: &[Expected] = &[
    cls("imdb", "sentiment", NEG_POS),
    cls("sst2", "sentiment", NEG_POS),
    cls("laptop", "sentiment", ABSA),
    cls("restaurant", "sentiment", ABSA),
    cls("movierationales", "sentiment", NEG_POS),
    cls(
        "tweetevalsentiment",
        "sentiment",
        &["negative", "neutral", "positive"],
    ),
    cls("mnli", "nli", NLI3),
    cls("qnli", "nli", &["not_entailment", "entailment"]),
    cls("snli", "nli", NLI3),
    cls("ethicsdeontology", "ethics", ETHICS),
    cls("ethicsjustice", "ethics", ETHICS),
    cls("qqp", "paraphrase", &["not_duplicate", "duplicate"]),
    cls("mrpc", "paraphrase", &["not_equivalent", "equivalent"]),
    generation("squad", "qa", Metric::Bleu),
    generation("nq_open", "qa", Metric::Bleu),
    generation("multi_news", "summarization", Metric::Bleu),
    generation("samsum", "summarization", Metric::Bleu),
];

/// (task, target_len, min_length, max_length) of config/<Task>PromptT5.config, and the
/// metric scored besides the official BLEU.
const T5_LENGTHS: &[(&str, u32, u32, u32)] = &[
    ("imdb", 1, 3, 3),
    ("sst2", 1, 3, 3),
    ("laptop", 1, 3, 3),
    ("restaurant", 1, 3, 3),
    ("movierationales", 1, 3, 3),
    ("tweetevalsentiment", 1, 3, 3),
    ("mnli", 2, 3, 3),
    ("qnli", 2, 3, 3),
    ("snli", 2, 3, 3),
    ("ethicsdeontology", 1, 3, 3),
    ("ethicsjustice", 1, 3, 3),
    ("qqp", 1, 3, 3),
    ("mrpc", 1, 3, 3),
    ("squad", 20, 2, 10),
    ("multi_news", 30, 2, 50),
    ("nq_open", 20, 3, 10),
    ("samsum", 50, 2, 50),
];

#[test]
fn every_paper_task_has_the_official_t5_lengths_and_generation_keeps_its_own_metric_too() {
    let catalog = catalog();
    for &(name, target_len, min_length, max_length) in T5_LENGTHS {
        let t5 = task(&catalog, name).t5.as_ref().unwrap();
        assert_eq!(
            (t5.target_len, t5.min_length, t5.max_length),
            (target_len, min_length, max_length),
            "{name}"
        );
    }
    for (name, other) in [
        ("squad", Metric::SquadF1),
        ("nq_open", Metric::SquadF1),
        ("multi_news", Metric::RougeL),
        ("samsum", Metric::RougeL),
    ] {
        assert_eq!(task(&catalog, name).also, [other], "{name}");
    }
    // The demo's tasks never ran on T5 officially: they have no lengths, so their ids stay.
    assert!(task(&catalog, "demo-movies").t5.is_none());
}

fn task<'a>(catalog: &'a Catalog, name: &str) -> &'a TaskDef {
    catalog.get(name).unwrap_or_else(|| {
        let names: Vec<&str> = catalog.names().collect();
        panic!("task `{name}` is missing from the catalog; it has {names:?}")
    })
}

#[test]
fn the_paper_tasks_are_all_there_with_their_kind_type_labels_and_metric() {
    let catalog = catalog();
    for want in PAPER {
        let t = task(&catalog, want.name);
        assert_eq!(t.name, want.name);
        assert_eq!(t.kind, want.kind, "{}: kind", want.name);
        assert_eq!(t.task_type, want.task_type, "{}: type", want.name);
        assert_eq!(t.metric, want.metric, "{}: metric", want.name);
        assert_eq!(
            t.labels, want.labels,
            "{}: labels in the official order",
            want.name
        );
        assert!(!t.title.trim().is_empty(), "{}: title", want.name);
        let file = catalog.file_of(want.name).unwrap();
        assert_eq!(
            file.file_name().and_then(|f| f.to_str()),
            Some(format!("{}.toml", want.name).as_str()),
            "{}: one file per task, named after it",
            want.name
        );
    }
}

#[test]
fn label_counts_match_the_official_code() {
    let catalog = catalog();
    let count = |name: &str| task(&catalog, name).labels.len();
    assert_eq!(count("mnli"), 3);
    assert_eq!(count("snli"), 3);
    assert_eq!(count("qnli"), 2);
    assert_eq!(count("laptop"), 4);
    assert_eq!(count("restaurant"), 4);
    assert_eq!(count("tweetevalsentiment"), 3);
    for two in [
        "imdb",
        "sst2",
        "movierationales",
        "ethicsdeontology",
        "ethicsjustice",
        "qqp",
        "mrpc",
    ] {
        assert_eq!(count(two), 2, "{two}");
    }
    for generation in ["squad", "nq_open", "multi_news", "samsum"] {
        assert_eq!(count(generation), 0, "{generation}");
    }
}

#[test]
fn every_classification_task_has_one_word_per_label_and_a_mask() {
    let catalog = catalog();
    for want in PAPER.iter().filter(|w| w.kind == TaskKind::Classification) {
        let t = task(&catalog, want.name);
        let v = t
            .verbalizer
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no verbalizer", t.name));
        assert_eq!(
            v.encoder.len(),
            t.labels.len(),
            "{}: encoder words vs labels",
            t.name
        );
        assert_eq!(v.t5.len(), t.labels.len(), "{}: T5 words vs labels", t.name);
        for words in [&v.encoder, &v.t5] {
            for (i, w) in words.iter().enumerate() {
                assert!(
                    !w.is_empty() && !w.chars().any(char::is_whitespace),
                    "{}: label word {i} {w:?} must be one bare word",
                    t.name
                );
                assert!(
                    !words[..i].contains(w),
                    "{}: label word {w:?} repeats",
                    t.name
                );
            }
        }
        let encoder = t
            .template
            .encoder
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no encoder template", t.name));
        assert_eq!(
            encoder.matches("{mask}").count(),
            1,
            "{}: one {{mask}} in {encoder:?}",
            t.name
        );
        assert!(
            !t.template.t5.contains("{mask}"),
            "{}: T5 reads the label from its decoder",
            t.name
        );
        assert!(t.columns.contains_key("label"), "{}: label column", t.name);
        // Every field of both templates maps to a dataset column.
        let fields = TaskDef::template_fields(encoder);
        assert!(
            !fields.is_empty(),
            "{}: the encoder template has no text field",
            t.name
        );
        assert_eq!(
            fields,
            TaskDef::template_fields(&t.template.t5),
            "{}: the encoder and T5 templates read the same fields, in the same order",
            t.name
        );
    }
}

#[test]
fn generation_tasks_are_t5_only_with_a_target() {
    let catalog = catalog();
    for want in PAPER.iter().filter(|w| w.kind == TaskKind::Generation) {
        let t = task(&catalog, want.name);
        assert!(t.template.encoder.is_none(), "{}: T5 only", t.name);
        assert!(t.verbalizer.is_none(), "{}: no verbalizer", t.name);
        assert!(
            t.columns.contains_key("target"),
            "{}: target column",
            t.name
        );
        assert!(
            !t.template.t5.contains(&format!("{{{MASK_FIELD}}}")),
            "{}: no mask",
            t.name
        );
        assert!(
            !TaskDef::template_fields(&t.template.t5).is_empty(),
            "{}: no input field",
            t.name
        );
    }
}

#[test]
fn official_templates_and_words_are_kept_verbatim() {
    let catalog = catalog();
    let t5 = |name: &str| task(&catalog, name).template.t5.clone();
    let words = |name: &str| task(&catalog, name).verbalizer.clone().unwrap();
    assert_eq!(t5("squad"), "context: {context} SEP question:{question}");
    assert_eq!(t5("nq_open"), "context: {question}");
    assert_eq!(t5("samsum"), "context: {dialogue}");
    assert_eq!(t5("multi_news"), "{document}");
    assert_eq!(
        t5("mnli"),
        "hypothesis: {hypothesis} [SEP] sentence: premise: {premise}"
    );
    assert_eq!(
        t5("qnli"),
        "hypothesis: {question} [SEP] sentence: premise: {sentence}"
    );
    // The official T5 formatters end these inputs with </s> (QQPPromptT5Formatter.py:45-50).
    assert_eq!(t5("qqp"), "{question1} <extra_id_0> {question2}</s>");
    // The official encoder code reads the answer before the text (prompt slot 0).
    for want in PAPER.iter().filter(|w| w.kind == TaskKind::Classification) {
        let encoder = task(&catalog, want.name).template.encoder.clone().unwrap();
        assert!(encoder.starts_with("{mask} "), "{}: {encoder:?}", want.name);
    }
    assert_eq!(words("mnli").encoder, ["no", "neutral", "yes"]);
    assert_eq!(words("mnli").t5, ["contradiction", "neutral", "entailment"]);
    assert_eq!(words("qnli").t5, ["contradiction", "entailment"]);
    assert_eq!(
        words("laptop").t5,
        ["negative", "moderate", "positive", "conflict"]
    );
    assert_eq!(
        words("tweetevalsentiment").encoder,
        ["negative", "moderate", "positive"]
    );
    assert_eq!(words("mrpc").encoder, ["false", "true"]);
    assert_eq!(words("ethicsjustice").t5, ["unacceptable", "acceptable"]);
}

#[test]
fn the_paper_types_group_as_in_the_paper() {
    let catalog = catalog();
    let count = |ty: &str| {
        PAPER
            .iter()
            .filter(|w| task(&catalog, w.name).task_type == ty)
            .count()
    };
    assert_eq!(count("sentiment"), 6);
    assert_eq!(count("nli"), 3);
    assert_eq!(count("ethics"), 2);
    assert_eq!(count("paraphrase"), 2);
    assert_eq!(count("qa"), 2);
    assert_eq!(count("summarization"), 2);
}

#[test]
fn every_paper_task_cites_the_official_code_and_names_no_machine_path() {
    let catalog = catalog();
    for want in PAPER {
        let t = task(&catalog, want.name);
        let source = t
            .source
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no source", t.name));
        assert!(
            source.contains("thunlp/Prompt-Transferability"),
            "{}: {source}",
            t.name
        );
        let file = catalog.file_of(want.name).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            // Folders of a machine, never of the repository.
            let machine_dirs = ["work", "home", "tmp", "root"];
            assert!(
                !machine_dirs
                    .iter()
                    .any(|d| line.contains(&format!("/{d}/"))),
                "{}: machine path in {line:?}",
                t.name
            );
        }
        assert!(
            !t.splits.train.is_empty() && !t.splits.dev.is_empty(),
            "{}: splits",
            t.name
        );
        assert!(
            t.data_dir().split('/').all(|p| !p.is_empty() && p != ".."),
            "{}: data_dir",
            t.name
        );
    }
}

#[test]
fn the_builtin_catalog_holds_every_file_of_sweeps_tasks_as_the_folder_reads_it() {
    let builtin = Catalog::builtin().unwrap();
    assert_eq!(builtin.source(), &CatalogSource::Builtin);
    let mut listed: Vec<String> = std::fs::read_dir(catalog_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    listed.sort();
    let mut embedded: Vec<String> = builtin
        .names()
        .map(|task| {
            let file = builtin.file_of(task).unwrap().to_str().unwrap();
            file.strip_prefix("builtin:tasks/").unwrap().to_string()
        })
        .collect();
    embedded.sort();
    assert_eq!(embedded, listed);
    // The same definitions, not only the same files.
    let folder = catalog();
    assert_eq!(folder.source(), &CatalogSource::Folder(catalog_dir()));
    assert!(folder.names().eq(builtin.names()));
    for task in folder.names() {
        assert_eq!(builtin.get(task), folder.get(task), "{task}");
    }
}

#[test]
fn bad_t5_lengths_metrics_and_hold_outs_are_named_with_their_file() {
    let squad = std::fs::read_to_string(catalog_dir().join("squad.toml")).unwrap();
    let imdb = std::fs::read_to_string(catalog_dir().join("imdb.toml")).unwrap();
    let cases = [
        (
            "squad.toml",
            squad.replace("target_len = 20", "target_len = 0"),
            "t5.target_len 0 must be at least 1",
        ),
        (
            "squad.toml",
            squad.replace("min_length = 2", "min_length = 11"),
            "t5.min_length 11 at most max_length",
        ),
        (
            "squad.toml",
            squad[..squad.find("\n[t5]").unwrap()].to_string(),
            "metric `bleu` decodes and cuts references with the task's [t5] lengths",
        ),
        (
            "squad.toml",
            squad.replace("also = [\"squad_f1\"]", "also = [\"accuracy\"]"),
            "metric `accuracy` does not score a generation task",
        ),
        (
            "imdb.toml",
            imdb.replace("dev = \"train\"", "dev = \"test\""),
            "splits.dev_holdout_percent holds dev out of the train file: dev must be \"train\"",
        ),
        (
            "imdb.toml",
            imdb.replace("dev_holdout_percent = 10", "dev_holdout_percent = 100"),
            "splits.dev_holdout_percent 100 must be a percentage from 1 to 99",
        ),
    ];
    for (file, text, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), &text).unwrap();
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(err.contains(file), "{file}: {err}");
    }
}

#[test]
fn each_role_reads_its_split_file_and_rows() {
    use promptgrid_common::catalog::{Rows, SplitRole};
    let catalog = catalog();
    let imdb = &task(&catalog, "imdb").splits;
    assert_eq!(imdb.of(SplitRole::Train), ("train", Rows::Rest(10)));
    assert_eq!(imdb.of(SplitRole::Dev), ("train", Rows::HeldOut(10)));
    assert_eq!(imdb.of(SplitRole::Test), ("test", Rows::All));
    // No test split: scored on dev, read whole.
    let sst2 = &task(&catalog, "sst2").splits;
    assert_eq!(sst2.of(SplitRole::Test), ("validation", Rows::All));
    assert_eq!(sst2.of(SplitRole::Train), ("train", Rows::All));
}
