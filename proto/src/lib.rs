//! podbay's own protobuf API (`podbay.shim.v1`) and its framing.
//!
//! The CRI itself comes from the `k8s-cri` crate; this crate only carries the small
//! protocol between the daemon and each pod supervisor, see `proto/shim.proto`.

#![forbid(unsafe_code)]

pub mod shim {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/podbay.shim.v1.rs"));

        /// Version of the call set; grows when a call is added.
        pub const API_VERSION: u32 = 1;
    }
}

pub mod frame;
