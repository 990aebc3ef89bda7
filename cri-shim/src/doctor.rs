//! `podbay doctor`: what this node needs to run podbay, checked one by one, each with one
//! line of advice when it is not right. Network features are tried for real in a throwaway
//! network namespace (`podbay_netplug::probe`); nothing on the node is changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, level: Level::Ok, detail: detail.into(), advice: None }
}

fn warn(name: &'static str, detail: impl Into<String>, advice: impl Into<String>) -> Check {
    Check { name, level: Level::Warn, detail: detail.into(), advice: Some(advice.into()) }
}

fn fail(name: &'static str, detail: impl Into<String>, advice: impl Into<String>) -> Check {
    Check { name, level: Level::Fail, detail: detail.into(), advice: Some(advice.into()) }
}

/// Where the config comes from and the overrides `podbay serve` would apply.
pub struct Options {
    pub config: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

/// Runs every check. The config's own check comes first; with a broken config the rest run
/// on the defaults.
pub async fn run(opts: &Options) -> Vec<Check> {
    let (mut checks, cfg) = config(opts);
    checks.extend(kernel());
    checks.push(seccomp());
    checks.push(user_namespaces());
    let etcd = cfg.network.subnet_store == "etcd";
    checks.extend(network_features(etcd));
    checks.push(cgroups());
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        checks.push(cgroup_placement(podbay_runtime::cgroups::clone3_callable()));
    }
    checks.push(br_netfilter());
    let daemon = daemon(&cfg.socket).await;
    checks.push(ip_forward(daemon.level == Level::Ok));
    checks.push(state_dir("root dir", &cfg.root, true, cfg.image.min_free_bytes));
    checks.push(state_dir("run dir", &cfg.run_dir, false, 0));
    let ours = daemon.level == Level::Ok || cfg.root.join("state.redb").exists();
    checks.push(existing_link("bridge", &cfg.network.bridge, "bridge", ours));
    if etcd {
        checks.push(existing_link("vxlan device", &cfg.network.vxlan.device, "vxlan", ours));
    }
    checks.push(other_runtimes(etcd));
    if etcd {
        checks.push(etcd_reachable(&cfg).await);
    }
    checks.push(daemon);
    checks
}

/// Prints the checks as a table (or JSON) and says whether none failed.
pub fn print(checks: &[Check], json: bool) -> bool {
    if json {
        println!("{}", serde_json::to_string_pretty(checks).expect("checks serialise"));
    } else {
        for c in checks {
            let level = match c.level {
                Level::Ok => "ok",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{level:<5} {:<16} {}", c.name, c.detail);
            if let Some(advice) = &c.advice {
                println!("{:<22}→ {advice}", "");
            }
        }
        let count = |l| checks.iter().filter(|c| c.level == l).count();
        println!(
            "{} ok, {} warnings, {} failed",
            count(Level::Ok),
            count(Level::Warn),
            count(Level::Fail)
        );
    }
    checks.iter().all(|c| c.level != Level::Fail)
}

fn config(opts: &Options) -> (Vec<Check>, Config) {
    let path = opts.config.clone().unwrap_or_else(|| crate::config::DEFAULT_CONFIG_PATH.into());
    let shown = if opts.config.is_some() || path.exists() {
        path.display().to_string()
    } else {
        "no config file: embedded defaults".into()
    };
    let loaded = Config::load(opts.config.as_deref()).and_then(|mut cfg| {
        cfg.root = opts.root.clone().unwrap_or(cfg.root);
        cfg.run_dir = opts.run_dir.clone().unwrap_or(cfg.run_dir);
        cfg.socket = opts.socket.clone().unwrap_or(cfg.socket);
        cfg.validate()?;
        cfg.network.to_config()?;
        Ok(cfg)
    });
    match loaded {
        Ok(cfg) => (vec![ok("config", shown)], cfg),
        Err(e) => {
            let check = fail(
                "config",
                format!("{shown}: {e}"),
                "fix the key named (podbay config default prints every key)",
            );
            let mut cfg = Config::default();
            cfg.root = opts.root.clone().unwrap_or(cfg.root);
            cfg.run_dir = opts.run_dir.clone().unwrap_or(cfg.run_dir);
            cfg.socket = opts.socket.clone().unwrap_or(cfg.socket);
            (vec![check], cfg)
        }
    }
}

/// `6.1.0-26-amd64` → (6, 1).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The running kernel's release (`uname -r`), empty if unknown.
fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kernel() -> Vec<Check> {
    let release = kernel_release();
    let version = kernel_version(&release);
    let kernel = match version {
        Some(v) if v >= (5, 4) => ok("kernel", format!("Linux {release}")),
        _ => fail("kernel", format!("Linux {release}"), "podbay needs Linux 5.4 or later"),
    };
    let idmap = match version {
        Some(v) if v >= (5, 19) => ok("idmapped mounts", "overlayfs over idmapped layers (≥ 5.19)"),
        _ => warn(
            "idmapped mounts",
            format!("not over overlayfs before Linux 5.19 (this is {release})"),
            "pods with their own user namespace (hostUsers: false) need Linux 5.19 or later",
        ),
    };
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = if filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay")) {
        ok("overlayfs", "in /proc/filesystems")
    } else if module_available("overlay") {
        ok("overlayfs", "module available (loaded on first mount)")
    } else {
        fail(
            "overlayfs",
            "not in /proc/filesystems, no module",
            "container rootfs need overlayfs: modprobe overlay, or a kernel with CONFIG_OVERLAY_FS",
        )
    };
    vec![kernel, overlay, idmap]
}

