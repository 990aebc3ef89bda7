//! The client side of a SPDY/3.1 streaming connection, for podbay's own CLI (`podbay exec
//! -it`, `attach`, `port-forward`): hyper makes the upgrade request, then the client opens
//! streams (odd ids) and gets each one's data on a channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::spdy::{Frame, Headers, Reader, Writer};

type Routes = Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>>;

pub struct ClientSession {
    tx: mpsc::Sender<Frame>,
    routes: Routes,
    next_id: Mutex<u32>,
    /// The subprotocol the server chose.
    pub protocol: String,
}

impl ClientSession {
    /// Connects to a streaming URL (`http://…`) offering `protocol`.
    pub async fn connect(url: &str, protocol: &str) -> anyhow::Result<ClientSession> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("streaming URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("podbay's client speaks plain http to the streaming server ({url})");
        }
        let authority = uri.authority().context("a URL without host")?.to_string();
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connect to the streaming server {authority}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn.with_upgrades());
        let req = hyper::Request::post(uri.clone())
            .header("Host", &authority)
            .header("Connection", "Upgrade")
            .header("Upgrade", "SPDY/3.1")
            .header("X-Stream-Protocol-Version", protocol)
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            bail!("the streaming server answered {}", resp.status());
        }
        let chosen = resp
            .headers()
            .get("X-Stream-Protocol-Version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let io = TokioIo::new(hyper::upgrade::on(resp).await?);
        let (read, mut write) = tokio::io::split(io);
        let (tx, mut rx) = mpsc::channel::<Frame>(64);
        tokio::spawn(async move {
            let mut w = Writer::default();
            let mut batch = Vec::with_capacity(super::session::WRITE_BATCH);
            while rx.recv_many(&mut batch, super::session::WRITE_BATCH).await > 0 {
                if w.write_frames(&batch, &mut write).await.is_err() {
                    break;
                }
                batch.clear();
            }
            let _ = write.shutdown().await;
        });
        let routes: Routes = Arc::default();
        let (r, pong) = (routes.clone(), tx.clone());
        tokio::spawn(async move {
            let mut reader = Reader::new(read);
            while let Ok(Some(frame)) = reader.next().await {
                match frame {
                    Frame::Data { stream_id, fin, data } => {
                        let route = r.lock().expect("routes").get(&stream_id).cloned();
                        if let Some(tx) = route
                            && !data.is_empty()
                        {
                            let _ = tx.send(data).await;
                        }
                        if fin {
                            r.lock().expect("routes").remove(&stream_id);
                        }
                    }
                    Frame::RstStream { stream_id, .. } => {
                        r.lock().expect("routes").remove(&stream_id);
                    }
                    Frame::Ping { id } => {
                        let _ = pong.send(Frame::Ping { id }).await;
                    }
                    Frame::GoAway { .. } => break,
                    _ => {}
                }
            }
            r.lock().expect("routes").clear();
        });
        Ok(ClientSession { tx, routes, next_id: Mutex::new(1), protocol: chosen })
    }

    /// Opens a stream with these headers; its data from the server comes on the channel,
    /// which ends with the server's FIN.
    pub async fn open(
        &self,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u32, mpsc::Receiver<Vec<u8>>)> {
        let id = {
            let mut next = self.next_id.lock().expect("next id");
            let id = *next;
            *next += 2;
            id
        };
        let (data_tx, data) = mpsc::channel(16);
        self.routes.lock().expect("routes").insert(id, data_tx);
        let headers: Headers =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), vec![v.to_string()])).collect();
        self.tx
            .send(Frame::SynStream { stream_id: id, fin: false, headers })
            .await
            .context("the streaming connection is gone")?;
        Ok((id, data))
    }

    /// Data on a stream; `fin` ends the client's side of it.
    pub async fn send(&self, id: u32, data: Vec<u8>, fin: bool) -> anyhow::Result<()> {
        self.tx
            .send(Frame::Data { stream_id: id, fin, data })
            .await
            .context("the streaming connection is gone")
    }
}
