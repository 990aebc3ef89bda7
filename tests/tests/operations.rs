//! What a node operator uses around the CRI: the Prometheus `/metrics` endpoint, scraped
//! and parsed by Prometheus' own Python parsers (podbay does not own them).

use podbay_tests::ctr::{logged_pod, run, sleeper};
use std::time::Duration;

use podbay_tests::{Node, cri, pod_config, pod_info, require_root, run_pod, wait_until};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9460";

/// Scrapes the node's `/metrics` with tests/py/scrape.py; (content type, samples).
fn scrape(node: &Node, openmetrics: bool) -> (String, Vec<(String, Value, f64)>) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/scrape.py");
    let mut cmd = node.command("/usr/bin/python3");
    cmd.arg(&script).arg(format!("http://{METRICS}/metrics"));
    if openmetrics {
        cmd.arg("openmetrics");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "scrape: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_str().unwrap().to_owned(), s[1].clone(), s[2].as_f64().unwrap()))
        .collect();
    (report["contentType"].as_str().unwrap().to_owned(), samples)
}

/// The value of the sample `name` whose labels include every pair of `labels`.
fn value(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[k].as_str() == Some(v)))
        .map(|s| s.2)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_scraped_and_move_as_pods_run() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config(&format!("[metrics]\naddress = \"{METRICS}\"\n"));
    node.start_daemon().unwrap();
    node.import_busybox().unwrap();
    let mut c = node.client().await.unwrap();

    let (kind, before) = scrape(&node, false);
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    assert_eq!(value(&before, "podbay_pods", &[("state", "ready")]), Some(0.0));
    assert_eq!(value(&before, "podbay_containers", &[("state", "running")]), Some(0.0));
    let free_before = value(&before, "podbay_ipam_addresses", &[("state", "free")]).unwrap();
    assert!(free_before > 200.0, "a /24 has 253 addresses to hand out: {free_before}");

    let pc = logged_pod(&node, "metered");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    run(&mut c, &pod, &pc, sleeper("app")).await;
    // A call that fails is counted with its code.
    let missing = cri::PodSandboxStatusRequest { pod_sandbox_id: "f".repeat(64), verbose: false };
    assert!(c.pod_sandbox_status(missing).await.is_err());

    let (_, after) = scrape(&node, false);
    assert_eq!(value(&after, "podbay_pods", &[("state", "ready")]), Some(1.0));
    assert_eq!(value(&after, "podbay_containers", &[("state", "running")]), Some(1.0));
    assert_eq!(value(&after, "podbay_ipam_addresses", &[("state", "used")]), Some(1.0));
    assert_eq!(
        value(&after, "podbay_ipam_addresses", &[("state", "free")]),
        Some(free_before - 1.0)
    );
    let calls = |method, code| {
        value(&after, "podbay_cri_requests_total", &[("method", method), ("code", code)])
    };
    assert_eq!(calls("RunPodSandbox", "OK"), Some(1.0));
    assert_eq!(calls("CreateContainer", "OK"), Some(1.0));
    assert_eq!(calls("PodSandboxStatus", "NotFound"), Some(1.0));
    let latency =
        |method| value(&after, "podbay_cri_request_duration_seconds_count", &[("method", method)]);
    assert_eq!(latency("StartContainer"), Some(1.0));
    let step = |operation, step| {
        value(
            &after,
            "podbay_pod_start_step_seconds_count",
            &[("operation", operation), ("step", step)],
        )
    };
    assert_eq!(step("run_pod_sandbox", "queue"), Some(1.0));
    assert_eq!(step("run_pod_sandbox", "spawn"), Some(1.0));
    assert_eq!(step("create_container", "queue"), Some(1.0));
    assert_eq!(step("create_container", "libcontainer"), Some(1.0));
    assert_eq!(step("start_container", "supervisor"), Some(1.0));
    assert_eq!(step("start_container", "commit"), Some(1.0));
    assert!(value(&after, "podbay_db_commit_seconds_count", &[]).unwrap() >= 2.0);
    assert_eq!(value(&after, "podbay_supervisor_exits_total", &[]), Some(0.0));
    assert_eq!(value(&after, "podbay_image_pulls_total", &[("result", "success")]), None);

    // OpenMetrics, for a scraper that asks for it, passes the strict parser.
    let (kind, om) = scrape(&node, true);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert_eq!(value(&om, "podbay_pods", &[("state", "ready")]), Some(1.0));

    // A supervisor killed from outside is counted, and its pod is no longer ready.
    let victim = run_pod(&mut c, pod_config("victim")).await.unwrap();
    let pid = pod_info(&mut c, &victim).await.unwrap()["pid"].as_u64().unwrap();
    node.sh(&format!("kill -9 {pid}")).unwrap();
    wait_until(Duration::from_secs(20), || {
        let (_, now) = scrape(&node, false);
        value(&now, "podbay_supervisor_exits_total", &[]) == Some(1.0)
    })
    .unwrap();
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: victim }).await.unwrap();

    c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let (_, stopped) = scrape(&node, false);
    assert_eq!(value(&stopped, "podbay_pods", &[("state", "notready")]), Some(1.0));
    assert_eq!(value(&stopped, "podbay_containers", &[("state", "exited")]), Some(1.0));
    assert_eq!(value(&stopped, "podbay_ipam_addresses", &[("state", "used")]), Some(0.0));

    // Anything but /metrics is 404.
    let out = node
        .command("/usr/bin/python3")
        .args(["-c", &format!(
            "import urllib.request,urllib.error\ntry:\n urllib.request.urlopen('http://{METRICS}/x')\nexcept urllib.error.HTTPError as e:\n print(e.code)"
        )])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "404");
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    node.assert_clean().unwrap();
}

