//! StorageClass and mutable parameters: which exist, what values they take and which
//! combinations EBS accepts. Ranges AWS changes over time (IOPS and throughput limits) are
//! left to AWS, whose `InvalidParameterValue` becomes `invalid-argument` all the same.
//!
//! | key | where | values |
//! | --- | --- | --- |
//! | `type` | StorageClass, mutable | gp2 gp3 io1 io2 sc1 st1 standard (default: the `default-volume-type` setting) |
//! | `iops` | StorageClass, mutable | provisioned IOPS: gp3, io1, io2 (required for io1, io2) |
//! | `throughput` | StorageClass, mutable | MiB/s: gp3 only |
//! | `encrypted` | StorageClass | `true` or `false` (default: the account's EBS default) |
//! | `kmsKeyId` | StorageClass | KMS key for an encrypted volume; needs `encrypted=true` |

use kit::types::Error;

const TYPE: &str = "type";
const IOPS: &str = "iops";
const THROUGHPUT: &str = "throughput";
const ENCRYPTED: &str = "encrypted";
const KMS_KEY_ID: &str = "kmsKeyId";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeType {
    Gp2,
    Gp3,
    Io1,
    Io2,
    Sc1,
    St1,
    Standard,
}

impl VolumeType {
    pub const NAMES: [&'static str; 7] = ["gp2", "gp3", "io1", "io2", "sc1", "st1", "standard"];
    const ALL: [VolumeType; 7] = [
        VolumeType::Gp2,
        VolumeType::Gp3,
        VolumeType::Io1,
        VolumeType::Io2,
        VolumeType::Sc1,
        VolumeType::St1,
        VolumeType::Standard,
    ];

    pub fn parse(name: &str) -> Option<VolumeType> {
        VolumeType::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            VolumeType::Gp2 => "gp2",
            VolumeType::Gp3 => "gp3",
            VolumeType::Io1 => "io1",
            VolumeType::Io2 => "io2",
            VolumeType::Sc1 => "sc1",
            VolumeType::St1 => "st1",
            VolumeType::Standard => "standard",
        }
    }

    /// The smallest and largest volume of this type, in GiB.
    pub fn size_limits_gib(self) -> (u64, u64) {
        match self {
            VolumeType::Gp2 | VolumeType::Gp3 => (1, 16_384),
            VolumeType::Io1 => (4, 16_384),
            VolumeType::Io2 => (4, 65_536),
            VolumeType::Sc1 | VolumeType::St1 => (125, 16_384),
            VolumeType::Standard => (1, 1_024),
        }
    }

    fn takes_iops(self) -> bool {
        matches!(self, VolumeType::Gp3 | VolumeType::Io1 | VolumeType::Io2)
    }

    fn needs_iops(self) -> bool {
        matches!(self, VolumeType::Io1 | VolumeType::Io2)
    }

    fn takes_throughput(self) -> bool {
        self == VolumeType::Gp3
    }
}

/// What can change on an existing volume: its type, IOPS and throughput.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    pub volume_type: Option<VolumeType>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

impl Tuning {
    /// Reads `type`, `iops` and `throughput`; any other key is an error (`what` names the
    /// kind of parameter in the message).
    pub fn parse(what: &str, params: &[(String, String)]) -> Result<Tuning, Error> {
        let mut tuning = Tuning::default();
        for (key, value) in params {
            if !tuning.take(key, value)? {
                return Err(unknown(what, key, &[TYPE, IOPS, THROUGHPUT]));
            }
        }
        Ok(tuning)
    }

