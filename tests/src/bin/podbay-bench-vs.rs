//! `scripts/bench --vs containerd`: podbay and a private containerd, each in a node of its
//! own, driven by the same in-process CRI client with the same pod and container configs,
//! interleaved (podbay, containerd, podbay, …) after a warm-up, images pulled beforehand.
//! Prints min/p50/p90/p99 per runtime and the podbay/containerd ratio of the p50s.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use podbay_tests::bench::{ms, percentile, smaps_kb, step_medians};
use podbay_tests::containerd::{self, Containerd};
use podbay_tests::kubelet::{self, CgroupRoot, ContainerShape, PodShape, Qos};
use podbay_tests::*;

/// One runtime under test: its CRI client, its node, its daemon's process name and what
/// its pods' configs add.
struct Runtime<'a> {
    name: &'static str,
    client: Client,
    node: &'a Node,
    daemon: &'static str,
    cgroup_parent: &'static str,
    images: ImageClient,
    /// kubelet's cgroup root for the kubelet-shaped pods.
    kubelet_root: CgroupRoot,
}

/// Memory and density of one runtime with 100 one-container pods running.
#[derive(Default)]
struct Density {
    daemon_idle_rss_kib: u64,
    pss_per_pod_kib: f64,
    daemon_growth_kib: f64,
    processes_per_pod: f64,
    pods_per_second: f64,
    list_containers: Vec<Duration>,
    /// The calls kubelet polls with, 100 pods running: name and latencies.
    polling: Vec<(&'static str, Vec<Duration>)>,
}

/// The node's processes: pid (node numbering), name and command line.
fn node_processes(node: &Node) -> anyhow::Result<Vec<(u64, String, String)>> {
    let out = node.sh(
        "for p in /proc/[0-9]*; do echo \"${p#/proc/}|$(cat $p/comm 2>/dev/null)|$(tr '\\0' ' ' <$p/cmdline 2>/dev/null)\"; done",
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '|');
            let pid = parts.next()?.parse().ok()?;
            Some((pid, parts.next()?.to_owned(), parts.next()?.trim().to_owned()))
        })
        .filter(|(pid, comm, _)| {
            *pid != 1 && !matches!(comm.as_str(), "sh" | "nsenter" | "cat" | "tr")
        })
        .collect())
}

/// Per-pod lifecycle timings of one runtime.
#[derive(Default)]
struct Lifecycle {
    run_pod: Vec<Duration>,
    create_start: Vec<Duration>,
    whole_pod: Vec<Duration>,
    teardown: Vec<Duration>,
    /// From the RunPodSandbox call until the pod's IP answers the node's ping.
    ping: Vec<Duration>,
    /// A pod as kubelet starts it: RunPodSandbox, the pull check (ImageStatus), an init
    /// container created, started and seen exited, then the app container running.
    kubelet_pod: Vec<Duration>,
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

impl Runtime<'_> {
    fn daemon_pid(&self) -> anyhow::Result<u64> {
        node_processes(self.node)?
            .into_iter()
            .find(|(_, comm, _)| comm == self.daemon)
            .map(|(pid, ..)| pid)
            .ok_or_else(|| anyhow::anyhow!("no {} process in its node", self.daemon))
    }

