//! The one place where runtime errors become gRPC statuses.

use podbay_runtime::ErrorKind;
use tonic::{Code, Status};

/// Errors that can say what kind of failure they are.
pub trait Kinded: std::fmt::Display {
    fn kind(&self) -> ErrorKind;
}

macro_rules! kinded {
    ($($t:ty),*) => {$(
        impl Kinded for $t {
            fn kind(&self) -> ErrorKind {
                <$t>::kind(self)
            }
        }
    )*};
}
kinded!(
    podbay_runtime::sandbox::Error,
    podbay_runtime::image::Error,
    podbay_runtime::container::Error,
    podbay_runtime::network::Error,
    podbay_runtime::PodError
);

pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    }
}

/// Converts an error into a status, logging it once here, where it is handled: a failure
/// that is not the caller's (the node's: Internal, Unavailable, ResourceExhausted,
/// DeadlineExceeded) at ERROR or WARN, a refusal of the caller's request at DEBUG.
pub fn to_status<E: Kinded>(rpc: &'static str, e: E) -> Status {
    let code = code(e.kind());
    match code {
        Code::Internal | Code::Unavailable => tracing::error!(rpc, error = %e, "request failed"),
        Code::ResourceExhausted | Code::DeadlineExceeded => {
            tracing::warn!(rpc, error = %e, "request failed")
        }
        _ => tracing::debug!(rpc, error = %e, "request refused"),
    }
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_codes() {
        assert_eq!(code(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code(ErrorKind::AlreadyExists), Code::AlreadyExists);
        assert_eq!(code(ErrorKind::ResourceExhausted), Code::ResourceExhausted);
        let e = podbay_runtime::sandbox::Error::NotFound { id: "abc".into() };
        let s = to_status("PodSandboxStatus", e);
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("abc"));
    }
}
