//! The shapes of EC2 resource ids (`vol-`, `snap-`, `i-` and 8 or 17 lower-case hex
//! digits). Ids from the CO are checked before they reach AWS: an id EC2 never issues
//! cannot name anything, so operations answer it as not found (or as already deleted).

/// Whether `id` is shaped like an EBS volume id.
pub fn is_volume(id: &str) -> bool {
    prefixed_hex(id, "vol-")
}

/// Whether `id` is shaped like an EBS snapshot id.
pub fn is_snapshot(id: &str) -> bool {
    prefixed_hex(id, "snap-")
}

/// Whether `id` is shaped like an EC2 instance id (a node id).
pub fn is_instance(id: &str) -> bool {
    prefixed_hex(id, "i-")
}

/// The instance id a resource-based host name starts with: `i-0abc….eu-west-1.compute.internal`
/// (`i-0abc….ec2.internal` in us-east-1) names instance `i-0abc…`.
pub fn instance_of_resource_name(name: &str) -> Option<&str> {
    let (first, domain) = name.split_once('.')?;
    let region_domain =
        domain.strip_suffix(".compute.internal").is_some_and(|region| !region.is_empty() && !region.contains('.'));
    (is_instance(first) && (region_domain || domain == "ec2.internal")).then_some(first)
}

/// Whether `name` can be a host name (a Kubernetes node name, an EC2 private DNS name):
/// labels of lower-case letters, digits and inner dashes, at most 253 characters.
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn prefixed_hex(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(is_volume("vol-1234567890abcdef0"));
        assert!(is_volume("vol-1a2b3c4d"));
        assert!(is_snapshot("snap-1234567890abcdef0"));
        assert!(is_instance("i-1234567890abcdef0"));
        for bad in [
            "",
            "vol-",
            "vol-123",
            "vol-1234567890ABCDEF0",
            "vol-1234567890abcdef0 ",
            "vol-1234567890abcdef01",
            "snap-1234567890abcdef0",
            "../vol-1a2b3c4d",
            "vol-1a2b3c4g",
        ] {
            assert!(!is_volume(bad), "{bad:?}");
        }
        assert!(!is_snapshot("vol-1234567890abcdef0"));
        assert!(!is_instance("node-1"));
    }

    #[test]
    fn resource_names_name_their_instance() {
        for (name, instance) in [
            ("i-0123456789abcdef0.eu-west-1.compute.internal", Some("i-0123456789abcdef0")),
            ("i-0123456789abcdef0.ec2.internal", Some("i-0123456789abcdef0")),
            ("i-1a2b3c4d.ap-south-2.compute.internal", Some("i-1a2b3c4d")),
            ("i-0123456789abcdef0", None),
            ("ip-10-0-1-17.eu-west-1.compute.internal", None),
            ("i-0123456789abcdef0.compute.internal", None),
            ("i-0123456789abcdef0.eu-west-1.compute.internal.evil", None),
            ("i-0123456789abcdef0.example.com", None),
            ("i-012.eu-west-1.compute.internal", None),
        ] {
            assert_eq!(instance_of_resource_name(name), instance, "{name}");
        }
    }

    #[test]
    fn host_names() {
        for good in ["ip-10-0-1-17.ec2.internal", "node-1", "worker0.example.com"] {
            assert!(is_host_name(good), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Node-1", "-a", "a-", "a..b", "a.", "node_1", "a b", long.as_str()] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }
}