    /// A pod with one running container.
    async fn whole_pod(&self, name: String) -> anyhow::Result<String> {
        let mut c = self.client.clone();
        let config = self.pod(&name);
        let pod = run_pod(&mut c, config.clone()).await?;
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("app")),
            sandbox_config: Some(config),
        };
        let id = c.create_container(req).await?.into_inner().container_id;
        c.start_container(cri::StartContainerRequest { container_id: id }).await?;
        Ok(pod)
    }

    /// 100 pods started 10 at a time; then memory, processes and ListContainers with
    /// them (and a second container each) running.
    async fn density(&mut self, into: &mut Density) -> anyhow::Result<()> {
        let daemon = self.daemon_pid()?;
        let before = node_processes(self.node)?;
        let daemon_before = smaps_kb(self.node, daemon, "Pss:");
        let t = Instant::now();
        let pods: Vec<String> = futures_util::stream::iter(0..100)
            .map(|i| self.whole_pod(format!("d{i}")))
            .buffer_unordered(10)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        into.pods_per_second = 100.0 / t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let known: std::collections::HashSet<u64> = before.iter().map(|p| p.0).collect();
        // Every process the runtime added, but not the containers' own `sleep 3600`.
        let added: Vec<u64> = node_processes(self.node)?
            .into_iter()
            .filter(|(pid, _, cmd)| !known.contains(pid) && cmd != "sleep 3600")
            .map(|(pid, ..)| pid)
            .collect();
        into.processes_per_pod = added.len() as f64 / 100.0;
        into.pss_per_pod_kib =
            added.iter().map(|p| smaps_kb(self.node, *p, "Pss:")).sum::<u64>() as f64 / 100.0;
        into.daemon_growth_kib =
            smaps_kb(self.node, daemon, "Pss:").saturating_sub(daemon_before) as f64 / 100.0;
        for (i, pod) in pods.iter().enumerate() {
            let req = cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container("sidecar")),
                sandbox_config: Some(self.pod(&format!("d{i}"))),
            };
            self.client.create_container(req).await?;
        }
        for _ in 0..50 {
            let t = Instant::now();
            let req = cri::ListContainersRequest { filter: None };
            let n = self.client.list_containers(req).await?.into_inner().containers.len();
            into.list_containers.push(t.elapsed());
            anyhow::ensure!(n == 200, "{} lists {n} containers, not 200", self.name);
        }
        into.polling = self.polling().await?;
        futures_util::stream::iter(pods)
            .map(|pod| {
                let mut c = self.client.clone();
                async move {
                    stop_pod(&mut c, &pod).await?;
                    remove_pod(&mut c, &pod).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(10)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<()>>()
    }

    /// kubelet's periodic calls (PLEG's relist, the stats and eviction managers), 50
    /// rounds each.
    async fn polling(&mut self) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
        let mut out: Vec<(&'static str, Vec<Duration>)> = Vec::new();
        let c = &mut self.client;
        let i = &mut self.images;
        macro_rules! time {
            ($name:literal, $call:expr) => {{
                let mut v = Vec::new();
                for _ in 0..50 {
                    let t = Instant::now();
                    $call.await?;
                    v.push(t.elapsed());
                }
                out.push(($name, v));
            }};
        }
        let ready = || cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        time!("ListPodSandbox", c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }));
        time!(
            "ListPodSandbox (ready)",
            c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(ready()) })
        );
        time!("ListContainers", c.list_containers(cri::ListContainersRequest { filter: None }));
        time!(
            "ListContainerStats",
            c.list_container_stats(cri::ListContainerStatsRequest { filter: None })
        );
        time!(
            "ListPodSandboxStats",
            c.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
        );
        time!("ImageFsInfo", i.image_fs_info(cri::ImageFsInfoRequest {}));
        Ok(out)
    }

    /// A kubelet-shaped pod start (see [`Lifecycle::kubelet_pod`]), then its removal.
    async fn kubelet_pod(&mut self, name: &str, into: &mut Lifecycle) -> anyhow::Result<()> {
        let pod = PodShape::new(name, Qos::Burstable, &self.kubelet_root);
        let config = kubelet::pod_sandbox_config(self.node, &pod);
        std::fs::create_dir_all(pod.log_directory(self.node))?;
        let spec = |image: &str| cri::ImageSpec { image: image.into(), ..Default::default() };
        let t = Instant::now();
        let id = run_pod(&mut self.client, config.clone()).await?;
        let req = cri::ImageStatusRequest { image: Some(spec(BUSYBOX)), verbose: false };
        let image = self.images.image_status(req).await?.into_inner().image;
        let image_id = image.map(|i| i.id).unwrap_or_default();
        let mut init = ContainerShape::new("init", &image_id, &["true"]);
        init.cpu_request_milli = 100;
        let mut app = ContainerShape::new("app", &image_id, &["sleep", "3600"]);
        (app.cpu_request_milli, app.memory_limit) = (100, 64 << 20);
        for (shape, wait_exit) in [(&init, true), (&app, false)] {
            let req = cri::CreateContainerRequest {
                pod_sandbox_id: id.clone(),
                config: Some(kubelet::container_config(self.node, &pod, shape)),
                sandbox_config: Some(config.clone()),
            };
            let cid = self.client.create_container(req).await?.into_inner().container_id;
            let start = cri::StartContainerRequest { container_id: cid.clone() };
            self.client.start_container(start).await?;
            if wait_exit {
                loop {
                    let req =
                        cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false };
                    let s = self.client.container_status(req).await?.into_inner().status;
                    if s.is_some_and(|s| s.state == cri::ContainerState::ContainerExited as i32) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        into.kubelet_pod.push(t.elapsed());
        stop_pod(&mut self.client, &id).await?;
        remove_pod(&mut self.client, &id).await?;
        Ok(())
    }

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
        let ip = pod_ip(&mut self.client, &pod).await?;
        let out = self.node.sh_output(&format!("ping -q -n -c 1 -w 2 -i 0.002 {ip}"))?;
        anyhow::ensure!(out.status.success(), "{}: {ip} does not answer ping", self.name);
        into.ping.push(t.elapsed());
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
        [0.0, 0.5, 0.9, 0.99].map(|p| ms(percentile(&v, p)))
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
    // Interrupted, the run's future is dropped: both nodes, containerd, the registry and
    // every cgroup are given back by their Drop, as at the end of a run.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run(count) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; everything it started is removed"),
        _ = term.recv() => anyhow::bail!("terminated; everything it started is removed"),
    }
}

