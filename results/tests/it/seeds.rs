//! Seeds as an axis of the report: per-seed normalisation, mean ± sd per cell, own-prompt
//! spread, and the transfers that beat the random prompt beyond the seed spread. The expected
//! numbers are worked out by hand in the comments.

use std::collections::HashMap;
use std::path::Path;

use promptgrid_results::report;
use promptgrid_results::report::OwnVerdict;
use promptgrid_results::schema::{EvalRow, JobRow, TransferRelativeRow};
use promptgrid_results::store::read_table;
use promptgrid_results::writer::TableWriter;

use crate::util::{assert_close, eval, job};

/// Raw scores per seed (1, 2, 3) of source → target; `None`: that seed has no eval.
fn planted() -> Vec<(&'static str, &'static str, [Option<f64>; 3])> {
    let all = |a, b, c| [Some(a), Some(b), Some(c)];
    vec![
        // Target a: own prompt 0.8 on every seed.
        ("a", "a", all(0.8, 0.8, 0.8)),
        ("b", "a", all(0.4, 0.48, 0.56)),
        ("c", "a", all(0.2, 0.4, 0.24)),
        ("random", "a", all(0.2, 0.24, 0.16)),
        // Target b: its own prompt varies by seed, so normalising per seed matters.
        ("b", "b", all(0.5, 0.4, 0.8)),
        ("a", "b", all(0.25, 0.3, 0.4)),
        ("c", "b", all(0.1, 0.1, 0.2)),
        ("random", "b", all(0.1, 0.1, 0.2)),
        // Target c: b → c has no eval on seed 3.
        ("c", "c", all(0.6, 0.6, 0.6)),
        ("a", "c", all(0.3, 0.3, 0.3)),
        ("b", "c", [Some(0.45), Some(0.42), None]),
        ("random", "c", all(0.3, 0.3, 0.3)),
    ]
}

/// Writes the evals of three seeds and the jobs that record each eval's seed.
pub fn write_seeded_study(dir: &Path, scores: &[(&str, &str, [Option<f64>; 3])]) {
    let ty = HashMap::new();
    let (mut evals, mut jobs) = (Vec::new(), Vec::new());
    for (src, tgt, by_seed) in scores {
        for (k, v) in by_seed.iter().enumerate() {
            let Some(v) = v else { continue };
            let seed = k as i64 + 1;
            let mut e = eval("m", src, tgt, *v, &ty);
            e.job_id = format!("{}-s{seed}", e.job_id);
            let src_task = (src != tgt).then_some(*src);
            jobs.push(job(&e.job_id, &e.kind, "m", tgt, src_task, seed));
            evals.push(e);
        }
    }
    TableWriter::<EvalRow>::open(dir, "sink")
        .unwrap()
        .append(&evals)
        .unwrap();
    TableWriter::<JobRow>::open(dir, "sink")
        .unwrap()
        .append(&jobs)
        .unwrap();
}

