//! The daemon's client of one pod supervisor: one typed method per call of
//! `podbay.supervisor.v1`. Each call is one connection carrying one Request and one
//! Response; a Failure becomes [`Error::Refused`] with its kind, and any other answer than
//! the call's own is [`Error::Unexpected`].

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use podbay_proto::frame::tokio_io;
use podbay_proto::supervisor::v1::{
    AttachRequest, ContainerState, ContainerStatesRequest, CreateContainerRequest, ExecRequest,
    ExecResponse, ForgetContainerRequest, PingRequest, ReopenLogRequest, Request, Response,
    ShutdownRequest, SignalContainerRequest, StartContainerRequest, request, response,
};
use tokio::net::UnixStream;

use super::{Error, Identity};
use crate::ids::ContainerId;
use crate::layout::PodLayout;

/// How long one call may take unless the call says otherwise.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Who answered a ping.
#[derive(Debug, Clone)]
pub struct Pong {
    pub sandbox_id: String,
    pub supervisor: Option<Identity>,
    pub pod_init: Option<Identity>,
}

pub struct Client {
    socket: PathBuf,
}

/// Unwraps the answer a call expects, or says what came instead.
macro_rules! expect {
    ($self:ident, $answer:expr, $kind:ident) => {
        match $answer {
            response::Kind::$kind(r) => Ok(r),
            _ => Err(Error::Unexpected { path: $self.socket.clone(), call: stringify!($kind) }),
        }
    };
}

impl Client {
    pub fn new(pod: &PodLayout) -> Self {
        Client { socket: pod.socket() }
    }

    pub async fn ping(&self) -> Result<Pong, Error> {
        let r = expect!(self, self.call(request::Kind::Ping(PingRequest {})).await?, Ping)?;
        Ok(Pong {
            sandbox_id: r.sandbox_id,
            supervisor: Identity::from_proto(r.supervisor),
            pod_init: Identity::from_proto(r.pod_init),
        })
    }

