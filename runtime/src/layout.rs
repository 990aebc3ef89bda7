//! Every on-disk path podbay uses, built in one place.
//!
//! ```text
//! <root>/                      persistent (default /var/lib/podbay)
//!   podbay.lock                held (flock) by the one daemon that owns this root
//!   state.redb                 the state database
//!   images/
//!     blobs/sha256/<hex>       content by digest: manifests, configs, compressed layers
//!     layers/<chain id hex>/   one unpacked layer (an overlayfs lowerdir)
//!     tmp/                     downloads and unpacks in progress; emptied at start
//!     mountpoints/             every rootfs's lowest layer: proc/ dev/ sys/ and
//!                              etc/{hostname,hosts,resolv.conf}, empty (mount points)
//!   containers/<id>/           a container's writable layer (upper/, work/, rootfs/) and
//!                              its OCI bundle (config.json)
//! <run>/                       volatile (default /run/podbay), empty after a reboot
//!   pods/<sandbox id>/
//!     supervisor.sock          the supervisor's podbay.supervisor.v1 socket
//!     supervisor.log           the supervisor's stderr
//!     hostname hosts resolv.conf
//!     shm/                     the pod's /dev/shm (tmpfs), unless IPC is the node's
//!     ns/{net,ipc,uts,pid}     namespaces pinned by bind mounts
//!     c/<container id>/        libcontainer's state of each container
//!   empty/                     an empty directory (0555), bound read-only over the
//!                              masked directories of containers without CAP_SYS_ADMIN
//!   cgroup-v1/<hierarchy>/     empty directories (0755), bound read-only at such a
//!                              container's /sys/fs/cgroup on a cgroup v1 node
//! ```

use std::path::{Path, PathBuf};

use crate::ids::SandboxId;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    run: PathBuf,
}

/// A namespace kind that a pod can own and podbay pins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
    Pid,
    User,
}

impl NsKind {
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Pid => "pid",
            NsKind::User => "user",
        }
    }
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), run: run.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run(&self) -> &Path {
        &self.run
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("podbay.lock")
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("state.redb")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.images_dir().join("blobs").join("sha256")
    }

    /// A blob by the hex part of its sha256 digest.
    pub fn blob(&self, hex: &str) -> PathBuf {
        self.blobs_dir().join(hex)
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.images_dir().join("layers")
    }

    /// The lowest layer of every rootfs: the spec's mount points an image may lack.
    pub fn mountpoints_dir(&self) -> PathBuf {
        self.images_dir().join("mountpoints")
    }

    /// An unpacked layer by the hex part of its chain id.
    pub fn layer(&self, chain_hex: &str) -> PathBuf {
        self.layers_dir().join(chain_hex)
    }

    pub fn image_tmp_dir(&self) -> PathBuf {
        self.images_dir().join("tmp")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn container(&self, id: &str) -> ContainerLayout {
        ContainerLayout { dir: self.containers_dir().join(id) }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.run.join("pods")
    }

    pub fn pod(&self, id: &SandboxId) -> PodLayout {
        PodLayout { dir: self.pods_dir().join(id.as_str()) }
    }

    /// What masked directories show (`container/node.rs`, `shared_dirs`).
    pub fn empty_dir(&self) -> PathBuf {
        self.run.join("empty")
    }

    /// What a container's /sys/fs/cgroup is on a cgroup v1 node, below the hierarchies'
    /// binds (`container/node.rs`, `shared_dirs`).
    pub fn cgroup_v1_dir(&self) -> PathBuf {
        self.run.join("cgroup-v1")
    }
}

/// Paths of one container's writable layer.
#[derive(Debug, Clone)]
pub struct ContainerLayout {
    dir: PathBuf,
}

impl ContainerLayout {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the overlayfs of image layers + upper is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Idmapped clones (pods with their own user namespace): `layer-<n>` of the image's
    /// layers while the overlay is mounted, `mount-<n>` of bind mounts while the container
    /// is created. None outlives the step that made it.
    pub fn idmapped(&self) -> PathBuf {
        self.dir.join("idmapped")
    }

    /// The OCI bundle: `config.json` lives in the container dir.
    pub fn bundle(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
}

/// In a container's bundle: its seccomp filter compiled by the daemon, which the init
/// installs itself, and the profile it was compiled from (for the status, and for the
/// execs of a container made before `SECCOMP_EXEC_BPF`), when `config.json` has none.
pub const SECCOMP_BPF: &str = "seccomp.bpf";
pub const SECCOMP_PROFILE: &str = "seccomp.json";
/// The same filter with `setns` allowed, which the helper installs in itself before it
/// joins the container for an exec (`children.rs`).
pub const SECCOMP_EXEC_BPF: &str = "seccomp-exec.bpf";

/// Paths inside one pod's run directory.
#[derive(Debug, Clone)]
pub struct PodLayout {
    dir: PathBuf,
}

impl PodLayout {
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File name of the supervisor socket inside the pod dir (kept short: sun_path is 108 bytes).
    pub const SOCKET_NAME: &'static str = "supervisor.sock";

    pub fn socket(&self) -> PathBuf {
        self.dir.join(Self::SOCKET_NAME)
    }

    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }

    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    pub fn shm(&self) -> PathBuf {
        self.dir.join("shm")
    }

    pub fn ns_dir(&self) -> PathBuf {
        self.dir.join("ns")
    }

    /// libcontainer's state of the pod's containers (`<id>/state.json`, `notify.sock`).
    pub fn containers(&self) -> PathBuf {
        self.dir.join("c")
    }

    pub fn ns(&self, kind: NsKind) -> PathBuf {
        self.ns_dir().join(kind.name())
    }
}
