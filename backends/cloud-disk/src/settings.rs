//! The instance settings from the host config, parsed on every call.
//!
//! Parsing is strict (unknown or repeated keys are errors) so a typo in the config stops
//! the host at load time (`validate-settings`) instead of being silently ignored.
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `region` | AWS region, e.g. `eu-west-1` (required) | |
//! | `endpoint` | EC2 endpoint, `http(s)://host[:port][/path]` | `https://ec2.<region>.amazonaws.com` |
//! | `default-volume-type` | type when a StorageClass names none | `gp3` |
//! | `tags` | extra tags on everything created, `k=v,k2=v2` | none |
//! | `wait-budget-ms` | how long one call waits for a state change before answering `unavailable` | `45000` |
//! | `device-names` | device names attach may use, comma-separated | `/dev/xvdba` … `/dev/xvdcz` |

use std::time::Duration;

use kit::settings::{set_once, unknown};
use kit::types::Error;

use crate::parameters::VolumeType;
use crate::support::RESERVED_TAG_KEYS;
use crate::transport::Scheme;

const REGION: &str = "region";
const ENDPOINT: &str = "endpoint";
const DEFAULT_VOLUME_TYPE: &str = "default-volume-type";
const TAGS: &str = "tags";
const WAIT_BUDGET_MS: &str = "wait-budget-ms";
const DEVICE_NAMES: &str = "device-names";
const KNOWN: [&str; 6] = [REGION, ENDPOINT, DEFAULT_VOLUME_TYPE, TAGS, WAIT_BUDGET_MS, DEVICE_NAMES];

const DEFAULT_WAIT_BUDGET_MS: u64 = 45_000;
const WAIT_BUDGET_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;
/// EC2's limits on a tag.
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// Where EC2 is reached. The host's HTTP grant must allow this origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`, also the signed `Host` header.
    pub authority: String,
    /// The request path, `/` unless the endpoint names one.
    pub path: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    pub region: String,
    pub endpoint: Endpoint,
    pub default_volume_type: VolumeType,
    /// Extra tags put on every volume and snapshot created.
    pub tags: Vec<(String, String)>,
    pub wait_budget: Duration,
    /// The device names attach picks from, in preference order.
    pub device_names: Vec<String>,
}

impl Settings {
    pub fn parse(params: &[(String, String)]) -> Result<Settings, Error> {
        let mut region = None;
        let mut endpoint = None;
        let mut default_volume_type = None;
        let mut tags = None;
        let mut wait_budget = None;
        let mut device_names = None;
        for (key, value) in params {
            match key.as_str() {
                REGION => set_once(&mut region, key, parse_region(value)?)?,
                ENDPOINT => set_once(&mut endpoint, key, parse_endpoint(value)?)?,
                DEFAULT_VOLUME_TYPE => set_once(&mut default_volume_type, key, parse_volume_type(value)?)?,
                TAGS => set_once(&mut tags, key, parse_tags(value)?)?,
                WAIT_BUDGET_MS => set_once(&mut wait_budget, key, parse_wait_budget(value)?)?,
                DEVICE_NAMES => set_once(&mut device_names, key, parse_device_names(value)?)?,
                _ => return Err(unknown(key, &KNOWN)),
            }
        }
        let region: String = region.ok_or_else(|| invalid(format!("setting {REGION:?} is required")))?;
        let endpoint = match endpoint {
            Some(endpoint) => endpoint,
            None => parse_endpoint(&format!("https://ec2.{region}.amazonaws.com"))?,
        };
        Ok(Settings {
            region,
            endpoint,
            default_volume_type: default_volume_type.unwrap_or(VolumeType::Gp3),
            tags: tags.unwrap_or_default(),
            wait_budget: wait_budget.unwrap_or(Duration::from_millis(DEFAULT_WAIT_BUDGET_MS)),
            device_names: device_names.unwrap_or_else(default_device_names),
        })
    }

