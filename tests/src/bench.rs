//! What the bench binaries share: percentiles, the report line, memory of node processes.

use std::time::Duration;

use crate::Node;

/// The bench's node with the busybox image: `BENCH_CGROUP=v2` makes it a cgroup v2 node
/// (its `/sys/fs/cgroup` the host's unified hierarchy), anything else leaves the host's.
pub fn node() -> anyhow::Result<Node> {
    if std::env::var("BENCH_CGROUP").as_deref() != Ok("v2") {
        return Node::with_busybox();
    }
    let mut node = Node::empty()?;
    node.sh("umount -R /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup")?;
    node.start_daemon()?;
    node.import_busybox()?;
    Ok(node)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn report(name: &str, mut samples: Vec<Duration>, target_p50_ms: f64) {
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

/// Waits until the machine is quiet: two 100 ms windows in a row with the CPUs under
/// 10 % busy (`/proc/stat`), at most `limit`; returns how long it waited. Pods torn down
/// leave the kernel work for a while after the calls have answered (their network
/// namespaces' cleanup, their memory cgroups' offline), which the next figures would
/// otherwise pay.
pub async fn settle(limit: Duration) -> Duration {
    fn busy_idle() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.split_whitespace().skip(1);
        let ticks: Vec<u64> = cpu.take(8).filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        let idle = ticks.get(3)? + ticks.get(4)?;
        Some((ticks.iter().sum::<u64>() - idle, idle))
    }
    let start = std::time::Instant::now();
    let mut quiet = 0;
    let mut last = busy_idle();
    while quiet < 2 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = busy_idle();
        quiet = match (last, now) {
            (Some((b0, i0)), Some((b1, i1))) if (b1 - b0) * 10 < (b1 - b0) + (i1 - i0) => quiet + 1,
            _ => 0,
        };
        last = now;
    }
    start.elapsed()
}

/// Pss or Rss (kB) of a node process, read from the host through the node's /proc.
pub fn smaps_kb(node: &Node, ns_pid: u64, field: &str) -> u64 {
    let path = format!("/proc/{}/root/proc/{ns_pid}/smaps_rollup", node.init_pid());
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn daemon_ns_pid(node: &Node) -> u64 {
    let host = node.daemon_pid().expect("daemon running");
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Where a call's time goes, printed (see [`step_medians`]).
pub fn step_breakdown(node: &Node, marker: &str, call: &str) {
    println!("-- {call} step medians (ms, all calls): {}", step_medians(node, marker));
}

/// The median of each step over every call of the daemon's run, from its debug log lines
/// `<marker> … steps=a=12us b=34us`: "a 0.01, b 0.03" (ms).
pub fn step_medians(node: &Node, marker: &str) -> String {
    step_medians_in(&node.log(), marker)
}

/// [`step_medians`] over a part of the daemon's log (e.g. what it wrote since an offset).
pub fn step_medians_in(log: &str, marker: &str) -> String {
    let mut steps: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut order = Vec::new();
    for line in log.lines().filter(|l| l.contains(marker)) {
        let Some(rest) = line.split("steps=").nth(1) else { continue };
        for part in rest.split_whitespace() {
            let Some((name, us)) = part.split_once('=') else { continue };
            let Some(us) = us.strip_suffix("us").and_then(|v| v.parse().ok()) else { continue };
            if !order.contains(&name.to_owned()) {
                order.push(name.to_owned());
            }
            steps.entry(name.to_owned()).or_default().push(us);
        }
    }
    let parts: Vec<String> = order
        .iter()
        .map(|name| {
            let v = steps.get_mut(name).expect("collected");
            v.sort();
            format!("{name} {:.2}", v[v.len() / 2] as f64 / 1e3)
        })
        .collect();
    parts.join(", ")
}
