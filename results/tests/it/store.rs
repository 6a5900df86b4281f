//! The table writer: durable appends, replays skipped, crashes between write and rename,
//! restarts, compaction interrupted at every step.

use std::collections::BTreeMap;

use promptgrid_results::schema::MetricRow;
use promptgrid_results::store::{ROW_GROUP_ROWS, StopAt, read_table, table_parts};
use promptgrid_results::writer::compact_until;
use promptgrid_results::{ResultsError, TableWriter, compact};

use crate::util::metric;

fn rows(job: &str, steps: std::ops::Range<i64>) -> Vec<MetricRow> {
    steps
        .map(|s| metric(job, 1, s, "loss", 1.0 / (s + 1) as f64))
        .collect()
}

/// Rows sorted by key, so tables compare as multisets.
fn sorted(mut r: Vec<MetricRow>) -> Vec<MetricRow> {
    r.sort_by(|a, b| {
        (&a.job_id, a.attempt, a.step, &a.name).cmp(&(&b.job_id, b.attempt, b.step, &b.name))
    });
    r
}

#[test]
fn appends_are_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    let a = rows("j1", 0..10);
    let out = w.append(&a).unwrap();
    assert_eq!((out.written, out.skipped), (10, 0));
    assert!(
        out.part
            .unwrap()
            .ends_with("metrics/part-sink-000000.parquet")
    );
    w.append(&rows("j2", 0..5)).unwrap();
    let back: Vec<MetricRow> = read_table(dir.path()).unwrap();
    assert_eq!(back, [a, rows("j2", 0..5)].concat());
    // Only committed parts sit in the table folder.
    for entry in std::fs::read_dir(dir.path().join("metrics")).unwrap() {
        assert!(
            entry
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".parquet")
        );
    }
}

#[test]
fn replayed_rows_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    w.append(&rows("j1", 0..10)).unwrap();
    // A redelivered batch overlapping the committed one, with an in-batch duplicate too.
    let mut replay = rows("j1", 5..15);
    replay.push(metric("j1", 1, 14, "loss", 0.0));
    let out = w.append(&replay).unwrap();
    assert_eq!((out.written, out.skipped), (5, 6));
    let out = w.append(&rows("j1", 0..15)).unwrap();
    assert_eq!((out.written, out.skipped, out.part), (0, 15, None));
    // Another attempt of the same step is a different row.
    assert_eq!(
        w.append(&[metric("j1", 2, 0, "loss", 0.5)])
            .unwrap()
            .written,
        1
    );
    assert_eq!(read_table::<MetricRow>(dir.path()).unwrap().len(), 16);
}

#[test]
fn restarted_writer_knows_what_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
        w.append(&rows("j1", 0..10)).unwrap();
        w.append(&rows("j1", 10..20)).unwrap();
    } // the sink dies here
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    assert_eq!(w.committed_rows(), 20);
    // The stream replays everything not acked, and a little more.
    let out = w.append(&rows("j1", 15..30)).unwrap();
    assert_eq!((out.written, out.skipped), (10, 5));
    assert!(out.part.unwrap().ends_with("part-sink-000002.parquet"));
    assert_eq!(
        sorted(read_table(dir.path()).unwrap()),
        sorted(rows("j1", 0..30))
    );
}

#[test]
fn crash_between_write_and_rename_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    w.append(&rows("j1", 0..10)).unwrap();
    let staged = w.stage(&rows("j1", 10..20)).unwrap().unwrap();
    drop(staged); // the process dies before the rename: nothing was acked
    drop(w);
    let staging = dir.path().join(".staging/metrics");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1);
    // Readers never see the staged rows.
    assert_eq!(read_table::<MetricRow>(dir.path()).unwrap().len(), 10);
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staged leftover removed"
    );
    // The events are redelivered and committed exactly once.
    assert_eq!(w.append(&rows("j1", 10..20)).unwrap().written, 10);
    assert_eq!(
        sorted(read_table(dir.path()).unwrap()),
        sorted(rows("j1", 0..20))
    );
}

