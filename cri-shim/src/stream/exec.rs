//! Exec over a streaming connection (Kubernetes' remotecommand protocol): the client opens
//! one stream per `streamType` (`error`, and `stdin`, `stdout`, `stderr` as the Exec
//! request asked), podbay starts the command in the container with those as its stdio,
//! copies both ways, and when it exits reports how on the error stream: with
//! `v4.channel.k8s.io` a JSON `metav1.Status` (`Success`, or `Failure` with reason
//! `NonZeroExitCode` and an `ExitCode` cause), with older protocols a message for a
//! non-zero exit. The client going away kills the command.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use podbay_runtime::Runtime;
use serde_json::json;
use tokio::io::unix::AsyncFd;
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
    pub tty: bool,
}

/// The client's streams, by type.
#[derive(Default)]
struct Streams {
    error: Option<Incoming>,
    stdin: Option<Incoming>,
    stdout: Option<Incoming>,
    stderr: Option<Incoming>,
    resize: Option<Incoming>,
}

impl Streams {
    /// Whether every stream the request needs is open: a terminal's resize stream comes
    /// with protocols v3 and v4.
    fn complete(&self, spec: &ExecSpec, protocol: Option<&str>) -> bool {
        let resizes =
            spec.tty && matches!(protocol, Some("v4.channel.k8s.io" | "v3.channel.k8s.io"));
        self.error.is_some()
            && (!spec.stdin || self.stdin.is_some())
            && (!spec.stdout || self.stdout.is_some())
            && (!spec.stderr || self.stderr.is_some())
            && (!resizes || self.resize.is_some())
    }
}

pub async fn run(
    mut session: Session,
    protocol: Option<&'static str>,
    spec: ExecSpec,
    rt: Runtime,
) {
    let sender = session.sender.clone();
    let streams = match collect(&mut session, &spec, protocol).await {
        Some(s) => s,
        None => {
            sender.go_away().await;
            return;
        }
    };
    let error_id = streams.error.as_ref().map(|s| s.id).unwrap_or_default();
    let exec = match rt
        .containers()
        .exec_stream(&spec.container_id, spec.cmd.clone(), spec.stdin, spec.tty)
        .await
    {
        Ok(e) => e,
        Err(e) => {
            finish(&sender, &streams, error_id, protocol, Err(e.to_string())).await;
            return;
        }
    };
    let mut exec = exec;
    let mut streams = streams;
    let stdin_rx =
        streams.stdin.as_mut().map(|s| std::mem::replace(&mut s.data, mpsc::channel(1).1));
    let stdout_id = streams.stdout.as_ref().map(|s| s.id);
    let (out, err) = match exec.terminal.take() {
        Some(master) => {
            // SAFETY: the AsyncFd owns the master: the descriptor stays open and the same
            // until it is dropped.
            let term = match unsafe { AsyncFd::register(master) } {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    let e = e.to_string();
                    finish(&sender, &streams, error_id, protocol, Err(e)).await;
                    return;
                }
            };
            if let Some(rx) = stdin_rx {
                tokio::spawn(pump_to_terminal(rx, term.clone()));
            }
            if let Some(s) = streams.resize.as_mut() {
                let rx = std::mem::replace(&mut s.data, mpsc::channel(1).1);
                tokio::spawn(resize(rx, term.clone()));
            }
            let out = tokio::spawn(pump_from_terminal(term, sender.clone(), stdout_id));
            (out, tokio::spawn(async {}))
        }
        None => {
            let (stdin_fd, stdout_fd, stderr_fd) =
                (exec.stdin.take(), exec.stdout.take(), exec.stderr.take());
            let out = tokio::spawn(pump_out(stdout_fd, sender.clone(), stdout_id));
            let stderr_id = streams.stderr.as_ref().map(|s| s.id);
            let err = tokio::spawn(pump_out(stderr_fd, sender.clone(), stderr_id));
            if let (Some(fd), Some(rx)) = (stdin_fd, stdin_rx) {
                tokio::spawn(pump_in(rx, fd));
            }
            (out, err)
        }
    };
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