/// `podbay serve` tells a service manager (systemd's sd_notify protocol, on a socket this
/// test owns) that it is ready once the CRI socket takes connections, and that it stops.
#[test]
fn serve_notifies_readiness_over_the_notify_socket() {
    require_root!();
    let mut node = Node::empty().unwrap();
    let path = node.dir().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    node.set_env(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let cri = node.socket();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("no READY from podbay serve");
        // Whoever reads READY=1 can connect at once.
        let connectable = std::os::unix::net::UnixStream::connect(&cri).is_ok();
        let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
        let n = sock.recv(&mut buf).expect("no STOPPING from podbay serve");
        (ready, connectable, String::from_utf8_lossy(&buf[..n]).into_owned(), sock)
    });
    node.start_daemon().unwrap();
    while !listener.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if node.log().contains("podbay serving CRI") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    node.stop_daemon().unwrap();
    let (ready, connectable, stopping, _sock) = listener.join().unwrap();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=serving CRI on "), "{ready:?}");
    assert!(connectable, "READY=1 came before the socket took connections");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

fn run_script(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find").arg(dir).arg("-mindepth").arg("1").output();
    let mut v: Vec<String> =
        String::from_utf8_lossy(&out.unwrap().stdout).lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// scripts/install into a temp prefix: stripped binaries that run, a unit systemd's own
/// checker accepts (its man: links resolved in the installed pages), completions, man pages
/// groff accepts, crictl.yaml only where none exists; --uninstall removes exactly that.
#[test]
fn install_and_uninstall_into_a_prefix() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install");
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("usr");
    let etc = tmp.path().join("etc");
    let install = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(&script);
        cmd.arg("--prefix").arg(&prefix).arg("--sysconfdir").arg(&etc);
        cmd.arg("--bin-dir").arg(podbay_tests::bin_dir()).args(extra);
        cmd
    };
    run_script(&mut install(&[]));

    let bin = prefix.join("bin/podbay");
    let version = run_script(std::process::Command::new(&bin).arg("--version"));
    assert!(version.starts_with("podbay "), "{version}");
    let sections = run_script(std::process::Command::new("readelf").arg("-S").arg(&bin));
    assert!(!sections.contains(".debug_info"), "the installed podbay is not stripped");
    assert!(prefix.join("bin/podbay-supervisor").is_file());

    let unit = prefix.join("lib/systemd/system/podbay.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
        "Wants=network-online.target",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing: {text}");
    }
    assert!(text.contains(&format!("ExecStart={} serve", bin.display())), "{text}");
    let mut verify = std::process::Command::new("systemd-analyze");
    verify.arg("verify").arg(&unit).env("MANPATH", prefix.join("share/man"));
    let out = verify.output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bash = prefix.join("share/bash-completion/completions/podbay");
    run_script(std::process::Command::new("bash").arg("-n").arg(&bash));
    assert!(std::fs::read_to_string(&bash).unwrap().contains("port-forward"));
    assert!(prefix.join("share/zsh/site-functions/_podbay").is_file());
    assert!(prefix.join("share/fish/vendor_completions.d/podbay.fish").is_file());
    let man = prefix.join("share/man/man1");
    for page in ["podbay.1", "podbay-serve.1", "podbay-exec.1"] {
        let out = std::process::Command::new("groff")
            .args(["-man", "-z", "-ww"])
            .arg(man.join(page))
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{page}: {out:?}");
    }
    let crictl = std::fs::read_to_string(etc.join("crictl.yaml")).unwrap();
    assert!(crictl.contains("runtime-endpoint: unix:///run/podbay/podbay.sock"), "{crictl}");

    // A second install over the first is refused; uninstall leaves nothing.
    assert!(!install(&[]).output().unwrap().status.success());
    let mut uninstall = std::process::Command::new(&script);
    uninstall.arg("--uninstall").arg("--prefix").arg(&prefix);
    run_script(&mut uninstall);
    assert_eq!(files_under(tmp.path()), Vec::<String>::new());

    // An install that fails half way (this `podbay` is `false`: its completions fail after
    // the binaries and the unit are in place) removes what it had written.
    let broken = tmp.path().join("broken-bin");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy("/bin/false", broken.join("podbay")).unwrap();
    std::fs::copy(
        podbay_tests::bin_dir().join("podbay-supervisor"),
        broken.join("podbay-supervisor"),
    )
    .unwrap();
    let mut failing = std::process::Command::new(&script);
    failing
        .arg("--prefix")
        .arg(&prefix)
        .arg("--sysconfdir")
        .arg(&etc)
        .arg("--bin-dir")
        .arg(&broken);
    assert!(!failing.output().unwrap().status.success());
    std::fs::remove_dir_all(&broken).unwrap();
    assert_eq!(files_under(tmp.path()), Vec::<String>::new());

    // An operator's crictl.yaml stays as it is; --keep-debug splits the debug info off.
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("crictl.yaml"), "runtime-endpoint: unix:///run/other.sock\n").unwrap();
    run_script(&mut install(&["--keep-debug"]));
    let debug = prefix.join("lib/debug/podbay/podbay.debug");
    assert!(debug.is_file());
    let sections = run_script(std::process::Command::new("readelf").arg("-S").arg(&bin));
    assert!(sections.contains(".gnu_debuglink"), "no debuglink: {sections}");
    run_script(&mut uninstall);
    assert_eq!(
        files_under(tmp.path()),
        vec![etc.display().to_string(), etc.join("crictl.yaml").display().to_string()]
    );
    let kept = std::fs::read_to_string(etc.join("crictl.yaml")).unwrap();
    assert_eq!(kept, "runtime-endpoint: unix:///run/other.sock\n");
}

