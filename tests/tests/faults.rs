//! Faults that must not wedge the node: the daemon killed at every step of the container
//! RPCs (all or nothing after restart), injected failures (nothing half-made), a stop that
//! races the container's start, the pod bridge deleted under running pods, a full disk
//! under the state database, and a database that cannot be read.

use podbay_tests::ctr::{self, assert_no_cgroups};
use podbay_tests::{
    Client, Node, cri, is_ready, list_pods, pod_config, remove_pod, require_root, run_pod,
    wait_until,
};
use std::time::Duration;
use tonic::Code;

/// Kills the daemon and starts it again with these failpoints (empty: none).
async fn restart(node: &mut Node, failpoints: &str) -> Client {
    node.kill_daemon().unwrap();
    node.set_env(&[("PODBAY_FAILPOINTS", failpoints)]);
    node.start_daemon().unwrap();
    node.client().await.unwrap()
}

async fn containers(c: &mut Client) -> Vec<cri::Container> {
    let req = cri::ListContainersRequest::default();
    c.list_containers(req).await.unwrap().into_inner().containers
}

/// Container dirs (rootfs, bundle) left under the node's root.
fn container_dirs(node: &Node) -> Vec<String> {
    std::fs::read_dir(node.root().join("containers"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Removes the pod and checks that nothing of it or its containers is left.
async fn remove_and_check(node: &Node, c: &mut Client, pod: &str, what: &str) {
    remove_pod(c, pod).await.unwrap_or_else(|e| panic!("{what}: remove pod: {e:?}"));
    assert!(containers(c).await.is_empty(), "{what}: container records left");
    assert!(container_dirs(node).is_empty(), "{what}: {:?}", container_dirs(node));
    node.assert_clean().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_no_cgroups(&[pod]);
}

/// A container of the busybox image that sleeps (`sleep 3601`: the node's PID 1 runs
/// `sleep 3600`).
fn sleeper(name: &str) -> cri::ContainerConfig {
    ctr::ctr(name, &["sleep", "3601"])
}

/// The test containers' processes in the node.
fn sleeps(node: &Node) -> usize {
    node.sh("pgrep -xf 'sleep 3601' || true").unwrap().lines().count()
}

fn state(c: &cri::Container) -> cri::ContainerState {
    cri::ContainerState::try_from(c.state).unwrap()
}

/// The failpoint steps of CreateContainer, in order (`runtime/src/container/create.rs`);
/// `libcontainer` and `commit` (and its end, `committed`) run alongside each other.
const CREATE_STEPS: [&str; 5] = [
    "container.create.rootfs",
    "container.create.spec",
    "container.create.libcontainer",
    "container.create.commit",
    "container.create.committed",
];

#[tokio::test]
async fn injected_failure_at_each_create_step_leaves_nothing() {
    require_root!();
    let mut node = Node::with_busybox().unwrap();
    for (i, step) in CREATE_STEPS.iter().enumerate() {
        let mut c = restart(&mut node, step).await;
        let config = pod_config(&format!("f{i}"));
        let pod = run_pod(&mut c, config.clone()).await.unwrap();
        let err = ctr::create(&mut c, &pod, &config, sleeper("app")).await.unwrap_err();
        assert!(err.message().contains(step), "{step}: {err:?}");
        assert!(containers(&mut c).await.is_empty(), "{step}: record left");
        assert!(container_dirs(&node).is_empty(), "{step}: {:?}", container_dirs(&node));
        // Only the pod's own supervisor (and its pause process) run.
        assert_eq!(sleeps(&node), 0, "{step}");
        remove_and_check(&node, &mut c, &pod, step).await;
    }
}

#[tokio::test]
async fn crash_at_each_create_step_is_all_or_nothing() {
    require_root!();
    let mut node = Node::with_busybox().unwrap();
    // The last: the record is committed while libcontainer has not made the container
    // (its step failed), then the daemon crashes; the supervisor never made it, so the
    // record goes.
    let steps = CREATE_STEPS
        .iter()
        .map(|s| format!("{s}=crash"))
        .chain(["container.create.reply=crash".into()])
        .chain(["container.create.libcontainer,container.create.committed=crash".into()]);
    for (i, failpoints) in steps.enumerate() {
        let step = failpoints.as_str();
        let mut c = restart(&mut node, "").await;
        let config = pod_config(&format!("crash{i}"));
        let pod = run_pod(&mut c, config.clone()).await.unwrap();
        let mut c = restart(&mut node, step).await;
        assert!(ctr::create(&mut c, &pod, &config, sleeper("app")).await.is_err(), "{step}");

        let mut c = restart(&mut node, "").await;
        assert!(is_ready(&mut c, &pod).await.unwrap(), "{step}: the pod survives");
        let listed = containers(&mut c).await;
        if step == "container.create.reply=crash" || step == "container.create.committed=crash" {
            // Committed before the crash, and made by the supervisor (which the restarted
            // daemon asks for its init): it is there, and starts.
            assert_eq!(listed.len(), 1, "{step}");
            assert_eq!(state(&listed[0]), cri::ContainerState::ContainerCreated, "{step}");
            ctr::start(&mut c, &listed[0].id).await.unwrap();
            let (s, _) = ctr::status(&mut c, &listed[0].id).await;
            assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32, "{step}");
        } else {
            assert!(listed.is_empty(), "{step}: {listed:?}");
            assert!(container_dirs(&node).is_empty(), "{step}: {:?}", container_dirs(&node));
            assert_eq!(sleeps(&node), 0, "{step}");
            // The name is free again: kubelet's retry succeeds.
            let id = ctr::create(&mut c, &pod, &config, sleeper("app")).await.unwrap();
            ctr::start(&mut c, &id).await.unwrap();
        }
        remove_and_check(&node, &mut c, &pod, step).await;
    }
}

#[tokio::test]
async fn crash_during_start_stop_and_remove_is_all_or_nothing() {
    require_root!();
    let mut node = Node::with_busybox().unwrap();
    let config = pod_config("p");
    let mut c = restart(&mut node, "").await;
    let pod = run_pod(&mut c, config.clone()).await.unwrap();

    // StartContainer: the retry kubelet makes after the crash succeeds, and the container
    // runs once (the process the interrupted start began is the one that runs).
    for step in ["container.start.supervisor", "container.start.commit", "container.start.reply"] {
        let mut c = restart(&mut node, "").await;
        let id = ctr::create(&mut c, &pod, &config, sleeper(step)).await.unwrap();
        let mut c = restart(&mut node, &format!("{step}=crash")).await;
        assert!(ctr::start(&mut c, &id).await.is_err(), "{step}");
        let mut c = restart(&mut node, "").await;
        match ctr::start(&mut c, &id).await {
            Ok(()) => {}
            // Recorded as running before the crash: kubelet sees it running.
            Err(e) if step == "container.start.reply" => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{step}: {e:?}")
            }
            Err(e) => panic!("{step}: {e:?}"),
        }
        let (s, info) = ctr::status(&mut c, &id).await;
        assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32, "{step}");
        let pid = ctr::pid_of(&info);
        assert_eq!(sleeps(&node), 1, "{step}: one process (pid {pid})");
        c.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.unwrap();
    }

    // A start is committed without an fsync: a crash right after it answered may lose
    // that commit, and the daemon learns the start, and its time, again from the
    // supervisor. Nothing is started twice.
    let mut c = restart(&mut node, "").await;
    let id = ctr::run(&mut c, &pod, &config, sleeper("lazy")).await;
    let (before, _) = ctr::status(&mut c, &id).await;
    let mut c = restart(&mut node, "").await;
    let (after, _) = ctr::status(&mut c, &id).await;
    let running = cri::ContainerState::ContainerRunning as i32;
    assert_eq!((after.state, after.started_at), (running, before.started_at));
    // Whether kubelet saw the answer is not known after the crash: a StartContainer again
    // is the retry of one it did not see (Ok) or refused as running; it starts nothing.
    if let Err(e) = ctr::start(&mut c, &id).await {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    assert_eq!(sleeps(&node), 1);
    c.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.unwrap();

    // StopContainer and RemoveContainer: done again after the crash, they finish.
    for step in [
        "container.stop.signal",
        "container.stop.commit",
        "container.remove.runtime",
        "container.remove.rootfs",
        "container.remove.commit",
    ] {
        let mut c = restart(&mut node, "").await;
        let id = ctr::run(&mut c, &pod, &config, sleeper(step)).await;
        let mut c = restart(&mut node, &format!("{step}=crash")).await;
        let req = cri::RemoveContainerRequest { container_id: id.clone() };
        if step.starts_with("container.stop") {
            let stop = cri::StopContainerRequest { container_id: id.clone(), timeout: 0 };
            assert!(c.stop_container(stop.clone()).await.is_err(), "{step}");
            let mut c = restart(&mut node, "").await;
            c.stop_container(stop).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
            let (s, _) = ctr::status(&mut c, &id).await;
            assert_eq!(s.state, cri::ContainerState::ContainerExited as i32, "{step}");
            c.remove_container(req).await.unwrap();
        } else {
            assert!(c.remove_container(req.clone()).await.is_err(), "{step}");
            let mut c = restart(&mut node, "").await;
            // Still listed (the record goes last), and the remove finishes.
            assert_eq!(containers(&mut c).await.len(), 1, "{step}");
            c.remove_container(req).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
        }
        let mut c = node.client().await.unwrap();
        assert!(containers(&mut c).await.is_empty(), "{step}");
        assert!(container_dirs(&node).is_empty(), "{step}: {:?}", container_dirs(&node));
        assert_eq!(sleeps(&node), 0, "{step}");
    }
    let mut c = node.client().await.unwrap();
    remove_and_check(&node, &mut c, &pod, "end").await;
}

/// The daemon killed inside a StopPodSandbox, before it detached the pod dir's own mount:
/// after the restart the stopped pod holds no mount, whether the record still said Ready
/// (recovery tears it down) or NotReady already (its supervisor had exited on its own).
#[tokio::test]
async fn a_crash_inside_stop_pod_sandbox_leaves_no_mount() {
    require_root!();
    let mut node = Node::start().unwrap();
    for exited_first in [false, true] {
        let what = if exited_first { "supervisor exited first" } else { "ready" };
        let mut c = restart(&mut node, "sandbox.stop.unbind=crash").await;
        let pod = run_pod(&mut c, pod_config(&format!("stop{exited_first}"))).await.unwrap();
        let pod_dir = node.pods_dir().join(&pod).display().to_string();
        if exited_first {
            node.sh("pkill -KILL -x podbay-pod").unwrap();
            // The daemon sees its supervisor exit and records the pod NotReady.
            for tries in 0.. {
                if !is_ready(&mut c, &pod).await.unwrap() {
                    break;
                }
                assert!(tries < 500, "{what}: still ready 5 s after its supervisor died");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let stop = cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() };
        assert!(c.stop_pod_sandbox(stop.clone()).await.is_err(), "{what}: the daemon died");
        let mut c = restart(&mut node, "").await;
        let held: Vec<String> =
            node.mounts().unwrap().into_iter().filter(|m| m.starts_with(&pod_dir)).collect();
        assert!(held.is_empty(), "{what}: the stopped pod holds {held:?}");
        assert!(!is_ready(&mut c, &pod).await.unwrap(), "{what}");
        // kubelet's retry of the stop, then the remove.
        c.stop_pod_sandbox(stop).await.unwrap();
        remove_pod(&mut c, &pod).await.unwrap();
        node.assert_clean().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// Sleeps 50 ms, then exits 0 on SIGTERM: a program stopped before it installed its
/// handler (the kernel drops a PID-namespace init's unhandled signals).
const LATE_HANDLER: &str = r#"
#include <signal.h>
#include <time.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
int main(void) {
    struct timespec t = { 0, 50 * 1000 * 1000 };
    nanosleep(&t, 0);
    signal(SIGTERM, on_term);
    for (;;) pause();
}
"#;

#[tokio::test]
async fn a_stop_right_after_start_is_graceful_every_time() {
    require_root!();
    let node = Node::start().unwrap();
    let bin = podbay_tests::attack::cc(node.dir(), "late", LATE_HANDLER, &["-static"]).unwrap();
    let image = "podbay.test/late:1";
    let program = std::fs::read(&bin).unwrap();
    podbay_tests::attack::import_image(&node, image, &[("late".into(), program, 0o755)]).unwrap();
    let mut c = node.client().await.unwrap();
    let config = pod_config("late");
    let pod = run_pod(&mut c, config.clone()).await.unwrap();
    for i in 0..100 {
        let mut cfg = ctr::ctr(&format!("late{i}"), &["/late"]);
        cfg.image = Some(cri::ImageSpec { image: image.into(), ..Default::default() });
        let id = ctr::run(&mut c, &pod, &config, cfg).await;
        // A long grace period: a lost SIGTERM would end in SIGKILL (137) after it.
        let stop = cri::StopContainerRequest { container_id: id.clone(), timeout: 30 };
        c.stop_container(stop).await.unwrap();
        let (s, _) = ctr::status(&mut c, &id).await;
        assert_eq!(s.exit_code, 0, "try {i}: the handler did not get the stop signal");
        c.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
    }
    remove_and_check(&node, &mut c, &pod, "late").await;
}

#[tokio::test]
async fn a_deleted_bridge_is_made_again_with_every_pod_attached() {
    require_root!();
    let mut node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, pod_config("a")).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    let ip_b = podbay_tests::pod_ip(&mut c, &b).await.unwrap();
    let ping =
        |node: &Node| node.in_pod(&a, &format!("ping -c1 -W2 {ip_b}")).unwrap().status.success();
    assert!(ping(&node));
    let ports = |node: &Node| node.sh("ip -o link show master cni0 | wc -l").unwrap();

    // Deleted under running pods: repaired while the daemon runs.
    node.sh("ip link del cni0").unwrap();
    wait_until(Duration::from_secs(10), || {
        node.log().contains("the pod bridge was deleted") && ports(&node).trim() == "2"
    })
    .unwrap_or_else(|_| panic!("not repaired: {} ports\n{}", ports(&node), node.log()));
    assert!(network_ready(&mut c).await);
    assert!(ping(&node), "pods reach each other again");
    let new = run_pod(&mut c, pod_config("new")).await.unwrap();
    assert!(is_ready(&mut c, &new).await.unwrap());

    // Deleted while the daemon is down: repaired at start.
    node.kill_daemon().unwrap();
    node.sh("ip link del cni0").unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert_eq!(ports(&node).trim(), "3");
    assert!(network_ready(&mut c).await);
    assert!(ping(&node), "pods reach each other after a restart");
    for id in [&a, &b, &new] {
        remove_pod(&mut c, id).await.unwrap();
    }
    node.assert_clean().unwrap();
}

async fn network_ready(c: &mut Client) -> bool {
    podbay_tests::condition(c, "NetworkReady").await.0
}

#[tokio::test]
async fn a_full_disk_under_the_database_is_resource_exhausted_and_recovers() {
    require_root!();
    let mut node = Node::empty().unwrap();
    // The root on a small filesystem of its own, inside the node's mount namespace.
    node.sh(&format!(
        "mkdir -p {0} && mount -t tmpfs -o size=24m tmpfs {0}",
        node.root().display()
    ))
    .unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let first = run_pod(&mut c, pod_config("first")).await.unwrap();
    let filler = node.root().join("filler");
    node.sh(&format!("dd if=/dev/zero of={} bs=1M 2>/dev/null; sync", filler.display())).unwrap();

    let err = run_pod(&mut c, pod_config("full")).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("state.redb"), "{status:?}");
    let (ready, reason, _) = podbay_tests::condition(&mut c, "RuntimeReady").await;
    assert!(!ready && reason == "StateStoreFailing", "{reason}");
    assert!(node.log().contains("WARN"), "the failure is logged at WARN");
    // Nothing half-made: the failed pod left no supervisor, veth or dir.
    assert_eq!(list_pods(&mut c).await.unwrap().len(), 1);
    assert_eq!(node.pod_dirs().len(), 1);

    // Space back: the next request succeeds without a restart.
    node.sh(&format!("rm {}", filler.display())).unwrap();
    let again = run_pod(&mut c, pod_config("again")).await.unwrap();
    assert!(podbay_tests::condition(&mut c, "RuntimeReady").await.0);
    for id in [&first, &again] {
        remove_pod(&mut c, id).await.unwrap();
    }
    node.kill_daemon().unwrap();
    node.sh(&format!("umount -l {}", node.root().display())).unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn an_unreadable_database_stops_start_up_until_reset() {
    require_root!();
    let mut node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let config = pod_config("kept");
    let pod = run_pod(&mut c, config.clone()).await.unwrap();
    let app = ctr::run(&mut c, &pod, &config, sleeper("app")).await;
    let (_, info) = ctr::status(&mut c, &app).await;
    let pid = ctr::pid_of(&info);
    node.kill_daemon().unwrap();
    std::fs::File::create(node.root().join("state.redb")).unwrap();

    // A 0-byte database: start-up stops with the way out, and nothing is torn down.
    let err = node.start_daemon().unwrap_err().to_string();
    assert!(err.contains("--reset-state"), "{err}");
    assert!(node.sh(&format!("kill -0 {pid}")).is_ok(), "the container still runs");
    assert_eq!(node.pod_dirs(), vec![pod.clone()]);

    // The operator's way out: start over. What the old state held is cleaned up, and the
    // layers the container's overlay used are not collected while it is mounted.
    node.start_daemon_with(&["--reset-state"]).unwrap();
    let mut c = node.client().await.unwrap();
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    assert!(containers(&mut c).await.is_empty());
    assert!(container_dirs(&node).is_empty());
    node.assert_clean().unwrap();
    assert_no_cgroups(&[&pod]);
    let moved = std::fs::read_dir(node.root())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("state.redb."));
    assert!(moved, "the old database is kept aside");
}
