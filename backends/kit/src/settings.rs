//! Strict parsing of instance settings: unknown or repeated keys and malformed values are
//! `invalid-argument` errors naming the key, so a typo in the host config stops the host at
//! load time (`validate-settings`) instead of being silently ignored.

use crate::types::Error;

/// Stores the value of `key`, which must not have been given before.
pub fn set_once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), Error> {
    match slot.replace(value) {
        Some(_) => Err(Error::InvalidArgument(format!("setting {key:?} is given more than once"))),
        None => Ok(()),
    }
}

/// The error for a key the backend does not know.
pub fn unknown(key: &str, known: &[&str]) -> Error {
    Error::InvalidArgument(format!("unknown setting {key:?} (known: {})", known.join(", ")))
}

/// A whole number of bytes (surrounding blanks allowed).
pub fn parse_bytes(key: &str, value: &str) -> Result<u64, Error> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("setting {key:?} must be a whole number of bytes, got {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_once_refuses_a_second_value() {
        let mut slot = None;
        set_once(&mut slot, "reserve", 1).unwrap();
        assert_eq!(slot, Some(1));
        let err = set_once(&mut slot, "reserve", 2);
        assert!(matches!(err, Err(Error::InvalidArgument(m)) if m.contains("\"reserve\" is given more than once")));
    }

    #[test]
    fn unknown_names_the_key_and_the_known_ones() {
        let Error::InvalidArgument(message) = unknown("directroy", &["directory", "reserve"]) else {
            panic!("expected invalid-argument")
        };
        assert_eq!(message, "unknown setting \"directroy\" (known: directory, reserve)");
    }

    #[test]
    fn bytes_are_whole_numbers() {
        assert_eq!(parse_bytes("reserve", " 4096 ").unwrap(), 4096);
        for bad in ["10Gi", "-1", "", "1.5"] {
            assert!(matches!(parse_bytes("reserve", bad), Err(Error::InvalidArgument(m)) if m.contains("reserve")));
        }
    }
}
