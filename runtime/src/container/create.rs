//! CreateContainer: reserve the name in the pod, mount the image's rootfs, build the OCI
//! spec, and have the pod's supervisor create the container with libcontainer (process
//! waiting for StartContainer, cgroup, namespaces joined). Each step registers its undo;
//! a failure leaves no rootfs, cgroup, process or record behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podbay_proto::supervisor::v1::CreateContainerRequest;
use tracing::{Instrument, debug, info_span, warn};

use super::spec::{self, ImageConfig, Inputs, PodFiles, User, UserDb};
use super::{
    ContainerRecord, ContainerSpec, ContainerState, Containers, Error, EventKind, PidMode,
    SeccompProfile, name_key, records,
};
use crate::cgroups;
use crate::ids::{ContainerId, SandboxId};
use crate::image::ImageRecord;
use crate::image::rootfs::{RootfsUserns, detach_idmapped};
use crate::layout::{ContainerLayout, NsKind, PodLayout};
use crate::sandbox::{SandboxRecord, UsernsSpec};
use crate::steps::StepTimer;
use crate::supervisor::{self, Client, Identity};
use crate::undo::Undo;

/// How long the supervisor may take to create a container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How to undo a step of a CreateContainer in progress.
enum UndoStep {
    Rootfs(ContainerId),
    /// What libcontainer made: processes, cgroup, state dir.
    Runtime {
        pod: PodLayout,
        id: ContainerId,
        cgroup: String,
    },
    /// The committed record.
    Record(Box<ContainerRecord>),
}

/// The image a container runs, as found for it.
struct Image {
    record: ImageRecord,
    /// The name the request used, normalised (`busybox` → `docker.io/library/busybox:latest`).
    name: Option<String>,
    config: ImageConfig,
    rootfs: PathBuf,
}

impl Containers {
    /// Creates a container in a ready sandbox and returns its id.
    pub async fn create(
        &self,
        sandbox: SandboxRecord,
        spec: ContainerSpec,
    ) -> Result<ContainerId, Error> {
        let containers = self.clone();
        let arrived = Instant::now();
        tokio::spawn(async move {
            let key = name_key(&sandbox.id, &spec.metadata);
            let _reserved = containers.reserve_name(&key, &sandbox.id, &spec)?;
            let id = ContainerId::generate();
            let span = info_span!("create_container", container.id = %id, sandbox.id = %sandbox.id);
            let mut undo = Undo::default();
            match containers
                .create_steps(&id, &sandbox, &spec, &mut undo, arrived)
                .instrument(span)
                .await
            {
                Ok(rec) => {
                    let c = Arc::new(containers.container(rec));
                    containers
                        .inner
                        .map
                        .write()
                        .expect("containers lock")
                        .insert(id.clone(), c.clone());
                    c.emit(EventKind::Created, &c.snapshot());
                    Ok(id)
                }
                Err(cause) => Err(undo.unwind(cause, |step| containers.undo(step)).await),
            }
        })
        .await
        .expect("CreateContainer task panicked")
    }