/// Whether `modules.dep` of the running kernel lists `name`.
fn module_available(name: &str) -> bool {
    let release = kernel_release();
    let dep = std::fs::read_to_string(format!("/lib/modules/{release}/modules.dep"));
    dep.is_ok_and(|d| {
        d.lines().any(|l| l.split(':').next().is_some_and(|m| m.contains(&format!("/{name}.ko"))))
    })
}

fn seccomp() -> Check {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status.lines().any(|l| l.starts_with("Seccomp:")) {
        ok("seccomp", "supported (seccomp profiles are applied)")
    } else {
        fail(
            "seccomp",
            "the kernel has no seccomp",
            "a kernel with CONFIG_SECCOMP_FILTER: RuntimeDefault and Localhost profiles cannot be applied without it",
        )
    }
}

fn user_namespaces() -> Check {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match max {
        Some(n) if n > 0 => ok("user namespaces", format!("max_user_namespaces = {n}")),
        Some(_) => warn(
            "user namespaces",
            "max_user_namespaces = 0",
            "sysctl user.max_user_namespaces=65536 for hostUsers: false pods",
        ),
        None => warn(
            "user namespaces",
            "not in this kernel",
            "hostUsers: false pods need CONFIG_USER_NS",
        ),
    }
}

fn network_features(etcd: bool) -> Vec<Check> {
    podbay_netplug::probe::network_features()
        .into_iter()
        .map(|p| {
            let name = p.feature;
            match p.result {
                Ok(()) => ok(name, "created in a throwaway network namespace"),
                Err(e) if name == "vxlan" && !etcd => warn(
                    name,
                    format!("cannot be created: {e}"),
                    "only the multi-node overlay (subnet_store = \"etcd\") needs it: modprobe vxlan",
                ),
                Err(e) => fail(
                    name,
                    format!("cannot be created: {e}"),
                    match name {
                        "nftables" => "hostPorts and masquerading need nf_tables: modprobe nf_tables",
                        "bridge" => "the pod network needs bridges: modprobe bridge",
                        "veth" => "each pod's eth0 is a veth: modprobe veth",
                        _ => "the multi-node overlay needs it: modprobe vxlan",
                    },
                ),
            }
        })
        .collect()
}

