//! Cgroups, v1 and v2, with the cgroupfs driver: what the node has, the pod's cgroup,
//! limits, the usage figures stats report, and removal. Container creation, stats and
//! removal all go through here.
//!
//! Reads and removals touch the cgroup files directly: a libcgroups manager re-reads
//! `/proc/self/mountinfo` once per controller, which made ListContainerStats take a
//! second with 100 containers. Limits (UpdateContainerResources) go through libcgroups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};

/// Where every hierarchy is mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup parent of pods that kubelet gives none.
pub const DEFAULT_PARENT: &str = "/podbay";

/// cgroup v1 controllers libcgroups places a container in (each a hierarchy's name).
pub(crate) const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpu,cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "net_cls",
    "net_prio",
    "net_cls,net_prio",
    "perf_event",
    "pids",
    "rdma",
    "misc",
];

#[derive(Debug, thiserror::Error)]
#[error("cgroup {cgroup}: {reason}")]
pub struct Error {
    pub cgroup: String,
    pub reason: String,
}

impl Error {
    fn new(cgroup: &str, reason: impl std::fmt::Display) -> Self {
        Error { cgroup: cgroup.to_owned(), reason: reason.to_string() }
    }
}

/// Held while pod cgroups are made and while podbay's default parent is removed: a
/// RemovePodSandbox dropping the parent once it is empty must not race a new pod's mkdir
/// below it (which would then fail with ENOENT).
static PARENT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The node's cgroup v1 hierarchies under /sys/fs/cgroup, by directory name, sorted (empty
/// on a cgroup v2 node).
pub fn v1_hierarchies() -> Vec<String> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        return Vec::new();
    }
    let mut h: Vec<String> = subdirs(Path::new(ROOT))
        .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    h.sort();
    h
}

/// Whether containers can get hugepage limits: on cgroup v2 the root lists the hugetlb
/// controller; on v1 a cgroup hierarchy is mounted with it (libcgroups looks for it in
/// the mount table the same way).
pub fn hugetlb_available(v2: bool) -> bool {
    if v2 {
        let controllers = std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"));
        return controllers.is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo.lines().any(|line| {
        // `… - <fstype> <source> <super options>`
        let Some((_, tail)) = line.split_once(" - ") else { return false };
        let mut f = tail.split_whitespace();
        f.next() == Some("cgroup") && f.nth(1).is_some_and(|o| o.split(',').any(|o| o == "hugetlb"))
    })
}

/// Starts a cgroup migration that moves nothing (a thread of its own into the cgroup it
/// is in), so that libcontainer's own migration a few milliseconds later does not wait
/// for the kernel.
///
/// Writing a pid to `cgroup.procs` or `tasks` takes the global `cgroup_threadgroup_rwsem`
/// for writing, which first waits for an RCU grace period (10–14 ms on these machines
/// after a quiet moment; 0.1–0.2 ms for a second write right after). libcontainer writes
/// the new container's pid once CreateContainer has mounted the rootfs, written the spec
/// and forked its processes; this write starts when CreateContainer does, so the grace
/// period passes while that work is done. The thread names itself by its thread id in
/// the cgroup it reads from `/proc/thread-self/cgroup` just before, so the write can only
/// ever move that thread, which then ends (never the daemon, which kubelet's
/// `--runtime-cgroups` may have moved meanwhile). At most one is in flight.
pub fn prime_migration(v1_hierarchies: &[String]) {
    static IN_FLIGHT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if IN_FLIGHT.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let hierarchy = v1_hierarchies.iter().find(|h| V1_CONTROLLERS.contains(&h.as_str())).cloned();
    std::thread::spawn(move || {
        if let Some(file) = own_thread_file(hierarchy.as_deref()) {
            let _ = std::fs::write(file, nix::unistd::gettid().to_string());
        }
        IN_FLIGHT.store(false, std::sync::atomic::Ordering::Release);
    });
}

/// The file that lists the calling thread in its own cgroup: `tasks` in the v1
/// `hierarchy`, or `cgroup.threads` in the unified one.
fn own_thread_file(hierarchy: Option<&str>) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/thread-self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let wanted = match hierarchy {
            Some(h) => controllers.split(',').eq(h.split(',')),
            None => controllers.is_empty(),
        };
        wanted.then(|| path.trim_start_matches('/').to_owned())
    })?;
    Some(match hierarchy {
        Some(h) => Path::new(ROOT).join(h).join(path).join("tasks"),
        None => Path::new(ROOT).join(path).join("cgroup.threads"),
    })
}

