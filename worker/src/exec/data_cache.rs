//! Encoded splits kept between jobs. A worker runs many jobs on the same splits (every
//! transfer onto a target, each seed's training run of a task, TPT into a target), and reading
//! and tokenizing a large train split is most of a job's setup: the demo's SNLI has 97k pairs.
//! A split is encoded once per worker and model while it fits the budget; the least recently
//! used ones go first.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use promptgrid_common::catalog::Rows;
use promptgrid_ml::TaskData;
use promptgrid_ml::data::SplitFile;

use super::ExecError;

/// What an encoded split depends on. The file's length and modification time stand for its
/// content: a split rewritten between jobs is encoded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DataKey {
    model: String,
    task: String,
    path: PathBuf,
    /// The rows of the file the split reads (a held-out dev set and its train remainder are
    /// two splits of one file).
    rows: Rows,
    stamp: (u64, Option<SystemTime>),
    prompt_len: usize,
    max_text_tokens: Option<usize>,
    limit: usize,
}

impl DataKey {
    pub(super) fn new(
        model: &str,
        task: &str,
        file: SplitFile<'_>,
        prompt_len: usize,
        max_text_tokens: Option<usize>,
        limit: usize,
    ) -> DataKey {
        let meta = std::fs::metadata(file.path).ok();
        DataKey {
            model: model.to_string(),
            task: task.to_string(),
            path: file.path.to_path_buf(),
            rows: file.rows,
            stamp: (
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            ),
            prompt_len,
            max_text_tokens,
            limit,
        }
    }
}

/// Encoded splits up to a byte budget, most recently used last.
pub(super) struct DataCache {
    entries: Mutex<VecDeque<(DataKey, Arc<TaskData>, usize)>>,
    budget: usize,
}

/// Enough for every split of a 17-task sweep at 128 tokens but the largest train sets.
pub(super) const DATA_CACHE_BYTES: usize = 512 << 20;

impl DataCache {
    pub(super) fn new(budget: usize) -> DataCache {
        DataCache {
            entries: Mutex::new(VecDeque::new()),
            budget,
        }
    }

    /// The split under `key`, encoded by `encode` unless it is cached.
    pub(super) fn get_or_encode(
        &self,
        key: DataKey,
        encode: impl FnOnce() -> Result<TaskData, ExecError>,
    ) -> Result<Arc<TaskData>, ExecError> {
        if let Some(hit) = self.take(&key) {
            return Ok(hit);
        }
        let data = Arc::new(encode()?);
        let size = bytes(&data);
        if size <= self.budget {
            let mut entries = self.entries.lock().map_err(super::poisoned)?;
            let mut used: usize = entries.iter().map(|e| e.2).sum();
            while used + size > self.budget {
                match entries.pop_front() {
                    Some(old) => used -= old.2,
                    None => break,
                }
            }
            entries.push_back((key, data.clone(), size));
        }
        Ok(data)
    }

    /// A cached split, moved to the most recently used end.
    fn take(&self, key: &DataKey) -> Option<Arc<TaskData>> {
        let mut entries = self.entries.lock().ok()?;
        let at = entries.iter().position(|e| &e.0 == key)?;
        let entry = entries.remove(at)?;
        let data = entry.1.clone();
        entries.push_back(entry);
        Some(data)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

/// The heap an encoded split holds: its token ids, labels and per-example bookkeeping.
fn bytes(data: &TaskData) -> usize {
    let per_example = std::mem::size_of::<promptgrid_ml::Encoded>() + 8;
    data.inputs.iter().map(|e| e.ids.len() * 8).sum::<usize>() + data.len() * per_example
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use promptgrid_ml::Encoded;

    fn data(n: usize) -> TaskData {
        TaskData {
            inputs: (0..n)
                .map(|i| Encoded {
                    ids: vec![i as i64; 10],
                    mask_index: 0,
                })
                .collect(),
            labels: vec![0; n],
            label_ids: vec![7, 8],
        }
    }

    fn key(task: &str, limit: usize) -> DataKey {
        let file = SplitFile {
            path: Path::new("no/such/file"),
            rows: Rows::All,
        };
        DataKey::new("m", task, file, 20, Some(48), limit)
    }

    #[test]
    fn a_split_is_encoded_once_and_the_least_recent_goes_first() {
        let one = bytes(&data(1));
        let cache = DataCache::new(2 * 10 * one);
        let encoded = std::cell::Cell::new(0);
        let get = |k: DataKey| {
            cache
                .get_or_encode(k, || {
                    encoded.set(encoded.get() + 1);
                    Ok(data(10))
                })
                .unwrap()
        };
        let a = get(key("a", 0));
        let again = get(key("a", 0));
        assert!(Arc::ptr_eq(&a, &again));
        // Another limit is another encoding.
        get(key("a", 5));
        assert_eq!(encoded.get(), 2);
        // Touch a, then c evicts the least recent: (a, 5).
        get(key("a", 0));
        get(key("c", 0));
        assert_eq!(encoded.get(), 3);
        get(key("a", 0));
        assert_eq!(encoded.get(), 3);
        get(key("a", 5));
        assert_eq!(encoded.get(), 4);
    }

    #[test]
    fn a_split_larger_than_the_budget_is_not_kept_and_errors_are_not_cached() {
        let cache = DataCache::new(bytes(&data(10)) - 1);
        let got = cache.get_or_encode(key("a", 0), || Ok(data(10))).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(cache.len(), 0);
        let err = cache
            .get_or_encode(key("b", 0), || Err(ExecError::Fatal("bad split".into())))
            .unwrap_err();
        assert_eq!(err.to_string(), "bad split");
        assert_eq!(cache.len(), 0);
    }
}