    /// Holds the container's name in its pod while it is created; refuses a name taken.
    fn reserve_name(
        &self,
        key: &str,
        sandbox: &SandboxId,
        spec: &ContainerSpec,
    ) -> Result<NameGuard, Error> {
        // Fields compared, nothing formatted: every create looks at every container.
        let (name, attempt) = (&spec.metadata.name, spec.metadata.attempt);
        let existing = self.inner.map.read().expect("containers lock").values().find_map(|c| {
            let r = c.record.lock().expect("container record lock");
            let same = r.sandbox_id == *sandbox
                && r.spec.metadata.name == *name
                && r.spec.metadata.attempt == attempt;
            same.then(|| r.id.clone())
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
        Ok(NameGuard { containers: self.clone(), key: key.to_owned() })
    }

    async fn create_steps(
        &self,
        id: &ContainerId,
        sandbox: &SandboxRecord,
        spec: &ContainerSpec,
        undo: &mut Undo<UndoStep>,
        arrived: Instant,
    ) -> Result<ContainerRecord, Error> {
        if !sandbox.state.is_ready() {
            return Err(Error::SandboxNotReady { id: sandbox.id.clone() });
        }
        let fp = &self.inner.failpoints;
        // The first step is the wait for the task and the name's reservation.
        let mut timer = StepTimer::since("create_container", arrived);
        timer.done("queue");
        let pod_userns = sandbox.spec.namespaces.user.as_ref();
        check_userns(spec, pod_userns)?;
        let userns = match (pod_userns, sandbox.namespaces.get(&NsKind::User)) {
            (Some(maps), Some(ns)) => Some(RootfsUserns {
                ns: ns.clone(),
                root_uid: maps.host_uid(0).unwrap_or(u32::MAX),
                root_gid: maps.host_gid(0).unwrap_or(u32::MAX),
            }),
            _ => None,
        };
        let pod_cgroup =
            cgroups::pod_cgroup(sandbox.spec.cgroup_parent.as_deref(), sandbox.id.as_str());
        // The pod's cgroup (made by its first container: a mkdir per hierarchy) while the
        // rootfs is mounted. A container the supervisor launches joins its cgroup without
        // the kernel's global migration lock; for one libcontainer makes, a migration is
        // started now, so that libcontainer's own goes through at once.
        let by_libcontainer = !self.inner.node.supervisor_launches(pod_userns.is_some());
        let pod_cgroup_made = tokio::task::spawn_blocking({
            let (pod_cgroup, hierarchies) =
                (pod_cgroup.clone(), self.inner.node.cgroup_v1_hierarchies.clone());
            move || {
                let t = std::time::Instant::now();
                cgroups::ensure_pod(&pod_cgroup, &hierarchies)?;
                if by_libcontainer {
                    cgroups::prime_migration(&hierarchies);
                }
                Ok::<_, cgroups::Error>(t.elapsed())
            }
        });
        let image = match fp.check("container.create.rootfs") {
            Ok(()) => self.image_rootfs(id, &spec.image, userns.clone(), undo).await,
            Err(e) => Err(e.into()),
        };
        let pod_cgroup_made = pod_cgroup_made.await.expect("pod cgroup task panicked");
        let image = image?;
        timer.alongside("cgroup", pod_cgroup_made?);
        timer.done("rootfs");

        let pod = self.inner.layout.pod(&sandbox.id);
        fp.check("container.create.spec")?;
        let cgroup = format!("{pod_cgroup}/{id}");
        let dirs = self.inner.layout.container(id.as_str());
        let idmapped = match &userns {
            Some(u) => idmap_mounts(&dirs, spec, &u.ns)?,
            None => BTreeMap::new(),
        };
        let user = self.write_spec(id, sandbox, spec, &image, &cgroup, idmapped)?;
        let oom_score_adj = self.applied_oom_score_adj(sandbox, spec);
        let log_path = match (&sandbox.spec.log_directory, spec.log_path.is_empty()) {
            (Some(dir), false) => dir.join(&spec.log_path),
            _ => PathBuf::new(),
        };
        std::fs::create_dir_all(pod.containers())
            .map_err(Error::io("create", &pod.containers()))?;
        timer.done("spec");

        undo.push(UndoStep::Runtime { pod: pod.clone(), id: id.clone(), cgroup: cgroup.clone() });
        let req = CreateContainerRequest {
            id: id.to_string(),
            bundle: dirs.bundle().to_string_lossy().into_owned(),
            state_root: pod.containers().to_string_lossy().into_owned(),
            log_path: if log_path.as_os_str().is_empty() {
                String::new()
            } else {
                spec.log_path.clone()
            },
            log_directory: sandbox
                .spec
                .log_directory
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tty: spec.tty,
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
            narrow: self.narrow_views(&sandbox.id, id.as_str(), spec.has_bidirectional_mount()),
        };
        let mut rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            spec: ContainerSpec {
                // kubelet names the image by id; the status shows a tag, as containerd's.
                image: image
                    .name
                    .or_else(|| image.record.repo_tags.first().cloned())
                    .unwrap_or_else(|| spec.image.clone()),
                ..spec.clone()
            },
            image_ref: image
                .record
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.record.id.clone()),
            image_id: image.record.id,
            state: ContainerState::Created,
            created_at: crate::clock::now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: None,
            message: String::new(),
            // Known when libcontainer is done; recovery asks the supervisor for it
            // (`exits.rs`), so the record is committed while libcontainer works.
            init: None,
            log_path,
            cgroup,
            stop_signal: stop_signal(&image.config.stop_signal),
            user: Some(user),
            oom_score_adj: Some(oom_score_adj),
        };
        // Both run to the end (a commit left running could land after its undo).
        let supervisor = Client::new(&pod);
        let mut stored = false;
        let (created, committed) = tokio::join!(
            async {
                fp.check("container.create.libcontainer")?;
                supervisor
                    .create_container(req, CREATE_TIMEOUT)
                    .await
                    .map_err(Error::supervisor(id))
            },
            async {
                fp.check("container.create.commit")?;
                let t = std::time::Instant::now();
                self.persist(&rec).await?;
                stored = true;
                fp.check("container.create.committed")?;
                Ok::<_, Error>(t.elapsed())
            }
        );
        // Only a stored record is deleted again: a delete is a write too, and one that
        // succeeds would report a failing database as healthy again.
        if stored {
            undo.push(UndoStep::Record(Box::new(rec.clone())));
        }
        if userns.is_some() {
            // The container's mount namespace holds its own copies now.
            detach_idmapped(&dirs);
        }
        let init = created?;
        rec.init = Some(init);
        timer.alongside("commit", committed?);
        timer.done("libcontainer");
        fp.check("container.create.reply")?;
        timer.observe(&self.inner.steps);
        debug!(pid = init.pid, steps = %timer.summary(), "container created");
        Ok(rec)
    }

