//! The pod supervisor process (`podbay-supervisor`): the pod's pause process.
//!
//! Single-threaded and without an async runtime, so forking (and libcontainer's clone) is
//! safe; the forking and the `unsafe` code are in `fork.rs`.
//!
//! The daemon starts one **spawner** (`podbay-supervisor`, this binary) and sends it a
//! `SpawnRequest` per pod. The spawner forks; the child becomes the pod's supervisor:
//!
//! 1. setsid; unshare the namespaces the pod owns (net, ipc, uts; for a pod with its own
//!    user namespace, a child inside it makes them and the supervisor joins them, see
//!    `userns.rs`); `lo` up; with an
//!    interface, create the veth pair (eth0 here, the peer in the node's namespace), the
//!    address and the default route; set the hostname and the pod's sysctls.
//! 2. PR_SET_CHILD_SUBREAPER; for PID mode POD, unshare the PID namespace and fork the
//!    pod's PID 1 (`pod-init`, reaps zombies), then return to the node's PID namespace.
//! 3. bind `<pod dir>/supervisor.sock`, report `Started` through a pipe to the spawner,
//!    which forwards it to the daemon; serve until told to stop.
//!
//! Forking from a warm, small process instead of exec'ing a binary per pod saves the exec
//! and dynamic loading (~0.7 ms on a 2-core VM). Children are not reaped by the spawner
//! (SIGCHLD is ignored there), and a supervisor does not depend on the spawner or the
//! daemon: both may exit or restart while pods run. The spawner exits when the daemon
//! closes its stdin.
//!
//! Every failure is a [`Failed`], which reaches the daemon as a typed `Failure`.

mod children;
#[cfg(test)]
pub(crate) use children::install_filter;
pub mod crilog;
mod failure;
mod fork;
mod helper;
mod launch;
mod premount;
mod userns;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{
    Gid, Pid, Uid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, getpid, getppid, pivot_root,
    setgroups, sethostname, setresgid, setresuid, setsid,
};
use podbay_proto::frame;
use podbay_proto::supervisor::v1::{
    API_VERSION, ContainerStatesResponse, ForgetContainerResponse, PingResponse, Ready,
    ReopenLogResponse, Request, Response, ShutdownResponse, SignalContainerResponse, SpawnRequest,
    Started, request, response, started,
};

use self::children::Children;
pub use self::failure::Failed;
use self::fork::ForkResult;
use super::Identity;
use crate::layout::PodLayout;

/// The spawner's loop: one SpawnRequest in, one Started out, until stdin closes.
pub fn spawner_main() -> i32 {
    let _ = prctl::set_name(c"podbay-spawner");
    // Supervisors are reaped by the kernel (or by init once the spawner is gone).
    if let Err(e) = fork::reap_children_automatically(true) {
        eprintln!("podbay-spawner: ignore SIGCHLD: {e}");
        return 1;
    }
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    // Made once, at the first request that names podbay's directories (crate::view).
    let mut view: Option<Option<OwnedFd>> = None;
    let node_netns = match File::open("/proc/self/ns/net") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            eprintln!("podbay-spawner: open /proc/self/ns/net: {e}");
            return 1;
        }
    };
    let mut ahead = None;
    loop {
        // The next pod's network namespace, made while no request waits (`netns_ahead`).
        if ahead.is_none() {
            match netns_ahead(node_netns.as_fd()) {
                Ok(made) => ahead = made,
                Err(e) => {
                    eprintln!("podbay-spawner: {e}");
                    return 1;
                }
            }
        }
        let req = match frame::read::<SpawnRequest, _>(&mut stdin) {
            Ok(Some(req)) => req,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("podbay-spawner: read request: {e}");
                return 1;
            }
        };
        if view.is_none() && !req.view_parents.is_empty() {
            view = Some(match view_namespace(&req.view_parents) {
                Ok(made) => made,
                Err(e) => {
                    eprintln!("podbay-spawner: {e}");
                    return 1;
                }
            });
        }
        let view = view.as_ref().and_then(|v| v.as_ref().map(AsFd::as_fd));
        // Only a namespace of the node's user namespace: a pod with its own makes its
        // network namespace in it.
        let netns = match req.new_net && req.uid_mappings.is_empty() {
            true => ahead.take(),
            false => None,
        };
        let inherited = Inherited { node_netns: node_netns.as_fd(), view };
        let result = spawn_one(&req, inherited, netns)
            .unwrap_or_else(|e| started::Result::Failure(e.to_failure()));
        if frame::write(&mut stdout, &Started { result: Some(result) })
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return 1;
        }
    }
}

