//! `scripts/bench containers`: app containers through the CRI socket with an in-process
//! Rust client, in a node namespace of its own. With 1, 100 and 250 running pods on the
//! node (one column each, `BENCH_LEVELS`, each begun on a quiet machine):
//! CreateContainer + StartContainer in a running pod, the cost of the RuntimeDefault
//! seccomp filter (interleaved with Unconfined), a whole pod start (RunPodSandbox +
//! CreateContainer + StartContainer of one busybox `sleep`) and its teardown, with the
//! node's mount table size and CreateContainer's step medians. Then runtime memory per
//! pod with 100 one-container pods. `BENCH_CGROUP=v2`: on a cgroup v2 node
//! (`podbay_tests::bench::node`).

use std::time::{Duration, Instant};

use podbay_tests::bench::{
    daemon_ns_pid, ms, percentile, report, settle, smaps_kb, step_medians_in,
};
use podbay_tests::*;

/// How a bench container is confined.
#[derive(Clone, Copy, PartialEq)]
enum Confined {
    /// The RuntimeDefault seccomp profile (a request that names none gets Unconfined, as
    /// the CRI defines, so each is named).
    RuntimeDefault,
    Unconfined,
    /// RuntimeDefault with no_new_privs (Pod Security "restricted"): its filter is
    /// compiled once by the daemon.
    Restricted,
}

