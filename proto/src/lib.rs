//! podbay's own protobuf APIs (`podbay.supervisor.v1`, `podbay.admin.v1`) and their framing.
//!
//! The CRI itself comes from the `k8s-cri` crate; this crate only carries the small
//! protocol between the daemon and each pod supervisor (`proto/supervisor.proto`) and the
//! CLI's extra calls (`proto/admin.proto`).

#![forbid(unsafe_code)]

pub mod supervisor {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/podbay.supervisor.v1.rs"));

        /// Version of the call set; grows when a call is added.
        pub const API_VERSION: u32 = 2;
    }
}

/// The CLI's calls beyond the CRI (image import, pull with progress).
#[cfg(feature = "admin")]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("podbay.admin.v1");
    }
}

pub mod frame;
