//! The pod supervisor process (`podbay-supervisor`): the pod's pause process.
//!
//! Single-threaded and without an async runtime, so forking (and, with the containers
//! issue, libcontainer's clone) is safe. Start-up:
//!
//! 1. setsid; unshare the namespaces the pod owns (net, ipc, uts); set the hostname.
//! 2. fork: the first process exits, the child is the supervisor (so it is not the
//!    daemon's child and survives the daemon).
//! 3. PR_SET_CHILD_SUBREAPER; for PID mode POD, unshare the PID namespace and fork the
//!    pod's PID 1 (`pod-init`, reaps zombies), then return to the node's PID namespace.
//! 4. bind `<pod dir>/shim.sock`, report `Started` on stdout, serve until told to stop.
//!
//! Any failure before the report is itself reported, and the process exits.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, dup2_stdout, fork, getpid, getppid, setsid, sethostname};
use podbay_proto::frame;
use podbay_proto::shim::v1::{
    API_VERSION, Failure, PingResponse, Ready, Request, Response, ShutdownResponse, Started,
    request, response, started,
};

use super::Identity;
use crate::layout::PodLayout;

/// Command-line arguments, as `supervisor::spawn` passes them.
#[derive(Debug, Default)]
pub struct Args {
    pub id: String,
    pub dir: PathBuf,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
    pub hostname: Option<String>,
}

impl Args {
    pub fn parse(mut argv: impl Iterator<Item = OsString>) -> Result<Args, String> {
        let mut args = Args::default();
        while let Some(arg) = argv.next() {
            let mut value = |name: &str| {
                argv.next().ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.to_str() {
                Some("--id") => args.id = value("--id")?.to_string_lossy().into_owned(),
                Some("--dir") => args.dir = value("--dir")?.into(),
                Some("--hostname") => {
                    args.hostname = Some(value("--hostname")?.to_string_lossy().into_owned())
                }
                Some("--net") => args.net = true,
                Some("--ipc") => args.ipc = true,
                Some("--uts") => args.uts = true,
                Some("--pid") => args.pid = true,
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        if args.id.is_empty() || args.dir.as_os_str().is_empty() {
            return Err("--id and --dir are required".into());
        }
        Ok(args)
    }
}

/// Runs the supervisor; returns the process exit code.
pub fn main(args: Args) -> i32 {
    match start(&args) {
        Ok(Some(sup)) => sup.serve(),
        Ok(None) => 0, // the first process, after forking the supervisor
        Err(message) => {
            eprintln!("podbay-supervisor {}: {message}", args.id);
            report(started::Result::Failure(Failure { message }));
            1
        }
    }
}

fn report(result: started::Result) {
    let mut out = std::io::stdout().lock();
    let _ = frame::write(&mut out, &Started { result: Some(result) });
    let _ = out.flush();
}

struct Supervisor {
    id: String,
    me: Identity,
    pod_init: Option<Identity>,
    listener: UnixListener,
    socket: PathBuf,
    reaped: u64,
}

fn start(args: &Args) -> Result<Option<Supervisor>, String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let mut flags = CloneFlags::empty();
    for (on, flag) in [
        (args.net, CloneFlags::CLONE_NEWNET),
        (args.ipc, CloneFlags::CLONE_NEWIPC),
        (args.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if on {
            flags |= flag;
        }
    }
    if !flags.is_empty() {
        unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    }
    if args.uts {
        if let Some(h) = &args.hostname {
            sethostname(h).map_err(|e| format!("set hostname {h:?}: {e}"))?;
        }
    }
    // SAFETY: this process is single-threaded (no thread was ever started), so the child
    // may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => return Ok(None),
        ForkResult::Child => {}
    }
    prctl::set_child_subreaper(true).map_err(|e| format!("set child subreaper: {e}"))?;
    let _ = prctl::set_name(c"podbay-pod");
    let me = Identity::of(getpid().as_raw() as u32).map_err(|e| format!("own identity: {e}"))?;
    let pod_init = if args.pid { Some(start_pod_init()?) } else { None };
    let result = bind(args).map(|(listener, socket)| Supervisor {
        id: args.id.clone(),
        me,
        pod_init,
        listener,
        socket,
        reaped: 0,
    });
    let sup = match result {
        Ok(sup) => sup,
        Err(e) => {
            if let Some(init) = pod_init {
                let _ = kill(Pid::from_raw(init.pid as i32), Signal::SIGKILL);
            }
            return Err(e);
        }
    };
    report(started::Result::Ready(Ready {
        supervisor: Some(me.to_proto()),
        pod_init: pod_init.map(Identity::to_proto),
    }));
    // From now on stdout is nobody's business; the daemon only reads the one report.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = dup2_stdout(null.as_fd());
    }
    Ok(Some(sup))
}

/// Binds the shim socket from inside the pod dir, so a long dir never overflows sun_path.
fn bind(args: &Args) -> Result<(UnixListener, PathBuf), String> {
    let pod = PodLayout::from_dir(&args.dir);
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
            let (sig_ready, conn_ready) = {
                let mut fds = [
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("podbay-supervisor {}: poll: {e}", self.id);
                        return self.exit(1);
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if sig_ready {
                while let Ok(Some(info)) = sfd.read_signal() {
                    if let Next::Exit(code) = self.on_signal(info.ssi_signo as i32) {
                        return self.exit(code);
                    }
                }
            }
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
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return next,
                Ok(status) => {
                    self.reaped += 1;
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
        }
    }

    /// Kills the pod's processes, reaps them, removes the socket, and returns `code`.
    fn exit(&mut self, code: i32) -> i32 {
        if let Some(init) = self.pod_init.take() {
            // SIGKILL to a PID namespace's init kills every process in it.
            let _ = kill(Pid::from_raw(init.pid as i32), Signal::SIGKILL);
        }
        // Reap whatever is left; children are gone or going.
        while waitpid(None, None).is_ok() {}
        let _ = std::fs::remove_file(&self.socket);
        let _ = self.listener.as_raw_fd();
        code
    }
}

fn failure(message: &str) -> response::Kind {
    response::Kind::Failure(Failure { message: message.into() })
}
