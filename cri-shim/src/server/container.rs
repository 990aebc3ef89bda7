//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ListContainers,
//! ContainerStatus, UpdateContainerResources, ReopenContainerLog and ExecSync: the handlers
//! and the conversion of container records into the CRI's messages.

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1 as cri;
use podbay_runtime::container::{
    ContainerFilter, ContainerMetadata, ContainerRecord, ContainerState, Propagation,
};
use podbay_runtime::{ErrorKind, Runtime};
use tonic::Status;

use super::container_config::{Defaults, container_spec, resources};
use super::fields::{invalid, sorted, unsorted};
use super::status::to_status;

pub async fn create(
    rt: &Runtime,
    defaults: &Defaults,
    req: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Status> {
    let spec = container_spec(req.config, defaults)?;
    let id = rt
        .create_container(&req.pod_sandbox_id, spec)
        .await
        .map_err(|e| to_status("CreateContainer", e))?;
    Ok(cri::CreateContainerResponse { container_id: id.to_string() })
}

pub async fn start(
    rt: &Runtime,
    req: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, Status> {
    rt.containers().start(&req.container_id).await.map_err(|e| to_status("StartContainer", e))?;
    Ok(cri::StartContainerResponse {})
}

pub async fn stop(
    rt: &Runtime,
    req: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, Status> {
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    match rt.containers().stop(&req.container_id, timeout).await {
        // Idempotent, as StopPodSandbox and RemoveContainer: a container that is not
        // there is stopped.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(cri::StopContainerResponse {}),
        Err(e) => Err(to_status("StopContainer", e)),
        Ok(()) => Ok(cri::StopContainerResponse {}),
    }
}

pub async fn remove(
    rt: &Runtime,
    req: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, Status> {
    rt.containers().remove(&req.container_id).await.map_err(|e| to_status("RemoveContainer", e))?;
    Ok(cri::RemoveContainerResponse {})
}

pub fn list(rt: &Runtime, req: cri::ListContainersRequest) -> cri::ListContainersResponse {
    let filter = container_filter(req.filter);
    cri::ListContainersResponse { containers: rt.containers().map(&filter, container_summary) }
}

pub fn status(
    rt: &Runtime,
    req: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, Status> {
    let rec =
        rt.containers().status(&req.container_id).map_err(|e| to_status("ContainerStatus", e))?;
    let oci = req.verbose.then(|| rt.containers().oci_spec(&rec)).flatten();
    Ok(container_status(&rec, oci, req.verbose))
}

pub async fn update_resources(
    rt: &Runtime,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    let res = resources(req.linux.unwrap_or_default(), "linux")?;
    rt.containers()
        .update_resources(&req.container_id, res)
        .await
        .map_err(|e| to_status("UpdateContainerResources", e))?;
    Ok(cri::UpdateContainerResourcesResponse {})
}

pub async fn reopen_log(
    rt: &Runtime,
    req: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, Status> {
    rt.containers()
        .reopen_log(&req.container_id)
        .await
        .map_err(|e| to_status("ReopenContainerLog", e))?;
    Ok(cri::ReopenContainerLogResponse {})
}

pub async fn exec_sync(
    rt: &Runtime,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
    let out = rt
        .containers()
        .exec_sync(&req.container_id, req.cmd, timeout)
        .await
        .map_err(|e| to_status("ExecSync", e))?;
    Ok(cri::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code })
}

/// Exec: checked now (the container exists and runs, a command, some stdio, no stderr
/// beside a terminal), run when the client connects to the URL.
pub fn exec(
    rt: &Runtime,
    stream: &crate::stream::StreamServer,
    req: cri::ExecRequest,
) -> Result<cri::ExecResponse, Status> {
    if req.cmd.is_empty() {
        return Err(invalid("cmd", "empty"));
    }
    let io = Stdio { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: req.tty };
    let mut spec = streamed(rt, "Exec", &req.container_id, io)?;
    spec.cmd = req.cmd;
    Ok(cri::ExecResponse { url: stream.url_for(crate::stream::Pending::Exec(spec))? })
}

/// Attach: checked now (the container exists and runs, has the stdin asked for, some
/// stdio, no stderr beside a terminal), joined when the client connects to the URL.
pub fn attach(
    rt: &Runtime,
    stream: &crate::stream::StreamServer,
    req: cri::AttachRequest,
) -> Result<cri::AttachResponse, Status> {
    let io = Stdio { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: req.tty };
    let mut spec = streamed(rt, "Attach", &req.container_id, io)?;
    let rec = rt.containers().status(&spec.container_id).map_err(|e| to_status("Attach", e))?;
    if req.stdin && !rec.spec.stdin {
        return Err(invalid("stdin", "the container was created without stdin"));
    }
    spec.tty = rec.spec.tty;
    Ok(cri::AttachResponse { url: stream.url_for(crate::stream::Pending::Attach(spec))? })
}

/// The stdio an Exec or Attach asks for.
struct Stdio {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// What Exec and Attach check alike: a running container, some stdio, no stderr beside
/// a terminal. The spec, without a command.
fn streamed(
    rt: &Runtime,
    rpc: &'static str,
    id: &str,
    io: Stdio,
) -> Result<crate::stream::ExecSpec, Status> {
    let rec = rt.containers().status(id).map_err(|e| to_status(rpc, e))?;
    if rec.state != ContainerState::Running {
        return Err(Status::failed_precondition(format!(
            "container {} is {}, not running: {rpc} needs a running container",
            rec.id,
            rec.state.as_str()
        )));
    }
    if io.tty && io.stderr {
        return Err(invalid("stderr", "a terminal has no separate stderr (tty is set)"));
    }
    if !io.stdin && !io.stdout && !io.stderr {
        return Err(invalid("stdin", "one of stdin, stdout or stderr must be set"));
    }
    Ok(crate::stream::ExecSpec {
        container_id: rec.id.to_string(),
        cmd: Vec::new(),
        stdin: io.stdin,
        stdout: io.stdout,
        stderr: io.stderr,
        tty: io.tty,
    })
}

fn cri_container_state(s: ContainerState) -> i32 {
    match s {
        ContainerState::Created => cri::ContainerState::ContainerCreated as i32,
        ContainerState::Running => cri::ContainerState::ContainerRunning as i32,
        ContainerState::Exited => cri::ContainerState::ContainerExited as i32,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown as i32,
    }
}

fn cri_container_metadata(m: &ContainerMetadata) -> cri::ContainerMetadata {
    cri::ContainerMetadata { name: m.name.clone(), attempt: m.attempt }
}

/// The image as kubelet reads it back: `image` the name podbay resolved (a repo tag, as
/// containerd reports), `user_specified_image` what the pod spec says, echoed.
fn cri_image_spec(rec: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: rec.spec.image.clone(),
        user_specified_image: rec.spec.user_specified_image.clone(),
        ..Default::default()
    }
}

/// The resources the container runs with: what was asked (and updated since), with the
/// oom_score_adj actually applied.
fn cri_resources(rec: &ContainerRecord) -> cri::ContainerResources {
    let r = &rec.spec.resources;
    let linux = cri::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit,
        memory_swap_limit_in_bytes: r.memory_swap_limit,
        oom_score_adj: rec.oom_score_adj.unwrap_or(r.oom_score_adj),
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| cri::HugepageLimit {
                page_size: page_size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
    };
    cri::ContainerResources { linux: Some(linux), windows: None }
}

fn cri_user(rec: &ContainerRecord) -> Option<cri::ContainerUser> {
    let u = rec.user.as_ref()?;
    Some(cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: i64::from(u.uid),
            gid: i64::from(u.gid),
            supplemental_groups: u.additional_gids.iter().map(|g| i64::from(*g)).collect(),
        }),
    })
}

pub fn container_summary(rec: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: rec.id.to_string(),
        pod_sandbox_id: rec.sandbox_id.to_string(),
        metadata: Some(cri_container_metadata(&rec.spec.metadata)),
        image: Some(cri_image_spec(rec)),
        image_ref: rec.image_ref.clone(),
        image_id: rec.image_id.clone(),
        state: cri_container_state(rec.state),
        created_at: rec.created_at,
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
    }
}

pub fn container_status(
    rec: &ContainerRecord,
    oci: Option<serde_json::Value>,
    verbose: bool,
) -> cri::ContainerStatusResponse {
    let mounts = rec
        .spec
        .mounts
        .iter()
        .map(|m| cri::Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.to_string_lossy().into_owned(),
            readonly: m.readonly,
            propagation: match m.propagation {
                Propagation::Private => cri::MountPropagation::PropagationPrivate,
                Propagation::HostToContainer => cri::MountPropagation::PropagationHostToContainer,
                Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
            } as i32,
            ..Default::default()
        })
        .collect();
    let status = cri::ContainerStatus {
        id: rec.id.to_string(),
        metadata: Some(cri_container_metadata(&rec.spec.metadata)),
        state: cri_container_state(rec.state),
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        exit_code: rec.exit_code,
        image: Some(cri_image_spec(rec)),
        image_ref: rec.image_ref.clone(),
        image_id: rec.image_id.clone(),
        resources: Some(cri_resources(rec)),
        user: cri_user(rec),
        reason: rec.reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        message: rec.message.clone(),
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        mounts,
        log_path: rec.log_path.to_string_lossy().into_owned(),
    };
    let mut info = HashMap::new();
    if verbose {
        let v = serde_json::json!({
            "sandboxID": rec.sandbox_id,
            "pid": rec.init.map(|i| i.pid),
            "imageId": rec.image_id,
            "cgroup": rec.cgroup,
            "stopSignal": rec.stop_signal,
            "runtimeSpec": oci,
            "config": rec.spec,
        });
        info.insert("info".to_owned(), v.to_string());
    }
    cri::ContainerStatusResponse { status: Some(status), info }
}

pub fn container_filter(f: Option<cri::ContainerFilter>) -> ContainerFilter {
    let Some(f) = f else { return ContainerFilter::default() };
    let state = f.state.map(|s| match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    });
    ContainerFilter {
        id: Some(f.id).filter(|s| !s.is_empty()),
        state,
        sandbox_id: Some(f.pod_sandbox_id).filter(|s| !s.is_empty()),
        labels: sorted(f.label_selector),
    }
}
