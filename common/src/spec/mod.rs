//! The sweep file: which models, which tasks, which prompt settings and which studies.
//!
//! Parsing happens in two steps. Serde turns the TOML into [`raw`] structs that keep the byte
//! span of every value a check can reject; [`Sweep::parse`] then validates against the catalog
//! and resolves the per-model and per-task overrides, so that everything downstream works with
//! plain, checked values.
//!
//! Which task catalog a sweep file's tasks come from:
//! * `catalog = "<folder>"` in `[sweep]`: that folder, relative to the sweep file; an error if it
//!   cannot be read;
//! * otherwise `tasks/` beside the sweep file, when that folder exists (so a clone's
//!   `sweeps/*.toml` read `sweeps/tasks/`, edits included);
//! * otherwise the built-in catalog, compiled from `sweeps/tasks/` (an installed binary run
//!   outside the clone).
//!
//! [`Sweep::catalog`] records which one; [`Sweep::load_catalog`] reads it again.
//! [`Sweep::parse`] takes the catalog from its caller.
//!
//! Layout:
//! * [`types`]: the validated sweep and its parts, re-exported here;
//! * [`choices`]: the one-word settings (head, layout, init), parsed alike from sweeps and
//!   command lines, re-exported here;
//! * [`load`]: reading a sweep file, with `--set` overrides;
//! * [`raw`]: the serde structs of the file;
//! * [`resolve`]: header, models, tasks and settings from the raw form;
//! * [`studies`]: the `[studies]` and `[synthetic]` tables;
//! * [`validate`]: checks of single values, each naming the line at fault.

mod choices;
mod load;
mod raw;
mod resolve;
mod studies;
mod types;
mod validate;

pub use choices::{Head, Init, Layout};
pub use types::{
    Arch, CrossModelPair, CrossTaskStudy, DEFAULT_ADAM_EPS, Indicator, IndicatorStudy, ModelSpec,
    Objective, ProjectorSettings, PromptSettings, Studies, Sweep, SyntheticSpec, TaskSpec,
    TptPairs, TptSettings, TptStudy,
};
