//! The node harness for podbay's privileged tests.
//!
//! A [`Node`] is a throwaway Kubernetes node on this machine: a fresh network, mount and
//! PID namespace (held by a small PID 1), with temp root/run dirs, in which a podbay daemon
//! serves its own socket. Dropping the node kills its PID 1, which makes the kernel kill
//! every process of the node (daemon, supervisors, pod processes); the node's mount
//! namespace and every namespace pinned in it go with them, and the temp dir is removed.
//! That holds when a test panics too. Nothing touches the host's own namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
pub use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

pub mod attack;
pub mod bench;
pub mod chaos;
pub mod containerd;
pub mod ctr;
pub mod images;
pub mod kubelet;
pub mod lab;
pub mod streaming;

pub type Client = RuntimeServiceClient<Channel>;

/// The name [`Node::with_busybox`] imports the busybox test image under.
pub const BUSYBOX: &str = "docker.io/library/busybox:1.36";
pub type ImageClient = k8s_cri::v1::image_service_client::ImageServiceClient<Channel>;

/// Directory with the `podbay` and `podbay-supervisor` binaries: `$PODBAY_BIN_DIR`, or the
/// cargo target dir this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PODBAY_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

pub fn podbay_bin() -> PathBuf {
    bin_dir().join("podbay")
}

/// True when running as root; privileged tests print why they skip otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: needs root (namespaces, mounts)");
            return;
        }
    };
}

pub struct Node {
    /// Persistent side (root dir with the state database, logs): on disk, as on a node.
    dir: tempfile::TempDir,
    /// Volatile side (run dir): on a tmpfs, as `/run` is on a node.
    run: tempfile::TempDir,
    /// `unshare`, our child; its child is the node's PID 1.
    holder: Child,
    init_pid: u32,
    daemon: Option<Child>,
    env: Vec<(String, String)>,
    config: Option<String>,
    /// Where this node's `podbay` comes from when not the shared [`bin_dir`].
    binaries: Option<PathBuf>,
}

impl Node {
    /// A new node with a running daemon.
    pub fn start() -> anyhow::Result<Node> {
        Self::start_with_env(&[])
    }

    /// A new node whose daemon gets extra environment variables (e.g. failpoints).
    pub fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Node> {
        let mut node = Self::empty()?;
        node.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        node.start_daemon()?;
        Ok(node)
    }

    /// A config.toml for the next daemon start (default: the embedded defaults).
    pub fn set_config(&mut self, text: &str) {
        self.config = Some(text.to_owned());
    }

    /// Environment for the next daemon start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Gives the node copies of `podbay` and `podbay-supervisor` of its own (in its dir),
    /// used from the next daemon start: for a test about the binary files themselves,
    /// which the other tests' daemons running the shared ones must not disturb.
    pub fn use_private_binaries(&mut self) -> anyhow::Result<PathBuf> {
        let dir = self.dir().join("bin");
        std::fs::create_dir_all(&dir)?;
        for name in ["podbay", "podbay-supervisor"] {
            std::fs::copy(bin_dir().join(name), dir.join(name))?;
        }
        self.binaries = Some(dir.clone());
        Ok(dir)
    }

    /// A new node with a running daemon and the busybox test image ([`BUSYBOX`]) imported.
    pub fn with_busybox() -> anyhow::Result<Node> {
        let node = Self::start()?;
        node.import_busybox()?;
        Ok(node)
    }

