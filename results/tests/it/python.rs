//! Every table is readable by pyarrow, polars and DuckDB from its folder, with the same rows.

use promptgrid_results::report;
use promptgrid_results::schema::{
    CorrelationRow, CrossModelRow, EvalRow, IndicatorRow, JobRow, MetricRow, TptRow,
    TransferRelativeRow,
};
use promptgrid_results::store::read_table;

use crate::util::python;

const SCRIPT: &str = r#"
import json, sys
import duckdb, polars as pl, pyarrow.dataset as ds
root = sys.argv[1]
out = {}
for table in sys.argv[2:]:
    path = f"{root}/{table}"
    pa_t = ds.dataset(path, format="parquet").to_table()
    pl_t = pl.read_parquet(f"{path}/*.parquet")
    n_duck = duckdb.sql(f"select count(*) from read_parquet('{path}/*.parquet')").fetchall()[0][0]
    num = {"metrics": "value", "evals": "value", "tpt": "vanilla_best", "transfer_relative": "relative",
           "indicators": "value", "correlations": "n", "jobs": "attempt",
           "cross_model": "relative"}[table]
    out[table] = {
        "pyarrow": pa_t.num_rows, "polars": pl_t.height, "duckdb": n_duck,
        "sum_pyarrow": float(pa_t.to_pandas()[num].sum()),
        "sum_polars": float(pl_t[num].sum()),
        "sum_duckdb": float(duckdb.sql(f"select sum({num}) from read_parquet('{path}/*.parquet')").fetchall()[0][0]),
    }
speedup = duckdb.sql(f"select speedup from read_parquet('{root}/tpt/*.parquet') where src = 'imdb'").fetchall()[0][0]
out["imdb_speedup"] = speedup
print(json.dumps(out))
"#;

#[test]
fn every_table_reads_the_same_in_pyarrow_polars_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    crate::report::write_study(dir.path());
    report(dir.path()).unwrap();
    let root = dir.path();
    let expected: Vec<(&str, usize, f64)> = vec![
        (
            "jobs",
            read_table::<JobRow>(root).unwrap().len(),
            read_table::<JobRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.attempt as f64)
                .sum(),
        ),
        (
            "metrics",
            read_table::<MetricRow>(root).unwrap().len(),
            read_table::<MetricRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.value)
                .sum(),
        ),
        (
            "evals",
            read_table::<EvalRow>(root).unwrap().len(),
            read_table::<EvalRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.value)
                .sum(),
        ),
        (
            "indicators",
            read_table::<IndicatorRow>(root).unwrap().len(),
            read_table::<IndicatorRow>(root)
                .unwrap()
                .iter()
                .filter_map(|r| r.value)
                .sum(),
        ),
        (
            "correlations",
            read_table::<CorrelationRow>(root).unwrap().len(),
            read_table::<CorrelationRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.n as f64)
                .sum(),
        ),
        (
            "tpt",
            read_table::<TptRow>(root).unwrap().len(),
            read_table::<TptRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.vanilla_best)
                .sum(),
        ),
        (
            "transfer_relative",
            read_table::<TransferRelativeRow>(root).unwrap().len(),
            read_table::<TransferRelativeRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.relative)
                .sum(),
        ),
        (
            "cross_model",
            read_table::<CrossModelRow>(root).unwrap().len(),
            read_table::<CrossModelRow>(root)
                .unwrap()
                .iter()
                .map(|r| r.relative)
                .sum(),
        ),
    ];
    // What the study was given: 4 jobs, 42 metric rows (overlapping batches written once), 22 evals.
    assert_eq!(expected[0].1, 4);
    assert_eq!(expected[1].1, 42);
    assert_eq!(expected[2].1, 22);
    let mut cmd = std::process::Command::new(python());
    cmd.arg("-c").arg(SCRIPT).arg(root);
    for (t, _, _) in &expected {
        cmd.arg(t);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (source scripts/env.sh): {e}", python()));
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (table, rows, sum) in &expected {
        for reader in ["pyarrow", "polars", "duckdb"] {
            assert_eq!(
                got[table][reader].as_u64().unwrap() as usize,
                *rows,
                "{table} rows in {reader}"
            );
            let s = got[table][format!("sum_{reader}")].as_f64().unwrap();
            assert!(
                (s - sum).abs() < 1e-9 * sum.abs().max(1.0),
                "{table} sum in {reader}: {s} vs {sum}"
            );
        }
    }
    assert_eq!(got["imdb_speedup"].as_f64().unwrap(), 4.0);
}
