//! podbay's own mounts of a container's spec into its rootfs, made in the init right
//! before libcontainer's init process runs, which then finds them done.
//!
//! Why (docs/architecture.md, "The init's mounts are podbay's"): libcontainer resolves
//! each mount's destination through pathrs, which re-checks its procfs handle on every
//! step: about 80 system calls per mount, 1,300 of the init's 1,700 for a pod's 17
//! standard mounts (8 of them the cgroup v1 binds). Here each destination is one
//! `openat2` below the rootfs with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS` (a missing
//! one is made a component at a time below an already open directory, never through a
//! symlink), and the mount itself is made as libcontainer makes it: the same options
//! parsed by libcontainer's own `parse_mount`, the same new-mount-API calls through its
//! `Syscall`, attached with `move_mount` onto the resolved descriptor.
//!
//! A destination is followed through the image's symlinks inside the rootfs
//! (`RESOLVE_IN_ROOT`, as pathrs follows them) where it has any; a file's that leads
//! nowhere yet gets its target made inside the rootfs, as runc does (libcontainer refuses
//! it), and a directory's missing components are made where it leads.
//!
//! Each mount gets the propagation its options name (`rprivate`, `rslave`, `rshared`…),
//! set on the detached tree before it is attached ([`propagation`]); libcontainer's own
//! mounts ignore those options.
//!
//! Whatever is not plainly that goes to libcontainer as before, from that mount on (so
//! the order of the mounts is kept): a destination of another type than its mount's, one
//! under `/proc` other than procfs itself (or that a symlink leads into `/proc` or
//! `/sys`), `..` in a destination, a mount label, and any mount that fails here (nothing
//! of it is attached; libcontainer retries it and reports its own error). A cgroup mount
//! (v2 nodes) goes to libcontainer alone, after the others, where no later mount
//! overlaps it ([`may_come_last`]). Nothing is done at all for a mount namespace given
//! by path, or for a root with shared propagation whose rootfs is not a mount of its own.
//!
//! The namespaces are entered here as libcontainer's init enters them (the mounts of
//! sysfs, mqueue and procfs belong to the namespaces of the process that makes them),
//! and libcontainer is handed the spec with the remaining mounts and with the namespaces
//! this process made named by `/proc/self/ns` paths, so it joins them again (a no-op)
//! instead of making new ones.

use std::error::Error;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use libcontainer::namespaces::Namespaces;
use libcontainer::rootfs::utils::{is_bind, parse_mount};
use libcontainer::syscall::Syscall;
use libcontainer::syscall::linux::{
    AT_EMPTY_PATH, AT_RECURSIVE, FSCONFIG_CMD_CREATE, FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING,
    MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MOUNT_ATTR_STRICTATIME,
    MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, MountAttr,
};
use libcontainer::syscall::syscall::create_syscall;
use nix::mount::MsFlags;
use oci_spec::runtime::{Capability, LinuxNamespaceType, Mount, Spec};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::container::spec::MASKED_DIR_SOURCE;

