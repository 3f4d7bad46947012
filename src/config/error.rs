//! [`ConfigFileError`]: a rejected configuration, with the key and the line.

use std::fmt;

/// A configuration file was rejected: the key (its full dotted path), the line when the key is
/// in the file, and what is wrong.
///
/// ```
/// use tower_llm::config::StackConfig;
///
/// let err = StackConfig::from_toml_str("[bulkhead]\nmax_in_flight = 0\n").unwrap_err();
/// assert_eq!(err.key(), "bulkhead.max_in_flight");
/// assert_eq!(err.line(), Some(2));
/// assert_eq!(err.to_string(), "line 2: `bulkhead.max_in_flight`: must be at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFileError {
    key: String,
    line: Option<usize>,
    message: String,
}

impl ConfigFileError {
    /// An error about `key` (a dotted path such as `routes[0].targets[1].provider`) at `line`.
    pub fn new(key: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigFileError {
            key: key.into(),
            line,
            message: message.into(),
        }
    }

    /// An error about `key`, with the line of that key in `source` when it is there.
    pub(crate) fn locate(source: Option<&str>, key: &str, message: impl Into<String>) -> Self {
        let line = source.and_then(|src| super::keys::line_of_key(src, key));
        ConfigFileError::new(key, line, message)
    }

    /// The dotted path of the offending key (`routes[0].targets[1].provider`), or `""` when the
    /// file could not be parsed far enough to tell.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The 1-based line of the offending key or value, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            (false, None) => write!(f, "`{}`: {}", self.key, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}
