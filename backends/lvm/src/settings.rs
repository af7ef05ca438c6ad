//! The instance settings from the host config, parsed on every call, strictly (see
//! `kit::settings`).
//!
//! | key                          | meaning                                              | default     |
//! |------------------------------|------------------------------------------------------|-------------|
//! | `volume-group`               | the VG volumes are made in (required)                | —           |
//! | `thin-pool`                  | a thin pool LV in that VG, for `type: thin`          | none        |
//! | `lvm`                        | the lvm program (absolute path)                      | `/sbin/lvm` |
//! | `reserve`                    | bytes of the VG never given to thick volumes         | 0           |
//! | `default-fs-type`            | filesystem when a mount capability names none        | `ext4`      |
//! | `thin-overprovision-ratio`   | decimal ≥ 1: virtual sizes allowed per pool byte     | 1           |
//! | `snapshot-reserve-percent`   | COW snapshot size as a % of its origin, 1..=100      | 100         |
//! | `optional`                   | `true`: a node without the VG serves nothing (below) | `false`     |
//!
//! `optional` (`true` or `false`, nothing else) is for one config shared by every node of a
//! DaemonSet when only some nodes have the volume group. With `true`, on a node where lvm
//! says the VG is not found the instance loads with a warning and answers as a node with no
//! space and none of its volumes or snapshots (`optional.rs`). With `false`, the default, a
//! missing VG stops the load, so a misspelt name fails fast.
//!
//! `lvm-config` was a setting once; the operator's lvm `--config` is now part of the host's
//! grant (`host_args` of the lvm command grant), which the host adds to every lvm command
//! itself, so a backend can never choose it. A settings map that still has it is refused with
//! a message saying so.
//!
//! VG and LV names are checked against LVM's rules (`[A-Za-z0-9+_.-]`, not starting with
//! `-`, not `.` or `..`), so a setting can neither become an option on lvm's command line
//! nor leave `/dev/<vg>/` in a device path.

use kit::node_local::{self, DEFAULT_FS_TYPE};
use kit::settings::{parse_bytes, set_once, unknown};
use kit::types::Error;

use crate::space::Fraction;

const VOLUME_GROUP: &str = "volume-group";
const THIN_POOL: &str = "thin-pool";
const LVM: &str = "lvm";
/// A setting of earlier versions, moved into the host's command grant.
const MOVED_LVM_CONFIG: &str = "lvm-config";
const RESERVE: &str = "reserve";
const DEFAULT_FS: &str = "default-fs-type";
const THIN_RATIO: &str = "thin-overprovision-ratio";
const SNAPSHOT_RESERVE: &str = "snapshot-reserve-percent";
const OPTIONAL: &str = "optional";

const KNOWN: [&str; 8] = [VOLUME_GROUP, THIN_POOL, LVM, RESERVE, DEFAULT_FS, THIN_RATIO, SNAPSHOT_RESERVE, OPTIONAL];

const DEFAULT_LVM: &str = "/sbin/lvm";

/// LVM's longest VG or LV name.
const MAX_NAME_LEN: usize = 127;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub volume_group: String,
    pub thin_pool: Option<String>,
    /// The lvm program, an absolute path.
    pub lvm: String,
    /// Bytes of the VG never given to thick volumes or COW snapshots.
    pub reserve: u64,
    pub default_fs_type: String,
    /// At least 1.
    pub thin_overprovision_ratio: Fraction,
    /// 1..=100.
    pub snapshot_reserve_percent: u64,
    /// Whether a node without the volume group is served as one with nothing on it, rather
    /// than refused.
    pub optional: bool,
}

