//! `podbay play FILE.yaml`: Kubernetes Pod manifests (and Deployments/ReplicaSets as that
//! many pods) run on this node through podbay's own CRI calls, with kubelet's semantics:
//! images pulled by imagePullPolicy, init containers run to completion in order, then the
//! app containers, restarted by restartPolicy with a back-off while `podbay play` stays in
//! the foreground. `--detach` returns once everything is started; `--down` removes what
//! the file made.
//!
//! What play makes is labelled `io.podbay.play.workload` (`pod-<name>`,
//! `deployment-<name>`): a second play of the same file finds its ready pods and leaves
//! them, and `--down` removes only pods play made. Each pod has a dir under the state dir
//! (`<namespace>_<name>/`) with its container logs and its emptyDir volumes.

mod convert;
mod manifest;
mod schema;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::cli::{channel, connect, status_msg};
use convert::{Fields, LABEL_NAME, LABEL_NAMESPACE, LABEL_PLAY, VolumePaths};
use manifest::{Container, PodPlan};

type Runtime = RuntimeServiceClient<Channel>;
type Images = ImageServiceClient<Channel>;

/// The default state dir: pod logs and emptyDir volumes.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/podbay-play";
/// A container that restarts waits 1 s, then twice as long each time, up to 5 min; a run
/// of 10 min resets it (kubelet: 10 s to 5 min).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(200);

pub struct Options {
    pub file: PathBuf,
    pub down: bool,
    pub detach: bool,
    pub state_dir: PathBuf,
}

/// Runs (or with `--down` removes) what the file describes; the exit code.
pub async fn run(ep: &Path, opts: &Options) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&opts.file)
        .with_context(|| format!("read {}", opts.file.display()))?;
    let (warnings, plans) = manifest::read(&text);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let plans = plans
        .with_context(|| format!("{}: not something podbay play runs", opts.file.display()))?;
    let mut rt = connect(ep).await?;
    if opts.down {
        down(&mut rt, &plans, &opts.state_dir).await?;
        return Ok(0);
    }
    let mut images = ImageServiceClient::new(channel(ep).await?);
    let existing = play_pods(&mut rt).await?;
    let mut running = Vec::new();
    for plan in &plans {
        let same: Vec<&cri::PodSandbox> = existing.iter().filter(|p| is_pod(p, plan)).collect();
        if same.iter().any(|p| p.state == cri::PodSandboxState::SandboxReady as i32) {
            println!("pod {} already running (podbay play --down removes it)", pod_name(plan));
            continue;
        }
        for old in same {
            remove_pod(&mut rt, &old.id).await?;
        }
        let pod = start_pod(&mut rt, &mut images, plan, &opts.state_dir).await?;
        println!(
            "pod {} {} {}: {}",
            pod_name(plan),
            pod.ip,
            &pod.sandbox[..12.min(pod.sandbox.len())],
            pod.slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        running.push(pod);
    }
    // Replicas a smaller count no longer asks for.
    for old in &existing {
        let workload = old.labels.get(LABEL_PLAY);
        let of_file = plans
            .iter()
            .any(|p| Some(&p.workload) == workload && p.workload != format!("pod-{}", p.meta.name));
        if of_file && !plans.iter().any(|p| is_pod(old, p)) {
            remove_pod(&mut rt, &old.id).await?;
            let meta = old.metadata.clone().unwrap_or_default();
            remove_pod_dir(&opts.state_dir.join(format!("{}_{}", meta.namespace, meta.name)));
            println!("pod {}/{} removed (no longer among the replicas)", meta.namespace, meta.name);
        }
    }
    if opts.detach || running.is_empty() {
        return Ok(0);
    }
    supervise(&mut rt, &mut running).await
}

fn pod_name(plan: &PodPlan) -> String {
    format!("{}/{}", plan.meta.namespace, plan.meta.name)
}

fn is_pod(p: &cri::PodSandbox, plan: &PodPlan) -> bool {
    p.labels.contains_key(LABEL_PLAY)
        && p.labels.get(LABEL_NAME) == Some(&plan.meta.name)
        && p.labels.get(LABEL_NAMESPACE) == Some(&plan.meta.namespace)
}

