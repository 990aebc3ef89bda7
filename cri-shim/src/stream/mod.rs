//! The streaming server: what the URLs of Exec (and later Attach and PortForward) lead to.
//!
//! The CRI call is only validated and remembered under a single-use random token (8
//! bytes, as containerd's, valid for a minute, the Kubernetes streaming package's
//! default); the client (kubelet's proxy, crictl) then makes an HTTP/1.1 upgrade request
//! to `/exec/<token>` and speaks SPDY/3.1 on the connection. A wrong, used or expired
//! token gets 404 and runs nothing.

pub mod client;
mod exec;
pub(crate) mod portforward;
pub mod session;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use podbay_runtime::Runtime;
use tokio::net::TcpListener;

pub use self::exec::ExecSpec;
pub use self::portforward::PortForwardSpec;

/// How long a URL stays usable.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests waiting for their client at once (containerd's in-flight limit).
const MAX_PENDING: usize = 1000;
/// The subprotocols podbay speaks over SPDY, preferred first.
pub const SPDY_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// Port forwarding's one subprotocol.
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// A call waiting for its client.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(ExecSpec),
    /// An Attach (an ExecSpec without a command).
    Attach(ExecSpec),
    PortForward(PortForwardSpec),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }

    fn protocols(&self) -> &'static [&'static str] {
        match self {
            Pending::Exec(_) | Pending::Attach(_) => SPDY_PROTOCOLS,
            Pending::PortForward(_) => PORT_FORWARD_PROTOCOLS,
        }
    }
}

#[derive(Clone)]
pub struct StreamServer {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    /// `https` with TLS configured.
    scheme: &'static str,
    /// A connection that carries nothing this long is closed.
    idle_timeout: Duration,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
    runtime: Runtime,
}

impl StreamServer {
    /// Binds the listener and serves it in the background.
    pub async fn start(
        cfg: &crate::config::StreamSection,
        runtime: Runtime,
    ) -> anyhow::Result<Self> {
        let ip: std::net::IpAddr = cfg.address.parse()?;
        let tls = if cfg.tls_cert_file.as_os_str().is_empty() {
            None
        } else {
            Some(tls_acceptor(&cfg.tls_cert_file, &cfg.tls_key_file)?)
        };
        let idle_timeout = Duration::from_secs(cfg.idle_timeout_seconds);
        let listener = TcpListener::bind((ip, cfg.port)).await?;
        let addr = listener.local_addr()?;
        let server = StreamServer {
            inner: Arc::new(Inner {
                addr,
                scheme: if tls.is_some() { "https" } else { "http" },
                idle_timeout,
                pending: Mutex::new(HashMap::new()),
                runtime,
            }),
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Small frames (SYN_REPLY, a prompt, a status) go out at once, as Go's
                // connections (every Kubernetes client's) do.
                let _ = conn.set_nodelay(true);
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(s.handle(req)) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(TokioIo::new(conn), service)
                                .with_upgrades()
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(Ok(conn)) =
                                tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(conn)).await
                            else {
                                return;
                            };
                            let _ = http
                                .serve_connection(TokioIo::new(conn), service)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        tracing::info!(%addr, "streaming server listening");
        Ok(server)
    }

    /// `http://<address>:<port>` (`https` with TLS).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.inner.scheme, self.inner.addr)
    }

    /// Remembers a call and returns the URL its client connects to.
    pub fn url_for(&self, call: Pending) -> Result<String, tonic::Status> {
        let mut map = self.inner.pending.lock().expect("pending lock");
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        if map.len() >= MAX_PENDING {
            return Err(tonic::Status::resource_exhausted(format!(
                "{MAX_PENDING} streaming requests are already waiting for their clients"
            )));
        }
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let kind = call.kind();
        map.insert(token.clone(), (call, now));
        Ok(format!("{}://{}/{kind}/{token}", self.inner.scheme, self.inner.addr))
    }

    /// Takes a token's call: once, within its lifetime.
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut map = self.inner.pending.lock().expect("pending lock");
        let (call, at) = map.remove(token)?;
        (call.kind() == kind && at.elapsed() < TOKEN_TTL).then_some(call)
    }

    fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_start_matches('/');
        let Some((kind, token)) = path.split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "no such streaming URL");
        };
        let Some(call) = self.take(kind, token) else {
            return plain(StatusCode::NOT_FOUND, "unknown, used or expired streaming token");
        };
        let upgrade = header_values(&req, "upgrade");
        if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
            return self.websocket(req, call);
        }
        if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
            return plain(
                StatusCode::BAD_REQUEST,
                "an Upgrade: SPDY/3.1 or Upgrade: websocket request is expected",
            );
        }
        let offered = header_values(&req, "x-stream-protocol-version");
        let protocol = match negotiate(call.protocols(), &offered) {
            Ok(p) => p,
            Err(()) => return no_common_protocol(&offered, call.protocols()),
        };
        let (runtime, idle) = (self.inner.runtime.clone(), self.inner.idle_timeout);
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Some(io) = upgraded(on_upgrade).await else { return };
            // A plain TCP connection lets forwarded data go out by splice.
            let session = match io.into_inner().downcast::<TokioIo<tokio::net::TcpStream>>() {
                Ok(parts) => session::serve_tcp(parts.io.into_inner(), parts.read_buf, idle),
                Err(io) => session::serve(TokioIo::new(io), idle),
            };
            dispatch(session, protocol, call, runtime).await;
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("Connection", "Upgrade".parse().expect("a token"));
        h.insert("Upgrade", "SPDY/3.1".parse().expect("a token"));
        if let Some(p) = protocol {
            h.insert("X-Stream-Protocol-Version", p.parse().expect("a token"));
        }
        r
    }
}

