//! A private containerd (Debian's) in a node of its own, for `scripts/bench --vs
//! containerd`. It has its own config, root, state and socket under the node's temp dir.
//! The CRI plugin uses the cgroupfs driver and overlayfs, and the CNI bridge plugin with
//! host-local IPAM and portmap. The pause and busybox images come from a Debian
//! docker-registry on the node's loopback, configured as a plain-HTTP mirror of
//! registry.k8s.io and docker.io.
//!
//! containerd and CNI keep a few things at fixed paths (`/run/containerd` for shim
//! sockets, `/run/netns`, `/var/lib/cni`): the node mounts tmpfs over `/run` and
//! `/var/lib/cni` in its own mount namespace, so nothing reaches the host's.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::images::{Entry, Image, Registry, busybox_tar, layer};
use crate::{BUSYBOX, Client, Node, connect, cri};

/// The pause image containerd's sandboxes run (busybox `sleep` as their PID 1).
pub const PAUSE: &str = "registry.k8s.io/pause:3.9";
/// Where containerd's pods put their cgroups (its pods' `cgroup_parent`).
pub const CGROUP_PARENT: &str = "/podbay-bench-containerd";
const REGISTRY_PORT: u16 = 5000;

pub struct Containerd {
    pub node: Node,
    _registry: Registry,
    daemon: Child,
    /// Host directories created as mount points, removed again when empty.
    made: Vec<PathBuf>,
}

impl Containerd {
    /// Starts the registry, fills it, starts containerd and pulls both images over CRI.
    pub async fn start() -> anyhow::Result<Containerd> {
        let node = Node::empty()?;
        let mut made = Vec::new();
        // The mount point, made on the host if missing and removed again.
        let cni = Path::new("/var/lib/cni");
        if !cni.exists() {
            std::fs::create_dir_all(cni)?;
            made.push(cni.to_path_buf());
        }
        node.sh("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib/cni")?;
        let registry = Registry::start(&node, REGISTRY_PORT, None)?;
        let busybox = layer(busybox_tar().bytes(), crate::images::Compression::Gzip);
        let pause = Image::new(
            vec![busybox.clone()],
            "amd64",
            serde_json::json!({"Entrypoint": ["/bin/sleep"], "Cmd": ["2147483647"]}),
        );
        registry.push(&node, &Entry::Image(pause), "pause:3.9")?;
        let bb = Image::new(vec![busybox], "amd64", serde_json::json!({}));
        registry.push(&node, &Entry::Image(bb), "library/busybox:1.36")?;

        let dir = node.dir().to_path_buf();
        write_configs(&dir)?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let mut daemon = node
            .command("containerd")
            .arg("--config")
            .arg(dir.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start containerd (Debian's containerd package)")?;
        let socket = dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if daemon.try_wait()?.is_some() || Instant::now() > deadline {
                let _ = daemon.kill();
                let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
                bail!("containerd did not come up: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let me = Containerd { node, _registry: registry, daemon, made };
        let mut images = k8s_cri::v1::image_service_client::ImageServiceClient::new(
            crate::channel(&me.socket()).await?,
        );
        for image in [PAUSE, BUSYBOX] {
            let req = cri::PullImageRequest {
                image: Some(cri::ImageSpec { image: image.into(), ..Default::default() }),
                ..Default::default()
            };
            images.pull_image(req).await.with_context(|| format!("containerd pull {image}"))?;
        }
        Ok(me)
    }

    pub fn socket(&self) -> PathBuf {
        self.node.dir().join("containerd.sock")
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        connect(&self.socket()).await
    }

    /// containerd's version, as `containerd --version` prints it.
    pub fn version() -> String {
        let out = std::process::Command::new("containerd").arg("--version").output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // The node's end kills the shims and pause processes; their cgroups stay.
        self.node.kill_all();
        crate::remove_cgroup_tree(CGROUP_PARENT);
        for dir in &self.made {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn write_configs(dir: &Path) -> anyhow::Result<()> {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("cni"))?;
    std::fs::write(
        dir.join("cni/10-bench.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "bench", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": {{"type": "host-local", "dataDir": "{d}/cni-ipam",
             "ranges": [[{{"subnet": "10.88.0.0/16"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
]}}"#
        ),
    )?;
    let mirror = format!("http://127.0.0.1:{REGISTRY_PORT}");
    std::fs::write(
        dir.join("containerd.toml"),
        format!(
            r#"version = 2
root = "{d}/containerd-root"
state = "{d}/containerd-state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

# The opt plugin would otherwise make /opt/containerd on the host.
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  # Root here lacks CAP_SYS_RESOURCE: the pause container's -998 would fail in runc.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["{mirror}"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
    endpoint = ["{mirror}"]
"#
        ),
    )?;
    Ok(())
}