/// Enters the spec's namespaces (as libcontainer's init would), makes the root's mounts
/// slaves (or private) and makes what it can of the spec's mounts. Returns the spec for
/// libcontainer's init: the mounts left to it and the made namespaces by path. `None`
/// (nothing done) when the spec is not one this does ([`premount`]'s module doc).
pub(super) fn premount(spec: &Spec, rootfs: &Path) -> Result<Option<Spec>, Box<dyn Error>> {
    let Some(linux) = spec.linux() else { return Ok(None) };
    let propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("slave" | "unbindable") => MsFlags::MS_SLAVE,
        Some("private") => MsFlags::MS_PRIVATE,
        // A shared root (a container with a Bidirectional mount) is done as libcontainer
        // does it: the rootfs's own mount is made private below, which needs the rootfs
        // to be a mount of its own (podbay's overlay always is).
        Some("shared") if is_mount_root(rootfs) => MsFlags::MS_SHARED,
        _ => return Ok(None),
    };
    let declared = linux.namespaces().clone().unwrap_or_default();
    let own_mount_ns =
        declared.iter().any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none());
    if !own_mount_ns || linux.mount_label().is_some() {
        return Ok(None);
    }
    let entered = |t: LinuxNamespaceType| {
        !matches!(t, LinuxNamespaceType::User | LinuxNamespaceType::Pid | LinuxNamespaceType::Time)
    };
    let namespaces = Namespaces::try_from(Some(&declared))?;
    namespaces.apply_namespaces(|flag| {
        let flag = flag.bits();
        flag != libc::CLONE_NEWUSER && flag != libc::CLONE_NEWPID && flag != libc::CLONE_NEWTIME
    })?;
    if declared.iter().any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none()) {
        // libcontainer names a new UTS namespace only when it makes it.
        if let Some(name) = spec.hostname() {
            nix::unistd::sethostname(name)?;
        }
        if let Some(name) = spec.domainname() {
            set_domainname(name)?;
        }
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | propagation,
        None::<&str>,
    )?;
    if propagation == MsFlags::MS_SHARED {
        // The rootfs's mount leaves the peer group it now shares with the namespace the
        // container's was copied from, so that what is mounted into the rootfs stays in
        // the container; only a mount whose own propagation is shared (a Bidirectional
        // volume) still propagates.
        nix::mount::mount(None::<&str>, rootfs, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)?;
    }
    let syscall = create_syscall();

    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    // The mounts libcontainer makes, in their order: a cgroup v2 mount that nothing later
    // overlaps ([`may_come_last`]), then everything from the first other mount not made
    // here on.
    let mut left = Vec::new();
    let mut stopped = false;
    for (k, m) in mounts.iter().enumerate() {
        if mount_one(syscall.as_ref(), &root, m) {
            continue;
        }
        if may_come_last(m, &mounts[k + 1..]) {
            left.push(m.clone());
            continue;
        }
        left.extend_from_slice(&mounts[k..]);
        stopped = true;
        break;
    }

    let mut narrowed = spec.clone();
    let mut linux = linux.clone();
    // The masks come after the mounts: here, once every mount is made but a cgroup mount
    // left to come last, on each masked directory clear of it.
    if !stopped && let Some(source) = masked_dir_source(spec) {
        let masked = linux.masked_paths().clone().unwrap_or_default();
        let clear = |p: &str| left.iter().all(|m| !overlaps(Path::new(p), m.destination()));
        let unmasked: Vec<String> = masked
            .into_iter()
            .filter(|p| {
                !(clear(p) && mask_directory(syscall.as_ref(), &root, source, Path::new(p)))
            })
            .collect();
        linux.set_masked_paths(Some(unmasked));
    }
    narrowed.set_mounts(Some(left));
    let pinned = declared
        .into_iter()
        .map(|mut n| {
            if n.path().is_none() && entered(n.typ()) {
                n.set_path(Some(PathBuf::from(format!("/proc/self/ns/{}", ns_file(n.typ())))));
            }
            n
        })
        .collect();
    linux.set_namespaces(Some(pinned));
    narrowed.set_linux(Some(linux));
    Ok(Some(narrowed))
}

/// Whether `path` is the root of a mount.
fn is_mount_root(path: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS).is_ok_and(|st| {
        st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    })
}

/// The node's empty directory the daemon names for masked directories
/// ([`MASKED_DIR_SOURCE`]), for a container that cannot make a mount writable again (no
/// CAP_SYS_ADMIN in its bounding set; the daemon checks that too).
fn masked_dir_source(spec: &Spec) -> Option<&str> {
    let source = spec.annotations().as_ref()?.get(MASKED_DIR_SOURCE)?;
    let caps = spec.process().as_ref()?.capabilities().as_ref()?;
    let bounding = caps.bounding().as_ref()?;
    (source.starts_with('/') && !bounding.contains(&Capability::SysAdmin)).then_some(source)
}

