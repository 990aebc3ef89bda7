//! kubelet's requests, replayed as kubelet builds them (pkg/kubelet/kuberuntime), and
//! what kubelet checks in the answers.

use std::collections::{BTreeMap, BTreeSet};

use podbay_tests::ctr::{
    create, list, list_stats, logged_pod, run, sh, sleeper, start, status, wait_exited,
};
use podbay_tests::kubelet::{
    CgroupRoot, ContainerShape, PodShape, Qos, container_config, ensure_image,
    hugepage_limits as kubelet_hugepage_limits, page_size_name, pod_sandbox_config,
};
use podbay_tests::{Client, Node, cri, remove_pod, require_root, run_pod};

fn with_hugepages(mut config: cri::ContainerConfig, limit: u64) -> cri::ContainerConfig {
    let linux = config.linux.get_or_insert_default();
    linux.resources.get_or_insert_default().hugepage_limits = kubelet_hugepage_limits(limit);
    config
}

/// Makes the hugetlb controller visible in the node (a cgroup v1 hierarchy of its own on
/// a private /sys/fs/cgroup, the other hierarchies bound back), before its daemon starts.
/// Dropping it removes every cgroup left in that hierarchy, so the kernel can let go of it.
struct HugetlbShown {
    node_init: u32,
}

impl HugetlbShown {
    fn mount(node: &Node) -> Self {
        let old = node.dir().join("cgroup-old");
        node.sh(&format!(
            // The copy is made private: the node's mounts are shared, and a peer of
            // /sys/fs/cgroup would receive the tmpfs mounted over it next.
            "set -e; mkdir -p {old}; mount --rbind /sys/fs/cgroup {old}; mount --make-rprivate {old}; \
             mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup; \
             for d in {old}/*; do n=${{d##*/}}; mkdir /sys/fs/cgroup/$n; \
               mount --bind $d /sys/fs/cgroup/$n; done; \
             mkdir /sys/fs/cgroup/hugetlb; mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb; \
             umount -l {old}",
            old = old.display()
        ))
        .unwrap();
        HugetlbShown { node_init: node.init_pid() }
    }
}

impl Drop for HugetlbShown {
    fn drop(&mut self) {
        let script = "cd /sys/fs/cgroup/hugetlb || exit 0; \
             for i in 1 2 3 4 5; do \
               find . -mindepth 2 -name cgroup.procs -exec cat {} + | xargs -r kill -9; \
               find . -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null; \
               [ -z \"$(find . -mindepth 1 -type d)\" ] && break; sleep 0.2; done";
        let _ = std::process::Command::new("nsenter")
            .args(["-t", &self.node_init.to_string(), "-m", "-p", "--", "sh", "-c", script])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hugepage_limits_are_dropped_without_the_controller_and_applied_with_it() {
    require_root!();
    assert_eq!(page_size_name(2 << 20), "2MB");
    assert_eq!(page_size_name(1 << 30), "1GB");
    if kubelet_hugepage_limits(0).is_empty() {
        eprintln!("skipped: the kernel lists no hugepage sizes");
        return;
    }

    // These machines' cgroup v1 has no hugetlb hierarchy: kubelet's limits are dropped.
    let node = Node::with_busybox().unwrap();
    assert!(
        !node
            .sh("grep -c ' cgroup .*hugetlb' /proc/self/mountinfo || true")
            .unwrap()
            .starts_with('1')
    );
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "hp");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, with_hugepages(sleeper("app"), 0)).await;
    assert_eq!(sh(&mut c, &id, "echo ok").await, (0, "ok\n".into()));
    assert!(node.log().contains("no hugetlb cgroup controller"), "logged once at start");
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
    drop(node);

