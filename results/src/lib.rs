//! promptgrid-results: the Parquet tables of a study, the analysis and the report; no tch.
//!
//! Layout:
//! * [`schema`]: one row type and Arrow schema per table (docs/results.md, "Tables");
//! * [`store`], [`writer`]: committed parts, the deduplicating [`writer::TableWriter`] the sink
//!   commits through, compaction;
//! * [`prompts`], [`indicators`], [`activation`]: prompt loading and the transferability
//!   indicators (docs/design.md, "The science"), ON on bit-packed activation masks;
//! * [`transfer`], [`spearman`]: relative transfer and rank correlations;
//! * [`seeds`], [`rho_uncertainty`], [`resample`]: the spread over seeds, the beats-random rule,
//!   bootstrap intervals and permutation p-values of ρ, and their seeded generator;
//! * [`external`]: `promptgrid indicators` on prompts from elsewhere;
//! * [`mod@report`]: `promptgrid report`: cross-task matrices grouped by task type, TPT speedup,
//!   cross-model transfer, indicator correlations, training curves; derived tables,
//!   `report.md` and PNG figures.
//!
//! The results sink (NATS) builds rows from events and commits them with
//! [`TableWriter::append`]; acknowledge the events only after it returns. Each table has a
//! dedup key (see [`schema::Table::key`]): `metrics` (job_id, attempt, step, name), `jobs`
//! (job_id, attempt: write an attempt's row once, when it is final), `evals` (job_id,
//! tgt_task, split, metric).
pub mod activation;
mod columns;
pub mod error;
pub mod external;
pub mod indicator_ranking;
pub mod indicators;
mod plot;
pub mod prompts;
pub mod report;
pub mod resample;
pub mod rho_uncertainty;
pub mod schema;
pub mod seeds;
pub mod sink;
pub mod spearman;
pub mod store;
pub mod transfer;
pub mod writer;

pub use error::{Result, ResultsError};
pub use external::{IndicatorSummary, run_indicators};
pub use report::{Report, ReportOptions, derive_and_report, report, report_sweep, report_with};
pub use writer::{CommitOutcome, TableWriter, compact, compact_all, replace_table};
