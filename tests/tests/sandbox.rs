//! Pod sandbox lifecycle over CRI, in a node namespace of its own per test.

use std::time::Duration;

use podbay_tests::*;
use tonic::Code;

#[tokio::test]
async fn lifecycle_and_idempotence() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();

    let id = run_pod(&mut c, pod_config("web")).await.unwrap();
    assert_eq!(id.len(), 64);
    assert!(is_ready(&mut c, &id).await.unwrap());
    // kubelet retrying the same attempt gets the same sandbox.
    assert_eq!(run_pod(&mut c, pod_config("web")).await.unwrap(), id);
    assert_eq!(list_pods(&mut c).await.unwrap().len(), 1);

    let status = pod_status(&mut c, &id).await.unwrap().status.unwrap();
    assert_eq!(status.metadata.unwrap().name, "web");
    assert_eq!(status.labels["app"], "web");
    assert!(status.created_at > 0);

    // The pod's dir is a mount point of its own while it runs (containers' helpers clone
    // it); a stopped pod holds no mount at all.
    let pod_dir = node.pods_dir().join(&id).display().to_string();
    let under_pod = |m: &String| m == &pod_dir || m.starts_with(&format!("{pod_dir}/"));
    assert!(node.mounts().unwrap().contains(&pod_dir), "{pod_dir} is no mount point");
    stop_pod(&mut c, &id).await.unwrap();
    assert!(!is_ready(&mut c, &id).await.unwrap());
    let left: Vec<String> = node.mounts().unwrap().into_iter().filter(under_pod).collect();
    assert!(left.is_empty(), "a stopped pod holds {left:?}");
    stop_pod(&mut c, &id).await.unwrap();
    // A stopped attempt is not silently reused.
    let again = run_pod(&mut c, pod_config("web")).await.unwrap_err();
    assert_eq!(again.downcast_ref::<tonic::Status>().unwrap().code(), Code::AlreadyExists);

    remove_pod(&mut c, &id).await.unwrap();
    remove_pod(&mut c, &id).await.unwrap();
    let gone = pod_status(&mut c, &id).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // Unknown ids: stop and remove succeed, status is NotFound.
    let unknown = "0".repeat(64);
    stop_pod(&mut c, &unknown).await.unwrap();
    remove_pod(&mut c, &unknown).await.unwrap();
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn concurrent_retries_get_one_sandbox() {
    require_root!();
    let node = Node::start().unwrap();
    let c = node.client().await.unwrap();
    let runs = (0..4).map(|_| {
        let mut c = c.clone();
        tokio::spawn(async move { run_pod(&mut c, pod_config("same")).await.unwrap() })
    });
    let ids: Vec<String> = futures_join(runs).await;
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let mut c = c.clone();
    assert_eq!(list_pods(&mut c).await.unwrap().len(), 1);
    remove_pod(&mut c, &ids[0]).await.unwrap();
    node.assert_clean().unwrap();
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn list_filters() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, pod_config("a")).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    stop_pod(&mut c, &b).await.unwrap();
    let state = |s: cri::PodSandboxState| Some(cri::PodSandboxStateValue { state: s as i32 });
    let cases = [
        (cri::PodSandboxFilter { id: a[..8].into(), ..Default::default() }, &a),
        (
            cri::PodSandboxFilter {
                state: state(cri::PodSandboxState::SandboxReady),
                ..Default::default()
            },
            &a,
        ),
        (
            cri::PodSandboxFilter {
                state: state(cri::PodSandboxState::SandboxNotready),
                ..Default::default()
            },
            &b,
        ),
        (
            cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "b".to_string())].into(),
                ..Default::default()
            },
            &b,
        ),
    ];
    for (filter, want) in cases {
        let req = cri::ListPodSandboxRequest { filter: Some(filter.clone()) };
        let items = c.list_pod_sandbox(req).await.unwrap().into_inner().items;
        let ids: Vec<_> = items.into_iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![want.clone()], "{filter:?}");
    }
    // Status by unique prefix works too.
    assert!(is_ready(&mut c, &a[..10]).await.unwrap());
}