/// Attach: the same streams as Exec, joined to the running container's own stdio (copies
/// of its output from now on, its stdin, its terminal's size). It ends when the container
/// exits (its output copies end; with no output asked for, the supervisor lets go) or
/// when the client detaches, which leaves the container running.
pub async fn attach(
    mut session: Session,
    protocol: Option<&'static str>,
    spec: ExecSpec,
    rt: Runtime,
) {
    let sender = session.sender.clone();
    let Some(mut streams) = collect(&mut session, &spec, protocol).await else {
        sender.go_away().await;
        return;
    };
    let error_id = streams.error.as_ref().map(|s| s.id).unwrap_or_default();
    let attached = rt
        .containers()
        .attach(&spec.container_id, spec.stdin, spec.stdout, spec.stderr && !spec.tty)
        .await;
    let mut attached = match attached {
        Ok(a) => a,
        Err(e) => {
            finish(&sender, &streams, error_id, protocol, Err(e.to_string())).await;
            return;
        }
    };
    let stdout_id = streams.stdout.as_ref().map(|s| s.id);
    let stderr_id = streams.stderr.as_ref().map(|s| s.id);
    let out = tokio::spawn(pump_out(attached.stdout.take(), sender.clone(), stdout_id));
    let err = tokio::spawn(pump_out(attached.stderr.take(), sender.clone(), stderr_id));
    let stdin_rx =
        streams.stdin.as_mut().map(|s| std::mem::replace(&mut s.data, mpsc::channel(1).1));
    let terminal = match attached.terminal.take() {
        // SAFETY: the AsyncFd owns the descriptor until it is dropped.
        Some(t) => unsafe { AsyncFd::register(t) }.ok().map(Arc::new),
        None => None,
    };
    match (attached.stdin.take(), stdin_rx, &terminal) {
        (Some(_), Some(rx), Some(term)) => {
            // A terminal's input is its master (the descriptor the stdin slot carried is
            // a copy of it).
            tokio::spawn(pump_to_terminal(rx, term.clone()));
        }
        (Some(fd), Some(rx), None) => {
            tokio::spawn(pump_in(rx, fd));
        }
        _ => {}
    }
    if let (Some(term), Some(s)) = (&terminal, streams.resize.as_mut()) {
        let rx = std::mem::replace(&mut s.data, mpsc::channel(1).1);
        tokio::spawn(resize(rx, term.clone()));
    }
    let outputs = async {
        let _ = out.await;
        let _ = err.await;
    };
    let no_output = stdout_id.is_none() && stderr_id.is_none();
    tokio::select! {
        _ = outputs, if !no_output => {}
        _ = attached.released(), if no_output => {}
        _ = session.closed.wait_for(|closed| *closed) => return,
    }
    drop(attached);
    finish(&sender, &streams, error_id, protocol, Ok(0)).await;
}

/// Waits for the streams the request needs.
async fn collect(
    session: &mut Session,
    spec: &ExecSpec,
    protocol: Option<&str>,
) -> Option<Streams> {
    let mut streams = Streams::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while !streams.complete(spec, protocol) {
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
            Some("resize") if spec.tty => &mut streams.resize,
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

/// Reads a terminal's master; a hung-up terminal (EIO once the command's side is closed)
/// is its end.
async fn read_terminal(term: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut ready = term.readable().await?;
        let read = |fd: &AsyncFd<OwnedFd>| {
            nix::unistd::read(fd.get_ref(), &mut *buf).map_err(std::io::Error::from)
        };
        match ready.try_io(read) {
            Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_terminal(term: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut ready = term.writable().await?;
        let write = |fd: &AsyncFd<OwnedFd>| {
            nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)
        };
        match ready.try_io(write) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

async fn pump_from_terminal(term: Arc<AsyncFd<OwnedFd>>, sender: Sender, stream: Option<u32>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match read_terminal(&term, &mut buf).await {
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

/// The client's keys to the terminal. A terminal has no half-close: the command reads
/// ^D as the end of its input, as at a console.
async fn pump_to_terminal(mut data: mpsc::Receiver<Vec<u8>>, term: Arc<AsyncFd<OwnedFd>>) {
    while let Some(chunk) = data.recv().await {
        if write_terminal(&term, &chunk).await.is_err() {
            break;
        }
    }
}

/// Terminal size events, `{"Width":W,"Height":H}` one after another, applied to the
/// terminal (TIOCSWINSZ); anything else ends their handling.
async fn resize(mut data: mpsc::Receiver<Vec<u8>>, term: Arc<AsyncFd<OwnedFd>>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let mut pending = Vec::new();
    while let Some(chunk) = data.recv().await {
        pending.extend_from_slice(&chunk);
        if pending.len() > 64 << 10 {
            return;
        }
        let mut events = serde_json::Deserializer::from_slice(&pending).into_iter::<Size>();
        let mut used = 0;
        while let Some(event) = events.next() {
            match event {
                Ok(size) => {
                    used = events.byte_offset();
                    let ws = nix::libc::winsize {
                        ws_row: size.height,
                        ws_col: size.width,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let fd = term.get_ref().as_raw_fd();
                    // SAFETY: TIOCSWINSZ reads a winsize, which lives across the call.
                    unsafe { nix::libc::ioctl(fd, nix::libc::TIOCSWINSZ, &ws) };
                }
                Err(e) if e.is_eof() => break,
                Err(_) => return,
            }
        }
        pending.drain(..used);
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