    /// Asks the supervisor to kill its children and exit.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let answer = self.call(request::Kind::Shutdown(ShutdownRequest {})).await?;
        expect!(self, answer, Shutdown).map(drop)
    }

    /// The state of each container the supervisor holds (exits it reaped included).
    pub async fn container_states(&self) -> Result<Vec<ContainerState>, Error> {
        let req = request::Kind::ContainerStates(ContainerStatesRequest {});
        Ok(expect!(self, self.call(req).await?, ContainerStates)?.containers)
    }

    /// Creates a container with libcontainer; returns its init process.
    pub async fn create_container(
        &self,
        req: CreateContainerRequest,
        timeout: Duration,
    ) -> Result<Identity, Error> {
        let answer = self.call_within(request::Kind::CreateContainer(req), timeout).await?;
        let r = expect!(self, answer, CreateContainer)?;
        Identity::from_proto(r.init)
            .ok_or(Error::Unexpected { path: self.socket.clone(), call: "CreateContainer" })
    }

    /// Starts a created container; returns when it started (Unix nanoseconds).
    pub async fn start_container(&self, id: &ContainerId) -> Result<i64, Error> {
        let req = request::Kind::StartContainer(StartContainerRequest { id: id.to_string() });
        Ok(expect!(self, self.call(req).await?, StartContainer)?.started_at)
    }

    /// Signals the container's init, or with `all` every process of its cgroup.
    pub async fn signal_container(
        &self,
        id: &ContainerId,
        signal: i32,
        all: bool,
    ) -> Result<(), Error> {
        let req = request::Kind::SignalContainer(SignalContainerRequest {
            id: id.to_string(),
            signal,
            all,
        });
        expect!(self, self.call(req).await?, SignalContainer).map(drop)
    }

    /// Drops the supervisor's record of a container.
    pub async fn forget_container(&self, id: &ContainerId) -> Result<(), Error> {
        let req = request::Kind::ForgetContainer(ForgetContainerRequest { id: id.to_string() });
        expect!(self, self.call(req).await?, ForgetContainer).map(drop)
    }

    pub async fn reopen_log(&self, id: &ContainerId) -> Result<(), Error> {
        let req = request::Kind::ReopenLog(ReopenLogRequest { id: id.to_string() });
        expect!(self, self.call(req).await?, ReopenLog).map(drop)
    }

    /// Runs a command in a container; answers when it exits (or the supervisor's own
    /// deadline passes). `timeout` bounds the whole call.
    pub async fn exec(&self, req: ExecRequest, timeout: Duration) -> Result<ExecResponse, Error> {
        expect!(self, self.call_within(request::Kind::Exec(req), timeout).await?, Exec)
    }

    /// Attaches to a running container's stdio (CRI Attach): copies of its output from now
    /// on, its stdin and its terminal, as asked and as it has them. Dropping the result
    /// detaches.
    pub async fn attach(&self, req: AttachRequest) -> Result<Attached, Error> {
        let path = &self.socket;
        let io_err = |source| Error::Io { path: path.clone(), source };
        let start = async {
            let kind = request::Kind::Attach(req);
            let (mut stream, byte, fds) = self.handover(kind).await?;
            let bits = byte.unwrap_or(0);
            if bits == 0 || fds.len() != (bits & 0x0f).count_ones() as usize {
                return match tokio_io::read::<Response, _>(&mut stream).await.map_err(io_err)? {
                    Some(Response { kind: Some(response::Kind::Failure(f)) }) => {
                        Err(Error::refused(f))
                    }
                    _ => Err(Error::Unexpected { path: path.clone(), call: "Attach" }),
                };
            }
            let mut fds = fds.into_iter();
            let mut take = |bit: u8| if bits & bit != 0 { fds.next() } else { None };
            Ok(Attached {
                stdout: take(1),
                stderr: take(2),
                stdin: take(4),
                terminal: take(8),
                conn: stream,
            })
        };
        // A supervisor busy starting an exec answers late under load.
        tokio::time::timeout(CALL_TIMEOUT * 6, start)
            .await
            .map_err(|_| Error::CallTimeout { path: path.clone(), timeout: CALL_TIMEOUT * 6 })?
    }

    /// Starts a streamed exec (CRI Exec): the command's pipes come back to the caller, and
    /// [`StreamedExec::wait`] gives its exit code. Dropping it kills the command.
    pub async fn exec_stream(&self, req: ExecRequest) -> Result<StreamedExec, Error> {
        let path = &self.socket;
        let io_err = |source| Error::Io { path: path.clone(), source };
        let start = async {
            let (mut stream, byte, mut fds) = self.handover(request::Kind::Exec(req)).await?;
            if byte == Some(2) && fds.len() == 1 {
                let terminal = fds.pop();
                let conn = stream;
                return Ok(StreamedExec {
                    stdin: None,
                    stdout: None,
                    stderr: None,
                    terminal,
                    conn,
                    path: path.clone(),
                });
            }
            if byte != Some(1) || fds.len() < 2 {
                // A failure follows (or the supervisor went away).
                return match tokio_io::read::<Response, _>(&mut stream).await.map_err(io_err)? {
                    Some(Response { kind: Some(response::Kind::Failure(f)) }) => {
                        Err(Error::refused(f))
                    }
                    _ => Err(Error::Unexpected { path: path.clone(), call: "Exec" }),
                };
            }
            let stdin = (fds.len() > 2).then(|| fds.remove(2));
            let stderr = Some(fds.remove(1));
            let stdout = Some(fds.remove(0));
            Ok(StreamedExec {
                stdin,
                stdout,
                stderr,
                terminal: None,
                conn: stream,
                path: path.clone(),
            })
        };
        tokio::time::timeout(CALL_TIMEOUT * 6, start)
            .await
            .map_err(|_| Error::CallTimeout { path: path.clone(), timeout: CALL_TIMEOUT * 6 })?
    }

    /// Sends a request whose answer starts with one byte and descriptors (SCM_RIGHTS).
    async fn handover(
        &self,
        kind: request::Kind,
    ) -> Result<(UnixStream, Option<u8>, Vec<OwnedFd>), Error> {
        let path = &self.socket;
        let io_err = |source| Error::Io { path: path.clone(), source };
        let mut stream = connect(path).await?;
        tokio_io::write(&mut stream, &Request { kind: Some(kind) }).await.map_err(io_err)?;
        loop {
            stream.readable().await.map_err(io_err)?;
            match stream.try_io(tokio::io::Interest::READABLE, || recv_fds(&stream)) {
                Ok((byte, fds)) => return Ok((stream, byte, fds)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    async fn call(&self, kind: request::Kind) -> Result<response::Kind, Error> {
        self.call_within(kind, CALL_TIMEOUT).await
    }

    async fn call_within(
        &self,
        kind: request::Kind,
        timeout: Duration,
    ) -> Result<response::Kind, Error> {
        let path = &self.socket;
        let exchange = async {
            let mut stream = connect(path).await?;
            let io_err = |source| Error::Io { path: path.clone(), source };
            tokio_io::write(&mut stream, &Request { kind: Some(kind) }).await.map_err(io_err)?;
            match tokio_io::read::<Response, _>(&mut stream).await.map_err(io_err)? {
                Some(Response { kind: Some(response::Kind::Failure(f)) }) => Err(Error::refused(f)),
                Some(Response { kind: Some(k) }) => Ok(k),
                _ => Err(Error::Unexpected { path: path.clone(), call: "any call" }),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::CallTimeout { path: path.clone(), timeout })?
    }
}

/// An attach in progress: the container's output copies end when it exits (or when the
/// attacher fell behind); dropping it detaches.
pub struct Attached {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub stdin: Option<OwnedFd>,
    /// The container's pty master, for resizing.
    pub terminal: Option<OwnedFd>,
    conn: UnixStream,
}

impl Attached {
    /// Waits until the supervisor lets go of the attach (the container exited).
    pub async fn released(&self) {
        loop {
            if self.conn.readable().await.is_err() {
                return;
            }
            let mut b = [0u8; 1];
            match self.conn.try_read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
}

/// A streamed exec in flight: its pipes (non-blocking), and the connection its exit code
/// comes on.
pub struct StreamedExec {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// With a terminal: its pty master (non-blocking), instead of the three pipes.
    pub terminal: Option<OwnedFd>,
    conn: UnixStream,
    path: PathBuf,
}

impl StreamedExec {
    /// Waits for the command to exit; its exit code (128 + signal when killed).
    pub async fn wait(mut self) -> Result<i32, Error> {
        let path = self.path.clone();
        let io_err = |source| Error::Io { path: path.clone(), source };
        match tokio_io::read::<Response, _>(&mut self.conn).await.map_err(io_err)? {
            Some(Response { kind: Some(response::Kind::Exec(r)) }) => Ok(r.exit_code),
            Some(Response { kind: Some(response::Kind::Failure(f)) }) => Err(Error::refused(f)),
            _ => Err(Error::Unexpected { path, call: "Exec" }),
        }
    }
}

/// One byte and the descriptors that came with it (SCM_RIGHTS).
fn recv_fds(stream: &UnixStream) -> std::io::Result<(Option<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg =
        recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel installed these descriptors for this process in the
            // message just received; nothing else owns them.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let got = if msg.bytes == 0 { None } else { Some(byte[0]) };
    Ok((got, fds))
}

/// Connects to a supervisor socket. Paths too long for sun_path (108 bytes) are reached
/// through `/proc/self/fd/<dir fd>/<name>`.
async fn connect(path: &Path) -> Result<UnixStream, Error> {
    let err = |source| Error::Connect { path: path.into(), source };
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(path).await.map_err(err);
    }
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new("/"))).map_err(err)?;
    let short = super::via_dir_fd(&dir, path.file_name().unwrap_or_default());
    UnixStream::connect(short).await.map_err(err)
}
