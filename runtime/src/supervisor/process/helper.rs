//! libcontainer's calls run in a short-lived child of the supervisor: they change the
//! calling process (oom_score_adj, dumpable, cwd) and allocate, and the supervisor must
//! stay small and unchanged. The child answers with one `HelperReply` frame over a pipe:
//! the pid of what it made, or a typed failure. The container's processes inherit the
//! pipe, so the supervisor reads that one frame instead of waiting for the end of the
//! stream.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::unistd::pipe2;
use podbay_proto::frame;
use podbay_proto::supervisor::v1::{Failure, FailureKind, HelperReply, helper_reply};
use rustix::fs::MemfdFlags;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use super::fork::{ForkResult, exit_child, fork};

/// How long a libcontainer call in a child may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libcontainer (or what the helper did around it) failed; its error chain.
    #[error("{0}")]
    Failed(String),
    #[error("the libcontainer helper exited without an answer")]
    NoAnswer,
    #[error("libcontainer did not finish within {0:?}")]
    Timeout(Duration),
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: Errno },
    #[error("unreadable answer from the libcontainer helper: {0}")]
    Reply(std::io::Error),
}

/// Runs `f` in a forked child and returns the pid it reported. The child starts with no
/// signals blocked (the supervisor blocks the ones its signalfd reads, and a container
/// must not inherit that). libcontainer's error events are kept in a memfd: its
/// container init reports a failure to its parent only by the outer message ("failed to
/// prepare rootfs"), and logs the cause, so the cause is read back from there and added
/// to the failure the daemon gets (and logs).
pub fn run(
    exiting: &mut Exiting,
    f: impl FnOnce() -> Result<u32, Box<dyn std::error::Error>>,
) -> Result<u32, Error> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|source| Error::Sys { what: "pipe", source })?;
    let child = match fork().map_err(|source| Error::Sys { what: "fork", source })? {
        ForkResult::Child => {
            drop(r);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            let events = rustix::fs::memfd_create("podbay-libcontainer", MemfdFlags::CLOEXEC)
                .ok()
                .map(File::from);
            let writer = match events.as_ref().and_then(|f| f.try_clone().ok()) {
                Some(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
                None => BoxMakeWriter::new(std::io::stderr),
            };
            let _ = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_max_level(tracing::Level::ERROR)
                .with_ansi(false)
                .without_time()
                .try_init();
            let result = match f() {
                Ok(pid) => helper_reply::Result::Pid(pid),
                Err(e) => {
                    let mut message = crate::error::chain(&*e);
                    if let Some(causes) = events.as_ref().map(logged_errors)
                        && !causes.is_empty()
                    {
                        message = format!("{message} ({causes})");
                    }
                    helper_reply::Result::Failure(Failure {
                        message,
                        kind: FailureKind::Internal as i32,
                        field: String::new(),
                    })
                }
            };
            let _ = frame::write(&mut File::from(w), &HelperReply { result: Some(result) });
            exit_child(0)
        }
        ForkResult::Parent { child } => child,
    };
    drop(w);
    let reply = read_reply(&r);
    if reply.is_err() {
        let _ = kill(child, Signal::SIGKILL);
    }
    exiting.0.push(child.as_raw());
    match reply?.result {
        Some(helper_reply::Result::Pid(pid)) => Ok(pid),
        Some(helper_reply::Result::Failure(f)) => Err(Error::Failed(f.message)),
        None => Err(Error::NoAnswer),
    }
}

/// Helpers that have answered (or were killed) and are left to exit on their own: the
/// supervisor's reaper takes their exits. Waiting for one instead would wait for its
/// mount namespace to go, which takes an expedited RCU grace period (0.2-0.7 ms measured,
/// more on a busy node) before the caller is answered.
#[derive(Debug, Default)]
pub struct Exiting(Vec<i32>);

impl Exiting {
    /// True (and forgotten) if `pid` was a helper.
    pub fn claim(&mut self, pid: i32) -> bool {
        match self.0.iter().position(|p| *p == pid) {
            Some(i) => {
                self.0.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// The error events libcontainer's processes wrote, one line each, at most 4 KiB.
fn logged_errors(events: &File) -> String {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = events.read_at(&mut buf, 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}

/// Reads the one frame, waiting at most [`TIMEOUT`].
fn read_reply(r: &OwnedFd) -> Result<HelperReply, Error> {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = Vec::new();
    let mut f = File::from(r.try_clone().map_err(Error::Reply)?);
    loop {
        // A whole frame: 4 bytes of length, then the message.
        if buf.len() >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if buf.len() >= 4 + len {
                return frame::read(&mut &buf[..]).map_err(Error::Reply)?.ok_or(Error::NoAnswer);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(TIMEOUT));
        }
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(left.as_millis().min(60_000) as u16)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(source) => return Err(Error::Sys { what: "poll", source }),
        }
        let mut chunk = [0u8; 4096];
        match f.read(&mut chunk) {
            Ok(0) => return Err(Error::NoAnswer),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Reply(e)),
        }
    }
}
