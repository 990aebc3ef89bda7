//! The supervisor's side of containers: create and start them with libcontainer, hold
//! their stdout/stderr pipes and write the CRI log, record exits, run ExecSync commands.
//!
//! libcontainer's calls run in a short-lived child of the supervisor (`in_child`): they
//! change the calling process (oom_score_adj, dumpable, cwd) and allocate, and the
//! supervisor must stay small and unchanged. The container's processes are cloned with
//! `CLONE_PARENT` (libcontainer's `as_sibling`), so they are the supervisor's children
//! all the same: it reaps them and sees their exit status.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use oci_spec::runtime::{LinuxSeccompAction, LinuxSyscallBuilder, Spec};
use podbay_proto::shim::v1::{
    ContainerState, CreateContainerRequest, CreateContainerResponse, ExecRequest, ExecResponse,
    StartContainerResponse,
};

use super::Identity;
use super::crilog::{LogStream, timestamp};
use crate::image::registry::chain;

/// How long a libcontainer call in a child may take.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// One container as the supervisor holds it.
struct Ctr {
    init: Identity,
    started_at: i64,
    exit: Option<Exit>,
    state_root: PathBuf,
    out: [Option<Pipe>; 2],
    /// The write end of an open stdin (CRI `stdin`), held so reads block instead of
    /// seeing EOF.
    stdin: Option<OwnedFd>,
    log_path: PathBuf,
    log: Option<File>,
}

#[derive(Clone, Copy)]
struct Exit {
    code: i32,
    signal: i32,
    finished_at: i64,
}

/// The read end of a container's stdout or stderr pipe.
struct Pipe {
    fd: OwnedFd,
    stream: LogStream,
}

/// An ExecSync in flight: the daemon's connection waits for its answer.
struct Exec {
    pid: i32,
    reply: UnixStream,
    out: [Option<OwnedFd>; 2],
    buf: [Vec<u8>; 2],
    truncated: [bool; 2],
    limit: usize,
    deadline: Option<Instant>,
}

/// What a readable fd in the poll set belongs to.
#[derive(Clone, Copy)]
pub enum Source {
    Log(usize, usize),
    Exec(usize, usize),
}

#[derive(Default)]
pub struct Containers {
    ctrs: Vec<(String, Ctr)>,
    execs: Vec<Exec>,
    /// Exits of processes reaped before anyone claimed them.
    unclaimed: HashMap<i32, WaitStatus>,
}

pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl Containers {
    fn find(&mut self, id: &str) -> Result<&mut Ctr, String> {
        self.ctrs
            .iter_mut()
            .find(|(i, _)| i == id)
            .map(|(_, c)| c)
            .ok_or_else(|| format!("container {id} is not in this pod"))
    }

    pub fn create(
        &mut self,
        req: &CreateContainerRequest,
    ) -> Result<CreateContainerResponse, String> {
        if self.ctrs.iter().any(|(i, _)| *i == req.id) {
            return Err(format!("container {} already exists in this pod", req.id));
        }
        let log_path = PathBuf::from(&req.log_path);
        let log = open_log(&log_path)?;
        let (id, bundle, root) =
            (req.id.clone(), PathBuf::from(&req.bundle), PathBuf::from(&req.state_root));
        // With a terminal, the container's init sends its pty master to this socket (as
        // runc's --console-socket); without, stdout and stderr are pipes.
        let console = req.tty.then(|| Console::bind(&root, &req.id)).transpose()?;
        let (out, pipes) = match &console {
            Some(_) => ([None, None], None),
            None => {
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                let out = [
                    Some(Pipe { fd: out_r, stream: LogStream::stdout() }),
                    Some(Pipe { fd: err_r, stream: LogStream::stderr() }),
                ];
                (out, Some((out_w, err_w)))
            }
        };
        let (stdin_r, stdin_w) = match req.stdin && !req.tty {
            true => pipe2(OFlag::O_CLOEXEC)
                .map(|(r, w)| (Some(r), Some(w)))
                .map_err(|e| format!("pipe: {e}"))?,
            false => (None, None),
        };
        let console_path = console.as_ref().map(|c| c.path.clone());
        let pid = in_child(move || {
            let mut builder = ContainerBuilder::new(id, SyscallType::Linux)
                .with_root_path(root)
                .map_err(|e| chain(&e))?
                .with_console_socket(console_path);
            if let Some((out_w, err_w)) = pipes {
                builder = builder.with_stdout(out_w).with_stderr(err_w);
            }
            if let Some(r) = stdin_r {
                builder = builder.with_stdin(r);
            }
            let container = builder
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .as_sibling(true)
                .build()
                .map_err(|e| chain(&e))?;
            Ok(container.pid().map(|p| p.as_raw()).unwrap_or(0).to_string())
        })?;
        let pid: u32 = pid.parse().map_err(|_| format!("libcontainer reported pid {pid:?}"))?;
        let init = Identity::of(pid).map_err(|e| format!("container init {pid}: {e}"))?;
        let out = match console {
            Some(c) => [Some(Pipe { fd: c.receive()?, stream: LogStream::stdout() }), None],
            None => out,
        };
        let ctr = Ctr {
            init,
            started_at: 0,
            exit: None,
            state_root: PathBuf::from(&req.state_root),
            out,
            stdin: stdin_w,
            log_path,
            log,
        };
        self.ctrs.push((req.id.clone(), ctr));
        Ok(CreateContainerResponse { init: Some(init.to_proto()) })
    }

    pub fn start(&mut self, id: &str) -> Result<StartContainerResponse, String> {
        let ctr = self.find(id)?;
        if ctr.exit.is_some() {
            return Err(format!("container {id} has exited"));
        }
        let dir = ctr.state_root.join(id);
        in_child(move || {
            let mut c = Container::load(dir).map_err(|e| chain(&e))?;
            c.start().map_err(|e| chain(&e))?;
            Ok(String::new())
        })?;
        ctr.started_at = now_ns();
        Ok(StartContainerResponse { started_at: ctr.started_at })
    }

    pub fn signal(&mut self, id: &str, signo: i32, all: bool) -> Result<(), String> {
        let ctr = self.find(id)?;
        if ctr.exit.is_some() {
            return Ok(());
        }
        let sig = Signal::try_from(signo).map_err(|_| format!("bad signal {signo}"))?;
        // Not reaped yet (no exit recorded), so the pid is still this container's init.
        match kill(Pid::from_raw(ctr.init.pid as i32), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(format!("signal container {id}: {e}")),
        }
        if all {
            let dir = ctr.state_root.join(id);
            // Every process of the container's cgroup (PID mode POD or NODE leaves others
            // behind when only init dies); libcontainer freezes the cgroup while it kills.
            let _ = in_child(move || {
                let mut c = Container::load(dir).map_err(|e| chain(&e))?;
                let sig = libcontainer::signal::Signal::try_from(signo).map_err(|e| chain(&e))?;
                c.kill(sig, true).map_err(|e| chain(&e))?;
                Ok(String::new())
            });
        }
        Ok(())
    }

    pub fn states(&self) -> Vec<ContainerState> {
        self.ctrs
            .iter()
            .map(|(id, c)| ContainerState {
                id: id.clone(),
                init: Some(c.init.to_proto()),
                started_at: c.started_at,
                exited: c.exit.is_some(),
                exit_code: c.exit.map_or(0, |e| e.code),
                signal: c.exit.map_or(0, |e| e.signal),
                finished_at: c.exit.map_or(0, |e| e.finished_at),
            })
            .collect()
    }

    pub fn forget(&mut self, id: &str) {
        self.ctrs.retain(|(i, _)| i != id);
    }

    pub fn reopen_log(&mut self, id: &str) -> Result<(), String> {
        let ctr = self.find(id)?;
        ctr.log = open_log(&ctr.log_path)?;
        Ok(())
    }

    /// Starts an ExecSync command; the answer goes to `reply` when it exits.
    pub fn exec(
        &mut self,
        req: &ExecRequest,
        reply: UnixStream,
    ) -> Result<(), (String, UnixStream)> {
        let ctr = match self.find(&req.id) {
            Ok(c) if c.exit.is_none() && c.started_at != 0 => c,
            Ok(_) => return Err((format!("container {} is not running", req.id), reply)),
            Err(e) => return Err((e, reply)),
        };
        let root = ctr.state_root.clone();
        let started = (|| {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (id, args) = (req.id.clone(), req.args.clone());
            let pid = in_child(move || {
                let process = exec_process(&root, &id, args)?;
                let pid = ContainerBuilder::new(id, SyscallType::Linux)
                    .with_root_path(root)
                    .map_err(|e| chain(&e))?
                    .with_stdout(out_w)
                    .with_stderr(err_w)
                    .as_tenant()
                    .with_process(Some(&*process))
                    .with_detach(true)
                    .as_sibling(true)
                    .build()
                    .map_err(|e| chain(&e))?;
                Ok(pid.as_raw().to_string())
            })?;
            let pid = pid.parse().map_err(|_| format!("libcontainer reported pid {pid:?}"))?;
            Ok::<_, String>((pid, out_r, err_r))
        })();
        let (pid, out_r, err_r) = match started {
            Ok(s) => s,
            Err(e) => return Err((e, reply)),
        };
        let deadline =
            (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
        self.execs.push(Exec {
            pid,
            reply,
            out: [Some(out_r), Some(err_r)],
            buf: [Vec::new(), Vec::new()],
            truncated: [false, false],
            limit: req.output_limit as usize,
            deadline,
        });
        // It may have exited already, reaped while nobody knew its pid.
        if let Some(status) = self.unclaimed.remove(&pid) {
            self.on_exit(status);
        }
        Ok(())
    }

    /// The fds to poll, with what each belongs to.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, Source)> {
        let mut fds = Vec::new();
        for (ci, (_, c)) in self.ctrs.iter().enumerate() {
            for (si, p) in c.out.iter().enumerate() {
                if let Some(p) = p {
                    fds.push((p.fd.as_fd(), Source::Log(ci, si)));
                }
            }
        }
        for (ei, e) in self.execs.iter().enumerate() {
            for (si, fd) in e.out.iter().enumerate() {
                if let Some(fd) = fd {
                    fds.push((fd.as_fd(), Source::Exec(ei, si)));
                }
            }
        }
        fds
    }

    /// How long poll may sleep before an exec's deadline.
    pub fn poll_timeout(&self) -> PollTimeout {
        let now = Instant::now();
        match self.execs.iter().filter_map(|e| e.deadline).min() {
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_millis().min(60_000) as u16;
                PollTimeout::from(ms.max(1))
            }
            None => PollTimeout::NONE,
        }
    }

    /// Reads what a readable fd has.
    pub fn on_readable(&mut self, src: Source) {
        match src {
            Source::Log(ci, si) => {
                let ctr = &mut self.ctrs[ci].1;
                pump_log(&mut ctr.out[si], &mut ctr.log);
            }
            Source::Exec(ei, si) => {
                let e = &mut self.execs[ei];
                collect(&mut e.out[si], &mut e.buf[si], &mut e.truncated[si], e.limit);
            }
        }
    }

    /// Kills execs past their deadline and answers them.
    pub fn on_timeouts(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.execs.len() {
            if self.execs[i].deadline.is_some_and(|d| d <= now) {
                let e = self.execs.swap_remove(i);
                let _ = kill(Pid::from_raw(e.pid), Signal::SIGKILL);
                answer(e, -1, true);
            } else {
                i += 1;
            }
        }
    }

    /// Records the exit of a reaped child, if it is a container or an exec.
    pub fn on_exit(&mut self, status: WaitStatus) {
        let Some(pid) = status.pid().map(Pid::as_raw) else { return };
        let (code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, 0),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, sig as i32),
            _ => return,
        };
        if let Some(ctr) = self
            .ctrs
            .iter_mut()
            .map(|(_, c)| c)
            .find(|c| c.init.pid as i32 == pid && c.exit.is_none())
        {
            // What the container wrote before it died belongs in the log before its exit
            // is reported.
            for i in 0..2 {
                pump_log(&mut ctr.out[i], &mut ctr.log);
            }
            ctr.exit = Some(Exit { code, signal, finished_at: now_ns() });
            ctr.stdin = None;
            return;
        }
        if let Some(i) = self.execs.iter().position(|e| e.pid == pid) {
            let mut e = self.execs.swap_remove(i);
            for i in 0..2 {
                let (limit, buf, trunc) = (e.limit, &mut e.buf[i], &mut e.truncated[i]);
                collect(&mut e.out[i], buf, trunc, limit);
            }
            answer(e, code, false);
            return;
        }
        if self.unclaimed.len() < 64 {
            self.unclaimed.insert(pid, status);
        }
    }

    /// SIGKILLs every container's init (on shutdown).
    pub fn kill_all(&mut self) {
        for (_, c) in &self.ctrs {
            if c.exit.is_none() {
                let _ = kill(Pid::from_raw(c.init.pid as i32), Signal::SIGKILL);
            }
        }
        for e in &self.execs {
            let _ = kill(Pid::from_raw(e.pid), Signal::SIGKILL);
        }
    }
}

