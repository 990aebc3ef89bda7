//! Pods with their own user namespace (CRI userns_options mode POD, kubelet's
//! `hostUsers: false`): the pod's root is an unprivileged uid on the node, the image's
//! files keep their owners through idmapped layers, and what is not the pod's stays out
//! of its reach.

use podbay_tests::attack::import_tar;
use podbay_tests::ctr::{create, logged_pod, pid_of, run, security, sh, sleeper, status};
use podbay_tests::images::Tar;
use podbay_tests::{Client, Node, cri, remove_pod, require_root, run_pod};

/// The pod's ids on the node: 0…65535 in the pod are these.
const HOST_BASE: u32 = 231_072;

fn maps(base: u32) -> cri::UserNamespace {
    let range = |host_id| vec![cri::IdMapping { host_id, container_id: 0, length: 65536 }];
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: range(base),
        gids: range(base),
    }
}

fn with_userns(mut p: cri::PodSandboxConfig, userns: cri::UserNamespace) -> cri::PodSandboxConfig {
    let linux = p.linux.get_or_insert_default();
    let ns =
        linux.security_context.get_or_insert_default().namespace_options.get_or_insert_default();
    ns.userns_options = Some(userns);
    p
}

/// A container config as kubelet makes it for such a pod: the pod's userns_options again.
fn in_userns(mut c: cri::ContainerConfig, userns: cri::UserNamespace) -> cri::ContainerConfig {
    let ns = security(&mut c).namespace_options.get_or_insert(cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    });
    ns.userns_options = Some(userns);
    c
}

