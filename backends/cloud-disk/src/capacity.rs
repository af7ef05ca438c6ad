//! GetCapacity. EBS has no meaningful free-space figure: volumes are made on demand from a
//! pool AWS does not report, limited only by account quotas (per region and volume type,
//! in TiB) that EC2's API does not expose either. What a StorageClass can always be told is
//! the size range of its volume type, so the answer is that type's largest volume as both
//! `available-bytes` and `maximum-volume-size`, and its smallest as `minimum-volume-size`.
//! The Kubernetes scheduler then places a pod by zone and size, never on a free-space
//! number that means nothing. The answer is the same in every zone (the topology is not
//! looked at) and needs no request to AWS, nor credentials.

use kit::types::{Capacity, Error, VolumeCapability};

use crate::parameters::CreateParameters;
use crate::settings::Settings;
use crate::sizing;
use crate::support;

/// The capacity of a StorageClass with `parameters` (checked as CreateVolume checks them).
pub fn get(
    settings: &Settings,
    capabilities: &[VolumeCapability],
    parameters: &[(String, String)],
) -> Result<Capacity, Error> {
    support::check_capabilities(capabilities)?;
    let parameters = CreateParameters::parse(parameters, &[], settings.default_volume_type)?;
    let (min_gib, max_gib) = parameters.volume_type.size_limits_gib();
    Ok(Capacity {
        available_bytes: sizing::bytes(max_gib),
        maximum_volume_size: sizing::bytes(max_gib),
        minimum_volume_size: sizing::bytes(min_gib),
    })
}

#[cfg(test)]
mod tests {
    use kit::types::{AccessMode, AccessType};

    use super::*;
    use crate::sizing::GIB;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn capacity(settings: &Settings, pairs: &[(&str, &str)]) -> Result<(u64, u64, u64), Error> {
        get(settings, &[], &params(pairs)).map(|c| (c.available_bytes, c.maximum_volume_size, c.minimum_volume_size))
    }

    #[test]
    fn the_volume_type_bounds_the_answer() {
        let settings = Settings::for_tests();
        assert_eq!(capacity(&settings, &[]).unwrap(), (16_384 * GIB, 16_384 * GIB, GIB));
        assert_eq!(
            capacity(&settings, &[("type", "io2"), ("iops", "3000")]).unwrap(),
            (65_536 * GIB, 65_536 * GIB, 4 * GIB)
        );
        assert_eq!(
            capacity(&settings, &[("type", "st1"), ("encrypted", "true")]).unwrap(),
            (16_384 * GIB, 16_384 * GIB, 125 * GIB)
        );
        assert_eq!(capacity(&settings, &[("type", "standard")]).unwrap(), (1_024 * GIB, 1_024 * GIB, GIB));
        let mut sc1_default = Settings::for_tests();
        sc1_default.default_volume_type = crate::parameters::VolumeType::Sc1;
        assert_eq!(capacity(&sc1_default, &[]).unwrap(), (16_384 * GIB, 16_384 * GIB, 125 * GIB));
    }

    #[test]
    fn invalid_parameters_are_refused_as_create_refuses_them() {
        let settings = Settings::for_tests();
        for bad in [
            &[("type", "gp4")][..],
            &[("type", "io1")],
            &[("type", "st1"), ("iops", "100")],
            &[("size", "10")],
            &[("kmsKeyId", "k")],
        ] {
            let error = capacity(&settings, bad).unwrap_err();
            assert!(matches!(error, Error::InvalidArgument(_)), "{bad:?}: {error:?}");
        }
        let shared =
            [VolumeCapability { access_type: AccessType::Block, access_mode: AccessMode::MultiNodeMultiWriter }];
        assert!(matches!(get(&settings, &shared, &[]), Err(Error::InvalidArgument(_))));
    }
}