    /// Finds the container's image and mounts its rootfs.
    async fn image_rootfs(
        &self,
        id: &ContainerId,
        image: &str,
        userns: Option<RootfsUserns>,
        undo: &mut Undo<UndoStep>,
    ) -> Result<Image, Error> {
        let mounted = self.inner.images.mount_image(id.as_str(), image, userns).await?;
        let Some(m) = mounted else {
            return Err(Error::ImageNotFound { image: image.to_owned() });
        };
        undo.push(UndoStep::Rootfs(id.clone()));
        let config =
            ImageConfig::parse(&m.config).map_err(|e| Error::invalid("image config", e))?;
        Ok(Image { record: m.record, name: m.name, config, rootfs: m.rootfs })
    }

    /// Builds the OCI spec and writes it as the bundle's config.json.
    fn write_spec(
        &self,
        id: &ContainerId,
        sandbox: &SandboxRecord,
        spec: &ContainerSpec,
        image: &Image,
        cgroup: &str,
        idmapped_mounts: BTreeMap<usize, PathBuf>,
    ) -> Result<User, Error> {
        let pod = self.inner.layout.pod(&sandbox.id);
        // A destination the request names may be a symlink of the image's into /proc.
        for (n, m) in spec.mounts.iter().enumerate() {
            let field = format!("mounts[{n}].container_path");
            let real = spec::resolve_in_root(&image.rootfs, &m.container_path)
                .ok_or_else(|| Error::invalid(&field, "too many symlinks in the image"))?;
            spec::check_mount_destination(&real).map_err(|reason| {
                Error::invalid(&field, format!("{reason} (through the image's symlinks)"))
            })?;
        }
        check_propagation(spec)?;
        let users = UserDb {
            passwd: read_in_root(&image.rootfs, "etc/passwd").unwrap_or_default(),
            group: read_in_root(&image.rootfs, "etc/group").unwrap_or_default(),
        };
        let user = spec::resolve_user(spec, &image.config.user, &users)?;
        let seccomp_profile = match &spec.security.seccomp {
            SeccompProfile::Localhost(path) => Some(read_profile(path)?),
            _ => None,
        };
        let target_pid_ns = match &spec.security.pid_mode {
            PidMode::Target(target) => Some(self.target_pid_ns(target)?),
            _ => None,
        };
        let ahead = self.seccomp_ahead(sandbox, spec);
        let oci = spec::build(&Inputs {
            id,
            spec,
            sandbox,
            image: &image.config,
            user: &user,
            rootfs: &image.rootfs,
            cgroup,
            node: &self.inner.node,
            target_pid_ns,
            seccomp_profile,
            seccomp_ahead: ahead.is_some(),
            pod_files: PodFiles {
                hostname: pod.hostname(),
                hosts: pod.hosts(),
                resolv_conf: pod.resolv_conf(),
                shm: sandbox.shm.clone(),
            },
            idmapped_mounts,
        })?;
        let dirs = self.inner.layout.container(id.as_str());
        if let Some(ahead) = ahead {
            for (name, data) in [
                (crate::layout::SECCOMP_BPF, &ahead.bpf),
                (crate::layout::SECCOMP_PROFILE, &ahead.profile),
                (crate::layout::SECCOMP_EXEC_BPF, &ahead.exec_bpf),
            ] {
                let path = dirs.bundle().join(name);
                std::fs::write(&path, data).map_err(Error::io("write", &path))?;
            }
        }
        let config = dirs.config();
        let json = serde_json::to_vec(&oci).expect("an OCI spec serialises");
        std::fs::write(&config, json).map_err(Error::io("write", &config))?;
        Ok(user)
    }