/// A pod's cgroup: kubelet's cgroup_parent, or podbay's default parent + the sandbox id.
pub fn pod_cgroup(cgroup_parent: Option<&str>, sandbox_id: &str) -> String {
    match cgroup_parent {
        Some(p) if !p.is_empty() => p.trim_end_matches('/').to_owned(),
        _ => format!("{DEFAULT_PARENT}/{sandbox_id}"),
    }
}

/// Makes a pod's cgroup in each hierarchy libcontainer will place its containers in,
/// before libcontainer makes the containers' below it.
pub fn ensure_pod(pod: &str, v1_hierarchies: &[String]) -> Result<(), Error> {
    let rel = pod.trim_start_matches('/');
    let root = Path::new(ROOT);
    let _parent = PARENT_LOCK.lock().expect("cgroup parent lock");
    for dir in placed_dirs(pod, v1_hierarchies) {
        // Tried again when something outside podbay dropped an empty parent meanwhile.
        let mut made = std::fs::create_dir_all(&dir);
        for _ in 0..2 {
            if !matches!(&made, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                break;
            }
            made = std::fs::create_dir_all(&dir);
        }
        made.map_err(|e| Error::new(pod, format!("create {}: {e}", dir.display())))?;
    }
    if v1_hierarchies.iter().any(|h| h == "cpuset") {
        clone_cpusets(&root.join("cpuset"), rel).map_err(|e| Error::new(pod, e))?;
    }
    Ok(())
}

/// A cgroup's directory in each hierarchy podbay places processes in: every v1 hierarchy
/// of [`V1_CONTROLLERS`], or the unified one on a cgroup v2 node.
fn placed_dirs(cgroup: &str, v1_hierarchies: &[String]) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    let root = Path::new(ROOT);
    if v1_hierarchies.is_empty() {
        return vec![root.join(rel)];
    }
    v1_hierarchies
        .iter()
        .filter(|h| V1_CONTROLLERS.contains(&h.as_str()))
        .map(|h| root.join(h).join(rel))
        .collect()
}

/// Puts the calling process, which must be single-threaded, in a new container's cgroup
/// with its limits, on a cgroup v1 node, so that whatever it clones from now on starts
/// there (what libcontainer's intermediate process does before it clones the container's
/// init).
///
/// The cgroup is made in each hierarchy, the limits written (as libcgroups writes them:
/// [`crate::cgroup_limits`], or libcgroups itself for what that does not write), and `0` (the
/// caller itself) written to each hierarchy's `tasks` file: the kernel moves the one
/// calling thread without taking the global `cgroup_threadgroup_rwsem`, whose write lock
/// first waits for an RCU grace period (10–15 ms here after a quiet moment). A pid
/// written to `cgroup.procs`, as libcgroups does, always takes it.
///
/// On cgroup v2 (no v1 hierarchies) a thread of a domain cgroup cannot move alone: the
/// cgroup is made with its limits and returned open, for the caller's child to be born
/// in it ([`V2Dir`]), and the caller stays where it is.
pub fn enter_new(
    cgroup: &str,
    v1_hierarchies: &[String],
    resources: Option<&oci_spec::runtime::LinuxResources>,
) -> Result<Option<V2Dir>, Error> {
    if v1_hierarchies.is_empty() {
        let path = make_v2(cgroup)?;
        if let Some(r) = resources {
            apply_with(&manager(cgroup)?, cgroup, r)?;
        }
        return V2Dir::open(cgroup, path).map(Some);
    }
    let dirs = placed_dirs(cgroup, v1_hierarchies);
    for dir in &dirs {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(cgroup, format!("create {}: {e}", dir.display())))?;
    }
    if let Some(r) = resources {
        let written = crate::cgroup_limits::write_new(Path::new(ROOT), cgroup, v1_hierarchies, r)
            .map_err(|e| Error::new(cgroup, e))?;
        if !written {
            apply_with(&manager(cgroup)?, cgroup, r)?;
        }
    }
    dirs.iter().try_for_each(|dir| join_self(cgroup, dir, false))?;
    Ok(None)
}

