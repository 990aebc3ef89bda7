//! App containers end to end: pods of busybox containers created, started, logged,
//! exec'd into, stopped and removed over the CRI, in a node of their own.

use std::time::Duration;

use podbay_tests::ctr::{
    assert_no_cgroups, create, ctr, exec, logged_pod, pid_of, run, security, sh, sleeper, start,
    status, wait_exited,
};
use podbay_tests::images::{Entry, fixtures, write_layout};
use podbay_tests::{Client, Node, cri, remove_pod, require_root, run_pod, wait_until};

fn node_with_busybox() -> Node {
    Node::with_busybox().unwrap()
}

/// A namespace of a process, by its pid in the node's PID namespace.
fn ns(node: &Node, pid: u32, kind: &str) -> String {
    node.sh(&format!("readlink /proc/{pid}/ns/{kind}")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_containers_share_localhost_but_not_their_filesystems() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "web");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();

    let mut httpd = ctr(
        "httpd",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    httpd.labels.insert("role".into(), "server".into());
    let server = run(&mut c, &pod, &pc, httpd).await;
    let client = run(&mut c, &pod, &pc, ctr("fetch", &["sleep", "3600"])).await;

    // The client reaches the server over the pod's localhost.
    let mut page = String::new();
    for _ in 0..100 {
        let r = exec(&mut c, &client, &["wget", "-q", "-O", "-", "http://localhost:80/"], 5)
            .await
            .unwrap();
        page = String::from_utf8_lossy(&r.stdout).into_owned();
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(page.trim(), "hello-from-httpd");
    // The server's /www is not in the client's filesystem.
    let r = exec(&mut c, &client, &["ls", "/www"], 5).await.unwrap();
    assert_ne!(r.exit_code, 0);

    // A third container binding port 80 fails, and says why in its log.
    let third = run(&mut c, &pod, &pc, ctr("clash", &["httpd", "-f", "-p", "80"])).await;
    let st = wait_exited(&mut c, &third).await;
    assert_ne!(st.exit_code, 0);
    assert_eq!(st.reason, "Error");
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(log.to_lowercase().contains("address already in use"), "{log}");
    assert!(log.contains(" stderr F "), "{log}");

    // Namespaces: net, ipc and uts are the supervisor's; mnt and pid are each their own.
    let sup = podbay_tests::pod_info(&mut c, &pod).await.unwrap()["pid"].as_u64().unwrap() as u32;
    let (_, si) = status(&mut c, &server).await;
    let (_, ci) = status(&mut c, &client).await;
    let (sp, cp) = (pid_of(&si), pid_of(&ci));
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(ns(&node, sp, kind), ns(&node, sup, kind), "{kind}");
        assert_eq!(ns(&node, cp, kind), ns(&node, sup, kind), "{kind}");
    }
    for kind in ["mnt", "pid"] {
        assert_ne!(ns(&node, sp, kind), ns(&node, cp, kind), "{kind}");
        assert_ne!(ns(&node, sp, kind), ns(&node, sup, kind), "{kind}");
    }
    // No seccomp profile in the request: Unconfined, as the CRI defines it.
    assert!(si["runtimeSpec"]["linux"]["seccomp"].is_null(), "{si}");

    // List with filters.
    let list = |f: cri::ContainerFilter| {
        let mut c = c.clone();
        async move {
            c.list_containers(cri::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
        }
    };
    assert_eq!(
        list(cri::ContainerFilter { pod_sandbox_id: pod.clone(), ..Default::default() })
            .await
            .len(),
        3
    );
    let running = cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 };
    assert_eq!(
        list(cri::ContainerFilter { state: Some(running), ..Default::default() }).await.len(),
        2
    );
    let by_label = list(cri::ContainerFilter {
        label_selector: [("role".to_string(), "server".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, server);
    assert_eq!(
        list(cri::ContainerFilter { id: server[..12].into(), ..Default::default() }).await.len(),
        1
    );

    // Stats: CPU and memory of a running container.
    let s = c
        .container_stats(cri::ContainerStatsRequest { container_id: server.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(s.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let ps = c
        .pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(ps.linux.unwrap().containers.len(), 2);

    c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let (st, _) = status(&mut c, &server).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    remove_pod(&mut c, &pod).await.unwrap();
    let left = c.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap();
    assert!(left.into_inner().containers.is_empty());
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_reasons_logs_and_stop_escalation() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "jobs");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();

    let ok =
        run(&mut c, &pod, &pc, ctr("ok", &["sh", "-c", "echo out; echo err >&2; printf partial"]))
            .await;
    let st = wait_exited(&mut c, &ok).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    assert!(st.finished_at >= st.started_at && st.started_at >= st.created_at);
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    for l in &lines {
        let ts = l.split(' ').next().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{l}");
    }
    assert!(log.contains(" stdout F out\n") && log.contains(" stderr F err\n"), "{log}");
    assert!(log.contains(" stdout F partial\n"), "{log}");

    let three = run(&mut c, &pod, &pc, ctr("three", &["sh", "-c", "exit 3"])).await;
    let st = wait_exited(&mut c, &three).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));

    // A line longer than 16 KiB is cut into partial entries.
    let long = run(
        &mut c,
        &pod,
        &pc,
        ctr("long", &["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' a; echo"]),
    )
    .await;
    let st = wait_exited(&mut c, &long).await;
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    let tags: Vec<&str> = log.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(tags, ["P", "P", "F"], "{}", &log[..200]);

    // Out of memory: OOMKilled.
    let mut hog =
        ctr("hog", &["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]);
    hog.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog = run(&mut c, &pod, &pc, hog).await;
    let st = wait_exited(&mut c, &hog).await;
    assert_eq!(st.reason, "OOMKilled", "exit {}", st.exit_code);

    // SIGTERM ignored: the stop escalates to SIGKILL after the timeout.
    let stubborn = run(
        &mut c,
        &pod,
        &pc,
        ctr("stubborn", &["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]),
    )
    .await;
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(node.dir().join("logs/jobs/stubborn.log"))
            .is_ok_and(|l| l.contains("ready"))
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    c.stop_container(cri::StopContainerRequest { container_id: stubborn.clone(), timeout: 1 })
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let (st, _) = status(&mut c, &stubborn).await;
    assert_eq!((st.state, st.exit_code), (cri::ContainerState::ContainerExited as i32, 137));
    // Stop and remove are idempotent.
    c.stop_container(cri::StopContainerRequest { container_id: stubborn.clone(), timeout: 1 })
        .await
        .unwrap();
    c.remove_container(cri::RemoveContainerRequest { container_id: stubborn.clone() })
        .await
        .unwrap();
    c.remove_container(cri::RemoveContainerRequest { container_id: stubborn.clone() })
        .await
        .unwrap();

    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_defaults_and_security_context() {
    require_root!();
    let node = node_with_busybox();
    let configured = node.dir().join("configured-layout");
    let image = Entry::Image(fixtures().configured);
    write_layout(&configured, &[("example.com/configured:1", &image)]).unwrap();
    let out = node.cli(&["image", "import", configured.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "sec");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();

    // Defaults: root with containerd's capability set; RuntimeDefault seccomp, as kubelet
    // asks for it.
    let mut plain = sleeper("plain");
    security(&mut plain).seccomp = runtime_default();
    let plain = run(&mut c, &pod, &pc, plain).await;
    let (code, out) = sh(&mut c, &plain, "ping -c1 -W2 127.0.0.1").await;
    assert_eq!(code, 0, "NET_RAW is a default capability: {out}");
    let (code, out) = sh(&mut c, &plain, "unshare -U true").await;
    assert_ne!(code, 0, "RuntimeDefault seccomp blocks unshare: {out}");
    // Masked: each reads as empty (/proc/kcore only exists with CONFIG_PROC_KCORE).
    let (code, out) = sh(
        &mut c,
        &plain,
        "for f in /proc/kcore /proc/keys /proc/timer_list; do \
         [ -e $f ] && echo $f $(wc -c < $f); done",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/proc/keys 0\n") && out.contains("/proc/timer_list 0\n"), "{out}");
    assert!(std::path::Path::new("/proc/kcore").exists() == out.contains("/proc/kcore 0"), "{out}");
    let (code, _) = sh(&mut c, &plain, "echo 1 > /proc/sysrq-trigger").await;
    assert_ne!(code, 0, "/proc/sysrq-trigger is read-only");
    let (_, out) = sh(&mut c, &plain, "grep NoNewPrivs /proc/self/status").await;
    assert!(out.contains('0'), "{out}");
    // Without no_new_privs too, the filter was compiled ahead and the init installed it
    // with a CAP_SYS_ADMIN it then dropped: the program has exactly the spec's caps.
    let bundle = node.root().join("containers").join(&plain);
    assert!(bundle.join("seccomp.bpf").is_file(), "the filter was compiled ahead");
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(!config.contains("\"seccomp\""), "libcontainer does not compile it again");
    let (_, out) =
        sh(&mut c, &plain, "grep -E '^(Seccomp|NoNewPrivs|Cap...):' /proc/1/status").await;
    assert!(out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t0"), "init: {out}");
    let caps: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("CapEff") || l.starts_with("CapPrm") || l.starts_with("CapBnd"))
        .map(|l| u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap())
        .collect();
    assert_eq!(caps.len(), 3, "{out}");
    assert!(caps.iter().all(|c| *c == caps[0]), "effective = permitted = bounding: {out}");
    assert_eq!(caps[0] & (1 << 21), 0, "no CAP_SYS_ADMIN: {out}");
    // cgroupfs is read-only: a root container cannot raise its own limits.
    let (code, out) = sh(
        &mut c,
        &plain,
        "for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/memory.max; do \
         [ -e $f ] && echo 1 > $f && exit 8; done; \
         mkdir /sys/fs/cgroup/memory/escape && exit 7; mkdir /sys/fs/cgroup/escape && exit 6; \
         exit 9",
    )
    .await;
    assert_eq!(code, 9, "{out}");
    assert!(out.contains("Read-only"), "{out}");
    let (code, _) = sh(&mut c, &plain, "test -e /dev/loop0").await;
    assert_ne!(code, 0, "host devices stay out of unprivileged containers");
    let (_, out) = sh(&mut c, &plain, "id -u; touch /rootfs-is-writable && echo wrote").await;
    assert_eq!(out, "0\nwrote\n");

    // NET_RAW dropped: ping has no raw socket.
    let mut noraw = sleeper("noraw");
    security(&mut noraw).capabilities =
        Some(cri::Capability { drop_capabilities: vec!["NET_RAW".into()], ..Default::default() });
    let noraw = run(&mut c, &pod, &pc, noraw).await;
    let (code, out) = sh(&mut c, &noraw, "ping -c1 -W2 127.0.0.1").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("permitted") || out.contains("denied"), "{out}");

    // Read-only rootfs, no_new_privs, a user by id and by name.
    let mut locked = sleeper("locked");
    let s = security(&mut locked);
    s.readonly_rootfs = true;
    s.no_new_privs = true;
    s.run_as_user = Some(cri::Int64Value { value: 1234 });
    s.run_as_group = Some(cri::Int64Value { value: 2345 });
    s.supplemental_groups = vec![3456];
    let locked = run(&mut c, &pod, &pc, locked).await;
    let (_, out) = sh(&mut c, &locked, "id -u; id -g; id -G").await;
    assert_eq!(out, "1234\n2345\n2345 3456\n");
    let (code, out) = sh(&mut c, &locked, "touch /x").await;
    assert_ne!(code, 0);
    assert!(out.contains("Read-only"), "{out}");
    let (_, out) = sh(&mut c, &locked, "grep NoNewPrivs /proc/self/status").await;
    assert!(out.contains('1'), "{out}");
    let (_, out) = sh(&mut c, &locked, "grep CapEff /proc/self/status").await;
    assert!(out.contains("0000000000000000"), "a non-root user has no effective caps: {out}");

    // A non-root user without no_new_privs: the init installs the filter after its uid
    // change, with the CAP_SYS_ADMIN it kept for that, and the program has no capability.
    let mut user = sleeper("user");
    let s = security(&mut user);
    s.run_as_user = Some(cri::Int64Value { value: 1234 });
    s.seccomp = runtime_default();
    let user = run(&mut c, &pod, &pc, user).await;
    let (_, out) =
        sh(&mut c, &user, "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/1/status").await;
    assert!(out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t0"), "init: {out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "init: {out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "init: {out}");

    // no_new_privs with RuntimeDefault (Pod Security "restricted"): the init installs the
    // filter the daemon compiled; the init and an exec are both filtered.
    let mut restricted = sleeper("restricted");
    let s = security(&mut restricted);
    s.no_new_privs = true;
    s.seccomp = runtime_default();
    let restricted = run(&mut c, &pod, &pc, restricted).await;
    let bundle = node.root().join("containers").join(&restricted);
    assert!(bundle.join("seccomp.bpf").is_file(), "the filter was compiled ahead");
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(!config.contains("\"seccomp\""), "libcontainer does not compile it again");
    let (_, out) = sh(&mut c, &restricted, "grep -E '^(Seccomp|NoNewPrivs):' /proc/1/status").await;
    assert!(out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t1"), "init: {out}");
    // An exec's helper installs the filter compiled for execs (the profile and `setns`)
    // instead of compiling the profile again: one filter, inherited by the command.
    assert!(bundle.join("seccomp-exec.bpf").is_file(), "the exec's filter was compiled ahead");
    let (_, out) =
        sh(&mut c, &restricted, "grep -E '^Seccomp(_filters)?:' /proc/self/status").await;
    assert!(out.contains("Seccomp:\t2"), "exec: {out}");
    assert!(!out.contains("Seccomp_filters:") || out.contains("Seccomp_filters:\t1"), "{out}");
    let (code, out) = sh(&mut c, &restricted, "unshare -U true").await;
    assert_ne!(code, 0, "the exec's filter blocks unshare: {out}");
    assert!(out.contains("not permitted"), "{out}");

    let mut named = sleeper("named");
    security(&mut named).run_as_username = "app".into();
    let named = run(&mut c, &pod, &pc, named).await;
    assert_eq!(sh(&mut c, &named, "id -un; id -g").await.1, "app\n1000\n");

    // The image's USER (1000:1000), env, working dir and entrypoint.
    let mut from_image = ctr("from-image", &[]);
    from_image.image.as_mut().unwrap().image = "example.com/configured:1".into();
    from_image.args = vec!["id -u; id -g; pwd; echo $GREETING; exec sleep 3600".into()];
    let from_image = run(&mut c, &pod, &pc, from_image).await;
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(node.dir().join("logs/sec/from-image.log"))
            .is_ok_and(|l| l.lines().count() == 4)
    })
    .unwrap();
    let log = std::fs::read_to_string(node.dir().join("logs/sec/from-image.log")).unwrap();
    let text: Vec<&str> = log.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap()).collect();
    assert_eq!(text, ["1000", "1000", "/tmp", "hello"]);
    // Exec runs as the container's user too.
    assert_eq!(sh(&mut c, &from_image, "id -u").await.1, "1000\n");

    // Unconfined seccomp lets unshare through (root keeps CAP_SYS_ADMIN out, so a user
    // namespace is the one unshare a default root container could make).
    let mut unconfined = sleeper("unconfined");
    security(&mut unconfined).seccomp =
        Some(cri::SecurityProfile { profile_type: 1, ..Default::default() });
    let unconfined = run(&mut c, &pod, &pc, unconfined).await;
    let (code, out) = sh(&mut c, &unconfined, "unshare -U true").await;
    assert_eq!(code, 0, "{out}");

    // Privileged: the host's devices, every capability podbay holds, writable sysfs.
    let mut privileged = sleeper("privileged");
    security(&mut privileged).privileged = true;
    let privileged = run(&mut c, &pod, &pc, privileged).await;
    let (code, out) = sh(&mut c, &privileged, "test -e /dev/loop0 && echo yes").await;
    assert_eq!((code, out.as_str()), (0, "yes\n"));
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap = |s: &str| s.lines().find(|l| l.starts_with("CapEff")).map(str::to_owned);
    let (_, out) = sh(&mut c, &privileged, "grep CapEff /proc/self/status").await;
    assert_eq!(cap(&out), cap(&own));

    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

/// A container's memory limit as its cgroup holds it (v1 or v2), read on the node.
fn memory_limit(pod: &str, id: &str) -> String {
    let v1 = format!("/sys/fs/cgroup/memory/podbay/{pod}/{id}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/podbay/{pod}/{id}/memory.max");
    std::fs::read_to_string(&v1).or_else(|_| std::fs::read_to_string(&v2)).unwrap().trim().into()
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_update_stats_and_exec_sync() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "res");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();

    let mut limited = sleeper("limited");
    limited.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        ..Default::default()
    });
    let id = run(&mut c, &pod, &pc, limited).await;
    assert_eq!(memory_limit(&pod, &id), (64u64 << 20).to_string());
    let (_, inside) = sh(
        &mut c,
        &id,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
                                      /sys/fs/cgroup/memory.max 2>/dev/null",
    )
    .await;
    assert_eq!(inside.trim(), (64u64 << 20).to_string(), "the container sees its limit");

    let update = cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    c.update_container_resources(update).await.unwrap();
    assert_eq!(memory_limit(&pod, &id), (96u64 << 20).to_string());
    let (_, st) = status(&mut c, &id).await;
    assert_eq!(st["runtimeSpec"]["linux"]["resources"]["memory"]["limit"], 96u64 << 20);
    let (_, out) = sh(&mut c, &id, "grep -c . /proc/self/status").await;
    assert!(out.trim().parse::<u32>().unwrap() > 10);

    // Stats: CPU used by a busy loop, memory in use.
    sh(&mut c, &id, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done").await;
    let s = c
        .container_stats(cri::ContainerStatsRequest { container_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(s.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(s.memory.unwrap().working_set_bytes.unwrap().value > 0);

    // ExecSync: exit codes and both streams.
    let r = exec(&mut c, &id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 5).await.unwrap();
    assert_eq!((r.exit_code, &r.stdout[..], &r.stderr[..]), (5, &b"out\n"[..], &b"err\n"[..]));
    // A background child holding stdout does not hang the call.
    let t0 = std::time::Instant::now();
    let r = exec(&mut c, &id, &["sh", "-c", "sleep 30 & echo quick"], 20).await.unwrap();
    assert_eq!((r.exit_code, &r.stdout[..]), (0, &b"quick\n"[..]));
    assert!(t0.elapsed() < Duration::from_secs(20), "answered at the exit, not at EOF");
    // The timeout: DeadlineExceeded, and the command is killed.
    let err = exec(&mut c, &id, &["sh", "-c", "sleep 77"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("1s"), "{err:?}");
    wait_until(Duration::from_secs(5), || {
        node.sh("pgrep -f '[s]leep 77' || true").unwrap().trim().is_empty()
    })
    .unwrap();
    // Output beyond 16 MiB is cut, with a note saying so.
    let r = exec(&mut c, &id, &["head", "-c", "20000000", "/dev/zero"], 30).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.len()), (0, 16 << 20));
    let note = String::from_utf8_lossy(&r.stdout[(16 << 20) - 100..]).into_owned();
    assert!(note.trim_start_matches('\0').starts_with("\n[podbay: output cut at 16 MiB]\n"));
    // Exec in a container that is not running.
    let done = run(&mut c, &pod, &pc, ctr("done", &["true"])).await;
    wait_exited(&mut c, &done).await;
    let err = exec(&mut c, &done, &["true"], 5).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exits_while_the_daemon_is_down_and_log_reopen() {
    require_root!();
    let mut node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "down");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let ticker = run(
        &mut c,
        &pod,
        &pc,
        ctr("ticker", &["sh", "-c", "while :; do echo tick; sleep 0.05; done"]),
    )
    .await;
    let job = run(&mut c, &pod, &pc, ctr("job", &["sh", "-c", "sleep 1; echo bye; exit 7"])).await;
    let (started, _) = status(&mut c, &job).await;
    drop(c);

    // The daemon dies; the job exits while it is down; the daemon comes back.
    node.kill_daemon().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let back = podbay_tests::now_ns();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let (st, _) = status(&mut c, &job).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"));
    assert!(st.finished_at >= started.started_at + 900_000_000, "{st:?}");
    assert!(st.finished_at < back, "the supervisor recorded the time of the exit");
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(log.contains(" stdout F bye\n"), "{log}");
    let (st, _) = status(&mut c, &ticker).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);

    // Log rotation: kubelet moves the file and asks for a new one.
    let path = std::path::PathBuf::from(&st.log_path);
    let moved = path.with_extension("log.1");
    std::fs::rename(&path, &moved).unwrap();
    c.reopen_container_log(cri::ReopenContainerLogRequest { container_id: ticker.clone() })
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|l| l.contains(" stdout F tick\n"))
    })
    .unwrap();
    let size = std::fs::metadata(&moved).unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), size, "the old file is closed");
    // Reopening needs a running container.
    let err = c
        .reopen_container_log(cri::ReopenContainerLogRequest { container_id: job.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

/// Everything a node holds for containers: records, mounts, state dirs and cgroups.
fn footprint(node: &Node, pod: &str) -> (Vec<String>, usize, Vec<String>) {
    let mounts = node.mounts().unwrap().into_iter().filter(|m| m.contains("rootfs")).collect();
    let dirs = std::fs::read_dir(node.root().join("containers")).map_or(0, |d| d.count());
    let cgroups = ["/sys/fs/cgroup/memory/podbay", "/sys/fs/cgroup/podbay"]
        .iter()
        .filter_map(|b| std::fs::read_dir(std::path::Path::new(b).join(pod)).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    (mounts, dirs, cgroups)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_named_and_leave_nothing() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "bad");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let good = run(&mut c, &pod, &pc, sleeper("good")).await;
    let before = footprint(&node, &pod);
    let count = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let r = c.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap();
            r.into_inner().containers.len()
        }
    };

    let expect = async |c: &mut Client, pod: &str, config, code, words: &[&str]| {
        let err = create(c, pod, &pc, config).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        for w in words {
            assert!(err.message().contains(w), "{w:?} not in {err:?}");
        }
    };
    expect(&mut c, "feedface", sleeper("x"), tonic::Code::NotFound, &["feedface"]).await;
    let mut unknown = sleeper("x");
    unknown.image.as_mut().unwrap().image = "example.com/nothing:1".into();
    expect(&mut c, &pod, unknown, tonic::Code::NotFound, &["example.com/nothing:1"]).await;
    let mut no_host_path = sleeper("x");
    no_host_path.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/podbay-test".into(),
        ..Default::default()
    });
    expect(
        &mut c,
        &pod,
        no_host_path,
        tonic::Code::InvalidArgument,
        &["mounts[0].host_path", "/nonexistent/podbay-test"],
    )
    .await;
    let mut no_name = sleeper("x");
    no_name.metadata = None;
    expect(&mut c, &pod, no_name, tonic::Code::InvalidArgument, &["metadata"]).await;
    let mut escape = sleeper("x");
    escape.log_path = "../../etc/x.log".into();
    expect(&mut c, &pod, escape, tonic::Code::InvalidArgument, &["log_path"]).await;
    let mut bad_cap = sleeper("x");
    security(&mut bad_cap).capabilities =
        Some(cri::Capability { add_capabilities: vec!["FLY".into()], ..Default::default() });
    expect(&mut c, &pod, bad_cap, tonic::Code::InvalidArgument, &["FLY"]).await;
    // AppArmor and SELinux cannot be applied on these hosts: asking for a profile or a
    // label is refused, never silently ignored.
    let mut apparmor = sleeper("x");
    security(&mut apparmor).apparmor = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: "k8s-deny-write".into(),
    });
    let words = ["security_context.apparmor", "k8s-deny-write"];
    expect(&mut c, &pod, apparmor, tonic::Code::InvalidArgument, &words).await;
    let mut selinux = sleeper("x");
    security(&mut selinux).selinux_options =
        Some(cri::SeLinuxOption { level: "s0:c1,c2".into(), ..Default::default() });
    let words = ["security_context.selinux_options"];
    expect(&mut c, &pod, selinux, tonic::Code::InvalidArgument, &words).await;
    let mut group_alone = sleeper("x");
    security(&mut group_alone).run_as_group = Some(cri::Int64Value { value: 100 });
    let words = ["security_context.run_as_group", "without run_as_user"];
    expect(&mut c, &pod, group_alone, tonic::Code::InvalidArgument, &words).await;
    expect(&mut c, &pod, sleeper("good"), tonic::Code::AlreadyExists, &["good", &good[..12]]).await;
    // Resources the kernel (or libcontainer) would refuse, or silently ignore, are named
    // up front.
    type Set = fn(&mut cri::LinuxContainerResources);
    let limits: [(&str, Set); 6] = [
        ("memory_limit_in_bytes", |r| r.memory_limit_in_bytes = 1),
        ("memory_limit_in_bytes", |r| r.memory_limit_in_bytes = -5),
        ("cpu_quota", |r| r.cpu_quota = 1 << 62),
        ("cpu_shares", |r| r.cpu_shares = -2),
        ("cpuset_cpus", |r| r.cpuset_cpus = "0-999".into()),
        ("oom_score_adj", |r| r.oom_score_adj = 5000),
    ];
    for (field, set) in limits {
        let mut config = sleeper("x");
        set(config.linux.get_or_insert_default().resources.get_or_insert_default());
        let words = [&format!("linux.resources.{field}")[..]];
        expect(&mut c, &pod, config, tonic::Code::InvalidArgument, &words).await;
    }

    // A command missing from the image: libcontainer refuses it at create (as runc does),
    // naming it.
    let err = create(&mut c, &pod, &pc, ctr("missing", &["/no/such/binary"])).await.unwrap_err();
    assert!(err.message().contains("/no/such/binary"), "{err:?}");
    // A mount libcontainer cannot make in the rootfs (under a file): its own cause is
    // told, not only "failed to prepare rootfs".
    let mut under_file = sleeper("x");
    under_file.mounts.push(cri::Mount {
        container_path: "/bin/busybox/x".into(),
        host_path: node.dir().to_string_lossy().into_owned(),
        ..Default::default()
    });
    let err = create(&mut c, &pod, &pc, under_file).await.unwrap_err();
    assert!(err.message().contains("failed to prepare rootfs"), "{err:?}");
    assert!(err.message().contains("Not a directory"), "{err:?}");
    assert!(err.message().contains("/bin/busybox/x"), "{err:?}");
    // Unknown ids.
    let err = start(&mut c, "0123456789ab").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // StopContainer is idempotent: an unknown container is stopped.
    c.stop_container(cri::StopContainerRequest { container_id: "0123456789ab".into(), timeout: 0 })
        .await
        .unwrap();

    assert_eq!(count(&mut c).await, 1);
    assert_eq!(footprint(&node, &pod), before, "a failed call left something behind");

    // A stopped pod takes no new containers.
    c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    expect(&mut c, &pod, sleeper("late"), tonic::Code::FailedPrecondition, &[&pod[..12]]).await;
    assert_eq!(count(&mut c).await, 1);

    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_modes_and_pods_by_ip() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = podbay_tests::with_pid_mode(logged_pod(&node, "shared"), cri::NamespaceMode::Pod);
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let pod_mode = |mut config: cri::ContainerConfig| {
        security(&mut config).namespace_options = Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        });
        config
    };
    let a = run(&mut c, &pod, &pc, pod_mode(ctr("a", &["sleep", "3601"]))).await;
    let b = run(&mut c, &pod, &pc, pod_mode(ctr("b", &["sleep", "3602"]))).await;
    // Each sees the other's processes, and the same PID namespace.
    let (_, out) = sh(&mut c, &b, "ps -o args").await;
    assert!(out.contains("sleep 3601") && out.contains("sleep 3602"), "{out}");
    let (ai, bi) = (status(&mut c, &a).await.1, status(&mut c, &b).await.1);
    assert_eq!(ns(&node, pid_of(&ai), "pid"), ns(&node, pid_of(&bi), "pid"));
    // TARGET: a debug container in a's PID namespace.
    let mut target = sleeper("debug");
    security(&mut target).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Target as i32,
        target_id: a.clone(),
        ..Default::default()
    });
    let debug = run(&mut c, &pod, &pc, target).await;
    let (_, out) = sh(&mut c, &debug, "ps -o args").await;
    assert!(out.contains("sleep 3601"), "{out}");

    // A second pod (own PID namespaces) reaches the first by pod IP.
    let pc2 = logged_pod(&node, "client");
    let pod2 = run_pod(&mut c, pc2.clone()).await.unwrap();
    let own = run(&mut c, &pod2, &pc2, sleeper("own")).await;
    let (_, out) = sh(&mut c, &own, "ps -o args").await;
    assert!(!out.contains("sleep 3601"), "{out}");
    run(
        &mut c,
        &pod,
        &pc,
        pod_mode(ctr(
            "web",
            &["sh", "-c", "mkdir -p /www && echo pod-one > /www/index.html && httpd -f -h /www"],
        )),
    )
    .await;
    let ip = podbay_tests::pod_ip(&mut c, &pod).await.unwrap();
    let mut page = String::new();
    for _ in 0..100 {
        let (code, out) = sh(&mut c, &own, &format!("wget -q -O - http://{ip}/")).await;
        page = out;
        if code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(page, "pod-one\n");

    remove_pod(&mut c, &pod).await.unwrap();
    remove_pod(&mut c, &pod2).await.unwrap();
    assert_no_cgroups(&[&pod, &pod2]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_sysctls_are_namespaced_only() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let mut pc = logged_pod(&node, "tuned");
    let sysctls = &mut pc.linux.get_or_insert_default().sysctls;
    sysctls.insert("net.ipv4.ping_group_range".into(), "0 2147483647".into());
    sysctls.insert("net/ipv4/ip_unprivileged_port_start".into(), "0".into());
    sysctls.insert("kernel.shm_rmid_forced".into(), "1".into());
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    let (_, out) = sh(
        &mut c,
        &id,
        "cat /proc/sys/net/ipv4/ping_group_range /proc/sys/net/ipv4/ip_unprivileged_port_start \
         /proc/sys/kernel/shm_rmid_forced",
    )
    .await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "2147483647", "0", "1"]);
    // The node's own values are untouched.
    assert_ne!(node.sh("cat /proc/sys/net/ipv4/ping_group_range").unwrap(), "0\t2147483647");

    // Refused, naming the sysctl, with nothing made: a node-wide sysctl, one in a
    // namespace the pod shares with the node, one the kernel does not have, a bad value.
    let pods = podbay_tests::list_pods(&mut c).await.unwrap().len();
    let cases: [(&str, &str, bool, &str); 4] = [
        ("kernel.panic", "1", false, "not a namespaced sysctl"),
        ("net.ipv4.ip_forward", "1", true, "node's network namespace"),
        ("net.ipv4.no_such_knob", "1", false, "refused"),
        ("net.ipv4.ip_unprivileged_port_start", "not-a-number", false, "refused"),
    ];
    for (key, value, host_network, words) in cases {
        let mut bad = logged_pod(&node, "bad-sysctl");
        bad.linux.get_or_insert_default().sysctls.insert(key.into(), value.into());
        if host_network {
            bad = podbay_tests::with_network_mode(bad, cri::NamespaceMode::Node);
        }
        let err = run_pod(&mut c, bad).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{key}: {status:?}");
        assert!(status.message().contains(key), "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    }
    assert_eq!(podbay_tests::list_pods(&mut c).await.unwrap().len(), pods);

    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_and_stdin() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "term");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();

    // A terminal: the process sees one, and its output is logged as stdout.
    let mut tty =
        ctr("tty", &["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty; echo err >&2"]);
    tty.tty = true;
    tty.stdin = true;
    let tty = run(&mut c, &pod, &pc, tty).await;
    let st = wait_exited(&mut c, &tty).await;
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(log.contains(" stdout F on-a-tty\r\n"), "{log}");
    assert!(log.contains(" stdout F err\r\n") && !log.contains(" stderr "), "{log}");

    // stdin: open (reads block) when asked for, /dev/null (EOF at once) otherwise.
    let reader = |name: &str, stdin: bool| {
        let mut r = ctr(name, &["sh", "-c", "read line"]);
        r.stdin = stdin;
        r
    };
    let open = run(&mut c, &pod, &pc, reader("open", true)).await;
    let closed = run(&mut c, &pod, &pc, reader("closed", false)).await;
    let st = wait_exited(&mut c, &closed).await;
    assert_eq!(st.exit_code, 1, "read sees EOF");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, _) = status(&mut c, &open).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "read waits");

    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unset_seccomp_profile_follows_the_config() {
    require_root!();
    for (config, confined) in [("", false), ("unset_seccomp_profile = \"runtime-default\"\n", true)]
    {
        let mut node = Node::empty().unwrap();
        node.set_config(&format!("[container]\n{config}"));
        node.start_daemon().unwrap();
        node.import_busybox().unwrap();
        let mut c = node.client().await.unwrap();
        let pc = logged_pod(&node, "seccomp");
        let pod = run_pod(&mut c, pc.clone()).await.unwrap();
        let id = run(&mut c, &pod, &pc, sleeper("unset")).await;
        let (_, info) = status(&mut c, &id).await;
        assert_eq!(info["runtimeSpec"]["linux"]["seccomp"].is_object(), confined, "{config}");
        let (code, out) = sh(&mut c, &id, "unshare -U true").await;
        assert_eq!(code != 0, confined, "{config:?}: {out}");
        remove_pod(&mut c, &pod).await.unwrap();
        node.assert_clean().unwrap();
    }
    // A value the config does not know is named.
    let mut node = Node::empty().unwrap();
    node.set_config("[container]\nunset_seccomp_profile = \"strict\"\n");
    let err = node.start_daemon().unwrap_err().to_string();
    assert!(err.contains("unset_seccomp_profile") && err.contains("strict"), "{err}");
}

