//! The supervisor's children: the containers it creates and starts with libcontainer, whose
//! stdout/stderr pipes it holds and logs in the CRI format and whose exits it records, and
//! the ExecSync commands it runs.
//!
//! libcontainer's calls run in a short-lived child of the supervisor (`helper.rs`): they
//! change the calling process (oom_score_adj, dumpable, cwd) and allocate, and the
//! supervisor must stay small and unchanged. The container's processes are cloned with
//! `CLONE_PARENT` (libcontainer's `as_sibling`), so they are the supervisor's children
//! all the same: it reaps them and sees their exit status.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollTimeout;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{Pid, pipe2};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use podbay_proto::supervisor::v1::{
    AttachRequest, ContainerState, CreateContainerRequest, CreateContainerResponse, ExecRequest,
    ExecResponse, NarrowView, StartContainerResponse,
};

use super::crilog::{LogStream, timestamp};
use super::failure::Failed;
use super::{fork, helper, launch};
use crate::clock::now_ns;
use crate::supervisor::Identity;

/// One container as the supervisor holds it.
struct Held {
    init: Identity,
    started_at: i64,
    exit: Option<Exit>,
    state_root: PathBuf,
    out: [Option<Pipe>; 2],
    /// The write end of an open stdin (CRI `stdin`), held so reads block instead of
    /// seeing EOF.
    stdin: Option<OwnedFd>,
    log_path: LogPath,
    log: Option<File>,
    /// A terminal's master (its output is `out[0]`), for attachers' keys and sizes.
    tty: bool,
    stdin_once: bool,
    attachers: Vec<Attacher>,
}

/// A CRI Attach in progress: copies of the container's output go to its pipes.
struct Attacher {
    conn: UnixStream,
    /// Write ends (non-blocking) for stdout and stderr copies.
    outs: [Option<OwnedFd>; 2],
    used_stdin: bool,
    /// Detached: dropped at the next attach or exit (indices into the list stay valid
    /// while one poll round's events are handled).
    gone: bool,
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
    /// A streamed exec: its pipes are the daemon's, and its connection is watched.
    streamed: bool,
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
    /// A streamed exec's connection: readable means the daemon let go of it.
    ExecPeer(usize),
    /// An attacher's connection (container, attacher): readable means it detached.
    AttachPeer(usize, usize),
}

pub struct Children {
    ctrs: Vec<(String, Held)>,
    execs: Vec<Exec>,
    /// Exits of processes reaped before anyone claimed them.
    unclaimed: HashMap<i32, WaitStatus>,
    /// The spawner's view namespace (`crate::view`), if it made one.
    view: Option<OwnedFd>,
    /// libcontainer helpers not reaped yet.
    helpers: helper::Exiting,
}

impl Children {
    pub fn new(view: Option<OwnedFd>) -> Self {
        Self {
            ctrs: Vec::new(),
            execs: Vec::new(),
            unclaimed: HashMap::new(),
            view,
            helpers: helper::Exiting::default(),
        }
    }

    fn find(&mut self, id: &str) -> Result<&mut Held, Failed> {
        self.ctrs
            .iter_mut()
            .find(|(i, _)| i == id)
            .map(|(_, c)| c)
            .ok_or_else(|| Failed::NoContainer(id.to_owned()))
    }

