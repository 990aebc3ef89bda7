//! A multi-node lab for tests: `podbay lab` itself, with its state in a temp dir.
//!
//! [`Lab::up`] runs `podbay lab up` under a name of the test's own; dropping the [`Lab`]
//! runs `podbay lab down`, also when the test panics, and the temp dir goes with it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{podbay_bin, wait_until};

pub struct Lab {
    name: String,
    dir: tempfile::TempDir,
}

/// A pod on a lab node.
#[derive(Debug, Clone)]
pub struct LabPod {
    pub node: String,
    pub id: String,
    pub ip: String,
}

impl Lab {
    /// `podbay lab up --nodes N` under `name` (unique per test).
    pub fn up(name: &str, nodes: usize) -> anyhow::Result<Lab> {
        let dir = tempfile::Builder::new().prefix("pblab").tempdir_in("/dev/shm")?;
        let lab = Lab { name: name.to_owned(), dir };
        lab.lab(&["up", "--nodes", &nodes.to_string()])?;
        Ok(lab)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the lab keeps its state (`PODBAY_LAB_DIR`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The host pid of the hub's PID 1 (the namespace with the underlay bridge and etcd).
    pub fn hub_pid(&self) -> anyhow::Result<u32> {
        let state = std::fs::read_to_string(self.dir.path().join(&self.name).join("state.json"))?;
        let state: serde_json::Value = serde_json::from_str(&state)?;
        state["hub"]["pid"].as_u64().map(|p| p as u32).context("no hub pid in state.json")
    }

    /// `podbay <args>` with this lab's state dir.
    pub fn podbay(&self) -> Command {
        let mut cmd = Command::new(podbay_bin());
        cmd.env("PODBAY_LAB_DIR", self.dir.path()).env("RUST_BACKTRACE", "0");
        cmd
    }

    /// `podbay lab <sub> --name <lab> <rest>`: output, whatever the exit code.
    pub fn lab_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let (sub, rest) = args.split_first().context("a lab subcommand")?;
        Ok(self
            .podbay()
            .args(["lab", sub, "--name", &self.name])
            .args(rest)
            .stdin(Stdio::null())
            .output()?)
    }

    /// `podbay lab <sub> --name <lab> <rest>`; its stdout, failing on a non-zero exit.
    pub fn lab(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.lab_output(args)?;
        if !out.status.success() {
            bail!("podbay lab {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A shell script in a node (`node1`, or `hub` for the underlay namespace with etcd).
    pub fn sh_output(&self, node: &str, script: &str) -> anyhow::Result<Output> {
        self.lab_output(&["exec", node, "--", "sh", "-c", script])
    }

    pub fn sh(&self, node: &str, script: &str) -> anyhow::Result<String> {
        let out = self.sh_output(node, script)?;
        if !out.status.success() {
            bail!(
                "`{script}` on {node} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A shell script in a pod's network namespace.
    pub fn in_pod(&self, pod: &LabPod, script: &str) -> anyhow::Result<Output> {
        self.lab_output(&["exec", &pod.node, "--pod", &pod.id, "--", "sh", "-c", script])
    }

    /// `etcdctl` in the hub; its stdout.
    pub fn etcdctl(&self, args: &str) -> anyhow::Result<String> {
        self.sh("hub", &format!("etcdctl {args}"))
    }

    /// The node's CRI socket.
    pub fn endpoint(&self, node: &str) -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(self.lab(&["endpoint", node])?.trim()))
    }

    /// `podbay --endpoint <node> <args>`.
    pub fn cli(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.podbay().arg("--endpoint").arg(self.endpoint(node)?).args(args).output()?;
        if !out.status.success() {
            bail!("podbay {args:?} on {node}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a pod called `name` on `node`; returns its id and IP.
    pub fn run_pod(&self, node: &str, name: &str) -> anyhow::Result<LabPod> {
        let file = self.dir.path().join(format!("{node}-{name}.yaml"));
        std::fs::write(
            &file,
            format!("metadata: {{name: {name}, namespace: default, uid: {node}-{name}}}\n"),
        )?;
        let id = self.cli(node, &["runp", &file.to_string_lossy()])?.trim().to_owned();
        let info: serde_json::Value =
            serde_json::from_str(&self.cli(node, &["inspectp", &id])?).context("inspectp JSON")?;
        let ip = info["status"]["network"]["ip"]
            .as_str()
            .or_else(|| info[0]["status"]["network"]["ip"].as_str())
            .with_context(|| format!("no pod IP in {info}"))?
            .to_owned();
        Ok(LabPod { node: node.to_owned(), id, ip })
    }

    /// `podbay net show -o json` on a node.
    pub fn net(&self, node: &str) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(node, &["net", "show", "-o", "json"])?)?)
    }

    /// `podbay lab status -o json`.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.lab(&["status", "-o", "json"])?)?)
    }

    /// The routes through flannel.1 on a node, as `ip route` prints them.
    pub fn overlay_routes(&self, node: &str) -> anyhow::Result<String> {
        self.sh(node, "ip route show dev flannel.1")
    }

    /// Waits until `cond` holds, up to `secs` seconds.
    pub fn wait(&self, secs: u64, what: &str, cond: impl FnMut() -> bool) -> anyhow::Result<()> {
        wait_until(Duration::from_secs(secs), cond).with_context(|| what.to_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match self.lab_output(&["down"]) {
            Ok(out) if !out.status.success() => {
                eprintln!("lab down: {}", String::from_utf8_lossy(&out.stderr));
            }
            Err(e) => eprintln!("lab down: {e}"),
            _ => {}
        }
    }
}
