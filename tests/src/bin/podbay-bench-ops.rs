//! `scripts/bench ops`: the operator's tools. `podbay play --detach` of the two-container
//! example (examples/localhost.yaml) from the command to both containers running, against
//! the same pod made by hand with the crictl-style commands (`podbay run` of the server,
//! then `podbay create` + `podbay start` of the client); and the time to scrape `/metrics`
//! with 250 pods on the node.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use podbay_tests::bench::{ms, report};
use podbay_tests::images::{self, Entry};
use podbay_tests::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const METRICS: &str = "127.0.0.1:9460";

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces)");
    let n = env("BENCH_OPS", 20);
    let pods = env("BENCH_OPS_PODS", 250);
    let mut node = Node::empty()?;
    node.set_config(&format!("[metrics]\naddress = \"{METRICS}\"\n"));
    node.start_daemon()?;
    node.import_busybox()?;
    let layout = node.dir().join("latest-layout");
    let image = Entry::Image(images::fixtures().busybox);
    images::write_layout(&layout, &[("docker.io/library/busybox:latest", &image)])?;
    let out = node.cli(&["image", "import", &layout.to_string_lossy()])?;
    anyhow::ensure!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    println!("podbay bench: operator tools, {n} samples, binaries from {}", bin_dir().display());

    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/localhost.yaml");
    let state = node.dir().join("play");
    let podbay = |args: &[&str]| -> anyhow::Result<String> {
        let out =
            node.command(podbay_bin()).arg("--endpoint").arg(node.socket()).args(args).output()?;
        anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let play_args = |down: bool| {
        let mut a = vec!["play".to_owned(), "--state-dir".into(), state.display().to_string()];
        if down {
            a.push("--down".into());
        } else {
            a.push("--detach".into());
        }
        a.push(example.display().to_string());
        a
    };
    // The same pod and containers as crictl-style files.
    let dir = node.dir();
    std::fs::write(
        dir.join("pod.yaml"),
        "metadata: {name: by-hand, namespace: default, uid: by-hand}\n",
    )?;
    std::fs::write(
        dir.join("server.yaml"),
        "metadata: {name: server}\nimage: {image: busybox}\ncommand: [sh, -c, 'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www']\n",
    )?;
    std::fs::write(
        dir.join("client.yaml"),
        "metadata: {name: client}\nimage: {image: busybox}\ncommand: [sh, -c, 'while true; do wget -q -O - http://127.0.0.1:8080/ && sleep 2 || sleep 0.2; done']\n",
    )?;
    let file = |f: &str| dir.join(f).display().to_string();
    let (mut played, mut by_hand) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let args = play_args(false);
        podbay(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        played.push(t.elapsed());
        let args = play_args(true);
        podbay(&args.iter().map(String::as_str).collect::<Vec<_>>())?;

        let t = Instant::now();
        podbay(&["run", "--no-pull", &file("server.yaml"), &file("pod.yaml")])?;
        let pod = podbay(&["pods", "-q", "--name", "by-hand"])?;
        let client = podbay(&["create", &pod, &file("client.yaml"), &file("pod.yaml")])?;
        podbay(&["start", &client])?;
        by_hand.push(t.elapsed());
        podbay(&["rmp", &pod])?;
    }
    report("play --detach (2 containers running)", played.clone(), 100.0);
    report("by hand: run + pods + create + start", by_hand.clone(), 100.0);
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        ms(podbay_tests::bench::percentile(&v, 0.5))
    };
    println!(
        "-- play / by hand p50: {:.2} (one command instead of four)",
        p50(played) / p50(by_hand)
    );

    // /metrics with many pods: scraped from a thread in the node's network namespace.
    let mut c =
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
            let mut c = node.client().await?;
            for i in 0..pods {
                run_pod(&mut c, pod_config(&format!("m{i}"))).await?;
            }
            anyhow::Ok(c)
        })?;
    let _ = &mut c;
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", node.init_pid()))?;
    let (samples, size) = std::thread::spawn(move || -> anyhow::Result<(Vec<Duration>, usize)> {
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut samples = Vec::new();
        let mut size = 0;
        for _ in 0..n.max(50) {
            let t = Instant::now();
            let mut s = std::net::TcpStream::connect(METRICS)?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = Vec::new();
            s.read_to_end(&mut body)?;
            samples.push(t.elapsed());
            anyhow::ensure!(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"));
            size = body.len();
        }
        Ok((samples, size))
    })
    .join()
    .expect("scrape thread")?;
    report(&format!("GET /metrics, {pods} pods ({} KiB)", size / 1024), samples, 10.0);
    Ok(())
}
