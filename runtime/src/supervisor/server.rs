//! The pod supervisor process (`podbay-supervisor`): the pod's pause process.
//!
//! Single-threaded and without an async runtime, so forking (and, with the containers
//! issue, libcontainer's clone) is safe.
//!
//! The daemon starts one **spawner** (`podbay-supervisor`, this binary) and sends it a
//! `SpawnRequest` per pod. The spawner forks; the child becomes the pod's supervisor:
//!
//! 1. setsid; unshare the namespaces the pod owns (net, ipc, uts); `lo` up; with an
//!    interface, create the veth pair (eth0 here, the peer in the node's namespace), the
//!    address and the default route; set the hostname.
//! 2. PR_SET_CHILD_SUBREAPER; for PID mode POD, unshare the PID namespace and fork the
//!    pod's PID 1 (`pod-init`, reaps zombies), then return to the node's PID namespace.
//! 3. bind `<pod dir>/shim.sock`, report `Started` through a pipe to the spawner, which
//!    forwards it to the daemon; serve until told to stop.
//!
//! Forking from a warm, small process instead of exec'ing a binary per pod saves the exec
//! and dynamic loading (~0.7 ms on a 2-core VM). Children are not reaped by the spawner
//! (SIGCHLD is ignored there), and a supervisor does not depend on the spawner or the
//! daemon: both may exit or restart while pods run. The spawner exits when the daemon
//! closes its stdin.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, Pid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, fork, getpid, getppid,
    sethostname, setsid,
};
use podbay_proto::frame;
use podbay_proto::shim::v1::{
    API_VERSION, ContainerStatesResponse, Failure, ForgetContainerResponse, PingResponse, Ready,
    ReopenLogResponse, Request, Response, ShutdownResponse, SignalContainerResponse, SpawnRequest,
    Started, request, response, started,
};

use super::Identity;
use super::containers::Containers;
use crate::layout::PodLayout;

/// The spawner's loop: one SpawnRequest in, one Started out, until stdin closes.
pub fn spawner_main() -> i32 {
    let _ = prctl::set_name(c"podbay-spawner");
    // Supervisors are reaped by the kernel (or by init once the spawner is gone).
    // SAFETY: SIG_IGN installs no handler code; the process is single-threaded.
    if let Err(e) = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) } {
        eprintln!("podbay-spawner: ignore SIGCHLD: {e}");
        return 1;
    }
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    loop {
        let req = match frame::read::<SpawnRequest, _>(&mut stdin) {
            Ok(Some(req)) => req,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("podbay-spawner: read request: {e}");
                return 1;
            }
        };
        let result = spawn_one(&req).unwrap_or_else(|message| {
            started::Result::Failure(Failure { message, ..Default::default() })
        });
        if frame::write(&mut stdout, &Started { result: Some(result) })
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return 1;
        }
    }
}

/// Forks a supervisor and returns its start-up report.
fn spawn_one(req: &SpawnRequest) -> Result<started::Result, String> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the spawner is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(|e| format!("fork supervisor: {e}"))? {
        ForkResult::Child => {
            drop(read_end);
            std::process::exit(supervisor_main(req, write_end));
        }
        ForkResult::Parent { .. } => {}
    }
    drop(write_end);
    let mut report = File::from(read_end);
    match frame::read::<Started, _>(&mut report) {
        Ok(Some(Started { result: Some(result) })) => Ok(result),
        Ok(_) => Err("supervisor exited before reporting; see its supervisor.log".into()),
        Err(e) => Err(format!("unreadable supervisor report: {e}")),
    }
}

