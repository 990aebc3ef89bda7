//! `scripts/bench`: drives a podbay daemon through its CRI socket with an in-process Rust
//! client (no client process start is measured), in a node namespace of its own, and
//! prints min/p50/p99 of each scenario against its target.

use std::time::{Duration, Instant};

use podbay_tests::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(name: &str, mut samples: Vec<Duration>, target_p50_ms: f64) {
    samples.sort();
    let p50 = ms(percentile(&samples, 0.5));
    println!(
        "{name:<38} n={:<4} min {:>7.3} ms  p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  target p50 <= {target_p50_ms} ms ({:.2}x of target) {}",
        samples.len(),
        ms(samples[0]),
        p50,
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        p50 / target_p50_ms,
        if p50 <= target_p50_ms { "OK" } else { "MISSED" }
    );
}

/// Pss or Rss (kB) of a node process, read from the host through the node's /proc.
fn smaps_kb(node: &Node, ns_pid: u64, field: &str) -> u64 {
    let path = format!("/proc/{}/root/proc/{ns_pid}/smaps_rollup", node.init_pid());
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn daemon_ns_pid(node: &Node) -> u64 {
    let host = node.daemon_pid().expect("daemon running");
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace().last().unwrap().parse().unwrap()
}

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

    for (label, mode) in [
        ("PID mode CONTAINER (kubelet default)", cri::NamespaceMode::Container),
        ("PID mode POD (shareProcessNamespace)", cri::NamespaceMode::Pod),
    ] {
        println!("-- {label}");
        let mut run = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let config = with_pid_mode(pod_config(&format!("p{i}")), mode);
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
        report("RunPodSandbox (no network yet)", run, 3.0);
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
    Ok(())
}
