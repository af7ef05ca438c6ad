//! Topology: an EBS volume lives in one availability zone and can only be attached to
//! instances in that zone, so volumes and nodes carry the segment
//! `topology.kubernetes.io/zone=<zone>` (the well-known Kubernetes key).

use kit::types::{Error, Topology, TopologyRequirement};

pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";

/// The topology segment of `zone`.
pub fn segment(zone: &str) -> Topology {
    vec![(ZONE_KEY.to_owned(), zone.to_owned())]
}

/// The zone a new volume goes to: the first preferred segment with a zone, else the first
/// requisite one. Without either the CO has not said where the volume is needed.
pub fn pick_zone(requirement: Option<&TopologyRequirement>) -> Result<String, Error> {
    requirement
        .into_iter()
        .flat_map(|requirement| requirement.preferred.iter().chain(&requirement.requisite))
        .flatten()
        .find(|(key, value)| key == ZONE_KEY && !value.is_empty())
        .map(|(_, zone)| zone.clone())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no availability zone: the accessibility requirements name no {ZONE_KEY} segment"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(preferred: &[&str], requisite: &[&str]) -> TopologyRequirement {
        let segments = |zones: &[&str]| zones.iter().map(|zone| segment(zone)).collect();
        TopologyRequirement { requisite: segments(requisite), preferred: segments(preferred) }
    }

    #[test]
    fn preferred_first_then_requisite() {
        let both = requirement(&["eu-west-1b", "eu-west-1a"], &["eu-west-1a", "eu-west-1b"]);
        assert_eq!(pick_zone(Some(&both)).unwrap(), "eu-west-1b");
        let requisite = requirement(&[], &["eu-west-1c"]);
        assert_eq!(pick_zone(Some(&requisite)).unwrap(), "eu-west-1c");
    }

    #[test]
    fn other_keys_are_skipped() {
        let mut mixed = requirement(&[], &["eu-west-1a"]);
        mixed.preferred = vec![vec![("topology.wasmcsi.dev/node".into(), "n1".into())]];
        assert_eq!(pick_zone(Some(&mixed)).unwrap(), "eu-west-1a");
    }

    #[test]
    fn no_zone_is_invalid() {
        for requirement in [None, Some(requirement(&[], &[])), Some(requirement(&[""], &[]))] {
            assert!(matches!(pick_zone(requirement.as_ref()), Err(Error::InvalidArgument(m)) if m.contains(ZONE_KEY)));
        }
    }
}