/// Runs in the forked child: becomes the pod's supervisor. Returns the exit code.
fn supervisor_main(req: &SpawnRequest, report_fd: OwnedFd) -> i32 {
    let mut report_pipe = File::from(report_fd);
    detach_stdio(req);
    match start(req) {
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
        Err(StartError { message, field }) => {
            eprintln!("podbay-supervisor {}: {message}", req.sandbox_id);
            let failure = started::Result::Failure(Failure { message, field });
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
    containers: Containers,
}

/// Why a supervisor could not start; `field` names the pod config's field at fault.
struct StartError {
    message: String,
    field: String,
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError { message, field: String::new() }
    }
}

fn start(req: &SpawnRequest) -> Result<(Supervisor, started::Result), StartError> {
    // The spawner ignores SIGCHLD; a supervisor reaps its children itself.
    // SAFETY: SIG_DFL installs no handler code; this process is single-threaded.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }
        .map_err(|e| format!("reset SIGCHLD: {e}"))?;
    setsid().map_err(|e| format!("setsid: {e}"))?;
    // The node's namespace, for the veth peer; closed once the pod is wired.
    let node_netns = match &req.interface {
        Some(_) => {
            Some(File::open("/proc/self/ns/net").map_err(|e| format!("open node netns: {e}"))?)
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
    if !flags.is_empty() {
        unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    }
    if req.new_net {
        let iface = req.interface.as_ref().map(pod_interface).transpose()?;
        match &node_netns {
            Some(ns) => podbay_netplug::pod::setup_here(iface.as_ref(), ns.as_fd()),
            None => podbay_netplug::netns::set_lo_up_here(),
        }
        .map_err(|e| e.to_string())?;
    }
    drop(node_netns);
    if req.new_uts && !req.hostname.is_empty() {
        sethostname(&req.hostname).map_err(|e| format!("set hostname {:?}: {e}", req.hostname))?;
    }
    // /proc/sys/net and the IPC sysctls are those of the writer's namespaces.
    for (key, value) in &req.sysctls {
        std::fs::write(sysctl_path(key), value).map_err(|e| StartError {
            message: format!("the kernel refused sysctl {key}={value:?}: {e}"),
            field: format!("config.linux.sysctls[{key:?}]"),
        })?;
    }
    prctl::set_child_subreaper(true).map_err(|e| format!("set child subreaper: {e}"))?;
    let _ = prctl::set_name(c"podbay-pod");
    let me = Identity::of(getpid().as_raw() as u32).map_err(|e| format!("own identity: {e}"))?;
    let pod_init = if req.new_pid { Some(start_pod_init()?) } else { None };
    let (listener, socket) = match bind(&req.pod_dir) {
        Ok(bound) => bound,
        Err(e) => {
            if let Some(init) = pod_init {
                let _ = kill(Pid::from_raw(init.pid as i32), Signal::SIGKILL);
            }
            return Err(e.into());
        }
    };
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
        containers: Containers::default(),
    };
    Ok((sup, ready))
}

fn pod_interface(
    i: &podbay_proto::shim::v1::PodInterface,
) -> Result<podbay_netplug::pod::PodInterface, String> {
    let ip = |s: &str| s.parse().map_err(|e| format!("bad interface address {s:?}: {e}"));
    Ok(podbay_netplug::pod::PodInterface {
        host_veth: i.host_veth.clone(),
        address: ip(&i.address)?,
        prefix_len: i.prefix_len as u8,
        gateway: ip(&i.gateway)?,
        mtu: i.mtu,
    })
}

/// Binds the shim socket from inside the pod dir, so a long dir never overflows sun_path.
fn bind(dir: &str) -> Result<(UnixListener, PathBuf), String> {
    let pod = PodLayout::from_dir(dir);
    chdir(pod.dir()).map_err(|e| format!("enter {}: {e}", pod.dir().display()))?;
    let _ = std::fs::remove_file(PodLayout::SOCKET_NAME);
    let listener = UnixListener::bind(PodLayout::SOCKET_NAME)
        .map_err(|e| format!("bind {}: {e}", pod.socket().display()))?;
    let _ = chdir("/");
    listener.set_nonblocking(true).map_err(|e| format!("socket: {e}"))?;
    Ok((listener, pod.socket()))
}

/// Creates the pod's PID namespace and its PID 1; returns the PID 1's identity.
fn start_pod_init() -> Result<Identity, String> {
    let own = File::open("/proc/self/ns/pid").map_err(|e| format!("open own pid ns: {e}"))?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid namespace: {e}"))?;
    let parent = getpid();
    // SAFETY: single-threaded process, see `start`.
    let child = match unsafe { fork() }.map_err(|e| format!("fork pod init: {e}"))? {
        ForkResult::Child => pod_init(parent),
        ForkResult::Parent { child } => child,
    };
    // Children forked from here on (containers with their own PID mode) belong to the
    // node's PID namespace again.
    setns(&own, CloneFlags::CLONE_NEWPID).map_err(|e| format!("return to pid ns: {e}"))?;
    Identity::of(child.as_raw() as u32).map_err(|e| format!("pod init identity: {e}"))
}

/// PID 1 of the pod's PID namespace: reaps every zombie handed to it, dies with the
/// supervisor.
fn pod_init(parent: Pid) -> ! {
    let _ = prctl::set_name(c"pod-init");
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    // The supervisor may have died between fork and set_pdeathsig.
    if getppid() != parent && getppid().as_raw() != 0 {
        std::process::exit(0);
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
                let extra = self.containers.poll_fds();
                let mut fds = vec![
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(extra.iter().map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN)));
                match poll(&mut fds, self.containers.poll_timeout()) {
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
                self.containers.on_readable(src);
            }
            if sig_ready {
                while let Ok(Some(info)) = sfd.read_signal() {
                    if let Next::Exit(code) = self.on_signal(info.ssi_signo as i32) {
                        return self.exit(code);
                    }
                }
            }
            self.containers.on_timeouts();
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
                    self.containers.on_exit(status);
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
        let (kind, next) = if !allowed {
            (failure("peer is not the daemon's user"), Next::Continue)
        } else {
            match frame::read::<Request, _>(&mut stream) {
                Ok(Some(Request { kind: Some(request::Kind::Exec(req)) })) => {
                    // Answered when the command exits (see Containers::on_exit).
                    match self.containers.exec(&req, stream) {
                        Ok(()) => return Next::Continue,
                        Err((message, s)) => {
                            stream = s;
                            (failure(&message), Next::Continue)
                        }
                    }
                }
                Ok(Some(Request { kind: Some(kind) })) => self.handle(kind),
                Ok(_) => return Next::Continue,
                Err(e) => (failure(&format!("bad request: {e}")), Next::Continue),
            }
        };
        let _ = frame::write(&mut stream, &Response { kind: Some(kind) });
        next
    }

    fn handle(&mut self, kind: request::Kind) -> (response::Kind, Next) {
        match kind {
            request::Kind::Ping(_) => (
                response::Kind::Ping(PingResponse {
                    api_version: API_VERSION,
                    sandbox_id: self.id.clone(),
                    supervisor: Some(self.me.to_proto()),
                    pod_init: self.pod_init.map(Identity::to_proto),
                    reaped: self.reaped,
                }),
                Next::Continue,
            ),
            request::Kind::Shutdown(_) => {
                (response::Kind::Shutdown(ShutdownResponse {}), Next::Exit(0))
            }
            request::Kind::CreateContainer(req) => (
                reply(self.containers.create(&req), response::Kind::CreateContainer),
                Next::Continue,
            ),
            request::Kind::StartContainer(req) => (
                reply(self.containers.start(&req.id), response::Kind::StartContainer),
                Next::Continue,
            ),
            request::Kind::SignalContainer(req) => (
                reply(
                    self.containers
                        .signal(&req.id, req.signal, req.all)
                        .map(|()| SignalContainerResponse {}),
                    response::Kind::SignalContainer,
                ),
                Next::Continue,
            ),
            request::Kind::ContainerStates(_) => {
                // Exits not yet read from the signalfd are collected first.
                if let Next::Exit(code) = self.reap() {
                    return (failure("pod init exited"), Next::Exit(code));
                }
                let containers = self.containers.states();
                (
                    response::Kind::ContainerStates(ContainerStatesResponse { containers }),
                    Next::Continue,
                )
            }
            request::Kind::ForgetContainer(req) => {
                self.containers.forget(&req.id);
                (response::Kind::ForgetContainer(ForgetContainerResponse {}), Next::Continue)
            }
            request::Kind::ReopenLog(req) => (
                reply(
                    self.containers.reopen_log(&req.id).map(|()| ReopenLogResponse {}),
                    response::Kind::ReopenLog,
                ),
                Next::Continue,
            ),
            request::Kind::Exec(_) => (failure("exec is answered on its own"), Next::Continue),
        }
    }

    /// Kills the pod's processes, reaps them, removes the socket, and returns `code`.
    fn exit(&mut self, code: i32) -> i32 {
        self.containers.kill_all();
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

fn reply<T>(result: Result<T, String>, kind: fn(T) -> response::Kind) -> response::Kind {
    match result {
        Ok(v) => kind(v),
        Err(message) => failure(&message),
    }
}

fn failure(message: &str) -> response::Kind {
    response::Kind::Failure(Failure { message: message.into(), ..Default::default() })
}

/// `/proc/sys/…` of a sysctl given with dots (`net.ipv4.ip_forward`) or slashes
/// (`net/ipv4/conf/eth0.100/forwarding`, for names that contain dots).
pub fn sysctl_path(key: &str) -> std::path::PathBuf {
    let rel = if key.contains('/') { key.to_owned() } else { key.replace('.', "/") };
    std::path::Path::new("/proc/sys").join(rel)
}
