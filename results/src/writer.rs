//! The table writer the results sink commits through: append rows, and when `append` returns
//! they are durable in a committed part, or they were already there (a replay) and were skipped.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use promptgrid_common::JobGraph;

use crate::error::{Result, ResultsError, io_at};
use crate::schema::Table;
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
    codes: KeyCodes,
    /// Next part number of this writer.
    next: u64,
    _rows: PhantomData<T>,
}

/// A row's key as an exact number: [`KeyCodes::code`].
pub type RowCode = u64;

/// Row keys as exact 64-bit codes: the number of the key's first field (a job's place in the
/// sweep's graph, else a number handed out in order of first sight, past the graph's) and the
/// number of the rest (handed out the same way). Both maps are one-to-one, so two rows share a
/// code only when their keys are equal: no collision can drop a row, as one of a digest could.
/// At a million jobs the rests are a handful (attempt, step, metric name) and the job ids are
/// the graph's: 8 bytes a committed row, where a 128-bit digest took 16.
#[derive(Debug, Default)]
pub struct KeyCodes {
    jobs: Option<Arc<JobGraph>>,
    heads: HashMap<Box<[u8]>, u32>,
    rests: HashMap<Box<[u8]>, u32>,
    head: Vec<u8>,
    rest: Vec<u8>,
}

impl KeyCodes {
    pub fn new(jobs: Option<Arc<JobGraph>>) -> KeyCodes {
        KeyCodes {
            jobs,
            ..KeyCodes::default()
        }
    }

    pub fn code<T: Table>(&mut self, row: &T) -> RowCode {
        self.head.clear();
        self.rest.clear();
        row.key_into(&mut self.head, &mut self.rest);
        let graph = self.jobs.as_deref();
        let place = graph.and_then(|g| g.position_of(std::str::from_utf8(&self.head).ok()?));
        let head = match place {
            Some(i) => i,
            None => graph.map_or(0, JobGraph::len) + number(&mut self.heads, &self.head),
        };
        let head = u32::try_from(head).expect("fewer than 4 billion keys");
        let rest = number(&mut self.rests, &self.rest);
        (u64::from(head) << 32) | rest as u64
    }
}

/// The number of `bytes` in `map`, a new one if they are new.
fn number(map: &mut HashMap<Box<[u8]>, u32>, bytes: &[u8]) -> usize {
    if let Some(&n) = map.get(bytes) {
        return n as usize;
    }
    let n = u32::try_from(map.len()).expect("fewer than 4 billion keys");
    map.insert(bytes.into(), n);
    n as usize
}

/// A set of row keys: a sorted vector of all but the newest, which wait in a small hash set
/// until there are enough of them to merge in. A hash set of every key weighs about twice as
/// much (its spare buckets, and two tables while it grows): over 100 MB of a coordinator's
/// memory at a million jobs, where this holds 8 bytes a key.
#[derive(Debug, Default)]
struct KeySet {
    sorted: Vec<RowCode>,
    recent: HashSet<RowCode>,
}

impl KeySet {
    /// Keys held in the hash set before they are merged into the sorted vector.
    const MERGE_AT: usize = 1 << 16;

    fn from_keys(mut keys: Vec<RowCode>) -> KeySet {
        keys.sort_unstable();
        keys.dedup();
        // Read part by part, the vector grew by doubling: up to half of it spare.
        keys.shrink_to_fit();
        KeySet {
            sorted: keys,
            recent: HashSet::new(),
        }
    }

    fn contains(&self, k: &RowCode) -> bool {
        self.recent.contains(k) || self.sorted.binary_search(k).is_ok()
    }

    fn insert(&mut self, k: RowCode) {
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
        let mut new: Vec<RowCode> = self.recent.drain().collect();
        new.sort_unstable();
        let (mut i, mut j) = (self.sorted.len(), new.len());
        // An eighth to spare rather than doubling: at a million jobs the sorted keys are tens
        // of MB, and a doubled vector kept up to half of that unused.
        let room = self.sorted.capacity() - i;
        if room < j {
            self.sorted.reserve_exact(j.max(i / 8));
        }
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
    keys: Vec<RowCode>,
    skipped: usize,
}

impl<T: Table> TableWriter<T> {
    /// Opens the table under `sweep` (`results/<sweep>`): finishes an interrupted replacement,
    /// removes this writer's staged leftovers (never committed, so never acknowledged), and loads
    /// the keys of every committed row.
    pub fn open(sweep: &Path, writer: &str) -> Result<Self> {
        Self::open_with_jobs(sweep, writer, None)
    }

