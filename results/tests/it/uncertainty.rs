//! The report on a three-seed study against NumPy and SciPy (`tests/data/seeded_correlations.json`,
//! made by `scripts/make-correlation-fixtures.py`): every cell's mean and spread, the
//! beats-random marking, and each ρ's bootstrap interval and permutation p-value.
//!
//! Tolerance: the script draws the same resampling indices as the report (it re-implements
//! SplitMix64 and the documented procedure), so the statistics agree to float rounding (1e-12
//! for ρ and its interval; p's permutation count is compared exactly). A Monte-Carlo tolerance would need
//! about ±0.05 on the interval ends for B = 2000, wide enough to hide a wrong resampling scheme.

use std::collections::BTreeMap;
use std::path::Path;

use promptgrid_results::indicator_ranking::IndicatorRanking;
use promptgrid_results::resample::{Resample, SplitMix64};
use promptgrid_results::rho_uncertainty::Resampling;
use promptgrid_results::schema::{CorrelationRow, IndicatorRow, TransferRelativeRow};
use promptgrid_results::store::read_table;
use promptgrid_results::writer::TableWriter;
use promptgrid_results::{ReportOptions, report_with};
use serde_json::Value;

use crate::seeds::write_seeded_study;
use crate::util::{assert_close, data_dir};

