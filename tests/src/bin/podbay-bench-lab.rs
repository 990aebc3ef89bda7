//! `scripts/bench lab`: the multi-node overlay on `podbay lab` nodes.
//!
//! - `lab up` of 10 nodes (underlay, etcd, ten daemons, every pod network ready);
//! - TCP throughput (iperf3, 5 s) and RTT (ping): node to node over the underlay, pod to
//!   pod across nodes over VXLAN, and pod to pod on one node (the bridge) for reference;
//!   the underlay and the overlay alternate (BENCH_LAB_ROUNDS rounds, default 3), so a
//!   slow spell of the machine weighs on both sides of a round's ratio, and the medians
//!   are reported;
//! - convergence: from a new lease written to etcd to its route on another node
//!   (`ip monitor route` there, read as it arrives), then the same for its deletion.

use std::io::BufRead;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use podbay_tests::bench::{ms, percentile, report};
use podbay_tests::lab::{Lab, LabPod};

const SECONDS: &str = "5";

fn main() -> anyhow::Result<()> {
    let ups: usize = env("BENCH_LAB_UPS", 3);
    let leases: usize = env("BENCH_LAB_LEASES", 50);
    let rounds: usize = env("BENCH_LAB_ROUNDS", 3).max(1);
    println!("== podbay lab: the VXLAN overlay over etcd leases");

    let mut up_times = Vec::new();
    for i in 0..ups {
        let t = Instant::now();
        let lab = Lab::up(&format!("bench-up{i}"), 10)?;
        up_times.push(t.elapsed());
        drop(lab);
    }
    up_times.sort();
    println!(
        "{:<38} n={:<4} min {:>7.0} ms  p50 {:>7.0} ms  max {:>7.0} ms  (no target)",
        "lab up, 10 nodes, every network ready",
        up_times.len(),
        ms(up_times[0]),
        ms(percentile(&up_times, 0.5)),
        ms(up_times[up_times.len() - 1])
    );

    let lab = Lab::up("bench", 2)?;
    let a = lab.run_pod("node1", "a")?;
    let b = lab.run_pod("node2", "b")?;
    let c = lab.run_pod("node1", "c")?;

    let (mut underlays, mut crosses, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let underlay = iperf(&lab, Side::Node("node2", "10.99.0.12"), Side::Node("node1", ""))?;
        let cross = iperf(&lab, Side::Pod(&b), Side::Pod(&a))?;
        underlays.push(underlay);
        crosses.push(cross);
        ratios.push(cross / underlay);
    }
    let (underlay, cross, ratio) = (median(underlays), median(crosses), median(ratios.clone()));
    let same = iperf(&lab, Side::Pod(&c), Side::Pod(&a))?;
    // The same with `network.vxlan.tx_checksum_offload = false`, the old default (daemons
    // restarted).
    for node in ["node1", "node2"] {
        let config = lab.state_dir().join(lab.name()).join(node).join("config.toml");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str("\n[network.vxlan]\ntx_checksum_offload = false\n");
        std::fs::write(&config, text)?;
        lab.lab(&["stop", node])?;
        lab.lab(&["start", node])?;
    }
    let cross_off = iperf(&lab, Side::Pod(&b), Side::Pod(&a))?;
    let each: Vec<String> = ratios.iter().map(|r| format!("{:.0}", r * 100.0)).collect();
    println!(
        "TCP throughput (iperf3, {SECONDS} s, one stream; medians of {rounds} alternating rounds):"
    );
    println!("  node to node, underlay          {:>8.2} Gbit/s", underlay / 1e9);
    println!(
        "  pod to pod across nodes, VXLAN (default, offload auto) {:>8.2} Gbit/s  {:.0} % of underlay (rounds: {} %; target >= 80 %) {}",
        cross / 1e9,
        ratio * 100.0,
        each.join(" / "),
        if ratio >= 0.8 { "OK" } else { "MISSED" }
    );
    println!(
        "  the same, tx_checksum_offload = false {:>8.2} Gbit/s  {:.0} % of underlay (reference)",
        cross_off / 1e9,
        cross_off / underlay * 100.0,
    );
    println!("  pod to pod on one node, bridge  {:>8.2} Gbit/s (reference)", same / 1e9);

    rtt(&lab, "RTT node to node, underlay", "node1", None, "10.99.0.12")?;
    rtt(&lab, "RTT pod to pod across nodes", "node1", Some(&a), &b.ip)?;
    rtt(&lab, "RTT pod to pod on one node", "node1", Some(&a), &c.ip)?;

    convergence(&lab, leases)?;
    Ok(())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

enum Side<'a> {
    /// A node's own namespace, and (for a server) its underlay address.
    Node(&'a str, &'a str),
    Pod(&'a LabPod),
}

impl Side<'_> {
    fn command(&self, lab: &Lab, argv: &[&str]) -> Command {
        let mut cmd = lab.podbay();
        cmd.args(["lab", "exec", "--name", lab.name()]);
        match self {
            Side::Node(node, _) => cmd.arg(node),
            Side::Pod(p) => cmd.args(["--pod", &p.id, &p.node]),
        };
        cmd.arg("--").args(argv);
        cmd
    }

    fn address(&self) -> &str {
        match self {
            Side::Node(_, ip) => ip,
            Side::Pod(p) => &p.ip,
        }
    }
}

