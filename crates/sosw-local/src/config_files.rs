//! Config layers from files: one JSON file, or a directory laid out as Python sosw's `.config`
//! (`sosw_essential_config.json`, then each `sosw_<essential>_config.json` as that essential's section). Read by
//! the `sosw` binary and by the Lambda functions (a config packaged with the function).

use serde_json::{Map, Value};
use sosw_core::Essential;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("no config at `{}`", .0.display())]
    Missing(PathBuf),
    #[error(
        "the config directory `{}` has neither `sosw_essential_config.json` nor any `sosw_<essential>_config.json`",
        .0.display()
    )]
    EmptyDirectory(PathBuf),
    #[error("reading the config `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the config `{}` is not valid JSON: {reason}", path.display())]
    NotJson { path: PathBuf, reason: String },
}

/// The config layers at `path`, shared config first.
pub fn read_layers(path: &Path) -> Result<Vec<Value>, ConfigFileError> {
    if path.is_dir() {
        let mut layers = Vec::new();
        let shared = path.join("sosw_essential_config.json");
        if shared.exists() {
            layers.push(read_json(&shared)?);
        }
        for e in Essential::ALL {
            let f = path.join(format!("{}.json", e.config_key()));
            if f.exists() {
                let mut section = Map::new();
                section.insert(e.config_key().to_string(), read_json(&f)?);
                layers.push(Value::Object(section));
            }
        }
        if layers.is_empty() {
            return Err(ConfigFileError::EmptyDirectory(path.to_path_buf()));
        }
        Ok(layers)
    } else if path.exists() {
        Ok(vec![read_json(path)?])
    } else {
        Err(ConfigFileError::Missing(path.to_path_buf()))
    }
}

fn read_json(path: &Path) -> Result<Value, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ConfigFileError::NotJson {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_file_a_directory_and_the_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("sosw.json");
        std::fs::write(&file, r#"{"a": 1}"#).expect("write");
        assert_eq!(read_layers(&file).expect("file"), vec![json!({"a": 1})]);

        let conf = dir.path().join(".config");
        std::fs::create_dir(&conf).expect("mkdir");
        assert!(matches!(read_layers(&conf), Err(ConfigFileError::EmptyDirectory(_))));
        std::fs::write(conf.join("sosw_essential_config.json"), r#"{"s": 1}"#).expect("write");
        std::fs::write(conf.join("sosw_scavenger_config.json"), r#"{"x": 2}"#).expect("write");
        assert_eq!(
            read_layers(&conf).expect("dir"),
            vec![json!({"s": 1}), json!({"sosw_scavenger_config": {"x": 2}})]
        );

        std::fs::write(&file, "{").expect("write");
        let err = read_layers(&file).expect_err("bad json").to_string();
        assert!(err.contains("sosw.json` is not valid JSON"), "{err}");
        let err = read_layers(&dir.path().join("nope.json"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("no config at") && err.contains("nope.json"), "{err}");
    }
}