    /// Imports the busybox test image ([`BUSYBOX`]) into the running daemon.
    pub fn import_busybox(&self) -> anyhow::Result<()> {
        let layout = self.dir().join("busybox-layout");
        let image = images::Entry::Image(images::fixtures().busybox);
        images::write_layout(&layout, &[(BUSYBOX, &image)])?;
        let out = self.cli(&["image", "import", &layout.to_string_lossy()])?;
        if !out.status.success() {
            bail!("import busybox: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// A new node without a daemon.
    pub fn empty() -> anyhow::Result<Node> {
        // PODBAY_NODE_TMP moves the persistent side (e.g. to /dev/shm for a bench that
        // leaves the disk out).
        let parent = std::env::var("PODBAY_NODE_TMP").unwrap_or_else(|_| "/tmp".into());
        let dir = tempfile::Builder::new().prefix("pbt").tempdir_in(parent)?;
        let run = tempfile::Builder::new().prefix("pbt").tempdir_in("/dev/shm")?;
        let (holder, init_pid) = spawn_holder()?;
        let node = Node {
            dir,
            run,
            holder,
            init_pid,
            daemon: None,
            env: Vec::new(),
            config: None,
            binaries: None,
        };
        std::fs::create_dir_all(node.root())?;
        Ok(node)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run.path().to_path_buf()
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("podbay.sock")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.run_dir().join("pods")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.dir().join("daemon.log")
    }

    /// The node's PID 1, as the host sees it.
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// A command that runs inside the node's namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.init_pid.to_string()).args(["-n", "-m", "-p", "--"]).arg(program);
        cmd
    }

    /// Runs a shell command inside the node and returns its stdout; fails on non-zero exit.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self.sh_output(script)?;
        if !out.status.success() {
            bail!(
                "`{script}` in node failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sh_output(&self, script: &str) -> anyhow::Result<Output> {
        Ok(self.command("sh").arg("-c").arg(script).stdin(Stdio::null()).output()?)
    }

    /// Starts `podbay serve` in the node and waits until it answers.
    pub fn start_daemon(&mut self) -> anyhow::Result<()> {
        self.start_daemon_with(&[])
    }

    /// Starts `podbay serve` with extra arguments (e.g. `--reset-state`).
    pub fn start_daemon_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let mut child = self.daemon_command().args(args).spawn().context("spawn podbay serve")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("daemon exited ({status}): {}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("daemon did not come up: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.daemon = Some(child);
        Ok(())
    }

    /// The `podbay serve` command for this node (not started).
    pub fn daemon_command(&self) -> Command {
        let config = match &self.config {
            Some(text) => {
                let path = self.dir().join("config.toml");
                std::fs::write(&path, text).expect("write config");
                path
            }
            None => PathBuf::from("/dev/null"),
        };
        let bin = self.binaries.as_ref().map_or_else(podbay_bin, |d| d.join("podbay"));
        let mut cmd = self.command(bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(self.root())
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--socket")
            .arg(self.socket())
            .arg("--log-level")
            .arg("debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log())
            .expect("daemon log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon_log()).unwrap_or_default()
    }

    /// The daemon's pid as the host sees it.
    pub fn daemon_pid(&self) -> Option<u32> {
        let nsenter = self.daemon.as_ref()?.id();
        children(nsenter).into_iter().next()
    }

    /// kill -9 the daemon (its pods keep running), and wait until it is gone: its files
    /// (the root lock among them) are closed.
    pub fn kill_daemon(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.daemon.take() else {
            return Ok(());
        };
        let daemons = children(child.id());
        for &pid in &daemons {
            kill9(pid);
        }
        let _ = child.kill();
        let _ = child.wait();
        // A killed daemon's threads may still be exiting after its main thread is a
        // zombie: the root lock is free only once the last one closed its files.
        let lock = self.root().join("podbay.lock");
        wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(self.socket()).is_err()
                && daemons.iter().all(|pid| gone(*pid))
                && std::fs::File::open(&lock).map_or(true, |f| f.try_lock().is_ok())
        })
    }

    /// Stops the daemon with SIGTERM (graceful).
    pub fn stop_daemon(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.daemon.take() else {
            return Ok(());
        };
        for pid in children(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        child.wait()?;
        Ok(())
    }

    /// Simulates a reboot: every process of the node dies, the run dir is emptied (it is a
    /// tmpfs on a real node), and a fresh node with the same root dir comes up, daemon
    /// not started.
    pub fn reboot(&mut self) -> anyhow::Result<()> {
        self.daemon = None;
        self.kill_all();
        let (holder, init_pid) = spawn_holder()?;
        self.holder = holder;
        self.init_pid = init_pid;
        std::fs::remove_dir_all(self.run_dir()).or_else(ignore_not_found)?;
        std::fs::create_dir(self.run_dir())?;
        Ok(())
    }

    fn kill_all(&mut self) {
        kill9(self.init_pid);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        self.remove_pod_cgroups();
    }

    /// Gives back the cgroups of pods a failed test left behind (podbay's default parent
    /// `/podbay/<sandbox id>/<container id>`), once their processes are dead.
    fn remove_pod_cgroups(&self) {
        for pod in self.pod_dirs() {
            remove_cgroup_tree(&format!("podbay/{pod}"));
        }
        for dir in cgroup_dirs("podbay") {
            let _ = std::fs::remove_dir(dir);
        }
    }

    pub async fn image_client(&self) -> anyhow::Result<ImageClient> {
        Ok(ImageClient::new(channel(&self.socket()).await?))
    }

    /// Runs the `podbay` CLI against this node's daemon.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(podbay_bin()).arg("--endpoint").arg(self.socket()).args(args).output()?)
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        connect(&self.socket()).await
    }

    /// Pids (node numbering) of every process in the node except its PID 1.
    pub fn processes(&self) -> anyhow::Result<Vec<(u32, String)>> {
        let out =
            self.sh("for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm 2>/dev/null); done")?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (pid, comm) = l.split_once(' ')?;
                Some((pid.parse().ok()?, comm.to_owned()))
            })
            .filter(|(pid, comm)| {
                *pid != 1 && !matches!(comm.as_str(), "sh" | "nsenter" | "cat" | "sleep")
            })
            .collect())
    }

    /// Mount points inside the node that live under its temp dirs.
    pub fn mounts(&self) -> anyhow::Result<Vec<String>> {
        let out = self.sh("cat /proc/self/mounts")?;
        let dirs = [self.dir().to_path_buf(), self.run_dir()];
        // The daemon's own two, which stay while it runs: its pods and containers dirs,
        // each bound onto itself (see runtime/src/view.rs).
        let views = [self.pods_dir(), self.root().join("containers")];
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| dirs.iter().any(|d| Path::new(m).starts_with(d)))
            .filter(|m| !views.iter().any(|v| Path::new(m) == v))
            .map(String::from)
            .collect())
    }

    /// Pod dirs left in the run dir.
    pub fn pod_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.pods_dir())
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// veth links in the node's network namespace (the outside host's uplink excepted).
    pub fn veths(&self) -> anyhow::Result<Vec<String>> {
        let out = self.sh("ip -o link show type veth")?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n != OUTSIDE_UPLINK)
            .collect())
    }

    /// The elements in podbay's hostPort maps (as nft's JSON), one per mapping.
    pub fn nft_elements(&self) -> anyhow::Result<Vec<String>> {
        let out = self.sh("nft -j list table ip podbay 2>/dev/null || echo '{}'")?;
        let doc: serde_json::Value = serde_json::from_str(&out)?;
        Ok(doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["map"]["elem"].as_array())
            .flatten()
            .map(|e| e.to_string())
            .collect())
    }

    /// Runs a shell script inside a pod's network namespace (as the node's root).
    pub fn in_pod(&self, id: &str, script: &str) -> anyhow::Result<Output> {
        let net = self.run_dir().join("pods").join(id).join("ns/net");
        Ok(self
            .command("nsenter")
            .arg(format!("--net={}", net.display()))
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()?)
    }

    /// Connects the node to an "outside host": a network namespace of its own behind a
    /// veth, `198.51.100.2/24` there and `198.51.100.1/24` on the node, which routes its
    /// default route through it. Call before the daemon starts, so it sees the route.
    /// Commands run there with `ip netns exec outside`.
    pub fn add_outside_host(&self) -> anyhow::Result<()> {
        self.sh(&format!(
            "mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && ip netns add outside && \
             ip link add {OUTSIDE_UPLINK} type veth peer name eth0 netns outside && \
             ip addr add {NODE_UPLINK_IP}/24 dev {OUTSIDE_UPLINK} && ip link set {OUTSIDE_UPLINK} up && \
             ip -n outside link set lo up && ip -n outside addr add {OUTSIDE_IP}/24 dev eth0 && \
             ip -n outside link set eth0 up && ip route add default via {OUTSIDE_IP}"
        ))?;
        Ok(())
    }

    /// Asserts the node holds nothing but the daemon (and at most its one spawner): no
    /// supervisor, mount, pod dir, pod veth (the kernel removes them in the background, so
    /// this waits a little) or hostPort element.
    pub fn assert_clean(&self) -> anyhow::Result<()> {
        let _ = wait_until(Duration::from_secs(5), || self.veths().is_ok_and(|v| v.is_empty()));
        let veths = self.veths()?;
        let elements = self.nft_elements()?;
        if !veths.is_empty() || !elements.is_empty() {
            bail!("node network not clean: veths {veths:?}, hostPort elements {elements:?}");
        }
        let spawners = self.processes()?.into_iter().filter(|(_, c)| c == "podbay-spawner").count();
        if spawners > 1 {
            bail!("{spawners} spawner processes; a replaced spawner was left behind");
        }
        let procs: Vec<_> = self
            .processes()?
            .into_iter()
            .filter(|(_, comm)| comm != "podbay" && comm != "podbay-spawner")
            .collect();
        let mounts = self.mounts()?;
        let dirs = self.pod_dirs();
        if !procs.is_empty() || !mounts.is_empty() || !dirs.is_empty() {
            bail!("node not clean: processes {procs:?}, mounts {mounts:?}, pod dirs {dirs:?}");
        }
        Ok(())
    }
}

