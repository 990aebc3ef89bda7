//! `scripts/bench containers`: app containers through the CRI socket with an in-process
//! Rust client, in a node namespace of its own: CreateContainer + StartContainer in a
//! running pod, a whole pod start (RunPodSandbox + CreateContainer + StartContainer of
//! one busybox `sleep`), its teardown, the cost of the RuntimeDefault seccomp filter
//! (interleaved with Unconfined), and runtime memory per pod with 100 one-container pods.

use std::time::{Duration, Instant};

use podbay_tests::bench::{daemon_ns_pid, report, smaps_kb, step_breakdown};
use podbay_tests::*;

fn sleeper(name: &str, unconfined: bool) -> cri::ContainerConfig {
    let seccomp = unconfined.then(|| cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    });
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp,
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

/// A whole pod: sandbox and one running container.
async fn whole_pod(c: &mut Client, name: &str) -> anyhow::Result<String> {
    let config = pod_config(name);
    let pod = run_pod(c, config.clone()).await?;
    create_start(c, &pod, &config, sleeper("app", false)).await?;
    Ok(pod)
}

async fn teardown(c: &mut Client, pod: &str) -> anyhow::Result<()> {
    stop_pod(c, pod).await?;
    remove_pod(c, pod).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces, cgroups)");
    let count: usize =
        std::env::var("BENCH_CONTAINERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let node = Node::with_busybox()?;
    let mut c = node.client().await?;
    println!("podbay container bench: {count} per scenario, binaries from {}", bin_dir().display());

    // Warm-up: page in the binaries, the image's layers and the kernel's caches.
    for i in 0..10 {
        let pod = whole_pod(&mut c, &format!("warm{i}")).await?;
        teardown(&mut c, &pod).await?;
    }

    // CreateContainer + StartContainer in running pods, RuntimeDefault and Unconfined
    // seccomp interleaved so the machine's drift hits both alike.
    let mut pods = Vec::with_capacity(count);
    for i in 0..count {
        let config = pod_config(&format!("c{i}"));
        pods.push((run_pod(&mut c, config.clone()).await?, config));
    }
    let (mut both, mut create, mut start, mut unconfined) = (vec![], vec![], vec![], vec![]);
    for (pod, config) in &pods {
        let (_, cr, st) = create_start(&mut c, pod, config, sleeper("default", false)).await?;
        both.push(cr + st);
        create.push(cr);
        start.push(st);
        let (_, cr, st) = create_start(&mut c, pod, config, sleeper("unconfined", true)).await?;
        unconfined.push(cr + st);
    }
    println!("-- containers in running pods (busybox sleep)");
    report("CreateContainer + StartContainer", both, 10.0);
    report("  CreateContainer alone", create, 10.0);
    report("  StartContainer alone", start, 10.0);
    report("  create + start, seccomp Unconfined", unconfined, 10.0);
    for (pod, _) in &pods {
        teardown(&mut c, pod).await?;
    }

    // Whole pods, then their teardown.
    let (mut up, mut down, mut ids) = (vec![], vec![], vec![]);
    for i in 0..count {
        let t = Instant::now();
        ids.push(whole_pod(&mut c, &format!("w{i}")).await?);
        up.push(t.elapsed());
    }
    for id in &ids {
        let t = Instant::now();
        teardown(&mut c, id).await?;
        down.push(t.elapsed());
    }
    println!("-- whole pods (RunPodSandbox + CreateContainer + StartContainer)");
    report("whole pod start", up, 20.0);
    report("StopPodSandbox + RemovePodSandbox", down, 20.0);

    step_breakdown(&node, "container created", "CreateContainer");
    memory(&node, &mut c).await?;
    node.assert_clean()
}

/// Runtime memory per pod with 100 one-container pods: the supervisor's PSS (the only
/// process podbay adds per pod) plus the daemon's growth.
async fn memory(node: &Node, c: &mut Client) -> anyhow::Result<()> {
    let daemon = daemon_ns_pid(node);
    let daemon_before = smaps_kb(node, daemon, "Pss:");
    let (mut ids, mut sups) = (vec![], vec![]);
    for i in 0..100 {
        let id = whole_pod(c, &format!("m{i}")).await?;
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
