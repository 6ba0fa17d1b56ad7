//! All models of a deployment ([`Registry`]): read from the registry file,
//! checked, and looked up by `name` or `name@version`.

use super::error::RegistryError;
use super::spec::ModelSpec;
use super::validate::validate;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    model: Vec<ModelSpec>,
}

/// All models of a deployment.
#[derive(Debug, Clone)]
pub struct Registry {
    models: Vec<ModelSpec>,
}

impl Registry {
    /// Reads and validates the registry file; relative model paths are
    /// resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses registry text; `path` is used in messages, `base` to resolve
    /// model files.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| RegistryError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut models = file.model;
        for m in &mut models {
            if m.path.is_relative() {
                m.path = base.join(&m.path);
            }
        }
        let registry = Registry { models };
        validate(&registry.models, path)?;
        Ok(registry)
    }

    /// Every model version, in file order.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// The registry less the models whose names are not in `names` (a
    /// reload keeps to the names a process declared queues for), and the
    /// names left out.
    pub fn retain_names(mut self, names: &[&str]) -> (Self, Vec<String>) {
        let mut dropped = Vec::new();
        self.models.retain(|m| {
            let keep = names.contains(&m.name.as_str());
            if !keep && !dropped.contains(&m.name) {
                dropped.push(m.name.clone());
            }
            keep
        });
        (self, dropped)
    }

    /// Distinct model names, in file order; each has its own queues.
    pub fn names(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// Resolves `name` (its default version) or `name@version`.
    pub fn resolve(&self, address: &str) -> Option<&ModelSpec> {
        match address.split_once('@') {
            Some((name, version)) => self
                .models
                .iter()
                .find(|m| m.name == name && m.version == version),
            None => self
                .models
                .iter()
                .find(|m| m.name == address && m.default)
                .or_else(|| self.models.iter().rev().find(|m| m.name == address)),
        }
    }
}