/// The outside host's addresses (TEST-NET-2, only ever inside a test's namespaces).
pub const OUTSIDE_IP: &str = "198.51.100.2";
pub const NODE_UPLINK_IP: &str = "198.51.100.1";
const OUTSIDE_UPLINK: &str = "uplink0";

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// Whether a process has exited (gone, or a zombie: its files are closed).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with(['Z', 'X'])),
    }
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Starts the node's namespace holder (podbay lab's): `unshare` forks a bash that is PID 1
/// of the new PID namespace and reaps every orphan handed to it.
fn spawn_holder() -> anyhow::Result<(Child, u32)> {
    let spawned = podbay::lab::spawn_namespace_holder(Stdio::inherit(), false)?;
    Ok((spawned.unshare, spawned.holder.pid))
}

/// Direct children of a process (host pids).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub async fn connect(path: &Path) -> anyhow::Result<Client> {
    // ExecSync answers carry up to 16 MiB per stream.
    Ok(RuntimeServiceClient::new(channel(path).await?).max_decoding_message_size(64 << 20))
}

/// A gRPC channel over a Unix socket, for any CRI service client.
pub async fn channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::try_from("http://podbay.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?;
    Ok(channel)
}

/// A minimal pod config, as kubelet would send it.
pub fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn with_pid_mode(
    mut c: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
) -> cri::PodSandboxConfig {
    ns_options(&mut c).pid = mode as i32;
    c
}

