//! The reference prompts and zero-shot results of the official code (RoBERTa-base, 13 tasks).

use std::collections::HashMap;

use promptgrid_results::indicator_ranking::IndicatorRanking;
use promptgrid_results::run_indicators;
use promptgrid_results::schema::{CorrelationRow, IndicatorRow, TransferRelativeRow};
use promptgrid_results::store::read_table;

use crate::util::{assert_close, data_dir, reference_dir};

#[test]
fn reference_relative_matrix_and_indicators_match_numpy() {
    let out = tempfile::tempdir().unwrap();
    let csv = reference_dir().join("zero_shot_transfer.csv");
    let summary = run_indicators(&reference_dir().join("prompts"), Some(&csv), out.path()).unwrap();
    assert_eq!(summary.model, "roberta-base");
    assert_eq!(summary.tasks.len(), 14); // 13 tasks and the random prompt
    assert_eq!(summary.relative.len(), 182);
    let rel = |s: &str, t: &str| {
        summary
            .relative
            .iter()
            .find(|c| c.source == s && c.target == t)
            .unwrap()
            .relative
    };
    // The CSV's own numbers: restaurant←laptop 0.7868 over restaurant←restaurant 0.795, etc.
    assert_close(
        rel("laptop", "restaurant"),
        100.0 * 0.7868 / 0.795,
        1e-9,
        "laptop→restaurant",
    );
    assert_close(
        rel("snli", "MNLI"),
        100.0 * 0.7392 / 0.7991,
        1e-9,
        "SNLI→MNLI",
    );
    assert_eq!(rel("laptop", "restaurant").round(), 99.0);
    assert_eq!(rel("snli", "MNLI").round(), 93.0);
    assert_close(rel("IMDB", "IMDB"), 100.0, 1e-12, "diagonal");

    // Every indicator value against the independent NumPy implementation.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("reference_indicators.json")).unwrap(),
    )
    .unwrap();
    let ours: HashMap<(String, String, String), f64> = summary
        .indicators
        .iter()
        .map(|r| {
            (
                (r.task_a.clone(), r.task_b.clone(), r.indicator.clone()),
                r.value.unwrap(),
            )
        })
        .collect();
    let expected = fixture["indicators"].as_array().unwrap();
    assert_eq!(expected.len(), ours.len());
    for e in expected {
        let key = (
            e["task_a"].as_str().unwrap().to_string(),
            e["task_b"].as_str().unwrap().to_string(),
            e["indicator"].as_str().unwrap().to_string(),
        );
        assert_close(
            ours[&key],
            e["value"].as_f64().unwrap(),
            1e-5,
            &format!("{key:?}"),
        );
    }
    for e in fixture["correlations"].as_array().unwrap() {
        let name = e["indicator"].as_str().unwrap();
        let get = |t: &str| {
            summary
                .correlations
                .iter()
                .find(|c| c.indicator == name && c.target == t)
                .unwrap()
        };
        assert_close(
            get("mean").spearman.unwrap(),
            e["mean"].as_f64().unwrap(),
            1e-6,
            &format!("{name} mean"),
        );
        assert_close(
            get("global").spearman.unwrap(),
            e["global"].as_f64().unwrap(),
            1e-6,
            &format!("{name} global"),
        );
        assert_eq!(get("global").n, e["pairs"].as_i64().unwrap());
    }
    // With 13 targets of 12 sources, C_average leads on mean ρ (0.388) but its 95% bootstrap
    // interval overlaps C_mean's (0.347) and C_concat's (0.190): no indicator is named best.
    let IndicatorRanking {
        leader,
        overlapping,
        candidates,
        ..
    } = summary.ranking.clone().unwrap();
    assert_eq!(leader, "C_average");
    assert_eq!(overlapping, ["C_mean", "C_concat"]);
    assert_eq!(candidates, 5);
    assert_eq!(summary.best, None);
    eprintln!(
        "reference: leader {leader}, indistinct from {overlapping:?}; laptop→restaurant {:.2}%, \
         SNLI→MNLI {:.2}%",
        rel("laptop", "restaurant"),
        rel("snli", "MNLI")
    );

    // The same numbers are in the tables and the markdown summary.
    let ind: Vec<IndicatorRow> = read_table(out.path()).unwrap();
    assert_eq!(ind.len(), 14 * 14 * 5);
    let tr: Vec<TransferRelativeRow> = read_table(out.path()).unwrap();
    assert_eq!(tr.len(), 182);
    let corr: Vec<CorrelationRow> = read_table(out.path()).unwrap();
    assert_eq!(corr.len(), 5 * (13 + 2));
    let md = std::fs::read_to_string(&summary.markdown_path).unwrap();
    assert!(
        md.contains("the indicators cannot be told apart at this size") && md.contains(&leader),
        "{md}"
    );
    // Re-running replaces the tables instead of doubling them.
    run_indicators(&reference_dir().join("prompts"), Some(&csv), out.path()).unwrap();
    assert_eq!(
        read_table::<IndicatorRow>(out.path()).unwrap().len(),
        14 * 14 * 5
    );
}

#[test]
fn transfer_csv_with_an_unknown_task_or_no_diagonal_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = reference_dir().join("prompts");
    let unknown = dir.path().join("unknown.csv");
    std::fs::write(
        &unknown,
        "target_task,source_prompt,metric,value\nIMDB,IMDB,acc,0.9\nIMDB,yelp,acc,0.8\n",
    )
    .unwrap();
    let err = run_indicators(&prompts, Some(&unknown), &dir.path().join("o1")).unwrap_err();
    assert!(
        err.to_string().contains("yelp") && err.to_string().contains("unknown.csv"),
        "{err}"
    );
    let no_diag = dir.path().join("nodiag.csv");
    std::fs::write(
        &no_diag,
        "target_task,source_prompt,metric,value\nIMDB,SST2,acc,0.9\n",
    )
    .unwrap();
    let err = run_indicators(&prompts, Some(&no_diag), &dir.path().join("o2")).unwrap_err();
    assert!(err.to_string().contains("IMDB → IMDB"), "{err}");
    let dup = dir.path().join("dup.csv");
    std::fs::write(
        &dup,
        "target_task,source_prompt,metric,value\nIMDB,IMDB,acc,0.9\nIMDB,IMDB,acc,0.8\n",
    )
    .unwrap();
    assert!(
        run_indicators(&prompts, Some(&dup), &dir.path().join("o3"))
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
}
