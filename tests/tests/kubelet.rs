//! kubelet's requests, replayed as kubelet builds them (pkg/kubelet/kuberuntime), and
//! what kubelet checks in the answers.

use std::collections::BTreeMap;

use podbay_tests::ctr::{logged_pod, run, sh, sleeper};
use podbay_tests::{Node, cri, remove_pod, require_root, run_pod};

/// The hugepage limits kubelet sends with every container (`GetHugepageLimitsFromResources`):
/// one per page size the kernel lists under /sys/kernel/mm/hugepages, `limit` bytes each
/// (0 when the pod asks for none), named as kubelet names them (`2MB`, `1GB`).
fn kubelet_hugepage_limits(limit: u64) -> Vec<cri::HugepageLimit> {
    let mut out: Vec<_> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            Some(cri::HugepageLimit { page_size: page_size_name(kb * 1024), limit })
        })
        .collect();
    out.sort_by(|a, b| a.page_size.cmp(&b.page_size));
    out
}

/// kubelet's page size names: the largest unit that divides the size (`2MB`, `1GB`).
fn page_size_name(bytes: u64) -> String {
    let units = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)];
    let (unit, size) =
        units.into_iter().find(|(_, s)| bytes.is_multiple_of(*s)).unwrap_or(("B", 1));
    format!("{}{unit}", bytes / size)
}

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
            "set -e; mkdir -p {old}; mount --rbind /sys/fs/cgroup {old}; \
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
