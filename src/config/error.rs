//! The one error type of configuration loading: every variant names the file,
//! and the line and column where they are known.

use std::fmt;
use std::path::PathBuf;

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Self { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a configuration could not be loaded. Its `Display` is the message an
/// operator sees: `file:line:column: problem`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named by the configuration (or the configuration itself) cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for the schema, or a value is invalid.
    #[error("{}{}: {message}", path.display(), location.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file, when known.
        location: Option<Location>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// An `Invalid` error located at byte `offset` of `text`.
    pub fn at(
        path: &std::path::Path,
        text: &str,
        offset: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            location: offset.map(|o| Location::of_offset(text, o)),
            message: message.into(),
        }
    }
}