/// `podbay doctor -o json` in the node; (exit code, checks by name → (level, detail)).
fn doctor(
    node: &Node,
    args: &[&str],
) -> (i32, std::collections::BTreeMap<String, (String, String)>) {
    let out = node
        .command(podbay_tests::podbay_bin())
        .arg("doctor")
        .args(["-o", "json", "--socket"])
        .arg(node.socket())
        .args(args)
        .output()
        .unwrap();
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let by_name = checks
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("name"), (s("level"), s("detail")))
        })
        .collect();
    (out.status.code().unwrap(), by_name)
}

#[test]
fn doctor_passes_a_healthy_node_and_names_what_is_wrong() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let root = node.root();
    let run = node.run_dir();
    let dirs = ["--root", root.to_str().unwrap(), "--run-dir", run.to_str().unwrap()];
    let (code, checks) = doctor(&node, &dirs);
    assert_eq!(code, 0, "{checks:#?}");
    for name in ["config", "kernel", "overlayfs", "seccomp", "bridge", "veth", "vxlan", "nftables"]
    {
        assert_eq!(checks[name].0, "ok", "{name}: {checks:#?}");
    }
    assert!(checks["daemon"].1.contains("serving on"), "{checks:#?}");
    assert_eq!(checks["run dir"].0, "ok", "the node's run dir is a tmpfs: {checks:#?}");
    assert!(!checks.contains_key("cgroup placement"), "a cgroup v2 check on v1: {checks:#?}");
    assert!(checks["bridge"].1.contains("podbay's"), "{checks:#?}");
    // Probing made nothing on the node.
    let links = node.sh("ip -o link show | grep -c ' pb[0-9]' || true").unwrap();
    assert_eq!(links.trim(), "0");

    // A full disk under root fails the run, naming the dir and the free space.
    let full = node.dir().join("full");
    std::fs::create_dir_all(&full).unwrap();
    node.sh(&format!(
        "mount -t tmpfs -o size=4m tmpfs {0} && head -c 4194304 /dev/zero > {0}/fill 2>/dev/null; true",
        full.display()
    ))
    .unwrap();
    let full_root = full.join("root");
    let args = ["--root", full_root.to_str().unwrap(), "--run-dir", run.to_str().unwrap()];
    let (code, checks) = doctor(&node, &args);
    node.sh(&format!("umount {}", full.display())).unwrap();
    assert_eq!(code, 1, "{checks:#?}");
    assert_eq!(checks["root dir"].0, "fail", "{checks:#?}");
    assert!(checks["root dir"].1.contains("0 B free"), "{checks:#?}");
}

