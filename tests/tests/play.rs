//! `podbay play`: Kubernetes manifests (the examples in `examples/` and a few made here)
//! run on a node as a user would, through the `podbay` command.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use podbay_tests::images::{self, Entry};
use podbay_tests::{Node, require_root, wait_until};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// A node with the busybox test image also named `busybox` (`:latest`), as the examples
/// use it.
fn node() -> Node {
    let node = Node::with_busybox().unwrap();
    let layout = node.dir().join("latest-layout");
    let image = Entry::Image(images::fixtures().busybox);
    images::write_layout(&layout, &[("docker.io/library/busybox:latest", &image)]).unwrap();
    let out = node.cli(&["image", "import", &layout.to_string_lossy()]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    node
}

/// `podbay play …` inside the node (its mount namespace: emptyDir tmpfs, hostPorts).
fn play_cmd(node: &Node, args: &[&str]) -> Command {
    let mut cmd = node.command(podbay_tests::podbay_bin());
    cmd.arg("--endpoint").arg(node.socket()).arg("play");
    cmd.arg("--state-dir").arg(node.dir().join("play")).args(args);
    cmd
}

fn play(node: &Node, args: &[&str]) -> Output {
    play_cmd(node, args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `podbay pods -o json` items: (name, state, id).
fn pods(node: &Node) -> Vec<(String, String, String)> {
    let out = node.cli(&["pods", "-o", "json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut items: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let state = match &p["state"] {
                serde_json::Value::Number(n) if n.as_i64() == Some(0) => "SANDBOX_READY",
                serde_json::Value::Number(_) => "SANDBOX_NOTREADY",
                other => other.as_str().unwrap_or("?"),
            };
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                state.to_owned(),
                p["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    items.sort();
    items
}

fn log_of(node: &Node, pod: &str, container: &str, attempt: u32) -> String {
    let path = node.dir().join(format!("play/default_{pod}/logs/{container}/{attempt}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// An HTTP GET from inside the node.
fn get(node: &Node, url: &str) -> String {
    let script = format!(
        "import urllib.request; print(urllib.request.urlopen('{url}', timeout=5).read().decode())"
    );
    let out = node.command("/usr/bin/python3").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn web_example_with_init_container_emptydir_and_hostport_then_down() {
    require_root!();
    let node = node();
    let file = example("web.yaml");
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    for pod in ["default/web", "default/worker-0", "default/worker-1"] {
        assert!(said.contains(&format!("pod {pod} 10.244.")), "{said}");
    }
    let names: Vec<String> = pods(&node).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["web", "worker-0", "worker-1"]);

    // The init container wrote the page into the emptyDir before httpd served it on the
    // node's port 8080.
    let page = get(&node, "http://127.0.0.1:8080/");
    assert!(page.starts_with("<h1>served by web at 10.244."), "{page:?}");
    assert!(node.dir().join("play/default_web/volumes/content/index.html").is_file());
    let init_log = node.dir().join("play/default_web/logs/content/0.log");
    assert!(init_log.exists(), "the init container's log");

    // Again: nothing new.
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("already running").count(), 3, "{}", text(&out));
    assert_eq!(pods(&node).len(), 3);

    let out = play(&node, &["--down", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(pods(&node), vec![]);
    assert!(!node.dir().join("play/default_web").exists(), "the pod's dir stays");
    node.assert_clean().unwrap();
}

/// Spawns a foreground `podbay play` with its output in a thread; the lines it printed.
fn foreground(node: &Node, file: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = play_cmd(node, &[file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    (child, rx)
}

/// Waits for a line containing `want`; every line seen so far.
fn expect_line(rx: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l| l.contains(want)) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {want:?}: {seen:#?}"),
        }
    }
}

/// The process `podbay play` runs as in the node (nsenter forks it).
fn interrupt_play(node: &Node) {
    node.sh("pkill -INT -f '[p]odbay --endpoint .* play'").unwrap();
}

#[test]
fn localhost_example_in_the_foreground_until_ctrl_c() {
    require_root!();
    let node = node();
    let file = example("localhost.yaml");
    let (mut child, rx) = foreground(&node, &file);
    let mut seen = Vec::new();
    expect_line(&rx, &mut seen, "following the containers");
    // The client reaches the server over the pod's shared localhost.
    wait_until(Duration::from_secs(20), || {
        log_of(&node, "localhost-pair", "client", 0).contains("hello from localhost-pair")
    })
    .unwrap_or_else(|_| panic!("client log: {:?}", log_of(&node, "localhost-pair", "client", 0)));
    interrupt_play(&node);
    let status = child.wait().unwrap();
    expect_line(&rx, &mut seen, "pod default/localhost-pair stopped");
    assert!(status.success(), "{seen:#?}");
    assert_eq!(pods(&node)[0].1, "SANDBOX_NOTREADY");

    // Played again, the stopped pod is replaced (not duplicated); --down removes it.
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let now = pods(&node);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].1, "SANDBOX_READY");
    assert!(play(&node, &["--down", file.to_str().unwrap()]).status.success());
    node.assert_clean().unwrap();
}

#[test]
fn restart_policies_with_back_off() {
    require_root!();
    let node = node();
    let never = node.dir().join("never.yaml");
    std::fs::write(
        &never,
        "kind: Pod\nmetadata: {name: once}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'exit 5']}\n",
    )
    .unwrap();
    // Never: the container runs once; play ends by itself and says how.
    let out = play(&node, &[never.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("container c exited with 5"), "{}", text(&out));
    assert!(play(&node, &["--down", never.to_str().unwrap()]).status.success());

    // OnFailure: restarted after 1 s, then 2 s; each attempt logs to its own file.
    let flaky = node.dir().join("flaky.yaml");
    std::fs::write(
        &flaky,
        "kind: Pod\nmetadata: {name: flaky}\nspec:\n  restartPolicy: OnFailure\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, 'echo try; exit 3']}\n",
    )
    .unwrap();
    let (mut child, rx) = foreground(&node, &flaky);
    let mut seen = Vec::new();
    expect_line(&rx, &mut seen, "exited with 3; restarting in 1 s");
    expect_line(&rx, &mut seen, "exited with 3; restarting in 2 s");
    assert!(log_of(&node, "flaky", "c", 1).contains("try"), "attempt 1's log");
    interrupt_play(&node);
    assert!(child.wait().unwrap().success(), "{seen:#?}");
    assert!(play(&node, &["--down", flaky.to_str().unwrap()]).status.success());
    node.assert_clean().unwrap();
}

#[test]
fn unsupported_fields_are_named_and_nothing_is_made() {
    require_root!();
    let node = node();
    let file = node.dir().join("bad.yaml");
    std::fs::write(
        &file,
        "kind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    livenessProbe: {exec: {command: [true]}}\n    lifecycle: {preStop: {exec: {command: [x]}}}\n---\nkind: Service\nmetadata: {name: svc}\n",
    )
    .unwrap();
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("spec.containers[0].lifecycle: not supported by podbay play"), "{said}");
    assert!(said.contains("kind Service is not supported"), "{said}");
    assert!(
        said.contains("warning: Pod \"bad\": spec.containers[0].livenessProbe: ignored"),
        "{said}"
    );
    assert_eq!(pods(&node), vec![]);

    // A probe alone only warns: the pod runs.
    std::fs::write(
        &file,
        "kind: Pod\nmetadata: {name: probed}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n    readinessProbe: {exec: {command: [true]}}\n",
    )
    .unwrap();
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("spec.containers[0].readinessProbe: ignored"), "{}", text(&out));
    assert!(play(&node, &["--down", file.to_str().unwrap()]).status.success());
    node.assert_clean().unwrap();
}

#[test]
fn two_pods_ping_each_other_over_the_bridge() {
    require_root!();
    let node = node();
    let file = example("two-pods.yaml");
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    let ip_of = |pod: &str| {
        let line = said.lines().find(|l| l.starts_with(&format!("pod default/{pod} "))).unwrap();
        line.split_whitespace().nth(2).unwrap().to_owned()
    };
    let (a, b) = (ip_of("pinger-0"), ip_of("pinger-1"));
    wait_until(Duration::from_secs(30), || {
        log_of(&node, "pinger-0", "ping", 0).contains(&format!("{a} -> {b} ok"))
            && log_of(&node, "pinger-1", "ping", 0).contains(&format!("{b} -> {a} ok"))
    })
    .unwrap_or_else(|_| panic!("{}", log_of(&node, "pinger-0", "ping", 0)));
    assert!(play(&node, &["--down", file.to_str().unwrap()]).status.success());
    node.assert_clean().unwrap();
}

#[test]
fn memory_emptydir_hostpath_security_context_and_downward_env() {
    require_root!();
    let node = node();
    let host = node.dir().join("host-data");
    let file = node.dir().join("pod.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: Pod\nmetadata: {{name: shaped, namespace: lab}}\nspec:\n  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, runAsNonRoot: true}}\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, 'id; grep \" /cache \" /proc/mounts; echo hi > /cache/x && echo cache-ok; ls -d /host; echo \"$(ME)/$(NS)\"; sleep 3600']\n    env:\n    - {{name: ME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}\n    - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}\n    volumeMounts:\n    - {{name: cache, mountPath: /cache}}\n    - {{name: host, mountPath: /host, readOnly: true}}\n    resources: {{limits: {{memory: 64Mi}}}}\n  volumes:\n  - {{name: cache, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}\n  - {{name: host, hostPath: {{path: {}, type: DirectoryOrCreate}}}}\n",
            host.display()
        ),
    )
    .unwrap();
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(host.is_dir(), "DirectoryOrCreate made the host dir");
    let log = || {
        std::fs::read_to_string(node.dir().join("play/lab_shaped/logs/c/0.log")).unwrap_or_default()
    };
    wait_until(Duration::from_secs(20), || log().contains("shaped/lab"))
        .unwrap_or_else(|_| panic!("{}", log()));
    let log = log();
    assert!(log.contains("uid=1000(") && log.contains(" gid=3000"), "{log}");
    assert!(log.contains("groups=2000"), "fsGroup is a supplemental group: {log}");
    assert!(log.contains("tmpfs /cache tmpfs"), "{log}");
    assert!(log.contains("size=8192k"), "{log}");
    assert!(log.contains("cache-ok"), "{log}");
    assert!(log.contains("/host"), "{log}");
    assert!(play(&node, &["--down", file.to_str().unwrap()]).status.success());
    // The tmpfs went with the pod's dir.
    assert!(!node.dir().join("play/lab_shaped").exists());

    // runAsNonRoot with an image that runs as root and no runAsUser: refused, as kubelet does.
    std::fs::write(
        &file,
        "kind: Pod\nmetadata: {name: rooted}\nspec:\n  securityContext: {runAsNonRoot: true}\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '60']}\n",
    )
    .unwrap();
    let out = play(&node, &["--detach", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("runAsNonRoot and would run as root"), "{}", text(&out));
    assert_eq!(pods(&node), vec![], "the failed pod was removed");
    assert!(!node.dir().join("play/default_rooted").exists(), "and its dir");
    node.assert_clean().unwrap();
}