/// Reads what a log pipe has (without blocking) and appends it to the log.
fn pump_log(pipe: &mut Option<Pipe>, log: &mut Option<File>) {
    let Some(p) = pipe else { return };
    let mut buf = [0u8; 32 * 1024];
    let mut entries = Vec::new();
    let mut eof = false;
    loop {
        match nix::unistd::read(&p.fd, &mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                p.stream.feed(&buf[..n], &timestamp(), &mut entries);
                if entries.len() > 256 * 1024 {
                    break;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    if eof {
        p.stream.finish(&timestamp(), &mut entries);
        *pipe = None;
    }
    if let (Some(log), false) = (log.as_mut(), entries.is_empty()) {
        let _ = log.write_all(&entries);
    }
}

/// Reads what an exec's pipe has, keeping up to `limit` bytes.
fn collect(fd: &mut Option<OwnedFd>, buf: &mut Vec<u8>, truncated: &mut bool, limit: usize) {
    let Some(f) = fd else { return };
    let mut chunk = [0u8; 32 * 1024];
    loop {
        match nix::unistd::read(&*f, &mut chunk) {
            Ok(0) => {
                *fd = None;
                return;
            }
            Ok(n) => {
                let room = limit.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                *truncated |= n > room;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                *fd = None;
                return;
            }
        }
    }
}

fn answer(mut e: Exec, exit_code: i32, timed_out: bool) {
    let resp = ExecResponse {
        exit_code,
        stdout: std::mem::take(&mut e.buf[0]),
        stderr: std::mem::take(&mut e.buf[1]),
        stdout_truncated: e.truncated[0],
        stderr_truncated: e.truncated[1],
        timed_out,
    };
    let kind = podbay_proto::shim::v1::response::Kind::Exec(resp);
    let _ = e.reply.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = podbay_proto::frame::write(
        &mut e.reply,
        &podbay_proto::shim::v1::Response { kind: Some(kind) },
    );
}

/// A pipe whose read end is non-blocking and close-on-exec; the write end is for a
/// container's stdio.
/// The socket a container's init sends its pty master to.
struct Console {
    listener: UnixListener,
    path: PathBuf,
}

impl Console {
    /// Binds `<dir>/<id>.tty` (through `/proc/self/fd`, as the path may be longer than a
    /// socket address can be).
    fn bind(dir: &Path, id: &str) -> Result<Console, String> {
        let path = dir.join(format!("{id}.tty"));
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let d = File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
        let listener = UnixListener::bind(super::via_dir_fd(&d, format!("{id}.tty")))
            .map_err(|e| format!("bind {}: {e}", path.display()))?;
        listener.set_nonblocking(true).map_err(|e| format!("console socket: {e}"))?;
        Ok(Console { listener, path })
    }

    /// The pty master the init sent (it did before libcontainer's create returned).
    fn receive(self) -> Result<OwnedFd, String> {
        let (conn, _) =
            self.listener.accept().map_err(|e| format!("the container sent no terminal: {e}"))?;
        let mut name = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receive the container's terminal: {e}"))?;
        for cmsg in msg.cmsgs().map_err(|e| format!("receive the container's terminal: {e}"))? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                let master = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                    .map_err(|e| format!("terminal: {e}"))?;
                return Ok(master);
            }
        }
        Err("the container's terminal message carried no descriptor".into())
    }
}

/// The socket file goes with the console, also when the create failed.
impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| format!("pipe: {e}"))?;
    Ok((r, w))
}

