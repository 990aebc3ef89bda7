//! Length-prefixed protobuf frames: a 4-byte little-endian length, then the message.

use std::io::{self, Read, Write};

use prost::Message;

/// Frames larger than this are refused, so a confused peer cannot make us allocate much.
pub const MAX_FRAME: usize = 48 << 20;

fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
    )
}

fn encode<M: Message>(msg: &M) -> io::Result<Vec<u8>> {
    let len = msg.encoded_len();
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    msg.encode(&mut buf).map_err(io::Error::other)?;
    Ok(buf)
}

fn decode<M: Message + Default>(body: &[u8]) -> io::Result<M> {
    M::decode(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame to a blocking stream.
pub fn write<M: Message, W: Write>(w: &mut W, msg: &M) -> io::Result<()> {
    w.write_all(&encode(msg)?)
}

/// Reads one frame from a blocking stream. `Ok(None)` on a clean end of stream.
pub fn read<M: Message + Default, R: Read>(r: &mut R) -> io::Result<Option<M>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    // Grown as bytes arrive, so a length alone cannot make us allocate.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "frame cut short"));
    }
    decode(&body).map(Some)
}

/// Async counterparts for the daemon.
#[cfg(feature = "tokio")]
pub mod tokio_io {
    use std::io;

    use prost::Message;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::{MAX_FRAME, decode, encode, too_large};

    pub async fn write<M: Message, W: AsyncWrite + Unpin>(w: &mut W, msg: &M) -> io::Result<()> {
        w.write_all(&encode(msg)?).await
    }

    pub async fn read<M: Message + Default, R: AsyncRead + Unpin>(
        r: &mut R,
    ) -> io::Result<Option<M>> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(too_large(len));
        }
        let mut body = Vec::with_capacity(len.min(64 << 10));
        r.take(len as u64).read_to_end(&mut body).await?;
        if body.len() < len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "frame cut short"));
        }
        decode(&body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::v1::{Failure, Request, request};

    #[test]
    fn round_trip() {
        let req = Request { kind: Some(request::Kind::Ping(Default::default())) };
        let mut buf = Vec::new();
        write(&mut buf, &req).unwrap();
        write(&mut buf, &Failure { message: "x".into(), ..Default::default() }).unwrap();
        let mut r = &buf[..];
        assert_eq!(read::<Request, _>(&mut r).unwrap(), Some(req));
        assert_eq!(read::<Failure, _>(&mut r).unwrap().unwrap().message, "x");
        assert_eq!(read::<Failure, _>(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused() {
        let buf = ((MAX_FRAME + 1) as u32).to_le_bytes();
        let err = read::<Failure, _>(&mut &buf[..]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
