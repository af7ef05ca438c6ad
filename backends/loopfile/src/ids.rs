//! Volume and snapshot ids.
//!
//! An id is derived from the CSI name, so a retried create lands on the same id without a
//! lookup table, and it is parsed strictly, so a caller-supplied string can only become part
//! of a path once it has the exact shape this module hands out.

use std::fmt;

use sha2::{Digest, Sha256};

/// Hex digits after the prefix: the first 128 bits of the name's SHA-256.
const HEX_DIGITS: usize = 32;

/// What an id names; each kind has its own prefix and directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Volume => "v-",
            Kind::Snapshot => "s-",
        }
    }

    /// The word used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }
}

/// A well-formed id: `v-` (volume) or `s-` (snapshot) and 32 lowercase hex digits.
///
/// Only [`Id::for_name`] and [`Id::parse`] make one, so holding an `Id` means the text is safe
/// to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id {
    text: String,
    kind: Kind,
}

impl Id {
    /// The id a CSI name maps to; the same name always gives the same id.
    pub fn for_name(kind: Kind, name: &str) -> Id {
        let digest = Sha256::digest(name.as_bytes());
        let mut text = String::with_capacity(kind.prefix().len() + HEX_DIGITS);
        text.push_str(kind.prefix());
        for byte in digest.iter().take(HEX_DIGITS / 2) {
            text.push(hex_digit(byte >> 4));
            text.push(hex_digit(byte & 0x0f));
        }
        Id { text, kind }
    }

    /// `text` as an id of `kind`, or `None` when it does not have the exact shape.
    pub fn parse(kind: Kind, text: &str) -> Option<Id> {
        let hex = text.strip_prefix(kind.prefix())?;
        let well_formed =
            hex.len() == HEX_DIGITS && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Id {
            text: text.to_owned(),
            kind,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_gives_same_id() {
        assert_eq!(Id::for_name(Kind::Volume, "pvc-1"), Id::for_name(Kind::Volume, "pvc-1"));
        assert_ne!(Id::for_name(Kind::Volume, "pvc-1"), Id::for_name(Kind::Volume, "pvc-2"));
    }

    #[test]
    fn id_is_prefix_and_truncated_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            Id::for_name(Kind::Volume, "abc").as_str(),
            "v-ba7816bf8f01cfea414140de5dae2223"
        );
        assert_eq!(
            Id::for_name(Kind::Snapshot, "abc").as_str(),
            "s-ba7816bf8f01cfea414140de5dae2223"
        );
    }

    #[test]
    fn derived_ids_parse_back() {
        for kind in [Kind::Volume, Kind::Snapshot] {
            let id = Id::for_name(kind, "some name");
            assert_eq!(Id::parse(kind, id.as_str()), Some(id.clone()));
            assert_eq!(id.kind(), kind);
        }
    }

    #[test]
    fn parse_rejects_anything_but_the_exact_shape() {
        let good = "v-0123456789abcdef0123456789abcdef";
        assert!(Id::parse(Kind::Volume, good).is_some());
        for bad in [
            "",
            "v-",
            "s-0123456789abcdef0123456789abcdef",
            "v-0123456789abcdef0123456789abcde",
            "v-0123456789abcdef0123456789abcdef0",
            "v-0123456789ABCDEF0123456789abcdef",
            "v-0123456789abcdef0123456789abcdeg",
            "v-../../../../etc/passwd/abcdef0123",
            "v-0123456789abcdef0123456789abcd/f",
            "x-0123456789abcdef0123456789abcdef",
            "v-0123456789abcdef0123456789abcdé",
        ] {
            assert_eq!(Id::parse(Kind::Volume, bad), None, "{bad:?}");
        }
        assert_eq!(Id::parse(Kind::Snapshot, good), None);
    }
}