/// On a cgroup v2 node doctor says whether containers can be born in their cgroup
/// (`clone3` with `CLONE_INTO_CGROUP`).
#[test]
fn doctor_checks_cgroup_placement_on_a_v2_node() {
    require_root!();
    let node = Node::empty().unwrap();
    node.sh("umount -R /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup").unwrap();
    let (_, checks) = doctor(&node, &[]);
    let (level, detail) = &checks["cgroup placement"];
    assert_eq!(level, "ok", "{checks:#?}");
    assert!(detail.contains("born in their cgroup"), "{detail}");
    assert!(checks["cgroups"].1.starts_with("v2"), "{checks:#?}");
}

#[test]
fn doctor_reports_foreign_devices_a_broken_config_and_unreachable_etcd() {
    require_root!();
    let node = Node::empty().unwrap();
    // Another plugin's bridge, and a flannel.1 that is no VXLAN device.
    node.sh("ip link add cni0 type bridge && ip link add flannel.1 type veth peer name fl-peer")
        .unwrap();
    let config = node.dir().join("doctor.toml");
    std::fs::write(
        &config,
        "[network]\nsubnet_store = \"etcd\"\n[network.etcd]\nendpoints = [\"http://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let root = node.root();
    let args = ["--config", config.to_str().unwrap(), "--root", root.to_str().unwrap()];
    let (code, checks) = doctor(&node, &args);
    assert_eq!(code, 1, "{checks:#?}");
    assert_eq!(checks["bridge"].0, "warn", "{checks:#?}");
    assert!(checks["bridge"].1.contains("another network plugin"), "{checks:#?}");
    assert_eq!(checks["vxlan device"].0, "fail", "{checks:#?}");
    assert!(checks["vxlan device"].1.contains("veth"), "{checks:#?}");
    assert_eq!(checks["etcd"].0, "fail", "{checks:#?}");
    assert_eq!(checks["daemon"].0, "warn", "{checks:#?}");

    std::fs::write(&config, "[network]\nbridg = \"cni0\"\n").unwrap();
    let (code, checks) = doctor(&node, &args);
    assert_eq!(code, 1);
    assert_eq!(checks["config"].0, "fail");
    assert!(checks["config"].1.contains("bridg"), "{checks:#?}");
    node.sh("ip link del cni0; ip link del flannel.1").unwrap();
}

/// `podbay net show --format svg|dot` of a node with two pods, one with a hostPort: a
/// well-formed SVG (Python's XML parser) naming every pod, IP, veth and the hostPort; DOT
/// that Graphviz renders.
#[tokio::test(flavor = "multi_thread")]
async fn net_show_draws_the_node() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let web = podbay_tests::with_port(pod_config("web"), cri::Protocol::Tcp, 80, 8080);
    let web = run_pod(&mut c, web).await.unwrap();
    let db = run_pod(&mut c, pod_config("db")).await.unwrap();
    let ips = [
        podbay_tests::pod_ip(&mut c, &web).await.unwrap(),
        podbay_tests::pod_ip(&mut c, &db).await.unwrap(),
    ];
    let veths = node.veths().unwrap();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/svgtext.py");
    let svg = node.dir().join("net.svg");
    let out = node.cli(&["net", "show", "--format", "svg"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&svg, &out.stdout).unwrap();
    let parsed =
        std::process::Command::new("/usr/bin/python3").arg(&script).arg(&svg).output().unwrap();
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let parsed: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    let all = parsed["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned());
    let all: Vec<String> = all.collect();
    let text = all.join("\n");
    for want in ["default/web", "default/db", "cni0", "10.244.0.0/24", "gateway 10.244.0.1"] {
        assert!(all.iter().any(|t| t == want), "{want} missing: {text}");
    }
    for ip in &ips {
        assert!(all.contains(ip), "{ip} missing: {text}");
    }
    for veth in &veths {
        assert!(text.contains(&format!("{veth} ↔ eth0@if")), "{veth} missing: {text}");
    }
    assert!(text.contains("hostPort "), "{text}");
    assert!(text.contains("8080"), "{text}");
    assert_eq!(parsed["classes"]["pod"], 2);

    let dot = node.dir().join("net.dot");
    let out = node.cli(&["net", "show", "--format", "dot"]).unwrap();
    std::fs::write(&dot, &out.stdout).unwrap();
    let mut graphviz = std::process::Command::new("dot");
    let rendered = graphviz.args(["-Tsvg", "-o", "/dev/null"]).arg(&dot).output().unwrap();
    assert!(rendered.status.success(), "graphviz: {}", String::from_utf8_lossy(&rendered.stderr));

    for id in [web, db] {
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
    }
    node.assert_clean().unwrap();
}
