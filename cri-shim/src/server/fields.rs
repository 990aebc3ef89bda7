//! Field checks and map conversions shared by the CRI conversions. Bad input becomes
//! InvalidArgument naming the field, before anything is created.

use std::collections::{BTreeMap, HashMap};

use tonic::Status;

/// Longest name, namespace or uid podbay accepts (a DNS subdomain's limit).
pub const NAME_MAX: usize = 253;

pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

pub fn sorted(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

pub fn unsorted(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A name, namespace or uid: not empty, at most [`NAME_MAX`] bytes, no '/' or NUL.
pub fn check_name(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > NAME_MAX {
        return Err(invalid(field, format!("is {} bytes long; at most {NAME_MAX}", value.len())));
    }
    if value.contains('/') {
        return Err(invalid(field, format!("{value:?} must not contain '/'")));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL byte"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, format!("{value:?} must not contain control characters")));
    }
    Ok(())
}

/// Label and annotation keys: not empty, no control characters (values may hold any
/// text; the CLI escapes it).
pub fn check_keys(field: &str, map: &HashMap<String, String>) -> Result<(), Status> {
    for key in map.keys() {
        if key.is_empty() || key.chars().any(char::is_control) {
            return Err(invalid(&format!("{field}[{key:?}]"), "is not a valid key"));
        }
    }
    Ok(())
}
