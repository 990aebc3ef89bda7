//! CreateContainer: reserve the name in the pod, mount the image's rootfs, build the OCI
//! spec, and have the pod's supervisor create the container with libcontainer (process
//! waiting for StartContainer, cgroup, namespaces joined). Each step registers its undo;
//! a failure leaves no rootfs, cgroup, process or record behind.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use podbay_proto::shim::v1::{CreateContainerRequest, request, response};
use tracing::{Instrument, debug, info_span};

use super::spec::{self, ImageConfig, Inputs, NodeFacts, PodFiles, UserDb};
use super::{Container, ContainerRecord, ContainerSpec, ContainerState, Error, PidMode};
use super::{SeccompProfile, name_key};
use crate::Runtime;
use crate::ids::ContainerId;
use crate::layout::PodLayout;
use crate::sandbox::SandboxRecord;
use crate::steps::StepTimer;
use crate::supervisor::{self, Identity};

/// How long the supervisor may take to create a container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The cgroup parent of pods that kubelet gives none.
pub const DEFAULT_CGROUP_PARENT: &str = "/podbay";

impl Runtime {
    /// Creates a container in a ready sandbox and returns its id.
    pub async fn create_container(
        &self,
        sandbox: &str,
        spec: ContainerSpec,
    ) -> Result<ContainerId, Error> {
        let sandbox = match self.resolve(sandbox) {
            Ok(s) => s.snapshot(),
            Err(crate::sandbox::Error::Ambiguous { prefix }) => {
                return Err(Error::invalid("pod_sandbox_id", format!("{prefix:?} is ambiguous")));
            }
            Err(_) => return Err(Error::SandboxNotFound { id: sandbox.into() }),
        };
        let runtime = self.clone();
        tokio::spawn(async move {
            let key = name_key(&sandbox.id, &spec.metadata);
            let _reserved = runtime.reserve_name(&key, &spec)?;
            let id = ContainerId::generate();
            let span = info_span!("create_container", container.id = %id, sandbox.id = %sandbox.id);
            let mut undo = Vec::new();
            match runtime.create_steps(&id, &sandbox, &spec, &mut undo).instrument(span).await {
                Ok(rec) => {
                    let c = Arc::new(Container::new(rec));
                    runtime
                        .inner
                        .containers
                        .write()
                        .expect("containers lock")
                        .insert(id.clone(), c);
                    Ok(id)
                }
                Err(cause) => {
                    let mut cleanup = Vec::new();
                    for step in undo.into_iter().rev() {
                        if let Err(e) = runtime.undo_create(step).await {
                            cleanup.push(e.to_string());
                        }
                    }
                    if cleanup.is_empty() {
                        Err(cause)
                    } else {
                        Err(Error::Undo { cause: Box::new(cause), cleanup })
                    }
                }
            }
        })
        .await
        .expect("CreateContainer task panicked")
    }

    /// Holds the container's name in its pod while it is created; refuses a name taken.
    fn reserve_name(&self, key: &str, spec: &ContainerSpec) -> Result<NameGuard, Error> {
        let existing =
            self.inner.containers.read().expect("containers lock").values().find_map(|c| {
                let r = c.record.lock().expect("container record lock");
                (r.name_key() == key).then(|| r.id.clone())
            });
        let mut names = self.inner.creating.lock().expect("creating lock");
        if let Some(id) = existing {
            return Err(Error::NameTaken {
                name: spec.metadata.name.clone(),
                attempt: spec.metadata.attempt,
                id,
            });
        }
        if !names.insert(key.to_owned()) {
            return Err(Error::NameBusy { name: spec.metadata.name.clone() });
        }
        Ok(NameGuard { runtime: self.clone(), key: key.to_owned() })
    }

