//! Volume and snapshot ids carry their backend instance: `<instance>:<backend-local id>`.
//! Any later RPC routes by the prefix, with no lookup table to lose.

/// Joins an instance name and a backend-local id.
pub fn qualify(instance: &str, local: &str) -> String {
    format!("{instance}:{local}")
}

/// Splits a qualified id; `None` when it has no instance prefix or an empty local part.
pub fn split(id: &str) -> Option<(&str, &str)> {
    let (instance, local) = id.split_once(':')?;
    (!instance.is_empty() && !local.is_empty()).then_some((instance, local))
}

/// The longest backend-local id the host accepts from a backend, so that a qualified id
/// always fits CSI's 128-byte string limit.
pub const MAX_LOCAL_ID: usize = 96;

/// A backend-local id is safe to embed and route: bounded, printable ASCII, no `:`/`/`.
pub fn is_valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL_ID
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(split(&qualify("fast", "v-1")), Some(("fast", "v-1")));
        assert_eq!(split("a:b:c"), Some(("a", "b:c")));
        assert_eq!(split("nocolon"), None);
        assert_eq!(split(":x"), None);
        assert_eq!(split("x:"), None);
        assert!(is_valid_local("v-0123abcd"));
        assert!(!is_valid_local("../x"));
        assert!(!is_valid_local(&"a".repeat(97)));
    }
}
