//! The RuntimeDefault seccomp profile: an allow-list of system calls, everything else
//! fails with EPERM. The list follows the default profile containerd and Docker ship:
//! what ordinary programs use is allowed; what changes the kernel, the clock, other
//! namespaces or other processes' memory is not. Calls that need a capability the
//! container holds are allowed along with it (CAP_SYS_ADMIN: mount, unshare, setns, …).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

/// Allowed for every container.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
    "socket",
    "personality",
    "process_vm_readv",
    "process_vm_writev",
];

/// Allowed when the container holds the capability.
const WITH_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID and NEWNET.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
const ENOSYS: u32 = 38;
const EPERM: u32 = 1;

/// The profile for a container holding `caps` (names like `CAP_SYS_ADMIN`), as OCI
/// `linux.seccomp` JSON.
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|h| h == c);
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    for (cap, calls) in WITH_CAPABILITY {
        if has(cap) {
            allowed.extend_from_slice(calls);
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut syscalls = vec![json!({ "names": allowed, "action": "SCMP_ACT_ALLOW" })];
    if has("CAP_SYS_ADMIN") {
        syscalls.push(json!({ "names": ["clone"], "action": "SCMP_ACT_ALLOW" }));
    } else {
        // clone without namespace flags; clone3 cannot be filtered by its flags (they are
        // behind a pointer), so it answers ENOSYS and libc falls back to clone.
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
        }));
        syscalls
            .push(json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    })
}

/// RuntimeDefault for one set of capabilities, compiled ahead: the BPF program (`struct
/// sock_filter` entries) and the profile as OCI JSON, both for files beside `config.json`
/// (`create.rs`).
pub struct Ahead {
    pub bpf: Vec<u8>,
    pub profile: Vec<u8>,
    /// The program an exec's helper installs in itself (`for_exec`).
    pub exec_bpf: Vec<u8>,
}

/// RuntimeDefault for a container holding `caps`, made once per set of capabilities:
/// libseccomp takes about 1.5 ms to add this profile's rules and generate the program,
/// which a container whose init (or an exec whose helper) installs the program itself
/// does not pay, and the profile's own JSON (a few hundred names, built, parsed as OCI
/// and written out again) took another 0.2 ms per container. Requests choose the
/// capabilities, so at most `CACHED_PROFILES` are kept; past that each is made again.
pub fn runtime_default_ahead(caps: &[String]) -> Result<Arc<Ahead>, String> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, Arc<Ahead>>>> = OnceLock::new();
    let mut key = caps.to_vec();
    key.sort_unstable();
    key.dedup();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(ahead) = cache.lock().expect("seccomp cache lock").get(&key) {
        return Ok(ahead.clone());
    }
    // What libcontainer would have been given: the profile as OCI reads it.
    let oci: oci_spec::runtime::LinuxSeccomp =
        serde_json::from_value(runtime_default(caps)).map_err(|e| e.to_string())?;
    let profile = serde_json::to_value(&oci).map_err(|e| e.to_string())?;
    let exec = serde_json::to_value(for_exec(oci)?).map_err(|e| e.to_string())?;
    let ahead = Arc::new(Ahead {
        bpf: compile(&profile)?,
        profile: serde_json::to_vec(&profile).map_err(|e| e.to_string())?,
        exec_bpf: compile(&exec)?,
    });
    let mut cache = cache.lock().expect("seccomp cache lock");
    if cache.len() < CACHED_PROFILES {
        cache.insert(key, ahead.clone());
    }
    Ok(ahead)
}