    // A node that has the controller gets the limits applied.
    let mut node = Node::empty().unwrap();
    let shown = HugetlbShown::mount(&node);
    node.start_daemon().unwrap();
    node.import_busybox().unwrap();
    assert!(!node.log().contains("no hugetlb cgroup controller"));
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "hp2");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    // A multiple of every page size (the kernel rounds a limit down to whole pages).
    let limit = 2u64 << 30;
    let id = run(&mut c, &pod, &pc, with_hugepages(sleeper("app"), limit)).await;
    let limits: BTreeMap<String, String> = kubelet_hugepage_limits(0)
        .into_iter()
        .map(|l| {
            let file = format!(
                "/sys/fs/cgroup/hugetlb/podbay/{pod}/{id}/hugetlb.{}.limit_in_bytes",
                l.page_size
            );
            (l.page_size, node.sh(&format!("cat {file}")).unwrap().trim().to_owned())
        })
        .collect();
    assert!(limits.values().all(|v| v == &limit.to_string()), "{limits:?}");
    remove_pod(&mut c, &pod).await.unwrap();
    let left = node.sh("find /sys/fs/cgroup/hugetlb -mindepth 1 -type d").unwrap();
    assert_eq!(left.trim(), "", "hugetlb cgroups left behind: {}", node.log());
    node.assert_clean().unwrap();
    drop(shown);
}

/// A node with the busybox test image, kubelet's cgroup root for its pods, a client and
/// the image id kubelet's pull check would get.
async fn kubelet_node() -> (CgroupRoot, Node, Client, String) {
    let root = CgroupRoot::new("t");
    let node = Node::with_busybox().unwrap();
    let c = node.client().await.unwrap();
    let image_id = ensure_image(&node).await;
    (root, node, c, image_id)
}

/// kubelet's end of a pod: StopPodSandbox, RemovePodSandbox; then nothing may be left.
async fn stop_and_remove(c: &mut Client, node: &Node, pod_id: &str) {
    c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod_id.into() }).await.unwrap();
    remove_pod(c, pod_id).await.unwrap();
    node.assert_clean().unwrap();
}

/// Runs a kubelet-shaped pod: RunPodSandbox, then for each container CreateContainer and
/// StartContainer with the sandbox config alongside, as `SyncPod` does.
async fn start_pod(
    node: &Node,
    c: &mut Client,
    pod: &PodShape,
    containers: &[ContainerShape],
) -> (String, Vec<String>) {
    let pc = pod_sandbox_config(node, pod);
    std::fs::create_dir_all(pod.log_directory(node)).unwrap();
    let id = run_pod(c, pc.clone()).await.unwrap();
    let mut ids = Vec::new();
    for shape in containers {
        ids.push(run(c, &id, &pc, container_config(node, pod, shape)).await);
    }
    (id, ids)
}

