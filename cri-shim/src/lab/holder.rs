//! The process that holds a node's namespaces: `unshare` whose child, PID 1 of fresh
//! network + mount + PID namespaces, is a bash that reaps every orphan handed to it.
//! The node's mounts are cut off from the host's (`--propagation private`) and then made
//! shared among themselves, as a systemd host's are (podbay's view namespace needs it).
//! Killing that PID 1 kills everything inside and lets the namespaces go. The lab and the
//! test harness both build their nodes on it; commands run inside through `nsenter`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::state::Holder;

/// A namespace holder that runs.
pub struct Spawned {
    /// The `unshare` process, our child.
    pub unshare: Child,
    /// The namespaces' PID 1 (host pid) and its start time.
    pub holder: Holder,
}

/// Starts a namespace holder. With `own_session` it runs in a session of its own (it
/// outlives the calling command, as the lab's do).
pub fn spawn(stderr: Stdio, own_session: bool) -> anyhow::Result<Spawned> {
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
        "trap '' TERM INT HUP; ip link set lo up; mount --make-rshared /; \
         while :; do sleep 3600 & wait $!; done",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr);
    if own_session {
        new_session(&mut cmd);
    }
    let mut unshare = cmd.spawn().context("spawn unshare (util-linux)")?;
    let pid = unshare.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        // Ready once the PID 1 runs bash in its new namespaces and has made them shared.
        if let Some(init) = kids.split_whitespace().next().and_then(|p| p.parse::<u32>().ok())
            && std::fs::read_to_string(format!("/proc/{init}/comm"))
                .is_ok_and(|c| c.trim() == "bash")
            && root_is_shared(init)
            && let Some(start) = start_time(init)
        {
            return Ok(Spawned { unshare, holder: Holder { pid: init, start } });
        }
        if Instant::now() > deadline || unshare.try_wait()?.is_some() {
            let _ = unshare.kill();
            let _ = unshare.wait();
            bail!("the namespace holder did not start");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the root mount of a process's mount namespace is shared.
fn root_is_shared(pid: u32) -> bool {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    table
        .lines()
        .filter_map(podbay_runtime::view::mount_sharing)
        .any(|(point, shared)| shared && point == Path::new("/"))
}

/// Start time of a process (field 22 of /proc/PID/stat), to recognise it later.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Makes the command's process the leader of a new session.
fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
}

/// A command inside a holder's namespaces.
pub fn in_ns(holder: &Holder, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t").arg(holder.pid.to_string()).args(["-n", "-m", "-p", "--"]).arg(program);
    cmd
}

/// A shell script inside a holder's namespaces; its stdout.
pub fn run_in(holder: &Holder, script: &str) -> anyhow::Result<String> {
    let out = in_ns(holder, "sh").arg("-c").arg(script).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A shell script in a holder's network namespace only (host mounts and pids).
pub fn run_net(holder: &Holder, script: &str) -> anyhow::Result<String> {
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
pub fn spawn_in(holder: &Holder, argv: &[&std::ffi::OsStr], log: &Path) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = in_ns(holder, argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    new_session(&mut cmd);
    std::mem::forget(cmd.spawn().with_context(|| format!("spawn {:?}", argv[0]))?);
    Ok(())
}

/// Starts the command in a session of its own and returns its child.
pub fn spawn_detached(mut cmd: Command) -> std::io::Result<Child> {
    new_session(&mut cmd);
    cmd.spawn()
}
