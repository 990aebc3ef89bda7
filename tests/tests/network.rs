//! The pod network on one node, end to end: each test builds its own node (and, where it
//! needs one, an "outside host" namespace behind the node), runs pods over CRI, and observes
//! with ping, socat, ip and nft from inside the namespaces.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_cri::v1 as cri;
use podbay_tests::{
    NODE_UPLINK_IP, Node, OUTSIDE_IP, list_pods, pod_config, pod_info, pod_ip, remove_pod,
    require_root, run_pod, stop_pod, wait_until, with_network_mode, with_port,
};
use tonic::Code;

/// Retries a client command (a server may still be starting) and returns its trimmed
/// output once it succeeds with some output.
fn ask(mut attempt: impl FnMut() -> anyhow::Result<std::process::Output>) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let out = attempt().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !text.is_empty() {
            return text;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no answer: {last}");
}

/// A TCP (or UDP) server answering each client with the client's address as it sees it.
fn peer_echo(proto: &str, port: u16) -> String {
    let listen = match proto {
        "udp" => format!("UDP-RECVFROM:{port},fork"),
        _ => format!("TCP-LISTEN:{port},reuseaddr,fork"),
    };
    format!("timeout 60 socat {listen} 'SYSTEM:echo $SOCAT_PEERADDR' >/dev/null 2>&1 &")
}

fn tcp_client(addr: &str, port: u16) -> String {
    format!("socat -T2 - TCP:{addr}:{port} </dev/null")
}

fn udp_client(addr: &str, port: u16) -> String {
    format!("echo hi | socat -T2 - UDP:{addr}:{port}")
}

fn stop_servers(node: &Node) {
    let _ = node.sh("pkill -9 -x socat; pkill -9 -x timeout; true");
}

async fn remove_all(c: &mut podbay_tests::Client) {
    for p in list_pods(c).await.unwrap() {
        remove_pod(c, &p.id).await.unwrap();
    }
}