/// Puts the calling process, which must be single-threaded, in a running container's
/// cgroup, as [`enter_new`] does (`0` to each hierarchy's `tasks`, no grace period to
/// wait for), in each hierarchy where the cgroup exists (a container that libcontainer
/// made has none in the hierarchies libcgroups does not place in). On cgroup v2, the
/// cgroup opened for a child to be born in, as [`enter_new`] returns it.
pub fn enter_existing(cgroup: &str, v1_hierarchies: &[String]) -> Result<Option<V2Dir>, Error> {
    if v1_hierarchies.is_empty() {
        let path = Path::new(ROOT).join(cgroup.trim_start_matches('/'));
        return V2Dir::open(cgroup, path).map(Some);
    }
    placed_dirs(cgroup, v1_hierarchies).iter().try_for_each(|dir| join_self(cgroup, dir, true))?;
    Ok(None)
}

/// A container's cgroup v2 directory, open for a child to be born in it
/// (`clone3(CLONE_INTO_CGROUP)`, Linux 5.7): a process that starts in its cgroup never
/// migrates, so it never waits for the kernel's global `cgroup_threadgroup_rwsem` (an
/// RCU grace period, 10–15 ms here after a quiet moment).
pub struct V2Dir {
    cgroup: String,
    path: PathBuf,
    pub fd: std::os::fd::OwnedFd,
}

impl V2Dir {
    pub(crate) fn open(cgroup: &str, path: PathBuf) -> Result<V2Dir, Error> {
        let dir = std::fs::File::open(&path)
            .map_err(|e| Error::new(cgroup, format!("open {}: {e}", path.display())))?;
        Ok(V2Dir { cgroup: cgroup.to_owned(), path, fd: dir.into() })
    }

    /// Moves the calling process in by its pid, as libcgroups does (waiting for the
    /// global lock): for a kernel, or a seccomp filter around podbay, without
    /// `CLONE_INTO_CGROUP`.
    pub fn move_self(&self) -> Result<(), Error> {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| Error::new(&self.cgroup, format!("write {}: {e}", procs.display())))
    }
}

/// Whether this process may call `clone3` at all, which a [`V2Dir`] wants: the kernel has
/// it (Linux 5.3) and no seccomp filter around podbay refuses it. A call without
/// arguments is refused with EINVAL by the kernel; anything else (ENOSYS, EPERM) is a
/// kernel without it or a filter.
pub fn clone3_callable() -> bool {
    // SAFETY: with a size of 0 the kernel refuses the call before it reads the (null)
    // argument pointer; nothing is cloned.
    let r = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
    r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINVAL
}

/// The controllers libcgroups writes limits for on cgroup v2, which [`make_v2`] enables.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];

/// Makes a container's cgroup on a cgroup v2 node as libcgroups' v2 manager does before it
/// moves a process in: each directory from the root down, with every controller the root
/// offers (of those libcgroups knows) enabled in the root's and each parent's
/// `cgroup.subtree_control`, best effort as there (a limit whose controller could not be
/// enabled fails when it is written). A `.` or `..` in the path is refused.
fn make_v2(cgroup: &str) -> Result<PathBuf, Error> {
    let root = Path::new(ROOT);
    let offered = std::fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| Error::new(cgroup, format!("read {ROOT}/cgroup.controllers: {e}")))?;
    let enable: Vec<String> = offered
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    let enable_in = |dir: &Path| {
        for controller in &enable {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), controller);
        }
    };
    let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(Error::new(cgroup, "not a cgroup path below the root"));
    }
    enable_in(root);
    let mut dir = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::new(cgroup, format!("create {}: {e}", dir.display())));
            }
            _ => {}
        }
        if i + 1 < parts.len() {
            enable_in(&dir);
        }
    }
    Ok(dir)
}

/// Writes `0` to a v1 cgroup dir's `tasks`: the calling thread moves there. With
/// `if_exists`, a dir that does not exist is passed over.
fn join_self(cgroup: &str, dir: &Path, if_exists: bool) -> Result<(), Error> {
    let tasks = dir.join("tasks");
    match std::fs::write(&tasks, "0") {
        Err(e) if if_exists && e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => Ok(()),
        r => r.map_err(|e| Error::new(cgroup, format!("write {}: {e}", tasks.display()))),
    }
}

