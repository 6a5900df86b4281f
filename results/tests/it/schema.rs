//! The table declarations: every table round-trips through the real writer and a plain Parquet
//! reader, its on-disk schema is pinned column by column, its dedup key is pinned field by
//! field, and a foreign file fails with the table and the column named.

use std::fmt::Debug;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use promptgrid_results::schema::{
    CorrelationRow, CrossModelRow, EvalRow, IndicatorRow, JobRow, KeyPart, MetricRow, Table,
    TptRow, TransferRelativeRow,
};
use promptgrid_results::store::{read_table, table_parts};
use promptgrid_results::{ResultsError, TableWriter};

/// Commits `rows` through the crate's writer, then reads the part back with a plain
/// `ParquetRecordBatchReader` (not the crate's reader), checking the file's schema on the way.
fn round_trip<T: Table + Debug + PartialEq>(rows: &[T]) {
    let dir = tempfile::tempdir().unwrap();
    let out = TableWriter::<T>::open(dir.path(), "rt")
        .unwrap()
        .append(rows)
        .unwrap();
    assert_eq!(out.written, rows.len(), "{}: every row is new", T::NAME);
    let part = out.part.unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&part).unwrap()).unwrap();
    assert_eq!(reader.schema(), &T::schema(), "{}: schema on disk", T::NAME);
    let mut back = Vec::new();
    for batch in reader.build().unwrap() {
        back.extend(T::from_batch(&batch.unwrap()).unwrap());
    }
    assert_eq!(back, rows, "{}: rows read back", T::NAME);
}

fn s(v: &str) -> String {
    v.to_string()
}

