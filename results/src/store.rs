//! Committed Parquet parts of a table: `results/<sweep>/<table>/part-<writer>-<n>.parquet`.
//!
//! Files are written under `results/<sweep>/.staging/<table>/`, fsynced, renamed into the table
//! folder and the folder fsynced, so a table folder only ever holds complete parts. Replacing
//! parts (compaction, re-running the analysis) goes through a manifest in the staging folder:
//! the new part is renamed in first, then the parts it replaces are removed, then the manifest.
//! Whoever opens the table next rolls an interrupted replacement forward, and [`table_parts`]
//! already hides the replaced parts while the manifest exists, so no row is ever lost or doubled.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::{FieldRef, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ResultsError, io_at, parquet_at};
use crate::schema::Table;

/// Rows per row group: bounds the memory a reader needs per group.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Folder (under the sweep folder) where parts are written before they are committed.
pub const STAGING: &str = ".staging";
const MANIFEST: &str = "replace.json";
/// Suffix of staged files; never a `.parquet` name, so no tool mistakes one for data.
pub(crate) const STAGED_SUFFIX: &str = ".parquet.staged";

pub(crate) fn table_dir(sweep: &Path, table: &str) -> PathBuf {
    sweep.join(table)
}

pub(crate) fn staging_dir(sweep: &Path, table: &str) -> PathBuf {
    sweep.join(STAGING).join(table)
}

pub(crate) fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("3 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// Makes a rename or removal durable: fsync the folder that holds the entry.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Parses `part-<writer>-<n>.parquet` into `(writer, n)`.
pub(crate) fn parse_part(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (writer, n) = stem.rsplit_once('-')?;
    Some((writer, n.parse().ok()?))
}

pub(crate) fn part_name(writer: &str, n: u64) -> String {
    format!("part-{writer}-{n:06}.parquet")
}

/// Writes `rows` (in bounded row groups, zstd) to `path` and fsyncs it.
pub(crate) fn write_parquet<T: Table>(path: &Path, rows: &[T]) -> Result<()> {
    let file = File::create(path).map_err(io_at(path))?;
    let mut writer =
        ArrowWriter::try_new(file, T::schema(), Some(writer_props())).map_err(parquet_at(path))?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        writer
            .write(&T::to_batch(chunk)?)
            .map_err(parquet_at(path))?;
    }
    let file = writer.into_inner().map_err(parquet_at(path))?;
    file.sync_all().map_err(io_at(path))
}

/// Reads one part, checking that its schema is the table's.
pub fn read_part<T: Table>(path: &Path) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    for_each_batch::<T>(path, |batch| {
        rows.extend(T::from_batch(batch)?);
        Ok(())
    })?;
    Ok(rows)
}