pub fn with_port(
    mut c: cri::PodSandboxConfig,
    protocol: cri::Protocol,
    container_port: i32,
    host_port: i32,
) -> cri::PodSandboxConfig {
    c.port_mappings.push(cri::PortMapping {
        protocol: protocol as i32,
        container_port,
        host_port,
        host_ip: String::new(),
    });
    c
}

/// A pod's IP as PodSandboxStatus reports it.
/// A Status condition: (status, reason, message).
pub async fn condition(c: &mut Client, kind: &str) -> (bool, String, String) {
    let s = c.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let cond = s.status.unwrap().conditions.into_iter().find(|c| c.r#type == kind).unwrap();
    (cond.status, cond.reason, cond.message)
}

pub async fn pod_ip(client: &mut Client, id: &str) -> anyhow::Result<String> {
    let s = pod_status(client, id).await?;
    Ok(s.status.context("no status")?.network.context("no network status")?.ip)
}

pub fn with_network_mode(
    mut c: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
) -> cri::PodSandboxConfig {
    ns_options(&mut c).network = mode as i32;
    c
}

fn ns_options(c: &mut cri::PodSandboxConfig) -> &mut cri::NamespaceOption {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
}

pub async fn run_pod(client: &mut Client, config: cri::PodSandboxConfig) -> anyhow::Result<String> {
    let resp = client
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), ..Default::default() })
        .await?;
    Ok(resp.into_inner().pod_sandbox_id)
}

pub async fn pod_status(
    client: &mut Client,
    id: &str,
) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// The verbose info JSON of a pod.
pub async fn pod_info(client: &mut Client, id: &str) -> anyhow::Result<serde_json::Value> {
    let s = pod_status(client, id).await?;
    Ok(serde_json::from_str(s.info.get("info").context("no info")?)?)
}

pub async fn is_ready(client: &mut Client, id: &str) -> anyhow::Result<bool> {
    let s = pod_status(client, id).await?;
    Ok(s.status.context("no status")?.state == cri::PodSandboxState::SandboxReady as i32)
}

pub async fn stop_pod(client: &mut Client, id: &str) -> Result<(), tonic::Status> {
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .map(|_| ())
}

pub async fn remove_pod(client: &mut Client, id: &str) -> Result<(), tonic::Status> {
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .map(|_| ())
}

pub async fn list_pods(client: &mut Client) -> anyhow::Result<Vec<cri::PodSandbox>> {
    Ok(client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items)
}

/// Nanoseconds since the Unix epoch, as CRI timestamps count.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    d.as_nanos() as i64
}

/// A cgroup's directory in every hierarchy under `/sys/fs/cgroup` (v1's, or the unified).
pub fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path());
    hierarchies.chain([root.to_path_buf()]).map(|h| h.join(rel)).collect()
}

/// Removes a cgroup and everything below it, deepest first, in every hierarchy. A killed
/// process leaves its cgroup a moment later, so each rmdir is retried for up to 2 s.
pub fn remove_cgroup_tree(cgroup: &str) {
    fn rm(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rm(&e.path());
            }
        }
        let _ = wait_until(Duration::from_secs(2), || {
            std::fs::remove_dir(dir).is_ok() || !dir.exists()
        });
    }
    for dir in cgroup_dirs(cgroup).iter().filter(|d| d.is_dir()) {
        rm(dir);
    }
}
