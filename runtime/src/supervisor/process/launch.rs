//! podbay's own launch of a container's init and of an exec's process: libcontainer's
//! init process does the container's setup (namespaces, rootfs, pivot_root, masks,
//! capabilities, seccomp), and the helper itself does what libcontainer's builders, main
//! and intermediate processes did before it.
//!
//! Why (docs/architecture.md, "The helper launches the container's init itself"):
//! libcontainer's intermediate process wrote its pid to `cgroup.procs`, which waits for an
//! RCU grace period (10–15 ms after a quiet moment), and was one more process per
//! container and per exec. Here the helper, single-threaded, moves itself into the
//! container's cgroup by writing `0` to each v1 hierarchy's `tasks` (no grace period) and
//! clones the init itself. It also lets the init install a precompiled seccomp filter
//! without no_new_privs ([`Fit::raise_sys_admin_for_filter`]).
//!
//! On a cgroup v2 node a thread cannot move alone: the helper makes the cgroup and clones
//! the init (or an exec's process) into it with `clone3(CLONE_INTO_CGROUP)`, so nothing
//! migrates, and stays where it is itself ([`crate::cgroups::enter_new`]). A kernel
//! without that flag (before 5.7), or a seccomp filter refusing `clone3`, has the helper
//! move itself by its pid first, as libcontainer's intermediate process did
//! ([`clone_into`]).
//!
//! Only for what a CRI container needs: a spec with a user or time namespace, hooks, a
//! seccomp listener, network devices, Intel RDT, idmapped mounts or an AppArmor profile
//! goes through libcontainer's builders as before ([`fits`]).

use std::error::Error;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use libcgroups::common::CgroupConfig;
use libcontainer::config::YoukiConfig;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::namespaces::Namespaces;
use libcontainer::notify_socket::{NOTIFY_FILE, NotifyListener, NotifySocket};
use libcontainer::process::args::{ContainerArgs, ContainerType};
use libcontainer::process::channel;
use libcontainer::process::init::process::container_init_process;
use libcontainer::syscall::syscall::{SyscallType, create_syscall};
use libcontainer::workload::Executor;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Process, Spec};

use super::fork::{self, ForkResult};
use super::premount::premount;
use crate::cgroups::V2Dir;

/// The container's stdio when it has no terminal.
pub(super) struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The launched process's terminal or stdio, and how its setup ends.
pub(super) struct Io {
    /// Where the process sends its terminal's master, with a terminal.
    pub console: Option<PathBuf>,
    pub stdio: Stdio,
    /// What runs last in the process (its `execve`).
    pub executor: Box<dyn Executor>,
}

/// What the helper needs to launch one container's init.
pub(super) struct Launch {
    pub id: String,
    pub bundle: PathBuf,
    /// The pod's container state dir (libcontainer's root path).
    pub root: PathBuf,
    pub io: Io,
}

/// A container [`launch`] can make.
pub(super) struct Fit {
    spec: Spec,
    v1_hierarchies: Vec<String>,
}

impl Fit {
    /// Lets the init install a precompiled seccomp filter right before `execve` although
    /// the container has no no_new_privs: the kernel then wants CAP_SYS_ADMIN, so it is
    /// added to the init's effective and permitted sets (not to the bounding, inheritable
    /// or ambient ones), for the executor to drop again once the filter is in
    /// ([`DieWithSupervisor`](super::children)). Neither set survives `execve`: the
    /// program's capabilities come from the bounding, inheritable and ambient sets (and
    /// its file's), so it starts with exactly the spec's. Nothing of the image runs before
    /// that. False (nothing changed) with no_new_privs or when the spec grants
    /// CAP_SYS_ADMIN itself.
    pub(super) fn raise_sys_admin_for_filter(&mut self) -> bool {
        let Some(process) = self.spec.process_mut() else { return false };
        if process.no_new_privileges() == Some(true) {
            return false;
        }
        // Without capabilities in the spec libcontainer drops none: CAP_SYS_ADMIN stays.
        let Some(mut caps) = process.capabilities().clone() else { return false };
        let admin = oci_spec::runtime::Capability::SysAdmin;
        if caps.effective().as_ref().is_some_and(|e| e.contains(&admin)) {
            return false;
        }
        let with_admin = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.insert(admin);
            Some(set)
        };
        let (effective, permitted) = (with_admin(caps.effective()), with_admin(caps.permitted()));
        caps.set_effective(effective).set_permitted(permitted);
        process.set_capabilities(Some(caps));
        true
    }
}

