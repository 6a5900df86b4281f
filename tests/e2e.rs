//! End to end, as a user runs it: `promptgrid run sweeps/smoke.toml` in embedded mode on the
//! offline demo's real models and data, interrupted with Ctrl-C halfway and run again. The
//! second run resumes, the sweep completes, and the Parquet tables hold every job exactly once.
//! Before the second run the private NATS store is deleted, so the resume has to rebuild the
//! done jobs from the Parquet `jobs` table and put their prompts back from the results folder:
//! the transfer and TPT jobs that run then need them. A second, tiny run starts outside the
//! clone and must still write its report.
//!
//! Needs the demo assets that `scripts/setup` prepares (in `$PROMPTGRID_HOME/assets`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promptgrid_results::schema::{EvalRow, IndicatorRow, JobRow, MetricRow, TptRow};
use promptgrid_results::store::read_table;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn assets() -> PathBuf {
    let home = std::env::var_os("PROMPTGRID_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("promptgrid")
        });
    let assets = home.join("assets");
    assert!(
        assets.join("models/minilm-l3/config.json").is_file(),
        "the demo assets are missing under {}: run scripts/setup",
        assets.display()
    );
    assets
}

fn start(results: &Path) -> Child {
    let assets = assets();
    Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .current_dir(repo())
        .args([
            "run",
            "sweeps/smoke.toml",
            "--workers",
            "1",
            "--threads",
            "2",
            "--results",
        ])
        .arg(results)
        .arg("--models-root")
        .arg(assets.join("models"))
        .arg("--data-root")
        .arg(assets.join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start promptgrid run")
}

fn done_jobs(sweep: &Path) -> usize {
    if !sweep.join("jobs").is_dir() {
        return 0;
    }
    read_table::<JobRow>(sweep)
        .map(|rows| rows.iter().filter(|r| r.status == "done").count())
        .unwrap_or(0)
}

fn wait(mut child: Child, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for promptgrid") {
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut out);
            }
            return (status.success(), out);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("promptgrid run did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn smoke_sweep_survives_ctrl_c_and_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("runs");
    let sweep = results.join("smoke");
    // Per model (L6, L3): 2 train, 2·2 transfer (the other task and random; the diagonal is
    // the train job's eval), 3 activations; on L3 one TPT-task and 4 TPT-model runs; 2
    // projectors (one per objective), 2·2 cross-model scores.
    let total = 29;

    // First run: interrupt once a few jobs are committed.
    let first = start(&results);
    let deadline = Instant::now() + Duration::from_secs(600);
    while done_jobs(&sweep) < 3 {
        assert!(Instant::now() < deadline, "no progress in the first run");
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (complete, _) = wait(first, Duration::from_secs(120));
    assert!(
        !complete,
        "an interrupted run must not report a complete sweep"
    );
    let after_first = done_jobs(&sweep);
    assert!(
        (3..total).contains(&after_first),
        "{after_first} jobs done after Ctrl-C"
    );

    // The NATS server's data is lost; the results folder is all that is left.
    std::fs::remove_dir_all(sweep.join(".nats")).unwrap();
    assert!(
        sweep.join("artifacts/prompt").is_dir(),
        "the sink keeps prompt copies"
    );

    // Second run: resumes and completes.
    let (complete, out) = wait(start(&results), Duration::from_secs(900));
    assert!(complete, "the resumed run failed:\n{out}");
    assert!(
        out.contains(&format!("{total} of {total} jobs done")),
        "{out}"
    );
    assert!(out.contains("report:"), "{out}");

    // Every job done exactly once; no duplicate rows anywhere.
    let jobs: Vec<JobRow> = read_table(&sweep).unwrap();
    let done: Vec<&JobRow> = jobs.iter().filter(|r| r.status == "done").collect();
    let ids: HashSet<&str> = done.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(done.len(), total, "done rows: {done:?}");
    assert_eq!(ids.len(), total);
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for r in &done {
        *kinds.entry(r.kind.as_str()).or_default() += 1;
    }
    assert_eq!(
        kinds,
        HashMap::from([
            ("train", 4),
            ("transfer", 8),
            ("tpt", 5),
            ("activations", 6),
            ("projector", 2),
            ("cross_model", 4),
        ])
    );

    let metrics: Vec<MetricRow> = read_table(&sweep).unwrap();
    let keys: HashSet<(&str, i64, i64, &str)> = metrics
        .iter()
        .map(|m| (m.job_id.as_str(), m.attempt, m.step, m.name.as_str()))
        .collect();
    assert_eq!(keys.len(), metrics.len(), "duplicate metric rows");
    let metric = |job: &str, name: &str| {
        metrics
            .iter()
            .find(|m| m.job_id == job && m.name == name)
            .map(|m| m.value)
    };
    let dev = |job: &str| -> Vec<(i64, f64)> {
        metrics
            .iter()
            .filter(|m| m.job_id == job && m.name == "dev_score")
            .map(|m| (m.step, m.value))
            .collect()
    };
    // smoke.toml stops TPT at the first evaluation that matches the target's vanilla best: a
    // run that matched ends at that step, one that never matched runs its 20 steps.
    let tpt: Vec<TptRow> = read_table(&sweep).unwrap();
    let mut tpt_steps = 0.0;
    for t in done.iter().filter(|r| r.kind == "tpt") {
        let vanilla = done
            .iter()
            .find(|r| r.kind == "train" && r.model == t.model && r.task == t.task)
            .unwrap();
        let best = dev(&vanilla.job_id)
            .iter()
            .map(|d| d.1)
            .fold(f64::MIN, f64::max);
        let curve = dev(&t.job_id);
        let steps = metric(&t.job_id, "steps").unwrap();
        tpt_steps += steps;
        let row = tpt
            .iter()
            .find(|r| {
                r.model == t.model
                    && r.tgt == t.task.clone().unwrap_or_default()
                    && r.src_model == t.src_model
                    && r.objective == t.objective
                    && r.src == t.src_task.clone().unwrap_or_default()
            })
            .unwrap_or_else(|| panic!("no tpt row for {t:?}"));
        match metric(&t.job_id, "matched_step") {
            Some(at) => {
                assert_eq!(steps, at, "{t:?}");
                assert!(
                    curve.iter().any(|&(s, v)| s as f64 == at && v >= best),
                    "{curve:?}"
                );
                assert!(
                    curve.iter().all(|&(s, v)| s as f64 >= at || v < best),
                    "{curve:?}"
                );
                assert_eq!(row.steps_tpt, Some(at as i64), "{row:?}");
            }
            None => {
                assert_eq!(steps, 20.0, "{t:?}");
                assert!(curve.iter().all(|&(_, v)| v < best), "{curve:?} vs {best}");
                assert_eq!(row.steps_tpt, None, "{row:?}");
            }
        }
    }
    // Every train step of the final attempts logged a loss: 20 per train job and projector,
    // and each TPT run's own steps.
    let losses = metrics.iter().filter(|m| m.name == "loss").count();
    assert!(
        losses as f64 >= 4.0 * 20.0 + tpt_steps + 2.0 * 20.0,
        "{losses} loss rows"
    );

    let evals: Vec<EvalRow> = read_table(&sweep).unwrap();
    assert_eq!(
        evals.len(),
        total - 6 - 2,
        "one final score per scoring job"
    );
    let cross: Vec<&EvalRow> = evals.iter().filter(|e| e.kind == "cross_model").collect();
    assert_eq!(cross.len(), 4);
    for e in &cross {
        assert_eq!(e.src_model.as_deref(), Some("minilm-l6"), "{e:?}");
        let held_out = e.tgt_task == "demo-tweets";
        assert_eq!(e.held_out, Some(held_out), "{e:?}");
    }
    for e in &evals {
        assert!((0.0..=1.0).contains(&e.value), "{e:?}");
        assert_eq!(e.n, 1000, "the demo test splits hold 1,000 examples: {e:?}");
    }
    assert!(sweep.join("report.md").is_file());

    // ON for every ordered pair of the 3 masks per model (2 tasks and the random prompt), over
    // all layers and the official non-overlapping windows of 2: L6 has 6 layers ([0,2), [2,4),
    // [4,6)), L3 has 3 ([0,2), [2,3)).
    let on: Vec<IndicatorRow> = read_table::<IndicatorRow>(&sweep)
        .unwrap()
        .into_iter()
        .filter(|r| r.indicator == "ON")
        .collect();
    assert_eq!(on.len(), 9 * (1 + 3) + 9 * (1 + 2), "{on:?}");
    for r in on.iter().filter(|r| r.task_a == r.task_b) {
        assert!(
            (r.value.unwrap() - 1.0).abs() < 1e-12,
            "ON with itself: {r:?}"
        );
    }
    // The TPT-model runs are told apart from TPT-task runs by their source model and objective.
    let projected = tpt.iter().filter(|t| t.src_model.is_some()).count();
    assert_eq!((tpt.len(), projected), (5, 4), "{tpt:?}");
}

/// What broke: the report at the end of `promptgrid run` loaded the task catalog from
/// `sweeps/tasks` under the working directory, so a run started anywhere but the clone's root
/// finished its jobs and then only warned "the report failed", without report.md. The report
/// now takes task types from the sweep's own resolved tasks. The sweep names no catalog and has
/// no `tasks/` beside it, so its tasks come from the catalog built into the binary, as do those
/// of the one-job commands started there.
#[test]
fn run_started_outside_the_clone_writes_the_report() {
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    // The cheapest sweep with a report: one small model, one task, a few steps.
    let sweep = dir.path().join("tiny.toml");
    std::fs::write(
        &sweep,
        r#"[sweep]
name = "tiny"

[prompt]
length = 4
init = "vocab"
learning_rate = 0.3
batch_size = 8
max_text_tokens = 32
max_steps = 2
eval_every = 2
dev_examples = 16
seeds = [1]

[[model]]
name = "minilm-l3"
arch = "bert"
head = "tied"

[[task]]
name = "demo-movies"

[studies.cross_task]
split = "test"
"#,
    )
    .unwrap();
    let work = dir.path().join("elsewhere");
    std::fs::create_dir(&work).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .current_dir(&work)
        .args(["run", "--threads", "2"])
        .arg(&sweep)
        .arg("--models-root")
        .arg(assets.join("models"))
        .arg("--data-root")
        .arg(assets.join("data"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run promptgrid");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("report failed"), "{stderr}");
    // `--results` defaults to `runs` under the working directory.
    let report = work.join("runs/tiny/report.md");
    assert!(report.is_file(), "no {}:\n{stdout}", report.display());
    assert!(
        stdout.contains(&format!(
            "report: {}",
            Path::new("runs/tiny/report.md").display()
        )),
        "{stdout}"
    );
    // Every done job records what produced it, and the report says so.
    let jobs: Vec<JobRow> = read_table(&work.join("runs/tiny")).unwrap();
    let done: Vec<&JobRow> = jobs.iter().filter(|j| j.status == "done").collect();
    assert!(!done.is_empty());
    for j in &done {
        assert_eq!(
            j.promptgrid_version.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let commit = j.git_commit.as_deref().unwrap();
        assert!(
            commit == "unknown"
                || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{commit}"
        );
        let torch = j.torch_version.as_deref().unwrap();
        assert!(torch.starts_with("2."), "{torch}");
        assert_eq!(j.device.as_deref(), Some("cpu"));
        assert_eq!(j.precision.as_deref(), Some("fp32"));
        assert_eq!(j.threads, Some(2));
    }
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("## Provenance"), "{md}");
    assert!(!md.contains("Mixed setups"), "{md}");

    // A one-job command started there finds the same task in the built-in catalog.
    tune_tiny(
        &work,
        &[
            "--max-steps",
            "1",
            "--eval-every",
            "1",
            "--out",
            "p.safetensors",
        ],
    );
    assert!(work.join("p.safetensors").is_file());
}

/// `promptgrid tune` of a 4-token prompt on minilm-l3 / demo-movies with `extra` flags, started
/// in `cwd` with no `--catalog` (the built-in one); panics with its stderr when it fails.
fn tune_tiny(cwd: &Path, extra: &[&str]) -> std::process::Output {
    let assets = assets();
    let out = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .current_dir(cwd)
        .args([
            "tune",
            "--task",
            "demo-movies",
            "--head",
            "tied",
            "--threads",
            "2",
        ])
        .args([
            "--length",
            "4",
            "--dev-examples",
            "8",
            "--max-text-tokens",
            "32",
        ])
        .args(extra)
        .arg("--model")
        .arg(assets.join("models/minilm-l3"))
        .arg("--data")
        .arg(assets.join("data/demo-movies"))
        .output()
        .expect("run promptgrid tune");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The same `promptgrid tune` run twice with one seed writes byte-identical prompt files and
/// PEFT adapters and prints the same scores. The safetensors metadata was once written from a
/// `HashMap`, whose key order changes between processes: equal tensors, different bytes.
#[test]
fn tune_twice_with_one_seed_writes_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tune = |name: &str| {
        let out_file = format!("{name}.safetensors");
        let out = tune_tiny(
            dir.path(),
            &[
                "--max-steps",
                "3",
                "--eval-every",
                "3",
                "--batch-size",
                "4",
                "--seed",
                "7",
                "--out",
                &out_file,
                "--peft",
                name,
            ],
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
        (
            (report["best_dev"].clone(), report["test_score"].clone()),
            read(&format!("{name}.safetensors")),
            read(&format!("{name}/adapter_config.json")),
            read(&format!("{name}/adapter_model.safetensors")),
        )
    };
    let (a, b) = (tune("a"), tune("b"));
    assert!(a.0.1.is_f64(), "{:?}", a.0);
    assert_eq!(a.0, b.0, "the scores differ");
    assert!(a.1 == b.1, "the prompt files differ in bytes");
    assert!(a.2 == b.2, "the PEFT configs differ in bytes");
    assert!(a.3 == b.3, "the PEFT weights differ in bytes");
}

/// `promptgrid tune` runs what a sweep's train job runs: given the same settings (dropout and
/// AdamW's eps included), both write the same prompt.
#[test]
fn tune_writes_the_prompt_a_sweeps_train_job_writes() {
    let dir = tempfile::tempdir().unwrap();
    let assets = assets();
    let sweep = dir.path().join("same.toml");
    std::fs::write(
        &sweep,
        r#"[sweep]
name = "same"

[prompt]
length = 4
learning_rate = 0.3
batch_size = 4
max_steps = 3
eval_every = 3
max_text_tokens = 32
dev_examples = 8
dropout = 0.1
adam_eps = 1e-6
seeds = [7]

[[model]]
name = "minilm-l3"
arch = "bert"
head = "tied"
layout = "official"

[[task]]
name = "demo-movies"

[studies.cross_task]
"#,
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .args(["run"])
        .arg(&sweep)
        .args(["--workers", "1", "--threads", "2", "--results"])
        .arg(dir.path().join("runs"))
        .arg("--models-root")
        .arg(assets.join("models"))
        .arg("--data-root")
        .arg(assets.join("data"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let prompts: Vec<PathBuf> = std::fs::read_dir(dir.path().join("runs/same/artifacts/prompt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(prompts.len(), 1, "one train job: {prompts:?}");

    tune_tiny(
        dir.path(),
        &[
            "--layout",
            "official",
            "--learning-rate",
            "0.3",
            "--batch-size",
            "4",
            "--max-steps",
            "3",
            "--eval-every",
            "3",
            "--seed",
            "7",
            "--dropout",
            "0.1",
            "--adam-eps",
            "1e-6",
            "--out",
            "tuned.safetensors",
        ],
    );
    let prompt = |path: &Path| {
        tch::Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == "prompt")
            .unwrap()
            .1
    };
    let (job, tuned) = (
        prompt(&prompts[0]),
        prompt(&dir.path().join("tuned.safetensors")),
    );
    assert_eq!(tuned.size(), [4, 384]);
    assert!(
        job.equal(&tuned),
        "tune and the sweep's train job trained different prompts"
    );

    // The official T5 batches on an encoder are refused, as a sweep refuses them.
    let refused = Command::new(env!("CARGO_BIN_EXE_promptgrid"))
        .args([
            "tune",
            "--task",
            "demo-movies",
            "--head",
            "tied",
            "--official-padding",
        ])
        .arg("--model")
        .arg(assets.join("models/minilm-l3"))
        .arg("--data")
        .arg(assets.join("data/demo-movies"))
        .arg("--out")
        .arg(dir.path().join("never.safetensors"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--official-padding"), "{err}");
    assert!(!dir.path().join("never.safetensors").exists());
}
