//! `scripts/chaos`: the fault campaign as a tool. In a node namespace of its own, workers
//! churn pods with containers (some with hostPorts) through the CRI while the daemon is
//! SIGKILLed at random moments and started again. After each restart every pod podbay
//! acknowledged must be listed; at the end a ledger sets what podbay lists against what
//! the kernel holds (processes, supervisors, veths, leases, nft elements, mounts, cgroups,
//! dirs), then `podbay rmp --all` runs and the ledger must come out empty.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{ms, percentile};
use crate::{BUSYBOX, Client, Node, cri, pod_config, with_port};

/// What a campaign is asked to do.
pub struct Plan {
    pub kills: u32,
    /// The whole churn time; kills are spread over it at random.
    pub seconds: f64,
    /// Pods made before the churn starts (1 in 4 with a container), so that each restart
    /// recovers a node with this many pods.
    pub base_pods: u32,
    pub workers: u32,
    pub seed: u64,
}

/// A pod podbay acknowledged and the test has not removed.
#[derive(Debug, Clone)]
struct Acked {
    worker: u32,
    /// A remove was sent and not answered: it may or may not be gone.
    removing: bool,
    containers: Vec<String>,
}

#[derive(Default)]
struct Shared {
    pods: Mutex<BTreeMap<String, Acked>>,
    /// Errors a worker saw while the daemon was not being killed.
    unexpected: Mutex<Vec<String>>,
    acked_pods: AtomicU32,
    acked_containers: AtomicU32,
}

/// A small xorshift generator: the campaign's choices are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A seed of its own for a worker from the campaign's next value (splitmix64's finalizer):
/// xorshift's successive values as seeds would give the workers shifted copies of one
/// sequence of choices.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The outcome of a campaign.
pub struct Outcome {
    pub kills: u32,
    pub pods_acked: u32,
    pub containers_acked: u32,
    pub lost: Vec<String>,
    pub unexpected: Vec<String>,
    pub serving_again: Vec<Duration>,
    pub ledger: Ledger,
    pub ledger_after_rmp: Ledger,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.ledger.clean()
            && self.ledger_after_rmp.clean()
    }

    pub fn print(&self) {
        let mut serving = self.serving_again.clone();
        serving.sort();
        println!("kills survived          {}", self.kills);
        println!("pods acknowledged       {}", self.pods_acked);
        println!("containers acknowledged {}", self.containers_acked);
        println!("pods lost               {}  {:?}", self.lost.len(), self.lost);
        println!("unexpected errors       {}", self.unexpected.len());
        for e in self.unexpected.iter().take(10) {
            println!("  {e}");
        }
        if !serving.is_empty() {
            println!(
                "serving again after a kill: p50 {:.1} ms, max {:.1} ms (n={})",
                ms(percentile(&serving, 0.5)),
                ms(*serving.last().expect("not empty")),
                serving.len()
            );
        }
        println!("\nledger at the end (podbay lists / the kernel holds / unexplained / missing):");
        self.ledger.print();
        println!("\nledger after `podbay rmp --all`:");
        self.ledger_after_rmp.print();
        println!("\n{}", if self.ok() { "PASS: nothing leaked, nothing lost" } else { "FAIL" });
    }
}

/// One kind of thing podbay keeps: how many podbay's records account for, how many the
/// kernel (or the disk) holds, those the records do not explain, and those missing.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub listed: usize,
    pub held: usize,
    pub unexplained: Vec<String>,
    pub missing: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub rows: BTreeMap<&'static str, Row>,
}

impl Ledger {
    pub fn clean(&self) -> bool {
        self.rows.values().all(|r| r.unexplained.is_empty() && r.missing.is_empty())
    }