    /// RuntimeDefault's filter, compiled once (`seccomp::runtime_default_ahead`), for the
    /// container's init to install right before `execve`, with the execs' program and the
    /// profile (for the status) beside it; `config.json` then names none, so libcontainer
    /// does not compile it again (about 1.5–1.9 ms per container). With no_new_privs that
    /// needs no capability. Without, it needs CAP_SYS_ADMIN, which only the supervisor's
    /// own launch keeps for it (and drops after); a container libcontainer's builder makes
    /// (a pod with a user namespace) has it compiled by libcontainer, which loads it before
    /// it drops the capability. None: the spec carries the profile, if any.
    fn seccomp_ahead(
        &self,
        sandbox: &SandboxRecord,
        spec: &ContainerSpec,
    ) -> Option<Arc<super::seccomp::Ahead>> {
        let sec = &spec.security;
        let launched = self.inner.node.supervisor_launches(sandbox.spec.namespaces.user.is_some());
        if sec.privileged
            || sec.seccomp != SeccompProfile::RuntimeDefault
            || !(sec.no_new_privs || launched)
        {
            return None;
        }
        let caps = spec::capabilities(spec, &self.inner.node);
        super::seccomp::runtime_default_ahead(&caps)
            .inspect_err(|e| {
                // libcontainer compiles it, as for any other profile.
                warn!(error = %e, "RuntimeDefault seccomp not compiled ahead");
            })
            .ok()
    }

    /// The oom_score_adj the container gets; a request podbay cannot honour (below its own
    /// without CAP_SYS_RESOURCE) is raised, and said at WARN once per pod.
    fn applied_oom_score_adj(&self, sandbox: &SandboxRecord, spec: &ContainerSpec) -> i64 {
        let requested = spec.resources.oom_score_adj;
        let applied = spec::applied_oom_score_adj(requested, &self.inner.node);
        if applied != requested
            && self.inner.oom_warned.lock().expect("oom_warned lock").insert(sandbox.id.clone())
        {
            warn!(
                sandbox.id = %sandbox.id,
                container = %spec.metadata.name,
                requested,
                applied,
                "oom_score_adj raised: podbay lacks CAP_SYS_RESOURCE, so nothing below its own \
                 ({}) can be set; the container status reports the applied value",
                self.inner.node.own_oom_score_adj
            );
        }
        applied
    }

    async fn undo(&self, step: UndoStep) -> Result<(), Error> {
        match step {
            UndoStep::Rootfs(id) => Ok(self.inner.images.unmount_rootfs(id.as_str()).await?),
            UndoStep::Runtime { pod, id, cgroup } => {
                destroy_runtime_state(&pod, &id, &cgroup, None).await
            }
            UndoStep::Record(rec) => {
                let store = self.inner.store.clone();
                tokio::task::spawn_blocking(move || records::delete(&store, &rec))
                    .await
                    .expect("state store task panicked")
                    .map_err(Error::from)
            }
        }
    }

    fn target_pid_ns(&self, target: &ContainerId) -> Result<PathBuf, Error> {
        let field = "linux.security_context.namespace_options.target_id";
        let rec = self
            .inner
            .map
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

struct NameGuard {
    containers: Containers,
    key: String,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        self.containers.inner.creating.lock().expect("creating lock").remove(&self.key);
    }
}

/// Removes what libcontainer made for a container: its processes (SIGKILL), its cgroup
/// and its state dir; then the supervisor forgets it. Idempotent.
pub(super) async fn destroy_runtime_state(
    pod: &PodLayout,
    id: &ContainerId,
    cgroup: &str,
    init: Option<Identity>,
) -> Result<(), Error> {
    if let Some(init) = init {
        supervisor::kill_and_wait(init).await;
    }
    // libcontainer's state is a directory of files (its delete would only add another
    // cgroup manager, which re-reads mountinfo per controller).
    let state = pod.containers().join(id.as_str());
    let cgroup = cgroup.to_owned();
    tokio::task::spawn_blocking(move || {
        cgroups::remove(&cgroup)?;
        match std::fs::remove_dir_all(&state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { what: "remove", path: state, source: e })
            }
            _ => Ok(()),
        }
    })
    .await
    .expect("container cleanup task panicked")?;
    let _ = Client::new(pod).forget_container(id).await;
    Ok(())
}