#[tokio::test]
async fn two_pods_ping_each_other_over_cni0() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, pod_config("a")).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    let (ip_a, ip_b) = (pod_ip(&mut c, &a).await.unwrap(), pod_ip(&mut c, &b).await.unwrap());
    assert_eq!((ip_a.as_str(), ip_b.as_str()), ("10.244.0.2", "10.244.0.3"));

    let ping = node.in_pod(&a, &format!("ping -c1 -W2 {ip_b}")).unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    node.sh(&format!("ping -c1 -W2 {ip_a} && ping -c1 -W2 {ip_b}")).unwrap();

    // eth0@ifN inside the pod: N is the index of the pod's veth, which sits on cni0.
    let eth0 = String::from_utf8(node.in_pod(&a, "ip -o link show eth0").unwrap().stdout).unwrap();
    let peer = eth0.split("eth0@if").nth(1).and_then(|r| r.split(':').next()).unwrap().to_owned();
    assert!(eth0.contains("mtu 1500"), "{eth0}");
    let ports = node.sh("ip -o link show master cni0").unwrap();
    let veth_a = format!("{peer}: veth{}@", &a[..8]);
    assert!(ports.contains(&veth_a), "{veth_a} not in {ports}");
    assert!(node.sh("ip -d link show cni0").unwrap().contains("bridge"));
    let addr = node.sh("ip -o -4 addr show cni0").unwrap();
    assert!(addr.contains("10.244.0.1/24"), "{addr}");
    // hairpin is on for the pod's bridge port.
    let detail = node.sh(&format!("ip -d link show veth{}", &a[..8])).unwrap();
    assert!(detail.contains("hairpin on"), "{detail}");
    // No IPv6 on either end of the pair: the pod's eth0 has no link-local address and sent
    // no IPv6 multicast (which the bridge would flood to every pod), the node-side port has
    // IPv6 off; the pod's lo keeps ::1.
    let v6 = String::from_utf8(node.in_pod(&a, "ip -6 -o addr show").unwrap().stdout).unwrap();
    assert!(v6.contains("::1/128") && !v6.contains("eth0"), "{v6}");
    let sent = node.in_pod(&a, "grep -E '^Ip6Out(Requests|McastPkts) ' /proc/net/snmp6").unwrap();
    let sent = String::from_utf8(sent.stdout).unwrap();
    assert!(
        sent.lines().count() == 2 && sent.lines().all(|l| l.split_whitespace().last() == Some("0")),
        "{sent}"
    );
    let off = format!("cat /proc/sys/net/ipv6/conf/veth{}/disable_ipv6", &a[..8]);
    assert_eq!(node.sh(&off).unwrap().trim(), "1");
    // Each pod has a network namespace of its own: the spawner makes the next pod's ahead
    // and hands each out once; what it holds now is none of the pods'.
    let mut pids = Vec::new();
    for id in [&a, &b] {
        pids.push(pod_info(&mut c, id).await.unwrap()["pid"].as_u64().unwrap());
    }
    let ns = node
        .sh(&format!("readlink /proc/{}/ns/net /proc/{}/ns/net /proc/1/ns/net", pids[0], pids[1]));
    let ns: Vec<String> = ns.unwrap().lines().map(str::to_owned).collect();
    assert!(ns.len() == 3 && ns[0] != ns[1] && ns[0] != ns[2] && ns[1] != ns[2], "{ns:?}");
    let spawner = node.sh(&format!("cut -d' ' -f4 /proc/{}/stat", pids[0])).unwrap();
    let held = node.sh(&format!("readlink /proc/{}/fd/*", spawner.trim())).unwrap();
    assert!(held.contains("net:["), "the next pod's namespace, made ahead: {held}");
    assert!(!held.contains(&ns[0]) && !held.contains(&ns[1]), "{held} {ns:?}");

    // Stop tears the network down: the IP goes from the status and the veth from cni0.
    stop_pod(&mut c, &a).await.unwrap();
    assert_eq!(pod_ip(&mut c, &a).await.unwrap(), "");
    let gone = format!("veth{}", &a[..8]);
    wait_until(Duration::from_secs(5), || node.veths().is_ok_and(|v| !v.contains(&gone))).unwrap();
    stop_pod(&mut c, &a).await.unwrap();
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn masquerade_to_outside_but_never_between_pods() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.add_outside_host().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, pod_config("a")).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    let (ip_a, ip_b) = (pod_ip(&mut c, &a).await.unwrap(), pod_ip(&mut c, &b).await.unwrap());

    node.sh(&format!("ip netns exec outside {}", peer_echo("tcp", 9000))).unwrap();
    let seen = ask(|| node.in_pod(&a, &tcp_client(OUTSIDE_IP, 9000)));
    assert_eq!(seen, NODE_UPLINK_IP, "a pod's connection leaves from the node's address");

    assert!(node.in_pod(&b, &peer_echo("tcp", 9001)).unwrap().status.success());
    let seen = ask(|| node.in_pod(&a, &tcp_client(&ip_b, 9001)));
    assert_eq!(seen, ip_a, "pod-to-pod traffic keeps the pod's own address");

    stop_servers(&node);
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn host_ports_from_outside_the_node_localhost_and_hairpin() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.add_outside_host().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let web = with_port(pod_config("web"), cri::Protocol::Tcp, 80, 8080);
    let web = with_port(web, cri::Protocol::Udp, 53, 5353);
    let web = run_pod(&mut c, web).await.unwrap();
    let ip = pod_ip(&mut c, &web).await.unwrap();
    assert_eq!(node.nft_elements().unwrap().len(), 2, "one map element per mapping");
    assert!(node.in_pod(&web, &peer_echo("tcp", 80)).unwrap().status.success());
    assert!(node.in_pod(&web, &peer_echo("udp", 53)).unwrap().status.success());

    // From another host: DNAT, and the client's address is kept.
    let outside = |cmd: String| {
        node.command("ip")
            .args(["netns", "exec", "outside", "sh", "-c"])
            .arg(cmd)
            .output()
            .map_err(Into::into)
    };
    assert_eq!(ask(|| outside(tcp_client(NODE_UPLINK_IP, 8080))), OUTSIDE_IP);
    assert_eq!(ask(|| outside(udp_client(NODE_UPLINK_IP, 5353))), OUTSIDE_IP);
    // From the node itself, on its address and on 127.0.0.1 (masqueraded to the bridge).
    let on_node = |cmd: String| node.command("sh").arg("-c").arg(cmd).output().map_err(Into::into);
    assert!(!ask(|| on_node(tcp_client(NODE_UPLINK_IP, 8080))).is_empty());
    assert_eq!(ask(|| on_node(tcp_client("127.0.0.1", 8080))), "10.244.0.1");
    // Hairpin: the pod reaches itself through the node's hostPort.
    assert_eq!(ask(|| node.in_pod(&web, &tcp_client(NODE_UPLINK_IP, 8080))), "10.244.0.1");

    // The same host port for another pod: AlreadyExists naming the port and the holder,
    // and nothing of the new pod is left.
    let other = with_port(pod_config("other"), cri::Protocol::Tcp, 80, 8080);
    let err = run_pod(&mut c, other).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");
    assert!(status.message().contains("8080/tcp") && status.message().contains("default/web"));
    assert_eq!(list_pods(&mut c).await.unwrap().len(), 1);
    assert_eq!(node.veths().unwrap().len(), 1);

    let report = node
        .command(podbay_tests::podbay_bin())
        .args(["net", "show", "-o", "json", "--endpoint"])
        .arg(node.socket())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["pods"][0]["ip"], ip);
    assert_eq!(report["pods"][0]["hostPorts"][0], format!("8080/tcp -> {ip}:80"));

    stop_servers(&node);
    remove_all(&mut c).await;
    assert!(node.nft_elements().unwrap().is_empty());
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn a_host_network_pod_uses_the_node_network() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.add_outside_host().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let cfg = with_network_mode(pod_config("agent"), cri::NamespaceMode::Node);
    let cfg = with_port(cfg, cri::Protocol::Tcp, 9100, 9100);
    let id = run_pod(&mut c, cfg).await.unwrap();
    let pid = pod_info(&mut c, &id).await.unwrap()["pid"].as_u64().unwrap();
    let ns = node.sh(&format!("readlink /proc/{pid}/ns/net /proc/1/ns/net")).unwrap();
    let ns: Vec<_> = ns.lines().collect();
    assert_eq!(ns[0], ns[1], "same network namespace as the node");
    assert!(node.veths().unwrap().is_empty(), "no veth for a hostNetwork pod");
    assert!(node.nft_elements().unwrap().is_empty(), "no DNAT for a hostNetwork pod");
    assert_eq!(pod_ip(&mut c, &id).await.unwrap(), NODE_UPLINK_IP, "reports the node's IP");
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn a_full_subnet_is_resource_exhausted_and_leaves_nothing() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config("[network]\nnode_subnet = \"10.244.0.0/29\"\n");
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let mut ips = BTreeSet::new();
    for i in 0..5 {
        let id = run_pod(&mut c, pod_config(&format!("p{i}"))).await.unwrap();
        ips.insert(pod_ip(&mut c, &id).await.unwrap());
    }
    let expected: BTreeSet<_> = (2..=6).map(|i| format!("10.244.0.{i}")).collect();
    assert_eq!(ips, expected, "network, gateway and broadcast are never handed out");
    let err = run_pod(&mut c, pod_config("p5")).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("10.244.0.0/29"), "{status}");
    assert_eq!(node.pod_dirs().len(), 5);
    assert_eq!(node.veths().unwrap().len(), 5);
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn fifty_concurrent_pods_get_fifty_distinct_ips() {
    require_root!();
    let node = Node::start().unwrap();
    let socket = node.socket();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut c = podbay_tests::connect(&socket).await.unwrap();
                let id = run_pod(&mut c, pod_config(&format!("p{i}"))).await.unwrap();
                pod_ip(&mut c, &id).await.unwrap()
            })
        })
        .collect();
    let mut ips = BTreeSet::new();
    for t in tasks {
        ips.insert(t.await.unwrap());
    }
    assert_eq!(ips.len(), 50, "{ips:?}");
    let mut c = node.client().await.unwrap();
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn a_daemon_restart_keeps_pod_ips_and_host_ports() {
    require_root!();
    let mut node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let a =
        run_pod(&mut c, with_port(pod_config("a"), cri::Protocol::Tcp, 80, 8080)).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    let before = (pod_ip(&mut c, &a).await.unwrap(), pod_ip(&mut c, &b).await.unwrap());
    node.kill_daemon().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let after = (pod_ip(&mut c, &a).await.unwrap(), pod_ip(&mut c, &b).await.unwrap());
    assert_eq!(before, after);
    assert_eq!(node.nft_elements().unwrap().len(), 1);
    assert!(node.in_pod(&a, &format!("ping -c1 -W2 {}", after.1)).unwrap().status.success());
    // The next pod does not get a running pod's address.
    let c3 = run_pod(&mut c, pod_config("c")).await.unwrap();
    assert_eq!(pod_ip(&mut c, &c3).await.unwrap(), "10.244.0.4");
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn stale_leases_veths_and_elements_are_cleaned_at_start() {
    require_root!();
    let mut node = Node::empty().unwrap();
    // One pod address only: a leaked lease would make the next pod fail.
    node.set_config("[network]\nnode_subnet = \"10.244.0.0/30\"\n");
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let a =
        run_pod(&mut c, with_port(pod_config("a"), cri::Protocol::Tcp, 80, 7000)).await.unwrap();
    let pid = pod_info(&mut c, &a).await.unwrap()["pid"].as_u64().unwrap();
    node.kill_daemon().unwrap();
    // While the daemon is down: the pod dies, and someone leaves a veth on the bridge and
    // an element in podbay's map.
    node.sh(&format!("kill -9 {pid}")).unwrap();
    node.sh(
        "ip link add vethdead0 type veth peer name vethdead1 && ip link set vethdead0 master cni0 && \
         nft add element ip podbay hostports '{ tcp . 9999 : 10.244.0.99 . 80 }'",
    )
    .unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert_eq!(pod_ip(&mut c, &a).await.unwrap(), "", "a dead pod keeps no IP");
    assert!(node.nft_elements().unwrap().is_empty(), "{:?}", node.nft_elements());
    wait_until(Duration::from_secs(5), || node.veths().is_ok_and(|v| v.is_empty())).unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    assert_eq!(pod_ip(&mut c, &b).await.unwrap(), "10.244.0.2", "the dead pod's lease was freed");
    remove_all(&mut c).await;
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn bad_port_mappings_are_invalid_argument_naming_the_field() {
    require_root!();
    let node = Node::start().unwrap();
    let mut c = node.client().await.unwrap();
    let cases = [
        (cri::Protocol::Tcp as i32, 0, 8080, "config.port_mappings[0].container_port"),
        (cri::Protocol::Tcp as i32, 80, 70000, "config.port_mappings[0].host_port"),
        (cri::Protocol::Tcp as i32, 80, -1, "config.port_mappings[0].host_port"),
        (7, 80, 8080, "config.port_mappings[0].protocol"),
    ];
    for (protocol, container_port, host_port, field) in cases {
        let mut cfg = pod_config("bad");
        cfg.port_mappings.push(cri::PortMapping {
            protocol,
            container_port,
            host_port,
            host_ip: String::new(),
        });
        let err = run_pod(&mut c, cfg).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        assert!(status.message().contains(field), "{field}: {status}");
    }
    assert!(list_pods(&mut c).await.unwrap().is_empty());
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_subnet_can_be_kubelets_pod_cidr() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config("[network]\nsubnet_store = \"kubelet\"\n");
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let update = |cidr: &str| cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig { pod_cidr: cidr.into() }),
        }),
    };
    // Until kubelet sends it, the network is not ready and says why.
    let (ready, _, message) = podbay_tests::condition(&mut c, "NetworkReady").await;
    assert!(!ready);
    assert!(message.contains("pod CIDR from kubelet"), "{message}");
    let err = run_pod(&mut c, pod_config("early")).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    // Outside the cluster CIDR: refused, naming it.
    let e = c.update_runtime_config(update("192.168.9.0/24")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("pod_cidr"), "{e}");
    // Dual-stack, as kubelet sends it: the IPv4 one is the node's subnet.
    c.update_runtime_config(update("10.244.7.0/24,fd00:10:244:7::/64")).await.unwrap();
    assert!(podbay_tests::condition(&mut c, "NetworkReady").await.0);
    let a = run_pod(&mut c, pod_config("a")).await.unwrap();
    assert!(pod_ip(&mut c, &a).await.unwrap().starts_with("10.244.7."));

    // A change while a pod holds an address is refused, said by the log and the status.
    let e = c.update_runtime_config(update("10.244.8.0/24")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let (ready, reason, message) = podbay_tests::condition(&mut c, "NetworkReady").await;
    assert!(ready && reason == "PodCIDRChangeRefused", "{reason}: {message}");
    assert!(message.contains("10.244.8.0/24") && node.log().contains("keeping 10.244.7.0/24"));

    // It is kept across a restart (kubelet sends it only when it changes).
    drop(c);
    node.stop_daemon().unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    wait_until(Duration::from_secs(10), || {
        node.sh("ip -4 addr show cni0 | grep -c 10.244.7.1/24").is_ok()
    })
    .unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();
    assert!(pod_ip(&mut c, &b).await.unwrap().starts_with("10.244.7."));

    // With no pod left, a change is taken: the bridge is made again with the new gateway.
    for id in [&a, &b] {
        stop_pod(&mut c, id).await.unwrap();
        remove_pod(&mut c, id).await.unwrap();
    }
    c.update_runtime_config(update("10.244.8.0/24")).await.unwrap();
    wait_until(Duration::from_secs(10), || {
        node.sh("ip -4 addr show cni0 | grep -c 10.244.8.1/24").is_ok()
    })
    .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if podbay_tests::condition(&mut c, "NetworkReady").await.0 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "{}", node.log());
    let d = run_pod(&mut c, pod_config("d")).await.unwrap();
    assert!(pod_ip(&mut c, &d).await.unwrap().starts_with("10.244.8."));
    stop_pod(&mut c, &d).await.unwrap();
    remove_pod(&mut c, &d).await.unwrap();

    // Stopped after taking a change but before making the bridge again: the bridge still
    // has the old gateway, and the next start gives it the new one.
    drop(c);
    node.stop_daemon().unwrap();
    node.sh("ip addr flush dev cni0 && ip addr add 10.244.7.1/24 dev cni0").unwrap();
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    assert!(podbay_tests::condition(&mut c, "NetworkReady").await.0, "{}", node.log());
    let addrs = node.sh("ip -4 -o addr show cni0 | awk '{print $4}'").unwrap();
    assert_eq!(addrs, "10.244.8.1/24\n");
    node.assert_clean().unwrap();
}
