//! Container helpers shared by the privileged tests: CRI container configs of the busybox
//! test image, create/start/status/exec calls, and cgroup checks.

use std::time::Duration;

use crate::{BUSYBOX, Client, Node, cri, pod_config};

/// A container of the busybox test image running `args`, logging to `<name>.log`.
pub fn ctr(name: &str, args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// A busybox container that sleeps for an hour.
pub fn sleeper(name: &str) -> cri::ContainerConfig {
    ctr(name, &["sleep", "3600"])
}

/// The container's security context, made if absent.
pub fn security(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    config.linux.get_or_insert_default().security_context.get_or_insert_default()
}

/// A pod config whose containers log under the node's `logs/<name>/`.
pub fn logged_pod(node: &Node, name: &str) -> cri::PodSandboxConfig {
    let mut p = pod_config(name);
    p.log_directory = node.dir().join("logs").join(name).to_string_lossy().into_owned();
    p
}

pub async fn create(
    c: &mut Client,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    Ok(c.create_container(req).await?.into_inner().container_id)
}

pub async fn start(c: &mut Client, id: &str) -> Result<(), tonic::Status> {
    c.start_container(cri::StartContainerRequest { container_id: id.into() }).await.map(drop)
}

/// Creates and starts a container; panics on failure.
pub async fn run(
    c: &mut Client,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let id = create(c, pod, pod_config, config).await.unwrap();
    start(c, &id).await.unwrap();
    id
}

/// ContainerStatus (verbose) and its info JSON.
pub async fn status(c: &mut Client, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
    let r = c
        .container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: true })
        .await
        .unwrap()
        .into_inner();
    let info = serde_json::from_str(r.info.get("info").unwrap()).unwrap();
    (r.status.unwrap(), info)
}

/// Polls until the container has exited (10 s at most).
pub async fn wait_exited(c: &mut Client, id: &str) -> cri::ContainerStatus {
    for _ in 0..500 {
        let (s, _) = status(c, id).await;
        if s.state == cri::ContainerState::ContainerExited as i32 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("container {id} did not exit");
}

/// ExecSync with a timeout in seconds.
pub async fn exec(
    c: &mut Client,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    let req = cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    c.exec_sync(req).await.map(|r| r.into_inner())
}

/// Runs `sh -c script` in a container; exit code and stdout + stderr.
pub async fn sh(c: &mut Client, id: &str, script: &str) -> (i32, String) {
    let r = exec(c, id, &["sh", "-c", script], 10).await.unwrap();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

/// The container's init pid (node numbering) from its verbose info.
pub fn pid_of(info: &serde_json::Value) -> u32 {
    info["pid"].as_u64().unwrap() as u32
}

/// No container cgroup of these pods is left in any hierarchy.
pub fn assert_no_cgroups(pods: &[&str]) {
    for pod in pods {
        for base in
            ["/sys/fs/cgroup/memory/podbay", "/sys/fs/cgroup/pids/podbay", "/sys/fs/cgroup/podbay"]
        {
            let p = std::path::Path::new(base).join(pod);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
    }
}

/// ListContainers with `filter`.
pub async fn list(c: &mut Client, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
    let req = cri::ListContainersRequest { filter };
    c.list_containers(req).await.unwrap().into_inner().containers
}

/// ListContainerStats of every running container.
pub async fn list_stats(c: &mut Client) -> Vec<cri::ContainerStats> {
    let req = cri::ListContainerStatsRequest { filter: None };
    c.list_container_stats(req).await.unwrap().into_inner().stats
}
