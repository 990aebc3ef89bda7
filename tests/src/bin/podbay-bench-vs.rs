//! `scripts/bench --vs containerd`: podbay and a private containerd, each in a node of its
//! own, driven by the same in-process CRI client with the same pod and container configs,
//! interleaved (podbay, containerd, podbay, …) after a warm-up, images pulled beforehand.
//! Prints min/p50/p90/p99 per runtime and the podbay/containerd ratio of the p50s.

use std::time::{Duration, Instant};

use podbay_tests::bench::{ms, percentile};
use podbay_tests::containerd::{self, Containerd};
use podbay_tests::*;

/// One runtime under test: its CRI client and what its pods' configs add.
struct Runtime {
    name: &'static str,
    client: Client,
    cgroup_parent: &'static str,
}

/// Per-pod lifecycle timings of one runtime.
#[derive(Default)]
struct Lifecycle {
    run_pod: Vec<Duration>,
    create_start: Vec<Duration>,
    whole_pod: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn container(name: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

impl Runtime {
    fn pod(&self, name: &str) -> cri::PodSandboxConfig {
        let mut config = pod_config(name);
        if !self.cgroup_parent.is_empty() {
            config.linux.get_or_insert_default().cgroup_parent =
                format!("{}/{name}", self.cgroup_parent);
        }
        config
    }

    /// RunPodSandbox, CreateContainer + StartContainer, Stop + Remove of one pod.
    async fn lifecycle(&mut self, name: &str, into: &mut Lifecycle) -> anyhow::Result<()> {
        let config = self.pod(name);
        let t = Instant::now();
        let pod = run_pod(&mut self.client, config.clone()).await?;
        let run = t.elapsed();
        let t = Instant::now();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("app")),
            sandbox_config: Some(config),
        };
        let id = self.client.create_container(req).await?.into_inner().container_id;
        self.client.start_container(cri::StartContainerRequest { container_id: id }).await?;
        let create_start = t.elapsed();
        let t = Instant::now();
        stop_pod(&mut self.client, &pod).await?;
        remove_pod(&mut self.client, &pod).await?;
        into.teardown.push(t.elapsed());
        into.run_pod.push(run);
        into.create_start.push(create_start);
        into.whole_pod.push(run + create_start);
        Ok(())
    }
}

fn row(scenario: &str, a: &[Duration], b: &[Duration]) -> String {
    let stats = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        [0.0, 0.5, 0.9, 0.99].map(|p| ms(if p == 0.0 { v[0] } else { percentile(&v, p) }))
    };
    let (pa, pb) = (stats(a), stats(b));
    format!(
        "| {scenario} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} / {:.1} | {:.3} (1/{:.1}) |",
        pa[0],
        pa[1],
        pa[2],
        pa[3],
        pb[0],
        pb[1],
        pb[2],
        pb[3],
        pa[1] / pb[1],
        pb[1] / pa[1],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces, cgroups)");
    let count: usize = std::env::var("BENCH_VS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    println!("podbay vs {}: {count} interleaved pod lifecycles each", Containerd::version());
    let podbay_node = Node::with_busybox()?;
    let containerd = Containerd::start().await?;
    let mut runtimes = [
        Runtime { name: "podbay", client: podbay_node.client().await?, cgroup_parent: "" },
        Runtime {
            name: "containerd",
            client: containerd.client().await?,
            cgroup_parent: containerd::CGROUP_PARENT,
        },
    ];
    let outcome = measure(&mut runtimes, count).await;
    if outcome.is_err() {
        let log = std::fs::read_to_string(containerd.node.dir().join("containerd.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("containerd's log (last lines, newest first):\n{}", tail.join("\n"));
    }
    let results = outcome?;
    println!(
        "\n| scenario (ms: min / p50 / p90 / p99) | {} | {} | p50 ratio |",
        runtimes[0].name, runtimes[1].name
    );
    println!("|---|---|---|---|");
    let [p, c] = &results;
    println!("{}", row("RunPodSandbox", &p.run_pod, &c.run_pod));
    println!("{}", row("CreateContainer + StartContainer", &p.create_start, &c.create_start));
    println!("{}", row("whole pod start (sandbox + one container)", &p.whole_pod, &c.whole_pod));
    println!("{}", row("StopPodSandbox + RemovePodSandbox", &p.teardown, &c.teardown));
    podbay_node.assert_clean()?;
    Ok(())
}

/// Warm-up, then `count` pod lifecycles per runtime, interleaved.
async fn measure(runtimes: &mut [Runtime; 2], count: usize) -> anyhow::Result<[Lifecycle; 2]> {
    let mut results = [Lifecycle::default(), Lifecycle::default()];
    let mut warm = [Lifecycle::default(), Lifecycle::default()];
    for i in 0..5 {
        for (rt, w) in runtimes.iter_mut().zip(warm.iter_mut()) {
            rt.lifecycle(&format!("warm{i}"), w).await?;
        }
    }
    for i in 0..count {
        for (rt, r) in runtimes.iter_mut().zip(results.iter_mut()) {
            rt.lifecycle(&format!("p{i}"), r).await?;
        }
    }
    Ok(results)
}