/// The view namespace for `parents`, or None where the node's mounts are not all shared.
/// An error means the spawner may not be back in the node's mount namespace: it must exit.
fn view_namespace(parents: &[String]) -> Result<Option<OwnedFd>, String> {
    let ns = || std::fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()).ok();
    let before = ns();
    let parents: Vec<PathBuf> = parents.iter().map(PathBuf::from).collect();
    let made = crate::view::view_namespace(&parents);
    if before.is_none() || ns() != before {
        return Err("not back in the node's mount namespace after making the view".into());
    }
    // Not made: containers are made from a copy of the node's table, as without a view.
    Ok(made.unwrap_or_else(|e| {
        eprintln!("podbay-spawner: no view namespace: {e}");
        None
    }))
}

/// A network namespace for the next pod, made by the spawner between requests: the
/// kernel's setup of a new network namespace (0.36 ms of a pod's spawn here, `unshare -n`
/// against plain `unshare`) then happens while the daemon finishes the previous pod
/// instead of inside the next one's RunPodSandbox. `lo` is up already. The spawner makes
/// it in its own thread's namespace and goes back to the node's; it holds one such
/// namespace at a time and nothing else of a pod, so a spawner that dies leaves nothing
/// (the kernel frees the namespace with the last fd). None where it cannot be made (the
/// pod's supervisor then makes its own, as before); an error means the spawner may not be
/// back in the node's network namespace: it must exit.
fn netns_ahead(node: BorrowedFd<'_>) -> Result<Option<OwnedFd>, String> {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        eprintln!("podbay-spawner: no network namespace made ahead: {e}");
        return Ok(None);
    }
    let made = File::open("/proc/self/ns/net").map(OwnedFd::from);
    let lo = podbay_netplug::netns::set_lo_up_here();
    setns(node, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("back to the node's network namespace: {e}"))?;
    match (made, lo) {
        (Ok(ns), Ok(())) => Ok(Some(ns)),
        (Err(e), _) => {
            eprintln!("podbay-spawner: no network namespace made ahead: {e}");
            Ok(None)
        }
        (_, Err(e)) => {
            eprintln!("podbay-spawner: no network namespace made ahead: lo: {e}");
            Ok(None)
        }
    }
}

/// The spawner's fds a forked supervisor must not keep (it closes them first: a fork
/// shares every fd and runs no destructor) or gets a duplicate of.
struct Inherited<'a> {
    node_netns: BorrowedFd<'a>,
    view: Option<BorrowedFd<'a>>,
}

/// Forks a supervisor and returns its start-up report.
fn spawn_one(
    req: &SpawnRequest,
    inherited: Inherited<'_>,
    netns: Option<OwnedFd>,
) -> Result<started::Result, Failed> {
    let view = inherited
        .view
        .map(|v| v.try_clone_to_owned())
        .transpose()
        .map_err(Failed::io("duplicate", "the view namespace's fd"))?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Failed::sys("pipe"))?;
    if let ForkResult::Child = fork::fork().map_err(Failed::sys("fork supervisor"))? {
        drop(read_end);
        let _ = nix::unistd::close(inherited.node_netns.as_raw_fd());
        if let Some(v) = inherited.view {
            let _ = nix::unistd::close(v.as_raw_fd());
        }
        fork::exit_child(supervisor_main(req, write_end, view, netns));
    }
    drop((write_end, netns));
    let mut report = File::from(read_end);
    match frame::read::<Started, _>(&mut report) {
        Ok(Some(Started { result: Some(result) })) => Ok(result),
        Ok(_) => Err(Failed::NoReport(PodLayout::from_dir(&req.pod_dir).supervisor_log())),
        Err(e) => Err(Failed::BadRequest(e)),
    }
}

