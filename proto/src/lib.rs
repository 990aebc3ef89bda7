//! podbay's own protobuf APIs (`podbay.shim.v1`, `podbay.admin.v1`) and the shim's framing.
//!
//! The CRI itself comes from the `k8s-cri` crate; this crate only carries the small
//! protocol between the daemon and each pod supervisor, see `proto/shim.proto`.

#![forbid(unsafe_code)]

pub mod shim {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/podbay.shim.v1.rs"));

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
