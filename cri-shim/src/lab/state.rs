//! A lab's state on disk (`state.json` in its dir): the hub's and each node's holder
//! (host pid and start time, so a reused pid is never taken for it), addresses and dirs.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::holder;

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
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
}

impl Holder {
    pub fn alive(&self) -> bool {
        holder::start_time(self.pid) == Some(self.start)
    }
}

/// Where labs keep their state.
pub fn labs_dir() -> PathBuf {
    std::env::var_os("PODBAY_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/run/podbay-lab".into())
}

pub fn lab_dir(name: &str) -> PathBuf {
    labs_dir().join(name)
}

pub fn check_name(name: &str) -> anyhow::Result<()> {
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

pub fn save(state: &LabState) -> anyhow::Result<()> {
    let path = lab_dir(&state.name).join("state.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, &path)?;
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
