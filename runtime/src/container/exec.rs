//! ExecSync: the pod's supervisor runs the command in the container (libcontainer's
//! tenant builder), collects up to a limit of its output and answers when it exits.
//! The answer does not wait for the output pipes to close, so a background child that
//! keeps them open cannot hang it.

use std::time::Duration;

use podbay_proto::supervisor::v1::{AttachRequest, ExecRequest};

use super::{ContainerState, Containers, Error};
use crate::supervisor::Client;
pub use crate::supervisor::{Attached, StreamedExec};

/// Bytes kept of each of stdout and stderr.
pub const OUTPUT_LIMIT: usize = 16 << 20;

/// What an ExecSync returns.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Containers {
    pub async fn exec_sync(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, Error> {
        let (rec, pod) = self.running(id, "cannot exec")?;
        if args.is_empty() {
            return Err(Error::invalid("cmd", "empty"));
        }
        self.prime_for_libcontainer(&pod);
        let req = ExecRequest {
            id: rec.id.to_string(),
            args,
            timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
            output_limit: OUTPUT_LIMIT as u64,
            state_root: pod.containers().to_string_lossy().into_owned(),
            streamed: false,
            stdin: false,
            tty: false,
            narrow: self.narrow_views(&rec.sandbox_id, rec.id.as_str(), false),
        };
        // The supervisor enforces the timeout; the call waits a little longer.
        let wait = timeout.map_or(Duration::from_secs(24 * 3600), |t| t + Duration::from_secs(10));
        let r = Client::new(&pod).exec(req, wait).await.map_err(Error::supervisor(&rec.id))?;
        if r.timed_out {
            return Err(Error::ExecTimeout { id: rec.id, timeout: timeout.unwrap_or_default() });
        }
        // A cut stream ends with a note saying so, within the limit.
        let note = |mut out: Vec<u8>, cut: bool| {
            if cut {
                let note = format!("\n[podbay: output cut at {} MiB]\n", OUTPUT_LIMIT >> 20);
                out.truncate(OUTPUT_LIMIT - note.len());
                out.extend_from_slice(note.as_bytes());
            }
            out
        };
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: note(r.stdout, r.stdout_truncated),
            stderr: note(r.stderr, r.stderr_truncated),
        })
    }

    /// Attaches to a running container's stdio (CRI Attach, once the streaming client
    /// connected).
    pub async fn attach(
        &self,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<Attached, Error> {
        let (rec, pod) = self.running(id, "cannot attach")?;
        let req = AttachRequest { id: rec.id.to_string(), stdin, stdout, stderr };
        Client::new(&pod).attach(req).await.map_err(Error::supervisor(&rec.id))
    }

    /// Starts a command in a running container whose stdin, stdout and stderr are the
    /// caller's (CRI Exec, after the streaming client connected).
    pub async fn exec_stream(
        &self,
        id: &str,
        args: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<StreamedExec, Error> {
        let (rec, pod) = self.running(id, "cannot exec")?;
        if args.is_empty() {
            return Err(Error::invalid("cmd", "empty"));
        }
        self.prime_for_libcontainer(&pod);
        let req = ExecRequest {
            id: rec.id.to_string(),
            args,
            timeout_ms: 0,
            output_limit: 0,
            state_root: pod.containers().to_string_lossy().into_owned(),
            streamed: true,
            stdin,
            tty,
            narrow: self.narrow_views(&rec.sandbox_id, rec.id.as_str(), false),
        };
        Client::new(&pod).exec_stream(req).await.map_err(Error::supervisor(&rec.id))
    }

    /// Starts a migration that moves nothing when libcontainer's tenant builder will run
    /// the exec: its process moves into the container's cgroup by pid, and waits less
    /// when one has just gone through. An exec the supervisor launches joins without the
    /// global lock, and a migration in flight (which holds the cgroup mutex while it
    /// waits) would hold it up.
    fn prime_for_libcontainer(&self, pod: &crate::layout::PodLayout) {
        let pod_userns = pod.ns(crate::layout::NsKind::User).exists();
        if !self.inner.node.supervisor_launches(pod_userns) {
            crate::cgroups::prime_migration(&self.inner.node.cgroup_v1_hierarchies);
        }
    }

    /// A running container's record and its pod's layout; any other state is `what`.
    fn running(
        &self,
        id: &str,
        what: &'static str,
    ) -> Result<(super::ContainerRecord, crate::layout::PodLayout), Error> {
        let rec = self.resolve(id)?.snapshot();
        if rec.state != ContainerState::Running {
            return Err(Error::State { id: rec.id, state: rec.state, what });
        }
        let pod = self.pod_of(&rec.sandbox_id)?;
        Ok((rec, pod))
    }
}
