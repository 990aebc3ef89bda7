//! nf_tables over netlink: the few messages podbay's firewall needs, sent as one atomic
//! batch per change on a NETLINK_NETFILTER socket.
//!
//! Why not a library: the maintained pure-Rust nftables crate is GPL-3.0 (podbay is
//! Apache-2.0), Mullvad's `nftnl` binds the C libnftnl and has no maps or concatenations,
//! and the JSON crates drive the `nft` binary. The attribute layout below is the kernel's
//! (include/uapi/linux/netfilter/nf_tables.h), encoded with netlink-packet-core's NLA types.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use rtnetlink::packet_core::{
    Emitable, ErrorBuffer, NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
    NLMSG_ERROR, NetlinkBuffer, Nla,
};

/// nfnetlink subsystem of nf_tables, and the batch delimiters.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

pub(crate) const NFPROTO_IPV4: u8 = 2;

/// nf_tables message types (enum nf_tables_msg_types).
#[derive(Debug, Clone, Copy)]
#[repr(u16)]
pub(crate) enum Msg {
    NewTable = 0,
    DelTable = 2,
    NewChain = 3,
    NewRule = 6,
    NewSet = 9,
    NewSetElem = 12,
    DelSetElem = 14,
}

// Attribute numbers, by object.
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
pub(crate) const NFTA_SET_DATA_LEN: u16 = 7;
pub(crate) const NFTA_SET_ID: u16 = 10;
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

pub(crate) const NFT_SET_MAP: u32 = 0x8;

/// 4-byte registers (NFT_REG32_00 onwards); the verdict register is 0.
pub(crate) const REG_VERDICT: u32 = 0;
pub(crate) const REG32_00: u32 = 8;

/// Verdicts.
pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NFT_RETURN: i32 = -5;

/// A netlink attribute: bytes, or attributes nested in it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attr {
    Bytes(u16, Vec<u8>),
    Nest(u16, Vec<Attr>),
}

impl Attr {
    pub(crate) fn str(kind: u16, s: &str) -> Attr {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        Attr::Bytes(kind, v)
    }

    /// A 32-bit number in network byte order, as nf_tables wants every number attribute.
    pub(crate) fn u32(kind: u16, v: u32) -> Attr {
        Attr::Bytes(kind, v.to_be_bytes().to_vec())
    }

    /// Data compared with or stored in registers (NFTA_DATA_VALUE inside `kind`).
    pub(crate) fn data(kind: u16, bytes: Vec<u8>) -> Attr {
        Attr::Nest(kind, vec![Attr::Bytes(NFTA_DATA_VALUE, bytes)])
    }

    /// A verdict (accept, return, …) inside `kind`.
    pub(crate) fn verdict(kind: u16, code: i32) -> Attr {
        Attr::Nest(
            kind,
            vec![Attr::Nest(NFTA_DATA_VERDICT, vec![Attr::u32(NFTA_VERDICT_CODE, code as u32)])],
        )
    }

    /// One expression of a rule: its name and its attributes.
    pub(crate) fn expr(name: &str, attrs: Vec<Attr>) -> Attr {
        Attr::Nest(
            NFTA_LIST_ELEM,
            vec![Attr::str(NFTA_EXPR_NAME, name), Attr::Nest(NFTA_EXPR_DATA, attrs)],
        )
    }

    /// A list element (of expressions or set elements).
    pub(crate) fn elem(attrs: Vec<Attr>) -> Attr {
        Attr::Nest(NFTA_LIST_ELEM, attrs)
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Bytes(_, v) => v.len(),
            Attr::Nest(_, attrs) => attrs.iter().map(Emitable::buffer_len).sum(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Bytes(k, _) => *k,
            Attr::Nest(k, _) => *k | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Bytes(_, v) => buffer.copy_from_slice(v),
            Attr::Nest(_, attrs) => attrs.as_slice().emit(buffer),
        }
    }
}

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// Messages that the kernel applies all together or not at all.
pub(crate) struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// (sequence number, what) of every message that expects an ack.
    pending: Vec<(u32, String)>,
}

impl Batch {
    pub(crate) fn new() -> Self {
        let mut b = Self { buf: Vec::with_capacity(4096), seq: 0, pending: Vec::new() };
        b.push_raw(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        b
    }

    /// Adds one nf_tables message; `what` names it in an error.
    pub(crate) fn add(&mut self, msg: Msg, flags: u16, attrs: &[Attr], what: String) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg as u16;
        let flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let seq = self.push_raw(kind, flags, NFPROTO_IPV4, 0, attrs);
        self.pending.push((seq, what));
    }

