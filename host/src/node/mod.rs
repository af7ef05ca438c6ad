//! Node-side primitives the CSI Node service is built from: loop devices, the kernel's
//! mount table, filesystem probing/formatting/growing, mounts and bind mounts, usage
//! statistics and path-argument checks.
//!
//! Every function here blocks (syscalls, ioctls, tool runs through [`crate::command`]), so
//! the Node service calls them on blocking threads. None of them remembers anything: the
//! truth is read back from the kernel (`/proc/self/mountinfo`, sysfs) on every call, so a
//! restarted host sees exactly what the previous one left.

pub mod filesystem;
pub mod loopdev;
pub mod mount;
pub mod mountinfo;
pub mod owned;
pub mod paths;
pub mod staged;
pub mod stats;
pub mod volume;

#[cfg(test)]
mod testing;

use std::fmt;
use std::str::FromStr;

/// A device number as the kernel shows it (`major:minor`): in mountinfo, in
/// `/sys/block/*/dev`, and in `st_dev`/`st_rdev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceNumber {
    pub major: u32,
    pub minor: u32,
}

impl DeviceNumber {
    /// Splits an encoded `dev_t` (as in `st_dev`, `st_rdev` or a loop device's
    /// `lo_device`).
    pub fn from_dev_t(dev: u64) -> DeviceNumber {
        // Both halves fit in 32 bits by construction of the encoding.
        DeviceNumber { major: nix::sys::stat::major(dev) as u32, minor: nix::sys::stat::minor(dev) as u32 }
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// `major:minor` text that is not a device number.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a major:minor device number")]
pub struct BadDeviceNumber(pub String);

impl FromStr for DeviceNumber {
    type Err = BadDeviceNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadDeviceNumber(s.to_owned());
        let (major, minor) = s.trim_end_matches('\n').split_once(':').ok_or_else(bad)?;
        Ok(DeviceNumber { major: major.parse().map_err(|_| bad())?, minor: minor.parse().map_err(|_| bad())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_parse_print_and_decode() {
        let d: DeviceNumber = "7:12\n".parse().unwrap();
        assert_eq!(d, DeviceNumber { major: 7, minor: 12 });
        assert_eq!(d.to_string(), "7:12");
        assert_eq!(
            DeviceNumber::from_dev_t(nix::sys::stat::makedev(259, 300)),
            DeviceNumber { major: 259, minor: 300 }
        );
        for bad in ["", "7", "7:", ":1", "a:b", "7:1:2", "-1:0"] {
            assert!(bad.parse::<DeviceNumber>().is_err(), "{bad:?} parsed");
        }
    }
}
