//! The pod supervisor, seen from the daemon: start it, talk to it, watch it, stop it.
//!
//! The supervisor (see `server.rs`) is the pod's pause process: it owns the pod's network,
//! IPC and UTS namespaces, reaps children, and answers the `podbay.shim.v1` API on
//! `<pod dir>/shim.sock`. It is forked by the daemon's spawner process, runs in its own
//! session, and keeps running when the daemon (or the spawner) dies or restarts.

mod containers;
pub mod crilog;
pub mod server;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use podbay_proto::frame::tokio_io;
use podbay_proto::shim::v1::{
    PingRequest, PingResponse, Request, Response, ShutdownRequest, Started, request, response,
    started,
};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

use crate::ErrorKind;
use crate::ids::SandboxId;
use crate::layout::PodLayout;

/// How long a supervisor may take to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one shim call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("start pod supervisor {exe}: {source}")]
    Spawn { exe: PathBuf, source: io::Error },
    #[error("pod supervisor failed to start: {message} (log: {log})")]
    Start { message: String, log: PathBuf },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
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
    #[error("pod supervisor refused: {0}")]
    Refused(String),
    #[error("pod supervisor at {path} gave an unexpected answer")]
    Unexpected { path: PathBuf },
    #[error("signal pod supervisor pid {pid}: {source}")]
    Signal { pid: u32, source: io::Error },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connect { .. } | Error::CallTimeout { .. } => ErrorKind::Unavailable,
            Error::Invalid { .. } => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        }
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

    pub(crate) fn to_proto(self) -> podbay_proto::shim::v1::Identity {
        podbay_proto::shim::v1::Identity { pid: self.pid, start_time: self.start_time }
    }

    pub(crate) fn from_proto(p: Option<podbay_proto::shim::v1::Identity>) -> Option<Self> {
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

/// What the daemon asks a new supervisor for.
pub struct SpawnRequest<'a> {
    pub id: &'a SandboxId,
    pub pod: &'a PodLayout,
    pub new_net: bool,
    pub new_ipc: bool,
    pub new_uts: bool,
    pub new_pid: bool,
    pub hostname: &'a str,
    /// Namespaced sysctls to set in the new namespaces (keys with dots or slashes).
    pub sysctls: &'a BTreeMap<String, String>,
    /// The pod's eth0, created by the supervisor (pods with their own network and an IP).
    pub interface: Option<&'a podbay_netplug::pod::PodInterface>,
}

/// A supervisor that reported ready.
#[derive(Debug, Clone, Copy)]
pub struct Launched {
    pub supervisor: Identity,
    pub pod_init: Option<Identity>,
}

/// The daemon's handle on its spawner process (see `server.rs`): requests go one at a time
/// through its stdin and stdout. A spawner that died or hung is replaced on the next use.
pub struct Spawner {
    exe: PathBuf,
    io: tokio::sync::Mutex<Option<SpawnerIo>>,
}

struct SpawnerIo {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

impl Spawner {
    pub fn new(exe: &Path) -> Self {
        Self { exe: exe.to_path_buf(), io: tokio::sync::Mutex::new(None) }
    }

    /// Starts the spawner now, so the first pod does not pay for it.
    pub async fn warm_up(&self) -> Result<(), Error> {
        let mut io = self.io.lock().await;
        if io.is_none() {
            *io = Some(self.start()?);
        }
        Ok(())
    }

    fn start(&self) -> Result<SpawnerIo, Error> {
        let mut child = tokio::process::Command::new(&self.exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env_clear()
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn { exe: self.exe.clone(), source })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(SpawnerIo { child, stdin, stdout })
    }