#[tokio::test]
async fn namespaces_hostname_and_files() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let mut config = with_pid_mode(pod_config("ns"), cri::NamespaceMode::Pod);
    config.hostname = "ns-host".into();
    config.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let id = run_pod(&mut c, config).await.unwrap();
    let info = pod_info(&mut c, &id).await.unwrap();
    let pid = info["pid"].as_u64().unwrap();
    let init = info["podInit"]["pid"].as_u64().unwrap();

    let ns = |pid: u64, kind: &str| node.sh(&format!("readlink /proc/{pid}/ns/{kind}")).unwrap();
    for kind in ["net", "ipc", "uts"] {
        assert_ne!(ns(pid, kind), ns(1, kind), "{kind} must be the pod's own");
        // The pinned namespace is the supervisor's.
        let pinned = node
            .sh(&format!("stat -L -c %i {}", info["namespaces"][kind].as_str().unwrap()))
            .unwrap();
        assert!(ns(pid, kind).contains(pinned.trim()), "{kind} pin");
    }
    // PID mode POD: the pod's PID 1 is in a new PID namespace; the supervisor is not.
    assert_eq!(ns(pid, "pid"), ns(1, "pid"));
    assert_ne!(ns(init, "pid"), ns(1, "pid"));
    assert_eq!(
        node.sh(&format!("grep NSpid /proc/{init}/status")).unwrap().split_whitespace().last(),
        Some("1")
    );

    // pod-init reaps what is orphaned in the pod's PID namespace: a child whose parent exits
    // is handed to it and must not stay a zombie.
    let pidns = info["namespaces"]["pid"].as_str().unwrap();
    node.sh(&format!("nsenter --pid={pidns} sh -c 'sleep 0.2 & exit 0'")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let zombies = node.sh("grep -l '^State:.*Z' /proc/[0-9]*/status || true").unwrap();
    assert!(zombies.trim().is_empty(), "zombies left: {zombies}");

    let uts = info["namespaces"]["uts"].as_str().unwrap();
    assert_eq!(node.sh(&format!("nsenter --uts={uts} hostname")).unwrap().trim(), "ns-host");
    let net = info["namespaces"]["net"].as_str().unwrap();
    let lo = node.sh(&format!("nsenter --net={net} ip -o link show lo")).unwrap();
    assert!(lo.contains("UP"), "lo must be up: {lo}");

    let pod_dir = std::path::PathBuf::from(info["podDir"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(pod_dir.join("hostname")).unwrap(), "ns-host\n");
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("resolv.conf")).unwrap(),
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(
        std::fs::read_to_string(pod_dir.join("hosts")).unwrap().contains("127.0.0.1\tlocalhost")
    );
    let shm = node.sh("grep /shm /proc/self/mounts").unwrap();
    for opt in ["tmpfs", "nosuid", "nodev", "noexec", "size=65536k"] {
        assert!(shm.contains(opt), "{opt} in {shm}");
    }
    remove_pod(&mut c, &id).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn host_namespaces_and_default_resolv_conf() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let mut config = with_network_mode(pod_config("hostnet"), cri::NamespaceMode::Node);
    ns_ipc_node(&mut config);
    let id = run_pod(&mut c, config).await.unwrap();
    let info = pod_info(&mut c, &id).await.unwrap();
    let pid = info["pid"].as_u64().unwrap();
    for kind in ["net", "ipc", "uts"] {
        let pod = node.sh(&format!("readlink /proc/{pid}/ns/{kind}")).unwrap();
        assert_eq!(pod, node.sh(&format!("readlink /proc/1/ns/{kind}")).unwrap(), "{kind}");
    }
    assert_eq!(info["shm"], "/dev/shm");
    assert!(info["podInit"].is_null(), "PID mode CONTAINER has no pod PID 1");
    let pod_dir = std::path::PathBuf::from(info["podDir"].as_str().unwrap());
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(std::fs::read_to_string(pod_dir.join("resolv.conf")).unwrap(), host);
    remove_pod(&mut c, &id).await.unwrap();
    node.assert_clean().unwrap();
}

fn ns_ipc_node(c: &mut cri::PodSandboxConfig) {
    let opts = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    opts.namespace_options.as_mut().unwrap().ipc = cri::NamespaceMode::Node as i32;
}