#[test]
fn three_seeds_give_mean_and_sd_per_cell_and_mark_transfers_beyond_the_spread() {
    let dir = tempfile::tempdir().unwrap();
    write_seeded_study(dir.path(), &planted());
    let r = report(dir.path()).unwrap();
    let t = &r.transfer[0];
    assert_eq!(t.seeds, [Some(1), Some(2), Some(3)]);
    assert!(t.seeded());
    let rows: Vec<TransferRelativeRow> = read_table(dir.path()).unwrap();
    let row = |s: &str, tg: &str| {
        rows.iter()
            .find(|x| x.src_task == s && x.tgt_task == tg)
            .unwrap()
            .clone()
    };

    // b → a: relative 50, 60, 70 → 60 ± 10; raw 0.4, 0.48, 0.56 → 0.48 ± 0.08.
    let ba = row("b", "a");
    assert_eq!(ba.n_seeds, 3);
    assert_close(ba.relative, 60.0, 1e-9, "b→a mean");
    assert_close(ba.relative_sd.unwrap(), 10.0, 1e-9, "b→a sd");
    assert_close(ba.raw, 0.48, 1e-12, "b→a raw mean");
    assert_close(ba.raw_sd.unwrap(), 0.08, 1e-12, "b→a raw sd");
    assert_close(ba.own_sd.unwrap(), 0.0, 1e-12, "a's own sd");
    // Margins over random (25, 30, 20): 25, 30, 50 → 35 ± √175 = 13.23; 35 > 26.46: beats.
    assert_close(ba.random_margin.unwrap(), 35.0, 1e-9, "b→a margin");
    assert_close(
        ba.random_margin_sd.unwrap(),
        175f64.sqrt(),
        1e-9,
        "b→a margin sd",
    );
    assert_eq!(ba.beats_random, Some(true));
    // c → a: relative 25, 50, 30; margins 0, 20, 10 → 10 ± 10: ahead on average, yet not
    // beyond twice the spread.
    let ca = row("c", "a");
    assert_close(ca.random_margin.unwrap(), 10.0, 1e-9, "c→a margin");
    assert_close(ca.random_margin_sd.unwrap(), 10.0, 1e-9, "c→a margin sd");
    assert_eq!(ca.beats_random, Some(false));

    // a → b, normalised per seed: 0.25/0.5, 0.3/0.4, 0.4/0.8 → 50, 75, 50 → 58.33 ± 14.43
    // (normalising the means would give 100 · 0.3167 / 0.5667 = 55.88).
    let ab = row("a", "b");
    assert_close(ab.relative, 175.0 / 3.0, 1e-9, "a→b mean");
    assert_close(
        ab.relative_sd.unwrap(),
        (1250.0f64 / 6.0).sqrt(),
        1e-9,
        "a→b sd",
    );
    assert_close(ab.own, 1.7 / 3.0, 1e-12, "b's own mean");
    // b's own prompt 0.5, 0.4, 0.8: sd √(0.13 / 3) = 0.2082.
    assert_close(
        ab.own_sd.unwrap(),
        (0.13f64 / 3.0).sqrt(),
        1e-12,
        "b's own sd",
    );
    assert_eq!(ab.beats_random, Some(true));
    // c → b scores exactly what random does on every seed: margin 0 ± 0 does not beat it.
    let cb = row("c", "b");
    assert_close(cb.random_margin.unwrap(), 0.0, 1e-9, "c→b margin");
    assert_eq!(cb.beats_random, Some(false));

    // b → c on seeds 1 and 2 only: 75, 70 → 72.5 ± 3.54, n = 2; margins 25, 20 → beats.
    let bc = row("b", "c");
    assert_eq!(bc.n_seeds, 2);
    assert_close(bc.relative, 72.5, 1e-9, "b→c mean");
    assert_close(bc.relative_sd.unwrap(), 12.5f64.sqrt(), 1e-9, "b→c sd");
    assert_eq!(bc.beats_random, Some(true));
    // The random prompt is the baseline: it has no margin over itself.
    let ra = row("random", "a");
    assert_eq!((ra.random_margin, ra.beats_random), (None, None));
    assert_close(ra.relative_sd.unwrap(), 5.0, 1e-9, "random→a sd");

    // Per source: a beats random beyond the spread on b, not on c (margin 0); b on a and c;
    // c on neither.
    let vs = |s: &str| t.vs_random.iter().find(|v| v.source == s).unwrap();
    assert_eq!((vs("a").beyond_spread, vs("a").judged), (1, 2));
    assert_eq!((vs("b").beyond_spread, vs("b").judged), (2, 2));
    assert_eq!((vs("c").beyond_spread, vs("c").judged), (0, 2));

    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(md.contains("Seeds: 1, 2, 3 (n = 3)"), "{md}");
    assert!(md.contains("mean above 2 sd of the d_k"), "{md}");
    // The matrix row of b: 60.0 ± 10.0 beats random (†); b → c has two seeds; the diagonal
    // is not marked.
    assert!(
        md.contains("| b | 60.0 ± 10.0 † | 100.0 ± 0.0 | 72.5 ± 3.5 (n=2) † |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| b | test | accuracy | 0.5667 ± 0.2082 | 0.1333 ± 0.0577 | \
             yes, beyond the seed spread | 3 |"
        ),
        "{md}"
    );
    // Own-prompt margins over random: a 75, 70, 80; b 80, 75, 75; c 50, 50, 50 (sd 0).
    assert!(
        md.contains("Every own prompt beats the random prompt on its target."),
        "{md}"
    );
    assert!(
        md.contains(
            "beyond the seed spread (margin mean ± sd, relative points): a → b (+35.0 ± 13.2), \
             b → a (+35.0 ± 13.2), b → c (+22.5 ± 3.5)."
        ),
        "{md}"
    );
}

#[test]
fn one_seed_keeps_the_single_run_report() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<_> = planted()
        .into_iter()
        .map(|(s, t, v)| (s, t, [v[0], None, None]))
        .collect();
    write_seeded_study(dir.path(), &first);
    let r = report(dir.path()).unwrap();
    let t = &r.transfer[0];
    assert!(!t.seeded());
    let ab = t.spread("a", "b").unwrap();
    assert_eq!(
        (ab.relative.n, ab.relative.sd, ab.beats_random()),
        (1, None, None)
    );
    assert_close(t.relative("a", "b").unwrap().relative, 50.0, 1e-9, "a→b");
    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(!md.contains("±") && !md.contains("Seeds:"), "{md}");
    assert!(md.contains("| b | 50.0 | 100.0 | 75.0 |"), "{md}");
    assert!(
        md.contains("| c | test | accuracy | 0.6000 | 0.3000 | yes (one seed) | 1 |"),
        "{md}"
    );
}

#[test]
fn own_prompts_that_do_not_beat_random_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut scores = planted();
    for (s, t, v) in scores.iter_mut() {
        match (*s, *t) {
            // Relative 90, 50, 100 against own 100: margins 10, 50, 0, mean 20 ± 26.5.
            ("random", "b") => *v = [Some(0.45), Some(0.2), Some(0.8)],
            // Relative 100, 91.7, 108.3 against own 100: margins 0, 8.3, −8.3, mean 0.
            ("random", "c") => *v = [Some(0.6), Some(0.55), Some(0.65)],
            _ => {}
        }
    }
    write_seeded_study(dir.path(), &scores);
    let r = report(dir.path()).unwrap();
    let verdicts: Vec<_> = r.transfer[0]
        .own_vs_random()
        .into_iter()
        .map(|v| (v.target, v.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("a".to_string(), OwnVerdict::Beats),
            ("b".to_string(), OwnVerdict::WithinSpread),
            ("c".to_string(), OwnVerdict::DoesNotBeat),
        ]
    );
    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(
        md.contains(
            "The own prompt does not beat the random prompt beyond the seed spread on: \
             b (0.5667 ± 0.2082 against 0.4833 ± 0.3014); c (0.6000 ± 0.0000 against \
             0.6000 ± 0.0500)."
        ),
        "{md}"
    );
    assert!(md.contains("| c | test | accuracy | 0.6000 ± 0.0000 | 0.6000 ± 0.0500 | no | 3 |"));
    assert!(
        r.summary_lines().contains(
            &"own prompt beats random beyond the seed spread on m: 1 of 3 targets (not on b, c)"
                .to_string()
        ),
        "{:?}",
        r.summary_lines()
    );
}