fn open_log(path: &Path) -> Result<Option<File>, String> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map(Some)
        .map_err(|e| format!("open log {}: {e}", path.display()))
}

/// Runs `f` in a forked child and returns what it returned. The child starts with no
/// signals blocked (the supervisor blocks the ones its signalfd reads, and a container
/// must not inherit that) and logs libcontainer's warnings to the supervisor's stderr.
/// Prepares the helper for an ExecSync command: the container's own process spec (user,
/// groups, capabilities, cwd, env, no_new_privs, rlimits) with `args`, written for
/// libcontainer's tenant builder, and the container's seccomp filter, installed here.
///
/// libcontainer's tenant builder applies neither by itself: without a process file the
/// command runs as root with the container's capabilities, and it never installs the
/// spec's seccomp filter. The filter installed in the helper is inherited by the exec'd
/// process; it also allows `setns`, which libcontainer needs to join the container's
/// namespaces (and which fails with EPERM anyway without CAP_SYS_ADMIN).
fn exec_process(root: &Path, id: &str, args: Vec<String>) -> Result<tempfile::TempPath, String> {
    let container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
    let config = container.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("load {}: {e}", config.display()))?;
    let mut process = spec.process().clone().ok_or("the container's spec has no process")?;
    process.set_args(Some(args)).set_terminal(Some(false));
    let file = tempfile::Builder::new()
        .prefix(".exec-")
        .suffix(".json")
        .tempfile_in(root.join(id))
        .map_err(|e| format!("process file: {e}"))?;
    serde_json::to_writer(file.as_file(), &process).map_err(|e| format!("process file: {e}"))?;
    if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
        let mut seccomp = seccomp;
        if seccomp.default_action() != LinuxSeccompAction::ScmpActAllow {
            let setns = LinuxSyscallBuilder::default()
                .names(vec!["setns".to_owned()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .map_err(|e| format!("seccomp: {e}"))?;
            let mut rules = seccomp.syscalls().clone().unwrap_or_default();
            rules.push(setns);
            seccomp.set_syscalls(Some(rules));
        }
        libcontainer::seccomp::initialize_seccomp(&seccomp)
            .map_err(|e| format!("install the container's seccomp filter: {e}"))?;
    }
    Ok(file.into_temp_path())
}

