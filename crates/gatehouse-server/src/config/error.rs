//! Config errors: each names the file, the line and the key.

use std::fmt;
use std::path::PathBuf;

use super::KeyPath;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {reason}", file.display())]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The text is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// toml's message, which names the key (e.g. ``unknown field `lisen` ``).
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}:{}: {key}: {message}", file.display(), LineOrUnknown(*line))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line, when the key is written in the file.
        line: Option<usize>,
        /// The key at fault.
        key: KeyPath,
        /// What is wrong and what was expected.
        message: String,
    },
}

struct LineOrUnknown(Option<usize>);

impl fmt::Display for LineOrUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "{line}"),
            None => f.write_str("?"),
        }
    }
}

impl ConfigError {
    /// Converts toml's error, whose span gives the line.
    pub(crate) fn from_toml(file: &std::path::Path, text: &str, error: &toml::de::Error) -> Self {
        let start = error.span().map(|span| span.start.min(text.len()));
        let line = start.map(|start| text[..start].matches('\n').count() + 1).unwrap_or(1);
        let message = error.message().trim();
        // Value errors (a bad size, a bad duration) say what is wrong but not
        // where; name the key whose value the error points at.
        let message = match start.and_then(|start| super::locate::key_at(text, start)) {
            Some(key) if !message.contains("unknown field") && !message.contains("missing field") => {
                format!("{key}: {message}")
            }
            _ => message.to_string(),
        };
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            message,
        }
    }
}
