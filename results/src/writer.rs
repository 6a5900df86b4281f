//! The table writer the results sink commits through: append rows, and when `append` returns
//! they are durable in a committed part, or they were already there (a replay) and were skipped.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::error::{Result, ResultsError, io_at};
use crate::schema::{RowKey, Table};
use crate::store::{
    STAGED_SUFFIX, StopAt, part_name, read_part, recover, remove_staged, replace_parts,
    staging_dir, sync_dir, table_dir, table_parts, write_parquet,
};

/// Writer name reserved for compaction's parts.
pub const COMPACT_WRITER: &str = "compact";

/// What one [`TableWriter::append`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitOutcome {
    /// New rows now durable in `part`.
    pub written: usize,
    /// Rows whose key was already committed (or repeated within the call): a replay.
    pub skipped: usize,
    /// The committed part; `None` when every row was skipped.
    pub part: Option<PathBuf>,
}

/// Appends rows of one table, one committed part per call. One process per `writer` name at a
/// time; distinct names may write the same table concurrently.
pub struct TableWriter<T: Table> {
    sweep: PathBuf,
    writer: String,
    /// Keys of every committed row, read from the parts at open: the dedup set for replays.
    committed: KeySet,
    /// Next part number of this writer.
    next: u64,
    _rows: PhantomData<T>,
}

/// A set of row keys: a sorted vector of all but the newest, which wait in a small hash set
/// until there are enough of them to merge in. A hash set of every key weighs about twice as
/// much (its spare buckets, and two tables while it grows): over 100 MB of a coordinator's
/// memory at a million jobs, where this holds 16 bytes a key.
#[derive(Debug, Default)]
struct KeySet {
    sorted: Vec<RowKey>,
    recent: HashSet<RowKey>,
}

impl KeySet {
    /// Keys held in the hash set before they are merged into the sorted vector.
    const MERGE_AT: usize = 1 << 16;

    fn from_keys(mut keys: Vec<RowKey>) -> KeySet {
        keys.sort_unstable();
        keys.dedup();
        KeySet {
            sorted: keys,
            recent: HashSet::new(),
        }
    }

    fn contains(&self, k: &RowKey) -> bool {
        self.recent.contains(k) || self.sorted.binary_search(k).is_ok()
    }

    fn insert(&mut self, k: RowKey) {
        if self.contains(&k) {
            return;
        }
        self.recent.insert(k);
        if self.recent.len() >= Self::MERGE_AT {
            self.merge();
        }
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Moves the recent keys into the sorted vector: merged from the back, in place.
    fn merge(&mut self) {
        let mut new: Vec<RowKey> = self.recent.drain().collect();
        new.sort_unstable();
        let (mut i, mut j) = (self.sorted.len(), new.len());
        self.sorted.resize(i + j, 0);
        while j > 0 {
            let k = i + j - 1;
            if i > 0 && self.sorted[i - 1] > new[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = new[j - 1];
                j -= 1;
            }
        }
    }
}

/// A part written and fsynced in the staging folder, not yet visible in the table.
#[must_use = "a staged part is not committed until `publish`"]
pub struct StagedPart {
    staged: PathBuf,
    part: PathBuf,
    keys: Vec<RowKey>,
    skipped: usize,
}

impl<T: Table> TableWriter<T> {
    /// Opens the table under `sweep` (`results/<sweep>`): finishes an interrupted replacement,
    /// removes this writer's staged leftovers (never committed, so never acknowledged), and loads
    /// the keys of every committed row.
    pub fn open(sweep: &Path, writer: &str) -> Result<Self> {
        let valid = !writer.is_empty()
            && writer != COMPACT_WRITER
            && writer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ResultsError::Table {
                table: T::NAME,
                path: sweep.to_path_buf(),
                message: format!(
                    "writer name {writer:?} must be [A-Za-z0-9_]+ and not `{COMPACT_WRITER}`"
                ),
            });
        }
        let (dir, staging) = (table_dir(sweep, T::NAME), staging_dir(sweep, T::NAME));
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        std::fs::create_dir_all(&staging).map_err(io_at(&staging))?;
        recover(sweep, T::NAME)?;
        remove_staged(&staging, writer)?;
        let mut keys = Vec::new();
        for part in table_parts(sweep, T::NAME)? {
            keys.extend(read_part::<T>(&part)?.iter().map(T::key));
        }
        let committed = KeySet::from_keys(keys);
        let next = crate::store::next_part_number(&dir, writer)?;
        Ok(Self {
            sweep: sweep.to_path_buf(),
            writer: writer.to_string(),
            committed,
            next,
            _rows: PhantomData,
        })
    }

    /// Rows committed in the table (by any writer, as of open, plus this writer's appends).
    pub fn committed_rows(&self) -> usize {
        self.committed.len()
    }

    pub fn contains(&self, row: &T) -> bool {
        self.committed.contains(&row.key())
    }

    /// Commits the rows not yet in the table as one new part; durable when this returns, so the
    /// caller may acknowledge the events behind `rows` then.
    pub fn append(&mut self, rows: &[T]) -> Result<CommitOutcome> {
        match self.stage(rows)? {
            Some(staged) => self.publish(staged),
            None => Ok(CommitOutcome {
                written: 0,
                skipped: rows.len(),
                part: None,
            }),
        }
    }

    /// First half of `append`: dedup, write and fsync in the staging folder. `None` when every
    /// row is a replay. Public so crash tests can stop between the two halves.
    pub fn stage(&mut self, rows: &[T]) -> Result<Option<StagedPart>> {
        let mut seen = HashSet::new();
        let fresh: Vec<T> = rows
            .iter()
            .filter(|r| {
                let k = r.key();
                !self.committed.contains(&k) && seen.insert(k)
            })
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(None);
        }
        let dir = table_dir(&self.sweep, T::NAME);
        // Another process may have compacted meanwhile; never reuse a name that exists.
        while dir.join(part_name(&self.writer, self.next)).exists() {
            self.next += 1;
        }
        let n = self.next;
        self.next += 1;
        let staged = staging_dir(&self.sweep, T::NAME)
            .join(format!("{}-{n:06}{STAGED_SUFFIX}", self.writer));
        write_parquet(&staged, &fresh)?;
        Ok(Some(StagedPart {
            staged,
            part: dir.join(part_name(&self.writer, n)),
            keys: fresh.iter().map(T::key).collect(),
            skipped: rows.len() - fresh.len(),
        }))
    }

    /// Second half of `append`: rename into the table folder and fsync the folder.
    pub fn publish(&mut self, staged: StagedPart) -> Result<CommitOutcome> {
        std::fs::rename(&staged.staged, &staged.part).map_err(io_at(&staged.part))?;
        sync_dir(&table_dir(&self.sweep, T::NAME))?;
        let written = staged.keys.len();
        for k in staged.keys {
            self.committed.insert(k);
        }
        Ok(CommitOutcome {
            written,
            skipped: staged.skipped,
            part: Some(staged.part),
        })
    }
}