async fn run(count: usize) -> anyhow::Result<()> {
    println!("podbay vs {}: {count} interleaved pod lifecycles each", Containerd::version());
    let podbay_node = Node::with_busybox()?;
    let containerd = Containerd::start().await?;
    let mut runtimes = [
        Runtime {
            name: "podbay",
            client: podbay_node.client().await?,
            node: &podbay_node,
            daemon: "podbay",
            cgroup_parent: "",
            images: podbay_node.image_client().await?,
            kubelet_root: CgroupRoot::new("bench"),
        },
        Runtime {
            name: "containerd",
            client: containerd.client().await?,
            node: &containerd.node,
            daemon: "containerd",
            cgroup_parent: containerd::CGROUP_PARENT,
            images: ImageClient::new(channel(&containerd.socket()).await?),
            kubelet_root: CgroupRoot::new("bench-containerd"),
        },
    ];
    let mut density = [Density::default(), Density::default()];
    for (rt, d) in runtimes.iter().zip(density.iter_mut()) {
        d.daemon_idle_rss_kib = smaps_kb(rt.node, rt.daemon_pid()?, "Rss:");
    }
    let outcome = measure(&mut runtimes, count).await;
    if outcome.is_err() {
        let log = std::fs::read_to_string(containerd.node.dir().join("containerd.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("containerd's log (last lines, newest first):\n{}", tail.join("\n"));
    }
    let results = outcome?;
    // Before the density runs: those start 10 pods at a time.
    let steps = [
        ("RunPodSandbox", step_medians(&podbay_node, "sandbox ready")),
        ("CreateContainer", step_medians(&podbay_node, "container created")),
    ];
    for (rt, d) in runtimes.iter_mut().zip(density.iter_mut()) {
        rt.density(d).await?;
    }
    let mut floor: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let _ = podbay_node.sh_output("ping -q -n -c 1 -w 2 -i 0.002 127.0.0.1");
            t.elapsed()
        })
        .collect();
    floor.sort();
    let report = report(&results, &density, count, &steps, floor[floor.len() / 2]);
    print!("\n{report}");
    let dir = std::path::PathBuf::from(std::env::var("BENCH_REPORT_DIR").unwrap_or("docs".into()));
    std::fs::write(dir.join("benchmarks.md"), &report)?;
    chart(&dir.join("bench-pod-start.svg"), &results)?;
    println!("\nwritten: {0}/benchmarks.md, {0}/bench-pod-start.svg", dir.display());
    podbay_node.assert_clean()?;
    Ok(())
}