/// Masks a directory of the container (`/proc/acpi`, `/sys/firmware`) with a read-only
/// bind of the node's empty directory, where libcontainer mounts a read-only tmpfs on
/// each: a superblock of its own per masked directory and container, which the kernel
/// walks whenever a memory cgroup goes (docs/architecture.md, "A container's
/// superblocks"). False (nothing attached) when the path is not plainly a directory
/// below the rootfs (no symlink on the way) or anything fails: libcontainer masks it.
fn mask_directory(syscall: &dyn Syscall, root: &OwnedFd, source: &str, masked: &Path) -> bool {
    let Some(dest) = plain_relative(masked) else { return false };
    let Ok(target) = open_path(root, &dest, OFlags::DIRECTORY) else { return false };
    let flags = libc::OPEN_TREE_CLOEXEC | libc::OPEN_TREE_CLONE;
    let Ok(tree) = syscall.open_tree(libc::AT_FDCWD, Some(source), flags) else { return false };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: MsFlags::MS_PRIVATE.bits(),
        userns_fd: 0,
    };
    let is_dir =
        rustix::fs::fstat(&tree).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    is_dir && attach(syscall, &tree, &target, &[(AT_EMPTY_PATH, attr)])
}

/// The name of a namespace's file in `/proc/<pid>/ns`.
fn ns_file(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: setdomainname reads `name.len()` bytes from the pointer, which lives across
    // the call.
    nix::errno::Errno::result(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) })
        .map(drop)
}

/// Makes one mount as libcontainer's `mount_into_container` makes it, with its
/// destination resolved here; false (nothing attached) when it is left to libcontainer.
fn mount_one(syscall: &dyn Syscall, root: &OwnedFd, m: &Mount) -> bool {
    let Some(dest) = plain_relative(m.destination()) else { return false };
    let typ = m.typ().as_deref();
    if typ == Some("cgroup") {
        return false;
    }
    if dest.starts_with("proc") && !(typ == Some("proc") && dest == Path::new("proc")) {
        return false;
    }
    let Ok(options) = parse_mount(m) else { return false };
    // libcontainer's nix is another version than podbay's: the flags go over as bits.
    let mut flags = MsFlags::from_bits_retain(options.flags.bits());
    if m.destination() == Path::new("/dev") {
        flags &= !MsFlags::MS_RDONLY;
    }
    let attr = flags_to_attr(flags);
    let made = if is_bind(m) {
        if !options.data.is_empty() {
            return false;
        }
        let recursive = m.options().as_deref().unwrap_or_default().iter().any(|o| o == "rbind");
        bind(syscall, root, m, &dest, recursive)
    } else {
        new_fs(syscall, root, m, &dest, &options.data)
    };
    let Some((tree, target)) = made else { return false };
    let mut changes = vec![(AT_EMPTY_PATH, attr)];
    if let Some(rec) = options.rec_attr {
        changes.push((AT_EMPTY_PATH | AT_RECURSIVE, rec));
    }
    if let Some((kind, recursive)) = propagation(m) {
        let at = if recursive { AT_EMPTY_PATH | AT_RECURSIVE } else { AT_EMPTY_PATH };
        changes.push((
            at,
            MountAttr { attr_set: 0, attr_clr: 0, propagation: kind.bits(), userns_fd: 0 },
        ));
    }
    attach(syscall, &tree, &target, &changes)
}