/// Reads a small file of the image through its rootfs, never following a link out of it.
/// The container's user namespace is the pod's: a request that names another (kubelet
/// repeats the pod's) is refused, as is an idmapped mount with other maps than the pod's.
fn check_userns(spec: &ContainerSpec, pod: Option<&UsernsSpec>) -> Result<(), Error> {
    if !spec.security.userns.fits(pod) {
        return Err(Error::invalid(
            "linux.security_context.namespace_options.userns_options",
            "differs from the pod sandbox's",
        ));
    }
    for (n, m) in spec.mounts.iter().enumerate() {
        match (&m.idmap, pod) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(Error::invalid(
                    format!("mounts[{n}].uid_mappings"),
                    "an idmapped mount needs a pod with its own user namespace",
                ));
            }
            (Some(maps), Some(pod)) if maps != pod => {
                return Err(Error::invalid(
                    format!("mounts[{n}].uid_mappings"),
                    "only the pod's own uid and gid maps are supported",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Idmapped clones of the bind mounts that ask for one, in the container's dir, until
/// libcontainer has mounted them in the container: mount index → the clone.
fn idmap_mounts(
    dirs: &ContainerLayout,
    spec: &ContainerSpec,
    userns: &Path,
) -> Result<BTreeMap<usize, PathBuf>, Error> {
    let mut out = BTreeMap::new();
    for (n, m) in spec.mounts.iter().enumerate() {
        if m.idmap.is_none() {
            continue;
        }
        let field = format!("mounts[{n}].host_path");
        let dir = dirs.idmapped();
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::io("create", &dir)(e));
            }
            _ => {}
        }
        let at = dir.join(format!("mount-{n}"));
        let made = match std::fs::metadata(&m.host_path) {
            Ok(md) if md.is_dir() => std::fs::create_dir(&at),
            Ok(_) => std::fs::File::create(&at).map(drop),
            Err(e) => {
                let reason = format!("{}: {e}", m.host_path.display());
                return Err(Error::invalid(&field, reason));
            }
        };
        made.map_err(Error::io("create", &at))?;
        crate::mount_attr::attach_idmapped(&m.host_path, &at, userns, true).map_err(|e| {
            Error::invalid(&field, format!("{} cannot be idmapped: {e}", m.host_path.display()))
        })?;
        out.insert(n, at);
    }
    Ok(out)
}

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

/// A HostToContainer mount sees the node's later mounts only if its source is on a
/// shared or slave mount, and a Bidirectional one's mounts reach the node only from a
/// shared one (kubelet makes its dirs shared). Refused otherwise, as containerd does,
/// rather than a mount that silently propagates nothing.
fn check_propagation(spec: &ContainerSpec) -> Result<(), Error> {
    use super::Propagation;
    for (n, m) in spec.mounts.iter().enumerate() {
        let need_shared = match m.propagation {
            Propagation::Private => continue,
            Propagation::HostToContainer => false,
            Propagation::Bidirectional => true,
        };
        let p = super::node::propagation_of(&m.host_path)
            .map_err(Error::io("resolve", &m.host_path))?;
        let ok = p.shared || (!need_shared && p.slave);
        if !ok {
            let wanted = if need_shared { "shared" } else { "shared or slave" };
            return Err(Error::Precondition {
                field: format!("mounts[{n}].propagation"),
                reason: format!(
                    "{:?} propagation needs {} on a {wanted} mount; it is on {}, which is not \
                     (`mount --make-rshared {}` on the node)",
                    m.propagation,
                    m.host_path.display(),
                    p.mount_point,
                    p.mount_point
                ),
            });
        }
    }
    Ok(())
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
}