fn some(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Two rows per table: one with every optional field set, one with every optional field null.
/// Every value is distinct within its row, so two swapped columns of one type cannot pass.
fn jobs() -> Vec<JobRow> {
    vec![
        JobRow {
            job_id: s("job-a"),
            kind: s("transfer"),
            model: s("roberta-base"),
            task: some("sst2"),
            src_task: some("imdb"),
            src_model: some("bert-base"),
            objective: some("distance"),
            seed: Some(17),
            attempt: 3,
            worker: some("w7"),
            status: s("failed"),
            error: some("out of memory"),
            started_at: Some(1_700_000_000_123),
            finished_at: Some(1_700_000_060_456),
            duration_s: Some(60.333),
            promptgrid_version: some("0.1.0"),
            git_commit: some("8c256e7"),
            torch_version: some("2.13.0+cpu"),
            device: some("cuda:1"),
            precision: some("bf16"),
            threads: Some(4),
        },
        JobRow {
            job_id: s("job-b"),
            kind: s("train"),
            model: s("t5-base"),
            task: None,
            src_task: None,
            src_model: None,
            objective: None,
            seed: None,
            attempt: 1,
            worker: None,
            status: s("lost"),
            error: None,
            started_at: None,
            finished_at: None,
            duration_s: None,
            promptgrid_version: None,
            git_commit: None,
            torch_version: None,
            device: None,
            precision: None,
            threads: None,
        },
    ]
}

fn metrics() -> Vec<MetricRow> {
    vec![
        MetricRow {
            job_id: s("job-a"),
            attempt: 2,
            step: 500,
            name: s("dev_score"),
            value: 0.875,
            wall_s: Some(12.5),
        },
        MetricRow {
            job_id: s("job-b"),
            attempt: 4,
            step: 9,
            name: s("loss"),
            value: -1.25,
            wall_s: None,
        },
    ]
}

fn evals() -> Vec<EvalRow> {
    vec![
        EvalRow {
            job_id: s("job-a"),
            kind: s("cross_model"),
            model: s("roberta-large"),
            src_task: s("imdb"),
            tgt_task: s("sst2"),
            src_model: some("roberta-base"),
            split: s("test"),
            metric: s("accuracy"),
            value: 91.5,
            n: 872,
            src_type: some("sentiment"),
            tgt_type: some("sentiment2"),
            objective: some("task"),
            held_out: Some(true),
        },
        EvalRow {
            job_id: s("job-b"),
            kind: s("transfer"),
            model: s("bert-base"),
            src_task: s("random"),
            tgt_task: s("mnli"),
            src_model: None,
            split: s("dev"),
            metric: s("f1"),
            value: 33.25,
            n: 9815,
            src_type: None,
            tgt_type: None,
            objective: None,
            held_out: None,
        },
    ]
}

fn indicators() -> Vec<IndicatorRow> {
    vec![
        IndicatorRow {
            model: s("roberta-base"),
            task_a: s("imdb"),
            task_b: s("sst2"),
            indicator: s("on"),
            layers: some("first-last"),
            value: Some(0.625),
        },
        IndicatorRow {
            model: s("t5-base"),
            task_a: s("mnli"),
            task_b: s("qnli"),
            indicator: s("cos_avg"),
            layers: None,
            value: None,
        },
    ]
}

fn correlations() -> Vec<CorrelationRow> {
    vec![
        CorrelationRow {
            model: s("roberta-base"),
            indicator: s("on"),
            layers: some("all"),
            target: s("sst2"),
            spearman: Some(-0.375),
            n: 12,
            rho_lo: Some(-0.8),
            rho_hi: Some(0.21),
            n_boot: 1998,
            p_value: Some(0.2249),
            n_perm: 2000,
            n_seeds: 3,
        },
        CorrelationRow {
            model: s("bert-base"),
            indicator: s("euc_tk"),
            layers: None,
            target: s("global"),
            spearman: None,
            n: 2,
            rho_lo: None,
            rho_hi: None,
            n_boot: 0,
            p_value: None,
            n_perm: 2000,
            n_seeds: 1,
        },
    ]
}

fn tpt() -> Vec<TptRow> {
    vec![
        TptRow {
            model: s("roberta-base"),
            src: s("imdb"),
            tgt: s("sst2"),
            src_model: some("bert-base"),
            objective: some("distance"),
            seed: Some(42),
            vanilla_best: 0.91,
            steps_vanilla: 3000,
            steps_tpt: Some(1200),
            speedup: Some(2.5),
            tpt_best: 0.93,
        },
        TptRow {
            model: s("t5-base"),
            src: s("mnli"),
            tgt: s("rte"),
            src_model: None,
            objective: None,
            seed: None,
            vanilla_best: 0.71,
            steps_vanilla: 800,
            steps_tpt: None,
            speedup: None,
            tpt_best: 0.64,
        },
    ]
}

fn transfer_relative() -> Vec<TransferRelativeRow> {
    vec![
        TransferRelativeRow {
            model: s("roberta-base"),
            src_task: s("imdb"),
            tgt_task: s("sst2"),
            metric: s("accuracy"),
            raw: 88.5,
            own: 94.0,
            relative: 94.15,
            src_type: some("sentiment"),
            tgt_type: some("sentiment2"),
            split: some("dev"),
            n_seeds: 3,
            raw_sd: Some(1.5),
            own_sd: Some(0.5),
            relative_sd: Some(1.7),
            random_margin: Some(40.2),
            random_margin_sd: Some(3.1),
            beats_random: Some(true),
        },
        TransferRelativeRow {
            model: s("bert-base"),
            src_task: s("mnli"),
            tgt_task: s("rte"),
            metric: s("f1"),
            raw: 51.5,
            own: 70.0,
            relative: 73.5,
            src_type: None,
            tgt_type: None,
            split: None,
            n_seeds: 1,
            raw_sd: None,
            own_sd: None,
            relative_sd: None,
            random_margin: None,
            random_margin_sd: None,
            beats_random: None,
        },
    ]
}

fn cross_model() -> Vec<CrossModelRow> {
    vec![
        CrossModelRow {
            model: s("roberta-large"),
            src_model: s("roberta-base"),
            objective: some("task"),
            src_task: s("imdb"),
            tgt_task: s("sst2"),
            held_out: Some(false),
            metric: s("accuracy"),
            value: 80.5,
            own: 95.5,
            relative: 84.25,
        },
        CrossModelRow {
            model: s("t5-large"),
            src_model: s("t5-base"),
            objective: None,
            src_task: s("mnli"),
            tgt_task: s("qnli"),
            held_out: None,
            metric: s("f1"),
            value: 60.5,
            own: 90.5,
            relative: 66.75,
        },
    ]
}

#[test]
fn round_trip_of_jobs() {
    round_trip(&jobs());
}

#[test]
fn round_trip_of_metrics() {
    round_trip(&metrics());
}

#[test]
fn round_trip_of_evals() {
    round_trip(&evals());
}

#[test]
fn round_trip_of_indicators() {
    round_trip(&indicators());
}

#[test]
fn round_trip_of_correlations() {
    round_trip(&correlations());
}

#[test]
fn round_trip_of_tpt() {
    round_trip(&tpt());
}

#[test]
fn round_trip_of_transfer_relative() {
    round_trip(&transfer_relative());
}

#[test]
fn round_trip_of_cross_model() {
    round_trip(&cross_model());
}

const UTF8: DataType = DataType::Utf8;
const I64: DataType = DataType::Int64;
const F64: DataType = DataType::Float64;
const BOOL: DataType = DataType::Boolean;

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `(name, type, nullable)` of each column, in file order.
fn columns<T: Table>() -> Vec<(String, DataType, bool)> {
    T::schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect()
}

fn spelled(cols: &[(&str, DataType, bool)]) -> Vec<(String, DataType, bool)> {
    cols.iter()
        .map(|(n, t, null)| (n.to_string(), t.clone(), *null))
        .collect()
}

/// The on-disk format as committed parts already hold it: names, Arrow types (the timestamp's
/// unit and zone included), nullability and order. A change here breaks existing result stores.
#[test]
fn table_schemas_are_the_committed_format() {
    assert_eq!(JobRow::NAME, "jobs");
    assert_eq!(
        columns::<JobRow>(),
        spelled(&[
            ("job_id", UTF8, false),
            ("kind", UTF8, false),
            ("model", UTF8, false),
            ("task", UTF8, true),
            ("src_task", UTF8, true),
            ("src_model", UTF8, true),
            ("objective", UTF8, true),
            ("seed", I64, true),
            ("attempt", I64, false),
            ("worker", UTF8, true),
            ("status", UTF8, false),
            ("error", UTF8, true),
            ("started_at", utc_ms(), true),
            ("finished_at", utc_ms(), true),
            ("duration_s", F64, true),
            ("promptgrid_version", UTF8, true),
            ("git_commit", UTF8, true),
            ("torch_version", UTF8, true),
            ("device", UTF8, true),
            ("precision", UTF8, true),
            ("threads", I64, true),
        ])
    );
    assert_eq!(MetricRow::NAME, "metrics");
    assert_eq!(
        columns::<MetricRow>(),
        spelled(&[
            ("job_id", UTF8, false),
            ("attempt", I64, false),
            ("step", I64, false),
            ("name", UTF8, false),
            ("value", F64, false),
            ("wall_s", F64, true),
        ])
    );
    assert_eq!(EvalRow::NAME, "evals");
    assert_eq!(
        columns::<EvalRow>(),
        spelled(&[
            ("job_id", UTF8, false),
            ("kind", UTF8, false),
            ("model", UTF8, false),
            ("src_task", UTF8, false),
            ("tgt_task", UTF8, false),
            ("src_model", UTF8, true),
            ("split", UTF8, false),
            ("metric", UTF8, false),
            ("value", F64, false),
            ("n", I64, false),
            ("src_type", UTF8, true),
            ("tgt_type", UTF8, true),
            ("objective", UTF8, true),
            ("held_out", BOOL, true),
        ])
    );
    assert_eq!(IndicatorRow::NAME, "indicators");
    assert_eq!(
        columns::<IndicatorRow>(),
        spelled(&[
            ("model", UTF8, false),
            ("task_a", UTF8, false),
            ("task_b", UTF8, false),
            ("indicator", UTF8, false),
            ("layers", UTF8, true),
            ("value", F64, true),
        ])
    );
    assert_eq!(CorrelationRow::NAME, "correlations");
    assert_eq!(
        columns::<CorrelationRow>(),
        spelled(&[
            ("model", UTF8, false),
            ("indicator", UTF8, false),
            ("layers", UTF8, true),
            ("target", UTF8, false),
            ("spearman", F64, true),
            ("n", I64, false),
            ("rho_lo", F64, true),
            ("rho_hi", F64, true),
            ("n_boot", I64, false),
            ("p_value", F64, true),
            ("n_perm", I64, false),
            ("n_seeds", I64, false),
        ])
    );
    assert_eq!(TptRow::NAME, "tpt");
    assert_eq!(
        columns::<TptRow>(),
        spelled(&[
            ("model", UTF8, false),
            ("src", UTF8, false),
            ("tgt", UTF8, false),
            ("src_model", UTF8, true),
            ("objective", UTF8, true),
            ("seed", I64, true),
            ("vanilla_best", F64, false),
            ("steps_vanilla", I64, false),
            ("steps_tpt", I64, true),
            ("speedup", F64, true),
            ("tpt_best", F64, false),
        ])
    );
    assert_eq!(TransferRelativeRow::NAME, "transfer_relative");
    assert_eq!(
        columns::<TransferRelativeRow>(),
        spelled(&[
            ("model", UTF8, false),
            ("src_task", UTF8, false),
            ("tgt_task", UTF8, false),
            ("metric", UTF8, false),
            ("raw", F64, false),
            ("own", F64, false),
            ("relative", F64, false),
            ("src_type", UTF8, true),
            ("tgt_type", UTF8, true),
            ("split", UTF8, true),
            ("n_seeds", I64, false),
            ("raw_sd", F64, true),
            ("own_sd", F64, true),
            ("relative_sd", F64, true),
            ("random_margin", F64, true),
            ("random_margin_sd", F64, true),
            ("beats_random", BOOL, true),
        ])
    );
    assert_eq!(CrossModelRow::NAME, "cross_model");
    assert_eq!(
        columns::<CrossModelRow>(),
        spelled(&[
            ("model", UTF8, false),
            ("src_model", UTF8, false),
            ("objective", UTF8, true),
            ("src_task", UTF8, false),
            ("tgt_task", UTF8, false),
            ("held_out", BOOL, true),
            ("metric", UTF8, false),
            ("value", F64, false),
            ("own", F64, false),
            ("relative", F64, false),
        ])
    );
}

/// A row's key as the writer numbers it: (first field, the others).
fn key_of<T: Table>(r: &T) -> (Vec<u8>, Vec<u8>) {
    let (mut head, mut rest) = (Vec::new(), Vec::new());
    r.key_into(&mut head, &mut rest);
    (head, rest)
}

fn fields(f: &[&dyn KeyPart]) -> (Vec<u8>, Vec<u8>) {
    let (mut head, mut rest) = (Vec::new(), Vec::new());
    f[0].put_head(&mut head);
    for p in &f[1..] {
        p.put(&mut rest);
    }
    (head, rest)
}

/// Result stores dedup by these keys: the fields that feed each, and their order, are fixed.
#[test]
fn dedup_keys_are_the_committed_fields_in_order() {
    for r in jobs() {
        assert_eq!(key_of(&r), fields(&[&r.job_id, &r.attempt]));
    }
    for r in metrics() {
        assert_eq!(
            key_of(&r),
            fields(&[&r.job_id, &r.attempt, &r.step, &r.name])
        );
    }
    for r in evals() {
        assert_eq!(
            key_of(&r),
            fields(&[&r.job_id, &r.tgt_task, &r.split, &r.metric])
        );
    }
    for r in indicators() {
        assert_eq!(
            key_of(&r),
            fields(&[&r.model, &r.task_a, &r.task_b, &r.indicator, &r.layers])
        );
    }
    for r in correlations() {
        assert_eq!(
            key_of(&r),
            fields(&[&r.model, &r.indicator, &r.layers, &r.target])
        );
    }
    for r in tpt() {
        assert_eq!(
            key_of(&r),
            fields(&[
                &r.model,
                &r.src,
                &r.tgt,
                &r.src_model,
                &r.objective,
                &r.seed
            ])
        );
    }
    for r in transfer_relative() {
        assert_eq!(
            key_of(&r),
            fields(&[&r.model, &r.src_task, &r.tgt_task, &r.metric])
        );
    }
    for r in cross_model() {
        assert_eq!(
            key_of(&r),
            fields(&[
                &r.model,
                &r.src_model,
                &r.objective,
                &r.src_task,
                &r.tgt_task,
                &r.metric,
            ])
        );
    }
    // Keys of one table's two rows differ, so the fixtures above pin something.
    let [a, b] = [&jobs()[0], &jobs()[1]].map(key_of);
    assert_ne!(a, b);
}

/// `evals` as a batch, with column `name` dropped (`replace: None`) or replaced.
fn evals_with(name: &str, replace: Option<(Field, ArrayRef)>) -> RecordBatch {
    let good = EvalRow::to_batch(&evals()).unwrap();
    let (mut fields, mut cols) = (Vec::new(), Vec::new());
    for (f, c) in good.schema().fields().iter().zip(good.columns()) {
        if f.name() != name {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        } else if let Some((f, c)) = replace.clone() {
            fields.push(f);
            cols.push(c);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// Writes `batch` as a plain Parquet file and decodes it back as `evals` rows.
fn read_back_as_evals(path: &Path, batch: &RecordBatch) -> Result<Vec<EvalRow>, ResultsError> {
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        rows.extend(EvalRow::from_batch(&b.unwrap())?);
    }
    Ok(rows)
}

fn table_message(err: ResultsError) -> String {
    match err {
        ResultsError::Table { table, message, .. } => format!("{table}: {message}"),
        other => panic!("expected a table error, got {other}"),
    }
}

#[test]
fn a_missing_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let batch = evals_with("split", None);
    let err = read_back_as_evals(&dir.path().join("x.parquet"), &batch).unwrap_err();
    assert_eq!(table_message(err), "evals: column `split` is missing");
}

#[test]
fn a_column_of_the_wrong_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let n_as_text: ArrayRef = Arc::new(StringArray::from(vec!["872", "9815"]));
    let batch = evals_with("n", Some((Field::new("n", UTF8, false), n_as_text)));
    let err = read_back_as_evals(&dir.path().join("x.parquet"), &batch).unwrap_err();
    assert_eq!(
        table_message(err),
        "evals: column `n` is Utf8, expected Int64"
    );
}

#[test]
fn a_null_in_a_non_null_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let split: ArrayRef = Arc::new(StringArray::from(vec![Some("test"), None]));
    let batch = evals_with("split", Some((Field::new("split", UTF8, true), split)));
    let err = read_back_as_evals(&dir.path().join("x.parquet"), &batch).unwrap_err();
    assert_eq!(table_message(err), "evals: column `split` is null at row 1");
}