/// Sets each attribute change (`mount_setattr` flags, attributes) on the detached tree, in
/// order, then attaches it onto `target`; false when a step fails (nothing attached).
fn attach(
    syscall: &dyn Syscall,
    tree: &OwnedFd,
    target: &OwnedFd,
    changes: &[(u32, MountAttr)],
) -> bool {
    let size = std::mem::size_of::<MountAttr>();
    changes.iter().all(|(at, attr)| {
        syscall.mount_setattr(tree.as_fd(), Path::new(""), *at, attr, size).is_ok()
    }) && syscall
        .move_mount(
            tree.as_fd(),
            None,
            target.as_fd(),
            None,
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
        .is_ok()
}

/// The bind's source as a detached tree and its destination (a directory or a file, as
/// the source is).
fn bind(
    syscall: &dyn Syscall,
    root: &OwnedFd,
    m: &Mount,
    dest: &Path,
    recursive: bool,
) -> Option<(OwnedFd, OwnedFd)> {
    let source = m.source().as_ref()?.to_str()?;
    let mut flags = libc::OPEN_TREE_CLOEXEC | libc::OPEN_TREE_CLONE | AT_EMPTY_PATH;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    let tree = syscall.open_tree(libc::AT_FDCWD, Some(source), flags).ok()?;
    let is_dir = rustix::fs::fstat(&tree).ok()?.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let target = if is_dir { directory(root, dest)? } else { file(root, dest)? };
    Some((tree, target))
}

/// A new filesystem of the mount's type with its data options, and its directory.
fn new_fs(
    syscall: &dyn Syscall,
    root: &OwnedFd,
    m: &Mount,
    dest: &Path,
    data: &[String],
) -> Option<(OwnedFd, OwnedFd)> {
    let source = m.source().as_ref()?.to_str()?;
    let target = directory(root, dest)?;
    let fs = syscall.fsopen(m.typ().as_deref(), 0).ok()?;
    let set = |cmd: u64, key: Option<&str>, value: Option<&str>| {
        syscall.fsconfig(fs.as_fd(), cmd as u32, key, value, 0).ok()
    };
    set(FSCONFIG_SET_STRING, Some("source"), Some(source))?;
    for option in data.iter().filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some((key, value)) => set(FSCONFIG_SET_STRING, Some(key), Some(value))?,
            None => set(FSCONFIG_SET_FLAG, Some(option), None)?,
        }
    }
    set(FSCONFIG_CMD_CREATE, None, None)?;
    let tree = syscall.fsmount(fs.as_fd(), 0, None).ok()?;
    Some((tree, target))
}

/// Whether a mount not made here may be made by libcontainer after the later ones:
/// a cgroup mount (cgroup v2 nodes; libcontainer's own) whose destination no later mount
/// covers, lies under, or is, by their plain names. A later mount that gets this far
/// never leads into `/sys` through a symlink (those are libcontainer's, and stop here),
/// so the order of what overlaps is kept. Before, the cgroup v2 mount left every mount
/// after it to libcontainer, which ignores their propagation.
fn may_come_last(m: &Mount, later: &[Mount]) -> bool {
    m.typ().as_deref() == Some("cgroup")
        && plain_relative(m.destination()).is_some()
        && later.iter().all(|l| !overlaps(m.destination(), l.destination()))
}

/// Whether one destination is the other or lies below it, by plain names; true where
/// either is not plain (`..`), which cannot be told without the rootfs.
fn overlaps(a: &Path, b: &Path) -> bool {
    match (plain_relative(a), plain_relative(b)) {
        (Some(a), Some(b)) => a.starts_with(&b) || b.starts_with(&a),
        _ => true,
    }
}