    async fn create_steps(
        &self,
        id: &ContainerId,
        sandbox: &SandboxRecord,
        spec: &ContainerSpec,
        undo: &mut Vec<Undo>,
    ) -> Result<ContainerRecord, Error> {
        if !sandbox.state.is_ready() {
            return Err(Error::SandboxNotReady { id: sandbox.id.clone() });
        }
        let mut timer = StepTimer::new();
        let Some((image, name)) = self.find_image(&spec.image).await? else {
            return Err(Error::ImageNotFound { image: spec.image.clone() });
        };
        undo.push(Undo::Rootfs(id.clone()));
        let rootfs = self.mount_rootfs(id.as_str(), &image.id).await?;
        timer.done("rootfs");
        let config = ImageConfig::parse(&self.image_config(&image).await?)
            .map_err(|e| Error::invalid("image config", e))?;
        let users = UserDb {
            passwd: read_in_root(&rootfs, "etc/passwd").unwrap_or_default(),
            group: read_in_root(&rootfs, "etc/group").unwrap_or_default(),
        };
        let user = spec::resolve_user(spec, &config.user, &users)?;
        let seccomp_profile = match &spec.security.seccomp {
            SeccompProfile::Localhost(path) => Some(read_profile(path)?),
            _ => None,
        };
        let target_pid_ns = match &spec.security.pid_mode {
            PidMode::Target(target) => Some(self.target_pid_ns(target)?),
            _ => None,
        };
        let pod = PodLayout::from_dir(&sandbox.pod_dir);
        let node = node_facts(&self.inner.node_facts);
        ensure_pod_cgroup(&pod_cgroup(sandbox), node)?;
        let cgroup = format!("{}/{}", pod_cgroup(sandbox), id);
        let oci = spec::build(&Inputs {
            id,
            spec,
            sandbox,
            image: &config,
            user: &user,
            rootfs: &rootfs,
            cgroup: &cgroup,
            node,
            target_pid_ns,
            seccomp_profile,
            pod_files: PodFiles {
                hostname: pod.hostname(),
                hosts: pod.hosts(),
                resolv_conf: pod.resolv_conf(),
                shm: sandbox.shm.clone(),
            },
        })?;
        let dirs = self.inner.layout.container(id.as_str());
        oci.save(dirs.config()).map_err(|e| Error::invalid("OCI spec", e))?;
        let log_path = match (&sandbox.spec.log_directory, spec.log_path.is_empty()) {
            (Some(dir), false) => dir.join(&spec.log_path),
            _ => PathBuf::new(),
        };
        std::fs::create_dir_all(pod.containers())
            .map_err(Error::io("create", &pod.containers()))?;
        timer.done("spec");
        undo.push(Undo::Runtime { pod: pod.clone(), id: id.clone(), cgroup: cgroup.clone() });
        let req = request::Kind::CreateContainer(CreateContainerRequest {
            id: id.to_string(),
            bundle: dirs.bundle().to_string_lossy().into_owned(),
            state_root: pod.containers().to_string_lossy().into_owned(),
            log_path: log_path.to_string_lossy().into_owned(),
            tty: spec.tty,
            stdin: spec.stdin,
        });
        let init = match supervisor::call_within(&pod, req, CREATE_TIMEOUT).await {
            Ok(response::Kind::CreateContainer(r)) => Identity::from_proto(r.init),
            Ok(_) => None,
            Err(supervisor::Error::Refused(message)) => {
                return Err(Error::Supervisor { id: id.clone(), message });
            }
            Err(e) => return Err(e.into()),
        };
        timer.done("libcontainer");
        let image_ref = image.repo_digests.first().cloned().unwrap_or_else(|| image.id.clone());
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            spec: ContainerSpec {
                image: name.unwrap_or_else(|| spec.image.clone()),
                ..spec.clone()
            },
            image_id: image.id.clone(),
            image_ref,
            state: ContainerState::Created,
            created_at: crate::now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: None,
            message: String::new(),
            init,
            log_path,
            cgroup,
            stop_signal: stop_signal(&config.stop_signal),
        };
        self.persist_container(&rec).await?;
        timer.done("persist");
        debug!(pid = init.map(|i| i.pid), steps = %timer.summary(), "container created");
        Ok(rec)
    }

    async fn undo_create(&self, step: Undo) -> Result<(), Error> {
        match step {
            Undo::Rootfs(id) => self.unmount_rootfs(id.as_str()).await.map_err(Error::from),
            Undo::Runtime { pod, id, cgroup } => {
                destroy_runtime_state(&pod, &id, &cgroup, None).await
            }
        }
    }

    pub(crate) async fn persist_container(&self, rec: &ContainerRecord) -> Result<(), Error> {
        let rec = rec.clone();
        self.blocking(move |rt| rt.inner.store.put_container(&rec)).await.map_err(Error::from)
    }

    fn target_pid_ns(&self, target: &ContainerId) -> Result<PathBuf, Error> {
        let field = "linux.security_context.namespace_options.target_id";
        let rec = self
            .inner
            .containers
            .read()
            .expect("containers lock")
            .get(target)
            .map(|c| c.snapshot())
            .ok_or_else(|| Error::invalid(field, format!("no container {target}")))?;
        match (rec.state, rec.init) {
            (ContainerState::Running, Some(init)) => {
                Ok(PathBuf::from(format!("/proc/{}/ns/pid", init.pid)))
            }
            _ => Err(Error::invalid(field, format!("container {target} is not running"))),
        }
    }
}

