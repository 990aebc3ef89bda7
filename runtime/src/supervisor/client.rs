//! The daemon's client of one pod supervisor: one typed method per call of
//! `podbay.supervisor.v1`. Each call is one connection carrying one Request and one
//! Response; a Failure becomes [`Error::Refused`] with its kind, and any other answer than
//! the call's own is [`Error::Unexpected`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use podbay_proto::frame::tokio_io;
use podbay_proto::supervisor::v1::{
    ContainerState, ContainerStatesRequest, CreateContainerRequest, ExecRequest, ExecResponse,
    ForgetContainerRequest, PingRequest, ReopenLogRequest, Request, Response, ShutdownRequest,
    SignalContainerRequest, StartContainerRequest, request, response,
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