fn bind(host: &std::path::Path, container: &str, idmap: Option<&cri::UserNamespace>) -> cri::Mount {
    cri::Mount {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.into(),
        uid_mappings: idmap.map(|m| m.uids.clone()).unwrap_or_default(),
        gid_mappings: idmap.map(|m| m.gids.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_root_is_root_only_inside_its_user_namespace() {
    require_root!();
    let mut node = Node::with_busybox().unwrap();
    let image = "example.com/owned:1";
    let layer = Tar::default()
        .dir("data/")
        .owned_file("data/app", b"app\n", 0o640, 1000, 1000)
        .owned_file("data/root", b"root\n", 0o644, 0, 0);
    import_tar(&node, image, layer).unwrap();
    // A file of the node's root, and a dir of the node's root that the pod asks to see
    // idmapped (as kubelet's volumes).
    let host = node.dir().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("secret"), "node\n").unwrap();
    let shared = node.dir().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let mut c = node.client().await.unwrap();

    let features = c.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let handler = &features.runtime_handlers[0];
    assert!(handler.features.as_ref().unwrap().user_namespaces, "{handler:?}");

    let userns = maps(HOST_BASE);
    let pc = with_userns(logged_pod(&node, "userns"), userns.clone());
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let mut config = in_userns(sleeper("app"), userns.clone());
    config.image = Some(cri::ImageSpec { image: image.into(), ..Default::default() });
    config.mounts = vec![bind(&host, "/host", None), bind(&shared, "/shared", Some(&userns))];
    let id = run(&mut c, &pod, &pc, config).await;

    // Root in the pod, the maps kubelet chose.
    let (code, out) =
        sh(&mut c, &id, "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map").await;
    assert_eq!(code, 0, "{out}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["0", "0", "0", "231072", "65536", "0", "231072", "65536"], "{out}");

    // The node sees the container's process under the mapped uid.
    let (_, info) = status(&mut c, &id).await;
    let pid = pid_of(&info);
    let uid = node.sh(&format!("awk '/^Uid:/ {{print $2}}' /proc/{pid}/status")).unwrap();
    assert_eq!(uid.trim(), HOST_BASE.to_string());

    // The image's files keep their owners; the pod's root owns /.
    let (_, owners) = sh(&mut c, &id, "stat -c %u:%g /data/app /data/root / /bin/busybox").await;
    assert_eq!(owners.split_whitespace().collect::<Vec<_>>(), ["1000:1000", "0:0", "0:0", "0:0"]);
    let (code, _) =
        sh(&mut c, &id, "cat /data/app && echo new > /data/made && chown 1000 /data/made").await;
    assert_eq!(code, 0);
    // What the pod writes is stored under the node's ids for it.
    let upper = node.root().join("containers").join(&id).join("upper/data/made");
    let on_node = node.sh(&format!("stat -c %u {}", upper.display())).unwrap();
    assert_eq!(on_node.trim(), (HOST_BASE + 1000).to_string());

    // The pod's files and /dev/shm work.
    let (code, out) = sh(
        &mut c,
        &id,
        "hostname; test -s /etc/resolv.conf && echo resolv; echo x > /dev/shm/x && echo shm",
    )
    .await;
    assert_eq!(
        (code, out.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["userns", "resolv", "shm"])
    );

    // A mount of the node's files that is not idmapped: the node's root is nobody here, and
    // the pod's root cannot write what the node's root can.
    let (code, out) =
        sh(&mut c, &id, "stat -c %u /host/secret; echo pwned >> /host/secret; echo $?").await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"65534"), "{out}");
    assert_ne!(lines.last(), Some(&"0"), "the pod's root wrote a file of the node's root: {out}");
    assert_eq!(std::fs::read_to_string(host.join("secret")).unwrap(), "node\n");
    // Nor can it reach the node: no module loading, no writes to the node's sysctls.
    let (code, _) = sh(&mut c, &id, "echo 1 > /proc/sys/kernel/sysrq").await;
    assert_ne!(code, 0);

    // The idmapped mount shows the node's root as the pod's, and the pod's root files
    // there as the node's root.
    let (code, out) = sh(&mut c, &id, "stat -c %u /shared; echo hi > /shared/f && echo ok").await;
    assert_eq!((code, out.split_whitespace().collect::<Vec<_>>()), (0, vec!["0", "ok"]));
    let owner = node.sh(&format!("stat -c %u:%g {}", shared.join("f").display())).unwrap();
    assert_eq!(owner.trim(), "0:0");
    // Nothing of the idmapped clones is left in the node's mount table.
    let points = node.sh("awk '{print $5}' /proc/self/mountinfo").unwrap();
    assert!(!points.contains("/idmapped/"), "{points}");

    // An exec'd command runs where the container's init does: same user namespace, same
    // cgroup.
    let (_, exec_cgroup) = sh(&mut c, &id, "grep memory /proc/self/cgroup").await;
    let init_cgroup = node.sh(&format!("grep memory /proc/{pid}/cgroup")).unwrap();
    assert_eq!(exec_cgroup, init_cgroup);

    // The log works (the supervisor writes it, not the pod).
    let (code, _) = sh(&mut c, &id, "true").await;
    assert_eq!(code, 0);
    assert!(node.dir().join("logs/userns").exists());

    // After a daemon crash the pod is recovered with its user namespace.
    drop(c);
    node.kill_daemon().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let (code, out) = sh(&mut c, &id, "id -u; cat /proc/self/uid_map").await;
    assert_eq!(
        (code, out.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["0", "0", "231072", "65536"])
    );
    let second = in_userns(sleeper("second"), userns.clone());
    let second = run(&mut c, &pod, &pc, second).await;
    assert_eq!(sh(&mut c, &second, "id -u").await, (0, "0\n".into()));

    remove_pod(&mut c, &pod).await.unwrap();
    let mounts = node.sh("cat /proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&pod), "pins left: {mounts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespace_requests_are_checked_and_leave_nothing() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c: Client = node.client().await.unwrap();
    let field_of = |e: tonic::Status| (e.code(), e.message().to_owned());

    let mut no_maps = maps(HOST_BASE);
    no_maps.gids.clear();
    let mut node_root = maps(HOST_BASE);
    node_root.uids[0].host_id = 0;
    let mut overlap = maps(HOST_BASE);
    overlap.uids.push(cri::IdMapping { host_id: 500_000, container_id: 100, length: 10 });
    let mut no_root = maps(HOST_BASE);
    no_root.uids[0].container_id = 1;
    let mut container_mode = maps(HOST_BASE);
    container_mode.mode = cri::NamespaceMode::Container as i32;
    for (bad, field) in [
        (no_maps, "userns_options.gids"),
        (node_root, "userns_options.uids[0]"),
        (overlap, "userns_options.uids[1]"),
        (no_root, "userns_options.uids"),
        (container_mode, "userns_options.mode"),
    ] {
        let (code, msg) = field_of(refused(&mut c, with_userns(pod_named("bad"), bad)).await);
        assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
        assert!(msg.contains(field), "{field}: {msg}");
    }
    // The node's network with the pod's own user namespace: kubelet never asks it.
    let mut host_net = with_userns(pod_named("hostnet"), maps(HOST_BASE));
    host_net
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = cri::NamespaceMode::Node as i32;
    let e = refused(&mut c, host_net).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());

    // A container that names other maps than its pod's.
    let pc = with_userns(pod_named("good"), maps(HOST_BASE));
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let e = create(&mut c, &pod, &pc, in_userns(sleeper("other"), maps(HOST_BASE + 65536)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("userns_options"), "{}", e.message());
    let node_mode =
        cri::UserNamespace { mode: cri::NamespaceMode::Node as i32, ..Default::default() };
    let e = create(&mut c, &pod, &pc, in_userns(sleeper("node"), node_mode)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    let listed = c
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
    remove_pod(&mut c, &pod).await.unwrap();
    let pods =
        c.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.unwrap().into_inner();
    assert!(pods.items.is_empty(), "{:?}", pods.items);
}

async fn refused(c: &mut Client, config: cri::PodSandboxConfig) -> tonic::Status {
    let req = cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
    c.run_pod_sandbox(req).await.unwrap_err()
}

fn pod_named(name: &str) -> cri::PodSandboxConfig {
    podbay_tests::pod_config(name)
}