    /// [`Self::open`], with the sweep's graph to number the job ids of the keys by
    /// ([`KeyCodes`]).
    pub fn open_with_jobs(sweep: &Path, writer: &str, jobs: Option<Arc<JobGraph>>) -> Result<Self> {
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
        let mut codes = KeyCodes::new(jobs);
        let mut keys = Vec::new();
        for part in table_parts(sweep, T::NAME)? {
            keys.extend(read_part::<T>(&part)?.iter().map(|r| codes.code(r)));
        }
        let committed = KeySet::from_keys(keys);
        let next = crate::store::next_part_number(&dir, writer)?;
        Ok(Self {
            sweep: sweep.to_path_buf(),
            writer: writer.to_string(),
            committed,
            codes,
            next,
            _rows: PhantomData,
        })
    }

    /// Rows committed in the table (by any writer, as of open, plus this writer's appends).
    pub fn committed_rows(&self) -> usize {
        self.committed.len()
    }

    pub fn contains(&mut self, row: &T) -> bool {
        let k = self.codes.code(row);
        self.committed.contains(&k)
    }

    /// The exact code of `row`'s key, as the dedup set holds it.
    pub fn code(&mut self, row: &T) -> RowCode {
        self.codes.code(row)
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
        let mut keys = Vec::new();
        let fresh: Vec<T> = rows
            .iter()
            .filter(|r| {
                let k = self.codes.code(*r);
                let new = !self.committed.contains(&k) && seen.insert(k);
                if new {
                    keys.push(k);
                }
                new
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
            keys,
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

/// Compacts every table of docs/results.md, "Tables" (and `transfer_relative`) under `sweep`.
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
            state % 300_000
        };
        let mut set = KeySet::from_keys((0..50_000).map(|_| next()).collect());
        let mut plain: HashSet<RowCode> = set.sorted.iter().copied().collect();
        for _ in 0..400_000 {
            let k = next();
            assert_eq!(set.contains(&k), plain.contains(&k));
            set.insert(k);
            plain.insert(k);
            assert_eq!(set.len(), plain.len());
        }
        assert!(set.sorted.windows(2).all(|w| w[0] < w[1]));
        for k in 0..300_000u64 {
            assert_eq!(set.contains(&k), plain.contains(&k), "{k}");
        }
    }

    fn metric(job: &str, attempt: i64, name: &str) -> crate::schema::MetricRow {
        crate::schema::MetricRow {
            job_id: job.into(),
            attempt,
            step: 0,
            name: name.into(),
            value: 1.0,
            wall_s: None,
        }
    }

    /// Keys numbered by the graph and past it are exact: distinct keys get distinct codes
    /// (a job of the graph, one outside it, fields that would run together as text), and a
    /// replay is skipped after a reopen that numbers the ids anew.
    #[test]
    fn exact_codes_skip_replays_across_a_reopen_and_keep_every_distinct_row() {
        use promptgrid_common::spec::SyntheticSpec;
        let spec = SyntheticSpec {
            count: 50,
            fan_in: 1,
            duration_ms: (0, 0),
            fail_probability: 0.0,
            payload_bytes: 0,
            seed: 1,
        };
        let graph = Arc::new(JobGraph::build(&promptgrid_common::Sweep::synthetic_only(
            "k", spec,
        )));
        let ids: Vec<String> = graph.jobs().iter().map(|j| j.id.to_string()).collect();
        let mut rows = Vec::new();
        for id in ids
            .iter()
            .map(String::as_str)
            .chain(["not-in-the-graph", "x"])
        {
            for (attempt, name) in [(1, "loss"), (2, "loss"), (1, "lr")] {
                rows.push(metric(id, attempt, name));
            }
        }
        // Whose fields, run together, would read as the row before's.
        rows.push(metric("x", 1, "los"));
        rows.push(metric("xl", 1, "oss"));
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            TableWriter::<crate::schema::MetricRow>::open_with_jobs(
                dir.path(),
                "sink",
                Some(graph.clone()),
            )
            .unwrap()
        };
        let mut w = open();
        let codes: HashSet<RowCode> = rows.iter().map(|r| w.code(r)).collect();
        assert_eq!(codes.len(), rows.len());
        assert_eq!(w.append(&rows).unwrap().written, rows.len());
        let mut w = open();
        assert_eq!(w.committed_rows(), rows.len());
        let again = w.append(&rows).unwrap();
        assert_eq!((again.written, again.skipped), (0, rows.len()));
        let next = metric(&ids[3], 3, "loss");
        assert_eq!(w.append(&[next.clone(), next]).unwrap().written, 1);
    }
}
