//! Multi-node: the VXLAN overlay over etcd subnet leases, on `podbay lab` nodes.
//!
//! Each test builds its own lab (an underlay bridge with etcd in one namespace, each node a
//! namespace of its own with a daemon) and `podbay lab down` removes it, also on failure.

use podbay_tests::lab::{Lab, LabPod};
use podbay_tests::require_root;

const PREFIX: &str = "/coreos.com/network";

fn ping(lab: &Lab, from: &LabPod, to: &LabPod, extra: &str) -> anyhow::Result<bool> {
    let out = lab.in_pod(from, &format!("ping -c 1 -W 2 {extra} {}", to.ip))?;
    Ok(out.status.success())
}

/// Every pod of the list pings every other.
fn all_pairs(lab: &Lab, pods: &[&LabPod]) -> anyhow::Result<()> {
    for a in pods {
        for b in pods.iter().filter(|b| b.id != a.id) {
            assert!(
                ping(lab, a, b, "")?,
                "{} ({}) cannot ping {} ({})",
                a.node,
                a.ip,
                b.node,
                b.ip
            );
        }
    }
    Ok(())
}

/// The etcd key of the node whose lease carries `ip`.
fn lease_key(lab: &Lab, public_ip: &str) -> anyhow::Result<String> {
    let out = lab.etcdctl(&format!("get --prefix {PREFIX}/subnets/"))?;
    let lines: Vec<&str> = out.lines().collect();
    for pair in lines.chunks(2) {
        if let [key, value] = pair
            && value.contains(&format!("\"PublicIP\":\"{public_ip}\""))
        {
            return Ok(key.to_string());
        }
    }
    anyhow::bail!("no lease for {public_ip} in {out}")
}