    /// `region = "us-east-1"`, a local endpoint, everything else defaulted.
    #[cfg(test)]
    pub fn for_tests() -> Settings {
        let params = [("region", "us-east-1"), ("endpoint", "http://127.0.0.1:4566")];
        Settings::parse(&params.map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

fn parse_region(value: &str) -> Result<String, Error> {
    let valid = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !valid {
        return Err(invalid(format!("setting {REGION:?} is not an AWS region name: {value:?}")));
    }
    Ok(value.to_owned())
}

fn parse_endpoint(value: &str) -> Result<Endpoint, Error> {
    let bad = |why: &str| invalid(format!("setting {ENDPOINT:?} {why}: {value:?}"));
    let (scheme, rest) = if let Some(rest) = value.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = value.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(bad("must start with https:// or http://"));
    };
    if rest.contains(['@', '?', '#']) || rest.contains(char::is_whitespace) || rest.contains(char::is_control) {
        return Err(bad("must be scheme://host[:port][/path], without user, query or fragment"));
    }
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if !valid_authority(authority) {
        return Err(bad("has no valid host and port"));
    }
    Ok(Endpoint { scheme, authority: authority.to_owned(), path: path.to_owned() })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with a non-empty host and a valid port.
fn valid_authority(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    !host.is_empty() && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

fn parse_volume_type(value: &str) -> Result<VolumeType, Error> {
    VolumeType::parse(value).ok_or_else(|| {
        invalid(format!(
            "setting {DEFAULT_VOLUME_TYPE:?} is not an EBS volume type ({}): {value:?}",
            VolumeType::NAMES.join(", ")
        ))
    })
}

fn parse_tags(value: &str) -> Result<Vec<(String, String)>, Error> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((key, tag_value)) = pair.split_once('=') else {
            return Err(invalid(format!("setting {TAGS:?}: {pair:?} is not key=value")));
        };
        let (key, tag_value) = (key.trim(), tag_value.trim());
        let problem = if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
            Some(format!("a tag key has 1 to {MAX_TAG_KEY} characters"))
        } else if tag_value.chars().count() > MAX_TAG_VALUE {
            Some(format!("a tag value has at most {MAX_TAG_VALUE} characters"))
        } else if key.to_ascii_lowercase().starts_with("aws:") {
            Some("the aws: prefix is AWS's own".to_owned())
        } else if RESERVED_TAG_KEYS.contains(&key) {
            Some("the backend sets this key itself".to_owned())
        } else if tags.iter().any(|(seen, _)| seen == key) {
            Some("the key is given twice".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(invalid(format!("setting {TAGS:?}: tag {key:?}: {problem}")));
        }
        tags.push((key.to_owned(), tag_value.to_owned()));
    }
    Ok(tags)
}

fn parse_wait_budget(value: &str) -> Result<Duration, Error> {
    match value.trim().parse::<u64>() {
        Ok(ms) if WAIT_BUDGET_RANGE_MS.contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(format!(
            "setting {WAIT_BUDGET_MS:?} must be a whole number of milliseconds from {} to {}, got {value:?}",
            WAIT_BUDGET_RANGE_MS.start(),
            WAIT_BUDGET_RANGE_MS.end()
        ))),
    }
}

fn parse_device_names(value: &str) -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let valid = name
            .strip_prefix("/dev/")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if !valid || names.iter().any(|seen| seen == name) {
            return Err(invalid(format!(
                "setting {DEVICE_NAMES:?}: {name:?} is not a new device name like /dev/xvdba"
            )));
        }
        names.push(name.to_owned());
    }
    if names.is_empty() {
        return Err(invalid(format!("setting {DEVICE_NAMES:?} names no device")));
    }
    Ok(names)
}