/// Every pod `podbay play` made on this node.
async fn play_pods(rt: &mut Runtime) -> anyhow::Result<Vec<cri::PodSandbox>> {
    let all = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map_err(status_msg)?
        .into_inner()
        .items;
    Ok(all.into_iter().filter(|p| p.labels.contains_key(LABEL_PLAY)).collect())
}

async fn remove_pod(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    let id = id.to_owned();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .map_err(status_msg)?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .map_err(status_msg)?;
    Ok(())
}

async fn down(rt: &mut Runtime, plans: &[PodPlan], state: &Path) -> anyhow::Result<()> {
    let existing = play_pods(rt).await?;
    for p in &existing {
        let workload = p.labels.get(LABEL_PLAY);
        let named = plans.iter().any(|plan| is_pod(p, plan));
        let replica = plans.iter().any(|plan| {
            Some(&plan.workload) == workload
                && p.labels.get(LABEL_NAMESPACE) == Some(&plan.meta.namespace)
        });
        if named || replica {
            remove_pod(rt, &p.id).await?;
            let meta = p.metadata.clone().unwrap_or_default();
            println!("pod {}/{} removed", meta.namespace, meta.name);
        }
    }
    for plan in plans {
        remove_pod_dir(&state.join(format!("{}_{}", plan.meta.namespace, plan.meta.name)));
    }
    Ok(())
}

/// One app container of a running pod, as the supervisor follows it.
struct Slot {
    name: String,
    index: usize,
    id: String,
    attempt: u32,
    started: Instant,
    /// When the next restart is due, once it exited and the policy restarts it.
    retry_at: Option<Instant>,
    /// Exited for good (its exit code).
    finished: Option<i32>,
    /// Restarts since the back-off was last reset.
    backoff_step: u32,
}

struct RunningPod {
    plan: PodPlan,
    sandbox: String,
    config: cri::PodSandboxConfig,
    ip: String,
    uid: String,
    volumes: VolumePaths,
    slots: Vec<Slot>,
}

fn random_uid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn node_name() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Makes the pod's dir (logs and volumes), runs the sandbox, pulls images, runs the init
/// containers to completion and starts the app containers. On failure the pod and its dir
/// (tmpfs volumes unmounted) are removed.
async fn start_pod(
    rt: &mut Runtime,
    images: &mut Images,
    plan: &PodPlan,
    state: &Path,
) -> anyhow::Result<RunningPod> {
    let dir = state.join(format!("{}_{}", plan.meta.namespace, plan.meta.name));
    remove_pod_dir(&dir);
    let started = start_pod_in(rt, images, plan, &dir).await;
    if started.is_err() {
        remove_pod_dir(&dir);
    }
    started
}

async fn start_pod_in(
    rt: &mut Runtime,
    images: &mut Images,
    plan: &PodPlan,
    dir: &Path,
) -> anyhow::Result<RunningPod> {
    let volumes = make_pod_dir(plan, dir)?;
    let uid = random_uid();
    let config = convert::sandbox_config(plan, &uid, &dir.join("logs"));
    for c in plan.spec.init_containers.iter().chain(&plan.spec.containers) {
        ensure_image(images, c, &config)
            .await
            .with_context(|| format!("pod {}", pod_name(plan)))?;
    }
    let req = cri::RunPodSandboxRequest { config: Some(config.clone()), ..Default::default() };
    let sandbox = rt
        .run_pod_sandbox(req)
        .await
        .map_err(|e| status_msg(e).context(format!("run pod {}", pod_name(plan))))?
        .into_inner()
        .pod_sandbox_id;
    let mut pod = RunningPod {
        plan: plan.clone(),
        sandbox: sandbox.clone(),
        config,
        ip: String::new(),
        uid,
        volumes,
        slots: Vec::new(),
    };
    match start_containers(rt, images, &mut pod).await {
        Ok(()) => Ok(pod),
        Err(e) => {
            let _ = remove_pod(rt, &sandbox).await;
            Err(e)
        }
    }
}

