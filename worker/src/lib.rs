//! promptgrid-worker: the ML core ([`ml`]) and the executors that run its jobs for the
//! runtime's job loop ([`exec`]). The only crate that links libtorch.
pub mod exec;
pub mod ml;
pub mod oneshot;
pub mod runtime;
