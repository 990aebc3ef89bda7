//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and ListPodSandbox:
//! the handlers and the conversion of sandbox records into the CRI's messages.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use podbay_runtime::sandbox::{
    NamespaceMode, PodMetadata, SandboxFilter, SandboxRecord, SandboxState,
};
use tonic::Status;

use super::fields::{sorted, unsorted};
use super::sandbox_config::sandbox_spec;
use super::status::to_status;

pub async fn run(
    rt: &Runtime,
    req: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Status> {
    let spec = sandbox_spec(req)?;
    let id = rt.sandboxes().run(spec).await.map_err(|e| to_status("RunPodSandbox", e))?;
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id.to_string() })
}

pub async fn stop(
    rt: &Runtime,
    req: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, Status> {
    rt.stop_sandbox(&req.pod_sandbox_id).await.map_err(|e| to_status("StopPodSandbox", e))?;
    Ok(cri::StopPodSandboxResponse {})
}

pub async fn remove(
    rt: &Runtime,
    req: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, Status> {
    rt.remove_sandbox(&req.pod_sandbox_id).await.map_err(|e| to_status("RemovePodSandbox", e))?;
    Ok(cri::RemovePodSandboxResponse {})
}

/// PortForward: checked now (the pod is ready, the ports are ports), forwarded when the
/// client connects to the URL.
pub fn port_forward(
    rt: &Runtime,
    stream: &crate::stream::StreamServer,
    req: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Status> {
    let rec =
        rt.sandboxes().status(&req.pod_sandbox_id).map_err(|e| to_status("PortForward", e))?;
    if !rec.state.is_ready() {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready: cannot forward ports",
            rec.id
        )));
    }
    for (n, p) in req.port.iter().enumerate() {
        if !(1..=65535).contains(p) {
            return Err(super::fields::invalid(
                &format!("port[{n}]"),
                format!("{p} is not a TCP port"),
            ));
        }
    }
    let spec = crate::stream::PortForwardSpec {
        sandbox_id: rec.id.to_string(),
        netns: rec.namespaces.get(&podbay_runtime::layout::NsKind::Net).cloned(),
        ports: req.port,
    };
    Ok(cri::PortForwardResponse { url: stream.url_for(crate::stream::Pending::PortForward(spec))? })
}

pub fn status(
    rt: &Runtime,
    req: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    let rec =
        rt.sandboxes().status(&req.pod_sandbox_id).map_err(|e| to_status("PodSandboxStatus", e))?;
    Ok(sandbox_status(&rec, rt.network().node_ip(), req.verbose))
}

pub fn list(rt: &Runtime, req: cri::ListPodSandboxRequest) -> cri::ListPodSandboxResponse {
    let filter = sandbox_filter(req.filter);
    cri::ListPodSandboxResponse {
        items: rt.sandboxes().list(&filter).iter().map(sandbox_summary).collect(),
    }
}

fn cri_mode(m: NamespaceMode) -> i32 {
    match m {
        NamespaceMode::Pod => cri::NamespaceMode::Pod as i32,
        NamespaceMode::Container => cri::NamespaceMode::Container as i32,
        NamespaceMode::Node => cri::NamespaceMode::Node as i32,
    }
}

fn cri_state(s: SandboxState) -> i32 {
    match s {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::NotReady | SandboxState::Unknown => {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

pub(super) fn cri_metadata(m: &PodMetadata) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

/// The IP a sandbox reports: its lease, or the node's for hostNetwork pods.
pub fn sandbox_ip(rec: &SandboxRecord, node_ip: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    match (&rec.network, rec.spec.namespaces.network) {
        (Some(net), _) => Some(net.ip),
        (None, NamespaceMode::Node) => node_ip,
        (None, _) => None,
    }
}

pub fn sandbox_status(
    rec: &SandboxRecord,
    node_ip: Option<Ipv4Addr>,
    verbose: bool,
) -> cri::PodSandboxStatusResponse {
    let ns = &rec.spec.namespaces;
    let ip = sandbox_ip(rec, node_ip).map(|ip| ip.to_string()).unwrap_or_default();
    let status = cri::PodSandboxStatus {
        id: rec.id.to_string(),
        metadata: Some(cri_metadata(&rec.spec.metadata)),
        state: cri_state(rec.state),
        created_at: rec.created_at,
        network: Some(cri::PodSandboxNetworkStatus { ip, additional_ips: vec![] }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: cri_mode(ns.network),
                    pid: cri_mode(ns.pid),
                    ipc: cri_mode(ns.ipc),
                    ..Default::default()
                }),
            }),
        }),
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        runtime_handler: rec.spec.runtime_handler.clone(),
    };
    let mut info = HashMap::new();
    if verbose {
        info.insert("info".to_owned(), sandbox_info(rec).to_string());
    }
    cri::PodSandboxStatusResponse { status: Some(status), info, ..Default::default() }
}

/// The verbose JSON info of a sandbox: processes, namespaces and files on the node.
pub fn sandbox_info(rec: &SandboxRecord) -> serde_json::Value {
    serde_json::json!({
        "state": rec.state.as_str(),
        "pid": rec.supervisor.map(|s| s.pid),
        "supervisor": rec.supervisor,
        "podInit": rec.pod_init,
        "podDir": rec.pod_dir,
        "namespaces": rec.namespaces,
        "shm": rec.shm,
        "hostname": rec.spec.hostname,
        "network": rec.network,
        "config": rec.spec,
    })
}

pub fn sandbox_summary(rec: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: rec.id.to_string(),
        metadata: Some(cri_metadata(&rec.spec.metadata)),
        state: cri_state(rec.state),
        created_at: rec.created_at,
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        runtime_handler: rec.spec.runtime_handler.clone(),
    }
}

pub fn sandbox_filter(f: Option<cri::PodSandboxFilter>) -> SandboxFilter {
    let Some(f) = f else {
        return SandboxFilter::default();
    };
    SandboxFilter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        ready: f.state.map(|s| s.state == cri::PodSandboxState::SandboxReady as i32),
        labels: sorted(f.label_selector),
    }
}
