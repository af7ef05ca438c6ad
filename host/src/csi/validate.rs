//! Request checks every RPC shares: required fields and CSI's size limits (strings 128
//! bytes, maps 4 KiB in total, node ids 256 bytes). Failures are INVALID_ARGUMENT naming
//! the field.

use std::collections::HashMap;

use tonic::Status;

pub const MAX_STRING: usize = 128;
pub const MAX_MAP: usize = 4096;
pub const MAX_NODE_ID: usize = 256;

/// A required string field: present and within 128 bytes.
pub fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    bounded(field, value, MAX_STRING)
}

/// An optional string field: within `max` bytes.
pub fn bounded(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!("{field} is {} bytes, more than the {max} allowed", value.len())));
    }
    Ok(())
}

/// A map field: keys and values together within 4 KiB.
pub fn map(field: &str, map: &HashMap<String, String>) -> Result<(), Status> {
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_MAP {
        return Err(Status::invalid_argument(format!("{field} holds {size} bytes, more than the {MAX_MAP} allowed")));
    }
    Ok(())
}

/// A node id: present and within 256 bytes.
pub fn node_id(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    bounded(field, value, MAX_NODE_ID)
}

/// A pagination size: never negative; 0 means no limit.
pub fn max_entries(value: i32) -> Result<u32, Status> {
    u32::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("max_entries must not be negative (got {value})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_at_their_edge() {
        assert!(required("name", &"a".repeat(128)).is_ok());
        assert_eq!(required("name", &"a".repeat(129)).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(required("name", "").unwrap_err().message(), "name is required");
        let m: HashMap<String, String> = [("k".to_string(), "v".repeat(4095))].into();
        assert!(map("parameters", &m).is_ok());
        let m: HashMap<String, String> = [("k".to_string(), "v".repeat(4096))].into();
        assert!(map("parameters", &m).is_err());
        assert!(node_id("node_id", &"n".repeat(256)).is_ok());
        assert!(node_id("node_id", &"n".repeat(257)).is_err());
        assert!(max_entries(-1).is_err());
    }
}