/// What [`compact`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactOutcome {
    pub parts_before: usize,
    pub parts_after: usize,
    pub rows: usize,
}

/// Merges the table's parts smaller than `small_rows` rows into one part, rows in the same order.
/// A crash at any point leaves the table reading exactly as before or exactly as after.
pub fn compact<T: Table>(sweep: &Path, small_rows: usize) -> Result<CompactOutcome> {
    compact_until::<T>(sweep, small_rows, StopAt::Never)
}

#[doc(hidden)]
pub fn compact_until<T: Table>(
    sweep: &Path,
    small_rows: usize,
    stop: StopAt,
) -> Result<CompactOutcome> {
    recover(sweep, T::NAME)?;
    let parts = table_parts(sweep, T::NAME)?;
    let before = parts.len();
    let mut small = Vec::new();
    let mut rows = Vec::new();
    for part in &parts {
        let r = read_part::<T>(part)?;
        if r.len() < small_rows {
            small.push(
                part.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string(),
            );
            rows.extend(r);
        }
    }
    if small.len() < 2 {
        return Ok(CompactOutcome {
            parts_before: before,
            parts_after: before,
            rows: 0,
        });
    }
    let merged = small.len();
    replace_parts(sweep, COMPACT_WRITER, &rows, small, stop)?;
    Ok(CompactOutcome {
        parts_before: before,
        parts_after: before - merged + 1,
        rows: rows.len(),
    })
}

/// Replaces the whole content of a derived table (the analysis re-computes it from scratch) with
/// `rows`, through the same crash-safe manifest as [`compact`].
pub fn replace_table<T: Table>(sweep: &Path, writer: &str, rows: &[T]) -> Result<()> {
    recover(sweep, T::NAME)?;
    let old = table_parts(sweep, T::NAME)?
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    replace_parts(sweep, writer, rows, old, StopAt::Never)?;
    Ok(())
}

/// Compacts every table of DESIGN.md §5 (and `transfer_relative`) under `sweep`.
pub fn compact_all(sweep: &Path, small_rows: usize) -> Result<Vec<(&'static str, CompactOutcome)>> {
    use crate::schema::*;
    Ok(vec![
        (JobRow::NAME, compact::<JobRow>(sweep, small_rows)?),
        (MetricRow::NAME, compact::<MetricRow>(sweep, small_rows)?),
        (EvalRow::NAME, compact::<EvalRow>(sweep, small_rows)?),
        (
            IndicatorRow::NAME,
            compact::<IndicatorRow>(sweep, small_rows)?,
        ),
        (
            CorrelationRow::NAME,
            compact::<CorrelationRow>(sweep, small_rows)?,
        ),
        (TptRow::NAME, compact::<TptRow>(sweep, small_rows)?),
        (
            TransferRelativeRow::NAME,
            compact::<TransferRelativeRow>(sweep, small_rows)?,
        ),
        (
            CrossModelRow::NAME,
            compact::<CrossModelRow>(sweep, small_rows)?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sorted-plus-recent key set answers as a plain hash set does, across merges.
    #[test]
    fn key_set_agrees_with_a_hash_set_across_merges() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few distinct values: many repeats, both in the sorted part and the recent one.
            RowKey::from(state % 300_000)
        };
        let mut set = KeySet::from_keys((0..50_000).map(|_| next()).collect());
        let mut plain: HashSet<RowKey> = set.sorted.iter().copied().collect();
        for _ in 0..400_000 {
            let k = next();
            assert_eq!(set.contains(&k), plain.contains(&k));
            set.insert(k);
            plain.insert(k);
            assert_eq!(set.len(), plain.len());
        }
        assert!(set.sorted.windows(2).all(|w| w[0] < w[1]));
        for k in 0..300_000u128 {
            assert_eq!(set.contains(&k), plain.contains(&k), "{k}");
        }
    }
}
