//! Volume and snapshot ids: `v-` (volume) or `s-` (snapshot) and the hash of the CSI name
//! (see `kit::ids`), so a retried create lands on the same id without a lookup table and a
//! caller-supplied string only becomes part of a path once it has the exact shape handed out.

/// What an id names; each kind has its own prefix and directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Volume,
    Snapshot,
}

/// A well-formed loopfile id: holding one means the text is safe to use as a file name.
pub type Id = kit::ids::Id<Kind>;

impl kit::ids::Kind for Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Volume => "v-",
            Kind::Snapshot => "s-",
        }
    }
}

impl Kind {
    /// The word used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_prefix_and_truncated_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(Id::for_name(Kind::Volume, "abc").as_str(), "v-ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(Id::for_name(Kind::Snapshot, "abc").as_str(), "s-ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn kinds_do_not_parse_as_each_other() {
        let volume = Id::for_name(Kind::Volume, "pvc-1");
        assert_eq!(Id::parse(Kind::Volume, volume.as_str()), Some(volume.clone()));
        assert_eq!(Id::parse(Kind::Snapshot, volume.as_str()), None);
        assert_eq!(Id::parse(Kind::Volume, "v-../../etc/passwd"), None);
    }
}