impl Settings {
    pub fn parse(params: &[(String, String)]) -> Result<Settings, Error> {
        let mut volume_group = None;
        let mut thin_pool = None;
        let mut lvm = None;
        let mut reserve = None;
        let mut default_fs_type = None;
        let mut ratio = None;
        let mut snapshot_reserve = None;
        let mut optional = None;
        for (key, value) in params {
            match key.as_str() {
                VOLUME_GROUP => set_once(&mut volume_group, key, lvm_name(key, value)?)?,
                THIN_POOL => set_once(&mut thin_pool, key, lvm_name(key, value)?)?,
                LVM => set_once(&mut lvm, key, program(value)?)?,
                MOVED_LVM_CONFIG => return Err(moved_lvm_config()),
                RESERVE => set_once(&mut reserve, key, parse_bytes(key, value)?)?,
                DEFAULT_FS => set_once(&mut default_fs_type, key, fs_type(value)?)?,
                THIN_RATIO => set_once(&mut ratio, key, overprovision_ratio(value)?)?,
                SNAPSHOT_RESERVE => {
                    let percent = percent(value).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "setting {key:?} must be a whole percentage from 1 to 100, got {value:?}"
                        ))
                    })?;
                    set_once(&mut snapshot_reserve, key, percent)?;
                }
                OPTIONAL => set_once(&mut optional, key, boolean(key, value)?)?,
                _ => return Err(unknown(key, &KNOWN)),
            }
        }
        Ok(Settings {
            volume_group: volume_group
                .ok_or_else(|| Error::InvalidArgument(format!("setting {VOLUME_GROUP:?} is required")))?,
            thin_pool,
            lvm: lvm.unwrap_or_else(|| DEFAULT_LVM.to_owned()),
            reserve: reserve.unwrap_or(0),
            default_fs_type: default_fs_type.unwrap_or_else(|| DEFAULT_FS_TYPE.to_owned()),
            thin_overprovision_ratio: ratio.unwrap_or(Fraction::ONE),
            snapshot_reserve_percent: snapshot_reserve.unwrap_or(100),
            optional: optional.unwrap_or(false),
        })
    }
}

/// A whole percentage from 1 to 100 (also the `snapshot-reserve-percent` parameter).
pub fn percent(value: &str) -> Option<u64> {
    value.trim().parse().ok().filter(|percent| (1..=100).contains(percent))
}

/// `true` or `false` (surrounding blanks allowed), nothing else.
fn boolean(key: &str, value: &str) -> Result<bool, Error> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidArgument(format!("setting {key:?} must be true or false, got {value:?}"))),
    }
}

fn lvm_name(key: &str, value: &str) -> Result<String, Error> {
    let charset = value.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    let valid = charset
        && !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && !value.starts_with('-')
        && value != "."
        && value != "..";
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "setting {key:?} must be an LVM name (1-{MAX_NAME_LEN} of A-Z a-z 0-9 + _ . -, not starting with '-', not '.' or '..'), got {value:?}"
        )));
    }
    Ok(value.to_owned())
}

fn program(value: &str) -> Result<String, Error> {
    if !value.starts_with('/') {
        return Err(Error::InvalidArgument(format!("setting {LVM:?} must be an absolute path, got {value:?}")));
    }
    Ok(value.to_owned())
}

fn moved_lvm_config() -> Error {
    Error::InvalidArgument(format!(
        "setting {MOVED_LVM_CONFIG:?} is no longer a backend setting: the host adds lvm's --config itself, so \
         move the value to the lvm command grant as host_args = [\"--config\", \"<value>\"] (README, \"lvm\")"
    ))
}

fn fs_type(value: &str) -> Result<String, Error> {
    node_local::check_fs_type(value).map_err(|_| {
        Error::InvalidArgument(format!(
            "setting {DEFAULT_FS:?} must be one of {}, got {value:?}",
            node_local::FS_TYPES.join(", ")
        ))
    })?;
    Ok(value.to_owned())
}