    /// NEW* with create semantics (no error when it exists, for tables and chains).
    pub(crate) fn create(&mut self, msg: Msg, attrs: &[Attr], what: String) {
        let append = if matches!(msg, Msg::NewRule) { NLM_F_APPEND } else { 0 };
        self.add(msg, NLM_F_CREATE | append, attrs, what);
    }

    fn push_raw(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[Attr]) -> u32 {
        self.seq += 1;
        let body: usize = attrs.iter().map(Emitable::buffer_len).sum();
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + body;
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        let msg = &mut self.buf[start..];
        let mut hdr = NetlinkBuffer::new(&mut msg[..]);
        hdr.set_length(len as u32);
        hdr.set_message_type(kind);
        hdr.set_flags(flags);
        hdr.set_sequence_number(self.seq);
        hdr.set_port_number(0);
        // struct nfgenmsg: family, version (NFNETLINK_V0), resource id (big endian).
        msg[NLMSG_HDRLEN] = family;
        msg[NLMSG_HDRLEN + 1] = 0;
        msg[NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4].copy_from_slice(&res_id.to_be_bytes());
        attrs.emit(&mut msg[NLMSG_HDRLEN + NFGENMSG_LEN..len]);
        self.seq
    }

    /// Sends the batch and waits for every ack. On failure, the kernel applied nothing;
    /// the error names the first message it refused.
    pub(crate) fn send(mut self) -> Result<(), BatchError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.push_raw(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        let io = |source| BatchError { what: "nftables batch".into(), source };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        set_recv_timeout(&socket, Duration::from_secs(5)).map_err(io)?;
        socket.send(&self.buf, 0).map_err(io)?;
        let mut failure: Option<BatchError> = None;
        let mut acked = 0;
        let mut buf = Vec::with_capacity(16384);
        'acks: while acked < self.pending.len() {
            buf.clear();
            socket.recv(&mut buf, 0).map_err(io)?;
            let mut offset = 0;
            while offset + NLMSG_HDRLEN <= buf.len() {
                let msg = NetlinkBuffer::new_checked(&buf[offset..])
                    .map_err(|e| io(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
                offset += (msg.length() as usize).max(NLMSG_HDRLEN).next_multiple_of(4);
                if msg.message_type() != NLMSG_ERROR {
                    continue;
                }
                let code = ErrorBuffer::new_checked(msg.payload())
                    .ok()
                    .and_then(|e| e.code())
                    .map(|c| io::Error::from_raw_os_error(-c.get()));
                let seq = msg.sequence_number();
                match (self.pending.iter().find(|(s, _)| *s == seq), code) {
                    (Some(_), None) => acked += 1,
                    (Some((_, what)), Some(source)) => {
                        acked += 1;
                        failure.get_or_insert(BatchError { what: what.clone(), source });
                    }
                    // The batch as a whole was refused: no per-message answers follow.
                    (None, Some(source)) => {
                        failure.get_or_insert(BatchError { what: "nftables batch".into(), source });
                        break 'acks;
                    }
                    (None, None) => {}
                }
            }
        }
        self.pending.clear();
        failure.map_or(Ok(()), Err)
    }
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let fd = std::os::fd::AsFd::as_fd(socket);
    nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(timeout.as_secs() as i64, 0),
    )
    .map_err(io::Error::from)
}

/// A batch the kernel refused (nothing of it applied).
#[derive(Debug, thiserror::Error)]
#[error("nftables: {what}: {source}")]
pub struct BatchError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl BatchError {
    pub fn is_not_found(&self) -> bool {
        self.source.raw_os_error() == Some(libc_enoent())
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_aligned_and_flagged() {
        let a = Attr::Nest(4, vec![Attr::str(1, "nat"), Attr::u32(2, 7)]);
        // "nat\0" = 4 bytes + 4 header; u32 = 4 + 4 header; nest header 4.
        assert_eq!(a.buffer_len(), 4 + 8 + 8);
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf);
        assert_eq!(u16::from_ne_bytes([buf[2], buf[3]]), 4 | NLA_F_NESTED);
        assert_eq!(&buf[16..20], &7u32.to_be_bytes());
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let mut b = Batch::new();
        b.create(Msg::NewTable, &[Attr::str(NFTA_TABLE_NAME, "podbay")], "add table".into());
        let first = NetlinkBuffer::new_checked(&b.buf[..]).unwrap();
        assert_eq!(first.message_type(), NFNL_MSG_BATCH_BEGIN);
        let second = NetlinkBuffer::new_checked(&b.buf[first.length() as usize..]).unwrap();
        assert_eq!(second.message_type(), NFNL_SUBSYS_NFTABLES << 8);
        assert_eq!(second.flags() & NLM_F_ACK, NLM_F_ACK);
        assert_eq!(b.pending.len(), 1);
    }
}
