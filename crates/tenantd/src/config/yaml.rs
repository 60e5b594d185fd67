//! A figment provider for YAML files, parsed with `serde_norway` (figment's
//! own YAML provider depends on the deprecated `serde_yaml`).

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider, Source};

/// A parsed YAML configuration file.
pub(super) struct YamlFile {
    path: PathBuf,
    dict: Dict,
}

impl YamlFile {
    /// Reads and parses `path`; the error names the file.
    pub(super) fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        let dict = if text.trim().is_empty() {
            Dict::new()
        } else {
            serde_norway::from_str::<Dict>(&text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?
        };
        Ok(Self {
            path: path.to_owned(),
            dict,
        })
    }
}

impl Provider for YamlFile {
    fn metadata(&self) -> Metadata {
        Metadata::named("YAML file").source(Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}
