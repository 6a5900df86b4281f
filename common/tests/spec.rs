//! Sweep files: the paper sweeps plan to the right job counts, job ids are stable and change
//! exactly when a setting that affects a result changes, and malformed sweeps are rejected with
//! a message that names the file, the key and the line.

use std::path::{Path, PathBuf};

use promptgrid_common::catalog::{Catalog, CatalogSource};
use promptgrid_common::graph::{JobGraph, JobId, JobKind};
use promptgrid_common::plan::{Plan, Roots};
use promptgrid_common::spec::{Head, Indicator, Init, Layout};
use promptgrid_common::{JobSpec, SpecError, Sweep};

fn sweeps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps")
}

fn catalog() -> Catalog {
    Catalog::load(&sweeps_dir().join("tasks")).expect("the catalog loads")
}

fn parse(text: &str) -> Result<Sweep, SpecError> {
    Sweep::parse(Path::new("bad.toml"), text, &catalog())
}

fn count(graph: &JobGraph, kind: JobKind) -> usize {
    graph.counts().get(&kind).copied().unwrap_or(0)
}

#[test]
fn paper_roberta_plans_the_full_grid() {
    let sweep = Sweep::load(&sweeps_dir().join("paper-roberta.toml")).unwrap();
    let graph = JobGraph::build(&sweep);
    let n = 13;
    // Per model: n prompts, n·n transfers (the n-1 other sources and random per target; the
    // diagonal is the train job's own eval), the 14 official TPT pairs, n+1 activation masks
    // (the random prompt too); one official projector (task objective) and its n scores.
    assert_eq!(count(&graph, JobKind::Train), 2 * n);
    assert_eq!(count(&graph, JobKind::Transfer), 2 * n * n);
    assert_eq!(count(&graph, JobKind::Tpt), 2 * 14);
    assert_eq!(count(&graph, JobKind::Activations), 2 * (n + 1));
    assert_eq!(count(&graph, JobKind::Projector), 1);
    assert_eq!(count(&graph, JobKind::CrossModel), n);
    assert_eq!(graph.len(), 26 + 338 + 28 + 28 + 1 + 13);
    // TPT trains at the official configs' 1e-3 on both backbones; the vanilla runs keep theirs.
    for (model, vanilla) in [("roberta-base", 1e-3), ("roberta-large", 1e-4)] {
        assert_eq!(sweep.settings(model, "sst2").learning_rate, vanilla);
        let tpt = graph.by_key(&format!("tpt/imdb->sst2/{model}/s1")).unwrap();
        match &tpt.spec {
            JobSpec::Tpt { settings, .. } => assert_eq!(settings.learning_rate, 1e-3),
            other => panic!("{other:?}"),
        }
    }
    // train -> projector -> cross_model is the longest chain.
    assert_eq!(graph.depth(), 3);
}

#[test]
fn paper_t5_plans_seventeen_tasks() {
    let sweep = Sweep::load(&sweeps_dir().join("paper-t5.toml")).unwrap();
    let graph = JobGraph::build(&sweep);
    let n = 17;
    assert_eq!(sweep.tasks.len(), n);
    assert_eq!(count(&graph, JobKind::Train), n);
    assert_eq!(count(&graph, JobKind::Transfer), n * n);
    assert_eq!(count(&graph, JobKind::Tpt), n * (n - 1));
    assert_eq!(count(&graph, JobKind::Activations), n + 1);
    assert_eq!(graph.depth(), 2);
    // Per-task overrides reach the job: the generation tasks read 384 text tokens, and QNLI,
    // laptop and SNLI train at 0.01 (config/*PromptT5.config).
    assert_eq!(sweep.settings("t5-base", "multi_news").max_text_tokens, 384);
    assert_eq!(sweep.settings("t5-base", "sst2").max_text_tokens, 128);
    for (task, lr) in [
        ("qnli", 0.01),
        ("laptop", 0.01),
        ("snli", 0.01),
        ("sst2", 0.005),
    ] {
        assert_eq!(sweep.settings("t5-base", task).learning_rate, lr, "{task}");
    }
    // Trained as the official code trains T5: AdamW eps 1e-6, train() mode, pads attended.
    for task in &sweep.tasks {
        let s = sweep.settings("t5-base", task.name());
        assert_eq!(
            (s.adam_eps, s.dropout, s.official_padding),
            (1e-6, 0.1, true),
            "{}",
            task.name()
        );
    }
}

#[test]
fn t5_jobs_carry_their_definitions_version_so_old_results_are_not_reused() {
    let t5 = SMALL.replace("arch = \"bert\"\nhead = \"tied\"", "arch = \"t5\"");
    let sweep = parse(&t5).unwrap();
    let graph = JobGraph::build(&sweep);
    let train = graph.by_key("train/demo-movies/m/s1").unwrap();
    // The id is the hash of the content with the family's version in it: without it, the same
    // spec hashes to another id, which a store of results computed the old way holds.
    let defs = promptgrid_common::spec::Arch::T5.definitions().unwrap();
    assert_eq!(defs, "t5@2");
    let planned = promptgrid_common::plan::planned_jobs(&sweep, &graph).unwrap();
    let listed = planned.iter().find(|j| j.key == train.key).unwrap();
    assert_eq!(listed.definitions, [defs]);
    assert_eq!(listed.id, train.id.0.to_string());
    // Every T5 job names the version; an encoder sweep's jobs name none and keep their ids.
    assert!(planned.iter().all(|j| j.definitions == [defs]));
    let bert = planned_of(SMALL);
    assert!(bert.iter().all(|j| j.definitions.is_empty()));
    // A stored graph is checked against the ids this build gives (graph.rs's unit test hashes
    // the content with and without the version).
    assert!(graph.ids_agree(&sweep, 1000));
}

