//! Integration tests of the encoder half of the ML core (BERT/RoBERTa, data, tuning, prompt
//! files). Fixtures under tests/data/ come from scripts/make-parity-fixtures.py.

mod activations;
mod data;
mod demo_model;
mod determinism;
mod errors;
mod official;
mod parity;
mod prompts;
#[path = "../toy/mod.rs"]
mod toy;
mod train;
mod util;