/// The RuntimeDefault seccomp profile, as kubelet asks for it.
fn runtime_default() -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    })
}

/// A directory of the node's like kubelet's (a shared mount), with the named
/// subdirectories made in it.
fn shared_kubelet_dir(node: &Node, subdirs: &str) -> std::path::PathBuf {
    let dir = node.dir().join("kubelet");
    let d = dir.display();
    node.sh(&format!(
        "mkdir -p {d} && mount --bind {d} {d} && mount --make-rshared {d} && cd {d} && mkdir {subdirs}"
    ))
    .unwrap();
    dir
}

/// `config` with the node's `host` mounted at `at` with `propagation`.
fn with_volume(
    config: &mut cri::ContainerConfig,
    host: &std::path::Path,
    at: &str,
    propagation: cri::MountPropagation,
) {
    config.mounts.push(cri::Mount {
        container_path: at.into(),
        host_path: host.to_string_lossy().into_owned(),
        propagation: propagation as i32,
        ..Default::default()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_propagation_host_to_container_and_bidirectional() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "prop");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    // kubelet's dirs are shared mounts; the node's own (a private mount namespace) are not.
    let dir = shared_kubelet_dir(&node, "h2c bidi priv");
    let d = dir.display();
    let with_mount = |name: &str, sub: &str, propagation: cri::MountPropagation| {
        let mut config = sleeper(name);
        config.mounts.push(cri::Mount {
            container_path: format!("/{sub}"),
            host_path: dir.join(sub).to_string_lossy().into_owned(),
            propagation: propagation as i32,
            ..Default::default()
        });
        config
    };
    let h2c = run(
        &mut c,
        &pod,
        &pc,
        with_mount("h2c", "h2c", cri::MountPropagation::PropagationHostToContainer),
    )
    .await;
    let mut bidi = with_mount("bidi", "bidi", cri::MountPropagation::PropagationBidirectional);
    security(&mut bidi).privileged = true;
    // A Private volume of the same container stays private although the container's root
    // propagates (shared, for the Bidirectional one).
    with_volume(&mut bidi, &dir.join("priv"), "/priv", cri::MountPropagation::PropagationPrivate);
    let bidi = run(&mut c, &pod, &pc, bidi).await;

    // The node mounts after the container started: the container sees it.
    node.sh(&format!(
        "mkdir {d}/h2c/sub && mount -t tmpfs -o size=1m tmpfs {d}/h2c/sub && touch {d}/h2c/sub/from-node"
    ))
    .unwrap();
    assert_eq!(sh(&mut c, &h2c, "ls /h2c/sub").await, (0, "from-node\n".into()));
    // The container mounts: the node sees it.
    let (code, out) = sh(
        &mut c,
        &bidi,
        "mkdir /bidi/sub && mount -t tmpfs -o size=1m tmpfs /bidi/sub && touch /bidi/sub/from-ctr",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(node.sh(&format!("ls {d}/bidi/sub")).unwrap(), "from-ctr\n");
    // Neither way for its Private volume, nor for a mount elsewhere in its rootfs.
    let (code, out) = sh(
        &mut c,
        &bidi,
        "mkdir /priv/sub /elsewhere && mount -t tmpfs -o size=1m tmpfs /priv/sub && mount -t tmpfs -o size=1m tmpfs /elsewhere && touch /priv/sub/from-ctr",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(node.sh(&format!("ls {d}/priv/sub")).unwrap(), "");
    node.sh(&format!("mkdir {d}/priv/later && mount -t tmpfs -o size=1m tmpfs {d}/priv/later && touch {d}/priv/later/from-node")).unwrap();
    assert_eq!(sh(&mut c, &bidi, "ls /priv/later").await, (0, "".into()));
    let leaked = node.sh("grep -c elsewhere /proc/self/mountinfo || true").unwrap();
    assert_eq!(leaked.trim(), "0", "the container's own mount reached the node");

    // On a mount that is not shared, either mode is refused, naming the mount.
    let private = node.dir().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let p = private.display();
    node.sh(&format!("mount --bind {p} {p} && mount --make-private {p}")).unwrap();
    let mut config = sleeper("refused");
    config.mounts.push(cri::Mount {
        container_path: "/p".into(),
        host_path: private.to_string_lossy().into_owned(),
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    });
    let err = create(&mut c, &pod, &pc, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("mounts[0].propagation"), "{err:?}");

    remove_pod(&mut c, &pod).await.unwrap();
    node.sh(&format!("umount -R {d} && umount {p}")).unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn supplemental_groups_policy_merge_and_strict() {
    require_root!();
    let node = node_with_busybox();
    let group = b"root:x:0:\nwheel:x:10:app\napp:x:1000:\n".to_vec();
    let passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n".to_vec();
    let files = [("etc/group".to_owned(), group, 0o644), ("etc/passwd".to_owned(), passwd, 0o644)];
    podbay_tests::attack::import_image(&node, "localhost/groups:1", &files).unwrap();
    let mut c = node.client().await.unwrap();
    let status_features = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .features
        .unwrap();
    assert!(status_features.supplemental_groups_policy);
    let pc = logged_pod(&node, "groups");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    for (policy, groups) in [
        (cri::SupplementalGroupsPolicy::Merge, "1000 10 2000"),
        (cri::SupplementalGroupsPolicy::Strict, "1000 2000"),
    ] {
        let mut config = sleeper(&format!("{policy:?}").to_lowercase());
        config.image.as_mut().unwrap().image = "localhost/groups:1".into();
        let sec = security(&mut config);
        sec.run_as_user = Some(cri::Int64Value { value: 1000 });
        sec.supplemental_groups = vec![2000];
        sec.supplemental_groups_policy = policy as i32;
        let id = run(&mut c, &pod, &pc, config).await;
        assert_eq!(sh(&mut c, &id, "id -G").await, (0, format!("{groups}\n")), "{policy:?}");
        let (s, _) = status(&mut c, &id).await;
        let user = s.user.unwrap().linux.unwrap();
        let mut want: Vec<i64> = groups.split(' ').skip(1).map(|g| g.parse().unwrap()).collect();
        want.sort();
        assert_eq!((user.uid, user.gid, user.supplemental_groups), (1000, 1000, want));
    }
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

/// The cgroup of every v1 controller the node mounts (or, on a cgroup v2 node, the unified
/// one) of the process that prints `text` as `/proc/self/cgroup`.
fn cgroups_of(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers.to_owned(), path.trim().to_owned()))
        })
        .filter(|(controllers, _)| !controllers.starts_with("name="))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_is_in_its_cgroups_before_its_first_instruction() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "placed");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    // The entrypoint itself (busybox's cat, no shell before it) reads where it is: the
    // first thing the image's code does.
    let id = run(&mut c, &pod, &pc, ctr("first", &["cat", "/proc/self/cgroup"])).await;
    let st = wait_exited(&mut c, &id).await;
    assert_eq!(st.exit_code, 0, "{}", st.message);
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    let printed: String =
        log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(|l| format!("{l}\n")).collect();
    let want = format!("/podbay/{pod}/{id}");
    // The hierarchies this node mounts (another test may mount one of its own: the kernel
    // lists every hierarchy in /proc/self/cgroup, mounted here or not).
    let options = node.sh("awk '/ - cgroup / {print $NF}' /proc/self/mountinfo").unwrap();
    let mounted = |controllers: &str| {
        controllers.is_empty()
            || options.lines().any(|o| {
                let o: Vec<&str> = o.split(',').collect();
                controllers.split(',').all(|c| o.contains(&c))
            })
    };
    let node_cgroups: Vec<_> = cgroups_of(&node.sh("cat /proc/self/cgroup").unwrap())
        .into_iter()
        .filter(|(controllers, _)| mounted(controllers))
        .collect();
    let v1 = node_cgroups.iter().any(|(controllers, _)| !controllers.is_empty());
    assert!(!node_cgroups.is_empty(), "no cgroup hierarchy in the node");
    let seen = cgroups_of(&printed);
    for (controllers, _) in node_cgroups.iter().filter(|(c, _)| v1 != c.is_empty()) {
        let path = seen.iter().find(|(c, _)| c == controllers).map(|(_, p)| p.as_str());
        assert_eq!(path, Some(want.as_str()), "controller {controllers:?}: {printed}");
    }

    // An ExecSync process is placed as the container's own are.
    let app = run(&mut c, &pod, &pc, sleeper("app")).await;
    let r = exec(&mut c, &app, &["cat", "/proc/self/cgroup"], 10).await.unwrap();
    let printed = String::from_utf8_lossy(&r.stdout).into_owned();
    let want = format!("/podbay/{pod}/{app}");
    let seen = cgroups_of(&printed);
    for (controllers, _) in node_cgroups.iter().filter(|(c, _)| v1 != c.is_empty()) {
        let path = seen.iter().find(|(c, _)| c == controllers).map(|(_, p)| p.as_str());
        assert_eq!(path, Some(want.as_str()), "exec, controller {controllers:?}: {printed}");
    }
    // The pod's v1 cpuset got the node's CPUs, its load balancing cleared before (the
    // root's balances over all CPUs), and the container's cpuset was born with them.
    let cpuset = std::path::Path::new("/sys/fs/cgroup/cpuset");
    if v1 && cpuset.join(format!("podbay/{pod}")).exists() {
        let read =
            |rel: String| std::fs::read_to_string(cpuset.join(rel)).unwrap().trim().to_owned();
        let all = read("cpuset.cpus".into());
        assert_eq!(read(format!("podbay/{pod}/cpuset.cpus")), all);
        assert_eq!(read(format!("podbay/{pod}/{app}/cpuset.cpus")), all);
        let balanced = read("cpuset.sched_load_balance".into()) == "1";
        let pod_flag = read(format!("podbay/{pod}/cpuset.sched_load_balance"));
        assert_eq!(pod_flag, if balanced { "0" } else { "1" });
    }
    // Each exec's notify socket goes with it (libcontainer's tenant builder left one per
    // exec in the container's state dir, which kubelet's exec probes would fill).
    for _ in 0..3 {
        assert_eq!(exec(&mut c, &app, &["true"], 10).await.unwrap().exit_code, 0);
    }
    // A command that cannot run is an error that names it, and leaves nothing either.
    let e = exec(&mut c, &app, &["/no/such/program"], 10).await.unwrap_err();
    assert!(e.message().contains("/no/such/program"), "{e:?}");
    let state = node.run_dir().join(format!("pods/{pod}/c/{app}"));
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tenant-"))
        .collect();
    assert!(left.is_empty(), "{}: {left:?}", state.display());
    remove_pod(&mut c, &pod).await.unwrap();
    assert_no_cgroups(&[&pod]);
}

