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

/// AppArmor and SELinux: podbay applies neither (these hosts have neither). As containerd
/// on such a host, unset, RuntimeDefault and Unconfined apply nothing; a Localhost AppArmor
/// profile or an SELinux label asks for something that would not happen, so it is refused
/// rather than silently ignored.
pub fn check_lsm(
    field: &str,
    apparmor: Option<&k8s_cri::v1::SecurityProfile>,
    apparmor_profile: &str,
    selinux: Option<&k8s_cri::v1::SeLinuxOption>,
) -> Result<(), Status> {
    use k8s_cri::v1::security_profile::ProfileType;
    if let Some(p) = apparmor
        && p.profile_type == ProfileType::Localhost as i32
    {
        return Err(invalid(
            &format!("{field}.apparmor"),
            format!(
                "Localhost profile {:?} cannot be applied: podbay does not apply AppArmor profiles",
                p.localhost_ref
            ),
        ));
    }
    if apparmor_profile.starts_with("localhost/") {
        return Err(invalid(
            &format!("{field}.apparmor_profile"),
            format!(
                "{apparmor_profile:?} cannot be applied: podbay does not apply AppArmor profiles"
            ),
        ));
    }
    if let Some(s) = selinux
        && !(s.user.is_empty() && s.role.is_empty() && s.r#type.is_empty() && s.level.is_empty())
    {
        return Err(invalid(
            &format!("{field}.selinux_options"),
            "an SELinux label cannot be applied: podbay does not apply SELinux labels",
        ));
    }
    Ok(())
}