impl StreamServer {
    /// Exec and Attach over WebSocket (RFC 6455's handshake; `ws.rs` for the channels).
    fn websocket(&self, req: Request<Incoming>, call: Pending) -> Response<Full<Bytes>> {
        let Some(key) = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec())
        else {
            return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
        };
        let offered = header_values(&req, "sec-websocket-protocol");
        let ports = match &call {
            Pending::PortForward(spec) => match ws_ports(req.uri().query(), &spec.ports) {
                Ok(p) => Some(p),
                Err(why) => return plain(StatusCode::BAD_REQUEST, &why),
            },
            _ => None,
        };
        let ours = if ports.is_some() { ws::WS_PORT_FORWARD_PROTOCOLS } else { ws::WS_PROTOCOLS };
        // Port forwarding also takes a client that offers no subprotocol (binary).
        let protocol = match ours.iter().find(|p| offered.iter().any(|o| o == *p)) {
            Some(p) => Some(*p),
            None if ports.is_some() && offered.is_empty() => None,
            None => return no_common_protocol(&offered, ours),
        };
        let (runtime, idle) = (self.inner.runtime.clone(), self.inner.idle_timeout);
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Some(io) = upgraded(on_upgrade).await else { return };
            let role = tokio_tungstenite::tungstenite::protocol::Role::Server;
            let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(io, role, None).await;
            let name = protocol.unwrap_or_default();
            match (call, ports) {
                (Pending::PortForward(spec), Some(ports)) => {
                    let session = ws::serve(socket, name, ws::Channels::Ports(&ports), idle);
                    portforward::run_pairs(session, spec, ports.len()).await;
                }
                (call, _) => {
                    let session = ws::serve(socket, name, ws::Channels::Exec, idle);
                    dispatch(session, ws::as_stream_protocol(name), call, runtime).await;
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("Connection", "Upgrade".parse().expect("a token"));
        h.insert("Upgrade", "websocket".parse().expect("a token"));
        if let Some(p) = protocol {
            h.insert("Sec-WebSocket-Protocol", p.parse().expect("a token"));
        }
        if let Ok(v) = accept.parse() {
            h.insert("Sec-WebSocket-Accept", v);
        }
        r
    }
}

/// The ports of a WebSocket port-forward: `port` query parameters (each may list several,
/// comma-separated), 1–65535, among those the PortForward request named (if it named any).
fn ws_ports(query: Option<&str>, allowed: &[i32]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in query.unwrap_or_default().split('&').filter_map(|kv| kv.split_once('=')) {
        if key != "port" {
            continue;
        }
        for p in value.split(',') {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("unable to parse {p:?} as a port"))?;
            if !allowed.is_empty() && !allowed.contains(&i32::from(port)) {
                return Err(format!(
                    "port {port} is not among the ports the PortForward request named"
                ));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    if ports.len() > ws::MAX_WS_PORTS {
        return Err(format!("at most {} ports in one connection", ws::MAX_WS_PORTS));
    }
    Ok(ports)
}

/// The connection once its upgrade went through.
async fn upgraded(on: hyper::upgrade::OnUpgrade) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match on.await {
        Ok(io) => Some(TokioIo::new(io)),
        Err(e) => {
            tracing::debug!(error = %e, "streaming upgrade failed");
            None
        }
    }
}

/// Runs the call a token stood for on its session.
async fn dispatch(
    session: session::Session,
    protocol: Option<&'static str>,
    call: Pending,
    rt: Runtime,
) {
    match call {
        Pending::Exec(spec) => exec::run(session, protocol, spec, rt).await,
        Pending::Attach(spec) => exec::attach(session, protocol, spec, rt).await,
        Pending::PortForward(spec) => portforward::run(session, spec).await,
    }
}

/// 403, listing what podbay speaks.
fn no_common_protocol(offered: &[String], ours: &[&str]) -> Response<Full<Bytes>> {
    let mut r =
        plain(StatusCode::FORBIDDEN, &format!("no common subprotocol: offered {offered:?}"));
    for p in ours {
        if let Ok(value) = p.parse() {
            r.headers_mut().append("X-Supported-Stream-Protocol-Versions", value);
        }
    }
    r
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// A TLS acceptor from PEM files (a certificate chain and its private key).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("stream.tls_cert_file {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("stream.tls_cert_file {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("stream.tls_key_file {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("stream.tls_cert_file and tls_key_file do not make a server certificate")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The subprotocol to speak: the first of podbay's the client offers; none offered is the
/// original protocol (`None`), as Kubernetes' handshake allows.
fn negotiate(
    ours: &'static [&'static str],
    offered: &[String],
) -> Result<Option<&'static str>, ()> {
    if offered.is_empty() {
        return Ok(None);
    }
    ours.iter().find(|p| offered.iter().any(|o| o == *p)).map(|p| Some(*p)).ok_or(())
}

/// Every value of a header, comma-separated lists split.
fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_common_subprotocol_wins() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ours = SPDY_PROTOCOLS;
        let both = o(&["v2.channel.k8s.io", "v4.channel.k8s.io"]);
        assert_eq!(negotiate(ours, &both), Ok(Some("v4.channel.k8s.io")));
        assert_eq!(negotiate(ours, &o(&["channel.k8s.io"])), Ok(Some("channel.k8s.io")));
        assert_eq!(negotiate(ours, &[]), Ok(None));
        assert_eq!(negotiate(ours, &o(&["v5.channel.k8s.io"])), Err(()));
        let pf = o(&["portforward.k8s.io"]);
        assert_eq!(negotiate(PORT_FORWARD_PROTOCOLS, &pf), Ok(Some("portforward.k8s.io")));
        assert_eq!(negotiate(PORT_FORWARD_PROTOCOLS, &both), Err(()));
    }
}