/// Bits per second from `client` to `server`.
fn iperf(lab: &Lab, server: Side, client: Side) -> anyhow::Result<f64> {
    let mut srv: Child = server
        .command(lab, &["iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // iperf3 3.12 exits 0 with `-J` even when it could not connect (the JSON then holds
    // "error"), so success is a throughput in the answer; until the server listens, retry.
    let mut last = String::new();
    for _ in 0..50 {
        let o = client
            .command(lab, &["iperf3", "-c", server.address(), "-p", "5201", "-t", SECONDS, "-J"])
            .output()?;
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            let _ = srv.wait();
            return Ok(bps);
        }
        last = match json["error"].as_str() {
            Some(e) => e.to_owned(),
            None => {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            }
        };
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    anyhow::bail!("iperf3 to {} never succeeded: {last}", server.address())
}

fn rtt(lab: &Lab, name: &str, node: &str, pod: Option<&LabPod>, to: &str) -> anyhow::Result<()> {
    let side = match pod {
        Some(p) => Side::Pod(p),
        None => Side::Node(node, ""),
    };
    let out = side.command(lab, &["ping", "-c", "200", "-i", "0.005", to]).output()?;
    let mut samples: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|v| Duration::from_secs_f64(v / 1e3))
        .collect();
    anyhow::ensure!(!samples.is_empty(), "no ping replies to {to}");
    samples.sort();
    println!(
        "{name:<38} n={:<4} min {:>7.3} ms  p50 {:>7.3} ms  p99 {:>7.3} ms",
        samples.len(),
        ms(samples[0]),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
    Ok(())
}

/// Route events on node1, timestamped as they arrive.
fn monitor(lab: &Lab) -> anyhow::Result<(Child, mpsc::Receiver<(Instant, String)>)> {
    let mut child = lab
        .podbay()
        .args(["lab", "exec", "--name", lab.name(), "node1", "--", "ip", "monitor", "route"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    Ok((child, rx))
}

fn wait_line(
    rx: &mpsc::Receiver<(Instant, String)>,
    what: impl Fn(&str) -> bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = rx.recv_timeout(left)?;
        if what(&line) {
            return Ok(at);
        }
    }
}

/// Lease put → route on node1, and lease delete → route gone, `n` times each. The etcd
/// client runs on a thread inside the hub's network namespace (etcd listens on its
/// loopback), so each put is timed from the moment it leaves, not from a process start.
fn convergence(lab: &Lab, n: usize) -> anyhow::Result<()> {
    let (mut mon, rx) = monitor(lab)?;
    std::thread::sleep(Duration::from_millis(300));
    let hub = lab.hub_pid()?;
    let (add, del) = std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
            let ns = std::fs::File::open(format!("/proc/{hub}/ns/net"))?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut etcd = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
                let (mut add, mut del) = (Vec::new(), Vec::new());
                for i in 0..n {
                    let third = 100 + i;
                    let subnet = format!("10.244.{third}.0/24");
                    let key = format!("/coreos.com/network/subnets/10.244.{third}.0-24");
                    let value = format!(
                        r#"{{"PublicIP":"10.99.0.{third}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0e:00:00:00:{third:02x}:00"}}}}"#
                    );
                    let t = Instant::now();
                    etcd.put(key.clone(), value, None).await?;
                    let at = wait_line(&rx, |l| l.starts_with(&format!("{subnet} via")))?;
                    add.push(at - t);
                    let t = Instant::now();
                    etcd.delete(key, None).await?;
                    let at = wait_line(&rx, |l| l.starts_with(&format!("Deleted {subnet} via")))?;
                    del.push(at - t);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok((add, del))
            })
        })
        .join()
        .expect("etcd thread")
    })?;
    let _ = mon.kill();
    let _ = mon.wait();
    report("convergence: new lease -> route", add, 100.0);
    report("convergence: lease deleted -> no route", del, 100.0);
    Ok(())
}