fn fixture() -> Value {
    let text = std::fs::read_to_string(data_dir().join("seeded_correlations.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// Writes the fixture's evals (three seeds) and indicators into `dir`.
fn write_fixture_study(dir: &Path, fx: &Value) {
    let mut by_pair: BTreeMap<(String, String), [Option<f64>; 3]> = BTreeMap::new();
    for s in fx["scores"].as_array().unwrap() {
        let pair = (
            s["source"].as_str().unwrap().to_string(),
            s["target"].as_str().unwrap().to_string(),
        );
        let k = s["seed"].as_i64().unwrap() as usize - 1;
        by_pair.entry(pair).or_default()[k] = Some(f(&s["value"]));
    }
    let scores: Vec<(&str, &str, [Option<f64>; 3])> = by_pair
        .iter()
        .map(|((s, t), v)| (s.as_str(), t.as_str(), *v))
        .collect();
    write_seeded_study(dir, &scores);
    let indicators: Vec<IndicatorRow> = fx["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| IndicatorRow {
            model: "m".into(),
            task_a: i["source"].as_str().unwrap().into(),
            task_b: i["target"].as_str().unwrap().into(),
            indicator: i["indicator"].as_str().unwrap().into(),
            layers: None,
            value: Some(f(&i["value"])),
        })
        .collect();
    TableWriter::<IndicatorRow>::open(dir, "indicators")
        .unwrap()
        .append(&indicators)
        .unwrap();
}

#[test]
fn generator_draws_what_the_fixture_script_draws() {
    let g = &fixture()["generator"];
    let mut rng = SplitMix64::new(g["seed"].as_u64().unwrap());
    for want in g["next"].as_array().unwrap() {
        assert_eq!(rng.next_u64().to_string(), want.as_str().unwrap());
    }
    for want in g["below_7"].as_array().unwrap() {
        assert_eq!(rng.below(7) as u64, want.as_u64().unwrap());
    }
    let mut v: Vec<u64> = (0..10).collect();
    rng.shuffle(&mut v);
    let want: Vec<u64> = g["shuffled_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(v, want);
}

#[test]
fn three_seed_report_matches_numpy_and_scipy() {
    let fx = fixture();
    // The fixture was made with the report's settings.
    let r = &fx["resampling"];
    assert_eq!(
        Resampling::default(),
        Resampling {
            n_boot: r["n_boot"].as_u64().unwrap() as usize,
            n_perm: r["n_perm"].as_u64().unwrap() as usize,
            boot_seed: r["boot_seed"].as_u64().unwrap(),
            perm_seed: r["perm_seed"].as_u64().unwrap(),
        }
    );
    let dir = tempfile::tempdir().unwrap();
    write_fixture_study(dir.path(), &fx);
    let report = report_with(dir.path(), &ReportOptions::default()).unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);

    let cells: Vec<TransferRelativeRow> = read_table(dir.path()).unwrap();
    let expected = fx["cells"].as_array().unwrap();
    assert_eq!(cells.len(), expected.len());
    let (mut beats, mut not) = (0, 0);
    for e in expected {
        let (s, t) = (e["source"].as_str().unwrap(), e["target"].as_str().unwrap());
        let c = cells
            .iter()
            .find(|c| c.src_task == s && c.tgt_task == t)
            .unwrap();
        let what = |field: &str| format!("{s}→{t} {field}");
        assert_eq!(c.n_seeds, 3, "{}", what("n"));
        for (field, mean, sd) in [
            ("raw", c.raw, c.raw_sd),
            ("own", c.own, c.own_sd),
            ("relative", c.relative, c.relative_sd),
        ] {
            assert_close(mean, f(&e[field]["mean"]), 1e-9, &what(field));
            assert_close(sd.unwrap(), f(&e[field]["sd"]), 1e-9, &what(field));
        }
        match e["beats_random"].as_bool() {
            Some(b) => {
                assert_close(
                    c.random_margin.unwrap(),
                    f(&e["margin"]["mean"]),
                    1e-9,
                    &what("margin"),
                );
                assert_close(
                    c.random_margin_sd.unwrap(),
                    f(&e["margin"]["sd"]),
                    1e-9,
                    &what("margin sd"),
                );
                assert_eq!(c.beats_random, Some(b), "{}", what("beats random"));
                if b { beats += 1 } else { not += 1 }
            }
            None => assert_eq!(c.beats_random, None, "{}", what("beats random")),
        }
    }
    // Both verdicts occur, so the rule is exercised both ways.
    assert_eq!((beats, not), (21, 4));

    let corr: Vec<CorrelationRow> = read_table(dir.path()).unwrap();
    let expected = fx["correlations"].as_array().unwrap();
    assert_eq!(corr.len(), expected.len());
    for e in expected {
        let (ind, target) = (
            e["indicator"].as_str().unwrap(),
            e["target"].as_str().unwrap(),
        );
        let c = corr
            .iter()
            .find(|c| c.indicator == ind && c.target == target)
            .unwrap();
        let what = |field: &str| format!("{ind} {target} {field}");
        assert_close(c.spearman.unwrap(), f(&e["spearman"]), 1e-12, &what("ρ"));
        assert_eq!(c.n, e["n"].as_i64().unwrap(), "{}", what("n"));
        assert_close(c.rho_lo.unwrap(), f(&e["rho_lo"]), 1e-12, &what("lo"));
        assert_close(c.rho_hi.unwrap(), f(&e["rho_hi"]), 1e-12, &what("hi"));
        assert_eq!(
            c.n_boot,
            e["n_boot"].as_i64().unwrap(),
            "{}",
            what("n_boot")
        );
        // p = (k + 1) / 2001: compare the counts k (JSON parsing may move the last bit).
        let count = |p: f64| (p * 2001.0).round() as i64 - 1;
        assert_eq!(
            count(c.p_value.unwrap()),
            count(f(&e["p_value"])),
            "{}",
            what("p")
        );
        assert_eq!((c.n_perm, c.n_seeds), (2000, 3), "{}", what("counts"));
    }
    // X tracks transfer (global p = 2/2001) and Y does not, yet with 5 targets their intervals
    // of mean ρ overlap: no indicator is named best.
    let ranking = &report.indicator_ranking["m"];
    assert_eq!(ranking.leader, "X");
    assert_eq!(ranking.overlapping, ["Y"]);
    assert_eq!(ranking.best(), None);
    let md = std::fs::read_to_string(&report.markdown_path).unwrap();
    assert!(
        md.contains("the indicators cannot be told apart at this size"),
        "{md}"
    );
    assert!(
        md.contains(
            "| X | 0.600 [0.067, 0.960] p=0.0195 | 5 | 0.744 [0.429, 0.902] p=0.0010 | 20 |"
        ),
        "{md}"
    );
    assert!(
        report
            .summary_lines()
            .iter()
            .any(|l| l.starts_with("best indicator: none on m: the 2 candidates cannot be told")),
        "{:?}",
        report.summary_lines()
    );
}

#[test]
fn a_clear_leader_is_named_with_its_interval() {
    let row = |indicator: &str, rho: f64, lo: f64, hi: f64| CorrelationRow {
        model: "m".into(),
        indicator: indicator.into(),
        layers: None,
        target: "mean".into(),
        spearman: Some(rho),
        n: 13,
        rho_lo: Some(lo),
        rho_hi: Some(hi),
        n_boot: 2000,
        p_value: Some(0.001),
        n_perm: 2000,
        n_seeds: 1,
    };
    let apart = [row("ON", 0.7, 0.55, 0.85), row("C_mean", 0.3, 0.1, 0.5)];
    let r = IndicatorRanking::of(&apart).unwrap();
    assert_eq!(r.best(), Some(("ON", 0.7)));
    assert!(r.sentence().contains("[0.550, 0.850]"), "{}", r.sentence());
    // Touching intervals are not disjoint.
    let touching = [row("ON", 0.7, 0.5, 0.85), row("C_mean", 0.3, 0.1, 0.5)];
    let r = IndicatorRanking::of(&touching).unwrap();
    assert_eq!(
        (r.best(), r.overlapping.as_slice()),
        (None, &["C_mean".to_string()][..])
    );
}

#[test]
fn the_same_inputs_give_byte_identical_tables_and_report() {
    let fx = fixture();
    let runs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            write_fixture_study(dir.path(), &fx);
            report_with(dir.path(), &ReportOptions::default()).unwrap();
            dir
        })
        .collect();
    let bytes = |dir: &Path, sub: &str| -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    for table in ["correlations", "transfer_relative"] {
        let (a, b) = (bytes(runs[0].path(), table), bytes(runs[1].path(), table));
        assert_eq!(a.len(), 1, "{table}");
        assert!(a == b, "{table} differs between runs");
    }
    let md = |d: &tempfile::TempDir| std::fs::read(d.path().join("report.md")).unwrap();
    assert!(
        md(&runs[0]) == md(&runs[1]),
        "report.md differs between runs"
    );
}
