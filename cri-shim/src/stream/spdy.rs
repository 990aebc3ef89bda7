//! SPDY/3.1 framing, as Kubernetes' streaming (kubelet, crictl, kubectl through the API
//! server) speaks it to a runtime: the server side of a connection whose client opens
//! every stream. No crate serves that side (the one published for Rust opens streams as a
//! client), so this is podbay's own, from the SPDY/3 draft:
//!
//! - a control frame is `1 | version(15) = 3 | type(16) | flags(8) | length(24)` and its
//!   payload; a data frame is `0 | stream id(31) | flags(8) | length(24)` and its data;
//! - a header block is a count and length-prefixed names and values, compressed with
//!   zlib over the whole connection (one context per direction) and a fixed dictionary.
//!
//! Peers (Docker's spdystream, used by every Kubernetes client) do not do flow control,
//! so WINDOW_UPDATE is accepted and never needed; SETTINGS are ignored; PING is echoed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The largest frame accepted (a peer's data frames are its write sizes: 32 KiB for
/// Kubernetes' clients).
pub const MAX_FRAME: usize = 1 << 20;
/// The largest header block accepted, decompressed.
const MAX_HEADER_BLOCK: usize = 64 << 10;

/// Header names (lower case) and their values.
pub type Headers = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// SETTINGS, WINDOW_UPDATE, and control types SPDY/3.1 peers may send that mean
    /// nothing to a server without flow control.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// Writes every part, in order, with vectored writes of up to 64 parts.
async fn write_all_parts<W: AsyncWrite + Unpin>(
    io: &mut W,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let (mut i, mut off) = (0, 0);
    loop {
        while i < parts.len() && parts[i].len() == off {
            i += 1;
            off = 0;
        }
        if i == parts.len() {
            return Ok(());
        }
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&parts[i][off..])
            .chain(parts[i + 1..].iter().take(63).copied())
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = parts[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
}

/// SPDY/3's header compression dictionary: these words, each with a 4-byte big-endian
/// length, then the text of common values.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411\
            412413414415416417502504505203 Non-Authoritative Information204 No Content301 \
            Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 \
            Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr \
            May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, \
            GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,\
            application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,\
            deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut out = Vec::with_capacity(1423);
        for w in WORDS {
            out.extend_from_slice(&(w.len() as u32).to_be_bytes());
            out.extend_from_slice(w.as_bytes());
        }
        out.extend_from_slice(TAIL.as_bytes());
        out
    })
}

/// Reads frames from the client, decompressing header blocks in the connection's context.
pub struct Reader<R> {
    io: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R) -> Self {
        Reader { io, inflate: Decompress::new(true) }
    }

    /// The next frame; `None` at a clean end of the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, Error> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(protocol(format!("a {len}-byte frame (at most {MAX_FRAME})")));
        }
        // The payload grows as its bytes arrive: a length alone allocates at most 256 KiB.
        // Reads go into the spare room (read_to_end would grow a full buffer once more,
        // copying it, only to find the end).
        let mut payload = Vec::with_capacity(len.min(256 << 10));
        while payload.len() < len {
            if payload.len() == payload.capacity() {
                payload.reserve_exact(len - payload.len());
            }
            let want = (len - payload.len()) as u64;
            if (&mut self.io).take(want).read_buf(&mut payload).await? == 0 {
                return Err(protocol("the connection ended inside a frame"));
            }
        }
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data { stream_id, fin, data: payload }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(protocol(format!("SPDY version {version} (3 expected)")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize| -> Result<u32, Error> {
            let b = payload.get(at..at + 4).ok_or_else(|| protocol("a short control frame"))?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let id = |at: usize| word(at).map(|w| w & 0x7fff_ffff);
        Ok(Some(match kind {
            SYN_STREAM => {
                let stream_id = id(0)?;
                let block = payload.get(10..).ok_or_else(|| protocol("a short SYN_STREAM"))?;
                Frame::SynStream { stream_id, fin, headers: self.headers(block)? }
            }
            SYN_REPLY => {
                let stream_id = id(0)?;
                Frame::SynReply { stream_id, fin, headers: self.headers(&payload[4..])? }
            }
            HEADERS => {
                let stream_id = id(0)?;
                Frame::Headers { stream_id, fin, headers: self.headers(&payload[4..])? }
            }
            RST_STREAM => Frame::RstStream { stream_id: id(0)?, status: word(4)? },
            PING => Frame::Ping { id: word(0)? },
            GOAWAY => Frame::GoAway { last_good: id(0)?, status: word(4).unwrap_or(0) },
            _ => Frame::Ignored,
        }))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let raw = inflate(&mut self.inflate, block)?;
        parse_block(&raw)
    }
}

/// Decompresses one header block in the connection's context (the dictionary is asked
/// for by the first block).
fn inflate(z: &mut Decompress, block: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(block.len() * 4);
    let mut input = block;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(protocol("a header block over 64 KiB"));
            }
            out.reserve(4096);
        }
        let before = z.total_in();
        let result = z.decompress_vec(input, &mut out, FlushDecompress::Sync);
        let used = (z.total_in() - before) as usize;
        input = &input[used..];
        match result {
            Ok(Status::StreamEnd) => break,
            Ok(_) if input.is_empty() && out.len() < out.capacity() => break,
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                z.set_dictionary(dictionary())
                    .map_err(|e| protocol(format!("header dictionary: {e}")))?;
            }
            Err(e) => return Err(protocol(format!("header block: {e}"))),
        }
    }
    Ok(out)
}

