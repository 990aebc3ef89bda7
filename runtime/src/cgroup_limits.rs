//! A new container cgroup's v1 limits, written as libcgroups' v1 manager writes them
//! (the same files, values, order within a controller, and the devices controller's
//! rules followed by libcgroups' default rules), without building the manager: its
//! constructor looks up each of the 12 v1 controllers' mount point and the caller's own
//! cgroup through procfs, about 0.5 ms per CreateContainer (docs/architecture.md, "A new
//! container's limits are podbay's writes").
//!
//! Only for a cgroup just made (nothing in it, its limits the kernel's defaults) and for
//! what CRI requests carry: CPU shares, quota, period and burst, cpusets, memory limit,
//! swap, reservation and swappiness, pids, hugepage limits and device rules. Anything
//! else (block I/O, network classes and priorities, realtime CPU, CPU idle, kernel
//! memory) makes [`write_new`] write nothing and answer `false`, and the manager writes
//! it all as before.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources,
};

/// Writes the limits of the new cgroup `rel` (below each hierarchy of `v1_hierarchies`);
/// `false`, with nothing written, when `r` asks for more than this writes.
pub(crate) fn write_new(
    root: &Path,
    rel: &str,
    v1_hierarchies: &[String],
    r: &LinuxResources,
) -> Result<bool, String> {
    if !handled(r) {
        return Ok(false);
    }
    // The directory of the hierarchy holding `controller` (a hierarchy's name lists its
    // controllers: `cpu,cpuacct`), as libcgroups finds its mount point.
    let dir = |controller: &str| -> Option<PathBuf> {
        v1_hierarchies
            .iter()
            .find(|h| h.split(',').any(|c| c == controller))
            .map(|h| root.join(h).join(rel.trim_start_matches('/')))
    };
    let needed = needed_controllers(r);
    let mut dirs = Vec::with_capacity(needed.len());
    for controller in needed {
        // Not mounted: the manager reports it (libcgroups' CGroupRequired) as before.
        let Some(d) = dir(controller) else { return Ok(false) };
        dirs.push((controller, d));
    }
    for (controller, d) in dirs {
        match controller {
            "cpu" => cpu(&d, r.cpu().as_ref().expect("needed"))?,
            "cpuset" => cpuset(&d, r.cpu().as_ref().expect("needed"))?,
            "memory" => memory(&d, r)?,
            "pids" => {
                let limit = r.pids().as_ref().expect("needed").limit();
                let value = if limit > 0 { limit.to_string() } else { "max".into() };
                write(&d, "pids.max", &value)?;
            }
            "hugetlb" => hugetlb(&d, r)?,
            "devices" => devices(&d, r)?,
            _ => unreachable!("needed_controllers names no other"),
        }
    }
    Ok(true)
}

/// Whether `r` asks for nothing but what [`write_new`] writes.
fn handled(r: &LinuxResources) -> bool {
    let cpu_ok = r.cpu().as_ref().is_none_or(|c| {
        c.realtime_period().is_none() && c.realtime_runtime().is_none() && c.idle().is_none()
    });
    let memory_ok = r.memory().as_ref().is_none_or(|m| {
        m.kernel().is_none()
            && m.kernel_tcp().is_none()
            && m.disable_oom_killer().is_none()
            && m.use_hierarchy().is_none()
            && m.check_before_update().is_none()
    });
    cpu_ok && memory_ok && r.block_io().is_none() && r.network().is_none()
}

/// The controllers libcgroups' v1 manager writes for `r` (its `needs_to_handle`): the
/// devices controller always.
fn needed_controllers(r: &LinuxResources) -> Vec<&'static str> {
    let mut out = vec!["devices"];
    if let Some(c) = r.cpu() {
        if c.shares().is_some() || c.period().is_some() || c.quota().is_some() {
            out.push("cpu");
        }
        if c.cpus().is_some() || c.mems().is_some() {
            out.push("cpuset");
        }
    }
    if r.memory().is_some() {
        out.push("memory");
    }
    if r.pids().is_some() {
        out.push("pids");
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        out.push("hugetlb");
    }
    out
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    // As libcgroups writes them: an existing file, truncated.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
        .map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