#[tokio::test]
async fn daemon_restart_keeps_pods_running() {
    require_root!();
    let mut node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let id = run_pod(&mut c, with_pid_mode(pod_config("survivor"), cri::NamespaceMode::Pod))
        .await
        .unwrap();
    let before = pod_info(&mut c, &id).await.unwrap();
    let stat = |node: &Node, pid: &serde_json::Value| {
        node.sh(&format!("cut -d' ' -f22 /proc/{pid}/stat")).unwrap()
    };
    let start_before = stat(&node, &before["pid"]);

    node.kill_daemon().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert!(is_ready(&mut c, &id).await.unwrap());
    let after = pod_info(&mut c, &id).await.unwrap();
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(stat(&node, &after["pid"]), start_before, "the supervisor was not restarted");
    assert_eq!(after["podInit"], before["podInit"]);

    remove_pod(&mut c, &id).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn killed_supervisor_makes_pod_not_ready() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let id = run_pod(&mut c, with_pid_mode(pod_config("victim"), cri::NamespaceMode::Pod))
        .await
        .unwrap();
    let pid = pod_info(&mut c, &id).await.unwrap()["pid"].clone();
    node.sh(&format!("kill -9 {pid}")).unwrap();
    for _ in 0..500 {
        if !is_ready(&mut c, &id).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!is_ready(&mut c, &id).await.unwrap());
    stop_pod(&mut c, &id).await.unwrap();
    remove_pod(&mut c, &id).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn supervisor_dead_while_daemon_down() {
    require_root!();
    let mut node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let id = run_pod(&mut c, pod_config("lonely")).await.unwrap();
    let pid = pod_info(&mut c, &id).await.unwrap()["pid"].clone();
    node.kill_daemon().unwrap();
    node.sh(&format!("kill -9 {pid}")).unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert!(!is_ready(&mut c, &id).await.unwrap());
    remove_pod(&mut c, &id).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn reboot_leaves_pods_not_ready_and_removable() {
    require_root!();
    let mut node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, with_pid_mode(pod_config("a"), cri::NamespaceMode::Pod)).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    node.reboot().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert_eq!(list_pods(&mut c).await.unwrap().len(), 2);
    for id in [&a, &b] {
        assert!(!is_ready(&mut c, id).await.unwrap());
        stop_pod(&mut c, id).await.unwrap();
        remove_pod(&mut c, id).await.unwrap();
    }
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    type Edit = fn(&mut cri::PodSandboxConfig);
    let cases: Vec<(&str, Edit)> = vec![
        ("config.metadata", |c| c.metadata = None),
        ("config.metadata.name", |c| c.metadata.as_mut().unwrap().name.clear()),
        ("config.metadata.namespace", |c| c.metadata.as_mut().unwrap().namespace.clear()),
        ("config.metadata.uid", |c| c.metadata.as_mut().unwrap().uid.clear()),
        ("config.metadata.name", |c| c.metadata.as_mut().unwrap().name = "a/b".into()),
        ("config.metadata.name", |c| c.metadata.as_mut().unwrap().name = "a\0b".into()),
        ("config.metadata.namespace", |c| c.metadata.as_mut().unwrap().namespace = "n".repeat(254)),
        ("config.hostname", |c| c.hostname = "bad_host!".into()),
        ("config.hostname", |c| c.hostname = "h".repeat(65)),
        ("config.dns_config.options[0]", |c| {
            c.dns_config =
                Some(cri::DnsConfig { options: vec!["ndots 5".into()], ..Default::default() })
        }),
        ("config.dns_config.servers[0]", |c| {
            c.dns_config =
                Some(cri::DnsConfig { servers: vec!["dns.example".into()], ..Default::default() })
        }),
        ("config.log_directory", |c| c.log_directory = "relative/logs".into()),
    ];
    for (field, edit) in cases {
        let mut config = pod_config("bad");
        edit(&mut config);
        let err = run_pod(&mut c, config).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{field}: {}", status.message());
    }
    // No config at all.
    let err = c.run_pod_sandbox(cri::RunPodSandboxRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    node.assert_clean().unwrap();
}

/// The failpoint steps of RunPodSandbox, in order (`runtime/src/sandbox/run.rs`); `attach`
/// and `commit` (and its end, `committed`) run alongside each other.
const RUN_STEPS: [&str; 9] = [
    "sandbox.run.dirs",
    "sandbox.run.files",
    "sandbox.run.network",
    "sandbox.run.spawn",
    "sandbox.run.pin",
    "sandbox.run.shm",
    "sandbox.run.attach",
    "sandbox.run.commit",
    "sandbox.run.committed",
];

#[tokio::test]
async fn injected_failure_at_each_step_leaves_nothing() {
    require_root!();
    let mut node = Node::empty().unwrap();
    for (i, step) in RUN_STEPS.iter().enumerate() {
        // One failpoint at a time: restart the daemon with just this step armed.
        node.kill_daemon().unwrap();
        node.set_env(&[("PODBAY_FAILPOINTS", step)]);
        node.start_daemon().unwrap();
        let mut c = node.client().await.unwrap();
        let err =
            run_pod(&mut c, with_pid_mode(pod_config(&format!("f{i}")), cri::NamespaceMode::Pod))
                .await
                .unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert!(status.message().contains(step), "{step}: {status:?}");
        assert!(list_pods(&mut c).await.unwrap().is_empty(), "{step}: record left");
        node.assert_clean().unwrap_or_else(|e| panic!("{step}: {e}"));
    }
}

#[tokio::test]
async fn second_daemon_on_same_root_is_refused() {
    require_root!();
    let node = Node::start().unwrap();
    let out = node
        .daemon_command()
        .arg("--socket")
        .arg(node.dir().join("other.sock"))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already owns root"), "{err}");
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    require_root!();
    let mut node = Node::empty().unwrap();
    std::fs::create_dir_all(node.run_dir()).unwrap();
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(node.socket()).unwrap());
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(node.socket()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o660);
}

#[tokio::test]
async fn version_status_runtime_config_and_unimplemented() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let v = c.version(cri::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("podbay", "v1"));
    let s = c.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
    let conds = s.status.unwrap().conditions;
    let cond = |t: &str| conds.iter().find(|c| c.r#type == t).unwrap().clone();
    assert!(cond("RuntimeReady").status);
    assert!(cond("NetworkReady").status);
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["runtimeName"], "podbay");
    assert_eq!(info["network"]["ready"], true);
    let rc = c.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
    assert_eq!(rc.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
    let req = cri::CheckpointContainerRequest::default();
    let err = c.checkpoint_container(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"));
    let channel = podbay_tests::channel(&node.socket()).await.unwrap();
    let mut images = cri::image_service_client::ImageServiceClient::new(channel);
    // The ImageService is served on the same socket.
    let listed = images.list_images(cri::ListImagesRequest::default()).await.unwrap();
    assert!(listed.into_inner().images.is_empty());
}

#[tokio::test]
async fn two_hundred_cycles_leave_nothing() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let fds = || node.sh(&format!("ls /proc/{}/fd | wc -l", daemon_ns_pid(&node))).unwrap();
    // Warm up: the first pod opens the database pages, tokio's blocking pool, etc.
    for i in 0..5 {
        let id = run_pod(&mut c, pod_config(&format!("warm{i}"))).await.unwrap();
        remove_pod(&mut c, &id).await.unwrap();
    }
    let fds_before: u32 = fds().trim().parse().unwrap();
    for i in 0..200 {
        let config = if i % 2 == 0 {
            with_pid_mode(pod_config(&format!("c{i}")), cri::NamespaceMode::Pod)
        } else {
            pod_config(&format!("c{i}"))
        };
        let id = run_pod(&mut c, config).await.unwrap();
        if i % 3 == 0 {
            stop_pod(&mut c, &id).await.unwrap();
        }
        remove_pod(&mut c, &id).await.unwrap();
    }
    let fds_after: u32 = fds().trim().parse().unwrap();
    // tokio may keep a blocking-pool thread's fds; allow none to grow with the cycles.
    assert!(fds_after <= fds_before + 2, "daemon fds grew from {fds_before} to {fds_after}");
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    node.assert_clean().unwrap();
}

/// The daemon's pid as the node sees it.
fn daemon_ns_pid(node: &Node) -> u32 {
    let host = node.daemon_pid().expect("daemon running");
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace().last().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_killed_spawner_is_replaced() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, pod_config("before")).await.unwrap();
    node.sh("pkill -9 -x podbay-spawner").unwrap();
    // The next pod still starts (the daemon starts a new spawner), and the first pod's
    // supervisor did not depend on the old spawner.
    let b = run_pod(&mut c, pod_config("after")).await.unwrap();
    assert!(is_ready(&mut c, &a).await.unwrap());
    assert!(is_ready(&mut c, &b).await.unwrap());
    for id in [&a, &b] {
        remove_pod(&mut c, id).await.unwrap();
    }
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn crash_at_each_step_is_reconciled_at_start() {
    require_root!();
    let mut node = Node::empty().unwrap();
    // The last: the record is committed while the attach failed (it never reached the
    // kernel), then the daemon dies; the restarted daemon attaches the live pod's veth.
    let steps = RUN_STEPS
        .iter()
        .map(|s| format!("{s}=crash"))
        .chain(["sandbox.run.reply=crash".into()])
        .chain(["sandbox.run.attach,sandbox.run.committed=crash".into()]);
    for (i, failpoints) in steps.enumerate() {
        let step = failpoints.as_str();
        // The daemon dies (SIGKILL) at this step, half-way through a RunPodSandbox.
        node.set_env(&[("PODBAY_FAILPOINTS", step)]);
        node.start_daemon().unwrap();
        let mut c = node.client().await.unwrap();
        let config = with_pid_mode(pod_config(&format!("crash{i}")), cri::NamespaceMode::Pod);
        assert!(run_pod(&mut c, config).await.is_err(), "{step}: the daemon should have died");
        node.kill_daemon().unwrap();

        // The next start leaves either the whole sandbox or nothing.
        node.set_env(&[]);
        node.start_daemon().unwrap();
        let mut c = node.client().await.unwrap();
        let pods = list_pods(&mut c).await.unwrap();
        if step.ends_with("committed=crash") || step == "sandbox.run.reply=crash" {
            // Committed before the crash: the pod is there and running, its veth on the
            // bridge with hairpin mode, and the node reaches it.
            assert_eq!(pods.len(), 1, "{step}");
            let id = pods[0].id.clone();
            assert!(is_ready(&mut c, &id).await.unwrap(), "{step}");
            let port = node.sh(&format!("ip -d link show veth{}", &id[..8])).unwrap();
            assert!(port.contains("master cni0") && port.contains("hairpin on"), "{step}: {port}");
            let ip = pod_ip(&mut c, &id).await.unwrap();
            node.sh(&format!("ping -c1 -W2 {ip}")).unwrap_or_else(|e| panic!("{step}: {e}"));
            remove_pod(&mut c, &id).await.unwrap();
        } else {
            assert!(pods.is_empty(), "{step}: {pods:?}");
        }
        node.assert_clean().unwrap_or_else(|e| panic!("{step}: {e}"));
        node.kill_daemon().unwrap();
    }
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace_period() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config("[sandbox]\nstop_grace_seconds = 1\n");
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let id =
        run_pod(&mut c, with_pid_mode(pod_config("stuck"), cri::NamespaceMode::Pod)).await.unwrap();
    let pid = pod_info(&mut c, &id).await.unwrap()["pid"].clone();
    // A stopped process cannot act on SIGTERM; only SIGKILL ends it.
    node.sh(&format!("kill -STOP {pid}")).unwrap();
    let started = std::time::Instant::now();
    stop_pod(&mut c, &id).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "SIGKILL came before the grace period");
    assert!(!is_ready(&mut c, &id).await.unwrap());
    assert!(node.sh(&format!("test -e /proc/{pid} && echo alive || true")).unwrap().is_empty());
    remove_pod(&mut c, &id).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn state_dirs_are_not_world_readable() {
    require_root!();
    let node = Node::start().unwrap();
    let mode = |p: std::path::PathBuf| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(node.root()), 0o711);
    assert_eq!(mode(node.root().join("state.redb")), 0o600);
    assert_eq!(mode(node.pods_dir()), 0o711);
}

#[tokio::test]
async fn a_cancelled_run_finishes_and_its_retry_gets_the_sandbox() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    // Clients that give up at different points of a RunPodSandbox (kubelet's timeout, a
    // dropped connection). The work must neither be cut short nor leak; the retry for the
    // same pod attempt gets one ready sandbox.
    for (i, after_us) in [100u64, 400, 800, 1500, 3000].into_iter().enumerate() {
        let config = with_pid_mode(pod_config(&format!("cancel{i}")), cri::NamespaceMode::Pod);
        let mut impatient = node.client().await.unwrap();
        let _ = tokio::time::timeout(
            Duration::from_micros(after_us),
            run_pod(&mut impatient, config.clone()),
        )
        .await;
        drop(impatient);
        let id = run_pod(&mut c, config).await.unwrap();
        assert!(is_ready(&mut c, &id).await.unwrap());
    }
    let pods = list_pods(&mut c).await.unwrap();
    assert_eq!(pods.len(), 5, "one sandbox per pod attempt: {pods:?}");
    for p in pods {
        remove_pod(&mut c, &p.id).await.unwrap();
    }
    node.assert_clean().unwrap();
}