/// The bundle's spec, validated as libcontainer's builder validates it, and the node's v1
/// hierarchies (none on a cgroup v2 node), when [`launch`] can make this container;
/// `None` when libcontainer's builder must (a spec that does not [`fit`](fits)).
pub(super) fn spec_for_launch(bundle: &Path) -> Result<Option<Fit>, Box<dyn Error>> {
    let v1_hierarchies = crate::cgroups::v1_hierarchies();
    let mut spec = Spec::load(bundle.join("config.json"))?;
    if !fits(&spec) {
        return Ok(None);
    }
    validate(&spec)?;
    spec.canonicalize_rootfs(bundle)?;
    Ok(Some(Fit { spec, v1_hierarchies }))
}

/// Whether the spec asks for nothing beyond what [`launch`] does: everything past the
/// cgroup and the PID namespace is libcontainer's init's, which reads the same spec.
fn fits(spec: &Spec) -> bool {
    let Some(linux) = spec.linux() else { return false };
    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    let other_ns = namespaces
        .iter()
        .any(|n| matches!(n.typ(), LinuxNamespaceType::User | LinuxNamespaceType::Time));
    let notify = linux.seccomp().as_ref().is_some_and(libcontainer::seccomp::is_notify);
    let idmapped = spec.mounts().as_deref().unwrap_or_default().iter().any(|m| {
        m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty())
            || m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty())
    });
    let apparmor = spec.process().as_ref().is_some_and(|p| p.apparmor_profile().is_some());
    spec.hooks().is_none()
        && !other_ns
        && !notify
        && !idmapped
        && !apparmor
        && linux.net_devices().is_none()
        && linux.intel_rdt().is_none()
        && linux.cgroups_path().is_some()
        && spec.process().is_some()
}