/// The destination relative to the rootfs, when it is absolute and has nothing but
/// plain names (no `..`; `Path` drops a `.` inside a path).
fn plain_relative(dest: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut components = dest.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    for c in components {
        match c {
            Component::Normal(name) => out.push(name),
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Resolution below the rootfs: inside it, and through no symlink at all.
fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn open_path(dir: &OwnedFd, path: &Path, extra: OFlags) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW | extra;
    rustix::fs::openat2(dir, path, flags, Mode::empty(), in_root())
}

/// The directory at `dest`, made as by [`plain_directory`]; through the image's symlinks
/// followed inside the rootfs where `dest` has any (an image's `/var/run` leading to
/// `/run`, where kubelet mounts the service account's token), as pathrs follows them for
/// libcontainer. `None` when it leads into `/proc` or `/sys` (the daemon refuses such a
/// destination before; libcontainer checks it again) or is not a directory.
fn directory(root: &OwnedFd, dest: &Path) -> Option<OwnedFd> {
    if let Some(fd) = plain_directory(root, dest) {
        return Some(fd);
    }
    let led = leads_to(root, dest)?;
    if led == dest || led.starts_with("proc") || led.starts_with("sys") {
        return None;
    }
    plain_directory(root, &led)
}

/// The directory at `dest`, made (0755, as libcontainer makes them) a component at a time
/// where missing; `None` when a component is a symlink or not a directory.
fn plain_directory(root: &OwnedFd, dest: &Path) -> Option<OwnedFd> {
    match open_path(root, dest, OFlags::DIRECTORY) {
        Ok(fd) => return Some(fd),
        Err(Errno::NOENT) => {}
        Err(_) => return None,
    }
    let mut dir = rustix::io::dup(root).ok()?;
    for name in dest.iter() {
        let name = Path::new(name);
        dir = match open_path(&dir, name, OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(_) => return None,
                }
                open_path(&dir, name, OFlags::DIRECTORY).ok()?
            }
            Err(_) => return None,
        };
    }
    Some(dir)
}

/// The file at `dest` (anything but a directory), through symlinks followed inside the
/// rootfs as pathrs follows them (`RESOLVE_IN_ROOT`). Where nothing is there yet, an
/// empty file (0644) is made where `dest` leads: at `dest`, or, for a symlink that leads
/// nowhere yet (an image's `/etc/resolv.conf` pointing into `/run`), at its target inside
/// the rootfs, as runc makes it (libcontainer refuses those); missing directories are
/// made as by [`directory`].
fn file(root: &OwnedFd, dest: &Path) -> Option<OwnedFd> {
    let follow = |path: &Path| {
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        rustix::fs::openat2(root, path, flags, Mode::empty(), how)
    };
    let fd = match follow(dest) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            let at = leads_to(root, dest)?;
            let parent = match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => directory(root, p)?,
                _ => rustix::io::dup(root).ok()?,
            };
            let create = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&parent, at.file_name()?, create, Mode::from_raw_mode(0o644))
                .ok()?;
            follow(dest).ok()?
        }
        Err(_) => return None,
    };
    let kind = rustix::fs::fstat(&fd).ok()?.st_mode & libc::S_IFMT;
    (kind != libc::S_IFDIR).then_some(fd)
}

/// Where `dest` (relative) leads inside the rootfs: each symlink replaced by its text as
/// `RESOLVE_IN_ROOT` reads it (an absolute target starts again at the root, `..` stops
/// there), also through components that do not exist yet, which are taken as they are.
/// `None` past 40 symlinks, or where a component is not a directory.
fn leads_to(root: &OwnedFd, dest: &Path) -> Option<PathBuf> {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStrExt;
    let mut todo: Vec<OsString> = dest.iter().rev().map(ToOwned::to_owned).collect();
    let mut at = PathBuf::new();
    let (mut links, mut exists) = (0, true);
    while let Some(name) = todo.pop() {
        if name == "/" || name == "." {
            continue;
        }
        if name == ".." {
            at.pop();
            continue;
        }
        if exists {
            let dir = if at.as_os_str().is_empty() {
                rustix::io::dup(root).ok()?
            } else {
                let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                rustix::fs::openat2(root, &at, flags, Mode::empty(), how).ok()?
            };
            match rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new()) {
                Ok(target) => {
                    links += 1;
                    if links > 40 {
                        return None;
                    }
                    let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        at.clear();
                    }
                    todo.extend(target.iter().rev().map(ToOwned::to_owned));
                    continue;
                }
                Err(Errno::NOENT) => exists = false,
                // Not a symlink.
                Err(Errno::INVAL) => {}
                Err(_) => return None,
            }
        }
        at.push(name);
    }
    (!at.as_os_str().is_empty()).then_some(at)
}