fn in_child(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the supervisor is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(r);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(tracing::Level::ERROR)
                .with_ansi(false)
                .try_init();
            // One line: the container's processes inherit the pipe, so the parent reads
            // up to the newline instead of waiting for the end of the stream.
            let msg = match f() {
                Ok(s) => format!("O{}\n", s.replace('\n', " ")),
                Err(e) => format!("E{}\n", e.replace('\n', " ")),
            };
            let mut w = File::from(w);
            let _ = w.write_all(msg.as_bytes());
            drop(w);
            // SAFETY: _exit skips atexit handlers and buffers inherited from the parent.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let result = read_report(&r);
            if result.is_err() {
                let _ = kill(child, Signal::SIGKILL);
            }
            let _ = waitpid(child, None);
            let msg = result?;
            match msg.split_at_checked(1) {
                Some(("O", s)) => Ok(s.to_owned()),
                Some(("E", e)) => Err(e.to_owned()),
                _ => Err("the libcontainer helper died without an answer".into()),
            }
        }
    }
}

fn read_report(r: &OwnedFd) -> Result<String, String> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut out = Vec::new();
    let mut f = File::from(r.try_clone().map_err(|e| format!("dup: {e}"))?);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("libcontainer did not finish within {CHILD_TIMEOUT:?}"));
        }
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(left.as_millis().min(60_000) as u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut chunk = [0u8; 4096];
        match f.read(&mut chunk) {
            Ok(0) => return Ok(String::new()),
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                if let Some(nl) = out.iter().position(|&b| b == b'\n') {
                    return Ok(String::from_utf8_lossy(&out[..nl]).into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