/// A busybox `sleep`.
fn sleeper(name: &str, confined: Confined) -> cri::ContainerConfig {
    use cri::security_profile::ProfileType;
    let profile = match confined {
        Confined::Unconfined => ProfileType::Unconfined,
        _ => ProfileType::RuntimeDefault,
    };
    let seccomp = Some(cri::SecurityProfile { profile_type: profile as i32, ..Default::default() });
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp,
                no_new_privs: confined == Confined::Restricted,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CreateContainer + StartContainer; the time of each.
async fn create_start(
    c: &mut Client,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> anyhow::Result<(String, Duration, Duration)> {
    let t = Instant::now();
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    let id = c.create_container(req).await?.into_inner().container_id;
    let created = t.elapsed();
    let t = Instant::now();
    c.start_container(cri::StartContainerRequest { container_id: id.clone() }).await?;
    Ok((id, created, t.elapsed()))
}

/// The daemon's `container created` lines split in two: each pod's first container (the
/// first after a `sandbox ready`), then the others.
fn first_containers(log: &str) -> (String, String) {
    let (mut first, mut later) = (String::new(), String::new());
    let mut after_sandbox = false;
    for line in log.lines() {
        if line.contains("sandbox ready") {
            after_sandbox = true;
        } else if line.contains("container created") {
            let into = if after_sandbox { &mut first } else { &mut later };
            into.push_str(line);
            into.push('\n');
            after_sandbox = false;
        }
    }
    (first, later)
}

/// A whole pod: sandbox and one running container; the RunPodSandbox part's time.
async fn whole_pod(c: &mut Client, name: &str) -> anyhow::Result<(String, Duration)> {
    let config = pod_config(name);
    let t = Instant::now();
    let pod = run_pod(c, config.clone()).await?;
    let sandbox = t.elapsed();
    create_start(c, &pod, &config, sleeper("app", Confined::RuntimeDefault)).await?;
    Ok((pod, sandbox))
}

async fn teardown(c: &mut Client, pod: &str) -> anyhow::Result<()> {
    stop_pod(c, pod).await?;
    remove_pod(c, pod).await?;
    Ok(())
}

/// The figures of one column: a number of running pods.
struct Column {
    pods: usize,
    /// Mount entries in the node's mount table (what every new mount namespace copies).
    mounts: usize,
    rows: Vec<Vec<Duration>>,
    steps: String,
    pod_steps: String,
    start_steps: String,
}

const ROWS: [(&str, f64); 8] = [
    ("CreateContainer + StartContainer", 6.0),
    ("  CreateContainer alone", 0.0),
    ("  StartContainer alone", 0.0),
    ("  create + start, seccomp Unconfined", 0.0),
    ("  create + start, + no_new_privs", 0.0),
    ("whole pod start", 10.0),
    ("  its RunPodSandbox", 0.0),
    ("StopPodSandbox + RemovePodSandbox", 0.0),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces, cgroups)");
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let count: usize = env("BENCH_CONTAINERS", "40").parse()?;
    let levels: Vec<usize> =
        env("BENCH_LEVELS", "1,100,250").split(',').map(str::parse).collect::<Result<_, _>>()?;
    let node = podbay_tests::bench::node()?;
    let mut c = node.client().await?;
    println!(
        "podbay container bench: {count} per scenario at {levels:?} running pods, binaries from {}",
        bin_dir().display()
    );

    // Warm-up: page in the binaries, the image's layers and the kernel's caches.
    for i in 0..10 {
        let (pod, _) = whole_pod(&mut c, &format!("warm{i}")).await?;
        teardown(&mut c, &pod).await?;
    }
    // The floor under every call's figure: a gRPC round trip that does nothing (Version).
    let mut calls = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        c.version(cri::VersionRequest::default()).await?;
        calls.push(t.elapsed());
    }
    podbay_tests::bench::report("Version (a CRI call's round trip)", calls, 1.0);

    // Each column: the node holds that many running one-container pods while the samples
    // are taken (each sample's pods go again, so the count stays). Default and
    // Unconfined seccomp are interleaved so the machine's drift hits both alike.
    let mut background = Vec::new();
    let mut columns = Vec::new();
    for &level in &levels {
        while background.len() + 1 < level {
            background.push(whole_pod(&mut c, &format!("bg{}", background.len())).await?.0);
        }
        // What the pods torn down before left to the kernel is not this column's.
        let waited = settle(Duration::from_secs(10)).await;
        println!("{level} running pods: waited {:.1} s for a quiet machine", waited.as_secs_f64());
        let log_start = node.log().len();
        let mut rows = vec![Vec::with_capacity(count); ROWS.len()];
        for i in 0..count {
            let config = pod_config(&format!("c{level}-{i}"));
            let pod = run_pod(&mut c, config.clone()).await?;
            // Which goes first rotates: a pod's first container costs more than the next
            // (about 1.4 ms here), which would otherwise count as seccomp's.
            let mut order = [Confined::RuntimeDefault, Confined::Unconfined, Confined::Restricted];
            order.rotate_left(i % 3);
            for confined in order {
                let name = match confined {
                    Confined::RuntimeDefault => "default",
                    Confined::Unconfined => "unconfined",
                    Confined::Restricted => "restricted",
                };
                let (_, cr, st) =
                    create_start(&mut c, &pod, &config, sleeper(name, confined)).await?;
                match confined {
                    Confined::RuntimeDefault => {
                        rows[0].push(cr + st);
                        rows[1].push(cr);
                        rows[2].push(st);
                    }
                    Confined::Unconfined => rows[3].push(cr + st),
                    Confined::Restricted => rows[4].push(cr + st),
                }
            }
            teardown(&mut c, &pod).await?;
            let t = Instant::now();
            let (pod, sandbox) = whole_pod(&mut c, &format!("w{level}-{i}")).await?;
            rows[5].push(t.elapsed());
            rows[6].push(sandbox);
            let t = Instant::now();
            teardown(&mut c, &pod).await?;
            rows[7].push(t.elapsed());
        }
        let log = node.log();
        let log = log.get(log_start..).unwrap_or_default();
        let (first, later) = first_containers(log);
        let steps = format!(
            "in a running pod {}; a new pod's first {}",
            step_medians_in(&later, "container created"),
            step_medians_in(&first, "container created")
        );
        let pod_steps = step_medians_in(log, "sandbox ready");
        let start_steps = step_medians_in(log, "container started");
        let mounts = mount_count(&node);
        columns.push(Column { pods: level, mounts, rows, steps, pod_steps, start_steps });
    }
    print_columns(&mut columns, count);
    for pod in &background {
        teardown(&mut c, pod).await?;
    }
    memory(&node, &mut c).await?;
    node.assert_clean()
}

