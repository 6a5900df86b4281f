//! promptgrid-worker: runs a sweep's jobs on the ML core ([`promptgrid_ml`]).
//!
//! Layout:
//! * [`exec`]: the executors the runtime's job loop ([`promptgrid_runtime::jobloop`]) calls, one
//!   per job kind, with the model kept resident between jobs of one model;
//! * [`oneshot`]: `promptgrid tune`, `eval`, `inspect` and `activations` outside a sweep;
//! * [`gpus`]: one worker process per GPU (`promptgrid worker --gpus`), restarted when it dies.
pub mod exec;
pub mod gpus;
pub mod oneshot;
