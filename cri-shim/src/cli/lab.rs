//! `podbay lab`: a multi-node cluster on one machine, for experiments and tests.
//!
//! A lab is
//! - an underlay: a bridge `lab0` (the underlay's first address) in a lab namespace, which
//!   also runs one etcd (Debian's `etcd-server`) on the bridge address;
//! - N nodes, each a network + mount + PID namespace whose `eth0` is a veth on that bridge
//!   with its own underlay address and a default route via the bridge, and one podbay
//!   daemon with its own root/run dirs, socket and `config.toml` (subnet leases in the
//!   lab's etcd, so the nodes build the VXLAN overlay between them).
//!
//! Every namespace is held by a PID 1 (bash reaping orphans) under `unshare`; killing it
//! kills everything inside, which is how `lab down` works, also after a crash. The lab's
//! state (pids, addresses, dirs) is `state.json` in `$PODBAY_LAB_DIR/<name>` (default
//! `/run/podbay-lab/<name>`). Nothing touches the host's network namespace.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LAB: &str = "lab";
pub const DEFAULT_UNDERLAY: &str = "10.99.0.0/24";
const ETCD_PORT: u16 = 2379;
const MAX_NODES: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub underlay: Ipv4Net,
    pub etcd: String,
    /// The lab namespace's PID 1 (host pid) and its start time, so a reused pid is never
    /// taken for it.
    pub hub: Holder,
    pub nodes: Vec<LabNode>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub start: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub holder: Holder,
    pub dir: PathBuf,
}

impl LabNode {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/podbay.sock")
    }
    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
}

impl Holder {
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Where labs keep their state.
pub fn labs_dir() -> PathBuf {
    std::env::var_os("PODBAY_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/run/podbay-lab".into())
}

fn lab_dir(name: &str) -> PathBuf {
    labs_dir().join(name)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 32
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("lab name {name:?}: use 1 to 32 letters, digits, '-' or '_'");
    }
    Ok(())
}