/// Has the kernel give each new child of the pod's v1 cpuset cgroup its parent's CPUs and
/// memory nodes as it is made (`cgroup.clone_children`), the pod's own filled in first
/// from the nearest parent that has them.
///
/// A v1 cpuset with no CPUs cannot take a process, so libcgroups copies the parent's into
/// every new container cgroup, and each write of `cpuset.cpus` makes the kernel rebuild
/// its scheduling domains: a walk of every cpuset and of every task in them, which grows
/// with the pods on the node. With `clone_children` a container's cgroup is born filled
/// and libcgroups writes nothing; the pod's cgroup is written once, for its first
/// container.
///
/// A cpuset that gets its CPUs here has its `cpuset.sched_load_balance` cleared first,
/// while it has none (so clearing it rebuilds nothing), where the root's is set (the
/// kernel's default): the scheduler then balances over all CPUs whatever any other
/// cpuset's flag says, and neither the write of its CPUs nor its removal (the kernel
/// clears the flag of a cpuset that goes, with a rebuild when it was set) rebuilds the
/// domains, a walk made under the cgroup mutex that every pod's mkdirs wait for.
fn clone_cpusets(hierarchy: &Path, rel: &str) -> Result<(), String> {
    let pod = hierarchy.join(rel);
    let flag = pod.join("cgroup.clone_children");
    if std::fs::read_to_string(&flag).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    let balanced =
        read_trimmed(&hierarchy.join("cpuset.sched_load_balance")).is_ok_and(|v| v == "1");
    let mut dir = hierarchy.to_path_buf();
    let mut cpus = read_trimmed(&dir.join("cpuset.cpus"))?;
    let mut mems = read_trimmed(&dir.join("cpuset.mems"))?;
    for part in Path::new(rel).components() {
        dir.push(part);
        let own_cpus = read_trimmed(&dir.join("cpuset.cpus"))?;
        if own_cpus.is_empty() && balanced {
            write_file(&dir.join("cpuset.sched_load_balance"), "0")?;
        }
        for (file, own, inherited) in
            [("cpuset.cpus", Some(own_cpus), &mut cpus), ("cpuset.mems", None, &mut mems)]
        {
            let own = match own {
                Some(own) => own,
                None => read_trimmed(&dir.join(file))?,
            };
            if own.is_empty() {
                write_file(&dir.join(file), inherited)?;
            } else {
                *inherited = own;
            }
        }
    }
    write_file(&flag, "1")
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {}: {e}", path.display()))
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_owned())
        .map_err(|e| format!("read {}: {e}", path.display()))
}

/// A cgroup's directory in every hierarchy mounted under `/sys/fs/cgroup` (each v1
/// hierarchy, or the unified one), whether it exists or not.
pub fn dirs(cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    let root = Path::new(ROOT);
    subdirs(root).chain([root.to_path_buf()]).map(|h| h.join(rel)).collect()
}

fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
}

/// Removes a cgroup in every hierarchy; gone counts as done. Processes still in it (PID
/// mode POD or NODE can leave a container's other processes behind when its init dies)
/// are killed first.
pub fn remove(cgroup: &str) -> Result<(), Error> {
    for dir in dirs(cgroup) {
        let mut tries = 0;
        loop {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                    tries += 1;
                    kill_procs(&dir);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(Error::new(cgroup, format!("remove {}: {e}", dir.display()))),
            }
        }
    }
    Ok(())
}

/// Removes a cgroup and every cgroup below it, deepest first, in every hierarchy (for
/// cleaning up after a whole node, such as a lab node, is gone).
pub fn remove_tree(cgroup: &str) -> Result<(), Error> {
    fn children(rel: &str, out: &mut Vec<String>) {
        let mut seen = std::collections::BTreeSet::new();
        for dir in dirs(rel) {
            for child in subdirs(&dir) {
                let name = child.file_name().unwrap_or_default().to_string_lossy().into_owned();
                seen.insert(format!("{rel}/{name}"));
            }
        }
        for child in seen {
            children(&child, out);
            out.push(child);
        }
    }
    let rel = cgroup.trim_matches('/').to_owned();
    let mut all = Vec::new();
    children(&rel, &mut all);
    all.push(rel);
    all.iter().try_for_each(|c| remove(c))
}

