//! The analysis on a synthetic study with planted answers.

use std::collections::HashMap;
use std::path::Path;

use promptgrid_results::schema::{CrossModelRow, EvalRow, IndicatorRow, JobRow, MetricRow, TptRow};
use promptgrid_results::store::read_table;
use promptgrid_results::{ResultsError, TableWriter, report};

use crate::util::{assert_close, eval, job, metric};

pub const TASKS: [&str; 4] = ["sst2", "imdb", "mnli", "snli"];

fn types() -> HashMap<&'static str, &'static str> {
    [
        ("sst2", "sentiment"),
        ("imdb", "sentiment"),
        ("mnli", "nli"),
        ("snli", "nli"),
    ]
    .into_iter()
    .collect()
}

/// Planted relative transfer (%) s→t: 90 within a type, 40 across, 30 for the random prompt;
/// every task scores 0.8 on its own prompt.
pub fn planted_relative(s: &str, t: &str) -> f64 {
    let ty = types();
    match (s, t) {
        _ if s == t => 100.0,
        ("random", _) => 30.0,
        _ if ty[s] == ty[t] => 90.0,
        _ => 40.0,
    }
}

/// Writes a synthetic study to `dir`: evals, jobs and dev curves, and indicators.
pub fn write_study(dir: &Path) {
    let ty = types();
    let mut evals = Vec::new();
    for t in TASKS {
        for s in TASKS.iter().copied().chain(["random"]) {
            evals.push(eval("m", s, t, 0.8 * planted_relative(s, t) / 100.0, &ty));
        }
    }
    // Prompts of sst2 projected from model m0 onto m, with two projector objectives.
    for (objective, value) in [("distance", 0.6), ("task", 0.72)] {
        let mut e = eval("m", "sst2", "sst2", value, &ty);
        e.job_id = format!("cross-{objective}");
        e.kind = "cross_model".into();
        e.src_model = Some("m0".into());
        e.objective = Some(objective.into());
        e.held_out = Some(objective == "task");
        evals.push(e);
    }
    // A replayed batch must not change anything.
    let mut ew = TableWriter::<EvalRow>::open(dir, "sink").unwrap();
    ew.append(&evals).unwrap();
    assert_eq!(ew.append(&evals[..5]).unwrap().written, 0);

    // Vanilla on sst2 reaches its best 0.8 at step 800; TPT from imdb reaches 0.8 at step 200
    // (speedup 4); TPT from mnli peaks at 0.7 (never).
    let jobs = vec![
        job("v-sst2", "train", "m", "sst2", None, 1),
        job("t-imdb-sst2", "tpt", "m", "sst2", Some("imdb"), 1),
        job("t-mnli-sst2", "tpt", "m", "sst2", Some("mnli"), 1),
        // Gated out by top_k: it reports that instead of a curve.
        job("t-qqp-sst2", "tpt", "m", "sst2", Some("qqp"), 1),
    ];
    TableWriter::<JobRow>::open(dir, "sink")
        .unwrap()
        .append(&jobs)
        .unwrap();
    let mut metrics = Vec::new();
    for step in (100..=1000).step_by(100) {
        let v = if step >= 800 {
            0.8
        } else {
            step as f64 / 1000.0
        };
        metrics.push(metric(
            "v-sst2",
            1,
            step,
            "dev_score",
            if step == 900 { 0.75 } else { v },
        ));
        metrics.push(metric("v-sst2", 1, step, "loss", 1.0 / step as f64));
        metrics.push(metric(
            "t-imdb-sst2",
            1,
            step,
            "dev_score",
            if step >= 200 { 0.82 } else { 0.5 },
        ));
        metrics.push(metric(
            "t-mnli-sst2",
            1,
            step,
            "dev_score",
            (step as f64 / 1000.0).min(0.7),
        ));
    }
    metrics.push(metric("t-qqp-sst2", 1, 0, "gated_out", 1.0));
    // A first attempt of the imdb TPT that died early: attempt 2's value wins at step 200.
    metrics.push(metric("t-imdb-sst2", 0, 200, "dev_score", 0.1));
    let mut mw = TableWriter::<MetricRow>::open(dir, "sink").unwrap();
    mw.append(&metrics[..20]).unwrap();
    mw.append(&metrics[15..]).unwrap();

    // Indicator X ranks sources exactly like relative transfer, Y the other way round.
    let mut ind = Vec::new();
    for s in TASKS.iter().copied().chain(["random"]) {
        for t in TASKS {
            let r = planted_relative(s, t);
            for (name, v) in [("X", r), ("Y", -r)] {
                ind.push(IndicatorRow {
                    model: "m".into(),
                    task_a: s.into(),
                    task_b: t.into(),
                    indicator: name.into(),
                    layers: None,
                    value: Some(v),
                });
            }
        }
    }
    TableWriter::<IndicatorRow>::open(dir, "indicators")
        .unwrap()
        .append(&ind)
        .unwrap();
}