    /// Forks a supervisor for a pod and waits for its start-up report.
    pub async fn spawn(&self, req: &SpawnRequest<'_>) -> Result<Launched, Error> {
        let msg = podbay_proto::shim::v1::SpawnRequest {
            sandbox_id: req.id.to_string(),
            pod_dir: req.pod.dir().to_string_lossy().into_owned(),
            new_net: req.new_net,
            new_ipc: req.new_ipc,
            new_uts: req.new_uts,
            new_pid: req.new_pid,
            hostname: req.hostname.to_owned(),
            sysctls: req.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            interface: req.interface.map(|i| podbay_proto::shim::v1::PodInterface {
                host_veth: i.host_veth.clone(),
                address: i.address.to_string(),
                prefix_len: u32::from(i.prefix_len),
                gateway: i.gateway.to_string(),
                mtu: i.mtu,
            }),
        };
        let log = req.pod.supervisor_log();
        let mut guard = self.io.lock().await;
        // One retry with a fresh spawner if the old one is gone (killed, crashed).
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.start()?);
            }
            let io = guard.as_mut().expect("spawner started");
            let exchange = async {
                tokio_io::write(&mut io.stdin, &msg).await?;
                tokio_io::read::<Started, _>(&mut io.stdout).await
            };
            match tokio::time::timeout(START_TIMEOUT, exchange).await {
                Ok(Ok(Some(started))) => return launched(started, log),
                Ok(Ok(None)) | Ok(Err(_)) if attempt == 0 => {
                    // The spawner is gone; forget it and start another.
                    if let Some(mut old) = guard.take() {
                        let _ = old.child.start_kill();
                        let _ = old.child.wait().await;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    *guard = None;
                    return Err(Error::NoReport { status: "spawner exited".into(), log });
                }
                Err(_) => {
                    // A hung exchange leaves the stream out of step: drop this spawner.
                    if let Some(mut old) = guard.take() {
                        let _ = old.child.start_kill();
                    }
                    return Err(Error::StartTimeout(START_TIMEOUT));
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

fn launched(started: Started, log: PathBuf) -> Result<Launched, Error> {
    match started.result {
        Some(started::Result::Ready(ready)) => {
            let supervisor = Identity::from_proto(ready.supervisor)
                .ok_or_else(|| Error::Start { message: "report without pid".into(), log })?;
            Ok(Launched { supervisor, pod_init: Identity::from_proto(ready.pod_init) })
        }
        Some(started::Result::Failure(f)) if !f.field.is_empty() => {
            Err(Error::Invalid { field: f.field, message: f.message })
        }
        Some(started::Result::Failure(f)) => Err(Error::Start { message: f.message, log }),
        None => Err(Error::NoReport { status: "empty report".into(), log }),
    }
}

/// Connects to a supervisor socket. Paths too long for sun_path (108 bytes) are reached
/// through `/proc/self/fd/<dir fd>/<name>`.
async fn connect(path: &Path) -> Result<UnixStream, Error> {
    let err = |source| Error::Connect { path: path.into(), source };
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(path).await.map_err(err);
    }
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new("/"))).map_err(err)?;
    UnixStream::connect(via_dir_fd(&dir, path.file_name().unwrap_or_default())).await.map_err(err)
}

/// `/proc/self/fd/<dir fd>/<name>`: a short name for a socket in a directory whose path
/// is too long for sun_path (108 bytes). Valid while `dir` stays open.
pub(crate) fn via_dir_fd(dir: &std::fs::File, name: impl AsRef<std::ffi::OsStr>) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string()).join(name.as_ref())
}

/// One request/response exchange with a supervisor.
pub async fn call(pod: &PodLayout, kind: request::Kind) -> Result<response::Kind, Error> {
    call_within(pod, kind, CALL_TIMEOUT).await
}

/// A call that may take up to `timeout` (container creation, ExecSync).
pub async fn call_within(
    pod: &PodLayout,
    kind: request::Kind,
    timeout: Duration,
) -> Result<response::Kind, Error> {
    let path = pod.socket();
    let exchange = async {
        let mut stream = connect(&path).await?;
        let io_err = |source| Error::Io { path: path.clone(), source };
        tokio_io::write(&mut stream, &Request { kind: Some(kind) }).await.map_err(io_err)?;
        match tokio_io::read::<Response, _>(&mut stream).await.map_err(io_err)? {
            Some(Response { kind: Some(response::Kind::Failure(f)) }) => {
                Err(Error::Refused(f.message))
            }
            Some(Response { kind: Some(k) }) => Ok(k),
            _ => Err(Error::Unexpected { path: path.clone() }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::CallTimeout { path: path.clone(), timeout })?
}

/// Asks a supervisor who it is.
pub async fn ping(pod: &PodLayout) -> Result<PingResponse, Error> {
    match call(pod, request::Kind::Ping(PingRequest {})).await? {
        response::Kind::Ping(p) => Ok(p),
        _ => Err(Error::Unexpected { path: pod.socket() }),
    }
}

/// Asks a supervisor to kill its children and exit.
pub async fn shutdown(pod: &PodLayout) -> Result<(), Error> {
    match call(pod, request::Kind::Shutdown(ShutdownRequest {})).await? {
        response::Kind::Shutdown(_) => Ok(()),
        _ => Err(Error::Unexpected { path: pod.socket() }),
    }
}

/// Asks a supervisor for the state of each of its containers.
pub async fn container_states(
    pod: &PodLayout,
) -> Result<Vec<podbay_proto::shim::v1::ContainerState>, Error> {
    let req = request::Kind::ContainerStates(podbay_proto::shim::v1::ContainerStatesRequest {});
    match call(pod, req).await? {
        response::Kind::ContainerStates(s) => Ok(s.containers),
        _ => Err(Error::Unexpected { path: pod.socket() }),
    }
}

/// The supervisor identity carried in a ping answer.
pub fn ping_identity(p: &PingResponse) -> Option<Identity> {
    Identity::from_proto(p.supervisor)
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
}
