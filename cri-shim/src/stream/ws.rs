//! Exec and Attach over WebSocket (crictl's `--transport websocket`, Kubernetes'
//! `channel.k8s.io` family): every message is one channel's data, the channel in its
//! first byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; with `v5.channel.k8s.io`
//! a client's `[255, n]` closes channel n, which is how stdin ends). The base64 protocols
//! send text messages: the channel as an ASCII digit, then the data in base64.
//!
//! The connection is presented to the Exec and Attach code as a [`Session`] whose client
//! opened one stream per channel, so both transports run the same code.
//!
//! PortForward over WebSocket (Kubernetes' `portforward` websocket handler): the ports
//! come in the URL's `port` query parameters; port i has channel 2i for its data and
//! 2i+1 for its errors, and the server first writes the port (u16, little endian) on both.
//! The session presents each port as the `data` and `error` stream pair a SPDY client
//! would have opened.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::session::Out;
use super::session::{Activity, Incoming, Session};
use super::spdy::{Frame, Headers};

/// The subprotocols podbay speaks over WebSocket, preferred first.
pub const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const CHANNELS: [(u8, &str); 5] =
    [(0, "stdin"), (1, "stdout"), (2, "stderr"), (3, "error"), (4, "resize")];
const CLOSE: u8 = 255;

/// The subprotocols of PortForward over WebSocket (no subprotocol at all is binary too).
pub const WS_PORT_FORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

/// At most this many ports in one WebSocket port-forward.
pub const MAX_WS_PORTS: usize = 16;

/// The SPDY subprotocol whose behaviour a WebSocket one has (v5 reports as v4 does).
pub fn as_stream_protocol(ws: &str) -> Option<&'static str> {
    match ws {
        "v5.channel.k8s.io" | "v4.channel.k8s.io" | "v4.base64.channel.k8s.io" => {
            Some("v4.channel.k8s.io")
        }
        "v3.channel.k8s.io" => Some("v3.channel.k8s.io"),
        "v2.channel.k8s.io" => Some("v2.channel.k8s.io"),
        _ => Some("channel.k8s.io"),
    }
}

/// The streams a WebSocket connection stands for.
#[derive(Clone, Copy)]
pub enum Channels<'a> {
    /// Exec and Attach: stdin, stdout, stderr, error, resize.
    Exec,
    /// PortForward of these ports.
    Ports(&'a [u16]),
}

/// Drives a WebSocket connection (its upgrade answered) as a session.
pub fn serve<IO>(
    ws: WebSocketStream<IO>,
    protocol: &str,
    channels: Channels<'_>,
    idle: std::time::Duration,
) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let base64 = protocol.contains("base64");
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Out>(64);
    let prefix_tx = tx.clone();
    let sender = super::session::Sender::from_channel(tx);
    // (channel, headers) of each stream the connection stands for.
    let streams: Vec<(u8, Headers)> = match channels {
        Channels::Exec => CHANNELS
            .iter()
            .map(|(ch, kind)| (*ch, [("streamtype".to_owned(), vec![kind.to_string()])].into()))
            .collect(),
        Channels::Ports(ports) => ports
            .iter()
            .take(MAX_WS_PORTS)
            .enumerate()
            .flat_map(|(i, port)| {
                ["data", "error"].into_iter().enumerate().map(move |(k, kind)| {
                    let headers: Headers = [
                        ("streamtype".to_owned(), vec![kind.to_owned()]),
                        ("port".to_owned(), vec![port.to_string()]),
                        ("requestid".to_owned(), vec![i.to_string()]),
                    ]
                    .into();
                    ((2 * i + k) as u8, headers)
                })
            })
            .collect(),
    };
    let (incoming_tx, incoming) = mpsc::channel(streams.len().max(1));
    let (closed_tx, closed) = watch::channel(false);
    let closed_tx = std::sync::Arc::new(closed_tx);
    let activity = Activity::default();
    super::session::watch_idle(activity.clone(), idle, sender.clone(), closed_tx.clone());
    let wrote = activity.clone();
    let mut inputs: Vec<Option<mpsc::Sender<Vec<u8>>>> = vec![None; streams.len().max(5)];
    for (ch, headers) in streams {
        let (data_tx, data) = mpsc::channel(16);
        inputs[ch as usize] = Some(data_tx);
        if let Channels::Ports(ports) = channels {
            // Each port's channels begin with the port, as Kubernetes' server writes it.
            let data = ports[usize::from(ch / 2)].to_le_bytes().to_vec();
            let frame = Frame::Data { stream_id: u32::from(ch), fin: false, data };
            let _ = prefix_tx.try_send(Out::Frame(frame));
        }
        let _ = incoming_tx.try_send(Incoming { id: u32::from(ch), headers, data });
    }
    drop(prefix_tx);
    tokio::spawn(async move {
        // The session's sender never splices here: only frames come.
        while let Some(Out::Frame(frame)) = rx.recv().await {
            wrote.touch();
            let msg = match frame {
                Frame::Data { stream_id, data, .. } if !data.is_empty() => {
                    let ch = stream_id as u8;
                    if base64 {
                        let text = base64::engine::general_purpose::STANDARD.encode(&data);
                        Message::text(format!("{ch}{text}"))
                    } else {
                        let mut out = Vec::with_capacity(data.len() + 1);
                        out.push(ch);
                        out.extend_from_slice(&data);
                        Message::binary(out)
                    }
                }
                Frame::GoAway { .. } => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                _ => continue,
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            activity.touch();
            let (ch, data) = match msg {
                Message::Binary(b) if !b.is_empty() => (b[0], b[1..].to_vec()),
                Message::Text(t) if base64 && !t.is_empty() => {
                    let ch = t.as_bytes()[0].wrapping_sub(b'0');
                    let decoded =
                        base64::engine::general_purpose::STANDARD.decode(&t.as_bytes()[1..]);
                    match decoded {
                        Ok(d) => (ch, d),
                        Err(_) => break,
                    }
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if ch == CLOSE {
                if let Some(&n) = data.first()
                    && let Some(slot) = inputs.get_mut(n as usize)
                {
                    *slot = None;
                }
                continue;
            }
            if let Some(Some(tx)) = inputs.get(ch as usize)
                && !data.is_empty()
            {
                let _ = tx.send(data).await;
            }
        }
        let _ = closed_tx.send(true);
    });
    Session { sender, incoming, closed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_protocols_behave_as_their_spdy_kin() {
        assert_eq!(as_stream_protocol("v5.channel.k8s.io"), Some("v4.channel.k8s.io"));
        assert_eq!(as_stream_protocol("base64.channel.k8s.io"), Some("channel.k8s.io"));
        assert!(WS_PROTOCOLS.iter().all(|p| as_stream_protocol(p).is_some()));
    }
}
