//! Keeping freed activation memory in the process.
//!
//! libtorch's CPU allocator asks `posix_memalign` for every activation. glibc serves blocks
//! above its mmap threshold with fresh `mmap`s and gives them back on free, and trims the heap
//! top once more than its trim threshold is free, so every forward pass faults its activations
//! in again page by page (`clear_page`, `exc_page_fault`): measured with `perf` on a bf16
//! MiniLM-L3 evaluation (1,000 examples, one thread), 12% of the wall time; on a RoBERTa-base
//! size bf16 training step, whose backward frees more than 1 GiB at once, 7% with a 1 GiB trim
//! threshold. With a 256 MiB mmap threshold (above a RoBERTa-base evaluation batch's largest
//! activation, 64 × 228 × 3072 floats) and no trimming, freed blocks are reused instead. The
//! cost is resident memory that stays at the peak a process reached.

use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks up to this size come from the heap, and are reused once freed.
pub(crate) const MMAP_THRESHOLD: i32 = 256 << 20;
/// glibc reads -1 as "never trim".
const TRIM_THRESHOLD: i32 = -1;

static RETAINED: AtomicBool = AtomicBool::new(false);

/// Tunes glibc's malloc as above; call once at start, before the model loads. Returns whether
/// the allocator took the settings (false where it is not glibc's).
pub fn retain_freed_memory() -> bool {
    let took = set(MMAP_THRESHOLD, TRIM_THRESHOLD);
    RETAINED.store(took, Ordering::Relaxed);
    took
}

/// The largest block that a later allocation reuses instead of faulting in afresh: the mmap
/// threshold once [`retain_freed_memory`] took, else glibc's largest dynamic one (32 MiB).
pub(crate) fn largest_reused_block() -> i64 {
    if RETAINED.load(Ordering::Relaxed) {
        i64::from(MMAP_THRESHOLD)
    } else {
        32 << 20
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set(mmap: i32, trim: i32) -> bool {
    // SAFETY: mallopt only changes allocator parameters; glibc takes its arena lock, so the
    // call is safe from any thread at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_mmap: i32, _trim: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_thresholds() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(retain_freed_memory());
            assert_eq!(largest_reused_block(), 256 << 20);
        } else {
            assert!(!retain_freed_memory());
            assert_eq!(largest_reused_block(), 32 << 20);
        }
    }
}
