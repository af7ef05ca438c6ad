//! What a failed lvm command means, as a CSI error.
//!
//! lvm reports every failure with a small set of exit codes and a human message on stderr,
//! so the message decides: [`TABLE`] maps message fragments (matched case-insensitively, in
//! order, the first row whose fragments all occur wins) to a [`Condition`], and each
//! condition to a WIT error variant. The message reaches the CO as lvm wrote it, less the
//! noise every run under this host prints (the activation-disabled warning, file descriptors
//! "leaked" by the caller). A command the host would not run (a denied grant) is the host's
//! own error and passes through unchanged.

use kit::types::{Error, ExecOutput};

/// What went wrong, as far as the backend needs to tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Not enough free extents in the VG or thin pool: `resource-exhausted`.
    NoSpace,
    /// The volume group does not exist: `failed-precondition` (the instance's settings or
    /// the node are wrong, not the request).
    NoVolumeGroup,
    /// The LV does not exist: `not-found`.
    NotFound,
    /// An LV of that name exists already: `already-exists` (create re-reads it).
    AlreadyExists,
    /// `lvextend` to a size that is not larger: the expansion is already done.
    NotLarger,
    /// The LV is open or in use: `failed-precondition`.
    InUse,
    /// The kernel lacks device-mapper: `failed-precondition`.
    NoDeviceMapper,
    /// Locking failed or timed out: `unavailable` (retry later).
    Busy,
    /// Anything else: `internal`.
    Other,
}

/// Message fragments (lowercase) and the condition they mean. Order matters: a volume group
/// that is not found must not read as a missing LV.
const TABLE: &[(&[&str], Condition)] = &[
    (&["not larger than existing size"], Condition::NotLarger),
    (&["already exists"], Condition::AlreadyExists),
    (&["insufficient free"], Condition::NoSpace),
    (&["device-mapper"], Condition::NoDeviceMapper),
    (&["volume group \"", "\" not found"], Condition::NoVolumeGroup),
    (&["failed to find"], Condition::NotFound),
    (&["not found"], Condition::NotFound),
    (&["in use"], Condition::InUse),
    (&["open logical volume"], Condition::InUse),
    (&["lock failed"], Condition::Busy),
    (&["failed to lock"], Condition::Busy),
    (&["get lock"], Condition::Busy),
    (&["locking"], Condition::Busy),
    (&["timed out"], Condition::Busy),
    (&["timeout"], Condition::Busy),
];

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The host did not run it (a denied grant, no such program, the deadline).
    Host(Error),
    /// lvm ran and failed.
    Lvm { condition: Condition, message: String },
}

impl Failure {
    /// The failure of a finished run of `lvm <subcommand>`, or `None` when it succeeded.
    pub fn of(subcommand: &str, output: &ExecOutput) -> Option<Failure> {
        if output.status == 0 {
            return None;
        }
        let stderr = clean(&String::from_utf8_lossy(&output.stderr));
        let message = match stderr.is_empty() {
            true => format!("lvm {subcommand} failed with exit status {}", output.status),
            false => format!("lvm {subcommand}: {stderr} (exit status {})", output.status),
        };
        Some(Failure::Lvm { condition: classify(&stderr), message })
    }