fn cgroups() -> Check {
    const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (mode, controllers): (&str, Vec<String>) = if v2 {
        let text = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        ("v2", text.split_whitespace().map(str::to_owned).collect())
    } else {
        let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
        let dirs = podbay_runtime::cgroups::v1_hierarchies();
        let controllers = dirs.iter().flat_map(|d| d.split(',').map(str::to_owned)).collect();
        (if hybrid { "v1 (hybrid, cgroup2 at /sys/fs/cgroup/unified)" } else { "v1" }, controllers)
    };
    let has = |c: &str| controllers.iter().any(|have| have == c);
    let missing: Vec<&str> = REQUIRED.into_iter().filter(|c| !has(c)).collect();
    let detail = format!(
        "{mode}: {}",
        REQUIRED
            .iter()
            .chain(["cpuset", "hugetlb"].iter())
            .filter(|c| has(c))
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !missing.is_empty() {
        return fail(
            "cgroups",
            format!("{detail}; missing {}", missing.join(" ")),
            "enable the missing controllers (kernel config or cgroup_enable= on the kernel command line)",
        );
    }
    if !has("hugetlb") {
        return warn(
            "cgroups",
            format!("{detail}; no hugetlb"),
            "hugepage limits in container requests are dropped (as containerd does); enable CONFIG_CGROUP_HUGETLB to enforce them",
        );
    }
    ok("cgroups", detail)
}

/// On a cgroup v2 node, whether containers and execs can be born in their cgroup
/// (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7), or each one moves there by its pid and
/// waits for the kernel's global migration lock (an RCU grace period).
fn cgroup_placement(clone3: bool) -> Check {
    let name = "cgroup placement";
    let release = kernel_release();
    let into_cgroup = kernel_version(&release).is_some_and(|v| v >= (5, 7));
    match (clone3, into_cgroup) {
        (false, _) => warn(
            name,
            "clone3 refused: a seccomp filter around podbay, or a kernel before 5.3",
            "each container and exec then waits for the kernel's cgroup migration lock (10–15 ms); run podbay without a filter on clone3",
        ),
        (_, false) => warn(
            name,
            format!("no CLONE_INTO_CGROUP before Linux 5.7 (this is {release})"),
            "each container and exec then waits for the kernel's cgroup migration lock (10–15 ms)",
        ),
        _ => ok(name, "containers and execs are born in their cgroup (clone3 CLONE_INTO_CGROUP)"),
    }
}

fn br_netfilter() -> Check {
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        ok("br_netfilter", "loaded (podbay turns bridge-nf-call-iptables on)")
    } else {
        warn(
            "br_netfilter",
            "not loaded: bridged pod traffic bypasses iptables/nftables",
            "kube-proxy's Services need it: modprobe br_netfilter (and list it in /etc/modules-load.d)",
        )
    }
}

fn ip_forward(daemon_running: bool) -> Check {
    let on =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
    match (on, daemon_running) {
        (true, _) => ok("ip_forward", "on"),
        (false, false) => {
            ok("ip_forward", "off now; podbay turns it on when the pod network starts")
        }
        (false, true) => warn(
            "ip_forward",
            "off while podbay runs: something turned it off",
            "pods cannot reach other nodes or the outside: sysctl net.ipv4.ip_forward=1, and find what turns it off",
        ),
    }
}

/// The file system's type name from statfs's magic number.
fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        other => format!("type {other:#x}"),
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} B"),
    }
}

/// The root (persistent: images, database) or run (volatile) dir: where it lives, its free
/// space and who may write it. A dir that does not exist yet is judged by its nearest
/// existing parent.
fn state_dir(name: &'static str, dir: &Path, persistent: bool, min_free: u64) -> Check {
    let mut at = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => break,
        }
    }
    let (fs, free) = match (nix::sys::statfs::statfs(&at), nix::sys::statvfs::statvfs(&at)) {
        (Ok(s), Ok(v)) => {
            (fs_name(s.filesystem_type().0), v.blocks_available() * v.fragment_size())
        }
        (Err(e), _) | (_, Err(e)) => {
            return fail(name, format!("{}: {e}", dir.display()), "check the path in the config");
        }
    };
    let created = if at == dir { "" } else { " (to be created)" };
    let detail = format!("{}{created}: {fs}, {} free", dir.display(), human(free));
    if at == dir {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(dir)
            && (meta.uid() != 0 || meta.mode() & 0o022 != 0)
        {
            return fail(
                name,
                format!("{detail}; owner uid {} mode {:o}", meta.uid(), meta.mode() & 0o7777),
                format!("only root may write it: chown root {0} && chmod go-w {0}", dir.display()),
            );
        }
    }
    if persistent {
        if fs == "overlayfs" {
            return fail(
                name,
                detail,
                "container layers cannot be overlayfs on overlayfs: put root on ext4, xfs or btrfs",
            );
        }
        if free < min_free {
            return fail(
                name,
                detail,
                format!(
                    "pulls stop below image.min_free_bytes ({}): free space there",
                    human(min_free)
                ),
            );
        }
        if free < min_free.saturating_mul(4) {
            return warn(name, detail, "little room for images and container layers");
        }
        if fs == "tmpfs" {
            return warn(
                name,
                detail,
                "images and the state database are lost at reboot: put root on a disk",
            );
        }
    } else if fs != "tmpfs" {
        return warn(
            name,
            detail,
            "the run dir should be a tmpfs (/run): state from before a reboot would look live",
        );
    }
    ok(name, detail)
}

