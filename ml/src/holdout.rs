//! Dev sets held out of a train file ([`Splits::dev_holdout_percent`]): where the official code had a
//! dev file of its own and the public export has none, dev is a seeded draw of the train file's
//! rows and training reads the rest, so that the best prompt is never picked on the data it is
//! scored on.
//!
//! The draw depends on the task's name and the file's row count only: every worker, every run
//! and every model holds out the same rows, and the two parts never overlap.
//!
//! [`Splits::dev_holdout_percent`]: promptgrid_common::catalog::Splits::dev_holdout_percent

use std::path::Path;

use promptgrid_common::catalog::Rows;

use super::error::{MlError, MlResult};
use super::rng::{Draws, SplitMix64};

/// FNV-1a of the task's name: the draw's seed, stable across builds and platforms.
fn seed_of(task: &str) -> u64 {
    task.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether each of `n` rows is held out, for a hold-out of `k` rows of `task`.
fn held_out(task: &str, n: usize, k: usize) -> Vec<bool> {
    let mut out = vec![false; n];
    for i in SplitMix64::new(seed_of(task))
        .permutation(n)
        .into_iter()
        .take(k)
    {
        out[i] = true;
    }
    out
}

/// The rows of `rows` (read from `path`, a split file of `task`) that `which` selects, in
/// file order. A hold-out that would leave no training row is an error naming the file.
pub fn select<T>(rows: Vec<T>, which: Rows, task: &str, path: &Path) -> MlResult<Vec<T>> {
    let (percent, keep_held) = match which {
        Rows::All => return Ok(rows),
        Rows::HeldOut(p) => (p as usize, true),
        Rows::Rest(p) => (p as usize, false),
    };
    // Rounded to the nearest row, at least one.
    let k = ((rows.len() * percent + 50) / 100).max(1);
    if k >= rows.len() {
        return Err(MlError::Data {
            path: path.into(),
            message: format!(
                "task {task}: dev_holdout_percent {percent} of {} rows leaves no training rows",
                rows.len()
            ),
        });
    }
    let held = held_out(task, rows.len(), k);
    Ok(rows
        .into_iter()
        .zip(held)
        .filter_map(|(r, h)| (h == keep_held).then_some(r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_and_train_partition_the_file_and_are_stable() {
        let rows: Vec<usize> = (0..1000).collect();
        let p = Path::new("train.jsonl");
        let dev = select(rows.clone(), Rows::HeldOut(10), "imdb", p).unwrap();
        let train = select(rows.clone(), Rows::Rest(10), "imdb", p).unwrap();
        assert_eq!((dev.len(), train.len()), (100, 900));
        assert!(dev.iter().all(|r| !train.contains(r)));
        assert_eq!(
            dev,
            select(rows.clone(), Rows::HeldOut(10), "imdb", p).unwrap()
        );
        assert_ne!(
            dev,
            select(rows.clone(), Rows::HeldOut(10), "sst2", p).unwrap()
        );
        // Not simply the file's head or tail.
        assert!(dev.iter().any(|&r| r < 500) && dev.iter().any(|&r| r >= 500));
        // A small file still holds out one row, and never all of them.
        assert_eq!(
            select(vec![1, 2, 3], Rows::HeldOut(10), "t", p)
                .unwrap()
                .len(),
            1
        );
        let err = select(vec![1], Rows::Rest(10), "imdb", p).unwrap_err();
        assert!(
            err.to_string().contains("dev_holdout_percent 10 of 1 rows"),
            "{err}"
        );
    }
}
