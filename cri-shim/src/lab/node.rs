//! A lab's members: its etcd in the hub, and each node (namespaces, eth0 on the underlay
//! bridge, config, daemon), with the waits that tell when each is up.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;

use super::holder::{in_ns, run_in, run_net, spawn_in};
use super::state::{LabNode, LabState, lab_dir, save};
use super::{ETCD_PORT, spawn_holder};

pub(super) fn host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// The config.toml of a lab node.
fn node_config(etcd: &str) -> String {
    format!(
        "[log]\nlevel = \"debug\"\n\n[network]\nsubnet_store = \"etcd\"\n\n[network.etcd]\nendpoints = [\"{etcd}\"]\n"
    )
}

fn podbay_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("find the podbay executable")
}

/// Starts the lab's etcd in the hub, listening on the bridge address.
pub(super) fn start_etcd(state: &LabState) -> anyhow::Result<()> {
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
pub(super) fn add_node(state: &mut LabState) -> anyhow::Result<LabNode> {
    let i = state.nodes.len() + 1;
    let name = format!("node{i}");
    let ip = host(state.underlay, 10 + i as u32);
    if !state.underlay.contains(&ip) || ip == state.underlay.broadcast() {
        bail!("underlay {} has no room for {name}", state.underlay);
    }
    let node_dir = lab_dir(&state.name).join(&name);
    std::fs::create_dir_all(node_dir.join("run"))?;
    let log = std::fs::File::create(node_dir.join("holder.log"))?;
    let holder = spawn_holder(log)?;
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
pub(super) fn start_daemon(node: &LabNode) -> anyhow::Result<()> {
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

pub(super) fn import(node: &LabNode, images: &[PathBuf]) -> anyhow::Result<()> {
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

/// Waits until the node's daemon answers on its socket, ready or not.
pub(super) fn wait_for_socket(node: &LabNode) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(node.socket()).is_err() {
        if Instant::now() > deadline {
            bail!("{}: the daemon did not answer on {}", node.name, node.socket().display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub(super) fn wait_for_etcd(state: &LabState) -> anyhow::Result<()> {
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
pub(super) fn wait_for_daemon(node: &LabNode) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    loop {
        let ready = rt.block_on(async {
            let (status, _) = crate::cli::status_info(&node.socket()).await.ok()?;
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
