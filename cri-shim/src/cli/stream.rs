//! `podbay exec -i/-t`, `podbay attach` and `podbay port-forward`: the CRI call, then the
//! URL it returns, spoken to over SPDY/3.1 as crictl does.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::stream::portforward::read_chunk;

use super::{connect, status_msg};
use crate::stream::client::ClientSession;

/// Which stdio a remote command gets.
#[derive(Debug, Clone, Copy)]
pub struct Stdio {
    pub stdin: bool,
    pub tty: bool,
}

/// Runs a command in a container with the terminal's stdio; its exit code.
pub async fn exec(ep: &Path, id: &str, cmd: &[String], io: Stdio) -> anyhow::Result<i32> {
    let mut c = connect(ep).await?;
    let req = cri::ExecRequest {
        container_id: id.to_owned(),
        cmd: cmd.to_vec(),
        tty: io.tty,
        stdin: io.stdin,
        stdout: true,
        stderr: !io.tty,
    };
    let url = c.exec(req).await.map_err(status_msg)?.into_inner().url;
    remote_command(&url, io).await
}

/// Attaches the terminal to a running container; 0 when the container ended the attach.
pub async fn attach(ep: &Path, id: &str, io: Stdio) -> anyhow::Result<i32> {
    let mut c = connect(ep).await?;
    let req = cri::AttachRequest {
        container_id: id.to_owned(),
        stdin: io.stdin,
        tty: io.tty,
        stdout: true,
        stderr: !io.tty,
    };
    let url = c.attach(req).await.map_err(status_msg)?.into_inner().url;
    remote_command(&url, io).await
}

/// The remotecommand protocol (v4) from the client's side.
async fn remote_command(url: &str, io: Stdio) -> anyhow::Result<i32> {
    let s = ClientSession::connect(url, "v4.channel.k8s.io").await?;
    let (_, mut error) = s.open(&[("streamType", "error")]).await?;
    let stdin = if io.stdin { Some(s.open(&[("streamType", "stdin")]).await?.0) } else { None };
    let (_, mut stdout) = s.open(&[("streamType", "stdout")]).await?;
    let mut stderr = if io.tty { None } else { Some(s.open(&[("streamType", "stderr")]).await?.1) };
    let resize = if io.tty { Some(s.open(&[("streamType", "resize")]).await?.0) } else { None };
    let raw = if io.tty { RawTerminal::enter() } else { None };
    if let Some(id) = resize {
        send_size(&s, id).await;
    }
    let s = std::sync::Arc::new(s);
    if let Some(id) = stdin {
        let s = s.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.send(id, buf[..n].to_vec(), false).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.send(id, Vec::new(), true).await;
        });
    }
    if let Some(id) = resize {
        let s = s.clone();
        tokio::spawn(async move {
            let kind = tokio::signal::unix::SignalKind::window_change();
            let Ok(mut winch) = tokio::signal::unix::signal(kind) else { return };
            while winch.recv().await.is_some() {
                send_size(&s, id).await;
            }
        });
    }
    let out = tokio::spawn(async move { copy_to(&mut stdout, tokio::io::stdout()).await });
    let err = tokio::spawn(async move {
        if let Some(rx) = stderr.as_mut() {
            copy_to(rx, tokio::io::stderr()).await;
        }
    });
    let mut report = Vec::new();
    while let Some(chunk) = error.recv().await {
        report.extend(chunk);
    }
    let _ = out.await;
    let _ = err.await;
    drop(raw);
    Ok(exit_code(&report))
}

async fn copy_to(rx: &mut mpsc::Receiver<Vec<u8>>, mut w: impl tokio::io::AsyncWrite + Unpin) {
    while let Some(chunk) = rx.recv().await {
        if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
            break;
        }
    }
}

/// The exit code a v4 Status carries (Success: 0); a failure without one is printed, 1.
fn exit_code(report: &[u8]) -> i32 {
    if report.is_empty() {
        return 0;
    }
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(report) else {
        eprintln!("{}", String::from_utf8_lossy(report));
        return 1;
    };
    if status["status"] == "Success" {
        return 0;
    }
    let code = status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str()?.parse().ok());
    match code {
        Some(code) => code,
        None => {
            eprintln!("{}", status["message"].as_str().unwrap_or("the command failed"));
            1
        }
    }
}

/// Sends the terminal's size on the resize stream.
async fn send_size(s: &ClientSession, id: u32) {
    let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    let fd = std::io::stdout().as_fd().as_raw_fd();
    // SAFETY: TIOCGWINSZ writes a winsize, which lives across the call.
    if unsafe { nix::libc::ioctl(fd, nix::libc::TIOCGWINSZ, &mut ws) } != 0 {
        return;
    }
    let event = format!("{{\"Width\":{},\"Height\":{}}}\n", ws.ws_col, ws.ws_row);
    let _ = s.send(id, event.into_bytes(), false).await;
}

/// The local terminal in raw mode (keys go through as typed), restored when dropped.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// `podbay port-forward POD LOCAL:REMOTE…`: listens on 127.0.0.1:LOCAL and forwards each
/// connection to REMOTE on the pod's localhost, over one session, until interrupted.
pub async fn port_forward(ep: &Path, pod: &str, mappings: &[String]) -> anyhow::Result<()> {
    let mut pairs = Vec::new();
    for m in mappings {
        let (local, remote) = m.split_once(':').unwrap_or((m, m));
        let local: u16 = local.parse().with_context(|| format!("local port in {m:?}"))?;
        let remote: u16 = remote.parse().with_context(|| format!("pod port in {m:?}"))?;
        if remote == 0 {
            bail!("pod port 0 in {m:?}");
        }
        pairs.push((local, remote));
    }
    let mut c = connect(ep).await?;
    let req = cri::PortForwardRequest {
        pod_sandbox_id: pod.to_owned(),
        port: pairs.iter().map(|(_, r)| i32::from(*r)).collect(),
    };
    let url = c.port_forward(req).await.map_err(status_msg)?.into_inner().url;
    let s = std::sync::Arc::new(ClientSession::connect(&url, "portforward.k8s.io").await?);
    let request_ids = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (local, remote) in pairs {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| format!("listen on 127.0.0.1:{local}"))?;
        println!("Forwarding from 127.0.0.1:{} -> {remote}", listener.local_addr()?.port());
        let (s, ids) = (s.clone(), request_ids.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
                tokio::spawn(forward_one(s.clone(), conn, remote, id));
            }
        });
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn forward_one(
    s: std::sync::Arc<ClientSession>,
    conn: tokio::net::TcpStream,
    port: u16,
    request: String,
) {
    let port = port.to_string();
    let headers =
        |kind| [("streamType", kind), ("port", port.as_str()), ("requestID", request.as_str())];
    let Ok((_, mut error)) = s.open(&headers("error")).await else { return };
    let Ok((data_id, mut data)) = s.open(&headers("data")).await else { return };
    let (mut rd, mut wr) = conn.into_split();
    let up = {
        let s = s.clone();
        async move {
            while let Some(chunk) = read_chunk(&mut rd).await {
                if s.send(data_id, chunk, false).await.is_err() {
                    return;
                }
            }
            let _ = s.send(data_id, Vec::new(), true).await;
        }
    };
    let down = async move {
        while let Some(chunk) = data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let errors = async move {
        let mut msg = Vec::new();
        while let Some(chunk) = error.recv().await {
            msg.extend(chunk);
        }
        if !msg.is_empty() {
            eprintln!("{}", String::from_utf8_lossy(&msg));
        }
    };
    tokio::join!(up, down, errors);
}
