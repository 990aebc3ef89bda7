//! Exec over a streaming connection (Kubernetes' remotecommand protocol): the client opens
//! one stream per `streamType` (`error`, and `stdin`, `stdout`, `stderr` as the Exec
//! request asked), podbay starts the command in the container with those as its stdio,
//! copies both ways, and when it exits reports how on the error stream: with
//! `v4.channel.k8s.io` a JSON `metav1.Status` (`Success`, or `Failure` with reason
//! `NonZeroExitCode` and an `ExitCode` cause), with older protocols a message for a
//! non-zero exit. The client going away kills the command.

use std::os::fd::OwnedFd;
use std::time::Duration;

use podbay_runtime::Runtime;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::session::{Incoming, Sender, Session};
use super::spdy::RST_CANCEL;

/// How long the client may take to open its streams (Kubernetes' default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output may keep flowing after the command exited (a background child that
/// holds stdout open must not hold the session).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// An Exec request, validated, waiting for its client.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The client's streams, by type.
#[derive(Default)]
struct Streams {
    error: Option<Incoming>,
    stdin: Option<Incoming>,
    stdout: Option<Incoming>,
    stderr: Option<Incoming>,
}

impl Streams {
    fn complete(&self, spec: &ExecSpec) -> bool {
        self.error.is_some()
            && (!spec.stdin || self.stdin.is_some())
            && (!spec.stdout || self.stdout.is_some())
            && (!spec.stderr || self.stderr.is_some())
    }
}

pub async fn run(
    mut session: Session,
    protocol: Option<&'static str>,
    spec: ExecSpec,
    rt: Runtime,
) {
    let sender = session.sender.clone();
    let streams = match collect(&mut session, &spec).await {
        Some(s) => s,
        None => {
            sender.go_away().await;
            return;
        }
    };
    let error_id = streams.error.as_ref().map(|s| s.id).unwrap_or_default();
    let exec =
        match rt.containers().exec_stream(&spec.container_id, spec.cmd.clone(), spec.stdin).await {
            Ok(e) => e,
            Err(e) => {
                finish(&sender, &streams, error_id, protocol, Err(e.to_string())).await;
                return;
            }
        };
    let mut exec = exec;
    let (stdin_fd, stdout_fd, stderr_fd) =
        (exec.stdin.take(), exec.stdout.take(), exec.stderr.take());
    let out =
        tokio::spawn(pump_out(stdout_fd, sender.clone(), streams.stdout.as_ref().map(|s| s.id)));
    let err =
        tokio::spawn(pump_out(stderr_fd, sender.clone(), streams.stderr.as_ref().map(|s| s.id)));
    let mut streams = streams;
    if let (Some(fd), Some(s)) = (stdin_fd, streams.stdin.as_mut()) {
        let data = std::mem::replace(&mut s.data, mpsc::channel(1).1);
        tokio::spawn(pump_in(data, fd));
    }
    let exit = tokio::select! {
        code = exec.wait() => code.map_err(|e| e.to_string()),
        _ = session.closed.wait_for(|closed| *closed) => {
            // The client is gone; dropping the exec's connection kills the command.
            out.abort();
            err.abort();
            return;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    finish(&sender, &streams, error_id, protocol, exit).await;
}

/// Waits for the streams the request needs.
async fn collect(session: &mut Session, spec: &ExecSpec) -> Option<Streams> {
    let mut streams = Streams::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while !streams.complete(spec) {
        let s = tokio::select! {
            s = session.incoming.recv() => s?,
            _ = &mut deadline => {
                tracing::debug!("exec client did not open its streams in time");
                return None;
            }
        };
        let slot = match s.header("streamtype") {
            Some("error") => &mut streams.error,
            Some("stdin") if spec.stdin => &mut streams.stdin,
            Some("stdout") if spec.stdout => &mut streams.stdout,
            Some("stderr") if spec.stderr => &mut streams.stderr,
            other => {
                tracing::debug!(stream_type = ?other, "unexpected exec stream refused");
                session.sender.reset(s.id, RST_CANCEL).await;
                continue;
            }
        };
        *slot = Some(s);
    }
    Some(streams)
}

/// Copies the command's output to the client's stream (or drops it when the request
/// did not ask for it).
async fn pump_out(fd: Option<OwnedFd>, sender: Sender, stream: Option<u32>) {
    let Some(fd) = fd else { return };
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(id) = stream
                    && !sender.data(id, buf[..n].to_vec(), false).await
                {
                    break;
                }
            }
        }
    }
}

/// Copies the client's stdin to the command; its end (FIN) closes the command's stdin.
async fn pump_in(mut data: mpsc::Receiver<Vec<u8>>, fd: OwnedFd) {
    let Ok(mut tx) = pipe::Sender::from_owned_fd(fd) else { return };
    while let Some(chunk) = data.recv().await {
        if tx.write_all(&chunk).await.is_err() {
            break;
        }
    }
}

/// Reports the outcome on the error stream, closes every stream and the session.
async fn finish(
    sender: &Sender,
    streams: &Streams,
    error_id: u32,
    protocol: Option<&str>,
    outcome: Result<i32, String>,
) {
    let report = status_report(protocol, outcome);
    if !report.is_empty() {
        sender.data(error_id, report, false).await;
    }
    for s in [&streams.stdout, &streams.stderr, &streams.error].into_iter().flatten() {
        sender.data(s.id, Vec::new(), true).await;
    }
    sender.go_away().await;
}

/// What the error stream says: v4's JSON Status, or for older protocols a message when
/// something failed (nothing on success).
pub fn status_report(protocol: Option<&str>, outcome: Result<i32, String>) -> Vec<u8> {
    let v4 = protocol == Some("v4.channel.k8s.io");
    let doc = match outcome {
        Ok(0) => {
            if !v4 {
                return Vec::new();
            }
            json!({ "metadata": {}, "status": "Success" })
        }
        Ok(code) => {
            let message = format!("command terminated with non-zero exit code: exit code {code}");
            if !v4 {
                return message.into_bytes();
            }
            json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
            })
        }
        Err(message) => {
            if !v4 {
                return message.into_bytes();
            }
            json!({ "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError" })
        }
    };
    doc.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_reports_a_status_older_protocols_a_message() {
        let v4 = Some("v4.channel.k8s.io");
        let ok: serde_json::Value = serde_json::from_slice(&status_report(v4, Ok(0))).unwrap();
        assert_eq!(ok["status"], "Success");
        let bad: serde_json::Value = serde_json::from_slice(&status_report(v4, Ok(3))).unwrap();
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(bad["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(bad["details"]["causes"][0]["message"], "3");
        assert!(status_report(Some("v3.channel.k8s.io"), Ok(0)).is_empty());
        assert!(String::from_utf8(status_report(None, Ok(2))).unwrap().contains("exit code 2"));
    }
}