fn overprovision_ratio(value: &str) -> Result<Fraction, Error> {
    Fraction::parse(value.trim()).filter(|ratio| ratio.at_least_one()).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "setting {THIN_RATIO:?} must be a decimal number of at least 1 (such as 1.5), got {value:?}"
        ))
    })
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
        assert_eq!(
            Settings::parse(&params(&[("volume-group", "vg0")])).unwrap(),
            Settings {
                volume_group: "vg0".into(),
                thin_pool: None,
                lvm: "/sbin/lvm".into(),
                reserve: 0,
                default_fs_type: "ext4".into(),
                thin_overprovision_ratio: Fraction::ONE,
                snapshot_reserve_percent: 100,
                optional: false,
            }
        );
    }

    #[test]
    fn all_keys() {
        let settings = Settings::parse(&params(&[
            ("volume-group", "vg_data.1+x-y"),
            ("thin-pool", "pool0"),
            ("lvm", "/usr/sbin/lvm"),
            ("reserve", "1048576"),
            ("default-fs-type", "xfs"),
            ("thin-overprovision-ratio", "2.5"),
            ("snapshot-reserve-percent", "20"),
            ("optional", "true"),
        ]))
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                volume_group: "vg_data.1+x-y".into(),
                thin_pool: Some("pool0".into()),
                lvm: "/usr/sbin/lvm".into(),
                reserve: 1 << 20,
                default_fs_type: "xfs".into(),
                thin_overprovision_ratio: Fraction::parse("2.5").unwrap(),
                snapshot_reserve_percent: 20,
                optional: true,
            }
        );
    }

    #[test]
    fn the_volume_group_is_required() {
        assert!(invalid_message(&[]).contains("\"volume-group\" is required"));
    }

    #[test]
    fn unknown_and_repeated_keys_are_named() {
        assert!(invalid_message(&[("volume-group", "vg0"), ("volume_group", "vg0")]).contains("\"volume_group\""));
        assert!(invalid_message(&[("volume-group", "vg0"), ("volume-group", "vg1")]).contains("more than once"));
    }

    #[test]
    fn names_follow_lvm_rules() {
        for bad in ["", "-vg", ".", "..", "vg/0", "vg 0", "vg0\n", "vé", &"v".repeat(128)] {
            assert!(invalid_message(&[("volume-group", bad)]).contains("volume-group"), "{bad:?}");
            assert!(invalid_message(&[("volume-group", "vg0"), ("thin-pool", bad)]).contains("thin-pool"), "{bad:?}");
        }
        Settings::parse(&params(&[("volume-group", &"v".repeat(127))])).unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let with_vg = |key, value| invalid_message(&[("volume-group", "vg0"), (key, value)]);
        assert!(with_vg("lvm", "lvm").contains("absolute"));
        let moved = with_vg("lvm-config", "global{activation=0}");
        assert!(
            moved.contains("\"lvm-config\" is no longer a backend setting") && moved.contains("host_args"),
            "{moved}"
        );
        assert!(with_vg("reserve", "1G").contains("reserve"));
        assert!(with_vg("default-fs-type", "zfs").contains("default-fs-type"));
        for ratio in ["0.5", "0", "-2", "two", "1e1", ""] {
            assert!(with_vg("thin-overprovision-ratio", ratio).contains("thin-overprovision-ratio"), "{ratio:?}");
        }
        for percent in ["0", "101", "50.5", "-1", "x"] {
            assert!(with_vg("snapshot-reserve-percent", percent).contains("snapshot-reserve-percent"), "{percent:?}");
        }
    }

    #[test]
    fn optional_is_true_or_false_only() {
        let optional = |value| Settings::parse(&params(&[("volume-group", "vg0"), ("optional", value)]));
        assert!(optional("true").unwrap().optional);
        assert!(!optional("false").unwrap().optional);
        assert!(optional(" true ").unwrap().optional);
        for bad in ["True", "yes", "1", "on", "", "truee"] {
            assert!(
                matches!(optional(bad), Err(Error::InvalidArgument(m)) if m.contains("\"optional\" must be true or false")),
                "{bad:?}"
            );
        }
        assert!(
            invalid_message(&[("volume-group", "vg0"), ("optional", "true"), ("optional", "false")])
                .contains("more than once")
        );
    }
}
