//! Ids derived from CSI names.
//!
//! An id is a kind's prefix and the first 128 bits of the CSI name's SHA-256 in lowercase
//! hex, so a retried create lands on the same id without a lookup table. Ids are parsed
//! strictly: a caller-supplied string becomes an [`Id`] only when it has exactly the shape
//! this module hands out, so it is safe to put in a path or on a command line.

use std::fmt;

use sha2::{Digest, Sha256};

/// Hex digits after the prefix.
pub const HASH_DIGITS: usize = 32;

/// What a backend's ids name (volume, snapshot, …); each kind has its own prefix.
pub trait Kind: Copy + Ord {
    /// The text every id of this kind starts with; no prefix is a prefix of another.
    fn prefix(self) -> &'static str;
}

/// A well-formed id of a backend's kind `K`. Only [`Id::for_name`] and [`Id::parse`] make one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id<K> {
    text: String,
    kind: K,
}

impl<K: Kind> Id<K> {
    /// The id a CSI name maps to; the same name always gives the same id.
    pub fn for_name(kind: K, name: &str) -> Id<K> {
        Id { text: format!("{}{}", kind.prefix(), name_hash(name)), kind }
    }

    /// `text` as an id of `kind`, or `None` when it does not have the exact shape.
    pub fn parse(kind: K, text: &str) -> Option<Id<K>> {
        let hash = text.strip_prefix(kind.prefix())?;
        is_name_hash(hash).then(|| Id { text: text.to_owned(), kind })
    }

    pub fn kind(&self) -> K {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The hash part of the ids of `name`.
pub fn name_hash(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..HASH_DIGITS / 2])
}

fn is_name_hash(text: &str) -> bool {
    text.len() == HASH_DIGITS && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A kind for the tests of this crate.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum TestKind {
        Volume,
        Snapshot,
    }

    impl Kind for TestKind {
        fn prefix(self) -> &'static str {
            match self {
                TestKind::Volume => "vol-",
                TestKind::Snapshot => "snap-",
            }
        }
    }

    #[test]
    fn id_is_prefix_and_truncated_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(name_hash("abc"), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(Id::for_name(TestKind::Snapshot, "abc").as_str(), "snap-ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(Id::for_name(TestKind::Volume, "pvc-1"), Id::for_name(TestKind::Volume, "pvc-1"));
        assert_ne!(Id::for_name(TestKind::Volume, "pvc-1"), Id::for_name(TestKind::Volume, "pvc-2"));
    }

    #[test]
    fn derived_ids_parse_back() {
        for kind in [TestKind::Volume, TestKind::Snapshot] {
            let id = Id::for_name(kind, "some name");
            assert_eq!(Id::parse(kind, id.as_str()), Some(id.clone()));
            assert_eq!(id.kind(), kind);
            assert_eq!(id.to_string(), id.as_str());
        }
    }

    #[test]
    fn parse_rejects_anything_but_the_exact_shape() {
        let good = "vol-0123456789abcdef0123456789abcdef";
        assert!(Id::parse(TestKind::Volume, good).is_some());
        for bad in [
            "",
            "vol-",
            "snap-0123456789abcdef0123456789abcdef",
            "vol-0123456789abcdef0123456789abcde",
            "vol-0123456789abcdef0123456789abcdef0",
            "vol-0123456789ABCDEF0123456789abcdef",
            "vol-0123456789abcdef0123456789abcdeg",
            "vol-../../../../etc/passwd/abcdef012",
            "vol-0123456789abcdef0123456789abcd/f",
            "x-0123456789abcdef0123456789abcdef",
            " vol-0123456789abcdef0123456789abcdef",
            "vol-0123456789abcdef0123456789abcdé",
        ] {
            assert_eq!(Id::parse(TestKind::Volume, bad), None, "{bad:?}");
        }
        assert_eq!(Id::parse(TestKind::Snapshot, good), None);
    }
}