/// Lines in the daemon's mountinfo: the node's mount table.
fn mount_count(node: &Node) -> usize {
    let path = format!("/proc/{}/root/proc/{}/mountinfo", node.init_pid(), daemon_ns_pid(node));
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

fn print_columns(columns: &mut [Column], count: usize) {
    println!("-- containers and whole pods by running pods (n={count} each; p50 / p99 ms)");
    let mut head = format!("{:<38}", "running pods");
    for col in columns.iter() {
        head.push_str(&format!("{:>18}", col.pods));
    }
    println!("{head}   last/first p50 (target <= 1.2x)");
    let mut mounts = format!("{:<38}", "node mount table (entries)");
    for col in columns.iter() {
        mounts.push_str(&format!("{:>18}", col.mounts));
    }
    println!("{mounts}");
    for (r, (name, target)) in ROWS.iter().enumerate() {
        let mut line = format!("{name:<38}");
        let mut p50s = Vec::new();
        for col in columns.iter_mut() {
            let v = &mut col.rows[r];
            v.sort();
            let p50 = ms(percentile(v, 0.5));
            p50s.push(p50);
            line.push_str(&format!("{:>18}", format!("{p50:.2} / {:.2}", ms(percentile(v, 0.99)))));
        }
        if let (Some(first), Some(last)) = (p50s.first(), p50s.last()) {
            let flat = last / first;
            line.push_str(&format!("   {flat:.2}x {}", if flat <= 1.2 { "OK" } else { "MISSED" }));
        }
        if *target > 0.0 {
            let met = p50s.iter().all(|p| p <= target);
            line.push_str(&format!(
                "; p50 target <= {target} ms {}",
                if met { "OK" } else { "MISSED" }
            ));
        }
        println!("{line}");
    }
    for col in columns.iter() {
        println!("CreateContainer step medians at {} pods (ms): {}", col.pods, col.steps);
    }
    for col in columns.iter() {
        println!("RunPodSandbox step medians at {} pods (ms): {}", col.pods, col.pod_steps);
        println!("StartContainer step medians at {} pods (ms): {}", col.pods, col.start_steps);
    }
}

/// Runtime memory per pod with 100 one-container pods: the supervisor's PSS (the only
/// process podbay adds per pod) plus the daemon's growth.
async fn memory(node: &Node, c: &mut Client) -> anyhow::Result<()> {
    let daemon = daemon_ns_pid(node);
    let daemon_before = smaps_kb(node, daemon, "Pss:");
    let (mut ids, mut sups) = (vec![], vec![]);
    for i in 0..100 {
        let (id, _) = whole_pod(c, &format!("m{i}")).await?;
        sups.push(pod_info(c, &id).await?["pid"].as_u64().unwrap_or(0));
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pss: Vec<u64> = sups.iter().map(|p| smaps_kb(node, *p, "Pss:")).collect();
    let rss: Vec<u64> = sups.iter().map(|p| smaps_kb(node, *p, "Rss:")).collect();
    let daemon_after = smaps_kb(node, daemon, "Pss:");
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let growth = daemon_after.saturating_sub(daemon_before) as f64 / 100.0;
    let per_pod = avg(&pss) + growth;
    println!("-- memory with 100 one-container pods running");
    println!(
        "supervisor PSS per pod: avg {:.0} KiB (min {} max {}), RSS avg {:.0} KiB; daemon PSS \
         {daemon_before} -> {daemon_after} KiB ({growth:.1} KiB per pod); runtime memory per \
         pod {per_pod:.0} KiB; target <= 1024 KiB ({:.2}x) {}",
        avg(&pss),
        pss.iter().min().unwrap_or(&0),
        pss.iter().max().unwrap_or(&0),
        avg(&rss),
        per_pod / 1024.0,
        if per_pod <= 1024.0 { "OK" } else { "MISSED" }
    );
    println!("runtime processes per pod: 1 (the supervisor; the container's process is its child)");
    // What kubelet's periodic stats calls cost with these pods.
    let mut list_stats = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let req = cri::ListContainerStatsRequest { filter: None };
        let n = c.list_container_stats(req).await?.into_inner().stats.len();
        list_stats.push(t.elapsed());
        anyhow::ensure!(n == 100, "ListContainerStats gave {n} of 100 containers");
    }
    // Budget: 1 % of one core at kubelet's 10 s stats period.
    report("ListContainerStats, 100 containers", list_stats, 100.0);
    for id in &ids {
        teardown(c, id).await?;
    }
    Ok(())
}