/// Removes the cgroups directly below `cgroup` whose names `ours` accepts (the container
/// cgroups podbay made under a parent that is kubelet's), with what is below them.
pub fn remove_children(cgroup: &str, ours: impl Fn(&str) -> bool) -> Result<(), Error> {
    let mut names = std::collections::BTreeSet::new();
    for dir in dirs(cgroup) {
        for child in subdirs(&dir) {
            let name = child.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if ours(&name) {
                names.insert(name);
            }
        }
    }
    let rel = cgroup.trim_end_matches('/');
    names.iter().try_for_each(|n| remove_tree(&format!("{rel}/{n}")))
}

/// Removes podbay's default parent where no pod uses it any more (rmdir of a cgroup with
/// children fails at once, so a parent in use stays).
pub fn remove_default_parent() {
    let _parent = PARENT_LOCK.lock().expect("cgroup parent lock");
    for dir in dirs(DEFAULT_PARENT) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Kills every process of a cgroup, in every hierarchy, until none is left (a process
/// forking meanwhile is caught on the next round); waits up to about a second. Returns
/// whether it is empty. `cgroup.kill` where the kernel has it (cgroup v2).
pub fn kill_all(cgroup: &str) -> bool {
    for _ in 0..100 {
        let mut busy = false;
        for dir in dirs(cgroup) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                continue;
            }
            busy = true;
            if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
                kill_procs(&dir);
            }
        }
        if !busy {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// SIGKILL to every process of a cgroup directory.
fn kill_procs(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// Applies new limits to an existing cgroup.
pub fn apply(cgroup: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<(), Error> {
    apply_with(&manager(cgroup)?, cgroup, resources)
}

/// libcgroups' manager of a cgroup (cgroupfs driver).
fn manager(cgroup: &str) -> Result<libcgroups::common::AnyCgroupManager, Error> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| Error::new(cgroup, e))
}

fn apply_with(
    manager: &libcgroups::common::AnyCgroupManager,
    cgroup: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<(), Error> {
    manager
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| Error::new(cgroup, e))
}

/// CPU and memory of a cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: u64,
    pub memory_usage: u64,
    /// Usage minus inactive file cache (what kubelet evicts on).
    pub working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss: u64,
    /// Tasks in the cgroup (`pids.current`).
    pub processes: u64,
}

/// CPU and memory of a cgroup; zeros when it is gone.
pub fn usage(cgroup: &str) -> Usage {
    let cg = cgroup.trim_start_matches('/');
    let root = Path::new(ROOT);
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let number = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let stat = |text: Option<String>, key: &str| {
        text.and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        })
    };
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(cg);
        let memory_usage = number(read(dir.join("memory.current"))).unwrap_or(0);
        let memory_stat = read(dir.join("memory.stat"));
        let inactive = stat(memory_stat.clone(), "inactive_file").unwrap_or(0);
        return Usage {
            cpu_ns: stat(read(dir.join("cpu.stat")), "usage_usec").unwrap_or(0) * 1000,
            memory_usage,
            working_set: memory_usage.saturating_sub(inactive),
            rss: stat(memory_stat, "anon").unwrap_or(0),
            processes: number(read(dir.join("pids.current"))).unwrap_or(0),
        };
    }
    let cpu_ns = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| number(read(root.join(h).join(cg).join("cpuacct.usage"))))
        .unwrap_or(0);
    let memory = root.join("memory").join(cg);
    let memory_usage = number(read(memory.join("memory.usage_in_bytes"))).unwrap_or(0);
    let memory_stat = read(memory.join("memory.stat"));
    let inactive = stat(memory_stat.clone(), "total_inactive_file").unwrap_or(0);
    Usage {
        cpu_ns,
        memory_usage,
        working_set: memory_usage.saturating_sub(inactive),
        rss: stat(memory_stat, "total_rss").unwrap_or(0),
        processes: number(read(root.join("pids").join(cg).join("pids.current"))).unwrap_or(0),
    }
}