/// Warm-up, then `count` pod lifecycles per runtime, interleaved.
async fn measure(runtimes: &mut [Runtime<'_>; 2], count: usize) -> anyhow::Result<[Lifecycle; 2]> {
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
    for i in 0..count.div_ceil(2) {
        for (rt, r) in runtimes.iter_mut().zip(results.iter_mut()) {
            rt.kubelet_pod(&format!("k{i}"), r).await?;
        }
    }
    Ok(results)
}

/// The Markdown report: the machine, both runtimes' versions, and the tables.
fn report(
    results: &[Lifecycle; 2],
    density: &[Density; 2],
    count: usize,
    steps: &[(&str, String)],
    ping_floor: Duration,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let cgroups = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else if std::path::Path::new("/sys/fs/cgroup/unified").exists() {
        "v1 (hybrid: cgroup2 at /sys/fs/cgroup/unified)"
    } else {
        "v1"
    };
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_owned()
            })
            .unwrap_or_default()
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(out, "# podbay vs containerd\n");
    let _ = writeln!(
        out,
        "Written by `scripts/bench --vs containerd` ({count} interleaved pod lifecycles per \
         runtime after 5 of warm-up; the same in-process CRI client, pod and container \
         configs for both; each runtime in a node namespace of its own).\n"
    );
    let _ = writeln!(out, "- machine: {cpu}, {cores} cores, {mem}");
    let _ =
        writeln!(out, "- kernel: {}, cgroups {cgroups}", read("/proc/sys/kernel/osrelease").trim());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "- podbay {} (commit `{commit}`)", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "- {}; {}", Containerd::version(), version("runc", "--version"));
    let _ = writeln!(
        out,
        "\n| scenario (ms: min / p50 / p90 / p99) | podbay | containerd | podbay/containerd p50 |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let [p, c] = results;
    for (name, a, b) in [
        ("RunPodSandbox", &p.run_pod, &c.run_pod),
        ("CreateContainer + StartContainer", &p.create_start, &c.create_start),
        ("whole pod start (sandbox + one container)", &p.whole_pod, &c.whole_pod),
        ("StopPodSandbox + RemovePodSandbox", &p.teardown, &c.teardown),
        ("RunPodSandbox until the pod's IP answers ping (¹)", &p.ping, &c.ping),
        (
            "kubelet-shaped pod start (²): sandbox, pull check, init container run, app running",
            &p.kubelet_pod,
            &c.kubelet_pod,
        ),
    ] {
        let _ = writeln!(out, "{}", row(name, a, b));
    }
    let [dp, dc] = density;
    let _ = writeln!(
        out,
        "{}",
        row("ListContainers, 100 pods x 2 containers", &dp.list_containers, &dc.list_containers)
    );
    for ((name, a), (_, b)) in dp.polling.iter().zip(&dc.polling) {
        let _ = writeln!(out, "{}", row(&format!("kubelet's poll: {name}, 100 pods"), a, b));
    }
    let _ = writeln!(out, "\n| 100 one-container pods | podbay | containerd | podbay/containerd |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut line = |what: &str, a: f64, b: f64, unit: &str| {
        let _ = writeln!(out, "| {what} | {a:.1} {unit} | {b:.1} {unit} | {:.3} |", a / b);
    };
    line("pods started per second, 10 in flight", dp.pods_per_second, dc.pods_per_second, "/s");
    line(
        "runtime memory per pod (PSS of the processes it adds + daemon growth)",
        dp.pss_per_pod_kib + dp.daemon_growth_kib,
        dc.pss_per_pod_kib + dc.daemon_growth_kib,
        "KiB",
    );
    line("— of which daemon growth", dp.daemon_growth_kib, dc.daemon_growth_kib, "KiB");
    line("runtime processes per pod", dp.processes_per_pod, dc.processes_per_pod, "");
    line(
        "daemon idle RSS",
        dp.daemon_idle_rss_kib as f64 / 1024.0,
        dc.daemon_idle_rss_kib as f64 / 1024.0,
        "MiB",
    );
    let _ = writeln!(
        out,
        "\n(¹) The node's `ping -c 1 -i 0.002` run through `nsenter`; starting it takes \
         {:.1} ms here (p50 of pinging the node's own loopback), in both columns.",
        ms(ping_floor)
    );
    let _ = writeln!(
        out,
        "\n(²) {} pods per runtime, interleaved, with the requests kubelet builds \
         (tests/src/kubelet.rs: Burstable QoS cgroup parent, service-account, hosts and \
         termination-log mounts, hugepage limits, masked paths, the image named by id); the \
         init container's exit is seen by polling ContainerStatus every millisecond.",
        p.kubelet_pod.len()
    );
    let _ = writeln!(
        out,
        "\nWhere podbay's pod start goes (medians of each step over the warm-up and the \
         interleaved calls, ms, from the daemon's debug log):\n"
    );
    for (call, medians) in steps {
        let _ = writeln!(out, "- {call}: {medians}");
    }
    let _ = writeln!(out, "\n![whole pod start, both runtimes](bench-pod-start.svg)");
    out
}

/// The whole-pod-start latencies of both runtimes as cumulative distributions (log x).
fn chart(path: &std::path::Path, results: &[Lifecycle; 2]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let ms_of = |l: &Lifecycle| {
        let mut v: Vec<f64> = l.whole_pod.iter().map(|d| ms(*d)).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let series = [("podbay", ms_of(&results[0]), BLUE), ("containerd", ms_of(&results[1]), RED)];
    let max = series.iter().filter_map(|(_, v, _)| v.last()).fold(1.0, |a: f64, b| a.max(*b));
    let min = series.iter().filter_map(|(_, v, _)| v.first()).fold(max, |a: f64, b| a.min(*b));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "whole pod start (RunPodSandbox + CreateContainer + StartContainer)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(((min * 0.8)..(max * 1.2)).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("fraction of pods started")
        .draw()?;
    for (name, v, color) in series {
        let n = v.len() as f64;
        let points = v.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