/// Parses an SVG file with tests/py/svgtext.py: its texts and elements per class.
fn svg_texts(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/svgtext.py");
    let out = std::process::Command::new("/usr/bin/python3").arg(script).arg(file).output()?;
    anyhow::ensure!(
        out.status.success(),
        "not well-formed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `podbay lab show` draws every node, pod and tunnel; its DOT is valid for Graphviz.
fn lab_picture(lab: &Lab, pods: &[LabPod]) -> anyhow::Result<()> {
    let svg = lab.state_dir().join("lab.svg");
    std::fs::write(&svg, lab.lab(&["show", "--format", "svg"])?)?;
    let parsed = svg_texts(&svg)?;
    assert_eq!(parsed["root"], "{http://www.w3.org/2000/svg}svg");
    let texts: Vec<&str> =
        parsed["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let all = texts.join("\n");
    for n in 1..=3 {
        assert!(texts.iter().any(|t| *t == format!("node{n} 10.99.0.{}", 10 + n)), "{all}");
    }
    for p in pods {
        assert!(texts.contains(&p.ip.as_str()), "pod {} missing: {all}", p.ip);
    }
    assert!(all.contains("default/p"), "{all}");
    assert!(all.contains("flannel.1 vni 1") && all.contains("lab0 10.99.0.0/24"), "{all}");
    // Three nodes: three tunnels, one per pair.
    assert_eq!(parsed["classes"]["tunnel"], 3, "{parsed}");
    assert_eq!(parsed["classes"]["pod"], 3, "{parsed}");

    let dot = lab.state_dir().join("lab.dot");
    std::fs::write(&dot, lab.lab(&["show", "--format", "dot"])?)?;
    let rendered = lab.state_dir().join("lab-dot.svg");
    let out = std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(&rendered)
        .arg(&dot)
        .output()?;
    anyhow::ensure!(out.status.success(), "graphviz: {}", String::from_utf8_lossy(&out.stderr));
    let from_dot = svg_texts(&rendered)?.to_string();
    for p in pods {
        assert!(from_dot.contains(&p.ip), "{from_dot}");
    }
    Ok(())
}

fn node_row(status: &serde_json::Value, node: &str) -> serde_json::Value {
    status["nodes"].as_array().unwrap().iter().find(|n| n["node"] == node).cloned().unwrap()
}

#[test]
fn three_nodes_talk_over_vxlan_without_nat() {
    require_root!();
    three_nodes_talk_over_vxlan_without_nat_body().unwrap();
}

fn three_nodes_talk_over_vxlan_without_nat_body() -> anyhow::Result<()> {
    let lab = Lab::up("t-vxlan", 3)?;
    let pods: Vec<LabPod> =
        (1..=3).map(|i| lab.run_pod(&format!("node{i}"), "p")).collect::<anyhow::Result<_>>()?;
    // Three different subnets, every pod reaches every pod.
    let subnets: std::collections::BTreeSet<_> =
        pods.iter().map(|p| p.ip.rsplit_once('.').unwrap().0.to_owned()).collect();
    assert_eq!(subnets.len(), 3, "{pods:?}");
    all_pairs(&lab, &pods.iter().collect::<Vec<_>>())?;
    lab_picture(&lab, &pods)?;

    // flannel's records, readable by flannel tooling.
    let config = lab.etcdctl(&format!("get --print-value-only {PREFIX}/config"))?;
    assert_eq!(
        config.trim(),
        r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#
    );
    let key = lease_key(&lab, "10.99.0.12")?;
    let value = lab.etcdctl(&format!("get --print-value-only {key}"))?;
    let lease: serde_json::Value = serde_json::from_str(value.trim())?;
    assert_eq!(lease["BackendType"], "vxlan");
    assert_eq!(lease["BackendData"]["VNI"], 1);
    let net2 = lab.net("node2")?;
    assert_eq!(lease["BackendData"]["VtepMAC"], net2["overlay"]["vtepMac"]);
    assert!(lab.etcdctl(&format!("get -w json {key}"))?.contains("\"lease\":"), "no etcd lease");

    // The device as flannel makes it; one route, ARP and FDB entry per peer.
    let dev = lab.sh("node1", "ip -d link show flannel.1; ethtool -k flannel.1")?;
    for want in ["vxlan id 1 local 10.99.0.11 dev eth0", "dstport 8472", "nolearning", "mtu 1450"] {
        assert!(dev.contains(want), "{want:?} not in {dev}");
    }
    // Tx checksum offload (and TSO) stays on by default where the kernel is past the NAT
    // checksum bug (5.7), as flannel leaves it; `net show` says what is in effect.
    let release = lab.sh("node1", "uname -r")?;
    let on = podbay_netplug::config::TxChecksum::Auto.enabled_for(release.trim());
    let want = format!("tx-checksum-ip-generic: {}", if on { "on" } else { "off" });
    assert!(dev.contains(&want), "{want:?} not in {dev}");
    assert_eq!(net2["overlay"]["txChecksumOffload"], on);
    let (n2, n3) = (&net2["overlay"], &lab.net("node3")?["overlay"]);
    let routes = lab.overlay_routes("node1")?;
    let neigh = lab.sh("node1", "ip neigh show dev flannel.1; bridge fdb show dev flannel.1")?;
    for (peer, ip) in [(n2, "10.99.0.12"), (n3, "10.99.0.13")] {
        let subnet = peer["subnet"].as_str().unwrap();
        let network = subnet.split('/').next().unwrap();
        let mac = peer["vtepMac"].as_str().unwrap();
        assert!(
            routes.contains(&format!("{subnet} via {network} proto static onlink")),
            "{routes}"
        );
        assert!(neigh.contains(&format!("{network} lladdr {mac} PERMANENT")), "{neigh}");
        assert!(neigh.contains(&format!("{mac} dst {ip} self permanent")), "{neigh}");
    }
    assert_eq!(routes.lines().count(), 2, "{routes}");
    let net1 = lab.net("node1")?;
    let peers = net1["overlay"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p["route"] == true && p["arp"] == true && p["fdb"] == true));
    assert_eq!(net1["mtu"], 1450);

    // On the wire: UDP 8472, VNI 1, the pod IPs inside.
    let cap = lab.state_dir().join("cap.txt");
    let mut tcpdump = lab
        .podbay()
        .args(["lab", "exec", "--name", lab.name(), "node2", "--"])
        .args(["tcpdump", "-lnv", "-T", "vxlan", "-i", "eth0", "-c", "2", "udp", "port", "8472"])
        .stdout(std::fs::File::create(&cap)?)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut err = tcpdump.stderr.take().unwrap();
    let mut first = [0u8; 9]; // "tcpdump: " once it listens
    std::io::Read::read_exact(&mut err, &mut first)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(ping(&lab, &pods[0], &pods[1], "")?);
    let status = tcpdump.wait()?;
    let text = std::fs::read_to_string(&cap)?;
    assert!(status.success(), "{text}");
    assert!(text.contains("10.99.0.11.") && text.contains("> 10.99.0.12.8472"), "{text}");
    assert!(text.contains("VXLAN") && text.contains("vni 1"), "{text}");
    assert!(
        text.contains(&format!("{} > {}: ICMP echo request", pods[0].ip, pods[1].ip)),
        "{text}"
    );

    // No NAT between pods: the server sees the client pod's own IP.
    let server = lab
        .podbay()
        .args(["lab", "exec", "--name", lab.name(), "node3", "--pod", &pods[2].id, "--"])
        .args(["socat", "-T", "5", "TCP-LISTEN:7000,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    lab.wait(5, "server listening", || {
        lab.in_pod(&pods[2], "ss -ltn | grep -q :7000").is_ok_and(|o| o.status.success())
    })?;
    let reply =
        lab.in_pod(&pods[0], &format!("socat -T 5 - TCP:{}:7000 </dev/null", pods[2].ip))?;
    assert_eq!(String::from_utf8_lossy(&reply.stdout).trim(), pods[0].ip);
    drop(server.wait_with_output()?);

    // MTU: 1422 bytes of ICMP payload + 28 fill the 1450-byte pod MTU on a 1500 underlay;
    // one more is refused with DF set, cleanly (an error, not a silent loss).
    assert!(ping(&lab, &pods[0], &pods[1], "-M do -s 1422")?);
    let big = lab.in_pod(&pods[0], &format!("ping -c 1 -W 2 -M do -s 1423 {}", pods[1].ip))?;
    assert!(!big.status.success());
    let said =
        String::from_utf8_lossy(&big.stdout).to_string() + &String::from_utf8_lossy(&big.stderr);
    assert!(said.contains("mtu = 1450") || said.contains("too long"), "{said}");
    Ok(())
}

#[test]
fn leases_follow_nodes_leaving_restarting_and_stale_entries() {
    require_root!();
    leases_follow_nodes_leaving_restarting_and_stale_entries_body().unwrap();
}

fn leases_follow_nodes_leaving_restarting_and_stale_entries_body() -> anyhow::Result<()> {
    let lab = Lab::up("t-leases", 3)?;
    let before = lab.status()?;
    let n3 = node_row(&before, "node3");
    let subnet3 = n3["subnet"].as_str().unwrap().to_owned();

    // Node removal: node3's daemon stops and its lease is deleted; the others forget it.
    lab.lab(&["stop", "node3"])?;
    let key = lease_key(&lab, "10.99.0.13")?;
    lab.etcdctl(&format!("del {key}"))?;
    let mac3 = n3["vtepMac"].as_str().unwrap().to_owned();
    for node in ["node1", "node2"] {
        lab.wait(5, &format!("{node} forgets node3"), || {
            let all = lab.sh(node, "ip route show dev flannel.1; ip neigh show dev flannel.1; bridge fdb show dev flannel.1");
            all.is_ok_and(|t| !t.contains(&subnet3) && !t.contains(&mac3) && !t.contains("10.99.0.13"))
        })?;
    }

    // Restart: node2 keeps its subnet and VTEP MAC, also when flannel.1 is gone (a reboot:
    // the MAC comes back from its lease). Its pod keeps its address and stays reachable.
    let p1 = lab.run_pod("node1", "a")?;
    let p2 = lab.run_pod("node2", "b")?;
    let n2 = node_row(&before, "node2");
    lab.lab(&["stop", "node2"])?;
    lab.sh("node2", "ip link del flannel.1")?;
    lab.lab(&["start", "node2"])?;
    let after = node_row(&lab.status()?, "node2");
    assert_eq!((&after["subnet"], &after["vtepMac"]), (&n2["subnet"], &n2["vtepMac"]));
    lab.wait(5, "node1 reaches node2's pod again", || ping(&lab, &p1, &p2, "").unwrap_or(false))?;

    // Stale entries planted on flannel.1 while node1's daemon is down go at its start; the
    // live peer stays.
    lab.lab(&["stop", "node1"])?;
    lab.sh(
        "node1",
        "ip neigh add 10.244.200.0 lladdr 0e:00:00:00:c8:00 dev flannel.1 nud permanent && \
         bridge fdb add 0e:00:00:00:c8:00 dev flannel.1 dst 10.99.0.200 self permanent && \
         ip route add 10.244.200.0/24 via 10.244.200.0 dev flannel.1 onlink",
    )?;
    lab.lab(&["start", "node1"])?;
    let left = lab.sh(
        "node1",
        "ip route show dev flannel.1; ip neigh show dev flannel.1; bridge fdb show dev flannel.1",
    )?;
    assert!(!left.contains("10.244.200.0") && !left.contains("0e:00:00:00:c8:00"), "{left}");
    assert!(left.contains(n2["subnet"].as_str().unwrap()), "{left}");
    assert!(ping(&lab, &p1, &p2, "")?);
    Ok(())
}

#[test]
fn nodes_racing_for_subnets_never_share_one() {
    require_root!();
    nodes_racing_for_subnets_never_share_one_body().unwrap();
}

fn nodes_racing_for_subnets_never_share_one_body() -> anyhow::Result<()> {
    // `lab up` starts every daemon at once: they all race for the lowest free subnet.
    let lab = Lab::up("t-race", 6)?;
    let status = lab.status()?;
    let subnets: std::collections::BTreeSet<String> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["subnet"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subnets.len(), 6, "{status}");
    let keys = lab.etcdctl(&format!("get --prefix --keys-only {PREFIX}/subnets/"))?;
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 6, "{keys}");
    Ok(())
}

#[test]
fn pods_keep_talking_through_an_etcd_outage() {
    require_root!();
    pods_keep_talking_through_an_etcd_outage_body().unwrap();
}

fn pods_keep_talking_through_an_etcd_outage_body() -> anyhow::Result<()> {
    let lab = Lab::up("t-etcd", 2)?;
    let p1 = lab.run_pod("node1", "a")?;
    let p2 = lab.run_pod("node2", "b")?;
    lab.lab(&["stop", "etcd"])?;
    assert!(ping(&lab, &p1, &p2, "")?, "pods lost each other with etcd down");

    // A daemon starting while etcd is down: it serves, NetworkReady is false and names the
    // endpoints; the routes it had stay, so its pods keep talking.
    lab.lab(&["stop", "node2"])?;
    lab.lab(&["start", "--no-wait", "node2"])?;
    let net = lab.net("node2")?;
    assert_eq!(net["ready"], false, "{net}");
    assert!(net["reason"].as_str().unwrap().contains("http://10.99.0.1:2379"), "{net}");
    assert!(ping(&lab, &p2, &p1, "")?);
    // The running node notices too.
    lab.wait(15, "node1 reports the store error", || {
        lab.net("node1").is_ok_and(|n| n["overlay"]["storeError"].is_string())
    })?;

    // etcd returns: node2 becomes ready (backoff), and a node joining now is reached.
    lab.lab(&["start", "etcd"])?;
    lab.wait(40, "node2 ready after etcd returned", || {
        lab.net("node2").is_ok_and(|n| n["ready"] == true)
    })?;
    lab.lab(&["add"])?;
    let p3 = lab.run_pod("node3", "c")?;
    lab.wait(5, "node1 reaches the new node's pod", || ping(&lab, &p1, &p3, "").unwrap_or(false))?;
    all_pairs(&lab, &[&p1, &p2, &p3])?;
    lab.wait(15, "node1 follows the store again", || {
        lab.net("node1").is_ok_and(|n| n["overlay"]["storeError"].is_null())
    })?;
    Ok(())
}

#[test]
fn lab_down_leaves_nothing_and_bad_input_is_named() {
    require_root!();
    lab_down_leaves_nothing_and_bad_input_is_named_body().unwrap();
}

fn lab_down_leaves_nothing_and_bad_input_is_named_body() -> anyhow::Result<()> {
    let lab = Lab::up("t-down", 2)?;
    lab.run_pod("node1", "a")?;
    lab.run_pod("node2", "b")?;
    let dir = lab.state_dir();
    let pods: Vec<String> = ["node1", "node2"]
        .iter()
        .flat_map(|n| std::fs::read_dir(dir.join("t-down").join(n).join("run/pods")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pods.len(), 2);

    // Bad input names the thing.
    let again = lab.lab_output(&["up", "--nodes", "1"])?;
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));
    let unknown = lab.lab_output(&["exec", "node9", "--", "true"])?;
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no node \"node9\" (nodes: node1, node2")
    );
    let bad = lab.podbay().args(["lab", "up", "--name", "x/y"]).output()?;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lab name \"x/y\""));

    // A crash of the lab processes first (the etcd and the daemons die): down still works.
    lab.sh("hub", "pkill -KILL -x etcd")?;
    lab.lab(&["down"])?;
    assert!(!dir.join("t-down").exists(), "lab dir left");
    let procs = std::process::Command::new("ps").args(["-eo", "pid,args"]).output()?;
    let procs = String::from_utf8_lossy(&procs.stdout);
    let ours: Vec<_> = procs.lines().filter(|l| l.contains(&*dir.to_string_lossy())).collect();
    assert!(ours.is_empty(), "{ours:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mounts.contains(&*dir.to_string_lossy()), "{mounts}");
    for pod in pods {
        let left: Vec<_> = podbay_tests::cgroup_dirs(&format!("podbay/{pod}"))
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    let status = lab.lab_output(&["status"])?;
    assert!(String::from_utf8_lossy(&status.stderr).contains("no lab \"t-down\" is up"));
    Ok(())
}