async fn start_containers(
    rt: &mut Runtime,
    images: &mut Images,
    pod: &mut RunningPod,
) -> anyhow::Result<()> {
    let status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.sandbox.clone(),
            verbose: false,
        })
        .await
        .map_err(status_msg)?
        .into_inner();
    pod.ip = status.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
    let policy = pod.plan.spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let inits = pod.plan.spec.init_containers.clone();
    for (i, c) in inits.iter().enumerate() {
        let field = format!("spec.initContainers[{i}]");
        let mut attempt = 0;
        let mut backoff = BACKOFF_FIRST;
        loop {
            let id = create(rt, images, pod, &field, c, attempt).await?;
            start(rt, &id).await?;
            let code = wait_exit(rt, &id).await?;
            if code == 0 {
                break;
            }
            if policy == "Never" {
                bail!(
                    "pod {}: init container {} exited with {code} (restartPolicy Never): the pod failed",
                    pod_name(&pod.plan),
                    c.name
                );
            }
            eprintln!(
                "pod {}: init container {} exited with {code}; again in {} s",
                pod_name(&pod.plan),
                c.name,
                backoff.as_secs()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await;
            attempt += 1;
        }
    }
    let apps = pod.plan.spec.containers.clone();
    for (i, c) in apps.iter().enumerate() {
        let field = format!("spec.containers[{i}]");
        let id = create(rt, images, pod, &field, c, 0).await?;
        start(rt, &id).await?;
        pod.slots.push(Slot {
            name: c.name.clone(),
            index: i,
            id,
            attempt: 0,
            started: Instant::now(),
            retry_at: None,
            finished: None,
            backoff_step: 0,
        });
    }
    Ok(())
}

async fn create(
    rt: &mut Runtime,
    images: &mut Images,
    pod: &RunningPod,
    field: &str,
    c: &Container,
    attempt: u32,
) -> anyhow::Result<String> {
    let node = node_name();
    let fields = Fields { pod_ip: &pod.ip, node_name: &node, uid: &pod.uid };
    let config = convert::container_config(
        &pod.plan,
        field,
        c,
        attempt,
        &fields,
        &pod.volumes,
        convert::memory_capacity(),
    )?;
    check_non_root(images, &pod.plan, c, &config).await?;
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.sandbox.clone(),
        config: Some(config),
        sandbox_config: Some(pod.config.clone()),
    };
    Ok(rt
        .create_container(req)
        .await
        .map_err(|e| {
            status_msg(e).context(format!("pod {}: create {}", pod_name(&pod.plan), c.name))
        })?
        .into_inner()
        .container_id)
}

async fn start(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    rt.start_container(cri::StartContainerRequest { container_id: id.to_owned() })
        .await
        .map_err(|e| status_msg(e).context(format!("start container {id}")))?;
    Ok(())
}

/// The container's exit code, or `None` while it runs.
async fn exit_code(rt: &mut Runtime, id: &str) -> anyhow::Result<Option<i32>> {
    let s = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        })
        .await
        .map_err(status_msg)?
        .into_inner()
        .status
        .context("no container status")?;
    Ok((s.state == cri::ContainerState::ContainerExited as i32).then_some(s.exit_code))
}