/// Streams the record batches of one part (the analysis uses it for the large metrics table).
pub fn for_each_batch<T: Table>(
    path: &Path,
    mut f: impl FnMut(&arrow::array::RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(io_at(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_at(path))?;
    if let Some(difference) = schema_difference(&T::schema(), builder.schema()) {
        return Err(ResultsError::Table {
            table: T::NAME,
            path: path.to_path_buf(),
            message: format!(
                "schema differs from the `{}` table's: {difference}",
                T::NAME
            ),
        });
    }
    let reader = builder
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(parquet_at(path))?;
    for batch in reader {
        let batch = batch?;
        f(&batch).map_err(|e| match e {
            // Column errors do not know the file; name it here.
            ResultsError::Table { table, message, .. } => ResultsError::Table {
                table,
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// The first column (in order) where a part's schema differs from the table's in name or type,
/// said in words; `None` when they match. Names the column, so a researcher can fix the file.
/// A part may lack nullable columns at the end: it was written before they were appended
/// (the `jobs` provenance columns), and reads them as null.
fn schema_difference(want: &Schema, got: &Schema) -> Option<String> {
    let (want, got) = (want.fields(), got.fields());
    let at = (0..want.len().max(got.len())).find(|&i| match (want.get(i), got.get(i)) {
        (Some(w), Some(g)) => w.name() != g.name() || w.data_type() != g.data_type(),
        (Some(w), None) => !w.is_nullable(),
        (None, _) => true,
    })?;
    let describe = |f: &FieldRef| format!("`{}` ({})", f.name(), f.data_type());
    Some(match (want.get(at), got.get(at)) {
        (Some(w), Some(g)) if got.find(w.name()).is_some() => {
            format!("column {at} is {}, expected {}", describe(g), describe(w))
        }
        (Some(w), _) => format!("column `{}` is missing", w.name()),
        (None, _) => {
            let extra: Vec<String> = got.iter().skip(at).map(describe).collect();
            format!("extra columns {}", extra.join(", "))
        }
    })
}

/// A replacement in progress: `new_part` (staged as `staged`) replaces `replaces`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub staged: String,
    pub new_part: String,
    pub replaces: Vec<String>,
}

fn read_manifest(staging: &Path) -> Result<Option<Manifest>> {
    let path = staging.join(MANIFEST);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ResultsError::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// The committed parts of a table, sorted by name. Anything else in the folder is an error (a
/// foreign file would otherwise be read by pandas or DuckDB as data). Parts that an interrupted
/// replacement has already superseded are left out.
pub fn table_parts(sweep: &Path, table: &'static str) -> Result<Vec<PathBuf>> {
    let dir = table_dir(sweep, table);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
        let path = entry.map_err(io_at(&dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !path.is_file() || parse_part(&name).is_none() {
            return Err(ResultsError::Table {
                table,
                path,
                message: "not a committed part (expected part-<writer>-<n>.parquet); move it out of the table folder".into(),
            });
        }
        parts.push((name, path));
    }
    if let Some(m) = read_manifest(&staging_dir(sweep, table))?
        && parts.iter().any(|(n, _)| *n == m.new_part)
    {
        parts.retain(|(n, _)| !m.replaces.contains(n));
    }
    parts.sort();
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

/// Every row of a table, parts in name order.
pub fn read_table<T: Table>(sweep: &Path) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    for part in table_parts(sweep, T::NAME)? {
        rows.extend(read_part::<T>(&part)?);
    }
    Ok(rows)
}

/// Finishes (or drops) an interrupted replacement. Returns whether one was found.
pub(crate) fn recover(sweep: &Path, table: &'static str) -> Result<bool> {
    let (dir, staging) = (table_dir(sweep, table), staging_dir(sweep, table));
    let Some(m) = read_manifest(&staging)? else {
        return Ok(false);
    };
    let staged = staging.join(&m.staged);
    let new_part = dir.join(&m.new_part);
    if staged.exists() && !new_part.exists() {
        std::fs::rename(&staged, &new_part).map_err(io_at(&staged))?;
        sync_dir(&dir)?;
    }
    if new_part.exists() {
        for old in &m.replaces {
            let p = dir.join(old);
            if p.exists() {
                std::fs::remove_file(&p).map_err(io_at(&p))?;
            }
        }
        sync_dir(&dir)?;
    }
    // Without the new part the old parts were never touched: dropping the manifest is safe.
    let mpath = staging.join(MANIFEST);
    std::fs::remove_file(&mpath).map_err(io_at(&mpath))?;
    sync_dir(&staging)?;
    Ok(true)
}

/// Where a replacement stops, for crash tests: the table must read the same after recovery.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    Never,
    AfterStage,
    AfterManifest,
    AfterRename,
}

/// Atomically-enough replaces `replaces` (part names) with one new part holding `rows`.
pub(crate) fn replace_parts<T: Table>(
    sweep: &Path,
    writer: &str,
    rows: &[T],
    replaces: Vec<String>,
    stop: StopAt,
) -> Result<Option<PathBuf>> {
    let table = T::NAME;
    recover(sweep, table)?;
    let (dir, staging) = (table_dir(sweep, table), staging_dir(sweep, table));
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    std::fs::create_dir_all(&staging).map_err(io_at(&staging))?;
    remove_staged(&staging, writer)?;
    let n = next_part_number(&dir, writer)?;
    let new_part = part_name(writer, n);
    let staged = format!("{writer}-{n:06}{STAGED_SUFFIX}");
    if rows.is_empty() && replaces.is_empty() {
        return Ok(None);
    }
    write_parquet(&staging.join(&staged), rows)?;
    if stop == StopAt::AfterStage {
        return Ok(None);
    }
    let manifest = Manifest {
        staged: staged.clone(),
        new_part: new_part.clone(),
        replaces,
    };
    let tmp = staging.join(format!("{MANIFEST}.tmp"));
    let text = serde_json::to_vec(&manifest).map_err(|source| ResultsError::Json {
        path: tmp.clone(),
        source,
    })?;
    std::fs::write(&tmp, text).map_err(io_at(&tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, staging.join(MANIFEST)).map_err(io_at(&tmp))?;
    sync_dir(&staging)?;
    if stop == StopAt::AfterManifest {
        return Ok(None);
    }
    std::fs::rename(staging.join(&staged), dir.join(&new_part)).map_err(io_at(&dir))?;
    sync_dir(&dir)?;
    if stop == StopAt::AfterRename {
        return Ok(None);
    }
    recover(sweep, table)?;
    Ok(Some(dir.join(new_part)))
}

/// Removes `writer`'s staged files: left by a crash before commit, so never acknowledged.
/// Call only after [`recover`], which may still need a staged file named in its manifest.
pub(crate) fn remove_staged(staging: &Path, writer: &str) -> Result<()> {
    let prefix = format!("{writer}-");
    for entry in std::fs::read_dir(staging).map_err(io_at(staging))? {
        let path = entry.map_err(io_at(staging))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(STAGED_SUFFIX) {
            tracing::info!(file = %path.display(), "removing an uncommitted staged part");
            std::fs::remove_file(&path).map_err(io_at(&path))?;
        }
    }
    Ok(())
}

/// One past the highest `n` of this writer's parts (0 for a new writer).
pub(crate) fn next_part_number(dir: &Path, writer: &str) -> Result<u64> {
    let mut next = 0;
    if dir.exists() {
        for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let name = entry.map_err(io_at(dir))?.file_name();
            if let Some((w, n)) = name.to_str().and_then(parse_part)
                && w == writer
            {
                next = next.max(n + 1);
            }
        }
    }
    Ok(next)
}