/// Makes the container's state (libcontainer's `state.json`, as its builder writes it, so
/// that its tenant builder, kill and delete find the container), puts this process in the
/// container's cgroup, and clones the init as a sibling (the supervisor's child). Returns
/// once the init waits for StartContainer. On failure the state dir goes and an init
/// already cloned is killed; the cgroup is the daemon's to remove (its undo does).
pub(super) fn launch(Fit { spec, v1_hierarchies }: Fit, l: Launch) -> Result<u32, Box<dyn Error>> {
    let dir = l.root.join(&l.id);
    if dir.exists() {
        return Err(format!("container state {} exists", dir.display()).into());
    }
    std::fs::create_dir_all(&dir)?;
    let mut init = None;
    let made = launch_in(spec, &v1_hierarchies, l, &dir, &mut init);
    if made.is_err() {
        if let Some(pid) = init {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    made
}

fn launch_in(
    spec: Spec,
    v1_hierarchies: &[String],
    l: Launch,
    dir: &Path,
    init: &mut Option<Pid>,
) -> Result<u32, Box<dyn Error>> {
    let mut container = Container::new(&l.id, ContainerStatus::Creating, None, &l.bundle, dir)?;
    container.set_systemd(false).set_annotations(spec.annotations().clone()).save()?;
    let notify_listener = NotifyListener::new(&dir.join(NOTIFY_FILE))?;
    let console = match &l.io.console {
        Some(path) => Some(libcontainer::tty::setup_console_socket(dir, path, "console-socket")?),
        None => None,
    };
    YoukiConfig::from_spec(&spec, &l.id)?.save(dir)?;
    let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
    let cgroup = linux.cgroups_path().clone().ok_or("the spec has no cgroupsPath")?;
    let cgroup_name = cgroup.to_string_lossy().into_owned();
    let resources = linux.resources().as_ref();
    let into =
        prepare(&spec, || crate::cgroups::enter_new(&cgroup_name, v1_hierarchies, resources))?;

    let kind = ContainerType::InitContainer;
    let owner = Some(container.clone());
    let (mut args, _stdio) =
        container_args(kind, spec, &l.id, console.as_ref(), notify_listener, owner, l.io)?;
    let pid = clone_init(&mut args, None, into.as_ref(), init)?;
    container
        .set_status(ContainerStatus::Created)
        .set_creator(nix::unistd::geteuid().as_raw())
        .set_pid(pid.as_raw())
        .save()?;
    Ok(pid.as_raw() as u32)
}

/// What libcontainer's builder and intermediate process do to themselves before the init
/// is cloned, in this process: the score (inherited by the init), not dumpable while it
/// joins the container's namespaces, the cgroup (`join`: on cgroup v2 the cgroup the init
/// is to be born in, returned), the rlimits, and the PID namespace the init is to be made
/// in.
fn prepare(
    spec: &Spec,
    join: impl FnOnce() -> Result<Option<V2Dir>, crate::cgroups::Error>,
) -> Result<Option<V2Dir>, Box<dyn Error>> {
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
    if let Some(score) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", score.to_string())?;
    }
    nix::sys::prctl::set_dumpable(false)?;
    let into = join()?;
    let syscall = create_syscall();
    for rlimit in process.rlimits().as_deref().unwrap_or_default() {
        syscall.set_rlimit(rlimit)?;
    }
    let namespaces = Namespaces::try_from(linux.namespaces().as_ref())?;
    if let Some(pid_ns) = namespaces.get(LinuxNamespaceType::Pid)? {
        namespaces.unshare_or_setns(pid_ns)?;
    }
    Ok(into)
}

/// Clones the init as a sibling of this process (the supervisor's child), which runs
/// libcontainer's `container_init_process`, and waits until it is ready: waiting for
/// StartContainer (a container) or for the start this process then gives (an exec).
/// On cgroup v2 the init is born in its cgroup (`into`), or where the kernel cannot do
/// that, this process moves there first by its pid. A container's init makes its mounts
/// first ([`premount`]), a tenant installs its filter first. A failing init reports on the
/// channel, and a tenant also on its notify pipe, as in libcontainer's intermediate
/// process.
fn clone_init(
    args: &mut ContainerArgs,
    tenant: Option<TenantStart>,
    into: Option<&V2Dir>,
    init: &mut Option<Pid>,
) -> Result<Pid, Box<dyn Error>> {
    let (mut main_sender, mut main_receiver) = channel::main_channel()?;
    let (init_sender, mut init_receiver) = channel::init_channel()?;
    let pid = match clone_into(into)? {
        ForkResult::Child => {
            let _ = nix::sys::prctl::set_name(c"podbay:[INIT]");
            let _ = init_sender.close();
            let ran = (|| -> Result<(), Box<dyn Error>> {
                if let Some(bpf) = tenant.as_ref().and_then(|t| t.filter) {
                    super::children::install_filter(bpf)?;
                }
                premount_into(args)?;
                Ok(container_init_process(args, &mut main_sender, &mut init_receiver)?)
            })();
            if let Err(e) = ran {
                tracing::error!("failed to initialize container process: {e}");
                // A tenant fails after its start, when nobody reads the channel any more.
                if let Some(t) = &tenant {
                    let _ = nix::unistd::write(t.notify, e.to_string().as_bytes());
                }
                let _ = main_sender.exec_failed(e.to_string());
            }
            fork::exit_child(255)
        }
        ForkResult::Parent { child } => child,
    };
    *init = Some(pid);
    main_sender.close()?;
    // The init asks nothing of this process (no hooks, seccomp listener or devices).
    init_sender.close()?;
    main_receiver.wait_for_init_ready()?;
    main_receiver.close()?;
    init_receiver.close()?;
    Ok(pid)
}

/// Clones a sibling (the caller's parent's child), born in the cgroup v2 directory
/// `into` if there is one. Where the kernel has no `clone3` with `CLONE_INTO_CGROUP`
/// (ENOSYS, E2BIG, EINVAL), or a seccomp filter refuses `clone3` (ENOSYS or EPERM: one
/// around podbay, or an exec's Localhost profile, installed in this process), the caller
/// moves there by its pid first.
fn clone_into(into: Option<&V2Dir>) -> Result<ForkResult, Box<dyn Error>> {
    let cloned = match into {
        Some(dir) => match fork::clone_sibling_into(dir.fd.as_fd()) {
            Err(Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EPERM) => {
                dir.move_self()?;
                fork::clone_sibling()
            }
            cloned => cloned,
        },
        None => fork::clone_sibling(),
    };
    Ok(cloned?)
}

/// What a tenant (an exec's process) does apart from a container's init: where it
/// reports a failure after its start, and the filter it installs first.
struct TenantStart<'a> {
    notify: &'a OwnedFd,
    filter: Option<&'a [u8]>,
}