/// `cni0` or `flannel.1` that exists: podbay's own, or another network plugin's.
fn existing_link(name: &'static str, link: &str, kind: &str, ours: bool) -> Check {
    match podbay_netplug::probe::link_kind(link) {
        Err(e) => warn(name, format!("{link}: cannot look: {e}"), "run as root"),
        Ok(None) => ok(name, format!("{link} does not exist yet (podbay makes it)")),
        Ok(Some(k)) if k != kind => fail(
            name,
            format!(
                "{link} exists and is a {} device, not a {kind}",
                if k.is_empty() { "plain" } else { &k }
            ),
            format!(
                "delete it or set network.{} to another name",
                if kind == "bridge" { "bridge" } else { "vxlan.device" }
            ),
        ),
        Ok(Some(_)) if ours => ok(name, format!("{link} exists (podbay's)")),
        Ok(Some(_)) => warn(
            name,
            format!(
                "{link} exists but podbay has no state here: another network plugin (flannel, a CNI bridge) made it"
            ),
            "podbay takes it over only if its address is the node subnet's gateway; remove the other plugin first",
        ),
    }
}

/// Other container runtimes or flannel running on this node.
fn other_runtimes(etcd: bool) -> Check {
    let mut found: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let comm = comm.trim();
            if ["containerd", "crio", "dockerd", "flanneld"].contains(&comm)
                && !found.iter().any(|f| f == comm)
            {
                found.push(comm.to_owned());
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return ok("other runtimes", "no containerd, CRI-O, dockerd or flanneld running");
    }
    let list = found.join(", ");
    if etcd && found.iter().any(|f| f == "flanneld") {
        return fail(
            "other runtimes",
            format!("running: {list}"),
            "flanneld and podbay would both program flannel.1 from the same leases: stop flanneld (podbay is flannel-compatible)",
        );
    }
    warn(
        "other runtimes",
        format!("running: {list}"),
        "point kubelet at podbay's socket only; two runtimes on one node compete for cni0, cgroups and ports",
    )
}

async fn etcd_reachable(cfg: &Config) -> Check {
    let network = match cfg.network.to_config() {
        Ok(n) => n,
        Err(e) => return fail("etcd", e.to_string(), "fix [network.etcd] in the config"),
    };
    let podbay_netplug::config::StoreConfig::Etcd(etcd) = &network.store else {
        return ok("etcd", "not used");
    };
    match tokio::time::timeout(Duration::from_secs(5), podbay_netplug::etcd::EtcdStore::probe(etcd))
        .await
    {
        Ok(Ok(version)) => {
            ok("etcd", format!("{} answers (etcd {version})", etcd.endpoints_text()))
        }
        Ok(Err(e)) => fail(
            "etcd",
            e.to_string(),
            "the overlay cannot lease a subnet: start etcd or fix network.etcd.endpoints",
        ),
        Err(_) => fail(
            "etcd",
            format!("{}: no answer in 5 s", etcd.endpoints_text()),
            "start etcd or fix network.etcd.endpoints",
        ),
    }
}

async fn daemon(socket: &Path) -> Check {
    let version =
        tokio::time::timeout(Duration::from_secs(5), crate::cli::daemon_version(socket)).await;
    match version {
        Ok(Ok(v)) => ok("daemon", format!("podbay {v} serving on {}", socket.display())),
        _ => warn(
            "daemon",
            format!("nothing serves {}", socket.display()),
            "start it: systemctl start podbay (or podbay serve)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_are_read() {
        assert_eq!(kernel_version("6.1.0-26-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.19.17"), Some((5, 19)));
        assert_eq!(kernel_version("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn fs_names_and_sizes() {
        assert_eq!(fs_name(0xEF53), "ext4");
        assert_eq!(fs_name(0x0102_1994), "tmpfs");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(512), "512 B");
    }

    #[test]
    fn cgroup_placement_wants_clone3() {
        assert!(matches!(cgroup_placement(false).level, Level::Warn));
        // This machine's kernel (6.x) has the flag, and nothing filters the test's clone3.
        assert!(matches!(cgroup_placement(true).level, Level::Ok));
        assert!(podbay_runtime::cgroups::clone3_callable());
    }

    #[test]
    fn a_failed_check_fails_the_run() {
        assert!(print(&[ok("a", "fine"), warn("b", "meh", "do x")], true));
        assert!(!print(&[fail("c", "broken", "do y")], true));
    }
}