/// How many times the kernel's OOM killer killed a process of the cgroup.
pub fn oom_kills(cgroup: &str) -> u64 {
    let cg = cgroup.trim_start_matches('/');
    let candidates = [
        Path::new(ROOT).join("memory").join(cg).join("memory.oom_control"),
        Path::new(ROOT).join(cg).join("memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_cpuset_is_filled_from_the_nearest_parent_and_clones_its_children() {
        let h = tempfile::tempdir().unwrap();
        let write = |rel: &str, cpus: &str, mems: &str| {
            let dir = h.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cpuset.cpus"), cpus).unwrap();
            std::fs::write(dir.join("cpuset.mems"), mems).unwrap();
            std::fs::write(dir.join("cgroup.clone_children"), "0\n").unwrap();
        };
        write("", "0-3\n", "0\n");
        write("kubepods", "2-3\n", "\n");
        write("kubepods/pod1", "\n", "\n");
        for rel in ["", "kubepods", "kubepods/pod1"] {
            std::fs::write(h.path().join(rel).join("cpuset.sched_load_balance"), "1\n").unwrap();
        }
        clone_cpusets(h.path(), "kubepods/pod1").unwrap();
        let read = |rel: &str, file: &str| read_trimmed(&h.path().join(rel).join(file)).unwrap();
        assert_eq!(read("kubepods/pod1", "cpuset.cpus"), "2-3");
        assert_eq!(read("kubepods/pod1", "cpuset.mems"), "0");
        assert_eq!(read("kubepods", "cpuset.mems"), "0");
        assert_eq!(read("kubepods/pod1", "cgroup.clone_children"), "1");
        // Balancing cleared where CPUs were written, left where they were there already.
        assert_eq!(read("kubepods/pod1", "cpuset.sched_load_balance"), "0");
        assert_eq!(read("kubepods", "cpuset.sched_load_balance"), "1");
        assert_eq!(read("", "cpuset.sched_load_balance"), "1");
        // Set once: a pod whose flag is on is left alone.
        std::fs::write(h.path().join("kubepods/pod1/cpuset.cpus"), "3").unwrap();
        clone_cpusets(h.path(), "kubepods/pod1").unwrap();
        assert_eq!(read("kubepods/pod1", "cpuset.cpus"), "3");
        // Where the root does not balance (cpusets partition the CPUs), no flag changes.
        let h2 = tempfile::tempdir().unwrap();
        for (rel, cpus) in [("", "0-1\n"), ("pod2", "\n")] {
            let dir = h2.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            for (file, value) in [("cpuset.cpus", cpus), ("cpuset.mems", "0\n")] {
                std::fs::write(dir.join(file), value).unwrap();
            }
            std::fs::write(dir.join("cpuset.sched_load_balance"), "0\n").unwrap();
        }
        std::fs::write(h2.path().join("pod2/cpuset.sched_load_balance"), "1\n").unwrap();
        clone_cpusets(h2.path(), "pod2").unwrap();
        let balance = read_trimmed(&h2.path().join("pod2/cpuset.sched_load_balance")).unwrap();
        assert_eq!(balance, "1");
        // A hierarchy without the files is an error naming the file.
        let err = clone_cpusets(h.path(), "missing").unwrap_err();
        assert!(err.contains("missing/cpuset.cpus"), "{err}");
    }

    #[test]
    fn the_primed_migration_writes_where_this_thread_is() {
        let v1 = v1_hierarchies();
        let hierarchy = v1.iter().find(|h| V1_CONTROLLERS.contains(&h.as_str()));
        let Some(file) = own_thread_file(hierarchy.map(String::as_str)) else { return };
        let listed = std::fs::read_to_string(&file).unwrap();
        let me = nix::unistd::gettid().to_string();
        assert!(listed.lines().any(|p| p == me), "{} does not list {me}", file.display());
    }

    #[test]
    fn pod_cgroup_uses_the_parent_or_the_default() {
        assert_eq!(pod_cgroup(None, "abc"), "/podbay/abc");
        assert_eq!(pod_cgroup(Some(""), "abc"), "/podbay/abc");
        assert_eq!(
            pod_cgroup(Some("/kubepods/burstable/pod1/"), "abc"),
            "/kubepods/burstable/pod1"
        );
    }
}