/// Runs in the forked child: becomes the pod's supervisor. Returns the exit code.
fn supervisor_main(
    req: &SpawnRequest,
    report_fd: OwnedFd,
    view: Option<OwnedFd>,
    netns: Option<OwnedFd>,
) -> i32 {
    let mut report_pipe = File::from(report_fd);
    detach_stdio(req);
    match start(req, view, netns) {
        Ok((mut sup, ready)) => {
            // Nobody to report to means nobody will ever own this pod (the spawner was
            // killed after a timeout and the daemon undid the pod): shut down, do not linger.
            if let Err(e) = frame::write(&mut report_pipe, &Started { result: Some(ready) }) {
                eprintln!(
                    "podbay-supervisor {}: report undeliverable ({e}); exiting",
                    req.sandbox_id
                );
                return sup.exit(1);
            }
            drop(report_pipe);
            sup.serve()
        }
        Err(e) => {
            eprintln!("podbay-supervisor {}: {e}", req.sandbox_id);
            let failure = started::Result::Failure(e.to_failure());
            let _ = frame::write(&mut report_pipe, &Started { result: Some(failure) });
            1
        }
    }
}

/// The spawner's stdin/stdout belong to the daemon: the supervisor gets /dev/null, and its
/// stderr goes to the pod's supervisor.log.
fn detach_stdio(req: &SpawnRequest) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = dup2_stdin(null.as_fd());
        let _ = dup2_stdout(null.as_fd());
    }
    let log = PodLayout::from_dir(&req.pod_dir).supervisor_log();
    if let Ok(log) = File::options().create(true).append(true).open(log) {
        let _ = dup2_stderr(log.as_fd());
    }
}

struct Supervisor {
    id: String,
    me: Identity,
    pod_init: Option<Identity>,
    listener: UnixListener,
    socket: PathBuf,
    reaped: u64,
    children: Children,
}