/// The mount's own propagation, from its options as runc reads them (the last of
/// `private`, `slave`, `shared`, `unbindable` or their recursive `r` forms), and whether
/// it is recursive; set on the detached tree before it is attached. A bind's clone comes
/// joined to its source's propagation, so without it a Private volume of a node mount
/// that propagates (kubelet's dirs are shared) would receive the node's later mounts.
/// libcontainer's `parse_mount` treats these options as flags to clear (they also clear
/// `rbind`'s `MS_REC`), so its own mounts keep the propagation they come with.
fn propagation(m: &Mount) -> Option<(MsFlags, bool)> {
    let options = m.options().as_deref().unwrap_or_default();
    options.iter().rev().find_map(|o| {
        let (recursive, name) = match o.strip_prefix('r') {
            Some(rest) if ["private", "slave", "shared", "unbindable"].contains(&rest) => {
                (true, rest)
            }
            _ => (false, o.as_str()),
        };
        let kind = match name {
            "private" => MsFlags::MS_PRIVATE,
            "slave" => MsFlags::MS_SLAVE,
            "shared" => MsFlags::MS_SHARED,
            "unbindable" => MsFlags::MS_UNBINDABLE,
            _ => return None,
        };
        Some((kind, recursive))
    })
}

/// `mount_setattr`'s attributes for the mount's flags, as libcontainer sets them: the
/// flags that are attributes, and an access-time mode replacing the inherited one.
fn flags_to_attr(flags: MsFlags) -> MountAttr {
    let mut set = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(flag) {
            set |= attr;
        }
    }
    // MOUNT_ATTR_RELATIME is 0, so libcontainer leaves the inherited mode for relatime.
    let atime = if flags.contains(MsFlags::MS_STRICTATIME) {
        Some(MOUNT_ATTR_STRICTATIME)
    } else if flags.contains(MsFlags::MS_NOATIME) {
        Some(MOUNT_ATTR_NOATIME)
    } else {
        None
    };
    let (set, clear) = match atime {
        Some(mode) => (set | mode, MOUNT_ATTR__ATIME),
        None => (set, 0),
    };
    MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_is_the_last_propagation_option() {
        let of = |options: &[&str]| {
            let mount = oci_spec::runtime::MountBuilder::default()
                .destination("/v")
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap();
            propagation(&mount)
        };
        assert_eq!(of(&["rbind", "rprivate", "rw"]), Some((MsFlags::MS_PRIVATE, true)));
        assert_eq!(of(&["rbind", "rslave", "ro"]), Some((MsFlags::MS_SLAVE, true)));
        assert_eq!(of(&["rbind", "rshared"]), Some((MsFlags::MS_SHARED, true)));
        assert_eq!(of(&["bind", "slave"]), Some((MsFlags::MS_SLAVE, false)));
        assert_eq!(of(&["runbindable"]), Some((MsFlags::MS_UNBINDABLE, true)));
        assert_eq!(of(&["rshared", "private"]), Some((MsFlags::MS_PRIVATE, false)));
        assert_eq!(of(&["rbind", "rw"]), None);
        assert_eq!(of(&["rprivatex", "rrshared"]), None);
    }

    #[test]
    fn a_cgroup_mount_comes_last_only_where_nothing_later_overlaps_it() {
        let mount = |dest: &str, typ: &str| {
            oci_spec::runtime::MountBuilder::default().destination(dest).typ(typ).build().unwrap()
        };
        let cgroup = mount("/sys/fs/cgroup", "cgroup");
        let later = [mount("/etc/hosts", "bind"), mount("/dev/shm", "bind"), mount("/v", "bind")];
        assert!(may_come_last(&cgroup, &later));
        assert!(may_come_last(&cgroup, &[]));
        for overlapping in ["/sys", "/sys/fs/cgroup", "/sys/fs/cgroup/x", "/sys/fs/cgroup/../x"] {
            let later = [mount("/v", "bind"), mount(overlapping, "bind")];
            assert!(!may_come_last(&cgroup, &later), "{overlapping}");
        }
        // Only the cgroup mount: another mount left to libcontainer keeps the ones after it.
        assert!(!may_come_last(&mount("/x", "tmpfs"), &later));
        assert!(!may_come_last(&mount("/sys/fs/cgroup/../x", "cgroup"), &later));
        // "/sys/fs/cgroupx" is not below "/sys/fs/cgroup".
        assert!(may_come_last(&cgroup, &[mount("/sys/fs/cgroupx", "bind")]));
        // The masks clear of it are podbay's.
        assert!(!overlaps(Path::new("/sys/firmware"), Path::new("/sys/fs/cgroup")));
        assert!(overlaps(Path::new("/sys/fs/cgroup/x"), Path::new("/sys/fs/cgroup")));
        assert!(overlaps(Path::new("/sys"), Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn destinations_are_plain_names_below_the_root() {
        assert_eq!(plain_relative(Path::new("/etc/hosts")), Some(PathBuf::from("etc/hosts")));
        assert_eq!(plain_relative(Path::new("/dev/")), Some(PathBuf::from("dev")));
        // Path drops a `.` inside a path itself: the same destination.
        assert_eq!(plain_relative(Path::new("/./proc")), Some(PathBuf::from("proc")));
        for refused in ["/", "etc/hosts", "/etc/../hosts", "/..", ""] {
            assert_eq!(plain_relative(Path::new(refused)), None, "{refused}");
        }
    }

    #[test]
    fn symlinks_lead_somewhere_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p);
        std::fs::create_dir_all(at("etc")).unwrap();
        let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, at(name)).unwrap();
        link("../run/systemd/resolve/stub-resolv.conf", "etc/resolv.conf");
        link("/etc", "abs");
        link("../../../../etc/passwd", "escape");
        link("loop", "loop");
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let leads = |p: &str| leads_to(&root, Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(
            leads("etc/resolv.conf").as_deref(),
            Some("run/systemd/resolve/stub-resolv.conf")
        );
        assert_eq!(
            leads("abs/resolv.conf").as_deref(),
            Some("run/systemd/resolve/stub-resolv.conf")
        );
        assert_eq!(leads("escape").as_deref(), Some("etc/passwd"));
        assert_eq!(leads("etc/hosts").as_deref(), Some("etc/hosts"));
        assert_eq!(leads("loop"), None);
        // Made there, the file is what the link leads to.
        let made = file(&root, Path::new("etc/resolv.conf")).expect("made through the link");
        assert!(at("run/systemd/resolve/stub-resolv.conf").is_file());
        assert!(rustix::fs::fstat(&made).unwrap().st_mode & libc::S_IFMT == libc::S_IFREG);
        assert!(file(&root, Path::new("etc")).is_none(), "a directory is no file's destination");
    }

    #[test]
    fn attributes_follow_libcontainers_mapping() {
        let a = flags_to_attr(MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(a.attr_set, MOUNT_ATTR_NOSUID | MOUNT_ATTR_STRICTATIME);
        assert_eq!(a.attr_clr, MOUNT_ATTR__ATIME);
        let a = flags_to_attr(MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_RELATIME);
        assert_eq!((a.attr_set, a.attr_clr), (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, 0));
        let a = flags_to_attr(MsFlags::MS_NOEXEC);
        assert_eq!((a.attr_set, a.attr_clr), (MOUNT_ATTR_NOEXEC, 0));
    }
}