/// Undo steps of a CreateContainer in progress.
enum Undo {
    Rootfs(ContainerId),
    Runtime { pod: PodLayout, id: ContainerId, cgroup: String },
}

struct NameGuard {
    runtime: Runtime,
    key: String,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        self.runtime.inner.creating.lock().expect("creating lock").remove(&self.key);
    }
}

/// The pod's cgroup: kubelet's cgroup_parent, or podbay's default parent + sandbox id.
pub fn pod_cgroup(sandbox: &SandboxRecord) -> String {
    match sandbox.spec.cgroup_parent.as_deref() {
        Some(p) if !p.is_empty() => p.trim_end_matches('/').to_owned(),
        _ => format!("{DEFAULT_CGROUP_PARENT}/{}", sandbox.id),
    }
}

/// Removes what libcontainer made for a container: its processes (SIGKILL), its cgroup
/// and its state dir; then the supervisor forgets it. Idempotent.
pub(crate) async fn destroy_runtime_state(
    pod: &PodLayout,
    id: &ContainerId,
    cgroup: &str,
    init: Option<Identity>,
) -> Result<(), Error> {
    if let Some(proc) = init.and_then(supervisor::Proc::open) {
        let _ = proc.signal(rustix::process::Signal::KILL);
        proc.wait_exit(Duration::from_secs(5)).await;
    }
    // libcontainer's state is a directory of files (its delete would only add another
    // cgroup manager, which re-reads mountinfo per controller).
    let state = pod.containers().join(id.as_str());
    let cgroup2 = cgroup.to_owned();
    tokio::task::spawn_blocking(move || {
        remove_cgroup(&cgroup2)
            .map_err(|reason| Error::Cgroup { cgroup: cgroup2.clone(), reason })?;
        match std::fs::remove_dir_all(&state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { what: "remove", path: state, source: e })
            }
            _ => Ok(()),
        }
    })
    .await
    .expect("container cleanup task panicked")?;
    let req = request::Kind::ForgetContainer(podbay_proto::shim::v1::ForgetContainerRequest {
        id: id.to_string(),
    });
    let _ = supervisor::call(pod, req).await;
    Ok(())
}

/// Held while the pod cgroups are made and while podbay's default parent is removed: a
/// RemovePodSandbox dropping the parent once it is empty must not race a new pod's mkdir
/// below it (which would then fail with ENOENT).
pub(crate) static CGROUP_PARENT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Makes the pod's cgroup in each hierarchy libcontainer will place the container in,
/// before libcontainer makes the container's below it.
fn ensure_pod_cgroup(pod: &str, node: &NodeFacts) -> Result<(), Error> {
    let rel = pod.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let dirs: Vec<PathBuf> = if node.cgroup_v1_hierarchies.is_empty() {
        vec![root.join(rel)]
    } else {
        node.cgroup_v1_hierarchies
            .iter()
            .filter(|h| spec::V1_CONTROLLERS.contains(&h.as_str()))
            .map(|h| root.join(h).join(rel))
            .collect()
    };
    let _parent = CGROUP_PARENT_LOCK.lock().expect("cgroup parent lock");
    for dir in dirs {
        // Tried again when something outside podbay dropped an empty parent meanwhile.
        let mut made = std::fs::create_dir_all(&dir);
        for _ in 0..2 {
            if !matches!(&made, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                break;
            }
            made = std::fs::create_dir_all(&dir);
        }
        made.map_err(|e| Error::Cgroup {
            cgroup: pod.to_owned(),
            reason: format!("create {}: {e}", dir.display()),
        })?;
    }
    Ok(())
}

/// A cgroup's directory in every hierarchy mounted under `/sys/fs/cgroup` (each v1
/// hierarchy, or the unified one), whether it exists or not.
pub(crate) fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path());
    hierarchies.chain([root.to_path_buf()]).map(|h| h.join(rel)).collect()
}

/// Removes a cgroup in every hierarchy; gone counts as done. Processes still in it (PID
/// mode POD or NODE can leave a container's other processes behind when its init dies)
/// are killed first. Plain rmdir: a cgroup manager would re-read mountinfo per controller.
pub(crate) fn remove_cgroup(cgroup: &str) -> Result<(), String> {
    for dir in cgroup_dirs(cgroup) {
        let mut tries = 0;
        loop {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                    tries += 1;
                    kill_procs(&dir);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("remove {}: {e}", dir.display())),
            }
        }
    }
    Ok(())
}