fn start(
    req: &SpawnRequest,
    view: Option<OwnedFd>,
    netns: Option<OwnedFd>,
) -> Result<(Supervisor, started::Result), Failed> {
    // The spawner ignores SIGCHLD; a supervisor reaps its children itself.
    fork::reap_children_automatically(false).map_err(Failed::sys("reset SIGCHLD"))?;
    setsid().map_err(Failed::sys("setsid"))?;
    let pod_pid_ns = enter_pod_namespaces(req, netns)?;
    // /proc/sys/net and the IPC sysctls are those of the writer's namespaces.
    for (key, value) in &req.sysctls {
        std::fs::write(sysctl_path(key), value).map_err(|source| Failed::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    prctl::set_child_subreaper(true).map_err(Failed::sys("set child subreaper"))?;
    let _ = prctl::set_name(c"podbay-pod");
    let me = Identity::of(getpid().as_raw() as u32)
        .map_err(Failed::io("own identity from", "/proc/self/stat"))?;
    let pod_init = match req.new_pid {
        true => Some(start_pod_init(pod_pid_ns, view.as_ref().map(AsFd::as_fd))?),
        false => None,
    };
    let (listener, socket) = match bind(&req.pod_dir) {
        Ok(bound) => bound,
        Err(e) => {
            if let Some(init) = pod_init {
                let _ = kill(Pid::from_raw(init.pid as i32), Signal::SIGKILL);
            }
            return Err(e);
        }
    };
    if !req.view_parents.is_empty() {
        let from = match view {
            Some(_) => "the view namespace",
            None => "a copy of the node's mount table (a mount of the node's is not shared)",
        };
        eprintln!("podbay-supervisor {}: containers are made from {from}", req.sandbox_id);
    }
    let ready = started::Result::Ready(Ready {
        supervisor: Some(me.to_proto()),
        pod_init: pod_init.map(Identity::to_proto),
    });
    let sup = Supervisor {
        id: req.sandbox_id.clone(),
        me,
        pod_init,
        listener,
        socket,
        reaped: 0,
        children: Children::new(view),
    };
    Ok((sup, ready))
}

/// Unshares the namespaces the pod owns and sets them up: `lo` up, the pod's interface
/// (its veth peer placed in the node's namespace), the hostname. With a user namespace of
/// its own, the namespaces are made by a helper inside it and joined (`userns.rs`); the
/// PID namespace made there is returned for the pod's PID 1. `netns`: the network
/// namespace the spawner made ahead (`netns_ahead`), joined instead of a new one.
fn enter_pod_namespaces(
    req: &SpawnRequest,
    netns: Option<OwnedFd>,
) -> Result<Option<File>, Failed> {
    // The node's namespace, for the veth peer; closed once the pod is wired.
    let node_netns = match &req.interface {
        Some(_) => {
            Some(File::open("/proc/self/ns/net").map_err(Failed::io("open", "/proc/self/ns/net"))?)
        }
        None => None,
    };
    let mut flags = CloneFlags::empty();
    for (on, flag) in [
        (req.new_net, CloneFlags::CLONE_NEWNET),
        (req.new_ipc, CloneFlags::CLONE_NEWIPC),
        (req.new_uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if on {
            flags |= flag;
        }
    }
    let mut pid_ns = None;
    if !req.uid_mappings.is_empty() {
        let pid_flag = if req.new_pid { CloneFlags::CLONE_NEWPID } else { CloneFlags::empty() };
        let made = userns::make(
            flags | pid_flag,
            &userns::map_text(&req.uid_mappings),
            &userns::map_text(&req.gid_mappings),
        )?;
        for (ns, flag, what) in [
            (&made.net, CloneFlags::CLONE_NEWNET, "join the pod's network namespace"),
            (&made.ipc, CloneFlags::CLONE_NEWIPC, "join the pod's IPC namespace"),
            (&made.uts, CloneFlags::CLONE_NEWUTS, "join the pod's UTS namespace"),
        ] {
            if let Some(ns) = ns {
                setns(ns, flag).map_err(Failed::sys(what))?;
            }
        }
        pid_ns = made.pid;
    } else {
        if let Some(ns) = netns.filter(|_| req.new_net) {
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(Failed::sys("join the network namespace made ahead"))?;
            flags.remove(CloneFlags::CLONE_NEWNET);
        }
        if !flags.is_empty() {
            unshare(flags).map_err(Failed::sys("unshare namespaces"))?;
        }
    }
    if req.new_net {
        let iface = req.interface.as_ref().map(pod_interface).transpose()?;
        match &node_netns {
            Some(ns) => podbay_netplug::pod::setup_here(iface.as_ref(), ns.as_fd())?,
            None => podbay_netplug::netns::set_lo_up_here()?,
        }
    }
    if req.new_uts && !req.hostname.is_empty() {
        sethostname(&req.hostname).map_err(Failed::sys("set hostname"))?;
    }
    Ok(pid_ns)
}

fn pod_interface(
    i: &podbay_proto::supervisor::v1::PodInterface,
) -> Result<podbay_netplug::pod::PodInterface, Failed> {
    let ip = |s: &str| s.parse().map_err(|e| Failed::Interface(format!("address {s:?}: {e}")));
    Ok(podbay_netplug::pod::PodInterface {
        host_veth: i.host_veth.clone(),
        address: ip(&i.address)?,
        prefix_len: i.prefix_len as u8,
        gateway: ip(&i.gateway)?,
        mtu: i.mtu,
    })
}

/// Binds the supervisor socket from inside the pod dir, so a long dir never overflows
/// sun_path.
fn bind(dir: &str) -> Result<(UnixListener, PathBuf), Failed> {
    let pod = PodLayout::from_dir(dir);
    chdir(pod.dir()).map_err(Failed::sys("enter the pod dir"))?;
    let _ = std::fs::remove_file(PodLayout::SOCKET_NAME);
    let listener =
        UnixListener::bind(PodLayout::SOCKET_NAME).map_err(Failed::io("bind", pod.socket()))?;
    let _ = chdir("/");
    listener.set_nonblocking(true).map_err(Failed::io("set non-blocking", pod.socket()))?;
    Ok((listener, pod.socket()))
}

/// Creates the pod's PID namespace (or enters the one made in the pod's user namespace)
/// and its PID 1; returns the PID 1's identity.
fn start_pod_init(made: Option<File>, view: Option<BorrowedFd<'_>>) -> Result<Identity, Failed> {
    let own = File::open("/proc/self/ns/pid").map_err(Failed::io("open", "/proc/self/ns/pid"))?;
    match made {
        Some(ns) => setns(&ns, CloneFlags::CLONE_NEWPID)
            .map_err(Failed::sys("enter the pod's pid namespace"))?,
        None => unshare(CloneFlags::CLONE_NEWPID).map_err(Failed::sys("unshare pid namespace"))?,
    }
    let parent = getpid();
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Failed::sys("pipe"))?;
    let child = match fork::fork().map_err(Failed::sys("fork pod init"))? {
        ForkResult::Child => pod_init(parent, view, File::from(report_w)),
        ForkResult::Parent { child } => child,
    };
    drop(report_w);
    // Children forked from here on (containers with their own PID mode) belong to the
    // node's PID namespace again.
    setns(&own, CloneFlags::CLONE_NEWPID).map_err(Failed::sys("return to the node's pid ns"))?;
    // Its answer: nothing (confined; the pipe closes with its other descriptors) or why not.
    let mut why = String::new();
    let _ = std::io::Read::read_to_string(&mut File::from(report_r), &mut why);
    if !why.is_empty() {
        let _ = kill(child, Signal::SIGKILL);
        return Err(Failed::PodInitUnconfined(why));
    }
    Identity::of(child.as_raw() as u32).map_err(Failed::io("pod init identity from", "/proc"))
}

/// PID 1 of the pod's PID namespace: reaps every zombie handed to it, dies with the
/// supervisor. Confined first (see [`confine_pod_init`]); if it cannot be, it exits.
fn pod_init(parent: Pid, view: Option<BorrowedFd<'_>>, mut report: File) -> ! {
    let _ = prctl::set_name(c"pod-init");
    if let Err(e) = confine_pod_init(view) {
        let _ = report.write_all(e.as_bytes());
        fork::exit_child(1);
    }
    // The report pipe goes with the rest: the supervisor reads its end as "confined".
    if fork::close_from(3).is_err() {
        let _ = report.write_all(b"close descriptors");
        fork::exit_child(1);
    }
    // After the uid change, which clears it.
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    // The supervisor may have died between fork and set_pdeathsig.
    if getppid() != parent && getppid().as_raw() != 0 {
        fork::exit_child(0);
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None);
    loop {
        let _ = chld.wait();
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// Every container of a pod that shares its PID namespace sees the pod init as PID 1, and
/// one with CAP_SYS_PTRACE may open its `/proc/1/root`, `cwd` and `fd/*` and attach to it.
/// So it keeps nothing of the node's: no descriptors but /dev/null (the others are closed
/// once it has reported, by closing its report pipe with them); a mount namespace of
/// its own (from the view when there is one, so it is small and receives nothing)
/// holding only an empty read-only tmpfs, its root; the nobody user, with no
/// capabilities and no supplementary groups (a uid change from 0 clears them all).
fn confine_pod_init(view: Option<BorrowedFd<'_>>) -> Result<(), String> {
    let sys = |what: &'static str| move |e: Errno| format!("{what}: {e}");
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    dup2_stdin(null.as_fd()).map_err(sys("dup2 stdin"))?;
    dup2_stdout(null.as_fd()).map_err(sys("dup2 stdout"))?;
    dup2_stderr(null.as_fd()).map_err(sys("dup2 stderr"))?;
    drop(null);
    if let Some(view) = view {
        // Not entered: the copy below is then of the node's table, as large but as empty
        // once pivoted.
        let _ = setns(view, CloneFlags::CLONE_NEWNS);
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare mount namespace"))?;
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(None::<&str>, "/", None::<&str>, private, None::<&str>).map_err(sys("make / private"))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), "/proc", Some("tmpfs"), flags, Some("size=4k,mode=0555"))
        .map_err(sys("mount the empty root"))?;
    chdir("/proc").map_err(sys("chdir"))?;
    // The old root goes under the new one and is detached: nothing else stays mounted.
    pivot_root(".", ".").map_err(sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the old root"))?;
    chdir("/").map_err(sys("chdir /"))?;
    let nobody = 65534;
    setgroups(&[]).map_err(sys("setgroups"))?;
    setresgid(Gid::from_raw(nobody), Gid::from_raw(nobody), Gid::from_raw(nobody))
        .map_err(sys("setresgid"))?;
    setresuid(Uid::from_raw(nobody), Uid::from_raw(nobody), Uid::from_raw(nobody))
        .map_err(sys("setresuid"))?;
    prctl::set_no_new_privs().map_err(sys("no_new_privs"))?;
    Ok(())
}

enum Next {
    Continue,
    Exit(i32),
}

impl Supervisor {
    fn serve(mut self) -> i32 {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT]
        {
            mask.add(s);
        }
        if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
            eprintln!("podbay-supervisor {}: block signals: {e}", self.id);
            return self.exit(1);
        }
        let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("podbay-supervisor {}: signalfd: {e}", self.id);
                return self.exit(1);
            }
        };
        loop {
            let (sig_ready, conn_ready, readable) = {
                let extra = self.children.poll_fds();
                let mut fds = vec![
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(extra.iter().map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN)));
                match poll(&mut fds, self.children.poll_timeout()) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("podbay-supervisor {}: poll: {e}", self.id);
                        return self.exit(1);
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let readable: Vec<_> = extra
                    .iter()
                    .zip(&fds[2..])
                    .filter(|(_, f)| ready(f))
                    .map(|((_, src), _)| *src)
                    .collect();
                (ready(&fds[0]), ready(&fds[1]), readable)
            };
            for src in readable {
                self.children.on_readable(src);
            }
            if sig_ready {
                while let Ok(Some(info)) = sfd.read_signal() {
                    if let Next::Exit(code) = self.on_signal(info.ssi_signo as i32) {
                        return self.exit(code);
                    }
                }
            }
            self.children.on_timeouts();
            if conn_ready {
                while let Ok((stream, _)) = self.listener.accept() {
                    if let Next::Exit(code) = self.on_connection(stream) {
                        return self.exit(code);
                    }
                }
            }
        }
    }

    fn on_signal(&mut self, signo: i32) -> Next {
        match Signal::try_from(signo) {
            Ok(Signal::SIGCHLD) => self.reap(),
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) => Next::Exit(0),
            _ => Next::Continue,
        }
    }

    fn reap(&mut self) -> Next {
        let mut next = Next::Continue;
        loop {
            // __WALL: libcontainer clones with CLONE_PARENT, which may leave no exit signal.
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return next,
                Ok(status) => {
                    self.reaped += 1;
                    self.children.on_exit(status);
                    let pid = status.pid().map(|p| p.as_raw() as u32);
                    if pid.is_some() && pid == self.pod_init.map(|i| i.pid) {
                        // Without its PID 1 the pod's PID namespace is gone: the pod is over.
                        eprintln!("podbay-supervisor {}: pod init exited: {status:?}", self.id);
                        self.pod_init = None;
                        next = Next::Exit(1);
                    }
                }
            }
        }
    }

    fn on_connection(&mut self, mut stream: UnixStream) -> Next {
        // Only the daemon's user may drive the supervisor.
        let allowed = getsockopt(&stream, PeerCredentials)
            .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw());
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let (answer, next) = if !allowed {
            (Err(Failed::NotDaemon), Next::Continue)
        } else {
            match frame::read::<Request, _>(&mut stream) {
                Ok(Some(Request { kind: Some(request::Kind::Attach(req)) })) => {
                    // The connection stays with the attacher (see Children::attach).
                    match self.children.attach(&req, stream) {
                        Ok(()) => return Next::Continue,
                        Err((e, s)) => {
                            stream = s;
                            // No descriptors come: a zero byte, then the failure.
                            let _ = stream.write_all(&[0]);
                            (Err(e), Next::Continue)
                        }
                    }
                }
                Ok(Some(Request { kind: Some(request::Kind::Exec(req)) })) => {
                    // Answered when the command exits (see Children::on_exit).
                    match self.children.exec(&req, stream) {
                        Ok(()) => return Next::Continue,
                        Err((e, s)) => {
                            stream = s;
                            if req.streamed {
                                // No pipes come: a zero byte, then the failure.
                                let _ = stream.write_all(&[0]);
                            }
                            (Err(e), Next::Continue)
                        }
                    }
                }
                Ok(Some(Request { kind: Some(kind) })) => self.handle(kind),
                Ok(_) => return Next::Continue,
                Err(e) => (Err(Failed::BadRequest(e)), Next::Continue),
            }
        };
        let kind = answer.unwrap_or_else(|e| response::Kind::Failure(e.to_failure()));
        let _ = frame::write(&mut stream, &Response { kind: Some(kind) });
        next
    }

    fn handle(&mut self, kind: request::Kind) -> (Result<response::Kind, Failed>, Next) {
        use response::Kind as R;
        let answer = match kind {
            request::Kind::Ping(_) => Ok(R::Ping(PingResponse {
                api_version: API_VERSION,
                sandbox_id: self.id.clone(),
                supervisor: Some(self.me.to_proto()),
                pod_init: self.pod_init.map(Identity::to_proto),
                reaped: self.reaped,
            })),
            request::Kind::Shutdown(_) => {
                return (Ok(R::Shutdown(ShutdownResponse {})), Next::Exit(0));
            }
            request::Kind::CreateContainer(req) => {
                self.children.create(&req).map(R::CreateContainer)
            }
            request::Kind::StartContainer(req) => {
                self.children.start(&req.id).map(R::StartContainer)
            }
            request::Kind::SignalContainer(req) => self
                .children
                .signal(&req.id, req.signal, req.all)
                .map(|()| R::SignalContainer(SignalContainerResponse {})),
            request::Kind::ContainerStates(_) => {
                // Exits not yet read from the signalfd are collected first.
                if let Next::Exit(code) = self.reap() {
                    return (Err(Failed::PodInitGone), Next::Exit(code));
                }
                let containers = self.children.states();
                Ok(R::ContainerStates(ContainerStatesResponse { containers }))
            }
            request::Kind::ForgetContainer(req) => {
                self.children.forget(&req.id);
                Ok(R::ForgetContainer(ForgetContainerResponse {}))
            }
            request::Kind::ReopenLog(req) => {
                self.children.reopen_log(&req.id).map(|()| R::ReopenLog(ReopenLogResponse {}))
            }
            request::Kind::Exec(_) => Err(Failed::Misrouted("Exec")),
            request::Kind::Attach(_) => Err(Failed::Misrouted("Attach")),
        };
        (answer, Next::Continue)
    }

    /// Kills the pod's processes, reaps them, removes the socket, and returns `code`.
    fn exit(&mut self, code: i32) -> i32 {
        self.children.kill_all();
        if let Some(init) = self.pod_init.take() {
            // SIGKILL to a PID namespace's init kills every process in it.
            let _ = kill(Pid::from_raw(init.pid as i32), Signal::SIGKILL);
        }
        // Reap whatever is left; children are gone or going.
        while waitpid(None, None).is_ok() {}
        let _ = std::fs::remove_file(&self.socket);
        code
    }
}

/// `/proc/sys/…` of a sysctl given with dots (`net.ipv4.ip_forward`) or slashes
/// (`net/ipv4/conf/eth0.100/forwarding`, for names that contain dots).
pub fn sysctl_path(key: &str) -> std::path::PathBuf {
    let rel = if key.contains('/') { key.to_owned() } else { key.replace('.', "/") };
    std::path::Path::new("/proc/sys").join(rel)
}
