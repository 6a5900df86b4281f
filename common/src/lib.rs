//! promptgrid-common: what every part of promptgrid agrees on, with no tch and no I/O to NATS.
//!
//! Layout:
//! * [`catalog`]: task definitions (`sweeps/tasks/*.toml`, also compiled in as the built-in
//!   catalog);
//! * [`spec`]: the sweep file, validated and with its overrides resolved;
//! * [`graph`]: the sweep expanded into jobs, with content-derived ids and dependency edges;
//! * [`limits`]: how long a prompt a model's config.json allows (worker and plan);
//! * [`mask`]: the activation-mask artifact (packed bits in safetensors) of the ON indicator;
//! * [`overrides`]: `--set key=value` changes to a sweep file;
//! * [`plan`]: what `promptgrid plan` reports about a graph;
//! * [`rng`]: the seeded generator (SplitMix64) behind example orders, initial prompts and the
//!   report's resampling;
//! * [`codec`]: the sealed binary encoding of what a coordinator stores for its restarts;
//! * [`stored`]: the planned graph in that encoding, restored on a restart instead of planned;
//! * [`symbol`]: interned model, task and split names, as job specs hold them;
//! * [`error`]: errors that name the file, key and line.
pub mod catalog;
pub mod codec;
pub mod error;
pub mod graph;
pub mod limits;
pub mod mask;
pub mod names;
pub mod overrides;
pub mod plan;
pub mod rng;
pub mod spec;
pub mod stored;
pub mod symbol;
pub mod wire;

pub use error::{SpecError, SpecResult, UnknownValue};
pub use graph::{Job, JobGraph, JobId, JobKind, JobSpec};
pub use spec::Sweep;
pub use symbol::Symbol;
