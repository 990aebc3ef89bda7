//! The CRI edge: the request fields kubelet (or anyone on the socket) controls, decoded as
//! gRPC decodes them and validated into the runtime's specs; for containers also the
//! image-controlled inputs the spec is built from (config JSON, /etc/passwd, /etc/group).

use std::path::Path;

use k8s_cri::v1 as cri;
use podbay::server::container_config::container_spec;
use podbay::server::sandbox_config::sandbox_spec;
use podbay_runtime::container::ContainerSpec;
use podbay_runtime::container::spec::{
    self, ImageConfig, NodeFacts, UserDb, check_mount_destination, clean_container_path,
};
use podbay_runtime::sandbox::SandboxSpec;
use podbay_runtime::sandbox::files::resolv_conf;
use prost::Message;

pub fn pod(_scratch: &Path, data: &[u8]) {
    let Ok(spec) = accepted_pod(data) else { return };
    // An accepted spec is stored as JSON and read back at every restart.
    let json = serde_json::to_vec(&spec).expect("an accepted pod spec serializes");
    let back: SandboxSpec = serde_json::from_slice(&json).expect("a stored pod spec reads back");
    assert_eq!(back, spec, "pod spec changed through the store");
    if let Some(dns) = &spec.dns {
        // One line per server, at most one search and one options line: a field must
        // never add lines of its own to the pod's resolv.conf.
        let text = resolv_conf(dns);
        let expected = dns.servers.len()
            + usize::from(!dns.searches.is_empty())
            + usize::from(!dns.options.is_empty());
        assert_eq!(text.lines().count(), expected, "resolv.conf lines from {dns:?}:\n{text}");
    }
    assert!(!spec.hostname.contains(['\n', '\0', '/']), "hostname {:?}", spec.hostname);
}

pub(crate) fn accepted_pod(data: &[u8]) -> Result<SandboxSpec, String> {
    let req = cri::RunPodSandboxRequest::decode(data).map_err(|e| e.to_string())?;
    sandbox_spec(req).map_err(|s| s.message().to_owned())
}

pub fn container(_scratch: &Path, data: &[u8]) {
    let Some((request, image)) = crate::split_head(data) else { return };
    let Ok(spec) = accepted_container(request) else { return };
    let json = serde_json::to_vec(&spec).expect("an accepted container spec serializes");
    let back: ContainerSpec =
        serde_json::from_slice(&json).expect("a stored container spec reads back");
    assert_eq!(back, spec, "container spec changed through the store");
    for m in &spec.mounts {
        let clean = clean_container_path(&m.container_path);
        assert!(clean.starts_with('/'), "clean path {clean:?} of {:?}", m.container_path);
        assert!(!clean.split('/').any(|p| p == ".."), "clean path {clean:?} keeps ..");
        let _ = check_mount_destination(&m.container_path);
    }
    // What the image brings: its config blob and user database.
    let mut parts = image.splitn(3, |b| *b == 0);
    let config = parts.next().unwrap_or_default();
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let db = UserDb { passwd: text(parts.next()), group: text(parts.next()) };
    let image = ImageConfig::parse(config).unwrap_or_default();
    if let Ok(user) = spec::resolve_user(&spec, &image.user, &db) {
        assert!(!user.additional_gids.contains(&user.gid), "{user:?} repeats its gid");
        assert!(user.additional_gids.is_sorted(), "{user:?}");
    }
    let args = spec::process_args(&spec, &image);
    if !spec.command.is_empty() {
        assert_eq!(args[..spec.command.len()], spec.command[..], "command replaces entrypoint");
    }
    let env = spec::environment(&spec, &image, "pod");
    assert!(env.iter().all(|e| e.contains('=')), "environment entries are KEY=value");
    let node = NodeFacts {
        capabilities: podbay_runtime::container::spec::ALL_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        ..NodeFacts::default()
    };
    let caps = spec::capabilities(&spec, &node);
    if !spec.security.privileged {
        for cap in &caps {
            assert!(node.capabilities.contains(cap), "unknown capability {cap:?} granted");
        }
    }
}

pub(crate) fn accepted_container(data: &[u8]) -> Result<ContainerSpec, String> {
    let req = cri::CreateContainerRequest::decode(data).map_err(|e| e.to_string())?;
    container_spec(req.config, &Default::default()).map_err(|s| s.message().to_owned())
}