/// Columns are read by name: a file whose columns come in another order decodes to the same rows.
#[test]
fn columns_are_read_by_name_not_position() {
    let good = EvalRow::to_batch(&evals()).unwrap();
    let schema = good.schema();
    let order: Vec<usize> = (0..good.num_columns()).rev().collect();
    let reversed = good.project(&order).unwrap();
    assert_eq!(reversed.schema().field(0).name(), "held_out");
    assert_ne!(reversed.schema(), schema);
    let dir = tempfile::tempdir().unwrap();
    let rows = read_back_as_evals(&dir.path().join("x.parquet"), &reversed).unwrap();
    assert_eq!(rows, evals());
}

/// The crate's reader refuses a part whose schema is not the table's, naming the file and the
/// first column that differs (it used to print the whole foreign schema instead).
#[test]
fn a_foreign_part_is_refused_with_the_column_named() {
    let dir = tempfile::tempdir().unwrap();
    TableWriter::<EvalRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&evals())
        .unwrap();
    let part = table_parts(dir.path(), EvalRow::NAME).unwrap().remove(0);
    let n_as_i32: ArrayRef = Arc::new(Int32Array::from(vec![872, 9815]));
    let cases = [
        (evals_with("split", None), "column `split` is missing"),
        (
            evals_with(
                "n",
                Some((Field::new("n", DataType::Int32, false), n_as_i32)),
            ),
            "column 9 is `n` (Int32), expected `n` (Int64)",
        ),
    ];
    for (batch, difference) in cases {
        let file = File::create(&part).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = read_table::<EvalRow>(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ResultsError::Table { table: "evals", .. }),
            "{msg}"
        );
        assert_eq!(
            msg,
            format!(
                "table evals at {}: schema differs from the `evals` table's: {difference}",
                part.display()
            )
        );
    }
}