/// Removes a cgroup and every cgroup below it, deepest first, in every hierarchy (for
/// cleaning up after a whole node, such as a lab node, is gone).
pub fn remove_cgroup_tree(cgroup: &str) -> Result<(), String> {
    fn children(rel: &str, out: &mut Vec<String>) {
        let mut seen = std::collections::BTreeSet::new();
        for dir in cgroup_dirs(rel) {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    seen.insert(format!("{rel}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        for child in seen {
            children(&child, out);
            out.push(child);
        }
    }
    let rel = cgroup.trim_matches('/').to_owned();
    let mut all = Vec::new();
    children(&rel, &mut all);
    all.push(rel);
    all.iter().try_for_each(|c| remove_cgroup(c))
}

/// SIGKILL to every process of a cgroup directory.
fn kill_procs(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// Reads a small file of the image through its rootfs, never following a link out of it.
fn read_in_root(root: &Path, path: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir =
        rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(fd).take(1 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

fn read_profile(path: &Path) -> Result<serde_json::Value, Error> {
    let field = "linux.security_context.seccomp.localhost_ref";
    let data = std::fs::read(path)
        .map_err(|e| Error::invalid(field, format!("read {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_slice(&data)
        .map_err(|e| Error::invalid(field, format!("{}: {e}", path.display())))?;
    serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone())
        .map_err(|e| Error::invalid(field, format!("{}: {e}", path.display())))?;
    Ok(v)
}

/// The image's STOPSIGNAL as a number (SIGTERM when unset or unknown).
pub fn stop_signal(s: &str) -> i32 {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return n;
    }
    let name = if s.starts_with("SIG") { s.to_owned() } else { format!("SIG{s}") };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).unwrap_or(libc::SIGTERM)
}

/// Facts about the node, read once.
pub(crate) fn node_facts(cell: &OnceLock<NodeFacts>) -> &NodeFacts {
    cell.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .unwrap_or(0);
        let capabilities = spec::ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, _)| eff & (1 << bit) != 0)
            .map(|(_, c)| c.to_string())
            .collect();
        let own_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let cgroup_v1_hierarchies = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            Vec::new()
        } else {
            let mut h: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            h.sort();
            h
        };
        let mut host_devices = Vec::new();
        walk_devices(Path::new("/dev"), &mut host_devices);
        let v2 = cgroup_v1_hierarchies.is_empty();
        let hugetlb = hugetlb_available(v2);
        NodeFacts { capabilities, own_oom_score_adj, cgroup_v1_hierarchies, host_devices, hugetlb }
    })
}

/// Whether containers can get hugepage limits: on cgroup v2 the root lists the hugetlb
/// controller; on v1 a cgroup hierarchy is mounted with it (libcgroups looks for it in
/// the mount table the same way).
fn hugetlb_available(v2: bool) -> bool {
    if v2 {
        let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers");
        return controllers.is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo.lines().any(|line| {
        // `… - <fstype> <source> <super options>`
        let Some((_, tail)) = line.split_once(" - ") else { return false };
        let mut f = tail.split_whitespace();
        f.next() == Some("cgroup") && f.nth(1).is_some_and(|o| o.split(',').any(|o| o == "hugetlb"))
    })
}

fn walk_devices(dir: &Path, out: &mut Vec<(PathBuf, char, i64, i64)>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let t = meta.file_type();
        if t.is_dir() {
            let skip = ["pts", "shm", "mqueue", "fd"];
            if !skip.iter().any(|s| e.file_name() == *s) {
                walk_devices(&path, out);
            }
            continue;
        }
        let kind = if t.is_char_device() {
            'c'
        } else if t.is_block_device() {
            'b'
        } else {
            continue;
        };
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
        out.push((path, kind, major, minor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse() {
        assert_eq!(stop_signal(""), libc::SIGTERM);
        assert_eq!(stop_signal("SIGQUIT"), libc::SIGQUIT);
        assert_eq!(stop_signal("INT"), libc::SIGINT);
        assert_eq!(stop_signal("9"), 9);
    }

    #[test]
    fn pod_cgroup_uses_the_parent_or_the_default() {
        let mut s = crate::sandbox::tests::record("p");
        assert_eq!(pod_cgroup(&s), format!("/podbay/{}", s.id));
        s.spec.cgroup_parent = Some("/kubepods/burstable/pod1/".into());
        assert_eq!(pod_cgroup(&s), "/kubepods/burstable/pod1");
    }
}