    pub fn create(
        &mut self,
        req: &CreateContainerRequest,
    ) -> Result<CreateContainerResponse, Failed> {
        if self.ctrs.iter().any(|(i, _)| *i == req.id) {
            return Err(Failed::ContainerExists(req.id.clone()));
        }
        let log_path = LogPath::of(req);
        let log = log_path.open()?;
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
                .map_err(Failed::sys("pipe"))?,
            false => (None, None),
        };
        let console_path = console.as_ref().map(|c| c.path.clone());
        let narrow = narrow_views(&req.narrow);
        let view = self.view.as_ref().map(AsFd::as_fd);
        let pid = helper::run(&mut self.helpers, move || {
            crate::view::narrow(&narrow, view)?;
            let filter = read_optional(&bundle.join(crate::layout::SECCOMP_BPF))?;
            let (stdout, stderr) = match pipes {
                Some((out_w, err_w)) => (Some(out_w), Some(err_w)),
                None => (None, None),
            };
            if let Some(mut fit) = launch::spec_for_launch(&bundle)? {
                let drop_sys_admin = filter.is_some() && fit.raise_sys_admin_for_filter();
                let executor = DieWithSupervisor { filter, drop_sys_admin };
                let stdio = launch::Stdio { stdin: stdin_r, stdout, stderr };
                let console = console_path;
                let executor = Box::new(executor);
                return launch::launch(
                    fit,
                    launch::Launch {
                        id,
                        bundle,
                        root,
                        io: launch::Io { console, stdio, executor },
                    },
                );
            }
            let executor = DieWithSupervisor { filter, drop_sys_admin: false };
            let mut builder = ContainerBuilder::new(id, SyscallType::Linux)
                .with_root_path(root)?
                .with_console_socket(console_path);
            if let (Some(out_w), Some(err_w)) = (stdout, stderr) {
                builder = builder.with_stdout(out_w).with_stderr(err_w);
            }
            if let Some(r) = stdin_r {
                builder = builder.with_stdin(r);
            }
            let container = builder
                .with_executor(executor)
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .as_sibling(true)
                .build()?;
            Ok(container.pid().map_or(0, |p| p.as_raw() as u32))
        })?;
        let init =
            Identity::of(pid).map_err(Failed::io("container init", format!("/proc/{pid}")))?;
        let out = match console {
            Some(c) => [Some(Pipe { fd: c.receive()?, stream: LogStream::stdout() }), None],
            None => out,
        };
        let ctr = Held {
            init,
            started_at: 0,
            exit: None,
            state_root: PathBuf::from(&req.state_root),
            out,
            stdin: stdin_w,
            log_path,
            log,
            tty: req.tty,
            stdin_once: req.stdin_once,
            attachers: Vec::new(),
        };
        self.ctrs.push((req.id.clone(), ctr));
        Ok(CreateContainerResponse { init: Some(init.to_proto()) })
    }

    pub fn start(&mut self, id: &str) -> Result<StartContainerResponse, Failed> {
        let ctr = self.find(id)?;
        if ctr.exit.is_some() {
            return Err(Failed::Exited(id.to_owned()));
        }
        if ctr.started_at != 0 {
            // Started already (the daemon did not see the answer): the same answer again.
            return Ok(StartContainerResponse { started_at: ctr.started_at });
        }
        let dir = ctr.state_root.join(id);
        start_init(&dir)?;
        ctr.started_at = now_ns();
        Ok(StartContainerResponse { started_at: ctr.started_at })
    }

    pub fn signal(&mut self, id: &str, signo: i32, all: bool) -> Result<(), Failed> {
        let ctr = self.find(id)?;
        if ctr.exit.is_some() {
            return Ok(());
        }
        let sig = Signal::try_from(signo).map_err(|_| Failed::BadSignal(signo))?;
        // Not reaped yet (no exit recorded), so the pid is still this container's init.
        match kill(Pid::from_raw(ctr.init.pid as i32), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(Failed::Sys { what: "signal the container's init", source: e }),
        }
        if all {
            let dir = ctr.state_root.join(id);
            // Every process of the container's cgroup (PID mode POD or NODE leaves others
            // behind when only init dies); libcontainer freezes the cgroup while it kills.
            let _ = helper::run(&mut self.helpers, move || {
                let sig = libcontainer::signal::Signal::try_from(signo)?;
                Container::load(dir)?.kill(sig, true)?;
                Ok(0)
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

    pub fn reopen_log(&mut self, id: &str) -> Result<(), Failed> {
        let ctr = self.find(id)?;
        ctr.log = ctr.log_path.open()?;
        Ok(())
    }

    /// Attaches the daemon to a running container's stdio (see AttachRequest).
    pub fn attach(
        &mut self,
        req: &AttachRequest,
        conn: UnixStream,
    ) -> Result<(), (Failed, UnixStream)> {
        let ctr = match self.find(&req.id) {
            Ok(c) if c.exit.is_none() && c.started_at != 0 => c,
            Ok(_) => return Err((Failed::NotRunning(req.id.clone()), conn)),
            Err(e) => return Err((e, conn)),
        };
        let made = (|| {
            let mut bits = 0u8;
            let mut give: Vec<OwnedFd> = Vec::new();
            let mut outs = [None, None];
            for (i, wanted) in [req.stdout, req.stderr && !ctr.tty].into_iter().enumerate() {
                if wanted {
                    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(Failed::sys("pipe"))?;
                    fcntl(&w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(Failed::sys("pipe"))?;
                    bits |= 1 << i;
                    give.push(r);
                    outs[i] = Some(w);
                }
            }
            let master = if ctr.tty { ctr.out[0].as_ref().map(|p| &p.fd) } else { None };
            if req.stdin {
                let fd = match (master, &ctr.stdin) {
                    (Some(m), _) => m,
                    (None, Some(w)) => w,
                    (None, None) => return Err(Failed::NoStdin(req.id.clone())),
                };
                give.push(fd.try_clone().map_err(Failed::io("dup", "the container's stdin"))?);
                bits |= 4;
            }
            if let Some(m) = master {
                give.push(m.try_clone().map_err(Failed::io("dup", "the container's terminal"))?);
                bits |= 8;
            }
            Ok((bits, give, outs))
        })();
        let (bits, give, outs) = match made {
            Ok(m) => m,
            Err(e) => return Err((e, conn)),
        };
        let raw: Vec<RawFd> = give.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = send_fds(&conn, bits, &raw) {
            return Err((Failed::Sys { what: "hand over the container's stdio", source: e }, conn));
        }
        ctr.attachers.retain(|a| !a.gone);
        ctr.attachers.push(Attacher { conn, outs, used_stdin: req.stdin, gone: false });
        Ok(())
    }

    /// Starts an ExecSync command; the answer goes to `reply` when it exits.
    pub fn exec(
        &mut self,
        req: &ExecRequest,
        reply: UnixStream,
    ) -> Result<(), (Failed, UnixStream)> {
        let ctr = match self.find(&req.id) {
            Ok(c) if c.exit.is_none() && c.started_at != 0 => c,
            Ok(_) => return Err((Failed::NotRunning(req.id.clone()), reply)),
            Err(e) => return Err((e, reply)),
        };
        let root = ctr.state_root.clone();
        let tty = req.streamed && req.tty;
        let view = self.view.as_ref().map(AsFd::as_fd);
        let started = (|| {
            // With a terminal the command's stdio is the pty libcontainer makes, whose
            // master comes back through a console socket, as a container's does.
            let console = if tty {
                let nonce = EXEC_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(Console::bind(&root, &format!("{}-exec{nonce}", req.id))?)
            } else {
                None
            };
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdin = if req.streamed && req.stdin && !tty { Some(stdin_pipe()?) } else { None };
            let (in_r, in_w) = stdin.map_or((None, None), |(r, w)| (Some(r), Some(w)));
            let (id, args) = (req.id.clone(), req.args.clone());
            let console_path = console.as_ref().map(|c| c.path.clone());
            let narrow = narrow_views(&req.narrow);
            let pid = helper::run(&mut self.helpers, move || {
                crate::view::narrow(&narrow, view)?;
                let (container, spec, process, filter) = exec_process(&root, &id, args, tty)?;
                let executor = DieWithSupervisor { filter: None, drop_sys_admin: false };
                if let Some(v1_hierarchies) = launch::tenant_fits(&spec) {
                    let (stdout, stderr) =
                        if tty { (None, None) } else { (Some(out_w), Some(err_w)) };
                    let stdio = launch::Stdio { stdin: in_r, stdout, stderr };
                    let console = console_path;
                    let executor = Box::new(executor);
                    let tenant = launch::Tenant {
                        container,
                        spec,
                        process,
                        filter,
                        io: launch::Io { console, stdio, executor },
                    };
                    return launch::launch_tenant(tenant, &v1_hierarchies);
                }
                // libcontainer's tenant inherits the filter from this process.
                if let Some(bpf) = filter {
                    install_filter(&bpf)?;
                }
                let process = process_file(&root, &id, &process)?;
                let mut builder = ContainerBuilder::new(id, SyscallType::Linux)
                    .with_root_path(root)?
                    .with_console_socket(console_path);
                if !tty {
                    builder = builder.with_stdout(out_w).with_stderr(err_w);
                }
                if let Some(r) = in_r {
                    builder = builder.with_stdin(r);
                }
                let pid = builder
                    .with_executor(executor)
                    .as_tenant()
                    .with_process(Some(&*process))
                    .with_detach(true)
                    .as_sibling(true)
                    .build()?;
                Ok(pid.as_raw() as u32)
            })?;
            let master = match console {
                Some(c) => Some(c.receive().inspect_err(|_| {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                })?),
                None => None,
            };
            Ok::<_, Failed>((pid as i32, out_r, err_r, in_w, master))
        })();
        let (pid, out_r, err_r, in_w, master) = match started {
            Ok(s) => s,
            Err(e) => return Err((e, reply)),
        };
        let out = if req.streamed {
            // The daemon reads and writes the pipes (or the terminal) itself; if it cannot
            // take them, the command has nobody to talk to.
            let (byte, fds) = match &master {
                Some(m) => (2, vec![m.as_raw_fd()]),
                None => {
                    let mut fds = vec![out_r.as_raw_fd(), err_r.as_raw_fd()];
                    fds.extend(in_w.as_ref().map(|w| w.as_raw_fd()));
                    (1, fds)
                }
            };
            if let Err(e) = send_fds(&reply, byte, &fds) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err((Failed::Sys { what: "hand over the exec's pipes", source: e }, reply));
            }
            [None, None]
        } else {
            [Some(out_r), Some(err_r)]
        };
        let deadline =
            (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
        self.execs.push(Exec {
            pid,
            reply,
            streamed: req.streamed,
            out,
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
            for (ai, a) in c.attachers.iter().enumerate().filter(|(_, a)| !a.gone) {
                fds.push((a.conn.as_fd(), Source::AttachPeer(ci, ai)));
            }
        }
        for (ei, e) in self.execs.iter().enumerate() {
            for (si, fd) in e.out.iter().enumerate() {
                if let Some(fd) = fd {
                    fds.push((fd.as_fd(), Source::Exec(ei, si)));
                }
            }
            if e.streamed {
                fds.push((e.reply.as_fd(), Source::ExecPeer(ei)));
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
                pump_log(&mut ctr.out[si], &mut ctr.log, &mut ctr.attachers, si);
            }
            Source::AttachPeer(ci, ai) => {
                let ctr = &mut self.ctrs[ci].1;
                let Some(a) = ctr.attachers.get_mut(ai) else { return };
                a.gone = true;
                a.outs = [None, None];
                // stdin_once: the first attach that used stdin closes it when it goes (a
                // terminal has no end of input to give; it stays).
                if a.used_stdin && ctr.stdin_once && !ctr.tty {
                    ctr.stdin = None;
                }
            }
            Source::Exec(ei, si) => {
                let e = &mut self.execs[ei];
                collect(&mut e.out[si], &mut e.buf[si], &mut e.truncated[si], e.limit);
            }
            Source::ExecPeer(ei) => {
                // The daemon sends nothing more: readable is its end of the connection
                // (the client went away). The command goes with it; its exit is reaped.
                let e = &mut self.execs[ei];
                let _ = kill(Pid::from_raw(e.pid), Signal::SIGKILL);
                e.streamed = false;
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
        if self.helpers.claim(pid) {
            return;
        }
        if let Some(ctr) = self
            .ctrs
            .iter_mut()
            .map(|(_, c)| c)
            .find(|c| c.init.pid as i32 == pid && c.exit.is_none())
        {
            // What the container wrote before it died belongs in the log before its exit
            // is reported.
            for i in 0..2 {
                pump_log(&mut ctr.out[i], &mut ctr.log, &mut ctr.attachers, i);
            }
            ctr.exit = Some(Exit { code, signal, finished_at: now_ns() });
            ctr.stdin = None;
            // Attachers see their output end, then the connection.
            ctr.attachers.clear();
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

/// The request's narrowed directories (see `crate::view`).
fn narrow_views(views: &[NarrowView]) -> Vec<crate::view::Narrow> {
    views
        .iter()
        .map(|v| crate::view::Narrow {
            parent: PathBuf::from(&v.parent),
            keep: (!v.keep.is_empty()).then(|| PathBuf::from(&v.keep)),
        })
        .collect()
}

/// Reads what a log pipe has (without blocking), appends it to the log and copies it to
/// the attachers of that stream (`si`); an attacher whose pipe is full loses its output.
fn pump_log(
    pipe: &mut Option<Pipe>,
    log: &mut Option<File>,
    attachers: &mut [Attacher],
    si: usize,
) {
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
                for a in attachers.iter_mut() {
                    let Some(w) = &a.outs[si] else { continue };
                    if !matches!(nix::unistd::write(w, &buf[..n]), Ok(k) if k == n) {
                        a.outs[si] = None;
                    }
                }
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
        for a in attachers.iter_mut() {
            a.outs[si] = None;
        }
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
    let kind = podbay_proto::supervisor::v1::response::Kind::Exec(resp);
    let _ = e.reply.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = podbay_proto::frame::write(
        &mut e.reply,
        &podbay_proto::supervisor::v1::Response { kind: Some(kind) },
    );
}

/// The socket a container's init sends its pty master to.
struct Console {
    listener: UnixListener,
    path: PathBuf,
}

impl Console {
    /// Binds `<dir>/<id>.tty` (through `/proc/self/fd`, as the path may be longer than a
    /// socket address can be).
    fn bind(dir: &Path, id: &str) -> Result<Console, Failed> {
        let path = dir.join(format!("{id}.tty"));
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir_all(dir).map_err(Failed::io("create", dir))?;
        let d = File::open(dir).map_err(Failed::io("open", dir))?;
        let listener = UnixListener::bind(crate::supervisor::via_dir_fd(&d, format!("{id}.tty")))
            .map_err(Failed::io("bind", &path))?;
        listener.set_nonblocking(true).map_err(Failed::io("set non-blocking", &path))?;
        Ok(Console { listener, path })
    }

    /// The pty master the init sent (it did before libcontainer's create returned).
    fn receive(self) -> Result<OwnedFd, Failed> {
        let (conn, _) = self.listener.accept().map_err(|e| Failed::NoTerminal(e.to_string()))?;
        let mut name = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(Failed::sys("receive the container's terminal"))?;
        for cmsg in msg.cmsgs().map_err(Failed::sys("receive the container's terminal"))? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                let master = fork::received_fd(fd);
                fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                    .map_err(Failed::sys("set the terminal non-blocking"))?;
                return Ok(master);
            }
        }
        Err(Failed::NoTerminal("its message carried no descriptor".into()))
    }
}

/// The socket file goes with the console, also when the create failed.
impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// libcontainer's `Container::start`, for a container without poststart hooks (a CRI
/// container has none), done here instead of in a forked helper: the init, waiting in
/// `accept` on the container's `notify.sock`, gets a connection that says so, ends it,
/// and execs the container's program. The socket is reached through the state dir's
/// descriptor, so the length of the state root does not matter (a socket path is
/// limited to 107 bytes), and nothing changes the supervisor (libcontainer's notify
/// changes the cwd). libcontainer's state file still says Created: the helper of the
/// first exec records Running (`exec_process`), so the supervisor never parses it.
fn start_init(dir: &Path) -> Result<(), Failed> {
    let what = "the container init's start socket";
    let dir_fd = File::open(dir).map_err(Failed::io("the container's state dir", dir))?;
    let socket = format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        libcontainer::notify_socket::NOTIFY_FILE
    );
    let path = || dir.join(libcontainer::notify_socket::NOTIFY_FILE);
    let mut stream = UnixStream::connect(&socket).map_err(Failed::io(what, path()))?;
    // The connection itself starts the container: the init goes on when it ends, whatever
    // it carried. So a failed write (an init that just died, whose exit the reaper
    // records) is still a start, not a failure that a retry would repeat in vain.
    let _ = stream.write_all(b"start container");
    Ok(())
}

/// A streamed exec's stdin: the command reads a blocking end, the daemon writes a
/// non-blocking one.
fn stdin_pipe() -> Result<(OwnedFd, OwnedFd), Failed> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(Failed::sys("pipe"))?;
    fcntl(&w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(Failed::sys("pipe"))?;
    Ok((r, w))
}

/// Numbers the consoles of terminal execs (their socket names).
static EXEC_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One byte with `fds` attached (SCM_RIGHTS).
fn send_fds(sock: &UnixStream, byte: u8, fds: &[RawFd]) -> Result<(), nix::errno::Errno> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let buf = [byte];
    let iov = [std::io::IoSlice::new(&buf)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map(drop)
}

/// A pipe whose read end is non-blocking and close-on-exec; the write end is for a
/// container's stdio.
fn pipe() -> Result<(OwnedFd, OwnedFd), Failed> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(Failed::sys("pipe"))?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(Failed::sys("pipe"))?;
    Ok((r, w))
}

/// libcontainer's own way of starting the container's program, after one more step in the
/// container's process (its credentials already set, so the kernel keeps the setting):
/// SIGKILL when its parent, the pod's supervisor, dies. A container never outlives its
/// supervisor; whatever else of it survives (a process that was not its init, with PID
/// mode POD or NODE), the daemon kills from the container's cgroup when it sees the
/// supervisor gone. (A supervisor that dies in the instant between the clone and this call
/// leaves the init to the daemon as well.)
///
/// With `filter`, it also installs the container's seccomp filter, compiled by the daemon
/// (`SECCOMP_BPF`), right before `execve`: the same program libcontainer would have
/// compiled in this process. With no_new_privs (libcontainer set it at the start of the
/// init) that needs no capability; without, CAP_SYS_ADMIN, which the helper's launch then
/// left in the init's effective and permitted sets for this (`drop_sys_admin`;
/// `launch::Fit::raise_sys_admin_for_filter`), and which goes again once the filter is in.
#[derive(Clone)]
struct DieWithSupervisor {
    filter: Option<Vec<u8>>,
    drop_sys_admin: bool,
}

impl libcontainer::workload::Executor for DieWithSupervisor {
    fn exec(&self, spec: &Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            libcontainer::workload::ExecutorError::Other(format!("{what}: {e}"))
        };
        if let Some(bpf) = &self.filter {
            install_filter(bpf).map_err(|e| failed("install seccomp filter", &e))?;
        }
        if self.drop_sys_admin {
            use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
            let mut sets = capabilities(None).map_err(|e| failed("read capabilities", &e))?;
            sets.effective.remove(CapabilitySet::SYS_ADMIN);
            sets.permitted.remove(CapabilitySet::SYS_ADMIN);
            set_capabilities(None, sets).map_err(|e| failed("drop CAP_SYS_ADMIN", &e))?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// A file's content, or None when there is no such file.
fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Installs a seccomp filter given as `struct sock_filter` entries (libseccomp's export)
/// in the calling thread; it needs no_new_privs or CAP_SYS_ADMIN.
pub(crate) fn install_filter(bpf: &[u8]) -> Result<(), nix::errno::Errno> {
    let len = u16::try_from(bpf.len() / 8).map_err(|_| nix::errno::Errno::E2BIG)?;
    if len == 0 || !bpf.len().is_multiple_of(8) {
        return Err(nix::errno::Errno::EINVAL);
    }
    let prog = libc::sock_fprog { len, filter: bpf.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` describes `len` entries of `bpf`, which outlives the call; the kernel
    // copies the program (no alignment needed for that copy).
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// Where a container's CRI log goes: kubelet's log directory (trusted, made if missing)
/// and a path below it that no symlink may redirect.
struct LogPath {
    dir: PathBuf,
    rel: PathBuf,
}

impl LogPath {
    fn of(req: &CreateContainerRequest) -> Self {
        match req.log_directory.as_str() {
            "" => {
                // No directory given: the full path; its parent plays the directory.
                let full = PathBuf::from(&req.log_path);
                let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
                let rel = full.file_name().map(PathBuf::from).unwrap_or_default();
                LogPath { dir, rel }
            }
            dir => LogPath { dir: dir.into(), rel: PathBuf::from(&req.log_path) },
        }
    }

    /// Opens (creates, mode 0640) the log for appending. Every component below the log
    /// directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and the
    /// file with `O_NOFOLLOW`: a symlink anywhere there, or anything but a regular file,
    /// is refused naming `log_path`, and the root supervisor writes nothing through it.
    fn open(&self) -> Result<Option<File>, Failed> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        if self.rel.as_os_str().is_empty() {
            return Ok(None);
        }
        let refuse = |reason: String| Failed::LogPath { path: self.rel.clone(), reason };
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        std::fs::create_dir_all(&self.dir).map_err(Failed::io("create", &self.dir))?;
        let path_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut dir = rustix::fs::open(&self.dir, path_flags, Mode::empty())
            .map_err(|e| Failed::io("open", &self.dir)(e.into()))?;
        let parts: Vec<_> = self.rel.components().collect();
        let (file, parents) = parts.split_last().expect("a non-empty path");
        for part in parents {
            let std::path::Component::Normal(name) = part else {
                return Err(refuse("must stay inside the pod's log directory".into()));
            };
            match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o750)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(refuse(format!("create {}: {e}", name.to_string_lossy()))),
            }
            dir = rustix::fs::openat2(&dir, *name, path_flags, Mode::empty(), resolve)
                .map_err(|e| refuse(describe(e)))?;
        }
        let std::path::Component::Normal(name) = file else {
            return Err(refuse("must name a file".into()));
        };
        // O_NONBLOCK: a FIFO planted there must not hang the supervisor.
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::APPEND
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC;
        let fd = rustix::fs::openat2(&dir, *name, flags, Mode::from_raw_mode(0o640), resolve)
            .map_err(|e| refuse(describe(e)))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| refuse(e.to_string()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(refuse("is not a regular file".into()));
        }
        rustix::fs::fcntl_setfl(&fd, OFlags::APPEND).map_err(|e| refuse(e.to_string()))?;
        Ok(Some(File::from(fd)))
    }
}

fn describe(e: rustix::io::Errno) -> String {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => {
            "a symlink in it or at it is refused".into()
        }
        rustix::io::Errno::NXIO => "is not a regular file".into(),
        e => e.to_string(),
    }
}

/// A container in its pod's user namespace: the helper enters it first, as the
/// container's init did. libcontainer's tenant builder joins every namespace of the init
/// but that one, which would leave the command root on the node. Inside it the helper
/// keeps the node's uid 0, which owns the container's state and cgroup files, so the
/// tenant builder still reaches them; every namespace it joins is owned by the pod's.
fn join_user_namespace(spec: &Spec) -> Result<(), Box<dyn std::error::Error>> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let userns = namespaces.into_iter().flatten().find(|n| n.typ() == LinuxNamespaceType::User);
    if let Some(path) = userns.and_then(|n| n.path().as_ref()) {
        let ns = std::fs::File::open(path)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)?;
    }
    Ok(())
}

/// An exec's container state, the container's spec, the exec's process, and the
/// precompiled seccomp filter for it to install (RuntimeDefault; a profile compiled here
/// instead is installed in this process, which the exec's process inherits).
type ExecProcess = (Container, Spec, oci_spec::runtime::Process, Option<Vec<u8>>);

/// Prepares the helper for an exec: the container's libcontainer state (Running) and
/// spec, its own process spec (user, groups, capabilities, cwd, env, no_new_privs,
/// rlimits) with `args`, and the container's seccomp filter: a precompiled one returned
/// (installed by the helper's caller or the exec's process, see [`ExecProcess`]), a
/// profile compiled and installed here.
///
/// libcontainer's tenant builder applies neither by itself: without a process file the
/// command runs as root with the container's capabilities, and it never installs the
/// spec's seccomp filter. A filter installed in the helper is inherited by the exec'd
/// process; it also allows `setns`, which the tenant needs to join the container's
/// namespaces (and which fails with EPERM anyway without CAP_SYS_ADMIN).
fn exec_process(
    root: &Path,
    id: &str,
    args: Vec<String>,
    tty: bool,
) -> Result<ExecProcess, Box<dyn std::error::Error>> {
    let mut container = Container::load(root.join(id))?;
    // The supervisor starts a container without touching this state (`start_init`), and
    // runs an exec only in a started one; the tenant builder wants it Running.
    if container.status() == libcontainer::container::ContainerStatus::Created {
        container.set_status(libcontainer::container::ContainerStatus::Running).save()?;
    }
    let spec = Spec::load(container.bundle().join("config.json"))?;
    join_user_namespace(&spec)?;
    let mut process = spec.process().clone().ok_or("the container's spec has no process")?;
    process.set_args(Some(args)).set_terminal(Some(tty));
    // RuntimeDefault comes compiled for execs too (`seccomp::Ahead`).
    if let Some(bpf) = read_optional(&container.bundle().join(crate::layout::SECCOMP_EXEC_BPF))? {
        return Ok((container, spec, process, Some(bpf)));
    }
    // A precompiled filter's profile is beside config.json, not in it.
    let kept = match read_optional(&container.bundle().join(crate::layout::SECCOMP_PROFILE))? {
        Some(json) => Some(serde_json::from_slice(&json)?),
        None => None,
    };
    if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()).or(kept) {
        let seccomp = crate::container::seccomp::for_exec(seccomp)?;
        libcontainer::seccomp::initialize_seccomp(&seccomp)?;
    }
    Ok((container, spec, process, None))
}

/// An exec's process spec as a file in the container's state dir, for libcontainer's
/// tenant builder; it goes when the returned path is dropped.
fn process_file(
    root: &Path,
    id: &str,
    process: &oci_spec::runtime::Process,
) -> Result<tempfile::TempPath, Box<dyn std::error::Error>> {
    let file =
        tempfile::Builder::new().prefix(".exec-").suffix(".json").tempfile_in(root.join(id))?;
    serde_json::to_writer(file.as_file(), process)?;
    Ok(file.into_temp_path())
}