/// The filter an exec's helper installs in itself, inherited by the command: the
/// container's, with `setns` allowed where the default denies, for the helper to join
/// the container's namespaces (which fails with EPERM anyway without CAP_SYS_ADMIN).
pub fn for_exec(
    mut profile: oci_spec::runtime::LinuxSeccomp,
) -> Result<oci_spec::runtime::LinuxSeccomp, String> {
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSyscallBuilder};
    if profile.default_action() != LinuxSeccompAction::ScmpActAllow {
        let setns = LinuxSyscallBuilder::default()
            .names(vec!["setns".to_owned()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .build()
            .map_err(|e| e.to_string())?;
        let mut rules = profile.syscalls().clone().unwrap_or_default();
        rules.push(setns);
        profile.set_syscalls(Some(rules));
    }
    Ok(profile)
}

/// Distinct RuntimeDefault programs kept (a node's pods use a handful of capability sets;
/// each program is about 2.5 KiB and its profile about 6 KiB).
const CACHED_PROFILES: usize = 64;

/// Compiles an OCI profile to BPF as libcontainer's `initialize_seccomp` builds it for
/// its own load (the same actions, architectures, skipped rules and argument
/// comparisons), for the parts RuntimeDefault uses: anything else is refused.
fn compile(profile: &Value) -> Result<Vec<u8>, String> {
    use libseccomp::ScmpSyscall;
    use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
    use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
    let p: LinuxSeccomp = serde_json::from_value(profile.clone()).map_err(|e| e.to_string())?;
    let action = |a: LinuxSeccompAction, errno: Option<u32>| match a {
        LinuxSeccompAction::ScmpActAllow => Ok(ScmpAction::Allow),
        LinuxSeccompAction::ScmpActErrno => {
            Ok(ScmpAction::Errno(errno.map_or(libc::EPERM, |e| e as i32)))
        }
        other => Err(format!("{other:?} is not compiled ahead")),
    };
    let err = |e: libseccomp::error::SeccompError| e.to_string();
    let default = action(p.default_action(), p.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(err)?;
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err("filter flags are not compiled ahead".into());
    }
    for arch in p.architectures().iter().flatten() {
        match arch {
            Arch::ScmpArchX86_64 => ctx.add_arch(ScmpArch::X8664).map_err(err)?,
            other => return Err(format!("{other:?} is not compiled ahead")),
        };
    }
    ctx.set_ctl_nnp(false).map_err(err)?;
    for rule in p.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let mut compare = Vec::new();
        for arg in rule.args().iter().flatten() {
            let op = match arg.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    ScmpCompareOp::MaskedEqual(arg.value_two().unwrap_or(0))
                }
                LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                other => return Err(format!("{other:?} is not compiled ahead")),
            };
            compare.push(ScmpArgCompare::new(arg.index() as u32, op, arg.value()));
        }
        for name in rule.names() {
            // Not a call of this kernel's architecture: libcontainer skips it too.
            let Ok(call) = ScmpSyscall::from_name(name) else { continue };
            if compare.is_empty() {
                ctx.add_rule(act, call).map_err(err)?;
            } else {
                ctx.add_rule_conditional(act, call, &compare).map_err(err)?;
            }
        }
    }
    let memfd = rustix::fs::memfd_create("seccomp-bpf", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    ctx.export_bpf(&memfd).map_err(err)?;
    let mut file = std::fs::File::from(memfd);
    use std::io::{Read, Seek};
    file.rewind().map_err(|e| e.to_string())?;
    let mut bpf = Vec::new();
    file.read_to_end(&mut bpf).map_err(|e| e.to_string())?;
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) {
        return Err(format!("libseccomp exported {} bytes of BPF", bpf.len()));
    }
    Ok(bpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(profile: &Value, name: &str) -> bool {
        profile["syscalls"].as_array().unwrap().iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r["names"].as_array().unwrap().iter().any(|n| n == name)
        })
    }

    #[test]
    fn namespaces_and_mounts_need_sys_admin() {
        let plain = runtime_default(&["CAP_CHOWN".into()]);
        assert!(allows(&plain, "read") && allows(&plain, "execve"));
        for denied in ["unshare", "setns", "mount", "reboot", "kexec_load", "bpf"] {
            assert!(!allows(&plain, denied), "{denied}");
        }
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]);
        assert!(allows(&admin, "unshare") && allows(&admin, "mount"));
        assert!(!allows(&admin, "kexec_load"));
    }

    #[test]
    fn the_precompiled_filter_denies_what_the_profile_denies() {
        let caps = ["CAP_KILL".to_string(), "CAP_CHOWN".into()];
        let ahead = runtime_default_ahead(&caps).unwrap();
        let again = runtime_default_ahead(&[caps[1].clone(), caps[0].clone(), caps[0].clone()]);
        assert!(Arc::ptr_eq(&ahead, &again.unwrap()), "made once per set of capabilities");
        let profile: Value = serde_json::from_slice(&ahead.profile).unwrap();
        assert!(!allows(&profile, "unshare") && allows(&profile, "read"));
        let bpf = &ahead.bpf;
        // In a child: install it as the init does (no_new_privs, no capability needed),
        // then try what it allows and what it denies.
        // SAFETY: the child only makes system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let outcome = (|| {
                    nix::sys::prctl::set_no_new_privs().ok()?;
                    crate::supervisor::process::install_filter(bpf).ok()?;
                    let errno = |r: libc::c_long| (r < 0).then(nix::errno::Errno::last_raw);
                    // SAFETY: plain system calls with no pointers.
                    let unshare = errno(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as _);
                    let clone3 = errno(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) });
                    let pid = unsafe { libc::getpid() };
                    (unshare == Some(libc::EPERM) && clone3 == Some(libc::ENOSYS) && pid > 0)
                        .then_some(())
                })();
                // SAFETY: exits the forked child without running the test harness's code.
                unsafe { libc::_exit(if outcome.is_some() { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn profile_parses_as_oci() {
        let p: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(runtime_default(&[])).unwrap();
        assert_eq!(p.syscalls().as_ref().unwrap().len(), 3);
    }
}
