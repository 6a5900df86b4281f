//! Errors of sweep files and the catalog, and of one-word settings given outside a file. Every
//! message names the file, the key and the line (or the setting and the word), because a
//! researcher fixing a 300-line sweep needs to know where to look.

use std::fmt;
use std::path::{Path, PathBuf};

pub type SpecResult<T> = Result<T, SpecError>;

/// Where in a file something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

impl Location {
    /// The line and column of byte `offset` of `source`.
    pub fn at_offset(file: &Path, source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    }

    pub fn whole(file: &Path) -> Location {
        Location {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    // The I/O error is part of the message, not a `source`, so that `{:#}` chains print it once.
    #[error("{location}: cannot read: {error}")]
    Io {
        location: Location,
        error: std::io::Error,
    },
    /// Syntax and type errors, as the TOML parser reports them (with its key and span).
    #[error("{location}: {message}")]
    Toml { location: Location, message: String },
    /// A value that parses but makes no sense: an unknown task, a duplicate name, ...
    #[error("{location}: `{key}`: {message}")]
    Invalid {
        location: Location,
        key: String,
        message: String,
    },
    /// A `--set` argument that cannot be parsed or applied.
    #[error(transparent)]
    Override(#[from] crate::overrides::OverrideError),
    /// The sweep is valid as written but not with the `--set` overrides applied: the fault is in
    /// an override, so the message names them rather than a line of the file.
    #[error("{} with {overrides}: {message}", file.display())]
    WithOverrides {
        file: PathBuf,
        overrides: String,
        message: String,
    },
}

impl SpecError {
    pub fn io(file: &Path, source: std::io::Error) -> SpecError {
        SpecError::Io {
            location: Location::whole(file),
            error: source,
        }
    }

    pub fn toml(file: &Path, source: &str, err: &toml::de::Error) -> SpecError {
        let location = match err.span() {
            Some(span) => Location::at_offset(file, source, span.start),
            None => Location::whole(file),
        };
        // The parser's message repeats the source excerpt; keep its first line, which says what.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        SpecError::Toml { location, message }
    }

    /// An error about `key` at a known byte span.
    pub fn at(
        file: &Path,
        source: &str,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError::Invalid {
            location: Location::at_offset(file, source, offset),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error about `key` where only its name is known: points at its first assignment.
    pub fn at_key(file: &Path, source: &str, key: &str, message: impl Into<String>) -> SpecError {
        let location = match find_key(source, key) {
            Some(offset) => Location::at_offset(file, source, offset),
            None => Location::whole(file),
        };
        SpecError::Invalid {
            location,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Where in the file the fault is; `None` when it is in a `--set` override.
    pub fn location(&self) -> Option<&Location> {
        match self {
            SpecError::Io { location, .. }
            | SpecError::Toml { location, .. }
            | SpecError::Invalid { location, .. } => Some(location),
            SpecError::Override(_) | SpecError::WithOverrides { .. } => None,
        }
    }
}

/// A word that names none of a setting's values, as a command line or the ML code gives it:
/// `head "x": expected mlm or tied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?}: expected {expected}")]
pub struct UnknownValue {
    /// The setting (`head`, `layout`, `prompt init`).
    pub what: &'static str,
    /// The word given.
    pub value: String,
    /// The words it accepts, for the reader.
    pub expected: &'static str,
}

impl UnknownValue {
    pub fn new(what: &'static str, value: &str, expected: &'static str) -> UnknownValue {
        UnknownValue {
            what,
            value: value.to_string(),
            expected,
        }
    }
}

/// The byte offset of the first line that assigns `key` (`key =` or `key.sub =`), or a table
/// header naming it.
fn find_key(source: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_assignment = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('=') || rest.starts_with('.'));
        let is_header = trimmed.starts_with('[')
            && trimmed
                .trim_start_matches('[')
                .trim_end()
                .trim_end_matches(']')
                .split('.')
                .any(|p| p.trim() == key);
        if is_assignment || is_header {
            return Some(offset + indent);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = "a = 1\nbb = 2\n  c = 3\n";
        let l = Location::at_offset(Path::new("x.toml"), src, src.find('c').unwrap());
        assert_eq!((l.line, l.column), (3, 3));
        assert_eq!(l.to_string(), "x.toml:3:3");
    }

    #[test]
    fn keys_are_found_in_assignments_and_headers() {
        let src = "[sweep]\nname = \"x\"\n[prompt]\nlearning_rate = 0\n";
        assert_eq!(find_key(src, "learning_rate"), src.find("learning_rate"));
        assert_eq!(find_key(src, "prompt"), src.find("[prompt]"));
        assert_eq!(find_key(src, "missing"), None);
    }
}