fn parse_block(raw: &[u8]) -> Result<Headers, Error> {
    fn take<'a>(raw: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], Error> {
        let s = raw.get(*at..*at + n).ok_or_else(|| protocol("a cut header block"))?;
        *at += n;
        Ok(s)
    }
    fn word(raw: &[u8], at: &mut usize) -> Result<usize, Error> {
        let b = take(raw, at, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn string(raw: &[u8], at: &mut usize) -> Result<String, Error> {
        let n = word(raw, at)?;
        let s = take(raw, at, n)?;
        String::from_utf8(s.to_vec()).map_err(|_| protocol("a header that is not UTF-8"))
    }
    let mut at = 0;
    let count = word(raw, &mut at)?;
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = string(raw, &mut at)?.to_ascii_lowercase();
        let value = string(raw, &mut at)?;
        headers.entry(name).or_default().extend(value.split('\0').map(str::to_owned));
    }
    Ok(headers)
}

/// A DATA frame's 8 bytes before its payload of `len` (at most MAX_FRAME) bytes.
pub fn data_head(stream_id: u32, fin: bool, len: usize) -> [u8; 8] {
    let id = (stream_id & 0x7fff_ffff).to_be_bytes();
    let len = (len as u32).to_be_bytes();
    [id[0], id[1], id[2], id[3], if fin { FLAG_FIN } else { 0 }, len[1], len[2], len[3]]
}

/// Encodes frames to the client, compressing header blocks in the connection's context.
pub struct Writer {
    deflate: Compress,
}

/// The header compressor's window: 512 bytes instead of zlib's 32 KiB. Header blocks are
/// small, a peer inflates with any window up to 32 KiB, and the context shrinks by about
/// 127 KiB per connection (only the dictionary's last 512 bytes are referenced).
const DEFLATE_WINDOW_BITS: u8 = 9;

impl Default for Writer {
    fn default() -> Self {
        let mut deflate =
            Compress::new_with_window_bits(Compression::default(), true, DEFLATE_WINDOW_BITS);
        deflate.set_dictionary(dictionary()).expect("a fresh deflate context takes a dictionary");
        Writer { deflate }
    }
}

