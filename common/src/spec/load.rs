//! Reading a sweep file: from disk, with `--set` overrides, or from text and a given catalog.

use std::path::Path;

use super::raw;
use super::types::Sweep;
use crate::catalog::Catalog;
use crate::error::{SpecError, SpecResult};
use crate::overrides::{self, Override};

/// The folder a sweep file's catalog defaults to, beside the file.
const TASKS_BESIDE: &str = "tasks";

/// The catalog for `file` whose `[sweep] catalog` is `setting`, by the rule of the module docs.
fn catalog_of(file: &Path, setting: Option<&str>) -> SpecResult<Catalog> {
    let beside = file.parent().unwrap_or(Path::new("."));
    match setting {
        Some(dir) => Catalog::load(&beside.join(dir)),
        None if beside.join(TASKS_BESIDE).is_dir() => Catalog::load(&beside.join(TASKS_BESIDE)),
        None => Catalog::builtin(),
    }
}

/// `--set a=1 --set b=2`, for messages.
fn describe(overrides: &[Override]) -> String {
    overrides
        .iter()
        .map(|o| format!("--set {o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sweep {
    /// Reads and validates a sweep file against the catalog it resolves to (see the module
    /// docs: its `catalog` folder, else `tasks/` beside it, else the built-in catalog).
    pub fn load(file: &Path) -> SpecResult<Sweep> {
        let source = std::fs::read_to_string(file).map_err(|e| SpecError::io(file, e))?;
        Sweep::from_source(file, &source)
    }

    /// Validates `source`, the text of `file`, against the catalog it names.
    fn from_source(file: &Path, source: &str) -> SpecResult<Sweep> {
        let raw: raw::Sweep =
            toml::from_str(source).map_err(|e| SpecError::toml(file, source, &e))?;
        let catalog = catalog_of(file, raw.sweep.catalog.as_deref())?;
        Sweep::resolve(file, source, raw, &catalog)
    }

    /// [`Sweep::load`] with `--set` overrides applied to the file's document first. An error
    /// that the file alone also has is reported at its line; one that only the overrides cause
    /// names them.
    pub fn load_with(file: &Path, overrides: &[Override]) -> SpecResult<Sweep> {
        if overrides.is_empty() {
            return Sweep::load(file);
        }
        let source = std::fs::read_to_string(file).map_err(|e| SpecError::io(file, e))?;
        let mut doc: toml::Table =
            toml::from_str(&source).map_err(|e| SpecError::toml(file, &source, &e))?;
        overrides::apply(&mut doc, overrides)?;
        let edited = toml::to_string(&doc).map_err(|e| SpecError::WithOverrides {
            file: file.into(),
            overrides: describe(overrides),
            message: e.to_string(),
        })?;
        match Sweep::from_source(file, &edited) {
            Ok(sweep) => Ok(sweep),
            // Blame the file where it is at fault on its own, at its line.
            Err(e) => Err(match Sweep::from_source(file, &source) {
                Err(original) => original,
                Ok(_) => SpecError::WithOverrides {
                    file: file.into(),
                    overrides: describe(overrides),
                    message: match e {
                        SpecError::Invalid { key, message, .. } => format!("`{key}`: {message}"),
                        SpecError::Toml { message, .. } => message,
                        other => other.to_string(),
                    },
                },
            }),
        }
    }

    /// The catalog this sweep's tasks were resolved from, read again: for callers that need
    /// more of it than the sweep's own tasks (the report groups tasks by type).
    pub fn load_catalog(&self) -> SpecResult<Catalog> {
        self.catalog.load()
    }

    /// Validates sweep text against a given catalog, which [`Sweep::catalog`] then names.
    pub fn parse(file: &Path, source: &str, catalog: &Catalog) -> SpecResult<Sweep> {
        let raw: raw::Sweep =
            toml::from_str(source).map_err(|e| SpecError::toml(file, source, &e))?;
        Sweep::resolve(file, source, raw, catalog)
    }
}
