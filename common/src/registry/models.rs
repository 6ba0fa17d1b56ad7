//! All models of a deployment ([`Registry`]): read from the registry file,
//! checked, and looked up by `name` or `name@version`.

use super::error::RegistryError;
use super::spec::ModelSpec;
use super::validate::validate;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
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
    /// The SHA-256 of the registry file's text.
    digest: String,
    /// Each version's model file SHA-256 (by `name@version`), for those
    /// this process could read when the registry was loaded.
    files: HashMap<String, String>,
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
        let mut registry = Self::parse(&text, path, base)?;
        registry.files = registry
            .models
            .iter()
            .filter_map(|m| {
                let digest = crate::lineage::file_sha256(&m.path).ok()?;
                Some((m.id(), digest))
            })
            .collect();
        Ok(registry)
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
        let registry = Registry {
            models,
            digest: crate::sha256::hex(text.as_bytes()),
            files: HashMap::new(),
        };
        validate(&registry.models, path)?;
        Ok(registry)
    }

    /// The SHA-256 of the registry file's text.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The SHA-256 of a version's model file: the one the registry
    /// declares (`sha256`), else the file's as read when the registry was
    /// loaded, if it could be read.
    pub fn file_sha256<'a>(&'a self, spec: &'a ModelSpec) -> Option<&'a str> {
        spec.sha256
            .as_deref()
            .or_else(|| self.files.get(&spec.id()).map(String::as_str))
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