#[test]
fn report_recovers_the_planted_answers() {
    let dir = tempfile::tempdir().unwrap();
    write_study(dir.path());
    let r = report(dir.path()).unwrap();
    assert!(r.gaps.is_empty(), "{:?}", r.gaps);
    let t = &r.transfer[0];
    assert_eq!(t.model, "m");
    // Grouped by type: nli first, then sentiment.
    assert_eq!(t.tasks, ["mnli", "snli", "imdb", "sst2"]);
    for s in TASKS.iter().copied().chain(["random"]) {
        for tg in TASKS {
            assert_close(
                t.relative(s, tg).unwrap().relative,
                planted_relative(s, tg),
                1e-9,
                &format!("{s}→{tg}"),
            );
        }
    }
    assert_close(t.within_type.unwrap(), 90.0, 1e-9, "within");
    assert_close(t.across_types.unwrap(), 40.0, 1e-9, "across");
    // Each source: one same-type target (+60) and two other-type targets (+10) over random.
    for v in &t.vs_random {
        assert_close(v.mean_margin, (60.0 + 10.0 + 10.0) / 3.0, 1e-9, &v.source);
        assert_eq!((v.wins, v.targets), (3, 3));
    }

    let tpt: Vec<TptRow> = read_table(dir.path()).unwrap();
    assert_eq!(tpt, r.tpt);
    let imdb = tpt.iter().find(|x| x.src == "imdb").unwrap();
    assert_eq!((imdb.steps_vanilla, imdb.steps_tpt), (800, Some(200)));
    assert_close(imdb.speedup.unwrap(), 4.0, 1e-12, "speedup");
    assert_close(imdb.vanilla_best, 0.8, 1e-12, "vanilla best");
    let mnli = tpt.iter().find(|x| x.src == "mnli").unwrap();
    assert_eq!((mnli.steps_tpt, mnli.speedup), (None, None));
    assert_close(mnli.tpt_best, 0.7, 1e-12, "tpt best kept");

    let cross: Vec<CrossModelRow> = read_table(dir.path()).unwrap();
    assert_eq!(cross, r.cross_model);
    let rel: Vec<(Option<&str>, f64)> = cross
        .iter()
        .map(|c| (c.objective.as_deref(), c.relative))
        .collect();
    assert_eq!(rel.len(), 2);
    assert_close(rel[0].1, 75.0, 1e-9, "distance objective");
    assert_close(rel[1].1, 90.0, 1e-9, "task objective");
    assert_eq!((rel[0].0, rel[1].0), (Some("distance"), Some("task")));
    let held: Vec<Option<bool>> = cross.iter().map(|c| c.held_out).collect();
    assert_eq!(held, [Some(false), Some(true)]);

    let ranking = &r.indicator_ranking["m"];
    let best = ranking.best().unwrap();
    assert_eq!(best.0, "X");
    assert_close(best.1, 1.0, 1e-12, "X mean ρ");
    // The best is a selection, and the report says over how many candidates (X and Y).
    assert_eq!(ranking.candidates, 2);
    assert!(
        r.summary_lines().iter().any(
            |l| l.starts_with("best indicator: X") && l.contains("the highest of 2 candidates")
        ),
        "{:?}",
        r.summary_lines()
    );
    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(md.contains("the highest of 2 candidates"), "{md}");
    let y = r
        .correlations
        .iter()
        .find(|c| c.indicator == "Y" && c.target == "global")
        .unwrap();
    assert_close(y.spearman.unwrap(), -1.0, 1e-12, "Y global");
    assert_eq!(y.n, 12);

    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(
        md.contains("within a type 90.0%, across types 40.0%"),
        "{md}"
    );
    assert!(
        md.contains("| m | imdb | sst2 | 1 | 0.8000 | 800 | 200 | 4.00 |"),
        "{md}"
    );
    assert!(
        md.contains("1 candidate pairs did not train: their source was not among the `top_k`"),
        "{md}"
    );
    assert_eq!(r.tpt_gated_out, 1);
    assert_eq!(r.figures.len(), 3);
    assert_eq!(r.curves.len(), 1);
    // The gated-out job counts but has no panel.
    assert_eq!((r.curves[0].1, r.curves[0].2), (3, 4));
    assert!(md.contains("3 of 4 train/TPT jobs shown"), "{md}");
    for f in r.figures.iter().chain(r.curves.iter().map(|c| &c.0)) {
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
    }
    // Running the report again replaces its tables.
    report(dir.path()).unwrap();
    assert_eq!(read_table::<TptRow>(dir.path()).unwrap().len(), 2);
}

