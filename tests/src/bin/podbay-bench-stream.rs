//! `scripts/bench stream`: CRI streaming in a node namespace of its own, driven in-process
//! (a thread that enters the node's network namespace, where the streaming server
//! listens on loopback): Exec round trip of `true` against ExecSync on the same container,
//! Attach first-byte latency, port-forward TCP throughput against a direct connection to
//! the pod's IP, and the runtime memory each open exec session costs. `BENCH_CGROUP=v2`:
//! on a cgroup v2 node (`podbay_tests::bench::node`).

use std::time::{Duration, Instant};

use podbay::stream::client::ClientSession;
use podbay_tests::bench::{daemon_ns_pid, ms, report, smaps_kb};
use podbay_tests::containerd::Containerd;
use podbay_tests::ctr::ctr;
use podbay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces)");
    let node = podbay_tests::bench::node()?;
    let rt = || tokio::runtime::Builder::new_current_thread().enable_all().build();
    // With BENCH_STREAM_VS=containerd: the same streaming calls on a private containerd,
    // from a thread in its node's network namespace (where its streaming server listens).
    let vs = std::env::var("BENCH_STREAM_VS").is_ok_and(|v| v == "containerd");
    let containerd = if vs { Some(rt()?.block_on(Containerd::start())?) } else { None };
    let n = env("BENCH_STREAM", 50);
    let theirs = match &containerd {
        Some(cd) => Some(std::thread::scope(|scope| {
            scope
                .spawn(|| -> anyhow::Result<VsFigures> {
                    let netns =
                        std::fs::File::open(format!("/proc/{}/ns/net", cd.node.init_pid()))?;
                    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    rt()?.block_on(async {
                        let mut c = cd.client().await?;
                        vs_figures(&mut c, podbay_tests::containerd::CGROUP_PARENT, n).await
                    })
                })
                .join()
                .expect("containerd bench thread")
        })?),
        None => None,
    };
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", node.init_pid()))?;
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    // This thread (and the runtime built on it) is in the node's network namespace now.
    rt()?.block_on(async {
        bench(&node).await?;
        if let Some(theirs) = theirs {
            let mut c = node.client().await?;
            let ours = vs_figures(&mut c, "", n).await?;
            compare(&ours, &theirs);
        }
        anyhow::Ok(())
    })
}

/// podbay against containerd, p50s and their ratio.
fn compare(ours: &VsFigures, theirs: &VsFigures) {
    let p50 = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        ms(podbay_tests::bench::percentile(&v, 0.5))
    };
    println!(
        "\nstreaming, podbay vs {} (p50, {} samples):",
        Containerd::version(),
        ours.exec.len()
    );
    for (name, a, b) in [
        ("ExecSync `true`", p50(&ours.sync), p50(&theirs.sync)),
        ("Exec `true` (URL, SPDY, exit status)", p50(&ours.exec), p50(&theirs.exec)),
    ] {
        println!("  {name:<38} podbay {a:>7.2} ms  containerd {b:>7.2} ms  ratio {:.2}", a / b);
    }
    for (name, fig) in [("podbay", ours), ("containerd", theirs)] {
        println!(
            "  port-forward {name:<11} direct {:>6.0} MB/s  forwarded {:>6.0} MB/s  {:.0} % of direct  (fewest bytes of one 256 MiB GET: {})",
            fig.direct / 1e6,
            fig.forwarded / 1e6,
            fig.forwarded / fig.direct * 100.0,
            fig.fewest
        );
    }
    println!(
        "  port-forward podbay / containerd (forwarded MB/s): {:.2}",
        ours.forwarded / theirs.forwarded
    );
}

