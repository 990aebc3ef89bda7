//! Why a supervisor call (or its start-up) failed: one enum, sent to the daemon as a typed
//! `Failure` (kind, message, field of the caller's request) and nothing else.

use std::path::PathBuf;

use nix::errno::Errno;
use podbay_proto::supervisor::v1::{Failure, FailureKind};

use super::helper;

#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("container {0} is not in this pod")]
    NoContainer(String),
    #[error("container {0} already exists in this pod")]
    ContainerExists(String),
    #[error("container {0} has exited")]
    Exited(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} has no open stdin (its config's stdin is false)")]
    NoStdin(String),
    #[error("{0} is not a signal")]
    BadSignal(i32),
    #[error("the kernel refused sysctl {key}={value:?}: {source}")]
    Sysctl { key: String, value: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: Errno },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("bad pod interface: {0}")]
    Interface(String),
    #[error("pod network: {0}")]
    Network(#[from] podbay_netplug::netns::Error),
    #[error(transparent)]
    Helper(#[from] helper::Error),
    #[error("the container sent no terminal: {0}")]
    NoTerminal(String),
    #[error("bad request: {0}")]
    BadRequest(std::io::Error),
    #[error("the caller is not the daemon's user")]
    NotDaemon,
    #[error("{0} is answered on its own connection")]
    Misrouted(&'static str),
    #[error("the pod's init process exited")]
    PodInitGone,
    #[error("the pod's init process could not confine itself: {0}")]
    PodInitUnconfined(String),
    #[error("the supervisor exited before reporting; see {}", .0.display())]
    NoReport(PathBuf),
    #[error("{}: {reason}", .path.display())]
    LogPath { path: PathBuf, reason: String },
}

impl Failed {
    /// `f(e)` as a `Sys` failure of `what`.
    pub fn sys(what: &'static str) -> impl Fn(Errno) -> Failed {
        move |source| Failed::Sys { what, source }
    }

    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Failed {
        let path = path.into();
        move |source| Failed::Io { what, path, source }
    }

    /// The failure as the daemon receives it.
    pub fn to_failure(&self) -> Failure {
        let (kind, field) = match self {
            Failed::NoContainer(_) => (FailureKind::NotFound, String::new()),
            Failed::ContainerExists(_) => (FailureKind::AlreadyExists, String::new()),
            Failed::Exited(_) | Failed::NotRunning(_) | Failed::NoStdin(_) => {
                (FailureKind::FailedPrecondition, String::new())
            }
            Failed::BadSignal(_) | Failed::BadRequest(_) | Failed::NotDaemon => {
                (FailureKind::InvalidArgument, String::new())
            }
            Failed::Sysctl { key, .. } => {
                (FailureKind::InvalidArgument, format!("config.linux.sysctls[{key:?}]"))
            }
            Failed::LogPath { .. } => (FailureKind::InvalidArgument, "log_path".into()),
            Failed::Io { source, .. } if crate::error::is_no_space(source) => {
                (FailureKind::ResourceExhausted, String::new())
            }
            _ => (FailureKind::Internal, String::new()),
        };
        Failure { message: self.to_string(), field, kind: kind as i32 }
    }
}
