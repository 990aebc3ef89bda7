//! What podbay finds out about the node once, at start, for the containers' specs:
//! its capabilities, its oom_score_adj, the cgroup hierarchies and the host's devices;
//! and the node-level directories containers' specs bind instead of a tmpfs each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::spec::{ALL_CAPABILITIES, HostDevice, NodeFacts};
use crate::cgroups;
use crate::layout::Layout;

impl NodeFacts {
    /// Whether the pod's supervisor launches a container and its execs itself
    /// (`supervisor/process/launch.rs`), placing them in their cgroup without the global
    /// migration lock (v1: the helper joins by `tasks`; v2: they are born in it): for a
    /// pod without a user namespace. Otherwise libcontainer's builders make them and move
    /// them by pid (which waits for an RCU grace period, so a migration is primed), and
    /// they read the seccomp profile from the spec: only here may the filter be
    /// precompiled and left out of the spec.
    pub(super) fn supervisor_launches(&self, pod_userns: bool) -> bool {
        !pod_userns
    }
}

pub(super) fn facts() -> NodeFacts {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let capabilities = ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| eff & (1 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect();
    let own_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let cgroup_v1_hierarchies = cgroups::v1_hierarchies();
    let hugetlb = cgroups::hugetlb_available(cgroup_v1_hierarchies.is_empty());
    let mut host_devices = Vec::new();
    walk_devices(Path::new("/dev"), &mut host_devices);
    NodeFacts {
        capabilities,
        own_oom_score_adj,
        cgroup_v1_hierarchies,
        host_devices,
        hugetlb,
        ..Default::default()
    }
}

/// Makes the directories that a container without CAP_SYS_ADMIN gets bound read-only
/// where it would otherwise get a tmpfs of its own (docs/architecture.md, "A container's
/// superblocks"): the empty directory for its masked directories, and on cgroup v1 the
/// directory its hierarchies are bound on at /sys/fs/cgroup. Each tmpfs is a superblock,
/// and the kernel walks every superblock's lists whenever a memory cgroup goes, so a
/// superblock per container makes every pod's teardown slower the more pods there are.
/// What cannot be made is logged and left to the tmpfs.
pub(super) fn shared_dirs(layout: &Layout, facts: &mut NodeFacts) {
    let empty = layout.empty_dir();
    match shared_dir(&empty, 0o555, &[]) {
        Ok(()) => facts.masked_dir_source = Some(empty),
        Err(e) => tracing::warn!(path = %empty.display(), error = %e,
            "no shared empty directory: masked directories get a tmpfs each"),
    }
    if facts.cgroup_v1_hierarchies.is_empty() {
        return;
    }
    let dir = layout.cgroup_v1_dir();
    let names: Vec<&str> = facts
        .cgroup_v1_hierarchies
        .iter()
        .map(String::as_str)
        .filter(|h| cgroups::V1_CONTROLLERS.contains(h))
        .collect();
    match shared_dir(&dir, 0o755, &names) {
        Ok(()) => facts.cgroup_v1_dir = Some(dir),
        Err(e) => tracing::warn!(path = %dir.display(), error = %e,
            "no shared cgroup v1 directory: each container's /sys/fs/cgroup is a tmpfs"),
    }
}

/// A directory (not a symlink) with `mode` holding exactly the empty directories `names`
/// (0755), made or checked; an empty directory of another name (a hierarchy the node no
/// longer mounts) is removed, anything else refused.
fn shared_dir(dir: &Path, mode: u32, names: &[&str]) -> std::io::Result<()> {
    let plain_dir = |path: &Path, mode: u32| -> std::io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        if !std::fs::symlink_metadata(path)?.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    };
    plain_dir(dir, 0o755)?;
    for name in names {
        plain_dir(&dir.join(name), 0o755)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let path: PathBuf = entry.path();
        let not_ours = || std::io::Error::other(format!("{} is not podbay's", path.display()));
        if !entry.file_type()?.is_dir() || std::fs::read_dir(&path)?.next().is_some() {
            return Err(not_ours());
        }
        if !names.iter().any(|n| name == *n) {
            std::fs::remove_dir(&path).map_err(|_| not_ours())?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

fn walk_devices(dir: &Path, out: &mut Vec<HostDevice>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let t = meta.file_type();
        if t.is_dir() {
            let skip = ["pts", "shm", "mqueue", "fd"];
            if !skip.iter().any(|s| e.file_name() == *s) {
                walk_devices(&path, out);
            }
            continue;
        }
        let kind = if t.is_char_device() {
            'c'
        } else if t.is_block_device() {
            'b'
        } else {
            continue;
        };
        let rdev = meta.rdev();
        out.push(HostDevice {
            path,
            kind,
            major: libc::major(rdev) as i64,
            minor: libc::minor(rdev) as i64,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
}

/// How the mount that holds `path` propagates: its mount point, whether it is shared
/// (a peer group) and whether it receives from a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountPropagation {
    pub mount_point: String,
    pub shared: bool,
    pub slave: bool,
}

/// The propagation of the mount `path` is on, from this process's mountinfo: the
/// topmost mount whose mount point is the longest prefix of the path (with symlinks
/// resolved).
pub(super) fn propagation_of(path: &Path) -> std::io::Result<MountPropagation> {
    let real = std::fs::canonicalize(path)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(propagation_in(&mountinfo, &real.to_string_lossy()))
}

fn propagation_in(mountinfo: &str, path: &str) -> MountPropagation {
    let mut best = MountPropagation { mount_point: "/".into(), shared: false, slave: false };
    let mut best_len = 0;
    for line in mountinfo.lines() {
        let Some((head, _)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = head.split(' ').collect();
        let (Some(point), Some(optional)) = (fields.get(4), fields.get(6..)) else { continue };
        // Mount points escape spaces and the like as octal (`\040`).
        let point = crate::view::unescape(point);
        let under = path == point
            || point == "/"
            || path.strip_prefix(point.as_str()).is_some_and(|rest| rest.starts_with('/'));
        // A later line at the same point is mounted over the earlier one.
        if under && point.len() >= best_len {
            best_len = point.len();
            best = MountPropagation {
                shared: optional.iter().any(|f| f.starts_with("shared:")),
                slave: optional.iter().any(|f| f.starts_with("master:")),
                mount_point: point,
            };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_dir_holds_exactly_its_empty_directories() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cgroup-v1");
        shared_dir(&dir, 0o755, &["memory", "cpu,cpuacct"]).unwrap();
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(), ["cpu,cpuacct", "memory"]);
        // Again, with a hierarchy gone: its directory goes, the rest stays.
        shared_dir(&dir, 0o755, &["memory"]).unwrap();
        assert_eq!(names(), ["memory"]);
        let empty = t.path().join("empty");
        shared_dir(&empty, 0o555, &[]).unwrap();
        let mode = std::fs::metadata(&empty).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o555);
        // Anything in it that podbay did not make is refused, and left alone.
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(empty.join("f"), "x").unwrap();
        assert!(shared_dir(&empty, 0o555, &[]).is_err());
        std::fs::create_dir(dir.join("memory/sub")).unwrap();
        assert!(shared_dir(&dir, 0o755, &["memory"]).is_err());
        assert!(dir.join("memory/sub").exists());
        // A symlink in its place is no directory of podbay's.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        assert!(shared_dir(&link, 0o555, &[]).is_err());
    }

    #[test]
    fn the_topmost_longest_mount_decides() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:5 / /var/lib/kubelet rw shared:7 - tmpfs tmpfs rw
31 22 0:6 / /var/lib/kube rw master:3 - tmpfs tmpfs rw
32 30 0:7 / /var/lib/kubelet/pods/a\\040b rw - tmpfs tmpfs rw
33 30 0:8 / /var/lib/kubelet rw - tmpfs tmpfs rw
";
        let p = propagation_in(info, "/var/lib/kubelet/pods/a b/vol");
        assert_eq!(
            (p.mount_point.as_str(), p.shared, p.slave),
            ("/var/lib/kubelet/pods/a b", false, false)
        );
        let p = propagation_in(info, "/var/lib/kubelet/x");
        assert_eq!((p.mount_point.as_str(), p.shared), ("/var/lib/kubelet", false), "33 is on top");
        let p = propagation_in(info, "/var/lib/kube/x");
        assert_eq!((p.shared, p.slave), (false, true));
        let p = propagation_in(info, "/var/lib/kubeletx");
        assert_eq!((p.mount_point.as_str(), p.shared), ("/", true));
    }
}
