//! `scripts/bench`: drives a podbay daemon through its CRI socket with an in-process Rust
//! client (no client process start is measured), in a node namespace of its own, and
//! prints min/p50/p99 of each scenario against its target: pod start and teardown with the
//! pod network, memory per pod, and same-node pod-to-pod TCP throughput and ping RTT
//! against a plain veth + bridge baseline built in the same run.

use std::time::{Duration, Instant};

use podbay_tests::bench::{daemon_ns_pid, report, smaps_kb, step_breakdown};
use podbay_tests::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces)");
    let count: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let node = Node::start()?;
    let mut c = node.client().await?;
    println!("podbay bench: {count} pods, binaries from {}", bin_dir().display());
    let daemon = daemon_ns_pid(&node);
    let daemon_idle = smaps_kb(&node, daemon, "Pss:");

    // Warm-up: page in the binaries, the database and the kernel's namespace caches.
    for i in 0..20 {
        let id = run_pod(&mut c, pod_config(&format!("warm{i}"))).await?;
        remove_pod(&mut c, &id).await?;
    }

    for (label, mode, net) in [
        (
            "pod network, PID mode CONTAINER (kubelet default)",
            cri::NamespaceMode::Container,
            cri::NamespaceMode::Pod,
        ),
        (
            "pod network, PID mode POD (shareProcessNamespace)",
            cri::NamespaceMode::Pod,
            cri::NamespaceMode::Pod,
        ),
        (
            "hostNetwork, PID mode CONTAINER",
            cri::NamespaceMode::Container,
            cri::NamespaceMode::Node,
        ),
    ] {
        println!("-- {label}");
        let mut run = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let config = with_pid_mode(pod_config(&format!("p{i}")), mode);
            let config = with_network_mode(config, net);
            let t = Instant::now();
            ids.push(run_pod(&mut c, config).await?);
            run.push(t.elapsed());
        }
        let mut teardown = Vec::with_capacity(count);
        for id in &ids {
            let t = Instant::now();
            stop_pod(&mut c, id).await?;
            remove_pod(&mut c, id).await?;
            teardown.push(t.elapsed());
        }
        report("RunPodSandbox", run, 5.0);
        report("StopPodSandbox + RemovePodSandbox", teardown, 5.0);
    }

    // Memory with 100 pods running.
    let daemon_before = smaps_kb(&node, daemon, "Pss:");
    let mut ids = Vec::new();
    let mut procs = Vec::new();
    for i in 0..100 {
        let id = run_pod(&mut c, pod_config(&format!("m{i}"))).await?;
        let info = pod_info(&mut c, &id).await?;
        procs.push(info["pid"].as_u64().unwrap());
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pss: Vec<u64> = procs.iter().map(|p| smaps_kb(&node, *p, "Pss:")).collect();
    let rss: Vec<u64> = procs.iter().map(|p| smaps_kb(&node, *p, "Rss:")).collect();
    let daemon_after = smaps_kb(&node, daemon, "Pss:");
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let growth = daemon_after.saturating_sub(daemon_before) as f64 / 100.0;
    println!("-- memory with 100 pods running (one supervisor process per pod)");
    println!(
        "supervisor PSS per pod: avg {:.0} KiB (min {} max {}), RSS avg {:.0} KiB; target PSS <= 1024 KiB ({:.2}x) {}",
        avg(&pss),
        pss.iter().min().unwrap(),
        pss.iter().max().unwrap(),
        avg(&rss),
        avg(&pss) / 1024.0,
        if avg(&pss) <= 1024.0 { "OK" } else { "MISSED" }
    );
    println!(
        "daemon PSS: {daemon_idle} KiB just started, {daemon_before} KiB after the latency runs, \
         {daemon_after} KiB with 100 pods ({growth:.1} KiB per pod); \
         runtime memory per pod (supervisor + daemon growth): {:.0} KiB",
        avg(&pss) + growth
    );
    for id in &ids {
        remove_pod(&mut c, id).await?;
    }
    node.assert_clean()?;
    step_breakdown(&node, "sandbox ready", "RunPodSandbox");
    network(&node, &mut c).await
}

/// Same-node pod-to-pod TCP throughput (iperf3) and ping RTT, against two namespaces on a
/// plain bridge with plain veths (what any CNI bridge setup is), interleaved run by run.
async fn network(node: &Node, c: &mut Client) -> anyhow::Result<()> {
    println!("-- same-node pod-to-pod network vs. a plain veth + bridge baseline");
    let a = run_pod(c, pod_config("iperf-a")).await?;
    let b = run_pod(c, pod_config("iperf-b")).await?;
    let ip_b = pod_ip(c, &b).await?;
    node.sh(
        "mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && ip link add brbase type bridge && \
         ip link set brbase up && for i in 0 1; do ip netns add base$i && \
         ip link add vbase$i type veth peer name eth0 netns base$i && \
         ip link set vbase$i master brbase up && ip -n base$i addr add 10.99.0.1$i/24 dev eth0 && \
         ip -n base$i link set eth0 up && ip -n base$i link set lo up; done",
    )?;
    let pods = |cmd: &str, pod: &str| -> anyhow::Result<String> {
        let out = node.in_pod(pod, cmd)?;
        anyhow::ensure!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let base = |cmd: &str, ns: &str| node.sh(&format!("ip netns exec {ns} {cmd}"));
    let gbps = |json: String| -> f64 {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9
    };
    let rtt_ms = |out: String| -> f64 {
        // rtt min/avg/max/mdev = 0.031/0.045/0.080/0.010 ms
        out.lines()
            .find(|l| l.contains("min/avg/max"))
            .and_then(|l| l.split(" = ").nth(1))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (mut pod_tp, mut base_tp, mut pod_rtt, mut base_rtt) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        pods("iperf3 -s -1 -D", &b)?;
        base("iperf3 -s -1 -D", "base1")?;
        std::thread::sleep(Duration::from_millis(200));
        pod_tp.push(gbps(pods(&format!("iperf3 -c {ip_b} -t 3 -J"), &a)?));
        base_tp.push(gbps(base("iperf3 -c 10.99.0.11 -t 3 -J", "base0")?));
        pod_rtt.push(rtt_ms(pods(&format!("ping -q -c 50 -i 0.01 {ip_b}"), &a)?));
        base_rtt.push(rtt_ms(base("ping -q -c 50 -i 0.01 10.99.0.11", "base0")?));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (pt, bt) = (median(&mut pod_tp), median(&mut base_tp));
    let (pr, br) = (median(&mut pod_rtt), median(&mut base_rtt));
    println!(
        "TCP throughput (iperf3, 3 s x 3, median): pods {pt:.2} Gbit/s, baseline {bt:.2} Gbit/s: \
         {:.1}% of baseline; target >= 95% {}",
        pt / bt * 100.0,
        if pt / bt >= 0.95 { "OK" } else { "MISSED" }
    );
    println!(
        "ping RTT (50 x 10 ms, median of avg): pods {pr:.3} ms, baseline {br:.3} ms ({:.2}x)",
        pr / br
    );
    node.sh("ip link del brbase; ip netns del base0; ip netns del base1; pkill -x iperf3; true")?;
    remove_pod(c, &a).await?;
    remove_pod(c, &b).await?;
    Ok(())
}