fn planned_of(text: &str) -> Vec<promptgrid_common::plan::PlannedJob> {
    let sweep = parse(text).unwrap();
    promptgrid_common::plan::planned_jobs(&sweep, &JobGraph::build(&sweep)).unwrap()
}

#[test]
fn tpt_settings_replace_the_vanilla_ones_in_tpt_jobs_only() {
    let text = SMALL.replace(
        "pairs = \"all\"",
        "pairs = \"all\"\nlearning_rate = 0.01\nbatch_size = 4\nmax_steps = 7",
    );
    let graph = JobGraph::build(&parse(&text).unwrap());
    match &graph.by_key("tpt/demo-rt->demo-movies/m/s1").unwrap().spec {
        JobSpec::Tpt { settings, .. } => assert_eq!(
            (
                settings.learning_rate,
                settings.batch_size,
                settings.max_steps
            ),
            (0.01, 4, 7)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        id_of(&text, "train/demo-rt/m/s1"),
        id_of(SMALL, "train/demo-rt/m/s1")
    );
    assert_ne!(
        id_of(&text, "tpt/demo-rt->demo-movies/m/s1"),
        id_of(SMALL, "tpt/demo-rt->demo-movies/m/s1")
    );
    for (bad, key) in [
        ("learning_rate = 0.0", "studies.tpt.learning_rate"),
        ("batch_size = 0", "studies.tpt.batch_size"),
        ("max_steps = -1", "studies.tpt.max_steps"),
    ] {
        let text = SMALL.replace("pairs = \"all\"", &format!("pairs = \"all\"\n{bad}"));
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
}

#[test]
fn plan_lists_every_setting_of_a_job_defaults_included() {
    let planned = planned_of(SMALL);
    let train = planned
        .iter()
        .find(|j| j.key == "train/demo-rt/m/s1")
        .unwrap();
    let s = &train.spec["settings"];
    // Left out of the wire form at their defaults, shown here.
    assert_eq!(s["adam_eps"], 1e-8);
    assert_eq!(s["dropout"], 0.0);
    assert_eq!(s["official_padding"], false);
    assert_eq!(s["learning_rate"], 0.3);
    let tpt = planned
        .iter()
        .find(|j| j.key == "tpt/demo-rt->demo-movies/m/s1")
        .unwrap();
    assert!(tpt.deps.contains(&train.id));
}

#[test]
fn model_overrides_set_the_learning_rate_per_backbone() {
    let sweep = Sweep::load(&sweeps_dir().join("paper-roberta.toml")).unwrap();
    assert_eq!(sweep.settings("roberta-base", "sst2").learning_rate, 1e-3);
    assert_eq!(sweep.settings("roberta-large", "sst2").learning_rate, 1e-4);
}

#[test]
fn job_keys_are_readable() {
    let sweep = Sweep::load(&sweeps_dir().join("paper-roberta.toml")).unwrap();
    let graph = JobGraph::build(&sweep);
    for key in [
        "train/sst2/roberta-base/s1",
        "transfer/imdb->sst2/roberta-base/s1",
        "transfer/random->sst2/roberta-base/s1",
        "tpt/imdb->sst2/roberta-large/s1",
        "activations/random/roberta-base/s1",
        "projector/roberta-base->roberta-large/task/s1",
        "cross_model/qqp/roberta-base->roberta-large/task/s1",
    ] {
        assert!(graph.by_key(key).is_some(), "missing {key}");
    }
    let train = graph.by_key("train/imdb/roberta-base/s1").unwrap();
    assert_eq!(
        deps_of(&graph, "transfer/imdb->sst2/roberta-base/s1"),
        vec![train.id.clone()]
    );
}

const SMALL: &str = r#"
[sweep]
name = "small"

[prompt]
length = 20
learning_rate = 0.3
max_steps = 100
seeds = [1]

[[model]]
name = "m"
arch = "bert"
head = "tied"

[[task]]
name = "demo-movies"
[[task]]
name = "demo-rt"

[studies.cross_task]
[studies.tpt]
pairs = "all"
"#;

fn ids(text: &str) -> Vec<(String, String)> {
    let graph = JobGraph::build(&parse(text).unwrap());
    let mut v: Vec<(String, String)> = graph
        .jobs()
        .iter()
        .map(|j| (j.key.clone(), j.id.0.to_string()))
        .collect();
    v.sort();
    v
}

/// A task's own prompt scored on the test split is its train job's last eval: no transfer job
/// repeats it. Scored on dev, the diagonal is a transfer job like any other cell.
#[test]
fn the_diagonal_on_the_scored_split_is_the_train_jobs_eval() {
    let on_test = JobGraph::build(&parse(SMALL).unwrap());
    assert!(on_test.by_key("transfer/demo-rt->demo-rt/m/s1").is_none());
    assert!(
        on_test
            .by_key("transfer/demo-movies->demo-rt/m/s1")
            .is_some()
    );
    assert!(on_test.by_key("transfer/random->demo-rt/m/s1").is_some());
    assert_eq!(count(&on_test, JobKind::Transfer), 4);
    let dev = SMALL.replace(
        "[studies.cross_task]",
        "[studies.cross_task]\nsplit = \"dev\"",
    );
    let on_dev = JobGraph::build(&parse(&dev).unwrap());
    assert_eq!(
        deps_of(&on_dev, "transfer/demo-rt->demo-rt/m/s1"),
        vec![on_dev.by_key("train/demo-rt/m/s1").unwrap().id.clone()]
    );
    assert_eq!(count(&on_dev, JobKind::Transfer), 6);
}

fn id_of(text: &str, key: &str) -> String {
    let graph = JobGraph::build(&parse(text).unwrap());
    graph
        .by_key(key)
        .unwrap_or_else(|| panic!("no job {key}"))
        .id
        .0
        .to_string()
}

#[test]
fn a_model_with_its_own_seeds_multiplies_only_its_jobs() {
    // Model `m` runs the sweep's seed 1; `fast` runs seeds 1, 2 and 3, TPT at seed 1 only.
    let text = SMALL.replacen(
        "[[task]]",
        "[[model]]\nname = \"fast\"\narch = \"bert\"\nhead = \"tied\"\n\
         prompt = { seeds = [1, 2, 3] }\n\n[[task]]",
        1,
    );
    let sweep = parse(&with_tpt_seeds(&text)).unwrap();
    assert_eq!(sweep.seeds_of(sweep.model("m").unwrap()), [1]);
    assert_eq!(sweep.seeds_of(sweep.model("fast").unwrap()), [1, 2, 3]);
    let graph = JobGraph::build(&sweep);
    // Per model and seed: 2 prompts, 2·2 transfers (the other task and random per target);
    // TPT's 2 pairs at seed 1 only.
    assert_eq!(count(&graph, JobKind::Train), 2 + 3 * 2);
    assert_eq!(count(&graph, JobKind::Transfer), 4 + 3 * 4);
    assert_eq!(count(&graph, JobKind::Tpt), 2 + 2);
    for key in [
        "train/demo-movies/fast/s3",
        "transfer/random->demo-rt/fast/s2",
        "tpt/demo-rt->demo-movies/fast/s1",
    ] {
        assert!(graph.by_key(key).is_some(), "{key}");
    }
    for key in ["train/demo-movies/m/s2", "tpt/demo-rt->demo-movies/fast/s2"] {
        assert!(graph.by_key(key).is_none(), "{key}");
    }
    // Listing a model's seeds as the sweep's changes nothing: same jobs, same ids.
    let same = SMALL.replace(
        "head = \"tied\"",
        "head = \"tied\"\nprompt = { seeds = [1] }",
    );
    assert_eq!(ids(&same), ids(SMALL));
    assert_eq!(parse(&same).unwrap().models[0].seeds, None);
}

fn with_tpt_seeds(text: &str) -> String {
    text.replace("pairs = \"all\"", "pairs = \"all\"\nseeds = [1]")
}

#[test]
fn job_ids_are_stable_across_runs() {
    assert_eq!(ids(SMALL), ids(SMALL));
    // Stable across processes and builds too: a pinned value catches accidental changes to
    // what is hashed (bump the hash version on purpose when it must change).
    let id = id_of(SMALL, "train/demo-movies/m/s1");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn job_ids_ignore_what_does_not_change_results() {
    let renamed = SMALL.replace("name = \"small\"", "name = \"other\"\ndescription = \"x\"");
    assert_eq!(ids(SMALL), ids(&renamed));
    // Reordering the tasks changes nothing either.
    let reordered = SMALL.replace(
        "name = \"demo-movies\"\n[[task]]\nname = \"demo-rt\"",
        "name = \"demo-rt\"\n[[task]]\nname = \"demo-movies\"",
    );
    assert_ne!(reordered, SMALL);
    assert_eq!(ids(SMALL), ids(&reordered));
}

#[test]
fn job_ids_change_exactly_where_a_setting_changes() {
    let base_train_movies = id_of(SMALL, "train/demo-movies/m/s1");
    let base_train_rt = id_of(SMALL, "train/demo-rt/m/s1");
    let base_transfer = id_of(SMALL, "transfer/demo-movies->demo-rt/m/s1");
    let base_random = id_of(SMALL, "transfer/random->demo-rt/m/s1");

    // A per-task override changes that task's prompt, everything built on it, and nothing else.
    let edited = SMALL.replace(
        "[[task]]\nname = \"demo-movies\"",
        "[[task]]\nname = \"demo-movies\"\nprompt = { max_steps = 200 }",
    );
    assert_ne!(id_of(&edited, "train/demo-movies/m/s1"), base_train_movies);
    assert_ne!(
        id_of(&edited, "transfer/demo-movies->demo-rt/m/s1"),
        base_transfer
    );
    assert_eq!(id_of(&edited, "train/demo-rt/m/s1"), base_train_rt);
    assert_eq!(id_of(&edited, "transfer/random->demo-rt/m/s1"), base_random);

    // The model's readout changes every job of that model.
    let mlm = SMALL.replace("head = \"tied\"", "head = \"mlm\"");
    assert_ne!(id_of(&mlm, "train/demo-rt/m/s1"), base_train_rt);
    assert_ne!(id_of(&mlm, "transfer/random->demo-rt/m/s1"), base_random);

    // A different verbalizer changes the task's jobs.
    let words = SMALL.replace(
        "[[task]]\nname = \"demo-rt\"",
        "[[task]]\nname = \"demo-rt\"\nverbalizer = [\"bad\", \"good\"]",
    );
    assert_ne!(id_of(&words, "train/demo-rt/m/s1"), base_train_rt);
    assert_eq!(id_of(&words, "train/demo-movies/m/s1"), base_train_movies);

    // Stopping TPT when it matches the vanilla run changes the TPT jobs only; left at false,
    // the flag is not part of the job (ids of sweeps planned before it existed stay valid).
    let base_tpt = id_of(SMALL, "tpt/demo-rt->demo-movies/m/s1");
    let matched = SMALL.replace(
        "pairs = \"all\"",
        "pairs = \"all\"\nstop_when_matched = true",
    );
    assert_ne!(id_of(&matched, "tpt/demo-rt->demo-movies/m/s1"), base_tpt);
    assert_eq!(id_of(&matched, "train/demo-rt/m/s1"), base_train_rt);
    let unset = SMALL.replace(
        "pairs = \"all\"",
        "pairs = \"all\"\nstop_when_matched = false",
    );
    assert_eq!(id_of(&unset, "tpt/demo-rt->demo-movies/m/s1"), base_tpt);
    let graph = JobGraph::build(&parse(SMALL).unwrap());
    let wire = serde_json::to_string(&graph.by_key("tpt/demo-rt->demo-movies/m/s1").unwrap().spec)
        .unwrap();
    assert!(!wire.contains("stop_when_matched"), "{wire}");
    let graph = JobGraph::build(&parse(&matched).unwrap());
    let spec = &graph.by_key("tpt/demo-rt->demo-movies/m/s1").unwrap().spec;
    assert!(
        matches!(
            spec,
            JobSpec::Tpt {
                stop_when_matched: true,
                ..
            }
        ),
        "{spec:?}"
    );

    // A second seed adds jobs and keeps the first seed's.
    let seeds = SMALL.replace("seeds = [1]", "seeds = [1, 2]");
    assert_eq!(id_of(&seeds, "train/demo-rt/m/s1"), base_train_rt);
    assert_ne!(id_of(&seeds, "train/demo-rt/m/s2"), base_train_rt);
}

#[test]
fn dropout_and_adam_eps_enter_the_ids_of_tuning_jobs_only_when_set() {
    let base_train = id_of(SMALL, "train/demo-rt/m/s1");
    let base_tpt = id_of(SMALL, "tpt/demo-rt->demo-movies/m/s1");
    let base_random = id_of(SMALL, "transfer/random->demo-rt/m/s1");
    for setting in ["dropout = 0.1", "adam_eps = 1e-6"] {
        let set = SMALL.replace("seeds = [1]", &format!("seeds = [1]\n{setting}"));
        assert_ne!(id_of(&set, "train/demo-rt/m/s1"), base_train, "{setting}");
        assert_ne!(
            id_of(&set, "tpt/demo-rt->demo-movies/m/s1"),
            base_tpt,
            "{setting}"
        );
        assert_eq!(id_of(&set, "transfer/random->demo-rt/m/s1"), base_random);
    }
    // At their defaults they are not part of the job: sweeps planned before them keep their ids.
    let defaults = SMALL.replace("seeds = [1]", "seeds = [1]\ndropout = 0.0\nadam_eps = 1e-8");
    assert_eq!(ids(&defaults), ids(SMALL));
    let set = SMALL.replace("seeds = [1]", "seeds = [1]\ndropout = 0.1\nadam_eps = 1e-6");
    let graph = JobGraph::build(&parse(&set).unwrap());
    match &graph.by_key("train/demo-rt/m/s1").unwrap().spec {
        JobSpec::Train { settings, .. } => {
            assert_eq!((settings.dropout, settings.adam_eps), (0.1, 1e-6));
        }
        other => panic!("{other:?}"),
    }
    for bad in ["dropout = 1.0", "dropout = -0.1", "adam_eps = 0.0"] {
        let text = SMALL.replace("seeds = [1]", &format!("seeds = [1]\n{bad}"));
        let err = parse(&text).unwrap_err().to_string();
        let key = bad.split(' ').next().unwrap();
        assert!(err.contains(key), "{bad}: {err}");
    }
}

#[test]
fn plan_lists_jobs_whose_inputs_are_missing() {
    let sweep = parse(SMALL).unwrap();
    let graph = JobGraph::build(&sweep);
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let data = dir.path().join("data");
    std::fs::create_dir_all(models.join("m")).unwrap();
    std::fs::write(models.join("m/config.json"), "{}").unwrap();
    for split in ["train", "dev", "test"] {
        std::fs::create_dir_all(data.join("demo-movies")).unwrap();
        std::fs::write(data.join("demo-movies").join(format!("{split}.jsonl")), "").unwrap();
    }
    let roots = Roots {
        models: Some(models),
        data: Some(data),
    };
    let plan = Plan::new(&sweep, &graph, &roots);
    // demo-rt has no data: its train (and so every job on its prompt), its TPT and every
    // transfer onto it are blocked.
    let whats: Vec<&str> = plan.missing.iter().map(|m| m.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "dev split of `demo-rt`",
            "eval split of `demo-rt`",
            "train split of `demo-rt`"
        ]
    );
    let train = plan
        .missing
        .iter()
        .find(|m| m.what == "train split of `demo-rt`")
        .unwrap();
    // train(demo-rt), tpt(demo-rt->movies), tpt(movies->demo-rt), transfer(rt->movies)
    assert_eq!(train.blocked_jobs, 4);
    assert_eq!(train.job, "train/demo-rt/m/s1");
}

#[test]
fn synthetic_sweeps_expand_deterministically() {
    let text = r#"
[sweep]
name = "syn"
[[model]]
name = "m"
arch = "bert"
[[task]]
name = "demo-rt"
[synthetic]
count = 500
fan_in = 2
duration_ms = [0, 10]
fail_probability = 0.1
seed = 7
"#;
    let a = JobGraph::build(&parse(text).unwrap());
    let b = JobGraph::build(&parse(text).unwrap());
    assert_eq!(count(&a, JobKind::Synthetic), 500);
    let ka: Vec<_> = a.jobs().iter().map(|j| &j.id).collect();
    let kb: Vec<_> = b.jobs().iter().map(|j| &j.id).collect();
    assert_eq!(ka, kb);
    assert_eq!(a.dep_table(), b.dep_table());
    let failing = a
        .jobs()
        .iter()
        .filter(|j| {
            matches!(
                j.spec,
                promptgrid_common::JobSpec::Synthetic { fail: true, .. }
            )
        })
        .count();
    assert!(
        (20..=80).contains(&failing),
        "{failing} of 500 fail at p = 0.1"
    );
    assert!(a.depth() > 2);
}

/// A malformed sweep, the line its error must point at, and words the message must hold.
struct Bad {
    what: &'static str,
    text: String,
    line: usize,
    needles: &'static [&'static str],
}

fn with(from: &str, to: &str) -> String {
    assert!(SMALL.contains(from), "SMALL has no {from:?}");
    SMALL.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in the sweep"));
    text[..offset].matches('\n').count() + 1
}

fn bad_sweeps() -> Vec<Bad> {
    let mut v = Vec::new();
    let mut add = |what, text: String, at: &str, needles| {
        let line = line_of(&text, at);
        v.push(Bad {
            what,
            text,
            line,
            needles,
        });
    };
    add(
        "official T5 padding on an encoder",
        SMALL.replace(
            "max_steps = 100",
            "max_steps = 100\nofficial_padding = true",
        ),
        "official_padding = true",
        &["`official_padding`", "is an encoder", "T5 models only"],
    );
    add(
        "unknown task",
        with("name = \"demo-rt\"", "name = \"sst-3\""),
        "\"sst-3\"",
        &["task.name", "unknown task `sst-3`", "demo-movies"],
    );
    add(
        "duplicate task",
        with("name = \"demo-rt\"", "name = \"demo-movies\""),
        "name = \"demo-movies\"\n\n[studies",
        &["task.name", "`demo-movies` is listed twice"],
    );
    let two_models = with(
        "[[task]]",
        "[[model]]\nname = \"m\"\narch = \"roberta\"\n\n[[task]]",
    );
    add(
        "duplicate model",
        two_models,
        "name = \"m\"\narch = \"roberta\"",
        &["model.name", "`m` is defined twice"],
    );
    add(
        "unknown model in cross_model",
        format!(
            "{SMALL}\n[[studies.cross_model]]\nsrc = \"m\"\ntgt = \"nope\"\nobjectives = [\"distance\"]\ntrain_tasks = [\"demo-rt\"]\n"
        ),
        "\"nope\"",
        &["studies.cross_model.tgt", "unknown model `nope`"],
    );
    add(
        "zero prompt length",
        with("length = 20", "length = 0"),
        "length = 0",
        &["prompt.length", "positive whole number, not 0"],
    );
    add(
        "negative prompt length",
        with("length = 20", "length = -5"),
        "length = -5",
        &["prompt.length", "not -5"],
    );
    add(
        "zero learning rate",
        with("learning_rate = 0.3", "learning_rate = 0.0"),
        "learning_rate = 0.0",
        &["prompt.learning_rate", "positive number"],
    );
    add(
        "negative learning rate",
        with("learning_rate = 0.3", "learning_rate = -0.1"),
        "learning_rate = -0.1",
        &["prompt.learning_rate", "positive number, not -0.1"],
    );
    add(
        "nan learning rate",
        with("learning_rate = 0.3", "learning_rate = nan"),
        "learning_rate = nan",
        &["prompt.learning_rate", "NaN"],
    );
    add(
        "learning rate as text",
        with("learning_rate = 0.3", "learning_rate = \"fast\""),
        "\"fast\"",
        &["invalid type", "string"],
    );
    add(
        "length as float",
        with("length = 20", "length = 2.5"),
        "2.5",
        &["invalid type", "float"],
    );
    add(
        "unknown study",
        format!("{SMALL}\n[studies.zero_shot]\n"),
        "zero_shot",
        &["unknown field `zero_shot`", "cross_task"],
    );
    add(
        "unknown prompt key",
        with("length = 20", "lenght = 20"),
        "lenght",
        &["unknown field `lenght`"],
    );
    add(
        "verbalizer words do not match the labels",
        with(
            "name = \"demo-rt\"",
            "name = \"demo-rt\"\nverbalizer = [\"bad\", \"ok\", \"good\"]",
        ),
        "verbalizer",
        &["task.verbalizer", "3 words for the 2 labels"],
    );
    add(
        "unknown arch",
        with("arch = \"bert\"", "arch = \"gpt2\""),
        "\"gpt2\"",
        &["unknown variant `gpt2`"],
    );
    add(
        "unknown head",
        with("head = \"tied\"", "head = \"linear\""),
        "\"linear\"",
        &["unknown variant `linear`"],
    );
    add(
        "unknown init",
        with("length = 20", "length = 20\ninit = \"zeros\""),
        "init",
        &["prompt.init", "`zeros`"],
    );
    add(
        "model path escaping the root",
        with("arch = \"bert\"", "arch = \"bert\"\npath = \"../../etc\""),
        "path",
        &["model.path", "without `..`"],
    );
    add(
        "absolute model path",
        with("arch = \"bert\"", "arch = \"bert\"\npath = \"/models/m\""),
        "path",
        &["model.path", "relative path"],
    );
    add(
        "bad sweep name",
        with("name = \"small\"", "name = \"my sweep\""),
        "\"my sweep\"",
        &["sweep.name", "letters, digits"],
    );
    add(
        "empty seeds",
        with("seeds = [1]", "seeds = []"),
        "seeds",
        &["prompt.seeds", "at least one seed"],
    );
    add(
        "duplicate seeds",
        with("seeds = [1]", "seeds = [1, 1]"),
        "seeds",
        &["prompt.seeds", "seed 1 is listed twice"],
    );
    add(
        "unknown tpt pairs",
        with("pairs = \"all\"", "pairs = \"most\""),
        "\"most\"",
        &["studies.tpt.pairs", "`most`"],
    );
    add(
        "tpt pair naming an unknown task",
        with("pairs = \"all\"", "pairs = [[\"demo-rt\", \"imdb\"]]"),
        "pairs",
        &["studies.tpt.pairs", "`imdb` is not a task of this sweep"],
    );
    add(
        "tpt on an unknown model",
        with("pairs = \"all\"", "pairs = \"all\"\nmodels = [\"m2\"]"),
        "models",
        &["studies.tpt.models", "unknown model `m2`"],
    );
    add(
        "tpt top_k without by",
        with("pairs = \"all\"", "pairs = \"all\"\ntop_k = 3"),
        "top_k",
        &["studies.tpt.top_k", "needs `by`"],
    );
    add(
        "unknown indicator",
        format!("{SMALL}\n[studies.indicators]\nlist = [\"e_concat\", \"kl\"]\n"),
        "list",
        &["studies.indicators.list", "unknown indicator `kl`"],
    );
    add(
        "zero batch size",
        with("max_steps = 100", "max_steps = 100\nbatch_size = 0"),
        "batch_size",
        &["prompt.batch_size", "not 0"],
    );
    add(
        "duplicate seeds on a model",
        with(
            "head = \"tied\"",
            "head = \"tied\"\nprompt = { seeds = [2, 2] }",
        ),
        "seeds = [2, 2]",
        &["model.prompt.seeds", "seed 2 is listed twice"],
    );
    add(
        "seeds on a task",
        with(
            "name = \"demo-rt\"",
            "name = \"demo-rt\"\nprompt = { seeds = [2] }",
        ),
        "seeds = [2]",
        &["task.prompt.seeds", "for a model, not for a task"],
    );
    add(
        "tpt seed no model runs",
        with("pairs = \"all\"", "pairs = \"all\"\nseeds = [1, 5]"),
        "seeds = [1, 5]",
        &[
            "studies.tpt.seeds",
            "seed 5 is not a seed of any model TPT runs on",
        ],
    );
    add(
        "generation task on an encoder",
        with("name = \"demo-rt\"", "name = \"squad\""),
        "\"squad\"",
        &[
            "task.name",
            "generation task, T5 only",
            "model `m` is an encoder",
        ],
    );
    add(
        "head on T5",
        with("arch = \"bert\"", "arch = \"t5\""),
        "head",
        &["model.head", "is T5"],
    );
    add(
        "type error: a number as a name",
        with("name = \"m\"", "name = 5"),
        "name = 5",
        &["invalid type", "integer"],
    );
    add(
        "missing model arch",
        with("arch = \"bert\"\n", ""),
        "[[model]]",
        &["missing field `arch`"],
    );
    v
}

#[test]
fn malformed_sweeps_are_rejected_with_file_key_and_line() {
    let cases = bad_sweeps();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for case in cases {
        let err = match parse(&case.text) {
            Ok(_) => panic!("{}: accepted", case.what),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(message.starts_with("bad.toml:"), "{}: {message}", case.what);
        assert_eq!(
            err.location().unwrap().line,
            case.line,
            "{}: {message}",
            case.what
        );
        for needle in case.needles {
            assert!(
                message.contains(needle),
                "{}: {message:?} lacks {needle:?}",
                case.what
            );
        }
    }
}

#[test]
fn a_missing_sweep_file_names_the_file() {
    let err = Sweep::load(Path::new("no/such/sweep.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no/such/sweep.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn a_top_k_tpt_job_waits_for_every_candidate_source_of_its_target() {
    // Three tasks: each target has two candidate sources.
    let three = SMALL.replace(
        "[[task]]\nname = \"demo-rt\"",
        "[[task]]\nname = \"demo-rt\"\n[[task]]\nname = \"demo-tweets\"",
    );
    let key = |g: &JobGraph, k: &str| g.by_key(k).unwrap().id.clone();
    let plain = JobGraph::build(&parse(&three).unwrap());
    let job = plain.by_key("tpt/demo-rt->demo-movies/m/s1").unwrap();
    assert_eq!(
        deps_of(&plain, &job.key).len(),
        2,
        "ungated: its source and its target"
    );
    assert_eq!(job.gate, None);

    let by_prompt = three.replace(
        "pairs = \"all\"",
        "pairs = \"all\"\ntop_k = 1\nby = \"c_average\"",
    );
    let g = JobGraph::build(&parse(&by_prompt).unwrap());
    let job = g.by_key("tpt/demo-rt->demo-movies/m/s1").unwrap();
    let mut want = vec![
        key(&g, "train/demo-movies/m/s1"),
        key(&g, "train/demo-rt/m/s1"),
        key(&g, "train/demo-tweets/m/s1"),
    ];
    want.sort();
    assert_eq!(deps_of(&g, &job.key), want);
    assert_eq!(job.gate, Some((1, Indicator::CAverage)));

    // Ranked by ON: the candidates' and the target's activation masks too.
    let by_on = three.replace("pairs = \"all\"", "pairs = \"all\"\ntop_k = 1\nby = \"on\"");
    let g = JobGraph::build(&parse(&by_on).unwrap());
    let job = g.by_key("tpt/demo-rt->demo-movies/m/s1").unwrap();
    let deps = deps_of(&g, &job.key);
    assert_eq!(deps.len(), 6);
    for task in ["demo-movies", "demo-rt", "demo-tweets"] {
        let masks = key(&g, &format!("activations/{task}/m/s1"));
        assert!(deps.contains(&masks), "{task}");
    }
}

/// The ids of the dependencies of the job keyed `key`, sorted.
fn deps_of(graph: &JobGraph, key: &str) -> Vec<JobId> {
    let i = graph.jobs().iter().position(|j| j.key == key).unwrap();
    let mut ids: Vec<JobId> = graph.dep_ids(i).cloned().collect();
    ids.sort();
    ids
}

fn with_sets(sets: &[&str]) -> Result<Sweep, SpecError> {
    let sets: Vec<_> = sets.iter().map(|s| s.parse().unwrap()).collect();
    Sweep::load_with(&sweeps_dir().join("paper-roberta.toml"), &sets)
}

#[test]
fn set_overrides_change_settings_and_job_ids_like_an_edited_file() {
    let base = Sweep::load(&sweeps_dir().join("paper-roberta.toml")).unwrap();
    let sweep = with_sets(&[
        "prompt.max_steps=2",
        "task.sst2.prompt.eval_every=1",
        "studies.cross_model.*.steps=3",
    ])
    .unwrap();
    assert_eq!(sweep.settings("roberta-base", "imdb").max_steps, 2);
    assert_eq!(sweep.settings("roberta-large", "sst2").max_steps, 2);
    assert_eq!(sweep.settings("roberta-base", "sst2").eval_every, 1);
    assert_ne!(sweep.settings("roberta-base", "imdb").eval_every, 1);
    assert_eq!(sweep.studies.cross_model[0].settings.steps, 3);
    // Same grid; every trained prompt has another id, while the random prompt's jobs (its
    // transfers and its activation mask) do not depend on the steps and keep theirs.
    let (a, b) = (JobGraph::build(&base), JobGraph::build(&sweep));
    assert_eq!(a.counts(), b.counts());
    let ids = |g: &JobGraph| {
        g.jobs()
            .iter()
            .map(|j| j.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let trained = |g: &JobGraph| {
        g.jobs()
            .iter()
            .filter(|j| j.kind() == JobKind::Train)
            .map(|j| j.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(trained(&a).is_disjoint(&trained(&b)));
    assert_eq!(trained(&b).len(), 26);
    let kept = ids(&a).intersection(&ids(&b)).count();
    assert_eq!(
        kept,
        2 * 13 + 2,
        "random→t transfers and random masks, per model"
    );
    // The same overrides give the same ids: status and retry find the coordinator's jobs.
    let again = with_sets(&[
        "prompt.max_steps=2",
        "task.sst2.prompt.eval_every=1",
        "studies.cross_model.*.steps=3",
    ])
    .unwrap();
    assert_eq!(ids(&JobGraph::build(&again)), ids(&b));
}

#[test]
fn a_bad_override_is_named_and_a_bad_file_keeps_its_line() {
    let e = with_sets(&["prompt.max_steps=-1"]).unwrap_err();
    assert!(e.location().is_none());
    let msg = e.to_string();
    assert!(
        msg.contains("paper-roberta.toml with --set prompt.max_steps=-1: "),
        "{msg}"
    );
    let e = with_sets(&["prompt.max_stpes=2"]).unwrap_err();
    assert!(e.to_string().contains("max_stpes"), "{e}");
    let e = with_sets(&["task.nosuchtask.prompt.max_steps=2"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set task.nosuchtask.prompt.max_steps=2: no element of the array matches"
    );
    // A fault of the file itself is reported at its line even when overrides are given.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tasks")).unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[sweep]\nname = \"bad name\"\n").unwrap();
    let sets = vec!["prompt.max_steps=2".parse().unwrap()];
    let e = Sweep::load_with(&file, &sets).unwrap_err();
    assert_eq!(e.location().map(|l| l.line), Some(2), "{e}");
}

#[test]
fn head_and_layout_parse_the_words_a_sweep_file_uses() {
    for head in [Head::Mlm, Head::Tied] {
        let word = serde_json::to_value(head).unwrap();
        assert_eq!(word.as_str().unwrap().parse::<Head>(), Ok(head));
    }
    for layout in [Layout::Prefix, Layout::Official] {
        let word = serde_json::to_value(layout).unwrap();
        assert_eq!(word.as_str().unwrap().parse::<Layout>(), Ok(layout));
    }
    assert_eq!("mlm".parse::<Head>(), Ok(Head::Mlm));
    assert_eq!("official".parse::<Layout>(), Ok(Layout::Official));
    assert_eq!(
        "linear".parse::<Head>().unwrap_err().to_string(),
        r#"head "linear": expected mlm or tied"#
    );
    assert_eq!(
        "Prefix".parse::<Layout>().unwrap_err().to_string(),
        r#"layout "Prefix": expected prefix or official"#
    );
}

#[test]
fn init_parses_the_sweep_form_into_any_kind_of_file_name() {
    assert_eq!("random".parse::<Init>(), Ok(Init::Random));
    assert_eq!("vocab".parse::<Init<PathBuf>>(), Ok(Init::Vocab));
    assert_eq!(
        "from:prompts/sst2.safetensors".parse::<Init>(),
        Ok(Init::From("prompts/sst2.safetensors".to_string()))
    );
    assert_eq!(
        "from:/abs/p.safetensors".parse::<Init<PathBuf>>(),
        Ok(Init::From(PathBuf::from("/abs/p.safetensors")))
    );
    for bad in ["from:", "zeros", "prompts/sst2.safetensors"] {
        assert_eq!(
            bad.parse::<Init>().unwrap_err().to_string(),
            format!("prompt init {bad:?}: expected random, vocab or from:<prompt file>")
        );
    }
}

#[test]
fn init_maps_only_the_prompt_file() {
    let root = Path::new("/models");
    let init: Init = Init::From("p.safetensors".to_string());
    assert_eq!(
        init.as_ref().map(|f| root.join(f)),
        Init::From(PathBuf::from("/models/p.safetensors"))
    );
    let inside = |f: String| {
        if f.contains("..") {
            Err(f)
        } else {
            Ok(f.len())
        }
    };
    assert_eq!(init.try_map(inside), Ok(Init::From(13)));
    let escaping: Init = Init::From("../p".to_string());
    assert_eq!(escaping.try_map(inside), Err("../p".to_string()));
    // Random and Vocab name no file: the function never runs.
    assert_eq!(
        Init::<String>::Vocab.try_map(Err::<usize, _>),
        Ok(Init::Vocab)
    );
}

#[test]
fn init_keeps_its_wire_form() {
    // Job ids hash the settings' JSON: the generic Init must serialize as the plain one did.
    assert_eq!(
        serde_json::to_string(&Init::<String>::Random).unwrap(),
        r#""random""#
    );
    assert_eq!(
        serde_json::to_string(&Init::From("p.safetensors".to_string())).unwrap(),
        r#"{"from":"p.safetensors"}"#
    );
    let back: Init = serde_json::from_str(r#"{"from":"p.safetensors"}"#).unwrap();
    assert_eq!(back, Init::From("p.safetensors".to_string()));
}

/// `text` as `small.toml` in a fresh folder, with a `tasks/` folder holding `tasks` (file name,
/// text) when given.
fn sweep_in_temp(text: &str, tasks: Option<&[(&str, String)]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(tasks) = tasks {
        std::fs::create_dir(dir.path().join("tasks")).unwrap();
        for (name, text) in tasks {
            std::fs::write(dir.path().join("tasks").join(name), text).unwrap();
        }
    }
    let file = dir.path().join("small.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

#[test]
fn a_sweep_without_a_tasks_folder_beside_it_uses_the_builtin_catalog() {
    // An installed binary run outside the clone used to fail with "tasks: cannot read".
    let (_dir, file) = sweep_in_temp(SMALL, None);
    let sweep = Sweep::load(&file).unwrap();
    assert_eq!(sweep.catalog, CatalogSource::Builtin);
    let builtin = Catalog::builtin().unwrap();
    assert_eq!(
        &sweep.task("demo-rt").unwrap().def,
        builtin.get("demo-rt").unwrap()
    );
    let resolved = sweep.load_catalog().unwrap();
    assert!(resolved.names().eq(builtin.names()));
}

#[test]
fn a_sweep_beside_a_tasks_folder_uses_that_folder() {
    let task = |name: &str| std::fs::read_to_string(sweeps_dir().join("tasks").join(name)).unwrap();
    let edited = task("demo-rt.toml").replacen("title = ", "title = \"edited\"\n# was ", 1);
    let tasks = [
        ("demo-movies.toml", task("demo-movies.toml")),
        ("demo-rt.toml", edited),
    ];
    let (dir, file) = sweep_in_temp(SMALL, Some(&tasks));
    let sweep = Sweep::load(&file).unwrap();
    assert_eq!(
        sweep.catalog,
        CatalogSource::Folder(dir.path().join("tasks"))
    );
    // The edited file, not the built-in definition.
    assert_eq!(sweep.task("demo-rt").unwrap().def.title, "edited");
    assert!(
        sweep
            .load_catalog()
            .unwrap()
            .names()
            .eq(["demo-movies", "demo-rt"])
    );
    // The folder replaces the built-in catalog: a task only the latter has is unknown.
    let tweets = SMALL.replace("name = \"demo-rt\"", "name = \"demo-tweets\"");
    std::fs::write(&file, tweets).unwrap();
    let err = Sweep::load(&file).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("unknown task `demo-tweets`; the catalog has: demo-movies, demo-rt"),
        "{err}"
    );
    // The clone's sweeps read the clone's sweeps/tasks.
    let paper = Sweep::load(&sweeps_dir().join("paper-roberta.toml")).unwrap();
    assert_eq!(
        paper.catalog,
        CatalogSource::Folder(sweeps_dir().join("tasks"))
    );
}

#[test]
fn a_catalog_setting_that_cannot_be_read_names_the_folder() {
    // Set explicitly, the folder must exist: no fall back to tasks/ or the built-in catalog.
    let text = SMALL.replace("name = \"small\"", "name = \"small\"\ncatalog = \"nope\"");
    let (dir, file) = sweep_in_temp(&text, Some(&[]));
    let err = Sweep::load(&file).unwrap_err();
    let folder = dir.path().join("nope");
    assert_eq!(err.location().map(|l| l.file.clone()), Some(folder.clone()));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", folder.display())),
        "{err}"
    );
}

#[test]
fn a_sweep_json_from_before_the_catalog_field_still_decodes() {
    // manifest/sweep.json as a coordinator without `Sweep::catalog` stored it.
    let sweep = parse(SMALL).unwrap();
    assert_eq!(
        sweep.catalog,
        CatalogSource::Folder(sweeps_dir().join("tasks"))
    );
    let mut json = serde_json::to_value(&sweep).unwrap();
    let stored = json.as_object_mut().unwrap().remove("catalog");
    assert_eq!(
        stored,
        Some(serde_json::json!({ "folder": sweeps_dir().join("tasks") }))
    );
    let old: Sweep = serde_json::from_value(json).unwrap();
    assert_eq!(old.catalog, CatalogSource::Builtin);
    assert_eq!(old.tasks, sweep.tasks);
}
