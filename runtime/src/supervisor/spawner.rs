//! The daemon's handle on its spawner process: the one single-threaded `podbay-supervisor`
//! process per daemon that forks pod supervisors (see `process/mod.rs`). Requests go one
//! at a time through its stdin and stdout; a spawner that died or hung is replaced on the
//! next use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use podbay_proto::frame::tokio_io;
use podbay_proto::supervisor::v1::{self as proto, FailureKind, Started, started};

use super::sealed::SealedExe;
use super::{Error, Identity};
use crate::ids::SandboxId;
use crate::layout::PodLayout;

/// How long a supervisor may take to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The pod's own user namespace.
    pub userns: Option<&'a crate::sandbox::UsernsSpec>,
    /// podbay's directories a container's mount table is narrowed of (`crate::view`).
    pub view_parents: &'a [PathBuf],
}

impl SpawnRequest<'_> {
    fn to_proto(&self) -> proto::SpawnRequest {
        proto::SpawnRequest {
            sandbox_id: self.id.to_string(),
            pod_dir: self.pod.dir().to_string_lossy().into_owned(),
            new_net: self.new_net,
            new_ipc: self.new_ipc,
            new_uts: self.new_uts,
            new_pid: self.new_pid,
            hostname: self.hostname.to_owned(),
            sysctls: self.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            interface: self.interface.map(|i| proto::PodInterface {
                host_veth: i.host_veth.clone(),
                address: i.address.to_string(),
                prefix_len: u32::from(i.prefix_len),
                gateway: i.gateway.to_string(),
                mtu: i.mtu,
            }),
            uid_mappings: self.userns.map(|u| id_mappings(&u.uids)).unwrap_or_default(),
            gid_mappings: self.userns.map(|u| id_mappings(&u.gids)).unwrap_or_default(),
            view_parents: self
                .view_parents
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        }
    }
}

fn id_mappings(ranges: &[crate::sandbox::IdRange]) -> Vec<proto::IdMapping> {
    ranges
        .iter()
        .map(|r| proto::IdMapping {
            container_id: r.container_id,
            host_id: r.host_id,
            length: r.length,
        })
        .collect()
}

/// A supervisor that reported ready.
#[derive(Debug, Clone, Copy)]
pub struct Launched {
    pub supervisor: Identity,
    pub pod_init: Option<Identity>,
}

pub struct Spawner {
    exe: PathBuf,
    /// What every spawner is started from (see `sealed.rs`).
    sealed: SealedExe,
    io: tokio::sync::Mutex<Option<SpawnerIo>>,
}

struct SpawnerIo {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

impl Spawner {
    /// Seals the supervisor binary (once per daemon) for every spawner to start from.
    pub fn new(exe: &Path) -> Result<Self, Error> {
        let err = |source| Error::Spawn { exe: exe.to_path_buf(), source };
        let started = std::time::Instant::now();
        let sealed = SealedExe::open(exe).map_err(err)?;
        let us = started.elapsed().as_micros() as u64;
        tracing::info!(exe = %exe.display(), how = sealed.how, us, "pod supervisors run from a sealed binary");
        Ok(Self { exe: exe.to_path_buf(), sealed, io: tokio::sync::Mutex::new(None) })
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
        let mut child = tokio::process::Command::new(self.sealed.exec_path())
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
        let msg = req.to_proto();
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

/// A start-up failure that names a field of the pod's config is the caller's bad input;
/// any other is the supervisor's own.
fn launched(started: Started, log: PathBuf) -> Result<Launched, Error> {
    match started.result {
        Some(started::Result::Ready(ready)) => {
            let supervisor = Identity::from_proto(ready.supervisor)
                .ok_or_else(|| Error::Start { message: "report without pid".into(), log })?;
            Ok(Launched { supervisor, pod_init: Identity::from_proto(ready.pod_init) })
        }
        Some(started::Result::Failure(f)) if f.kind() == FailureKind::InvalidArgument => {
            Err(Error::refused(f))
        }
        Some(started::Result::Failure(f)) => Err(Error::Start { message: f.message, log }),
        None => Err(Error::NoReport { status: "empty report".into(), log }),
    }
}
