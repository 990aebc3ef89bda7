//! The supervisor protocol's framing: what a supervisor reads from its socket (Requests),
//! what the daemon reads back (Responses) and what the spawner's fork pipe carries
//! (HelperReply, Started). The first byte picks the message type; the rest is the stream.

use std::io::Cursor;
use std::path::Path;

use podbay_proto::frame;
use podbay_proto::supervisor::v1::{HelperReply, Request, Response, Started};
use prost::Message;

pub fn stream(_scratch: &Path, data: &[u8]) {
    let Some((which, bytes)) = data.split_first() else { return };
    match which % 4 {
        0 => read_all::<Request>(bytes),
        1 => read_all::<Response>(bytes),
        2 => read_all::<HelperReply>(bytes),
        _ => read_all::<Started>(bytes),
    }
}

/// Reads frames until the stream ends or one is refused; each frame read is written back
/// and must read back the same.
fn read_all<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let mut input = Cursor::new(bytes);
    // At most one frame per 4 bytes: the loop ends.
    for _ in 0..=bytes.len() / 4 {
        match frame::read::<M, _>(&mut input) {
            Ok(Some(msg)) => {
                let mut out = Vec::new();
                frame::write(&mut out, &msg).expect("a decoded frame encodes");
                let again = frame::read::<M, _>(&mut Cursor::new(&out))
                    .expect("an encoded frame decodes")
                    .expect("an encoded frame is not empty");
                assert_eq!(again, msg, "frame changed through encode and decode");
                let _ = format!("{msg:?}");
            }
            Ok(None) | Err(_) => return,
        }
    }
}
