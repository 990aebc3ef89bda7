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

mod holder;
mod node;
mod state;
mod status;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
pub use holder::{Spawned, spawn as spawn_namespace_holder};
use holder::{in_ns, run_in};
use ipnet::Ipv4Net;
use node::{
    add_node, host, import, start_daemon, start_etcd, wait_for_daemon, wait_for_etcd,
    wait_for_socket,
};
pub use state::{Holder, LabNode, LabState, find_node, labs_dir, load};
use state::{check_name, lab_dir, save};
pub use status::{show, status};

pub const DEFAULT_LAB: &str = "lab";
pub const DEFAULT_UNDERLAY: &str = "10.99.0.0/24";
const ETCD_PORT: u16 = 2379;
const MAX_NODES: usize = 200;

/// A lab's namespace holder, in a session of its own, its stderr in `log`; the keeper
/// reaps it (its `unshare` is not waited for here).
fn spawn_holder(log: std::fs::File) -> anyhow::Result<Holder> {
    let spawned = holder::spawn(log.into(), true)?;
    std::mem::forget(spawned.unshare);
    Ok(spawned.holder)
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
    let mut keeper = holder::spawn_detached(cmd).context("start the lab keeper")?;
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
        state.hub = spawn_holder(std::fs::File::create(dir.join("hub.log"))?)?;
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