/// kubelet's image GC: an image is in use when a container's image_id (its image_ref
/// when that is empty) is the id of an image ListImages gives.
async fn images_in_use(node: &Node, c: &mut Client) -> BTreeSet<String> {
    let containers = list(c, None).await;
    let used: BTreeSet<String> = containers
        .iter()
        .map(|c| if c.image_id.is_empty() { c.image_ref.clone() } else { c.image_id.clone() })
        .collect();
    let mut images = node.image_client().await.unwrap();
    let listed = images.list_images(cri::ListImagesRequest { filter: None }).await.unwrap();
    listed.into_inner().images.into_iter().map(|i| i.id).filter(|id| used.contains(id)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn burstable_and_guaranteed_pods_as_kubelet_makes_them() {
    require_root!();
    let (root, node, mut c, image_id) = kubelet_node().await;
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    // A Deployment's pod: Burstable (250m request, 500m limit, 64 MiB), kubelet's mounts,
    // hugepage limits, the QoS cgroup parent, the image named by id.
    let pod = PodShape::new("web-7d4b9c-x2x9z", Qos::Burstable, &root);
    let mut app = ContainerShape::new("app", &image_id, &["sleep", "3601"]);
    (app.cpu_request_milli, app.cpu_limit_milli, app.memory_limit) = (100, 500, 64 << 20);
    let (pod_id, ids) = start_pod(&node, &mut c, &pod, std::slice::from_ref(&app)).await;
    let id = &ids[0];
    assert_eq!(
        sh(
            &mut c,
            id,
            "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; \
                        grep -c web-7d4b9c /etc/hosts; test -w /dev/termination-log && echo w"
        )
        .await,
        (0, "default1\nw\n".into())
    );
    let cgroup = format!("/sys/fs/cgroup/cpu{}/{id}", pod.cgroup_parent());
    assert_eq!(
        node.sh(&format!("cat {cgroup}/cpu.shares {cgroup}/cpu.cfs_quota_us")).unwrap(),
        "102\n50000\n"
    );

    // What kubelet reads back.
    let (s, _) = status(&mut c, id).await;
    assert_eq!(s.image_id, image_id, "image_id is the image's id");
    let spec = s.image.as_ref().unwrap();
    assert_eq!(spec.user_specified_image, "busybox:1.36", "the image the user wrote, echoed");
    assert_eq!(spec.image, podbay_tests::BUSYBOX, "a tag, not the id kubelet sent");
    assert!(!s.image_ref.is_empty());
    let r = s.resources.as_ref().unwrap().linux.as_ref().unwrap();
    assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (102, 50_000, 100_000));
    assert_eq!((r.memory_limit_in_bytes, r.oom_score_adj), (64 << 20, 999));
    let user = s.user.as_ref().unwrap().linux.as_ref().unwrap();
    assert_eq!((user.uid, user.gid), (0, 0), "busybox runs as root");
    let listed = list(&mut c, None).await;
    assert_eq!(listed[0].image_id, image_id);
    assert_eq!(listed[0].image.as_ref().unwrap().user_specified_image, "busybox:1.36");
    assert_eq!(images_in_use(&node, &mut c).await, BTreeSet::from([image_id.clone()]));

    // A Guaranteed pod asks for -997, which needs CAP_SYS_RESOURCE (root here lacks it):
    // raised to podbay's own, said once per pod, and the status says what was applied.
    let daemon = node.daemon_pid().unwrap();
    let own: i64 = std::fs::read_to_string(format!("/proc/{daemon}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gpod = PodShape::new("db-0", Qos::Guaranteed, &root);
    let mut db = ContainerShape::new("db", &image_id, &["sleep", "3601"]);
    (db.cpu_request_milli, db.cpu_limit_milli, db.memory_limit) = (200, 200, 32 << 20);
    let mut sidecar = db.clone();
    sidecar.name = "sidecar".into();
    let (gpod_id, gids) = start_pod(&node, &mut c, &gpod, &[db, sidecar]).await;
    let holds_sys_resource = node.sh("grep CapEff /proc/self/status").unwrap();
    let (s, _) = status(&mut c, &gids[0]).await;
    let applied = s.resources.unwrap().linux.unwrap().oom_score_adj;
    if !holds_sys_resource.contains("ffffffffff") {
        assert_eq!(applied, own.max(-997));
        assert_eq!(node.log().matches("oom_score_adj raised").count(), 1, "{}", node.log());
    }
    let (_, info) = status(&mut c, &gids[1]).await;
    let pid = podbay_tests::ctr::pid_of(&info);
    assert_eq!(
        node.sh(&format!("cat /proc/{pid}/oom_score_adj")).unwrap().trim(),
        applied.to_string()
    );

    // The calls kubelet polls with, as it filters them.
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
        ..Default::default()
    };
    let pods = c
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 2);
    let by_uid = cri::ContainerFilter {
        label_selector: [("io.kubernetes.pod.uid".to_owned(), gpod.uid.clone())].into(),
        ..Default::default()
    };
    let mine = list(&mut c, Some(by_uid)).await;
    assert_eq!(mine.len(), 2);
    let mut images = node.image_client().await.unwrap();
    let fs = images.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
    let image_fs = fs.image_filesystems[0].fs_id.clone().unwrap().mountpoint;
    let stats = list_stats(&mut c).await;
    assert_eq!(stats.len(), 3);
    for st in &stats {
        let layer = st.writable_layer.as_ref().unwrap();
        assert_eq!(layer.fs_id.as_ref().unwrap().mountpoint, image_fs, "fs_id as ImageFsInfo");
    }
    let pod_stats = c
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pod_stats.len(), 2);

    for p in [&pod_id, &gpod_id] {
        c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.clone() }).await.unwrap();
        remove_pod(&mut c, p).await.unwrap();
    }
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn best_effort_pod_with_an_init_container_an_empty_dir_and_a_restart() {
    require_root!();
    let (root, node, mut c, image_id) = kubelet_node().await;
    let pod = PodShape::new("job-abc12", Qos::BestEffort, &root);
    let pc = pod_sandbox_config(&node, &pod);
    std::fs::create_dir_all(pod.log_directory(&node)).unwrap();
    let pod_id = run_pod(&mut c, pc.clone()).await.unwrap();
    // emptyDir: a dir kubelet makes under the pod's dir.
    let empty_dir = pod.kubelet_dir(&node).join("volumes/kubernetes.io~empty-dir/work");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let volume = ("/work".to_owned(), empty_dir.to_string_lossy().into_owned(), false);

    // The init container runs to completion before the app container is created.
    let mut init = ContainerShape::new("init", &image_id, &["sh", "-c", "echo ready > /work/flag"]);
    init.volumes.push(volume.clone());
    let init_id = run(&mut c, &pod_id, &pc, container_config(&node, &pod, &init)).await;
    let done = wait_exited(&mut c, &init_id).await;
    assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"));

    // The app crashes; kubelet removes nothing yet and creates attempt 1 under the same name.
    let mut app = ContainerShape::new("app", &image_id, &["sh", "-c", "cat /work/flag; exit 3"]);
    app.volumes.push(volume);
    let first = run(&mut c, &pod_id, &pc, container_config(&node, &pod, &app)).await;
    let crashed = wait_exited(&mut c, &first).await;
    assert_eq!((crashed.exit_code, crashed.reason.as_str()), (3, "Error"));
    app.attempt = 1;
    app.command = vec!["sleep".into(), "3601".into()];
    let second = create(&mut c, &pod_id, &pc, container_config(&node, &pod, &app)).await.unwrap();
    start(&mut c, &second).await.unwrap();
    let log = std::fs::read_to_string(format!("{}/app/0.log", pod.log_directory(&node))).unwrap();
    assert!(log.ends_with("ready\n"), "{log}");
    let (s, _) = status(&mut c, &second).await;
    assert_eq!(s.metadata.unwrap().attempt, 1);
    assert_eq!(s.resources.unwrap().linux.unwrap().oom_score_adj, 1000);
    let stats = list_stats(&mut c).await;
    assert_eq!(stats.len(), 1, "only running containers");
    assert_eq!(stats[0].attributes.as_ref().unwrap().metadata.as_ref().unwrap().attempt, 1);
    c.remove_container(cri::RemoveContainerRequest { container_id: first }).await.unwrap();

    stop_and_remove(&mut c, &node, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_has_the_node_hostname_and_host_paths() {
    require_root!();
    let (root, node, mut c, image_id) = kubelet_node().await;
    // kube-proxy: privileged, host network, hostPath mounts.
    let mut pod = PodShape::new("kube-proxy-8xk2p", Qos::BestEffort, &root);
    pod.namespace = "kube-system".into();
    (pod.host_network, pod.privileged) = (true, true);
    let modules = node.dir().join("lib-modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("modules.dep"), "").unwrap();
    let mut proxy = ContainerShape::new("kube-proxy", &image_id, &["sleep", "3601"]);
    proxy.privileged = true;
    proxy.volumes.push(("/lib/modules".into(), modules.to_string_lossy().into_owned(), true));
    let (pod_id, ids) = start_pod(&node, &mut c, &pod, &[proxy]).await;
    let node_name = node.sh("hostname").unwrap();
    let (code, out) =
        sh(&mut c, &ids[0], "hostname; cat /etc/hostname; echo $HOSTNAME; ls /lib/modules").await;
    assert_eq!(code, 0);
    assert_eq!(out, format!("{node_name}{node_name}{node_name}modules.dep\n"));

    // A cgroup_parent that would leave the hierarchy is refused, and nothing is made.
    let mut bad = pod_sandbox_config(&node, &PodShape::new("escape", Qos::BestEffort, &root));
    let escape = format!("escape-{}", std::process::id());
    bad.linux.as_mut().unwrap().cgroup_parent = format!("/kubepods/../../{escape}");
    let e = run_pod(&mut c, bad).await.unwrap_err();
    let status = e.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("linux.cgroup_parent"), "{}", status.message());
    assert_eq!(
        node.sh(&format!(
            "ls -d /sys/fs/cgroup/*/{escape} /sys/fs/cgroup/{escape} 2>/dev/null; true"
        ))
        .unwrap(),
        ""
    );

    stop_and_remove(&mut c, &node, &pod_id).await;
}

/// kubelet's evented PLEG: GetContainerEvents streams each container's lifecycle, in
/// order, with the pod's status; a subscriber that never reads does not hold anything up.
#[tokio::test(flavor = "multi_thread")]
async fn container_events_as_the_evented_pleg_reads_them() {
    require_root!();
    let (root, node, mut c, image_id) = kubelet_node().await;
    let mut events = c.get_container_events(cri::GetEventsRequest {}).await.unwrap().into_inner();
    // A second subscriber that never reads.
    let _idle = c.clone().get_container_events(cri::GetEventsRequest {}).await.unwrap();

    let pod = PodShape::new("events", Qos::BestEffort, &root);
    let app = ContainerShape::new("app", &image_id, &["sleep", "3601"]);
    let (pod_id, ids) = start_pod(&node, &mut c, &pod, &[app]).await;
    let id = ids[0].clone();
    c.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 1 })
        .await
        .unwrap();
    c.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.unwrap();

    use cri::ContainerEventType as E;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(e.container_id, id);
        let pod_status = e.pod_sandbox_status.as_ref().unwrap();
        assert_eq!(pod_status.id, pod_id);
        assert_eq!(pod_status.metadata.as_ref().unwrap().name, "events");
        let mine = e.containers_statuses.iter().find(|s| s.id == id).unwrap();
        seen.push((E::try_from(e.container_event_type).unwrap(), mine.state));
    }
    use cri::ContainerState as S;
    assert_eq!(
        seen,
        [
            (E::ContainerCreatedEvent, S::ContainerCreated as i32),
            (E::ContainerStartedEvent, S::ContainerRunning as i32),
            (E::ContainerStoppedEvent, S::ContainerExited as i32),
            (E::ContainerDeletedEvent, S::ContainerExited as i32),
        ]
    );
    remove_pod(&mut c, &pod_id).await.unwrap();
    node.assert_clean().unwrap();
}

