//! What podbay finds out about the node once, at start, for the containers' specs:
//! its capabilities, its oom_score_adj, the cgroup hierarchies and the host's devices.

use std::path::Path;

use super::spec::{ALL_CAPABILITIES, HostDevice, NodeFacts};
use crate::cgroups;

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
    NodeFacts { capabilities, own_oom_score_adj, cgroup_v1_hierarchies, host_devices, hugetlb }
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
