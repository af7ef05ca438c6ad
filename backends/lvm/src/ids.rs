//! Volume and snapshot ids, which are also the names of their LVs: `csi-` (volume) or
//! `snap-` (snapshot) and the hash of the CSI name (see `kit::ids`). A request's id is
//! parsed before it reaches an lvm command line, so it can only ever name an LV of exactly
//! that shape; anything else does not exist.

/// What an id names; each kind has its own LV name prefix and name tag (`tags.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Volume,
    Snapshot,
}

/// A well-formed id, and so a safe LV name.
pub type Id = kit::ids::Id<Kind>;

impl kit::ids::Kind for Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Volume => "csi-",
            Kind::Snapshot => "snap-",
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
    fn ids_are_lv_names_from_the_name_hash() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(Id::for_name(Kind::Volume, "abc").as_str(), "csi-ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(Id::for_name(Kind::Snapshot, "abc").as_str(), "snap-ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn kinds_do_not_parse_as_each_other() {
        let volume = Id::for_name(Kind::Volume, "pvc-1");
        assert_eq!(Id::parse(Kind::Volume, volume.as_str()), Some(volume.clone()));
        assert_eq!(Id::parse(Kind::Snapshot, volume.as_str()), None);
        for bad in ["csi-a", "csi-", "vg0/csi-ba7816bf8f01cfea414140de5dae2223", "--yes"] {
            assert_eq!(Id::parse(Kind::Volume, bad), None, "{bad:?}");
        }
    }
}