/// The cAdvisor-style metrics kubelet serves when it takes stats from the CRI: every
/// metric's labels match its descriptor, and the values come from the pod's cgroups,
/// its eth0 and the writable layer.
#[tokio::test(flavor = "multi_thread")]
async fn cri_metrics_as_kubelet_serves_them() {
    require_root!();
    let (root, node, mut c, image_id) = kubelet_node().await;
    let pod = PodShape::new("metrics", Qos::BestEffort, &root);
    let script = "dd if=/dev/zero of=/tmp/fill bs=1024 count=2048 2>/dev/null; exec sleep 3601";
    let app = ContainerShape::new("app", &image_id, &["sh", "-c", script]);
    let (pod_id, ids) = start_pod(&node, &mut c, &pod, &[app]).await;
    let ip = podbay_tests::pod_ip(&mut c, &pod_id).await.unwrap();
    node.sh(&format!("ping -q -c 3 -i 0.01 -W 2 {ip}")).unwrap();
    for _ in 0..100 {
        if sh(&mut c, &ids[0], "wc -c < /tmp/fill").await.1.trim() == "2097152" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let descriptors = c
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let keys: BTreeMap<String, usize> =
        descriptors.iter().map(|d| (d.name.clone(), d.label_keys.len())).collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_processes",
        "container_fs_usage_bytes",
        "container_network_receive_bytes_total",
    ] {
        assert!(keys.contains_key(name), "{name} described");
    }
    let pods = c
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let mine = pods.iter().find(|p| p.pod_sandbox_id == pod_id).unwrap();
    let all = mine.metrics.iter().chain(mine.container_metrics.iter().flat_map(|c| &c.metrics));
    for m in all {
        assert_eq!(Some(&m.label_values.len()), keys.get(&m.name), "{m:?}");
    }
    let value = |metrics: &[cri::Metric], name: &str| {
        metrics.iter().find(|m| m.name == name).unwrap().value.as_ref().unwrap().value
    };
    assert!(value(&mine.metrics, "container_network_receive_bytes_total") > 0);
    let ctr = mine.container_metrics.iter().find(|m| m.container_id == ids[0]).unwrap();
    assert!(value(&ctr.metrics, "container_processes") >= 1);
    assert!(value(&ctr.metrics, "container_memory_working_set_bytes") > 0);
    assert!(value(&ctr.metrics, "container_fs_usage_bytes") >= 2 << 20);
    let name = ctr.metrics[0].label_values[1].clone();
    assert_eq!(name, "app");

    remove_pod(&mut c, &pod_id).await.unwrap();
    node.assert_clean().unwrap();
}