impl Writer {
    /// Writes frames to `io` with as few system calls as it takes: every frame's bytes in
    /// vectored writes, a data frame's payload from where it is (never copied).
    pub async fn write_frames<W: AsyncWrite + Unpin>(
        &mut self,
        frames: &[Frame],
        io: &mut W,
    ) -> std::io::Result<()> {
        let heads: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| match f {
                Frame::Data { stream_id, fin, data } => {
                    data_head(*stream_id, *fin, data.len()).to_vec()
                }
                other => self.encode(other),
            })
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(frames.len() * 2);
        for (frame, head) in frames.iter().zip(&heads) {
            parts.push(head);
            if let Frame::Data { data, .. } = frame {
                parts.push(data);
            }
        }
        write_all_parts(io, &parts).await
    }

    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| {
            let mut out = Vec::with_capacity(8 + payload.len());
            out.extend_from_slice(&(0x8003u16).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&payload);
            out
        };
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        match frame {
            Frame::SynStream { stream_id, fin: f, headers } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                p.extend(self.block(headers));
                control(SYN_STREAM, fin(*f), p)
            }
            Frame::SynReply { stream_id, fin: f, headers } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.block(headers));
                control(SYN_REPLY, fin(*f), p)
            }
            Frame::Headers { stream_id, fin: f, headers } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.block(headers));
                control(HEADERS, fin(*f), p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, p)
            }
            Frame::Ping { id } => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => {
                let mut p = last_good.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, p)
            }
            Frame::Data { stream_id, fin: f, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(fin(*f));
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
            Frame::Ignored => Vec::new(),
        }
    }

    fn block(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, values) in headers {
            let value = values.join("\0");
            for s in [name.as_str(), value.as_str()] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            let _ = self.deflate.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all input is in and the flush did not fill the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib's Adler-32 of the SPDY/3 dictionary (what a peer's stream asks for).
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect()
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_context_per_direction() {
        let mut w = Writer::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                fin: false,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                fin: true,
                headers: headers(&[("streamtype", "stdout"), ("port", "80")]),
            },
            Frame::SynReply { stream_id: 3, fin: false, headers: Headers::new() },
            Frame::Data { stream_id: 3, fin: false, data: b"hello".to_vec() },
            Frame::Data { stream_id: 5, fin: true, data: Vec::new() },
            Frame::RstStream { stream_id: 7, status: RST_CANCEL },
            Frame::Ping { id: 2 },
            Frame::GoAway { last_good: 9, status: 0 },
            Frame::Headers { stream_id: 1, fin: true, headers: headers(&[("a", "b")]) },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(w.encode(f));
        }
        let mut r = Reader::new(&wire[..]);
        for f in &frames {
            assert_eq!(r.next().await.unwrap().as_ref(), Some(f));
        }
        assert!(r.next().await.unwrap().is_none());
    }

    /// A writer that takes at most 3 bytes per call, so vectored writes end mid-part.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn batched_frames_written_in_pieces_read_back_the_same() {
        let frames = vec![
            Frame::SynReply { stream_id: 1, fin: false, headers: headers(&[("x", "y")]) },
            Frame::Data { stream_id: 1, fin: false, data: (0..=255u8).collect() },
            Frame::Data { stream_id: 3, fin: true, data: Vec::new() },
            Frame::Ping { id: 4 },
            Frame::Data { stream_id: 1, fin: true, data: b"end".to_vec() },
        ];
        let mut out = Trickle(Vec::new());
        Writer::default().write_frames(&frames, &mut out).await.unwrap();
        let mut r = Reader::new(&out.0[..]);
        for f in &frames {
            assert_eq!(r.next().await.unwrap().as_ref(), Some(f));
        }
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_allocations() {
        // A data frame that claims 16 MiB.
        let wire = [0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        assert!(Reader::new(&wire[..]).next().await.is_err());
        // A SYN_STREAM whose header block is not zlib.
        let mut wire = vec![0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        wire.extend_from_slice(b"junk");
        assert!(Reader::new(&wire[..]).next().await.is_err());
        // A frame cut short.
        let wire = [0, 0, 0, 1, 0, 0, 0, 9, 1, 2];
        assert!(Reader::new(&wire[..]).next().await.is_err());
        // Another version.
        let wire = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(Reader::new(&wire[..]).next().await.is_err());
    }
}