async fn wait_exit(rt: &mut Runtime, id: &str) -> anyhow::Result<i32> {
    loop {
        if let Some(code) = exit_code(rt, id).await? {
            return Ok(code);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// kubelet's runAsNonRoot check: the effective user must be a non-zero uid, from the
/// security context or the image (a named user cannot be verified and is refused).
async fn check_non_root(
    images: &mut Images,
    plan: &PodPlan,
    c: &Container,
    config: &cri::ContainerConfig,
) -> anyhow::Result<()> {
    let psc = plan.spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    if csc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
        return Ok(());
    }
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let uid = match sc.and_then(|s| s.run_as_user.as_ref()) {
        Some(u) => Some(u.value),
        None => {
            let image = images
                .image_status(cri::ImageStatusRequest {
                    image: config.image.clone(),
                    verbose: false,
                })
                .await
                .map_err(status_msg)?
                .into_inner()
                .image
                .context("image missing")?;
            match (image.uid, image.username.as_str()) {
                (Some(u), _) => Some(u.value),
                (None, "") => Some(0),
                (None, _) => None,
            }
        }
    };
    match uid {
        Some(0) => bail!(
            "pod {}: container {} has runAsNonRoot and would run as root",
            pod_name(plan),
            c.name
        ),
        Some(_) => Ok(()),
        None => bail!(
            "pod {}: container {} has runAsNonRoot and its image's user is a name that cannot be verified",
            pod_name(plan),
            c.name
        ),
    }
}

/// Pulls as imagePullPolicy says: Always, IfNotPresent, Never; unset is Always for
/// `:latest` (or no tag) and IfNotPresent otherwise.
async fn ensure_image(
    images: &mut Images,
    c: &Container,
    sandbox: &cri::PodSandboxConfig,
) -> anyhow::Result<()> {
    let tag_latest = {
        let last = c.image.rsplit('/').next().unwrap_or_default();
        !c.image.contains('@') && last.rsplit_once(':').is_none_or(|(_, t)| t == "latest")
    };
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| if tag_latest { "Always" } else { "IfNotPresent" }.into());
    let spec = cri::ImageSpec { image: c.image.clone(), ..Default::default() };
    let present = images
        .image_status(cri::ImageStatusRequest { image: Some(spec.clone()), verbose: false })
        .await
        .map_err(status_msg)?
        .into_inner()
        .image
        .is_some();
    let pull = match policy.as_str() {
        "Always" => true,
        "IfNotPresent" => !present,
        "Never" if present => false,
        "Never" => bail!("image {} is not present and imagePullPolicy is Never", c.image),
        other => {
            bail!("container {}: imagePullPolicy {other:?} (Always, IfNotPresent, Never)", c.name)
        }
    };
    if pull {
        let req = cri::PullImageRequest {
            image: Some(spec),
            auth: None,
            sandbox_config: Some(sandbox.clone()),
        };
        images.pull_image(req).await.map_err(|e| {
            status_msg(e).context(format!("pull {} (imagePullPolicy {policy})", c.image))
        })?;
    }
    Ok(())
}

/// The pod's dir: `logs/` and one dir per emptyDir (a tmpfs for medium Memory); hostPath
/// volumes checked (or made) by their type.
fn make_pod_dir(plan: &PodPlan, dir: &Path) -> anyhow::Result<VolumePaths> {
    let mk = |p: &Path, mode: u32| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(p)
            .with_context(|| format!("create {}", p.display()))
    };
    mk(&dir.join("logs"), 0o700)?;
    let mut paths = VolumePaths::new();
    for (i, v) in plan.spec.volumes.iter().enumerate() {
        let at = format!("pod {}: spec.volumes[{i}]", pod_name(plan));
        if let Some(e) = &v.empty_dir {
            let path = dir.join("volumes").join(&v.name);
            mk(&path, 0o777)?;
            // Like kubelet's: writable by whatever user the containers run as.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
            match e.medium.as_str() {
                "" => {}
                "Memory" => {
                    let size = e.size_limit.as_ref().and_then(manifest::Quantity::bytes);
                    let data =
                        size.map(|s| format!("size={s},mode=0777")).unwrap_or("mode=0777".into());
                    nix::mount::mount(
                        Some("tmpfs"),
                        &path,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                        Some(data.as_str()),
                    )
                    .with_context(|| format!("{at}: mount a tmpfs on {}", path.display()))?;
                }
                other => bail!("{at}.emptyDir.medium {other:?} (\"\" or Memory)"),
            }
            paths.insert(v.name.clone(), path);
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if !path.is_absolute() {
                bail!("{at}.hostPath.path must be absolute");
            }
            let meta = std::fs::metadata(&path);
            let want = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("{at}.hostPath: {} is not {what}", path.display()))
                }
            };
            match h.kind.as_str() {
                "" => {}
                "DirectoryOrCreate" if meta.is_err() => mk(&path, 0o755)?,
                "DirectoryOrCreate" | "Directory" => {
                    want(meta.as_ref().is_ok_and(|m| m.is_dir()), "a directory")?
                }
                "FileOrCreate" if meta.is_err() => {
                    std::fs::OpenOptions::new()
                        .create_new(true)
                        .write(true)
                        .mode(0o644)
                        .custom_flags(libc_nofollow())
                        .open(&path)
                        .with_context(|| format!("{at}: create {}", path.display()))?;
                }
                "FileOrCreate" | "File" => {
                    want(meta.as_ref().is_ok_and(|m| m.is_file()), "a file")?
                }
                "Socket" => {
                    want(meta.as_ref().is_ok_and(|m| m.file_type().is_socket()), "a socket")?
                }
                "CharDevice" => want(
                    meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()),
                    "a character device",
                )?,
                "BlockDevice" => want(
                    meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()),
                    "a block device",
                )?,
                other => bail!("{at}.hostPath.type {other:?} is not a hostPath type"),
            }
            paths.insert(v.name.clone(), path);
        }
    }
    Ok(paths)
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Removes a pod's dir: its tmpfs volumes unmounted first.
fn remove_pod_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir.join("volumes")) {
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Follows the app containers: restarts what the policy restarts (with the back-off) until
/// Ctrl-C (then the pods are stopped) or until every container has exited for good.
async fn supervise(rt: &mut Runtime, pods: &mut [RunningPod]) -> anyhow::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    println!("following the containers; Ctrl-C stops the pods");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        let mut left = 0;
        let mut worst: i32 = 0;
        for pod in pods.iter_mut() {
            let policy = pod.plan.spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
            for i in 0..pod.slots.len() {
                if let Some(code) = pod.slots[i].finished {
                    worst = worst.max(code.unsigned_abs().min(255) as i32);
                    continue;
                }
                left += 1;
                let slot = &pod.slots[i];
                if let Some(at) = slot.retry_at {
                    if Instant::now() >= at {
                        restart(rt, pod, i).await?;
                    }
                    continue;
                }
                let Some(code) = exit_code(rt, &slot.id).await? else { continue };
                let again = match policy.as_str() {
                    "Always" => true,
                    "OnFailure" => code != 0,
                    _ => false,
                };
                let slot = &mut pod.slots[i];
                if !again {
                    println!(
                        "pod {}: container {} exited with {code}",
                        pod_name(&pod.plan),
                        slot.name
                    );
                    slot.finished = Some(code);
                    continue;
                }
                if slot.started.elapsed() >= BACKOFF_RESET {
                    slot.backoff_step = 0;
                }
                let backoff = BACKOFF_FIRST
                    .checked_mul(1 << slot.backoff_step.min(12))
                    .unwrap_or(BACKOFF_MAX)
                    .min(BACKOFF_MAX);
                println!(
                    "pod {}: container {} exited with {code}; restarting in {} s",
                    pod_name(&pod.plan),
                    slot.name,
                    backoff.as_secs()
                );
                slot.retry_at = Some(Instant::now() + backoff);
            }
        }
        if left == 0 {
            println!("every container has exited; podbay play --down removes the pods");
            return Ok(if worst == 0 { 0 } else { 1 });
        }
    }
    for pod in pods.iter() {
        let req = cri::StopPodSandboxRequest { pod_sandbox_id: pod.sandbox.clone() };
        rt.stop_pod_sandbox(req).await.map_err(status_msg)?;
        println!("pod {} stopped", pod_name(&pod.plan));
    }
    println!("podbay play --down removes them");
    Ok(0)
}

/// A new attempt of the slot's container; the exited one is removed once it runs.
async fn restart(rt: &mut Runtime, pod: &mut RunningPod, i: usize) -> anyhow::Result<()> {
    let c = pod.plan.spec.containers[pod.slots[i].index].clone();
    let field = format!("spec.containers[{}]", pod.slots[i].index);
    let attempt = pod.slots[i].attempt + 1;
    // Images were pulled when the pod started; a restart does not pull again.
    let node = node_name();
    let fields = Fields { pod_ip: &pod.ip, node_name: &node, uid: &pod.uid };
    let config = convert::container_config(
        &pod.plan,
        &field,
        &c,
        attempt,
        &fields,
        &pod.volumes,
        convert::memory_capacity(),
    )?;
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.sandbox.clone(),
        config: Some(config),
        sandbox_config: Some(pod.config.clone()),
    };
    let id = rt.create_container(req).await.map_err(status_msg)?.into_inner().container_id;
    start(rt, &id).await?;
    let old = std::mem::replace(&mut pod.slots[i].id, id);
    let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: old }).await;
    let slot = &mut pod.slots[i];
    slot.attempt = attempt;
    slot.backoff_step += 1;
    slot.started = Instant::now();
    slot.retry_at = None;
    Ok(())
}