    fn print(&self) {
        for (kind, r) in &self.rows {
            println!(
                "  {kind:<16} {:>5} {:>5} {:>5} {:>5}  {}",
                r.listed,
                r.held,
                r.unexplained.len(),
                r.missing.len(),
                r.unexplained
                    .iter()
                    .chain(&r.missing)
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
}

/// Runs a campaign on a fresh node.
pub async fn run(plan: &Plan) -> anyhow::Result<Outcome> {
    let mut node = Node::empty()?;
    // Room for the base pods and the churn: a /20 of the cluster CIDR (4093 pod IPs).
    node.set_config("[network]\nnode_subnet = \"10.244.0.0/20\"\n");
    node.start_daemon()?;
    node.import_busybox()?;
    let shared = Arc::new(Shared::default());
    let mut rng = Rng(plan.seed | 1);
    let ports = Arc::new(AtomicU32::new(20_000));
    let mut known: BTreeSet<String> = BTreeSet::new();

    let mut c = node.client().await?;
    for i in 0..plan.base_pods {
        let config = pod_config(&format!("base{i}"));
        let id = crate::run_pod(&mut c, config.clone()).await?;
        let mut containers = Vec::new();
        if i % 4 == 0 {
            containers.push(create_start(&mut c, &id, &config, "app").await?);
        }
        let acked = Acked { worker: u32::MAX, removing: false, containers };
        shared.pods.lock().unwrap().insert(id, acked);
    }

    let mut serving_again = Vec::new();
    let mut lost = Vec::new();
    let mean_gap = plan.seconds / f64::from(plan.kills.max(1));
    for kill in 0..plan.kills {
        let killing = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..plan.workers {
            let (c, shared, killing, ports) =
                (node.client().await?, shared.clone(), killing.clone(), ports.clone());
            let seed = mix(rng.next());
            let worker = Worker { id: w, round: kill };
            workers.push(tokio::spawn(churn(worker, c, shared, killing, ports, seed)));
        }
        // Uniform in [0, 2 × the mean gap): a kill lands anywhere in an RPC.
        let gap = Duration::from_secs_f64(mean_gap * 2.0 * (rng.below(1_000_000) as f64 / 1e6));
        tokio::time::sleep(gap).await;
        killing.store(true, Ordering::SeqCst);
        node.kill_daemon()?;
        for w in workers {
            w.await?;
        }

        let t = Instant::now();
        node.start_daemon().with_context(|| format!("restart after kill {}", kill + 1))?;
        let mut c = node.client().await?;
        let listed = crate::list_pods(&mut c).await?;
        serving_again.push(t.elapsed());
        lost.extend(reconcile(&shared, &listed, &mut c, plan.workers).await?);
        known.extend(listed.iter().map(|p| p.id.clone()));
    }

    let mut c = node.client().await?;
    known.extend(crate::list_pods(&mut c).await?.into_iter().map(|p| p.id));
    known.extend(node.pod_dirs());
    let ledger = ledger(&node, &mut c, &known).await?;
    let out = node.cli(&["rmp", "--all"])?;
    if !out.status.success() {
        shared
            .unexpected
            .lock()
            .unwrap()
            .push(format!("rmp --all: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let ledger_after_rmp = ledger_settled(&node, &mut c, &known).await?;
    let unexpected = std::mem::take(&mut *shared.unexpected.lock().unwrap());
    Ok(Outcome {
        kills: plan.kills,
        pods_acked: shared.acked_pods.load(Ordering::SeqCst) + plan.base_pods,
        containers_acked: shared.acked_containers.load(Ordering::SeqCst),
        lost,
        unexpected,
        serving_again,
        ledger,
        ledger_after_rmp,
    })
}

/// After a restart: every acknowledged pod must be listed (lost otherwise); pods the
/// daemon made but never acknowledged (the kill came first) are adopted by a worker, and
/// a pod whose remove was in flight is gone or adopted again.
async fn reconcile(
    shared: &Shared,
    listed: &[cri::PodSandbox],
    c: &mut Client,
    workers: u32,
) -> anyhow::Result<Vec<String>> {
    let listed_ids: BTreeSet<&str> = listed.iter().map(|p| p.id.as_str()).collect();
    let containers: Vec<cri::Container> =
        c.list_containers(cri::ListContainersRequest::default()).await?.into_inner().containers;
    let mut by_pod: HashMap<&str, Vec<String>> = HashMap::new();
    for ctr in &containers {
        by_pod.entry(ctr.pod_sandbox_id.as_str()).or_default().push(ctr.id.clone());
    }
    let mut pods = shared.pods.lock().unwrap();
    let mut lost = Vec::new();
    pods.retain(|id, acked| {
        if listed_ids.contains(id.as_str()) {
            let present = by_pod.get(id.as_str()).cloned().unwrap_or_default();
            // A remove the kill interrupted may have taken some containers already.
            for ctr in acked.containers.iter().filter(|_| !acked.removing) {
                if !present.contains(ctr) {
                    lost.push(format!("container {ctr} of pod {id}"));
                }
            }
            acked.containers = present;
            acked.removing = false;
            return true;
        }
        if !acked.removing {
            lost.push(format!("pod {id}"));
        }
        false
    });
    for (i, p) in listed.iter().enumerate() {
        pods.entry(p.id.clone()).or_insert_with(|| Acked {
            worker: i as u32 % workers.max(1),
            removing: false,
            containers: by_pod.get(p.id.as_str()).cloned().unwrap_or_default(),
        });
    }
    Ok(lost)
}

/// A churning client: its number, and the campaign's round (between two kills) it runs in.
#[derive(Clone, Copy)]
struct Worker {
    id: u32,
    round: u32,
}

/// One worker's churn until the daemon is killed: new pods with a container (1 in 4 with
/// a hostPort), stops and removes of its own pods.
async fn churn(
    worker: Worker,
    mut c: Client,
    shared: Arc<Shared>,
    killing: Arc<AtomicBool>,
    ports: Arc<AtomicU32>,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let mut n = 0u32;
    loop {
        n += 1;
        let mine: Vec<String> = shared
            .pods
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| a.worker == worker.id && !a.removing)
            .map(|(id, _)| id.clone())
            .collect();
        let roll = rng.below(10);
        let result = if roll < 5 || mine.len() < 3 {
            new_pod(worker, n, &mut c, &shared, &ports, &mut rng).await
        } else {
            let id = &mine[rng.below(mine.len() as u64) as usize];
            if roll < 8 { remove(&mut c, &shared, id).await } else { stop(&mut c, id).await }
        };
        if let Err(e) = result {
            if !killing.load(Ordering::SeqCst) {
                shared.unexpected.lock().unwrap().push(format!("worker {}: {e:#}", worker.id));
                // Let the campaign go on: the next kill ends this worker.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            return;
        }
        if killing.load(Ordering::SeqCst) {
            return;
        }
    }
}

async fn new_pod(
    worker: Worker,
    n: u32,
    c: &mut Client,
    shared: &Shared,
    ports: &AtomicU32,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    // The round in the name: a worker's draws may repeat one of an earlier round's (they
    // did while the seeds were successive values of one xorshift sequence), and a name
    // that came again met that round's pod (AlreadyExists, reported as unexpected).
    let name = format!("w{}-r{}-{n}-{}", worker.id, worker.round, rng.below(1 << 30));
    let mut config = pod_config(&name);
    if rng.below(4) == 0 {
        let port = ports.fetch_add(1, Ordering::SeqCst);
        config = with_port(config, cri::Protocol::Tcp, 80, port as i32);
    }
    let id = crate::run_pod(c, config.clone()).await?;
    shared.acked_pods.fetch_add(1, Ordering::SeqCst);
    let acked = Acked { worker: worker.id, removing: false, containers: Vec::new() };
    shared.pods.lock().unwrap().insert(id.clone(), acked);
    let ctr = create_start(c, &id, &config, "app").await?;
    shared.acked_containers.fetch_add(1, Ordering::SeqCst);
    if let Some(a) = shared.pods.lock().unwrap().get_mut(&id) {
        a.containers.push(ctr);
    }
    Ok(())
}

async fn remove(c: &mut Client, shared: &Shared, id: &str) -> anyhow::Result<()> {
    if let Some(a) = shared.pods.lock().unwrap().get_mut(id) {
        a.removing = true;
    }
    crate::remove_pod(c, id).await?;
    shared.pods.lock().unwrap().remove(id);
    Ok(())
}

async fn stop(c: &mut Client, id: &str) -> anyhow::Result<()> {
    Ok(crate::stop_pod(c, id).await?)
}

async fn create_start(
    c: &mut Client,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    name: &str,
) -> anyhow::Result<String> {
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3601".into()],
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    let id = c.create_container(req).await?.into_inner().container_id;
    c.start_container(cri::StartContainerRequest { container_id: id.clone() }).await?;
    Ok(id)
}

/// The ledger once the kernel has finished tearing down (veths go in the background):
/// retried for a few seconds until clean.
async fn ledger_settled(
    node: &Node,
    c: &mut Client,
    known: &BTreeSet<String>,
) -> anyhow::Result<Ledger> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = ledger(node, c, known).await?;
        if l.clean() || Instant::now() > deadline {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets what podbay lists against what the node holds. `known`: every pod id seen in the
/// campaign (cgroups are the host's, so only these pods' cgroups are looked at).
pub async fn ledger(
    node: &Node,
    c: &mut Client,
    known: &BTreeSet<String>,
) -> anyhow::Result<Ledger> {
    let pods = crate::list_pods(c).await?;
    let containers =
        c.list_containers(cri::ListContainersRequest::default()).await?.into_inner().containers;
    let status = c.status(cri::StatusRequest { verbose: true }).await?.into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").context("status info")?)?;
    let network = &info["network"];

    let ready: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
        .map(|p| p.id.clone())
        .collect();
    let all_pods: BTreeSet<String> = pods.iter().map(|p| p.id.clone()).collect();
    let all_containers: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
    // Running containers, and created ones (their init waits in the cgroup for the start).
    let running: BTreeSet<String> = containers
        .iter()
        .filter(|c| c.state != cri::ContainerState::ContainerExited as i32)
        .map(|c| c.id.clone())
        .collect();

    let mut rows = BTreeMap::new();
    let procs = node_processes(node)?;
    let supervisors = procs.iter().filter(|p| p.comm == "podbay-pod").count();
    rows.insert(
        "supervisors",
        Row {
            listed: ready.len(),
            held: supervisors,
            unexplained: (ready.len()..supervisors).map(|i| format!("supervisor#{i}")).collect(),
            missing: (supervisors..ready.len()).map(|i| format!("supervisor#{i}")).collect(),
        },
    );
    // Container processes, by the container cgroup they are in.
    let in_containers: BTreeMap<String, usize> =
        procs.iter().filter_map(|p| p.container.clone()).fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c).or_insert(0) += 1;
            m
        });
    rows.insert(
        "processes",
        Row {
            listed: running.len(),
            held: in_containers.values().sum(),
            unexplained: in_containers
                .keys()
                .filter(|c| !running.contains(*c))
                .map(|c| format!("in {c}"))
                .collect(),
            missing: running.iter().filter(|c| !in_containers.contains_key(*c)).cloned().collect(),
        },
    );

    let report_pods = network["pods"].as_array().cloned().unwrap_or_default();
    let report_veths: BTreeSet<String> =
        report_pods.iter().filter_map(|p| p["veth"].as_str().map(String::from)).collect();
    rows.insert("veths", diff(&report_veths, &node.veths()?.into_iter().collect()));
    let leased: BTreeSet<String> = network["leases"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    rows.insert("leases", diff(&ready, &leased));
    let port_maps: usize =
        report_pods.iter().map(|p| p["hostPorts"].as_array().map_or(0, Vec::len)).sum();
    let elements = node.nft_elements()?.len();
    rows.insert(
        "nft elements",
        Row {
            listed: port_maps,
            held: elements,
            unexplained: (port_maps..elements).map(|i| format!("element#{i}")).collect(),
            missing: (elements..port_maps).map(|i| format!("element#{i}")).collect(),
        },
    );

    let run_pods = node.run_dir().join("pods");
    let containers_dir = node.root().join("containers");
    let mounts = node.mounts()?;
    let explained = |m: &str| {
        let p = Path::new(m);
        ready.iter().any(|id| p.starts_with(run_pods.join(id)))
            || all_containers.iter().any(|id| p == containers_dir.join(id).join("rootfs"))
    };
    let mut mount_row = Row {
        listed: ready.len() + all_containers.len(),
        held: mounts.len(),
        unexplained: mounts.iter().filter(|m| !explained(m)).cloned().collect(),
        missing: Vec::new(),
    };
    for id in &ready {
        let pin = run_pods.join(id).join("ns/net");
        if !mounts.iter().any(|m| Path::new(m) == pin) {
            mount_row.missing.push(pin.display().to_string());
        }
    }
    // An exited container may be half-way through a remove the kill interrupted (its
    // rootfs already gone): the next remove finishes it.
    for id in &running {
        let rootfs = containers_dir.join(id).join("rootfs");
        if !mounts.iter().any(|m| Path::new(m) == rootfs) {
            mount_row.missing.push(rootfs.display().to_string());
        }
    }
    rows.insert("mounts", mount_row);

    let (pod_cgroups, ctr_cgroups) = cgroups(known);
    let mut cg = diff(&BTreeSet::new(), &BTreeSet::new());
    cg.listed = all_containers.len();
    cg.held = ctr_cgroups.len();
    cg.unexplained = pod_cgroups
        .iter()
        .filter(|p| !all_pods.contains(*p))
        .map(|p| format!("podbay/{p}"))
        .chain(ctr_cgroups.iter().filter(|c| !all_containers.contains(*c)).cloned())
        .collect();
    cg.missing = running.iter().filter(|c| !ctr_cgroups.contains(*c)).cloned().collect();
    rows.insert("cgroups", cg);

    let pod_dirs: BTreeSet<String> = node.pod_dirs().into_iter().collect();
    let mut dirs = diff(&all_pods, &pod_dirs);
    // A stopped pod keeps no dir of its run state: only ready pods must have one.
    dirs.missing.retain(|id| ready.contains(id));
    rows.insert("pod dirs", dirs);
    let ctr_dirs: BTreeSet<String> = std::fs::read_dir(&containers_dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let mut ctr_dir_row = diff(&all_containers, &ctr_dirs);
    // As with mounts: an exited container may be half-way through its remove.
    ctr_dir_row.missing.retain(|id| running.contains(id));
    rows.insert("container dirs", ctr_dir_row);
    Ok(Ledger { rows })
}

/// Listed against held: the held ones nothing lists, the listed ones not held.
fn diff(listed: &BTreeSet<String>, held: &BTreeSet<String>) -> Row {
    Row {
        listed: listed.len(),
        held: held.len(),
        unexplained: held.difference(listed).cloned().collect(),
        missing: listed.difference(held).cloned().collect(),
    }
}

struct NodeProcess {
    comm: String,
    /// The container whose cgroup it is in (`…/podbay/<pod>/<container>`).
    container: Option<String>,
}

/// The node's processes with their command name and container cgroup.
fn node_processes(node: &Node) -> anyhow::Result<Vec<NodeProcess>> {
    let out = node.sh("for p in /proc/[0-9]*; do \
           c=$(grep -E '^[0-9]+:(pids|):' $p/cgroup 2>/dev/null | head -1); \
           echo \"$(cat $p/comm 2>/dev/null) ${c##*:}\"; done")?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (comm, cgroup) = l.rsplit_once(' ')?;
            let parts: Vec<&str> = cgroup.trim_matches('/').split('/').collect();
            let container = match parts.as_slice() {
                ["podbay", _pod, ctr] => Some((*ctr).to_owned()),
                _ => None,
            };
            Some(NodeProcess { comm: comm.to_owned(), container })
        })
        .collect())
}

/// The pod cgroups of the known pods and the container cgroups below them (podbay's
/// default parent, in the pids hierarchy on cgroup v1 or the unified one).
fn cgroups(known: &BTreeSet<String>) -> (BTreeSet<String>, BTreeSet<String>) {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    let base =
        if v1.is_dir() { v1.join("podbay") } else { Path::new("/sys/fs/cgroup/podbay").into() };
    let (mut pods, mut ctrs) = (BTreeSet::new(), BTreeSet::new());
    for pod in known {
        let dir = base.join(pod);
        if !dir.is_dir() {
            continue;
        }
        pods.insert(pod.clone());
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                ctrs.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    (pods, ctrs)
}

/// Parses `[KILLS] [SECONDS]` and the environment (`CHAOS_PODS`, `CHAOS_WORKERS`,
/// `CHAOS_SEED`).
pub fn plan_from_args(args: &[String]) -> anyhow::Result<Plan> {
    let num = |i: usize, default: f64| -> anyhow::Result<f64> {
        match args.get(i) {
            Some(a) => a.parse().with_context(|| format!("{a:?} is not a number")),
            None => Ok(default),
        }
    };
    let env = |k: &str, default: u64| -> anyhow::Result<u64> {
        match std::env::var(k) {
            Ok(v) => v.parse().with_context(|| format!("{k}={v:?} is not a number")),
            Err(_) => Ok(default),
        }
    };
    let kills = num(0, 100.0)? as u32;
    let seconds = num(1, f64::from(kills) * 1.5)?;
    if kills == 0 || seconds <= 0.0 {
        bail!("usage: scripts/chaos [KILLS (> 0)] [SECONDS (> 0)]");
    }
    let seed = env("CHAOS_SEED", 0)?;
    let seed = if seed != 0 {
        seed
    } else {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64
    };
    Ok(Plan {
        kills,
        seconds,
        base_pods: env("CHAOS_PODS", 200)? as u32,
        workers: env("CHAOS_WORKERS", 4)? as u32,
        seed,
    })
}