#[test]
fn prompt_indicators_with_known_similarities_rank_transfer() {
    // Prompts whose similarity to the target's prompt is planted: sources closer to t transfer
    // better, so every prompt indicator correlates perfectly within each target.
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("m").join("prompts");
    let base = [1.0f32, 0.0, 0.0, 0.0];
    let mut csv = String::from("target_task,source_prompt,metric,value\n");
    crate::util::write_prompt(&prompts, "t", "prompt", &[1, 4], &base);
    csv.push_str("t,t,acc,0.9\n");
    for (i, angle) in [0.2f32, 0.6, 1.0, 1.4].iter().enumerate() {
        let p = [angle.cos(), angle.sin(), 0.0, 0.0];
        crate::util::write_prompt(&prompts, &format!("s{i}"), "prompt", &[1, 4], &p);
        csv.push_str(&format!("t,s{i},acc,{}\n", 0.8 - 0.1 * i as f64));
    }
    let csv_path = dir.path().join("t.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let s = promptgrid_results::run_indicators(&prompts, Some(&csv_path), &dir.path().join("out"))
        .unwrap();
    assert_eq!(s.model, "m");
    for name in ["E_concat", "E_average", "C_concat", "C_average", "C_mean"] {
        let c = s
            .correlations
            .iter()
            .find(|c| c.indicator == name && c.target == "t")
            .unwrap();
        assert_close(c.spearman.unwrap(), 1.0, 1e-12, name);
        assert_eq!(c.n, 4);
    }
    let c = s
        .indicators
        .iter()
        .find(|r| r.task_a == "s0" && r.task_b == "t" && r.indicator == "C_mean")
        .unwrap();
    assert_close(
        c.value.unwrap(),
        0.2f32.cos() as f64,
        1e-6,
        "cos of the planted angle",
    );
}

#[test]
fn empty_study_is_an_error_and_gaps_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        report(dir.path()).unwrap_err(),
        ResultsError::EmptyStudy(_)
    ));
    // A target without its own prompt's score is a gap, not a number.
    let ty = types();
    let evals = vec![
        eval("m", "sst2", "sst2", 0.9, &ty),
        eval("m", "sst2", "imdb", 0.7, &ty),
    ];
    TableWriter::<EvalRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&evals)
        .unwrap();
    let r = report(dir.path()).unwrap();
    assert_eq!(r.transfer[0].cells.len(), 1);
    assert!(r.gaps.iter().any(|g| g.contains("imdb")), "{:?}", r.gaps);
    assert!(
        std::fs::read_to_string(&r.markdown_path)
            .unwrap()
            .contains("## Gaps")
    );
}

/// The report states what produced the result set, and flags jobs that ran on different
/// setups (here a bf16 GPU job among fp32 CPU ones, and one from a worker that recorded none).
#[test]
fn the_report_states_the_provenance_and_flags_mixed_setups() {
    let dir = tempfile::tempdir().unwrap();
    write_study(dir.path());
    let r = report(dir.path()).unwrap();
    assert!(!r.provenance.is_mixed());
    assert_eq!(r.provenance.setups.values().sum::<usize>(), 4);
    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(
        md.contains("| 0.1.0 | abc123 | 2.13.0+cpu | cpu | fp32 | 2 | 4 |"),
        "{md}"
    );
    assert!(!md.contains("Mixed setups"), "{md}");

    let gpu = JobRow {
        device: Some("cuda:0".into()),
        precision: Some("bf16".into()),
        ..job("v-imdb", "train", "m", "imdb", None, 1)
    };
    let old = JobRow {
        promptgrid_version: None,
        device: None,
        precision: None,
        ..job("v-mnli", "train", "m", "mnli", None, 1)
    };
    TableWriter::<JobRow>::open(dir.path(), "other")
        .unwrap()
        .append(&[gpu, old])
        .unwrap();
    let r = report(dir.path()).unwrap();
    assert!(r.provenance.is_mixed());
    assert_eq!(r.provenance.differing(), ["device", "precision"]);
    assert_eq!(r.provenance.unrecorded, 1);
    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(
        md.contains("**Mixed setups** (device, precision, unrecorded): the jobs of this result set ran on 3 setups"),
        "{md}"
    );
    assert!(
        md.contains("| 0.1.0 | abc123 | 2.13.0+cpu | cuda:0 | bf16 | 2 | 1 |"),
        "{md}"
    );
    assert!(md.contains("| (not recorded) | | | | | | 1 |"), "{md}");
}
