//! The instance settings from the host config, parsed on every call, strictly (see
//! `kit::settings`).

use std::path::PathBuf;

use kit::settings::{parse_bytes, set_once, unknown};
use kit::types::Error;

use crate::context::GRANULE;

const DIRECTORY: &str = "directory";
const MAX_VOLUME_SIZE: &str = "max-volume-size";
const RESERVE: &str = "reserve";

/// Where the volumes live when the config does not say.
const DEFAULT_DIRECTORY: &str = "/data";

#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    /// The granted directory, as the backend sees it (an absolute guest path).
    pub directory: PathBuf,
    /// Largest volume this instance creates or expands to, in bytes.
    pub max_volume_size: Option<u64>,
    /// Bytes of the filesystem never handed out to volumes.
    pub reserve: u64,
}

impl Settings {
    pub fn parse(params: &[(String, String)]) -> Result<Settings, Error> {
        let mut directory = None;
        let mut max_volume_size = None;
        let mut reserve = None;
        for (key, value) in params {
            match key.as_str() {
                DIRECTORY => set_once(&mut directory, key, parse_directory(value)?)?,
                MAX_VOLUME_SIZE => set_once(&mut max_volume_size, key, parse_max_volume_size(value)?)?,
                RESERVE => set_once(&mut reserve, key, parse_bytes(key, value)?)?,
                _ => return Err(unknown(key, &[DIRECTORY, MAX_VOLUME_SIZE, RESERVE])),
            }
        }
        Ok(Settings {
            directory: directory.unwrap_or_else(|| PathBuf::from(DEFAULT_DIRECTORY)),
            max_volume_size,
            reserve: reserve.unwrap_or(0),
        })
    }
}

fn parse_directory(value: &str) -> Result<PathBuf, Error> {
    if !value.starts_with('/') {
        return Err(Error::InvalidArgument(format!("setting {DIRECTORY:?} must be an absolute path, got {value:?}")));
    }
    Ok(PathBuf::from(value))
}

fn parse_max_volume_size(value: &str) -> Result<u64, Error> {
    let bytes = parse_bytes(MAX_VOLUME_SIZE, value)?;
    if bytes < GRANULE {
        return Err(Error::InvalidArgument(format!(
            "setting {MAX_VOLUME_SIZE:?} must be at least {GRANULE} bytes, got {bytes}"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn invalid_message(pairs: &[(&str, &str)]) -> String {
        match Settings::parse(&params(pairs)) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected invalid-argument, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let settings = Settings::parse(&[]).unwrap();
        assert_eq!(settings, Settings { directory: PathBuf::from("/data"), max_volume_size: None, reserve: 0 });
    }

    #[test]
    fn all_keys() {
        let settings = Settings::parse(&params(&[
            ("directory", "/volumes/fast"),
            ("max-volume-size", "1073741824"),
            ("reserve", " 4096 "),
        ]))
        .unwrap();
        assert_eq!(
            settings,
            Settings { directory: PathBuf::from("/volumes/fast"), max_volume_size: Some(1 << 30), reserve: 4096 }
        );
    }

    #[test]
    fn unknown_key_is_named() {
        assert!(invalid_message(&[("directroy", "/data")]).contains("\"directroy\""));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(invalid_message(&[("max-volume-size", "10Gi")]).contains("max-volume-size"));
        assert!(invalid_message(&[("max-volume-size", "0")]).contains("max-volume-size"));
        assert!(invalid_message(&[("reserve", "-1")]).contains("reserve"));
        assert!(invalid_message(&[("directory", "data")]).contains("absolute"));
        assert!(invalid_message(&[("reserve", "1"), ("reserve", "2")]).contains("more than once"));
    }
}