    /// Whether lvm failed with `condition`.
    pub fn is(&self, condition: Condition) -> bool {
        matches!(self, Failure::Lvm { condition: c, .. } if *c == condition)
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        let (condition, message) = match failure {
            Failure::Host(error) => return error,
            Failure::Lvm { condition, message } => (condition, message),
        };
        match condition {
            Condition::NoSpace => Error::ResourceExhausted(message),
            Condition::NotFound => Error::NotFound(message),
            Condition::AlreadyExists => Error::AlreadyExists(message),
            Condition::NotLarger => Error::OutOfRange(message),
            Condition::NoVolumeGroup | Condition::InUse | Condition::NoDeviceMapper => {
                Error::FailedPrecondition(message)
            }
            Condition::Busy => Error::Unavailable(message),
            Condition::Other => Error::Internal(message),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Host(error)
    }
}

/// The condition a (cleaned) lvm message means.
pub fn classify(message: &str) -> Condition {
    let message = message.to_lowercase();
    TABLE
        .iter()
        .find(|(fragments, _)| fragments.iter().all(|fragment| message.contains(fragment)))
        .map_or(Condition::Other, |(_, condition)| *condition)
}

/// stderr without blank lines and without the noise of every run, on one line.
fn clean(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| !line.starts_with("WARNING: Activation disabled"))
        .filter(|line| !(line.starts_with("File descriptor") && line.contains("leaked")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(status: i32, stderr: &str) -> ExecOutput {
        ExecOutput { status, stdout: Vec::new(), stderr: stderr.as_bytes().to_vec() }
    }

    /// Messages lvm 2.03.16 printed on this machine, and a few it prints elsewhere.
    #[test]
    fn messages_map_to_conditions() {
        let cases = [
            ("  Volume group \"vgcap\" has insufficient free space (230 extents): 2560 required.", Condition::NoSpace),
            ("  Insufficient free space: 10 extents needed, but only 2 available", Condition::NoSpace),
            ("  Volume group \"nosuchvg\" not found\n  Cannot process volume group nosuchvg", Condition::NoVolumeGroup),
            ("  Failed to find logical volume \"vgcap/csi-a\"", Condition::NotFound),
            ("  Logical Volume \"csi-a\" already exists in volume group \"vgcap\"", Condition::AlreadyExists),
            ("  New size given (25 extents) not larger than existing size (50 extents)", Condition::NotLarger),
            ("  Can't create thin-pool without using device-mapper kernel driver.", Condition::NoDeviceMapper),
            ("  Can't create snapshot without using device-mapper kernel driver.", Condition::NoDeviceMapper),
            ("  Logical volume vgcap/csi-a in use.", Condition::InUse),
            ("  Logical volume vgcap/csi-a contains a filesystem in use.", Condition::InUse),
            ("  Can't remove open logical volume \"csi-a\".", Condition::InUse),
            ("  Global lock failed: check that global lockspace is started", Condition::Busy),
            ("  Failed to lock logical volume vgcap/csi-a.", Condition::Busy),
            ("  Timed out waiting for lock", Condition::Busy),
            ("  Invalid argument for --addtag: hostile,tag\n  Error during parsing of command line.", Condition::Other),
            ("  Device /dev/sdz is not a block device.", Condition::Other),
            ("", Condition::Other),
        ];
        for (stderr, condition) in cases {
            assert_eq!(classify(&clean(stderr)), condition, "{stderr:?}");
        }
    }

    #[test]
    fn conditions_map_to_wit_errors() {
        let error = |condition| Error::from(Failure::Lvm { condition, message: "m".into() });
        assert_eq!(error(Condition::NoSpace), Error::ResourceExhausted("m".into()));
        assert_eq!(error(Condition::NoVolumeGroup), Error::FailedPrecondition("m".into()));
        assert_eq!(error(Condition::NotFound), Error::NotFound("m".into()));
        assert_eq!(error(Condition::AlreadyExists), Error::AlreadyExists("m".into()));
        assert_eq!(error(Condition::NotLarger), Error::OutOfRange("m".into()));
        assert_eq!(error(Condition::InUse), Error::FailedPrecondition("m".into()));
        assert_eq!(error(Condition::NoDeviceMapper), Error::FailedPrecondition("m".into()));
        assert_eq!(error(Condition::Busy), Error::Unavailable("m".into()));
        assert_eq!(error(Condition::Other), Error::Internal("m".into()));
        let denied = Error::FailedPrecondition("exec denied".into());
        assert_eq!(Error::from(Failure::Host(denied.clone())), denied);
    }

    #[test]
    fn messages_keep_lvm_words_without_the_noise() {
        let stderr = "File descriptor 10 (/dev/null) leaked on lvm invocation. Parent PID 1: x\n  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n  Volume group \"vgcap\" has insufficient free space (230 extents): 2560 required.\n";
        let failure = Failure::of("lvcreate", &output(5, stderr)).unwrap();
        assert_eq!(
            failure,
            Failure::Lvm {
                condition: Condition::NoSpace,
                message: "lvm lvcreate: Volume group \"vgcap\" has insufficient free space (230 extents): 2560 required. (exit status 5)".into()
            }
        );
        assert!(failure.is(Condition::NoSpace) && !failure.is(Condition::Other));
        assert_eq!(
            Failure::of("lvs", &output(-1, "")),
            Some(Failure::Lvm { condition: Condition::Other, message: "lvm lvs failed with exit status -1".into() })
        );
    }

    #[test]
    fn success_is_no_failure_whatever_stderr_says() {
        let warning = "  WARNING: Activation disabled. No device-mapper interaction will be attempted.";
        assert_eq!(Failure::of("lvcreate", &output(0, warning)), None);
    }
}