/// The container init's mounts, made by [`premount`] in this (the init) process;
/// libcontainer's init then gets the spec with the rest.
fn premount_into(args: &mut ContainerArgs) -> Result<(), Box<dyn Error>> {
    if matches!(args.container_type, ContainerType::InitContainer)
        && let Some(spec) = premount(&args.spec, &args.rootfs)?
    {
        args.spec = Rc::new(spec);
    }
    Ok(())
}

/// An exec's process, to join a running container (libcontainer's tenant).
pub(super) struct Tenant {
    /// The container's libcontainer state (Running).
    pub container: Container,
    /// The container's spec (its `config.json`).
    pub spec: Spec,
    /// What to run: the container's process with the command's args.
    pub process: Process,
    /// A precompiled seccomp filter, installed by the tenant as it starts (so that this
    /// process's `clone3` is not under it: RuntimeDefault answers ENOSYS there).
    pub filter: Option<Vec<u8>>,
    pub io: Io,
}

/// The node's v1 hierarchies (none on a cgroup v2 node), when [`launch_tenant`] can run an
/// exec in a container of this spec; `None` when libcontainer's tenant builder must (the
/// same cases as for the container itself; a container in a user namespace is one).
pub(super) fn tenant_fits(spec: &Spec) -> Option<Vec<String>> {
    fits(spec).then(crate::cgroups::v1_hierarchies)
}