#[test]
fn compaction_keeps_every_row_even_when_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    for i in 0..6 {
        w.append(&rows(&format!("j{i}"), 0..7)).unwrap();
    }
    let before = sorted(read_table(dir.path()).unwrap());
    for stop in [
        StopAt::AfterStage,
        StopAt::AfterManifest,
        StopAt::AfterRename,
    ] {
        let copy = tempfile::tempdir().unwrap();
        for sub in ["metrics", ".staging/metrics"] {
            std::fs::create_dir_all(copy.path().join(sub)).unwrap();
            for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), copy.path().join(sub).join(e.file_name())).unwrap();
            }
        }
        compact_until::<MetricRow>(copy.path(), 100, stop).unwrap();
        let staged = || {
            std::fs::read_dir(copy.path().join(".staging/metrics"))
                .unwrap()
                .count()
        };
        // Mid-way, readers see the same rows...
        assert_eq!(sorted(read_table(copy.path()).unwrap()), before, "{stop:?}");
        // ...and the next writer rolls the compaction forward.
        let mut w2 = TableWriter::<MetricRow>::open(copy.path(), "sink").unwrap();
        if stop == StopAt::AfterStage {
            // Crashed before its manifest: the old parts stand; the next compaction cleans up.
            assert_eq!(table_parts(copy.path(), "metrics").unwrap().len(), 6);
            assert_eq!(staged(), 1);
            compact::<MetricRow>(copy.path(), 100).unwrap();
        }
        assert_eq!(staged(), 0, "{stop:?}");
        assert_eq!(
            table_parts(copy.path(), "metrics").unwrap().len(),
            1,
            "{stop:?}"
        );
        assert_eq!(sorted(read_table(copy.path()).unwrap()), before, "{stop:?}");
        assert_eq!(
            w2.append(&rows("j0", 0..7)).unwrap().written,
            0,
            "dedup survives compaction"
        );
    }
    let out = compact::<MetricRow>(dir.path(), 100).unwrap();
    assert_eq!((out.parts_before, out.parts_after, out.rows), (6, 1, 42));
    assert_eq!(sorted(read_table(dir.path()).unwrap()), before);
    // The live writer goes on after compaction without clobbering the merged part.
    assert_eq!(w.append(&rows("j9", 0..3)).unwrap().written, 3);
    assert_eq!(read_table::<MetricRow>(dir.path()).unwrap().len(), 45);
}

#[test]
fn row_groups_are_bounded_and_zstd() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let mut w = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    let n = ROW_GROUP_ROWS as i64 * 2 + 10;
    let part = w.append(&rows("big", 0..n)).unwrap().part.unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&part).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 3);
    let counts: BTreeMap<usize, i64> = (0..3).map(|i| (i, meta.row_group(i).num_rows())).collect();
    assert!(counts.values().all(|c| *c <= ROW_GROUP_ROWS as i64));
    assert!(matches!(
        meta.row_group(0).column(0).compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
}

#[test]
fn foreign_or_corrupt_files_in_a_table_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    TableWriter::<MetricRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&rows("j", 0..3))
        .unwrap();
    let stray = dir.path().join("metrics/notes.txt");
    std::fs::write(&stray, "hello").unwrap();
    let err = read_table::<MetricRow>(dir.path()).unwrap_err();
    assert!(
        matches!(err, ResultsError::Table { .. }) && err.to_string().contains("notes.txt"),
        "{err}"
    );
    std::fs::remove_file(&stray).unwrap();
    let corrupt = dir.path().join("metrics/part-other-000000.parquet");
    std::fs::write(&corrupt, "not parquet").unwrap();
    let err = read_table::<MetricRow>(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("part-other-000000.parquet"),
        "{err}"
    );
    assert!(
        TableWriter::<MetricRow>::open(dir.path(), "compact").is_err(),
        "reserved writer name"
    );
}

/// A `jobs` part written before the provenance columns were appended still reads, with those
/// columns null; a part missing a column that may not be null is still refused.
#[test]
fn a_part_without_the_appended_nullable_columns_reads_them_as_null() {
    use promptgrid_results::schema::{JobRow, Table};
    let dir = tempfile::tempdir().unwrap();
    let row = crate::util::job("j", "train", "m", "t", None, 1);
    let batch = JobRow::to_batch(std::slice::from_ref(&row)).unwrap();
    // The 15 columns the table had before the provenance ones.
    let old = batch.project(&(0..15).collect::<Vec<_>>()).unwrap();
    let write = |batch: &arrow::array::RecordBatch| {
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        let file = std::fs::File::create(dir.path().join("jobs/part-old-000000.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    };
    write(&old);
    let back = read_table::<JobRow>(dir.path()).unwrap();
    let want = JobRow {
        promptgrid_version: None,
        git_commit: None,
        torch_version: None,
        device: None,
        precision: None,
        threads: None,
        ..row
    };
    assert_eq!(back, vec![want]);
    // Without `status` (not nullable, not at the end): refused, naming the column.
    let no_status = batch.project(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    write(&no_status);
    let err = read_table::<JobRow>(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("column `status` is missing"),
        "{err}"
    );
}
