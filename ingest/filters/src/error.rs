//! The crate's error type. Filters never fail on a document (a document is kept or dropped,
//! see [`crate::Drop`]); errors come from configuration and from the files it names.

use std::path::PathBuf;

/// Errors of `tokenmill-filters`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blocklist file could not be read.
    #[error("reading blocklist {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line of a blocklist is not a valid entry.
    #[error("{source_name}:{line}: {message}")]
    Blocklist {
        /// The file (or the name given to in-memory text).
        source_name: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A filter setting is out of its range.
    #[error("filters: {filter}.{field}: {message}")]
    Config {
        /// The filter's table name (`gopher_quality`, ...).
        filter: &'static str,
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A language code that the language identifier does not know.
    #[error(
        "filters: language.languages: unknown language code {code:?} (give an ISO 639-1 code such as \"en\" or an ISO 639-3 code such as \"eng\" of one of whatlang's 70 languages)"
    )]
    UnknownLanguage {
        /// The code as configured.
        code: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that a ratio or threshold is finite and not negative.
pub(crate) fn check_threshold(filter: &'static str, field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::Config {
            filter,
            field,
            message: format!("must be a finite number >= 0, got {value}"),
        })
    }
}
