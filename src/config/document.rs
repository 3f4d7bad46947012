//! [`ConfigDocument`]: one TOML source shared by the library and the program that embeds it.

use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::schema::SourceText;
use super::{keys, ConfigFileError, StackConfig};

/// A parsed TOML configuration from which a program takes its own sections and keys before the
/// library reads the rest as a [`StackConfig`].
///
/// [`StackConfig::from_toml_str`] accepts only the library's schema: any other table or key is
/// an "unknown field" error naming the key and its line. A program that keeps its own settings
/// in the same file (the gateway's `[gateway]` table and its providers' `mock` profiles) takes
/// them out first with [`take_section`](Self::take_section) and
/// [`take_provider_keys`](Self::take_provider_keys), each into its own `serde` type; errors in
/// them name the key and the line too. [`into_stack_config`](Self::into_stack_config) then
/// reads and validates the rest.
///
/// ```
/// use serde::Deserialize;
/// use tower_llm::config::ConfigDocument;
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Server {
///     listen: String,
/// }
///
/// let mut doc = ConfigDocument::parse(r#"
/// [server]
/// listen = "127.0.0.1:9000"
///
/// [[providers]]
/// name = "local"
/// region = "eu"
///
/// [[routes]]
/// match = "*"
/// targets = [{ provider = "local" }]
/// "#).unwrap();
/// let server: Server = doc.take_section("server").unwrap().unwrap();
/// let regions: Vec<(String, String)> = doc.take_provider_keys("region").unwrap();
/// let config = doc.into_stack_config().unwrap();
/// assert_eq!(server.listen, "127.0.0.1:9000");
/// assert_eq!(regions, [("local".to_owned(), "eu".to_owned())]);
/// assert_eq!(config.providers[0].name, "local");
///
/// // What is not taken is not the library's: an unknown key, with its line.
/// let doc = ConfigDocument::parse("[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
/// let err = doc.into_stack_config().unwrap_err();
/// assert_eq!((err.key(), err.line()), ("server", Some(1)));
/// ```
#[derive(Clone)]
pub struct ConfigDocument {
    source: Arc<str>,
    /// Top-level tables taken out.
    sections: Vec<String>,
    /// Keys taken out of every `[[providers]]` entry.
    provider_keys: Vec<String>,
}

impl fmt::Debug for ConfigDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigDocument")
            .field("bytes", &self.source.len())
            .field("taken_sections", &self.sections)
            .field("taken_provider_keys", &self.provider_keys)
            .finish()
    }
}

impl ConfigDocument {
    /// Parse a TOML document (syntax only: the schema is checked when it is read).
    pub fn parse(source: &str) -> Result<Self, ConfigFileError> {
        DeTable::parse(source).map_err(|e| keys::toml_error(source, &e))?;
        Ok(ConfigDocument {
            source: source.into(),
            sections: Vec::new(),
            provider_keys: Vec::new(),
        })
    }

    /// Read and parse a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigFileError::new("", None, format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&source)
    }

    /// The TOML text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Take the top-level table `name` out of the document, read as a `T`; `None` when the
    /// document has no such table. An error names the key (`name.field`) and its line.
    pub fn take_section<T: DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> Result<Option<T>, ConfigFileError> {
        let source = Arc::clone(&self.source);
        let root = parse(&source)?;
        let section = match root.get_ref().get(name) {
            Some(value) => Some(read(&source, value.clone())?),
            None => None,
        };
        self.sections.push(name.to_owned());
        Ok(section)
    }

    /// Take the key `key` out of every `[[providers]]` entry that has it, read as a `T`; returns
    /// `(provider name, value)` in the file's order. An error names the key
    /// (`providers[1].key`) and its line.
    pub fn take_provider_keys<T: DeserializeOwned>(
        &mut self,
        key: &str,
    ) -> Result<Vec<(String, T)>, ConfigFileError> {
        let source = Arc::clone(&self.source);
        let root = parse(&source)?;
        let mut found = Vec::new();
        for (i, provider) in providers(root.get_ref()).iter().enumerate() {
            let DeValue::Table(table) = provider.get_ref() else {
                continue;
            };
            let Some(value) = table.get(key) else {
                continue;
            };
            let Some(name) = table.get("name").and_then(|n| n.get_ref().as_str()) else {
                return Err(ConfigFileError::locate(
                    Some(&source),
                    &format!("providers[{i}]"),
                    "a provider needs a `name`",
                ));
            };
            found.push((name.to_owned(), read(&source, value.clone())?));
        }
        self.provider_keys.push(key.to_owned());
        Ok(found)
    }

    /// An error about `key` with its line in this document (for the program's own checks of
    /// the sections it took).
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigFileError {
        ConfigFileError::locate(Some(&self.source), key, message)
    }

    /// Read what was not taken as the library's configuration, and validate it.
    pub fn into_stack_config(self) -> Result<StackConfig, ConfigFileError> {
        let mut root = parse(&self.source)?;
        let table = root.get_mut();
        for name in &self.sections {
            table.remove(name.as_str());
        }
        if let Some(providers) = table.get_mut("providers") {
            if let DeValue::Array(items) = providers.get_mut() {
                for item in items.iter_mut() {
                    if let DeValue::Table(provider) = item.get_mut() {
                        for key in &self.provider_keys {
                            provider.remove(key.as_str());
                        }
                    }
                }
            }
        }
        let mut config = StackConfig::deserialize(toml::de::Deserializer::from(root))
            .map_err(|e| keys::toml_error(&self.source, &e))?;
        config.source = Some(SourceText(self.source));
        config.validate()?;
        Ok(config)
    }
}

fn parse(source: &str) -> Result<Spanned<DeTable<'_>>, ConfigFileError> {
    DeTable::parse(source).map_err(|e| keys::toml_error(source, &e))
}

fn read<'i, T: DeserializeOwned>(
    source: &str,
    value: Spanned<DeValue<'i>>,
) -> Result<T, ConfigFileError> {
    T::deserialize(value.into_deserializer()).map_err(|e| keys::toml_error(source, &e))
}

fn providers<'a, 'i>(root: &'a DeTable<'i>) -> &'a [Spanned<DeValue<'i>>] {
    match root.get("providers").map(Spanned::get_ref) {
        Some(DeValue::Array(items)) => items,
        _ => &[],
    }
}