async fn bench(node: &Node) -> anyhow::Result<()> {
    let n = env("BENCH_STREAM", 50);
    let mut c = node.client().await?;
    println!(
        "podbay bench: CRI streaming, {n} samples each, binaries from {}",
        bin_dir().display()
    );
    let pc = pod_config("stream");
    let pod = run_pod(&mut c, pc.clone()).await?;
    let shell = podbay_tests::ctr::run(&mut c, &pod, &pc, podbay_tests::ctr::sleeper("sh")).await;
    let web = ctr(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count=256 2>/dev/null && exec httpd -f -p 8080 -h /www",
        ],
    );
    let web = podbay_tests::ctr::run(&mut c, &pod, &pc, web).await;
    let ticker = ctr("ticker", &["sh", "-c", "while :; do echo x; usleep 1000; done"]);
    let _ticker = podbay_tests::ctr::run(&mut c, &pod, &pc, ticker).await;
    let _ = web;

    // Exec round trip of `true` against ExecSync, interleaved.
    let (sync, streamed) = exec_vs_sync(&mut c, &shell, n).await?;
    report("ExecSync `true`", sync.clone(), 20.0);
    report("Exec `true` (URL, SPDY, exit status)", streamed.clone(), 20.0);
    // The pattern of kubelet's exec probes: one call now and then on a quiet node.
    let mut spaced = Vec::new();
    for _ in 0..n.min(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let req = cri::ExecSyncRequest {
            container_id: shell.clone(),
            cmd: vec!["true".into()],
            timeout: 0,
        };
        c.exec_sync(req).await?;
        spaced.push(t.elapsed());
    }
    report("ExecSync `true`, 200 ms apart (probes)", spaced, 20.0);
    // An exec into a container under the RuntimeDefault seccomp profile, which the
    // exec's process inherits from its helper (kubelet's seccompDefault, and what the
    // restricted Pod Security Standard asks for).
    let mut confined = podbay_tests::ctr::sleeper("confined");
    podbay_tests::ctr::security(&mut confined).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let confined = podbay_tests::ctr::run(&mut c, &pod, &pc, confined).await;
    let mut execs = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let cmd = vec!["true".into()];
        c.exec_sync(cri::ExecSyncRequest { container_id: confined.clone(), cmd, timeout: 0 })
            .await?;
        execs.push(t.elapsed());
    }
    report("ExecSync `true`, RuntimeDefault seccomp", execs, 20.0);

    // Attach: from the call to the first byte of output.
    let mut first = Vec::new();
    for _ in 0..n.min(30) {
        let t = Instant::now();
        let req = cri::AttachRequest {
            container_id: _ticker.clone(),
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let url = c.attach(req).await?.into_inner().url;
        let s = ClientSession::connect(&url, "v4.channel.k8s.io").await?;
        let _error = s.open(&[("streamType", "error")]).await?;
        let (_, mut out) = s.open(&[("streamType", "stdout")]).await?;
        let _err = s.open(&[("streamType", "stderr")]).await?;
        out.recv().await.ok_or_else(|| anyhow::anyhow!("no output"))?;
        first.push(t.elapsed());
    }
    report("Attach, call to first output byte", first, 20.0);
    // The ticker's 1000 lines a second (log copies, wakeups) must not share the two cores
    // with the throughput runs below.
    let stop = cri::StopContainerRequest { container_id: _ticker.clone(), timeout: 0 };
    c.stop_container(stop).await?;

    // Memory: the daemon and the pod's supervisor with 50 exec sessions open (before the
    // port-forward, whose buffers would leave free memory for the sessions to reuse).
    let daemon = daemon_ns_pid(node);
    let supervisor: u64 = node.sh("pgrep -x podbay-pod | head -1")?.trim().parse()?;
    let before = smaps_kb(node, daemon, "Pss:") + smaps_kb(node, supervisor, "Pss:");
    let mut open = Vec::new();
    for _ in 0..50 {
        let req = cri::ExecRequest {
            container_id: shell.clone(),
            cmd: vec!["sleep".into(), "600".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let url = c.exec(req).await?.into_inner().url;
        let s = ClientSession::connect(&url, "v4.channel.k8s.io").await?;
        let mut streams = Vec::new();
        for kind in ["error", "stdin", "stdout", "stderr"] {
            streams.push(s.open(&[("streamType", kind)]).await?);
        }
        open.push((s, streams));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = smaps_kb(node, daemon, "Pss:") + smaps_kb(node, supervisor, "Pss:");
    println!(
        "memory per open exec session (daemon + supervisor Pss, 50 open)  {:.1} KiB",
        after.saturating_sub(before) as f64 / 50.0
    );
    drop(open);

    // Port-forward throughput against the pod's IP, 256 MiB each, best of three.
    let (direct, forwarded, fewest) = forward_throughput(&mut c, &pod).await?;
    anyhow::ensure!(fewest > 256 << 20, "podbay forwarded only {fewest} bytes");
    println!(
        "port-forward throughput (256 MiB over HTTP)  direct to the pod {:>7.0} MB/s  forwarded {:>7.0} MB/s  {:.0} % (target >= 70 %) {}",
        direct / 1e6,
        forwarded / 1e6,
        forwarded / direct * 100.0,
        if forwarded / direct >= 0.7 { "OK" } else { "MISSED" }
    );

    let _ = ms(Duration::ZERO);
    remove_pod(&mut c, &pod).await?;
    Ok(())
}

/// Port-forward throughput of a 256 MiB HTTP GET from the pod's port 8080 (a busybox
/// httpd serving /big) against the same GET straight to the pod's IP: best of three each,
/// bytes per second, and the fewest bytes a forwarded GET delivered.
async fn forward_throughput(c: &mut Client, pod: &str) -> anyhow::Result<(f64, f64, usize)> {
    let ip = pod_ip(c, pod).await?;
    let get = b"GET /big HTTP/1.0\r\n\r\n";
    let (mut direct, mut forwarded, mut fewest) = (0f64, 0f64, usize::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let mut tcp = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await?;
        tcp.write_all(get).await?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0usize;
        loop {
            let k = tcp.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            total += k;
        }
        direct = direct.max(total as f64 / t.elapsed().as_secs_f64());
        let req = cri::PortForwardRequest { pod_sandbox_id: pod.to_owned(), port: vec![8080] };
        let url = c.port_forward(req).await?.into_inner().url;
        let t = Instant::now();
        let s = ClientSession::connect(&url, "portforward.k8s.io").await?;
        let h = |kind| [("streamType", kind), ("port", "8080"), ("requestID", "0")];
        let _error = s.open(&h("error")).await?;
        let (id, mut data) = s.open(&h("data")).await?;
        s.send(id, get.to_vec(), true).await?;
        let mut total = 0usize;
        while let Some(chunk) = data.recv().await {
            total += chunk.len();
        }
        // containerd's forward has been seen to end before the whole response arrived.
        anyhow::ensure!(total > 64 << 20, "forwarded only {total} bytes");
        fewest = fewest.min(total);
        forwarded = forwarded.max(total as f64 / t.elapsed().as_secs_f64());
    }
    Ok((direct, forwarded, fewest))
}

/// What `--vs containerd` compares: ExecSync and Exec of `true`, port-forward throughput.
struct VsFigures {
    sync: Vec<Duration>,
    exec: Vec<Duration>,
    direct: f64,
    forwarded: f64,
    /// The fewest bytes one forwarded 256 MiB GET delivered.
    fewest: usize,
}

/// The comparison figures on one runtime (the caller is in its node's network namespace).
async fn vs_figures(c: &mut Client, cgroup_parent: &str, n: usize) -> anyhow::Result<VsFigures> {
    let mut pc = pod_config("streamvs");
    pc.linux.get_or_insert_default().cgroup_parent = cgroup_parent.to_owned();
    let pod = run_pod(c, pc.clone()).await?;
    let shell = podbay_tests::ctr::run(c, &pod, &pc, podbay_tests::ctr::sleeper("sh")).await;
    let web = ctr(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count=256 2>/dev/null && exec httpd -f -p 8080 -h /www",
        ],
    );
    podbay_tests::ctr::run(c, &pod, &pc, web).await;
    let (sync, exec) = exec_vs_sync(c, &shell, n).await?;
    // The web server writes 256 MiB first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (direct, forwarded, fewest) = forward_throughput(c, &pod).await?;
    remove_pod(c, &pod).await?;
    Ok(VsFigures { sync, exec, direct, forwarded, fewest })
}

/// `n` ExecSync and `n` streamed Exec round trips of `true`, interleaved.
async fn exec_vs_sync(
    c: &mut Client,
    shell: &str,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut sync, mut streamed) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let req = cri::ExecSyncRequest {
            container_id: shell.to_owned(),
            cmd: vec!["true".into()],
            timeout: 0,
        };
        c.exec_sync(req).await?;
        sync.push(t.elapsed());
        let t = Instant::now();
        let code = exec_true(c, shell).await?;
        // containerd's v4 error stream closes without a Status on success.
        anyhow::ensure!(code.is_empty() || code.contains("Success"), "exec said {code}");
        streamed.push(t.elapsed());
    }
    Ok((sync, streamed))
}

/// One streamed exec of `true`: the call, the connection, the streams, the exit status.
async fn exec_true(c: &mut Client, id: &str) -> anyhow::Result<String> {
    let req = cri::ExecRequest {
        container_id: id.into(),
        cmd: vec!["true".into()],
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let url = c.exec(req).await?.into_inner().url;
    let s = ClientSession::connect(&url, "v4.channel.k8s.io").await?;
    let (_, mut error) = s.open(&[("streamType", "error")]).await?;
    let _out = s.open(&[("streamType", "stdout")]).await?;
    let _err = s.open(&[("streamType", "stderr")]).await?;
    let mut status = Vec::new();
    while let Some(chunk) = error.recv().await {
        status.extend(chunk);
    }
    Ok(String::from_utf8_lossy(&status).into_owned())
}