fn cpu(dir: &Path, c: &LinuxCpu) -> Result<(), String> {
    for (file, value) in [
        ("cpu.shares", c.shares().filter(|v| *v != 0).map(|v| v.to_string())),
        ("cpu.cfs_period_us", c.period().filter(|v| *v != 0).map(|v| v.to_string())),
        ("cpu.cfs_quota_us", c.quota().filter(|v| *v != 0).map(|v| v.to_string())),
        ("cpu.cfs_burst_us", c.burst().map(|v| v.to_string())),
    ] {
        if let Some(value) = value {
            write(dir, file, &value)?;
        }
    }
    Ok(())
}

fn cpuset(dir: &Path, c: &LinuxCpu) -> Result<(), String> {
    if let Some(cpus) = c.cpus() {
        write(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = c.mems() {
        write(dir, "cpuset.mems", mems)?;
    }
    Ok(())
}

/// The limit and swap in libcgroups' order (swap first where the new swap is above the
/// current limit, as runc orders them), then the reservation, the OOM killer left on,
/// and the swappiness.
fn memory(dir: &Path, r: &LinuxResources) -> Result<(), String> {
    let m = r.memory().as_ref().expect("needed");
    let set_limit =
        |v: i64| if v == 0 { Ok(()) } else { write(dir, "memory.limit_in_bytes", &v.to_string()) };
    let set_swap = |v: i64| {
        if v == 0 { Ok(()) } else { write(dir, "memory.memsw.limit_in_bytes", &v.to_string()) }
    };
    let both = |limit: i64, swap: i64, swap_first: bool| -> Result<(), String> {
        if swap_first {
            set_swap(swap)?;
            set_limit(limit)?;
        }
        set_limit(limit)?;
        set_swap(swap)
    };
    match (m.limit(), m.swap()) {
        (Some(limit), swap) => {
            let current = current_limit(dir)?;
            match swap {
                Some(swap) => both(limit, swap, swap == -1 || current < swap)?,
                None if limit == -1 => both(-1, -1, true)?,
                None => both(limit, 0, current < 0)?,
            }
        }
        (None, Some(swap)) => both(0, swap, false)?,
        (None, None) => {}
    }
    if let Some(reservation) = m.reservation().filter(|v| *v != 0) {
        write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
    }
    write(dir, "memory.oom_control", "0")?;
    if let Some(swappiness) = m.swappiness() {
        if swappiness > 100 {
            return Err(format!("memory swappiness {swappiness} is above 100"));
        }
        write(dir, "memory.swappiness", &swappiness.to_string())?;
    }
    Ok(())
}

fn current_limit(dir: &Path) -> Result<i64, String> {
    let path = dir.join("memory.limit_in_bytes");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    match text.trim() {
        "max" => Ok(i64::MAX),
        t => t.parse().map_err(|e| format!("{}: {t:?}: {e}", path.display())),
    }
}

/// Each limit, its page size checked as libcgroups checks it (digits, a power of two),
/// and its reservation limit too where the kernel has one.
fn hugetlb(dir: &Path, r: &LinuxResources) -> Result<(), String> {
    for h in r.hugepage_limits().as_deref().unwrap_or_default() {
        let digits: String = h.page_size().chars().take_while(char::is_ascii_digit).collect();
        let size: u64 = digits.parse().map_err(|e| format!("hugepage size {digits:?}: {e}"))?;
        if !size.is_power_of_two() {
            return Err(format!("hugepage size {digits} is not a power of two"));
        }
        let limit = h.limit().to_string();
        write(dir, &format!("hugetlb.{}.limit_in_bytes", h.page_size()), &limit)?;
        let rsvd = format!("hugetlb.{}.rsvd.limit_in_bytes", h.page_size());
        if dir.join(&rsvd).exists() {
            write(dir, &rsvd, &limit)?;
        }
    }
    Ok(())
}

/// The spec's rules in order, then the rules libcgroups always adds: its default devices
/// (null, zero, full, tty, urandom, random) and `mknod` of any device, the console, the
/// ptys, `/dev/ptmx` and tun/tap.
fn devices(dir: &Path, r: &LinuxResources) -> Result<(), String> {
    let rule = |d: &LinuxDeviceCgroup| -> Result<(), String> {
        let file = if d.allow() { "devices.allow" } else { "devices.deny" };
        write(dir, file, &d.to_string())
    };
    for d in r.devices().as_deref().unwrap_or_default() {
        rule(d)?;
    }
    for d in default_rules() {
        rule(&d)?;
    }
    Ok(())
}

fn default_rules() -> Vec<LinuxDeviceCgroup> {
    let allow = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(true).typ(typ).access(access);
        if let Some(major) = major {
            b = b.major(major);
        }
        if let Some(minor) = minor {
            b = b.minor(minor);
        }
        b.build().expect("a complete rule")
    };
    use LinuxDeviceType::{B, C};
    vec![
        allow(C, Some(1), Some(3), "rwm"),
        allow(C, Some(1), Some(5), "rwm"),
        allow(C, Some(1), Some(7), "rwm"),
        allow(C, Some(5), Some(0), "rwm"),
        allow(C, Some(1), Some(9), "rwm"),
        allow(C, Some(1), Some(8), "rwm"),
        allow(C, None, None, "m"),
        allow(B, None, None, "m"),
        allow(C, Some(5), Some(1), "rwm"),
        allow(C, Some(136), None, "rwm"),
        allow(C, Some(5), Some(2), "rwm"),
        allow(C, Some(10), Some(200), "rwm"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    /// A fake v1 tree: each file the kernel would have, empty (memory's limit the
    /// kernel's default).
    fn tree(hierarchies: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for h in hierarchies {
            let d = root.path().join(h).join("pod/c");
            std::fs::create_dir_all(&d).unwrap();
            for f in [
                "cpu.shares",
                "cpu.cfs_period_us",
                "cpu.cfs_quota_us",
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.oom_control",
                "pids.max",
                "devices.allow",
                "devices.deny",
            ] {
                std::fs::write(d.join(f), "").unwrap();
            }
            std::fs::write(d.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        }
        root
    }

    fn read(root: &Path, h: &str, f: &str) -> String {
        std::fs::read_to_string(root.join(h).join("pod/c").join(f)).unwrap()
    }

    #[test]
    fn writes_what_libcgroups_writes_for_a_cri_container() {
        let hierarchies = ["cpu,cpuacct", "devices", "memory", "pids"];
        let root = tree(&hierarchies);
        let names: Vec<String> = hierarchies.iter().map(|s| s.to_string()).collect();
        let r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .memory(LinuxMemoryBuilder::default().limit(64 << 20).swap(64 << 20).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(0).build().unwrap())
            .build()
            .unwrap();
        assert!(write_new(root.path(), "/pod/c", &names, &r).unwrap());
        assert_eq!(read(root.path(), "cpu,cpuacct", "cpu.shares"), "512");
        assert_eq!(read(root.path(), "cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(root.path(), "memory", "memory.limit_in_bytes"), (64 << 20).to_string());
        assert_eq!(
            read(root.path(), "memory", "memory.memsw.limit_in_bytes"),
            (64 << 20).to_string()
        );
        assert_eq!(read(root.path(), "memory", "memory.oom_control"), "0");
        assert_eq!(read(root.path(), "pids", "pids.max"), "max");
        // Each write truncates: the file holds the last rule, libcgroups' last default.
        assert_eq!(read(root.path(), "devices", "devices.allow"), "c 10:200 rwm");
    }

    #[test]
    fn anything_else_is_the_managers() {
        let root = tree(&["cpu", "devices"]);
        let names = vec!["cpu".to_string(), "devices".to_string()];
        let realtime = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().realtime_runtime(1000i64).build().unwrap())
            .build()
            .unwrap();
        assert!(!write_new(root.path(), "/pod/c", &names, &realtime).unwrap());
        assert_eq!(read(root.path(), "devices", "devices.allow"), "", "something was written");
        // A needed controller without a hierarchy: the manager reports it.
        let memory = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(1 << 20).build().unwrap())
            .build()
            .unwrap();
        assert!(!write_new(root.path(), "/pod/c", &names, &memory).unwrap());
    }

    #[test]
    fn the_default_rules_are_libcgroups_own() {
        let rules: Vec<String> = default_rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 5:0 rwm",
                "c 1:9 rwm",
                "c 1:8 rwm",
                "c *:* m",
                "b *:* m",
                "c 5:1 rwm",
                "c 136:* rwm",
                "c 5:2 rwm",
                "c 10:200 rwm",
            ]
        );
    }
}
