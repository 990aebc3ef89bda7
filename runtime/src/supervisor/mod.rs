//! The pod supervisor: the pod's pause process, one per pod.
//!
//! The supervisor (`process/`) owns the pod's network, IPC and UTS namespaces, reaps its
//! children, creates containers with libcontainer and answers the `podbay.supervisor.v1`
//! API on `<pod dir>/supervisor.sock`. It is forked by the daemon's spawner process
//! (`spawner.rs`), runs in its own session, and keeps running when the daemon (or the
//! spawner) dies or restarts. The daemon talks to it through a [`Client`], one typed
//! method per call, and holds its processes by pidfd ([`Proc`]).

mod client;
pub mod process;
mod sealed;
mod spawner;

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{Attached, Client, Pong, StreamedExec};
use podbay_proto::supervisor::v1::{self as proto, FailureKind};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
pub use spawner::{Launched, SpawnRequest, Spawner};
use tokio::io::unix::AsyncFd;

use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("start pod supervisor {exe}: {source}")]
    Spawn { exe: PathBuf, source: io::Error },
    #[error("pod supervisor failed to start: {message} (log: {log})")]
    Start { message: String, log: PathBuf },
    #[error("pod supervisor did not report ({status}); see {log}")]
    NoReport { status: String, log: PathBuf },
    #[error("pod supervisor did not report within {0:?}")]
    StartTimeout(Duration),
    #[error("connect to pod supervisor at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talk to pod supervisor at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("pod supervisor at {path} did not answer within {timeout:?}")]
    CallTimeout { path: PathBuf, timeout: Duration },
    /// The supervisor answered the call with a failure.
    #[error("{}", refused_text(.field, .message))]
    Refused { kind: FailureKind, field: String, message: String },
    #[error("pod supervisor at {path} answered {call} with something else")]
    Unexpected { path: PathBuf, call: &'static str },
    #[error("signal pid {pid}: {source}")]
    Signal { pid: u32, source: io::Error },
}

fn refused_text(field: &str, message: &str) -> String {
    if field.is_empty() { message.to_owned() } else { format!("{field}: {message}") }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connect { .. } | Error::CallTimeout { .. } => ErrorKind::Unavailable,
            Error::Refused { kind, .. } => match kind {
                FailureKind::NotFound => ErrorKind::NotFound,
                FailureKind::AlreadyExists => ErrorKind::AlreadyExists,
                FailureKind::InvalidArgument => ErrorKind::InvalidArgument,
                FailureKind::FailedPrecondition => ErrorKind::FailedPrecondition,
                FailureKind::ResourceExhausted => ErrorKind::ResourceExhausted,
                FailureKind::Internal => ErrorKind::Internal,
            },
            _ => ErrorKind::Internal,
        }
    }

    fn refused(f: proto::Failure) -> Self {
        let kind = f.kind();
        Error::Refused { kind, field: f.field, message: f.message }
    }
}

/// A process identity that survives pid reuse: the pid and its start time
/// (clock ticks after boot, field 22 of /proc/<pid>/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub pid: u32,
    pub start_time: u64,
}

impl Identity {
    /// Reads the identity of a live process.
    pub fn of(pid: u32) -> io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let start_time = parse_start_time(&stat).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("unparsable /proc/{pid}/stat"))
        })?;
        Ok(Self { pid, start_time })
    }

    pub(crate) fn to_proto(self) -> proto::Identity {
        proto::Identity { pid: self.pid, start_time: self.start_time }
    }

    pub(crate) fn from_proto(p: Option<proto::Identity>) -> Option<Self> {
        p.filter(|p| p.pid != 0).map(|p| Self { pid: p.pid, start_time: p.start_time })
    }
}

/// Field 22 (starttime) of a /proc/<pid>/stat line. The command name (field 2) may hold
/// spaces and parentheses, so count from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A live process held by a pidfd: signals reach exactly that process, never a reuser
/// of its pid.
pub struct Proc {
    id: Identity,
    pidfd: AsyncFd<OwnedFd>,
}

impl Proc {
    /// Opens the process if it still runs with that identity.
    pub fn open(id: Identity) -> Option<Proc> {
        let pid = Pid::from_raw(id.pid as i32)?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
        // Checked after opening the pidfd: from here on the pid cannot be reused.
        if Identity::of(id.pid).ok()? != id {
            return None;
        }
        // SAFETY: the AsyncFd takes ownership of the pidfd, so the fd stays open and
        // unchanged for as long as it is registered.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                .ok()?;
        Some(Proc { id, pidfd })
    }

    pub fn identity(&self) -> Identity {
        self.id
    }

    /// Sends a signal; a process that already exited counts as done.
    pub fn signal(&self, sig: Signal) -> Result<(), Error> {
        match pidfd_send_signal(self.pidfd.get_ref(), sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::Signal { pid: self.id.pid, source: e.into() }),
        }
    }

    /// Resolves when the process has exited.
    pub async fn exited(&self) {
        // A pidfd polls readable once its process has exited; it then stays readable.
        let _ = self.pidfd.readable().await;
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }
}

/// SIGKILLs a process (if it still is the one we started) and waits for it to exit.
pub async fn kill_and_wait(id: Identity) {
    if let Some(proc) = Proc::open(id) {
        let _ = proc.signal(Signal::KILL);
        proc.wait_exit(Duration::from_secs(5)).await;
    }
}

/// `/proc/self/fd/<dir fd>/<name>`: a short name for a socket in a directory whose path
/// is too long for sun_path (108 bytes). Valid while `dir` stays open.
pub(crate) fn via_dir_fd(dir: &std::fs::File, name: impl AsRef<std::ffi::OsStr>) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::path::Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string()).join(name.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_with_odd_command_names() {
        let stat = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 200 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_identity_is_readable() {
        let me = Identity::of(std::process::id()).unwrap();
        assert!(me.start_time > 0);
    }

    #[test]
    fn refusals_keep_their_kind_and_field() {
        let e = Error::refused(proto::Failure {
            message: "the kernel refused it".into(),
            field: "config.linux.sysctls[\"x\"]".into(),
            kind: FailureKind::InvalidArgument as i32,
        });
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.to_string(), "config.linux.sysctls[\"x\"]: the kernel refused it");
        let e = Error::refused(proto::Failure { kind: 1, ..Default::default() });
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
