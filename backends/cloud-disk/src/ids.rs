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
}