/// Starts an exec's process in a running container, as libcontainer's tenant builder
/// does (the spec narrowed to the process, the init's namespaces by `/proc/<pid>/ns`, the
/// container's cgroup), with this process as its main and intermediate process: it joins
/// the container's cgroup by writing `0` to `tasks` (no grace period to wait for; on v2
/// the tenant is born in it), clones the tenant, tells it to start and waits until it has run `execve` (or failed: its
/// error is the answer). Its notify socket and terminal link go afterwards (libcontainer
/// leaves them in the state dir, one per exec).
pub(super) fn launch_tenant(t: Tenant, v1_hierarchies: &[String]) -> Result<u32, Box<dyn Error>> {
    let Tenant { container, mut spec, process, filter, io } = t;
    if container.status() != ContainerStatus::Running {
        return Err(format!("cannot exec: the container is {:?}", container.status()).into());
    }
    let dir = container.root.clone();
    let init_pid = container.pid().ok_or("the container's state names no init")?.as_raw();
    validate(&spec)?;
    spec.canonicalize_rootfs(container.bundle())?;
    let linux = spec.linux().clone().ok_or("the spec has no linux section")?;
    let cgroup = linux.cgroups_path().clone().ok_or("the spec has no cgroupsPath")?;
    let declared: Vec<LinuxNamespaceType> =
        linux.namespaces().as_deref().unwrap_or_default().iter().map(|n| n.typ()).collect();
    // The init's namespaces, in the order libcontainer's tenant builder lists them.
    let mut namespaces = Vec::new();
    for (typ, name) in [
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
        (LinuxNamespaceType::Network, "net"),
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Mount, "mnt"),
        (LinuxNamespaceType::Cgroup, "cgroup"),
    ] {
        if declared.contains(&typ) {
            let path = PathBuf::from(format!("/proc/{init_pid}/ns/{name}"));
            namespaces.push(LinuxNamespaceBuilder::default().typ(typ).path(path).build()?);
        }
    }
    let mut narrowed = LinuxBuilder::default().namespaces(namespaces).cgroups_path(cgroup.clone());
    if let Some(personality) = linux.personality() {
        narrowed = narrowed.personality(personality.clone());
    }
    spec.set_process(Some(process)).set_linux(Some(narrowed.build()?));

    // Named after this helper, the one process using them; a stale one (a helper of the
    // same pid killed before it removed them) goes first.
    let me = std::process::id();
    let notify_path = dir.join(format!("tenant-notify-{me}.sock"));
    let tty_name = format!("tenant-tty-{me}.sock");
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_file(dir.join(&tty_name));
    let mut init = None;
    let started = (|| {
        let notify_listener = NotifyListener::new(&notify_path)?;
        let console = match &io.console {
            Some(path) => Some(libcontainer::tty::setup_console_socket(&dir, path, &tty_name)?),
            None => None,
        };
        let cgroup_name = cgroup.to_string_lossy().into_owned();
        let into = prepare(&spec, || crate::cgroups::enter_existing(&cgroup_name, v1_hierarchies))?;
        let (notify_r, notify_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let kind = ContainerType::TenantContainer { exec_notify_fd: notify_w.as_raw_fd() };
        let (mut args, _stdio) = container_args(
            kind,
            spec,
            container.id(),
            console.as_ref(),
            notify_listener,
            None,
            io,
        )?;
        let tenant = TenantStart { notify: &notify_w, filter: filter.as_deref() };
        let pid = clone_init(&mut args, Some(tenant), into.as_ref(), &mut init)?;
        NotifySocket::new(&notify_path).notify_container_start()?;
        // The tenant holds the other copy until its execve closes it.
        drop(notify_w);
        // libcontainer's error message, if any (at most 4 KiB of it is kept).
        let mut failure = Vec::new();
        std::fs::File::from(notify_r).take(4096).read_to_end(&mut failure)?;
        if !failure.is_empty() {
            return Err(String::from_utf8_lossy(&failure).into_owned().into());
        }
        Ok::<_, Box<dyn Error>>(pid.as_raw() as u32)
    })();
    if started.is_err()
        && let Some(pid) = init
    {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_file(dir.join(&tty_name));
    started
}

/// libcontainer's arguments for an init or a tenant, as its builders fill them in for a
/// detached sibling (cgroupfs, no user namespace: [`fits`]). The returned stdio must live
/// until the process is cloned: the arguments hold its descriptors' numbers.
fn container_args(
    container_type: ContainerType,
    spec: Spec,
    id: &str,
    console: Option<&OwnedFd>,
    notify_listener: NotifyListener,
    container: Option<Container>,
    io: Io,
) -> Result<(ContainerArgs, Stdio), Box<dyn Error>> {
    let cgroup_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .ok_or("the spec has no cgroupsPath")?;
    let raw = |fd: &Option<OwnedFd>| fd.as_ref().map(AsRawFd::as_raw_fd);
    let args = ContainerArgs {
        container_type,
        syscall: SyscallType::Linux,
        rootfs: spec.root().as_ref().ok_or("the spec has no root")?.path().clone(),
        spec: Rc::new(spec),
        console_socket: console.map(AsRawFd::as_raw_fd),
        notify_listener,
        preserve_fds: 0,
        container,
        user_ns_config: None,
        cgroup_config: CgroupConfig {
            cgroup_path,
            systemd_cgroup: false,
            container_name: id.to_owned(),
        },
        detached: true,
        executor: io.executor,
        no_pivot: false,
        stdin: raw(&io.stdio.stdin),
        stdout: raw(&io.stdio.stdout),
        stderr: raw(&io.stdio.stderr),
        as_sibling: true,
        pid_file: None,
    };
    Ok((args, io.stdio))
}

/// What libcontainer's builders check of a spec before they use it.
fn validate(spec: &Spec) -> Result<(), Box<dyn Error>> {
    if !spec.version().starts_with("1.") {
        return Err(format!("runtime spec version {} is not 1.x", spec.version()).into());
    }
    libcontainer::validator::Validator::validate_spec(spec)?;
    if let Some(mounts) = spec.mounts() {
        libcontainer::utils::validate_mount_options(mounts)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seccomp program that answers ENOSYS to `clone3` and allows the rest, as
    /// RuntimeDefault (or a filter around podbay) does.
    fn no_clone3() -> Vec<u8> {
        let insn = |code: u16, jt: u8, jf: u8, k: u32| {
            let mut b = code.to_le_bytes().to_vec();
            b.extend([jt, jf]);
            b.extend(k.to_le_bytes());
            b
        };
        [
            insn(0x20, 0, 0, 0),                                 // ld nr
            insn(0x15, 0, 1, libc::SYS_clone3 as u32),           // jeq clone3
            insn(0x06, 0, 0, 0x0005_0000 | libc::ENOSYS as u32), // ret ERRNO
            insn(0x06, 0, 0, 0x7fff_0000),                       // ret ALLOW
        ]
        .concat()
    }

    /// Whether `pid` is in the cgroup v2 directory `rel` (below the unified root).
    fn in_cgroup(pid: &str, rel: &str) -> bool {
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        own.lines().any(|l| l.strip_prefix("0::") == Some(rel))
    }

    /// The sibling is born in the cgroup, its cloner stays where it is; with `clone3`
    /// refused, the cloner moves there first and the sibling follows.
    #[test]
    fn a_sibling_is_born_in_its_v2_cgroup_or_its_cloner_moves_first() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let Some(root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|r| Path::new(r).join("cgroup.controllers").exists())
        else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        for refused in [false, true] {
            let rel = format!("/pbt-clone3-{}-{refused}", std::process::id());
            let path = PathBuf::from(format!("{root}{rel}"));
            std::fs::create_dir(&path).unwrap();
            let dir = V2Dir::open(&rel, path.clone()).unwrap();
            let (r, w) = nix::unistd::pipe().unwrap();
            let child = match fork::fork().unwrap() {
                ForkResult::Child => {
                    let filtered = !refused
                        || (nix::sys::prctl::set_no_new_privs().is_ok()
                            && super::super::children::install_filter(&no_clone3()).is_ok());
                    let code = match filtered.then(|| clone_into(Some(&dir))) {
                        Some(Ok(ForkResult::Child)) => {
                            fork::exit_child(if in_cgroup("self", &rel) { 0 } else { 3 })
                        }
                        Some(Ok(ForkResult::Parent { child })) => {
                            let _ = nix::unistd::write(&w, &child.as_raw().to_le_bytes());
                            // The cloner moved only where clone3 was refused.
                            if in_cgroup("self", &rel) == refused { 0 } else { 4 }
                        }
                        _ => 5,
                    };
                    fork::exit_child(code)
                }
                ForkResult::Parent { child } => child,
            };
            drop(w);
            let status = |pid| nix::sys::wait::waitpid(pid, None).unwrap();
            assert_eq!(status(child), nix::sys::wait::WaitStatus::Exited(child, 0), "{refused}");
            let mut raw = [0u8; 4];
            assert_eq!(nix::unistd::read(&r, &mut raw), Ok(4), "no sibling");
            let sibling = Pid::from_raw(i32::from_le_bytes(raw));
            assert_eq!(
                status(sibling),
                nix::sys::wait::WaitStatus::Exited(sibling, 0),
                "the sibling is in {rel} (clone3 refused: {refused})"
            );
            std::fs::remove_dir(&path).unwrap();
        }
    }
}
