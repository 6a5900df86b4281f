//! Each target of a transfer matrix is scored and normalised on its own split.
//!
//! What broke: the report picked one split per model ("test" if any eval had it) and dropped
//! every target without it, silently. On the paper's grid, where GLUE tasks are scored on dev
//! and the others on test, most targets vanished from the matrix and every correlation.

use std::collections::HashMap;

use promptgrid_results::report::report;
use promptgrid_results::schema::{EvalRow, JobRow, TransferRelativeRow};
use promptgrid_results::store::read_table;
use promptgrid_results::writer::TableWriter;

use crate::util::{assert_close, eval, job};

fn on(split: &str, mut e: EvalRow) -> EvalRow {
    e.split = split.into();
    e
}

#[test]
fn targets_keep_their_own_split_and_a_missing_target_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ty = HashMap::new();
    // imdb has a test split; sst2 only dev. A stray dev eval of imdb must not be mixed in.
    let evals = vec![
        on("test", eval("m", "imdb", "imdb", 0.8, &ty)),
        on("dev", eval("m", "imdb", "imdb", 0.1, &ty)),
        on("test", eval("m", "sst2", "imdb", 0.4, &ty)),
        on("test", eval("m", "random", "imdb", 0.2, &ty)),
        on("dev", eval("m", "sst2", "sst2", 0.9, &ty)),
        on("dev", eval("m", "imdb", "sst2", 0.45, &ty)),
        on("dev", eval("m", "random", "sst2", 0.3, &ty)),
        // squad's own prompt scores 0: its column cannot be normalised, the others can.
        on("dev", eval("m", "squad", "squad", 0.0, &ty)),
        on("dev", eval("m", "imdb", "squad", 0.1, &ty)),
    ];
    TableWriter::<EvalRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&evals)
        .unwrap();
    // qnli trained (its job failed): the matrix has no column for it, and says so.
    let mut failed = job("v-qnli", "train", "m", "qnli", None, 1);
    failed.status = "dead".into();
    let jobs: Vec<JobRow> = vec![
        job("v-imdb", "train", "m", "imdb", None, 1),
        job("v-sst2", "train", "m", "sst2", None, 1),
        failed,
    ];
    TableWriter::<JobRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&jobs)
        .unwrap();

    let r = report(dir.path()).unwrap();
    let t = &r.transfer[0];
    assert_eq!(t.tasks, vec!["imdb".to_string(), "sst2".to_string()]);
    assert_eq!(t.splits["imdb"], "test");
    assert_eq!(t.splits["sst2"], "dev");
    assert_close(
        t.relative("sst2", "imdb").unwrap().relative,
        50.0,
        1e-9,
        "sst2→imdb",
    );
    assert_close(
        t.relative("imdb", "sst2").unwrap().relative,
        50.0,
        1e-9,
        "imdb→sst2",
    );
    assert_close(
        t.relative("random", "sst2").unwrap().relative,
        100.0 / 3.0,
        1e-9,
        "random→sst2",
    );
    assert!(
        r.gaps
            .iter()
            .any(|g| g == "m: target qnli: no zero-shot evals, so it is missing from the matrix"),
        "{:?}",
        r.gaps
    );
    assert!(
        r.gaps.iter().any(|g| g.starts_with(
            "m: target squad: its own prompt scores 0 (accuracy) on dev, so relative transfer is"
        )),
        "{:?}",
        r.gaps
    );
    assert_eq!(
        r.gaps.iter().filter(|g| g.contains("target squad")).count(),
        1,
        "{:?}",
        r.gaps
    );
    // The stray dev eval of imdb is named, not silently mixed in or dropped.
    assert!(
        r.gaps.contains(
            &"m: target imdb: 1 eval(s) on dev left out: its column is normalised on test, \
              where its own prompt is scored"
                .to_string()
        ),
        "{:?}",
        r.gaps
    );

    let rows: Vec<TransferRelativeRow> = read_table(dir.path()).unwrap();
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let want = if row.tgt_task == "imdb" {
            "test"
        } else {
            "dev"
        };
        assert_eq!(row.split.as_deref(), Some(want), "{row:?}");
    }
    let md = std::fs::read_to_string(&r.markdown_path).unwrap();
    assert!(
        md.contains(
            "Each target is scored and normalised on its own split: dev (squad, sst2); test (imdb)."
        ),
        "{md}"
    );
    assert!(md.contains("target qnli: no zero-shot evals"), "{md}");
}

/// `cross_task.split = "dev"` scores transfers on dev while a task's own prompt is scored on its
/// test split: the column must follow the split that holds both the diagonal and most sources,
/// and say what it left out.
#[test]
fn a_column_follows_the_split_with_its_own_score_and_most_sources() {
    let dir = tempfile::tempdir().unwrap();
    let ty = HashMap::new();
    let evals = vec![
        on("test", eval("m", "imdb", "imdb", 0.8, &ty)),
        on("dev", eval("m", "imdb", "imdb", 0.9, &ty)),
        on("dev", eval("m", "sst2", "imdb", 0.45, &ty)),
        on("dev", eval("m", "random", "imdb", 0.3, &ty)),
        on("dev", eval("m", "sst2", "sst2", 0.9, &ty)),
        on("dev", eval("m", "imdb", "sst2", 0.6, &ty)),
    ];
    TableWriter::<EvalRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&evals)
        .unwrap();
    let r = report(dir.path()).unwrap();
    let t = &r.transfer[0];
    assert_eq!(t.splits["imdb"], "dev");
    assert_close(
        t.relative("sst2", "imdb").unwrap().relative,
        50.0,
        1e-9,
        "sst2→imdb",
    );
    assert!(
        r.gaps
            .iter()
            .any(|g| g.starts_with("m: target imdb: 1 eval(s) on test left out")),
        "{:?}",
        r.gaps
    );
}