/// `/dev/xvdba` … `/dev/xvdbz`, `/dev/xvdca` … `/dev/xvdcz`: clear of the root device and
/// of the names instances are launched with (as the upstream EBS CSI driver does).
fn default_device_names() -> Vec<String> {
    ['b', 'c'].iter().flat_map(|second| ('a'..='z').map(move |third| format!("/dev/xvd{second}{third}"))).collect()
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
            other => panic!("expected invalid-argument for {pairs:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let settings = Settings::parse(&params(&[("region", "eu-west-1")])).unwrap();
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(
            settings.endpoint,
            Endpoint { scheme: Scheme::Https, authority: "ec2.eu-west-1.amazonaws.com".into(), path: "/".into() }
        );
        assert_eq!(settings.default_volume_type, VolumeType::Gp3);
        assert!(settings.tags.is_empty());
        assert_eq!(settings.wait_budget, Duration::from_secs(45));
        assert_eq!(settings.device_names.len(), 52);
        assert_eq!(settings.device_names[0], "/dev/xvdba");
        assert_eq!(settings.device_names[25], "/dev/xvdbz");
        assert_eq!(settings.device_names[51], "/dev/xvdcz");
    }

    #[test]
    fn all_keys() {
        let settings = Settings::parse(&params(&[
            ("region", "us-gov-west-1"),
            ("endpoint", "http://127.0.0.1:8080/ec2"),
            ("default-volume-type", "io2"),
            ("tags", "team=storage, cost-center = 42 ,note=a=b"),
            ("wait-budget-ms", "20000"),
            ("device-names", "/dev/sdf, /dev/sdg"),
        ]))
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                region: "us-gov-west-1".into(),
                endpoint: Endpoint { scheme: Scheme::Http, authority: "127.0.0.1:8080".into(), path: "/ec2".into() },
                default_volume_type: VolumeType::Io2,
                tags: vec![
                    ("team".into(), "storage".into()),
                    ("cost-center".into(), "42".into()),
                    ("note".into(), "a=b".into()),
                ],
                wait_budget: Duration::from_secs(20),
                device_names: vec!["/dev/sdf".into(), "/dev/sdg".into()],
            }
        );
        let ipv6 = Settings::parse(&params(&[("region", "us-east-1"), ("endpoint", "http://[::1]:4566")])).unwrap();
        assert_eq!(ipv6.endpoint.authority, "[::1]:4566");
        let bare_ipv6 = Settings::parse(&params(&[("region", "us-east-1"), ("endpoint", "http://[::1]")])).unwrap();
        assert_eq!(bare_ipv6.endpoint.authority, "[::1]");
        let empty_tags = Settings::parse(&params(&[("region", "us-east-1"), ("tags", "")])).unwrap();
        assert!(empty_tags.tags.is_empty());
    }

    #[test]
    fn unknown_missing_and_repeated_keys() {
        assert!(invalid_message(&[("region", "us-east-1"), ("regoin", "x")]).contains("\"regoin\""));
        assert!(invalid_message(&[]).contains("\"region\" is required"));
        assert!(invalid_message(&[("region", "us-east-1"), ("region", "us-east-2")]).contains("more than once"));
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("region", "US-EAST-1", "region"),
            ("region", "", "region"),
            ("endpoint", "ftp://x", "https://"),
            ("endpoint", "https://user:pw@ec2.example.com", "without user"),
            ("endpoint", "https://ec2.example.com/?a=b", "without user"),
            ("endpoint", "https://", "host"),
            ("endpoint", "http://127.0.0.1:99999", "host"),
            ("endpoint", "http://[::1", "host"),
            ("endpoint", "http://[::1]x", "host"),
            ("default-volume-type", "ssd", "default-volume-type"),
            ("tags", "novalue", "key=value"),
            ("tags", "=v", "tag key"),
            ("tags", "aws:x=1", "aws:"),
            ("tags", "CSIVolumeName=x", "itself"),
            ("tags", "a=1,a=2", "twice"),
            ("wait-budget-ms", "10", "wait-budget-ms"),
            ("wait-budget-ms", "ten", "wait-budget-ms"),
            ("device-names", "/dev/sdf,/dev/sdf", "device-names"),
            ("device-names", "sdf", "device-names"),
            ("device-names", "/dev/../sda", "device-names"),
            ("device-names", ",", "names no device"),
        ];
        for (key, value, expected) in cases {
            let message = invalid_message(&[("region", "us-east-1"), (key, value)]);
            assert!(message.contains(expected), "{key}={value:?}: {message}");
        }
        let long_key = "k".repeat(129);
        assert!(invalid_message(&[("region", "us-east-1"), ("tags", &format!("{long_key}=v"))]).contains("tag key"));
        let long_value = "v".repeat(257);
        assert!(
            invalid_message(&[("region", "us-east-1"), ("tags", &format!("k={long_value}"))]).contains("tag value")
        );
    }
}