/// Mount points at `path` in the node's mount table.
fn mounts_at(node: &Node, path: &std::path::Path) -> usize {
    let table = node.sh("awk '{print $5}' /proc/self/mountinfo").unwrap();
    table.lines().filter(|l| std::path::Path::new(l) == path).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_made_apart_from_other_pods_mounts_and_leave_the_node_alone() {
    require_root!();
    let mut node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let containers = node.root().join("containers");
    // The pods and containers dirs are mount points of the daemon's own (libcontainer runs
    // where they hold only the one pod's and the one container's mounts).
    assert_eq!(mounts_at(&node, &node.pods_dir()), 1);
    assert_eq!(mounts_at(&node, &containers), 1);

    let pa = logged_pod(&node, "a");
    let a = run_pod(&mut c, pa.clone()).await.unwrap();
    let first = run(&mut c, &a, &pa, sleeper("first")).await;
    let before = node.sh("cat /proc/self/mountinfo | wc -l").unwrap();
    let pb = logged_pod(&node, "b");
    let b = run_pod(&mut c, pb.clone()).await.unwrap();
    let second = run(&mut c, &b, &pb, sleeper("second")).await;
    // What the second container's making detached in its own namespace stayed in the
    // node: pod a's pins, /dev/shm and rootfs, and the one container works on.
    let table = node.sh("awk '{print $5}' /proc/self/mountinfo").unwrap();
    for kept in [format!("/{a}/ns/net"), format!("/{a}/shm"), format!("/{first}/rootfs")] {
        assert!(table.lines().any(|l| l.ends_with(&kept)), "{kept} gone: {table}");
    }
    let after = node.sh("cat /proc/self/mountinfo | wc -l").unwrap();
    let grown = after.trim().parse::<i64>().unwrap() - before.trim().parse::<i64>().unwrap();
    assert!(grown <= 6, "pod b and its container added {grown} mounts");
    for id in [&first, &second] {
        let r = exec(&mut c, id, &["sh", "-c", "echo ok > /tmp/x && cat /tmp/x"], 10).await;
        assert_eq!(String::from_utf8_lossy(&r.unwrap().stdout).trim(), "ok");
    }

    // A daemon restart keeps the mount points as they are (nothing stacked).
    drop(c);
    node.kill_daemon().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert_eq!(mounts_at(&node, &node.pods_dir()), 1);
    assert_eq!(mounts_at(&node, &containers), 1);
    let third = run(&mut c, &a, &pa, sleeper("third")).await;
    assert_eq!(status(&mut c, &third).await.0.state, cri::ContainerState::ContainerRunning as i32);
    remove_pod(&mut c, &a).await.unwrap();
    remove_pod(&mut c, &b).await.unwrap();
    node.assert_clean().unwrap();
    // A clean shutdown with nothing left leaves no mount of podbay's in the node.
    drop(c);
    node.stop_daemon().unwrap();
    assert_eq!(mounts_at(&node, &node.pods_dir()), 0);
    assert_eq!(mounts_at(&node, &containers), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_see_the_nodes_later_mounts_from_the_view_namespace_or_a_copy() {
    require_root!();
    // A node whose mounts are all shared (as a systemd host's) gets a view namespace; one
    // with a private mount gets a copy of its table for every container. Either way a
    // mount the node makes after the pods started is in a container made after it.
    for private in [false, true] {
        let mut node = Node::empty().unwrap();
        if private {
            node.sh("mount --make-rprivate /").unwrap();
        }
        node.start_daemon().unwrap();
        node.import_busybox().unwrap();
        let mut c = node.client().await.unwrap();
        let pc = logged_pod(&node, "late");
        let pod = run_pod(&mut c, pc.clone()).await.unwrap();
        run(&mut c, &pod, &pc, sleeper("first")).await;
        let late = node.dir().join("late");
        let d = late.display();
        node.sh(&format!(
            "mkdir {d} && mount -t tmpfs -o size=1m tmpfs {d} && touch {d}/from-node"
        ))
        .unwrap();
        let mut config = sleeper("second");
        config.mounts.push(cri::Mount {
            container_path: "/late".into(),
            host_path: late.to_string_lossy().into_owned(),
            ..Default::default()
        });
        let second = run(&mut c, &pod, &pc, config).await;
        assert_eq!(sh(&mut c, &second, "ls /late").await, (0, "from-node\n".into()), "{private}");
        let log = std::fs::read_to_string(node.pods_dir().join(&pod).join("supervisor.log"))
            .unwrap_or_default();
        let want = if private { "a copy of the node's mount table" } else { "the view namespace" };
        assert!(log.contains(want), "{private}: {log}");
        remove_pod(&mut c, &pod).await.unwrap();
        node.sh(&format!("umount {d}")).unwrap();
        assert_no_cgroups(&[&pod]);
        node.assert_clean().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_left_under_the_pods_dir_keep_it_as_it_is() {
    require_root!();
    // A run dir with a mount under its pods dir and no mount point of its own (as an
    // older podbay's pods leave it): the daemon makes no mount point over it (a bind would
    // copy the mount below), and containers are made as before.
    let mut node = Node::empty().unwrap();
    node.start_daemon().unwrap();
    node.stop_daemon().unwrap();
    let pods = node.pods_dir();
    let old = pods.join("old/shm");
    node.sh(&format!("mkdir -p {0} && mount -t tmpfs old {0}", old.display())).unwrap();
    node.start_daemon().unwrap();
    node.import_busybox().unwrap();
    assert_eq!(mounts_at(&node, &pods), 0);
    assert!(node.log().contains("is mounted under it"), "{}", node.log());
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "plain");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    assert_eq!(status(&mut c, &id).await.0.state, cri::ContainerState::ContainerRunning as i32);
    remove_pod(&mut c, &pod).await.unwrap();
    let _ = node.sh(&format!("umount {}", old.display()));
}

/// A volume with the default propagation (Private) is cut off from the node's mount on
/// both sides, even where that mount is shared (kubelet's dirs are): the node's later
/// mounts under it do not reach the container, and a privileged container's mounts do
/// not reach the node (only Bidirectional may, which kubelet allows privileged pods
/// alone).
#[tokio::test(flavor = "multi_thread")]
async fn private_mount_propagates_nothing_either_way() {
    require_root!();
    let node = node_with_busybox();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "private");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let dir = shared_kubelet_dir(&node, "vol");
    let d = dir.display();
    let mut config = sleeper("private");
    with_volume(&mut config, &dir.join("vol"), "/vol", cri::MountPropagation::PropagationPrivate);
    security(&mut config).privileged = true;
    let ctr = run(&mut c, &pod, &pc, config).await;
    let (code, out) = sh(&mut c, &ctr, "grep ' /vol ' /proc/self/mountinfo").await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("shared:") && !out.contains("master:"), "not private: {out}");

    node.sh(&format!(
        "mkdir {d}/vol/from-node && mount -t tmpfs -o size=1m tmpfs {d}/vol/from-node && touch {d}/vol/from-node/f"
    ))
    .unwrap();
    assert_eq!(sh(&mut c, &ctr, "ls /vol/from-node").await, (0, String::new()));
    let (code, out) = sh(
        &mut c,
        &ctr,
        "mkdir /vol/from-ctr && mount -t tmpfs -o size=1m tmpfs /vol/from-ctr && touch /vol/from-ctr/f",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(node.sh(&format!("ls {d}/vol/from-ctr")).unwrap(), "");

    remove_pod(&mut c, &pod).await.unwrap();
    node.sh(&format!("umount -R {d}")).unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

/// A volume whose destination passes through one of the image's symlinks (most images'
/// `/var/run` leads to `/run`; kubelet mounts the service account's token below it) is
/// mounted where the symlink leads, with its own propagation, and so is every mount after
/// it (podbay's mounts, not libcontainer's, which ignore the propagation they are given).
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_through_an_image_symlink_is_mounted_where_it_leads() {
    require_root!();
    let node = node_with_busybox();
    let links = podbay_tests::images::Tar::default().dir("var/").symlink("var/run", "../run");
    podbay_tests::attack::import_tar(&node, "localhost/varrun:1", links).unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "varrun");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let dir = node.dir().join("kubelet");
    let d = dir.display();
    node.sh(&format!(
        "mkdir -p {d} && mount --bind {d} {d} && mount --make-rshared {d} && mkdir {d}/token {d}/data && echo t > {d}/token/token"
    ))
    .unwrap();
    let mut config = sleeper("varrun");
    config.image =
        Some(cri::ImageSpec { image: "localhost/varrun:1".into(), ..Default::default() });
    for (path, host) in [("/var/run/secrets/sa", "token"), ("/data", "data")] {
        config.mounts.push(cri::Mount {
            container_path: path.into(),
            host_path: dir.join(host).to_string_lossy().into_owned(),
            readonly: host == "token",
            ..Default::default()
        });
    }
    let ctr = run(&mut c, &pod, &pc, config).await;
    assert_eq!(sh(&mut c, &ctr, "cat /var/run/secrets/sa/token").await, (0, "t\n".into()));
    let (code, out) = sh(&mut c, &ctr, "cat /proc/self/mountinfo").await;
    assert_eq!(code, 0, "{out}");
    for dest in [" /run/secrets/sa ", " /data "] {
        let line =
            out.lines().find(|l| l.contains(dest)).unwrap_or_else(|| panic!("{dest}: {out}"));
        assert!(!line.contains("shared:") && !line.contains("master:"), "not private: {line}");
    }
    node.sh(&format!("mkdir {d}/data/sub && mount -t tmpfs -o size=1m tmpfs {d}/data/sub"))
        .unwrap();
    assert_eq!(sh(&mut c, &ctr, "grep -c ' /data/sub ' /proc/self/mountinfo").await.1, "0\n");

    remove_pod(&mut c, &pod).await.unwrap();
    node.sh(&format!("umount -R {d}")).unwrap();
    assert_no_cgroups(&[&pod]);
    node.assert_clean().unwrap();
}

/// On a cgroup v2 node containers are made by podbay's own launch too (libcontainer's
/// builder ignored the propagation of every mount): a Private volume of a shared node
/// mount is private, the masks are the node's shared empty directory, the cgroup mount
/// comes last, and the container has a cgroup namespace rooted at its own cgroup. The node
/// here mounts the host's unified hierarchy at /sys/fs/cgroup; its controllers are
/// v1's on this machine, so no limit is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_cgroup_v2_node_makes_containers_with_podbays_mounts() {
    require_root!();
    // A parent of its own in the host's unified hierarchy: the other tests' daemons (v1
    // nodes) remove an empty `/podbay` in every hierarchy when their last pod goes.
    let parent = format!("/pbtv2-{}", std::process::id());
    // Gone also when the test fails half-way: declared before the node, it drops after
    // the node's teardown has killed the node's processes.
    struct RemoveTree(String);
    impl Drop for RemoveTree {
        fn drop(&mut self) {
            podbay_tests::remove_cgroup_tree(&self.0);
        }
    }
    let _tree = RemoveTree(parent.clone());
    let mut node = Node::empty().unwrap();
    node.sh("umount -R /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup").unwrap();
    node.start_daemon().unwrap();
    node.import_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let mut pc = logged_pod(&node, "v2");
    pc.linux.get_or_insert_default().cgroup_parent = parent.clone();
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let dir = shared_kubelet_dir(&node, "vol");
    let d = dir.display();
    let mut config = sleeper("private");
    with_volume(&mut config, &dir.join("vol"), "/vol", cri::MountPropagation::PropagationPrivate);
    security(&mut config).seccomp = runtime_default();
    let ctr = run(&mut c, &pod, &pc, config).await;
    // The filter is the container's and its execs' (which install it themselves, after
    // their helper's clone3 into the container's cgroup).
    let (code, out) = sh(&mut c, &ctr, "grep Seccomp: /proc/1/status /proc/self/status").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("Seccomp:\t2").count(), 2, "{out}");
    let (code, out) = sh(&mut c, &ctr, "unshare -U true").await;
    assert_ne!(code, 0, "RuntimeDefault blocks unshare: {out}");

    let (code, mounts) = sh(&mut c, &ctr, "cat /proc/self/mountinfo").await;
    assert_eq!(code, 0, "{mounts}");
    let line = |dest: &str| {
        mounts.lines().find(|l| l.split(' ').nth(4) == Some(dest)).unwrap_or_default().to_owned()
    };
    let vol = line("/vol");
    assert!(!vol.is_empty() && !vol.contains("shared:") && !vol.contains("master:"), "{mounts}");
    let empty = format!("{}/empty ", node.run_dir().file_name().unwrap().to_string_lossy());
    for masked in ["/proc/acpi", "/sys/firmware"] {
        assert!(line(masked).contains(&empty), "{masked}: {mounts}");
    }
    let last = mounts.lines().position(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup"));
    let vol_at = mounts.lines().position(|l| l.split(' ').nth(4) == Some("/vol"));
    assert!(last > vol_at, "the cgroup mount comes last: {mounts}");
    node.sh(&format!(
        "mkdir {d}/vol/from-node && mount -t tmpfs -o size=1m tmpfs {d}/vol/from-node && touch {d}/vol/from-node/f"
    ))
    .unwrap();
    assert_eq!(sh(&mut c, &ctr, "ls /vol/from-node").await, (0, String::new()));

    // Its own cgroup, the root of its cgroup namespace (as an exec, which joins both,
    // reads it), whose limits its cgroup2 mount shows. (The kernel lists the host's v1
    // hierarchies as well.)
    let (code, cgroups) = sh(&mut c, &ctr, "cat /proc/self/cgroup").await;
    assert_eq!(code, 0, "{cgroups}");
    assert!(cgroups.lines().any(|l| l == "0::/"), "{cgroups}");
    let procs = node.sh(&format!("cat /sys/fs/cgroup{parent}/{ctr}/cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 1, "the sleeper: {procs}");
    // An exec's process is in the container's cgroup too (born there, as the init is).
    let (code, out) = sh(&mut c, &ctr, "grep -x $$ /sys/fs/cgroup/cgroup.procs && echo in").await;
    assert_eq!((code, out.lines().last()), (0, Some("in")), "{out}");
    let (code, own) = sh(&mut c, &ctr, "ls /sys/fs/cgroup | grep -c pbtv2").await;
    assert_eq!((code, own.trim()), (1, "0"), "the node's tree is not shown");

    remove_pod(&mut c, &pod).await.unwrap();
    node.sh(&format!("umount -R {d}")).unwrap();
    // The parent (wherever the host mounts its unified hierarchy) is empty: the
    // container's cgroup went.
    let made: Vec<_> =
        podbay_tests::cgroup_dirs(&parent).into_iter().filter(|d| d.is_dir()).collect();
    assert!(!made.is_empty(), "no {parent} in any hierarchy");
    for dir in made {
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    node.assert_clean().unwrap();
}
