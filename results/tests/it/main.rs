//! The results crate's one integration-test binary; shared helpers live in `util`.
mod bench;
mod indicators;
mod python;
mod reference;
mod report;
mod schema;
mod seeds;
mod splits;
mod store;
mod uncertainty;
mod util;
