//! Version, Status, RuntimeConfig and UpdateRuntimeConfig: what the runtime is and whether
//! it is ready.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use tonic::Status;

use super::status::to_status;

pub const RUNTIME_NAME: &str = "podbay";
pub const RUNTIME_API_VERSION: &str = "v1";

/// Runtime information shown by `Status` (verbose) and `podbay info`.
pub async fn runtime_info(runtime: &Runtime, stream: &str) -> serde_json::Value {
    let opts = runtime.options();
    serde_json::json!({
        "streamServer": stream,
        "runtimeName": RUNTIME_NAME,
        "runtimeVersion": env!("CARGO_PKG_VERSION"),
        "root": opts.root,
        "runDir": opts.run,
        "supervisor": opts.supervisor_exe,
        "cgroupDriver": "cgroupfs",
        "network": runtime.network_report().await,
    })
}

pub fn version() -> cri::VersionResponse {
    cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    }
}

pub async fn status(rt: &Runtime, stream: &str, req: cri::StatusRequest) -> cri::StatusResponse {
    let condition = |kind: &str, status: bool, reason: &str, message: &str| cri::RuntimeCondition {
        r#type: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    };
    let network = match rt.network().ready() {
        Ok(()) => match rt.network().note() {
            Some(note) => condition("NetworkReady", true, "PodCIDRChangeRefused", &note),
            None => condition("NetworkReady", true, "", ""),
        },
        Err(reason) => condition("NetworkReady", false, "NetworkPluginNotReady", &reason),
    };
    let runtime = match rt.health() {
        Ok(()) => condition("RuntimeReady", true, "", ""),
        Err(reason) => condition("RuntimeReady", false, "StateStoreFailing", &reason),
    };
    let conditions = vec![runtime, network];
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".into(), runtime_info(rt, stream).await.to_string());
    }
    // The default handler (the only one): recursive read-only mounts through the kernel's
    // mount_setattr (Linux ≥ 5.12), and pods with their own user namespace (idmapped
    // rootfs layers and mounts, Linux ≥ 5.19 for overlayfs on idmapped layers).
    let handler = cri::RuntimeHandler {
        name: String::new(),
        features: Some(cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: true,
        }),
    };
    cri::StatusResponse {
        status: Some(cri::RuntimeStatus { conditions }),
        info,
        runtime_handlers: vec![handler],
        // SupplementalGroupsPolicy, and the effective user in ContainerStatus.
        features: Some(cri::RuntimeFeatures { supplemental_groups_policy: true }),
    }
}

pub fn config() -> cri::RuntimeConfigResponse {
    cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
        }),
    }
}

/// kubelet sends the node's pod CIDR here; podbay's node subnet comes from its own config
/// (`[network]`), as with flannel, so this is accepted and ignored.
/// kubelet's pod CIDR (the only runtime config it sends): the node's subnet with
/// `network.subnet_store = "kubelet"`, else ignored.
pub async fn update_config(
    rt: &Runtime,
    req: cri::UpdateRuntimeConfigRequest,
) -> Result<cri::UpdateRuntimeConfigResponse, Status> {
    let pod_cidr = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr);
    rt.network()
        .set_pod_cidr(pod_cidr.as_deref().unwrap_or_default())
        .await
        .map_err(|e| to_status("UpdateRuntimeConfig", e))?;
    Ok(cri::UpdateRuntimeConfigResponse {})
}
