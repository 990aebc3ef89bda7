//! What every part's error can say about itself, and text helpers for error messages.

/// What kind of failure an error is; the CRI edge maps this to a gRPC code in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

impl From<podbay_netplug::ErrorKind> for ErrorKind {
    fn from(k: podbay_netplug::ErrorKind) -> Self {
        match k {
            podbay_netplug::ErrorKind::NotFound => ErrorKind::NotFound,
            podbay_netplug::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            podbay_netplug::ErrorKind::ResourceExhausted => ErrorKind::ResourceExhausted,
            podbay_netplug::ErrorKind::Unavailable => ErrorKind::Unavailable,
            podbay_netplug::ErrorKind::Internal => ErrorKind::Internal,
        }
    }
}

/// An error and its sources on one line, without repeating a source the message already
/// holds (libraries often print their source in their own message).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `a; b; c` of a list of errors.
pub fn join<E: std::fmt::Display>(errors: &[E]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// ENOSPC or EDQUOT: the file system (or the quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The kind of a failed file system call on the node's side: a full disk is
/// ResourceExhausted, anything else Internal.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    if is_no_space(e) { ErrorKind::ResourceExhausted } else { ErrorKind::Internal }
}
