//! Reading a config: YAML text, `--set a.b=c` overrides on its tree, and path values made
//! absolute (relative to the file for the file's, to the working directory for overrides).

use std::path::Path;

use super::{TrainConfig, config_error};
use crate::error::{Result, TriscopeError};

impl TrainConfig {
    /// Parse YAML `text` (`origin` names it in errors), apply `overrides` (`a.b=c`), resolve
    /// the data root and validate.
    pub fn from_yaml(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let mut value: serde_norway::Value = if text.trim().is_empty() {
            serde_norway::Value::Mapping(Default::default())
        } else {
            serde_norway::from_str(text).map_err(|e| config_error(origin, e))?
        };
        if value.is_null() {
            value = serde_norway::Value::Mapping(Default::default());
        }
        // Paths written in the file are relative to the file; paths given on the command line
        // (or typed in the app) are relative to the working directory. Both become absolute,
        // so the run folder's config.yaml means the same from anywhere.
        let config_dir = origin.parent().unwrap_or(Path::new(""));
        resolve_paths(&mut value, config_dir).map_err(|e| config_error(origin, e))?;
        for o in overrides {
            let mut single = serde_norway::Value::Mapping(Default::default());
            apply_override(&mut single, o).map_err(|e| config_error(origin, e))?;
            resolve_paths(&mut single, Path::new("")).map_err(|e| config_error(origin, e))?;
            apply_override(&mut value, &reassemble(o, &single))
                .map_err(|e| config_error(origin, e))?;
        }
        let config: TrainConfig = serde_norway::from_value(value).map_err(|e| {
            // A tree carries no positions: parse the text alone again for the key path and
            // line of the fault (when the fault is in the file rather than in an override).
            let located = serde_norway::from_str::<TrainConfig>(text)
                .err()
                .map(|e| e.to_string());
            config_error(origin, located.unwrap_or_else(|| e.to_string()))
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Read and check a config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| TriscopeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path, overrides)
    }

    /// The config as YAML (what a run folder stores as `config.yaml`).
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(self)
            .map_err(|e| TriscopeError::Compute(format!("writing the config as YAML: {e}")))
    }
}

/// Keys whose values are file paths.
const PATH_KEYS: [(&str, &str); 2] = [("data", "root"), ("architecture", "weights")];

/// Make the path values of a config tree absolute, relative ones taken from `base` (then from
/// the working directory when `base` is relative).
fn resolve_paths(tree: &mut serde_norway::Value, base: &Path) -> std::result::Result<(), String> {
    for (section, key) in PATH_KEYS {
        let Some(v) = tree
            .get_mut(section)
            .and_then(|s| s.as_mapping_mut())
            .and_then(|m| m.get_mut(key))
        else {
            continue;
        };
        let Some(text) = v.as_str() else {
            continue; // null, or a wrong type that deserialisation reports with its key
        };
        if text.is_empty() {
            return Err(format!("{section}.{key} is empty"));
        }
        let joined = base.join(text);
        let absolute = std::path::absolute(&joined)
            .map_err(|e| format!("{section}.{key} {}: {e}", joined.display()))?;
        *v = serde_norway::Value::String(absolute.to_string_lossy().into_owned());
    }
    Ok(())
}

/// `a.b=value` with the value taken from `tree` (after its paths were resolved).
fn reassemble(assignment: &str, tree: &serde_norway::Value) -> String {
    let Some((path, _)) = assignment.split_once('=') else {
        return assignment.to_string();
    };
    let mut node = Some(tree);
    for k in path.trim().split('.') {
        node = node.and_then(|n| n.get(k));
    }
    match node.and_then(|n| n.as_str()) {
        Some(s)
            if PATH_KEYS
                .iter()
                .any(|(a, b)| path.trim() == format!("{a}.{b}")) =>
        {
            // Quoted so that YAML reads it back as the same string.
            format!(
                "{}={}",
                path.trim(),
                serde_json::Value::String(s.to_string())
            )
        }
        _ => assignment.to_string(),
    }
}

/// Apply `a.b.c=value` to a YAML tree; `value` is parsed as YAML (`3`, `0.1`, `true`, `[1, 2]`).
pub fn apply_override(
    root: &mut serde_norway::Value,
    assignment: &str,
) -> std::result::Result<(), String> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--set {assignment}: expected KEY=VALUE, e.g. training.epochs=3"))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!("--set {assignment}: empty key in '{path}'"));
    }
    let value: serde_norway::Value = if raw.trim().is_empty() {
        serde_norway::Value::Null
    } else {
        serde_norway::from_str(raw).map_err(|e| format!("--set {assignment}: {e}"))?
    };
    let mut node = root;
    for (i, key) in keys.iter().enumerate() {
        if !node.is_mapping() {
            if node.is_null() {
                *node = serde_norway::Value::Mapping(Default::default());
            } else {
                return Err(format!(
                    "--set {assignment}: '{}' is not a section",
                    keys[..i].join(".")
                ));
            }
        }
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| format!("--set {assignment}: not a section"))?;
        let k = serde_norway::Value::String((*key).to_string());
        if i + 1 == keys.len() {
            map.insert(k, value);
            return Ok(());
        }
        if !map.contains_key(&k) {
            map.insert(k.clone(), serde_norway::Value::Null);
        }
        node = map
            .get_mut(&k)
            .ok_or_else(|| format!("--set {assignment}: cannot reach '{key}'"))?;
    }
    Ok(())
}