pub fn load(name: &str) -> anyhow::Result<LabState> {
    check_name(name)?;
    let path = lab_dir(name).join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("no lab {name:?} is up (no {})", path.display())
        } else {
            anyhow::anyhow!("read {}: {e}", path.display())
        }
    })?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn save(state: &LabState) -> anyhow::Result<()> {
    let path = lab_dir(&state.name).join("state.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Start time of a process (field 22 of /proc/PID/stat), to recognise it later.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Starts a namespace holder: `unshare` in a session of its own (it outlives this
/// command), whose child is PID 1 of new net + mount + PID namespaces.
fn spawn_holder(log: &Path) -> anyhow::Result<Holder> {
    let log = std::fs::File::create(log)?;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "--kill-child",
        "--",
        "bash",
        "-c",
        "trap '' TERM INT HUP; ip link set lo up; while :; do sleep 3600 & wait $!; done",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let child = cmd.spawn().context("spawn unshare (util-linux)")?;
    let unshare = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse::<u32>().ok())
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "bash")
            && let Some(start) = start_time(pid)
        {
            // Reaped by the keeper's wait loop.
            std::mem::forget(child);
            return Ok(Holder { pid, start });
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(unshare as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            bail!("the namespace holder did not start");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A command inside a holder's namespaces.
fn in_ns(holder: &Holder, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t").arg(holder.pid.to_string()).args(["-n", "-m", "-p", "--"]).arg(program);
    cmd
}

fn run_in(holder: &Holder, script: &str) -> anyhow::Result<String> {
    let out = in_ns(holder, "sh").arg("-c").arg(script).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A shell script in a holder's network namespace only (host mounts and pids).
fn run_net(holder: &Holder, script: &str) -> anyhow::Result<String> {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(holder.pid.to_string())
        .args(["-n", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A long-running process inside a holder's namespaces, detached from this command.
fn spawn_in(holder: &Holder, argv: &[&std::ffi::OsStr], log: &Path) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = in_ns(holder, argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: as in spawn_holder.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    std::mem::forget(cmd.spawn().with_context(|| format!("spawn {:?}", argv[0]))?);
    Ok(())
}

fn host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// The config.toml of a lab node.
fn node_config(etcd: &str) -> String {
    format!(
        "[log]\nlevel = \"debug\"\n\n[network]\nsubnet_store = \"etcd\"\n\n[network.etcd]\nendpoints = [\"{etcd}\"]\n"
    )
}

pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    pub underlay: Ipv4Net,
    /// OCI layouts or archives imported into every node.
    pub images: Vec<PathBuf>,
}

/// `podbay lab up`: starts the lab's keeper and waits for its answer. The keeper (`podbay
/// lab keep`, in a session of its own) builds the lab and stays as the parent of every lab
/// process, reaping them, until they are all gone: so no lab process ever lingers as a
/// zombie, whatever the machine's init does.
pub fn up(opts: &UpOptions) -> anyhow::Result<LabState> {
    check_options(opts)?;
    let exe = std::env::current_exe().context("find the podbay executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["lab", "keep", "--name", &opts.name, "--nodes", &opts.nodes.to_string()])
        .args(["--underlay", &opts.underlay.to_string()]);
    for image in &opts.images {
        cmd.arg("--image").arg(image);
    }
    // stderr to /dev/null: the keeper outlives this command, and whoever reads this
    // command's stderr would wait for it. Its errors come back on stdout.
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: as in spawn_holder.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut keeper = cmd.spawn().context("start the lab keeper")?;
    let mut answer = String::new();
    use std::io::Read;
    keeper.stdout.take().expect("piped").read_to_string(&mut answer)?;
    // The keeper lives on; init adopts it when this command exits.
    std::mem::forget(keeper);
    match answer.strip_prefix("ok\n") {
        Some(_) => load(&opts.name),
        None if answer.is_empty() => bail!("the lab keeper died before it answered"),
        None => bail!("{}", answer.trim_end()),
    }
}

/// `podbay lab keep`: builds the lab, tells `lab up` how it went on stdout, then reaps lab
/// processes until none is left.
pub fn keep(opts: &UpOptions) -> anyhow::Result<()> {
    let answer = match build(opts) {
        Ok(_) => "ok\n".to_owned(),
        Err(e) => format!("{e:#}\n"),
    };
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(answer.as_bytes());
    let _ = out.flush();
    let null = std::fs::File::options().write(true).open("/dev/null")?;
    nix::unistd::dup2_stdout(&null)?;
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Ok(()), // ECHILD: everything is gone
        }
    }
}

fn check_options(opts: &UpOptions) -> anyhow::Result<()> {
    check_name(&opts.name)?;
    if opts.nodes == 0 || opts.nodes > MAX_NODES {
        bail!("--nodes {}: between 1 and {MAX_NODES}", opts.nodes);
    }
    let capacity = (1u64 << (32 - opts.underlay.prefix_len())).saturating_sub(12);
    if opts.underlay.trunc() != opts.underlay || (opts.nodes as u64) > capacity {
        bail!(
            "--underlay {}: must be a network address with room for {} nodes (from .11)",
            opts.underlay,
            opts.nodes
        );
    }
    if lab_dir(&opts.name).join("state.json").exists() {
        bail!("lab {:?} is already up; `podbay lab down --name {}` first", opts.name, opts.name);
    }
    Ok(())
}

/// Builds the lab. On failure everything made so far is removed.
fn build(opts: &UpOptions) -> anyhow::Result<LabState> {
    check_options(opts)?;
    let dir = lab_dir(&opts.name);
    if dir.join("state.json").exists() {
        bail!("lab {:?} is already up; `podbay lab down --name {}` first", opts.name, opts.name);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let started = Instant::now();
    let bridge_ip = host(opts.underlay, 1);
    let etcd = format!("http://{bridge_ip}:{ETCD_PORT}");
    let mut state = LabState {
        name: opts.name.clone(),
        underlay: opts.underlay,
        etcd: etcd.clone(),
        hub: Holder { pid: 0, start: 0 },
        nodes: Vec::new(),
    };
    let result = (|| {
        state.hub = spawn_holder(&dir.join("hub.log"))?;
        save(&state)?;
        let prefix = opts.underlay.prefix_len();
        run_in(
            &state.hub,
            &format!(
                "ip link add lab0 type bridge && ip addr add {bridge_ip}/{prefix} dev lab0 && ip link set lab0 up"
            ),
        )?;
        start_etcd(&state)?;
        for _ in 0..opts.nodes {
            add_node(&mut state)?;
        }
        wait_for_etcd(&state)?;
        for node in &state.nodes {
            start_daemon(node)?;
        }
        for node in &state.nodes {
            wait_for_daemon(node)?;
            import(node, &opts.images)?;
        }
        Ok::<_, anyhow::Error>(())
    })();
    if let Err(e) = result {
        let _ = down_state(&state);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e.context(format!("lab {:?} not started (everything removed)", opts.name)));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "lab up");
    Ok(state)
}

fn podbay_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("find the podbay executable")
}

/// Starts the lab's etcd in the hub, listening on the bridge address.
fn start_etcd(state: &LabState) -> anyhow::Result<()> {
    let dir = lab_dir(&state.name);
    let data = dir.join("etcd");
    let peer = "http://127.0.0.1:2380";
    let etcd = &state.etcd;
    spawn_in(
        &state.hub,
        &[
            "etcd".as_ref(),
            "--name".as_ref(),
            "lab".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--listen-client-urls".as_ref(),
            format!("{etcd},http://127.0.0.1:{ETCD_PORT}").as_ref(),
            "--advertise-client-urls".as_ref(),
            etcd.as_ref(),
            "--listen-peer-urls".as_ref(),
            peer.as_ref(),
            "--initial-advertise-peer-urls".as_ref(),
            peer.as_ref(),
            "--initial-cluster".as_ref(),
            format!("lab={peer}").as_ref(),
        ],
        &dir.join("etcd.log"),
    )
}

/// Adds node N+1: its namespaces, its eth0 on the underlay bridge, its config. The
/// daemon is not started.
fn add_node(state: &mut LabState) -> anyhow::Result<LabNode> {
    let i = state.nodes.len() + 1;
    let name = format!("node{i}");
    let ip = host(state.underlay, 10 + i as u32);
    if !state.underlay.contains(&ip) || ip == state.underlay.broadcast() {
        bail!("underlay {} has no room for {name}", state.underlay);
    }
    let node_dir = lab_dir(&state.name).join(&name);
    std::fs::create_dir_all(node_dir.join("run"))?;
    let holder = spawn_holder(&node_dir.join("holder.log"))?;
    let node = LabNode { name: name.clone(), ip, holder, dir: node_dir.clone() };
    state.nodes.push(node.clone());
    save(state)?;
    let port = format!("lab-{name}");
    // Only the hub's network namespace: `netns PID` names the node by its host pid.
    run_net(
        &state.hub,
        &format!(
            "ip link add {port} type veth peer name eth0 netns {pid} && ip link set {port} master lab0 up",
            pid = holder.pid
        ),
    )?;
    let prefix = state.underlay.prefix_len();
    let gateway = host(state.underlay, 1);
    run_in(
        &holder,
        &format!(
            "ip addr add {ip}/{prefix} dev eth0 && ip link set eth0 up && ip route add default via {gateway}"
        ),
    )?;
    std::fs::write(node_dir.join("config.toml"), node_config(&state.etcd))?;
    Ok(node)
}

/// Starts a node's daemon (not waiting for it).
fn start_daemon(node: &LabNode) -> anyhow::Result<()> {
    let exe = podbay_exe()?;
    let config = node.dir.join("config.toml");
    let root = node.dir.join("root");
    let run = node.run_dir();
    let socket = node.socket();
    spawn_in(
        &node.holder,
        &[
            exe.as_os_str(),
            "serve".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--root".as_ref(),
            root.as_os_str(),
            "--run-dir".as_ref(),
            run.as_os_str(),
            "--socket".as_ref(),
            socket.as_os_str(),
        ],
        &node.dir.join("daemon.log"),
    )
}

fn import(node: &LabNode, images: &[PathBuf]) -> anyhow::Result<()> {
    for image in images {
        let out = Command::new(podbay_exe()?)
            .arg("--endpoint")
            .arg(node.socket())
            .args(["image", "import"])
            .arg(image)
            .output()?;
        if !out.status.success() {
            bail!(
                "import {} into {}: {}",
                image.display(),
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// `podbay lab add`: one more node joins the running lab.
pub fn add(name: &str, images: &[PathBuf]) -> anyhow::Result<LabNode> {
    let mut state = load(name)?;
    let node = add_node(&mut state)?;
    start_daemon(&node)?;
    wait_for_daemon(&node)?;
    import(&node, images)?;
    Ok(node)
}

/// `podbay lab stop NODE|etcd`: SIGTERM to a node's daemon (its pods keep running, as on a
/// node whose runtime restarts) or to etcd, waiting until it is gone.
pub fn stop(name: &str, what: &str) -> anyhow::Result<()> {
    let state = load(name)?;
    let (holder, process) = if what == "etcd" {
        (state.hub, "etcd")
    } else {
        (find_node(&state, what)?.holder, "podbay")
    };
    let _ = run_in(&holder, &format!("pkill -TERM -x {process}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while run_in(&holder, &format!("pgrep -x {process}")).is_ok() {
        if Instant::now() > deadline {
            let _ = run_in(&holder, &format!("pkill -KILL -x {process}"));
            bail!("{what}: {process} did not stop within 15 s; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `podbay lab start NODE|etcd`: starts what `lab stop` stopped and waits until it serves
/// (a node: until its pod network is ready, which needs etcd).
pub fn start(name: &str, what: &str, wait: bool) -> anyhow::Result<()> {
    let state = load(name)?;
    if what == "etcd" {
        start_etcd(&state)?;
        return wait_for_etcd(&state);
    }
    let node = find_node(&state, what)?;
    if run_in(&node.holder, "pgrep -x podbay").is_ok() {
        bail!("{what}: the daemon is already running");
    }
    start_daemon(node)?;
    if wait { wait_for_daemon(node) } else { wait_for_socket(node) }
}

/// Waits until the node's daemon answers on its socket, ready or not.
fn wait_for_socket(node: &LabNode) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(node.socket()).is_err() {
        if Instant::now() > deadline {
            bail!("{}: the daemon did not answer on {}", node.name, node.socket().display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn wait_for_etcd(state: &LabState) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = in_ns(&state.hub, "etcdctl")
            .args(["--endpoints", &state.etcd, "--dial-timeout", "1s", "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output();
        if out.as_ref().is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(lab_dir(&state.name).join("etcd.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(5).collect();
            bail!("etcd did not become healthy at {}: {tail:?}", state.etcd);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the node's daemon answers and its pod network is ready (its subnet
/// leased and the overlay up).
fn wait_for_daemon(node: &LabNode) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    loop {
        let ready = rt.block_on(async {
            let (status, _) = super::status_info(&node.socket()).await.ok()?;
            let status = status?;
            Some(status.conditions.iter().any(|c| c.r#type == "NetworkReady" && c.status))
        });
        if ready == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(node.dir.join("daemon.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(5).collect();
            bail!("{}: the daemon's network did not become ready: {tail:?}", node.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills every holder (which takes every process of the lab with it), then removes the
/// pods' cgroups.
fn down_state(state: &LabState) -> anyhow::Result<()> {
    let holders: Vec<Holder> =
        state.nodes.iter().map(|n| n.holder).chain([state.hub]).filter(|h| h.pid != 0).collect();
    for h in holders.iter().filter(|h| h.alive()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(h.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while holders.iter().any(Holder::alive) {
        if Instant::now() > deadline {
            bail!("lab processes did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for node in &state.nodes {
        for pod in std::fs::read_dir(node.run_dir().join("pods")).into_iter().flatten().flatten() {
            let cgroup = format!("podbay/{}", pod.file_name().to_string_lossy());
            if let Err(e) = podbay_runtime::cgroups::remove_tree(&cgroup) {
                eprintln!("lab down: {e}");
            }
        }
    }
    Ok(())
}

/// `podbay lab down`: everything of the lab goes, whether its processes run or crashed.
pub fn down(name: &str) -> anyhow::Result<()> {
    let state = load(name)?;
    down_state(&state)?;
    let dir = lab_dir(name);
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    Ok(())
}

pub fn find_node<'a>(state: &'a LabState, node: &str) -> anyhow::Result<&'a LabNode> {
    let want = if node.chars().all(|c| c.is_ascii_digit()) {
        format!("node{node}")
    } else {
        node.to_owned()
    };
    state.nodes.iter().find(|n| n.name == want).ok_or_else(|| {
        let names: Vec<_> = state.nodes.iter().map(|n| n.name.as_str()).collect();
        anyhow::anyhow!(
            "lab {:?} has no node {node:?} (nodes: {}, or \"hub\")",
            state.name,
            names.join(", ")
        )
    })
}

/// `podbay lab exec NODE [--pod ID] -- CMD…`: runs CMD in the node's namespaces (or, with
/// `hub`, in the lab namespace with the underlay bridge and etcd), with PODBAY_ENDPOINT set
/// to the node's socket. With `--pod`, in that pod's network namespace. Returns the exit
/// code.
pub fn exec(name: &str, node: &str, pod: Option<&str>, cmd: &[String]) -> anyhow::Result<i32> {
    let state = load(name)?;
    if cmd.is_empty() {
        bail!("no command given (podbay lab exec NODE -- CMD…)");
    }
    let (holder, socket, run) = if node == "hub" {
        (state.hub, None, None)
    } else {
        let n = find_node(&state, node)?;
        (n.holder, Some(n.socket()), Some(n.run_dir()))
    };
    if !holder.alive() {
        bail!("{node} of lab {:?} is not running (podbay lab down, then up)", state.name);
    }
    let mut c = in_ns(&holder, "env");
    if let Some(s) = &socket {
        c.arg(format!("PODBAY_ENDPOINT={}", s.display()))
            .arg(format!("CONTAINER_RUNTIME_ENDPOINT=unix://{}", s.display()));
    }
    c.arg(format!("ETCDCTL_ENDPOINTS={}", state.etcd)).arg("ETCDCTL_API=3");
    // `podbay` itself on the PATH, for `podbay lab exec node1 -- podbay net show`.
    if let Some(bin) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let path = std::env::var("PATH").unwrap_or_default();
        c.arg(format!("PATH={}:{path}", bin.display()));
    }
    if let Some(pod) = pod {
        let Some(run) = run else { bail!("--pod needs a node, not the hub") };
        let id = resolve_pod(&run, pod)?;
        c.arg("nsenter")
            .arg(format!("--net={}", run.join("pods").join(id).join("ns/net").display()));
    }
    let status = c.args(cmd).status().context("run nsenter")?;
    Ok(status
        .code()
        .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)))
}

fn resolve_pod(run: &Path, prefix: &str) -> anyhow::Result<String> {
    let ids: Vec<String> = std::fs::read_dir(run.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| id.starts_with(prefix))
        .collect();
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no pod {prefix:?} on this node"),
        _ => bail!("pod id prefix {prefix:?} is ambiguous ({})", ids.join(", ")),
    }
}

/// `podbay lab status`.
pub async fn status(name: &str, json: bool) -> anyhow::Result<()> {
    let state = load(name)?;
    let mut rows = Vec::new();
    for n in &state.nodes {
        let (ready, net) = if n.holder.alive() {
            match super::status_info(&n.socket()).await {
                Ok((status, info)) => (
                    status.is_some_and(|s| {
                        s.conditions.iter().any(|c| c.r#type == "NetworkReady" && c.status)
                    }),
                    info["network"].clone(),
                ),
                Err(_) => (false, serde_json::Value::Null),
            }
        } else {
            (false, serde_json::Value::Null)
        };
        rows.push(serde_json::json!({
            "node": n.name,
            "ip": n.ip,
            "running": n.holder.alive(),
            "networkReady": ready,
            "subnet": net["subnet"],
            "vtepMac": net["overlay"]["vtepMac"],
            "peers": net["overlay"]["peers"].as_array().map(|p| p.len()),
            "socket": n.socket(),
            "reason": net["reason"],
        }));
    }
    if json {
        let out = serde_json::json!({
            "name": state.name, "underlay": state.underlay, "etcd": state.etcd,
            "hubRunning": state.hub.alive(), "nodes": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!(
        "lab {}: underlay {} on lab0, etcd {} ({})",
        state.name,
        state.underlay,
        state.etcd,
        if state.hub.alive() { "running" } else { "DOWN" }
    );
    println!(
        "{:<8} {:<14} {:<10} {:<16} {:<18} {:<6} SOCKET",
        "NODE", "IP", "STATE", "SUBNET", "VTEP MAC", "PEERS"
    );
    for r in rows {
        let st = match (r["running"] == true, r["networkReady"] == true) {
            (false, _) => "down",
            (true, true) => "ready",
            (true, false) => "not-ready",
        };
        println!(
            "{:<8} {:<14} {:<10} {:<16} {:<18} {:<6} {}",
            s(&r["node"]),
            s(&r["ip"]),
            st,
            s(&r["subnet"]),
            s(&r["vtepMac"]),
            s(&r["peers"]),
            s(&r["socket"])
        );
    }
    Ok(())
}