    /// Takes one key if it is a tuning key; false for any other key.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, Error> {
        match key {
            TYPE => {
                self.volume_type = Some(VolumeType::parse(value).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "parameter {TYPE:?}: {value:?} is not an EBS volume type ({})",
                        VolumeType::NAMES.join(", ")
                    ))
                })?);
            }
            IOPS => self.iops = Some(positive(IOPS, value)?),
            THROUGHPUT => self.throughput = Some(positive(THROUGHPUT, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether IOPS and throughput may be set on `volume_type` (the tuning's own type when
    /// it sets one).
    pub fn check(&self, volume_type: VolumeType) -> Result<(), Error> {
        let volume_type = self.volume_type.unwrap_or(volume_type);
        if self.iops.is_some() && !volume_type.takes_iops() {
            return Err(Error::InvalidArgument(format!(
                "parameter {IOPS:?} applies to gp3, io1 and io2 volumes, not {}",
                volume_type.name()
            )));
        }
        if self.throughput.is_some() && !volume_type.takes_throughput() {
            return Err(Error::InvalidArgument(format!(
                "parameter {THROUGHPUT:?} applies to gp3 volumes only, not {}",
                volume_type.name()
            )));
        }
        Ok(())
    }
}

/// Everything CreateVolume is told besides size, zone and source.
#[derive(Debug, PartialEq, Eq)]
pub struct CreateParameters {
    pub volume_type: VolumeType,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    /// `None` leaves it to the account's default.
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
}

impl CreateParameters {
    /// StorageClass `parameters`, overridden by the request's `mutable` parameters (which
    /// take only the tuning keys), with `default_type` when neither names a type.
    pub fn parse(
        parameters: &[(String, String)],
        mutable: &[(String, String)],
        default_type: VolumeType,
    ) -> Result<CreateParameters, Error> {
        let mut tuning = Tuning::default();
        let mut encrypted = None;
        let mut kms_key_id = None;
        for (key, value) in parameters {
            match key.as_str() {
                ENCRYPTED => encrypted = Some(boolean(ENCRYPTED, value)?),
                KMS_KEY_ID if value.trim().is_empty() => {
                    return Err(Error::InvalidArgument(format!("parameter {KMS_KEY_ID:?} is empty")));
                }
                KMS_KEY_ID => kms_key_id = Some(value.trim().to_owned()),
                _ if tuning.take(key, value)? => {}
                _ => {
                    return Err(unknown(
                        "StorageClass parameter",
                        key,
                        &[TYPE, IOPS, THROUGHPUT, ENCRYPTED, KMS_KEY_ID],
                    ));
                }
            }
        }
        let overrides = Tuning::parse("mutable parameter", mutable)?;
        let tuning = Tuning {
            volume_type: overrides.volume_type.or(tuning.volume_type),
            iops: overrides.iops.or(tuning.iops),
            throughput: overrides.throughput.or(tuning.throughput),
        };
        let volume_type = tuning.volume_type.unwrap_or(default_type);
        tuning.check(volume_type)?;
        if volume_type.needs_iops() && tuning.iops.is_none() {
            return Err(Error::InvalidArgument(format!("an {} volume needs parameter {IOPS:?}", volume_type.name())));
        }
        if kms_key_id.is_some() && encrypted != Some(true) {
            return Err(Error::InvalidArgument(format!(
                "parameter {KMS_KEY_ID:?} needs {ENCRYPTED:?} set to \"true\""
            )));
        }
        Ok(CreateParameters { volume_type, iops: tuning.iops, throughput: tuning.throughput, encrypted, kms_key_id })
    }
}

fn unknown(what: &str, key: &str, known: &[&str]) -> Error {
    Error::InvalidArgument(format!("unknown {what} {key:?} (known: {})", known.join(", ")))
}

fn positive(key: &str, value: &str) -> Result<u32, Error> {
    match value.trim().parse::<u32>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err(Error::InvalidArgument(format!("parameter {key:?} must be a positive whole number, got {value:?}"))),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, Error> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidArgument(format!("parameter {key:?} must be \"true\" or \"false\", got {value:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn create(parameters: &[(&str, &str)], mutable: &[(&str, &str)]) -> Result<CreateParameters, Error> {
        CreateParameters::parse(&params(parameters), &params(mutable), VolumeType::Gp3)
    }

    fn invalid(parameters: &[(&str, &str)], mutable: &[(&str, &str)]) -> String {
        match create(parameters, mutable) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected invalid-argument for {parameters:?} {mutable:?}, got {other:?}"),
        }
    }

    #[test]
    fn type_names_round_trip() {
        for name in VolumeType::NAMES {
            assert_eq!(VolumeType::parse(name).map(VolumeType::name), Some(name));
        }
        assert_eq!(VolumeType::parse("GP3"), None);
    }

    #[test]
    fn defaults_and_full_sets() {
        assert_eq!(
            create(&[], &[]).unwrap(),
            CreateParameters {
                volume_type: VolumeType::Gp3,
                iops: None,
                throughput: None,
                encrypted: None,
                kms_key_id: None,
            }
        );
        assert_eq!(
            create(
                &[
                    ("type", "gp3"),
                    ("iops", "4000"),
                    ("throughput", "250"),
                    ("encrypted", "true"),
                    ("kmsKeyId", "alias/csi")
                ],
                &[]
            )
            .unwrap(),
            CreateParameters {
                volume_type: VolumeType::Gp3,
                iops: Some(4000),
                throughput: Some(250),
                encrypted: Some(true),
                kms_key_id: Some("alias/csi".into()),
            }
        );
        let io2 = create(&[("type", "io2"), ("iops", "100"), ("encrypted", "false")], &[]).unwrap();
        assert_eq!((io2.volume_type, io2.iops, io2.encrypted), (VolumeType::Io2, Some(100), Some(false)));
    }

    #[test]
    fn mutable_parameters_override() {
        let created = create(&[("type", "gp2")], &[("type", "gp3"), ("iops", "5000")]).unwrap();
        assert_eq!((created.volume_type, created.iops), (VolumeType::Gp3, Some(5000)));
    }

    #[test]
    fn bad_keys_values_and_combinations() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Pairs, Pairs, &str)] = &[
            (&[("fsType", "xfs")], &[], "unknown StorageClass parameter \"fsType\""),
            (&[], &[("encrypted", "true")], "unknown mutable parameter \"encrypted\""),
            (&[("type", "ssd")], &[], "not an EBS volume type"),
            (&[("iops", "-1")], &[], "positive"),
            (&[("iops", "0")], &[], "positive"),
            (&[("throughput", "fast")], &[], "positive"),
            (&[("encrypted", "yes")], &[], "\"true\" or \"false\""),
            (&[("type", "gp2"), ("iops", "100")], &[], "not gp2"),
            (&[("type", "st1"), ("iops", "100")], &[], "not st1"),
            (&[("type", "io1"), ("throughput", "100")], &[], "gp3 volumes only"),
            (&[("type", "io1")], &[], "needs parameter \"iops\""),
            (&[("kmsKeyId", "alias/x")], &[], "needs \"encrypted\""),
            (&[("kmsKeyId", "alias/x"), ("encrypted", "false")], &[], "needs \"encrypted\""),
            (&[("kmsKeyId", " "), ("encrypted", "true")], &[], "empty"),
        ];
        for (parameters, mutable, expected) in cases {
            let message = invalid(parameters, mutable);
            assert!(message.contains(expected), "{parameters:?} {mutable:?}: {message}");
        }
    }

    #[test]
    fn tuning_checks_against_the_target_type() {
        let tuning = Tuning::parse("mutable parameter", &params(&[("iops", "3000")])).unwrap();
        tuning.check(VolumeType::Gp3).unwrap();
        assert!(matches!(tuning.check(VolumeType::Gp2), Err(Error::InvalidArgument(_))));
        let retype = Tuning::parse("mutable parameter", &params(&[("type", "io2"), ("iops", "3000")])).unwrap();
        retype.check(VolumeType::Gp2).unwrap();
        assert!(matches!(
            Tuning::parse("mutable parameter", &params(&[("size", "1")])),
            Err(Error::InvalidArgument(m)) if m.contains("unknown mutable parameter \"size\"")
        ));
    }
}
