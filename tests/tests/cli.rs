//! The `podbay` command line: config handling and the crictl-compatible client commands.

use std::process::{Command, Output};

use podbay_tests::ctr;
use podbay_tests::*;

fn podbay(node: &Node, args: &[&str]) -> Output {
    Command::new(podbay_bin())
        .args(args)
        .env("PODBAY_ENDPOINT", node.socket())
        .output()
        .expect("run podbay")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "podbay failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn config_default_prints_every_section() {
    let out = ok(Command::new(podbay_bin()).args(["config", "default"]).output().unwrap());
    for key in ["root = ", "run_dir = ", "socket = ", "[log]", "[sandbox]", "shm_size_bytes"] {
        assert!(out.contains(key), "{key} missing in:\n{out}");
    }
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in
        [("[log]\nlevle = \"info\"\n", "levle"), ("[log]\nformat = \"xml\"\n", "log.format")]
    {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(podbay_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--root")
            .arg(dir.path().join("root"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(!dir.path().join("root").exists(), "nothing is created on a bad config");
}

#[test]
fn crictl_style_commands() {
    require_root!();
    let node = Node::start().unwrap();
    let file = node.dir().join("pod.yaml");
    std::fs::write(
        &file,
        "metadata: {name: cli-pod, namespace: default, uid: cli-uid}\nhostname: cli\n\
         labels: {tier: web}\nlinux: {security_context: {namespace_options: {pid: POD}}}\n",
    )
    .unwrap();
    let id = ok(podbay(&node, &["runp", file.to_str().unwrap()])).trim().to_owned();
    assert_eq!(id.len(), 64);
    assert!(ok(podbay(&node, &["version"])).contains("RuntimeName:  podbay"));
    assert!(ok(podbay(&node, &["info"])).contains("RuntimeReady"));

    let table = ok(podbay(&node, &["pods"]));
    assert!(table.contains(&id[..13]) && table.contains("cli-pod") && table.contains("Ready"));
    assert_eq!(ok(podbay(&node, &["pods", "-q", "--label", "tier=web"])).trim(), id);
    assert_eq!(ok(podbay(&node, &["pods", "-q", "--label", "tier=db"])).trim(), "");
    assert_eq!(ok(podbay(&node, &["pods", "-q", "--name", "cli"])).trim(), id);
    let json: serde_json::Value =
        serde_json::from_str(&ok(podbay(&node, &["pods", "-o", "json"]))).unwrap();
    assert_eq!(json["items"][0]["id"], id.as_str());
    assert!(ok(podbay(&node, &["pods", "-o", "yaml"])).contains("cli-pod"));

    // Prefixes work as with crictl.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(podbay(&node, &["inspectp", &id[..6]]))).unwrap();
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY");
    assert!(inspect["info"]["pid"].as_u64().unwrap() > 1);
    assert!(inspect["info"]["namespaces"]["net"].is_string());

    ok(podbay(&node, &["stopp", &id[..8]]));
    assert_eq!(ok(podbay(&node, &["pods", "-q", "--state", "notready"])).trim(), id);
    ok(podbay(&node, &["rmp", "--all"]));
    assert_eq!(ok(podbay(&node, &["pods", "-q"])).trim(), "");

    let missing = podbay(&node, &["inspectp", "ffff"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
    node.assert_clean().unwrap();
}

fn fail(out: Output) -> String {
    assert!(!out.status.success(), "podbay should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn crictl_style_container_commands() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let dir = node.dir();
    let logs = dir.join("logs");
    let pod = dir.join("pod.json");
    std::fs::write(
        &pod,
        format!(
            r#"{{"metadata":{{"name":"cli-ctr-pod","namespace":"default","uid":"u1"}},
                "log_directory":"{}","linux":{{}}}}"#,
            logs.display()
        ),
    )
    .unwrap();
    let long = dir.join("long.yaml");
    std::fs::write(
        &long,
        format!(
            "metadata: {{name: long}}\nimage: {{image: {BUSYBOX}}}\nlogPath: long.log\n\
             command: [sh, -c, 'echo oops >&2; echo hello; sleep 0.3; echo second; exec sleep 3600']\n\
             labels: {{app: cli}}\n"
        ),
    )
    .unwrap();
    let short = dir.join("short.json");
    std::fs::write(
        &short,
        format!(
            r#"{{"metadata":{{"name":"short"}},"image":{{"image":"{BUSYBOX}"}},
                "command":["sh","-c","sleep 1; echo done"],"log_path":"short.log"}}"#
        ),
    )
    .unwrap();

    // run: pod + container, started.
    let id = ok(podbay(&node, &["run", long.to_str().unwrap(), pod.to_str().unwrap()]))
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64);
    let pod_id = ok(podbay(&node, &["pods", "-q"])).trim().to_owned();
    let table = ok(podbay(&node, &["ps"]));
    assert!(
        table.contains(&id[..13]) && table.contains("Running") && table.contains("cli-ctr-pod")
    );
    assert_eq!(ok(podbay(&node, &["ps", "-q", "--pod", &pod_id[..8]])).trim(), id);
    assert_eq!(ok(podbay(&node, &["ps", "-q", "--label", "app=cli", "--name", "lo"])).trim(), id);
    assert_eq!(ok(podbay(&node, &["ps", "-q", "--state", "exited"])).trim(), "");
    let json: serde_json::Value =
        serde_json::from_str(&ok(podbay(&node, &["ps", "-o", "json"]))).unwrap();
    assert_eq!(json["containers"][0]["id"], id.as_str());

    // exec passes output and the exit code through.
    let out =
        podbay(&node, &["exec", &id[..10], "--", "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // logs: stdout and stderr to their own streams, --tail, --timestamps.
    wait_until(std::time::Duration::from_secs(5), || {
        ok(podbay(&node, &["logs", &id])).contains("second")
    })
    .unwrap();
    let out = podbay(&node, &["logs", &id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nsecond\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let tail = ok(podbay(&node, &["logs", "--tail", "1", "--timestamps", &id]));
    let (ts, text) = tail.split_once(' ').unwrap_or_else(|| panic!("{tail:?}"));
    assert!(ts.ends_with('Z') && ts.contains('T'), "{tail}");
    assert_eq!(text, "second\n");

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(podbay(&node, &["inspect", &id[..8]]))).unwrap();
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING");
    assert!(inspect["info"]["pid"].as_u64().is_some_and(|p| p > 1), "{inspect:#}");
    let stats = ok(podbay(&node, &["stats", "-s", "1"]));
    assert!(stats.contains(&id[..13]) && stats.contains("long"), "{stats}");
    let statsp = ok(podbay(&node, &["statsp", "-s", "1"]));
    assert!(statsp.contains("cli-ctr-pod"), "{statsp}");

    // create + start; logs -f follows until the container exits.
    let second =
        ok(podbay(&node, &["create", &pod_id, short.to_str().unwrap(), pod.to_str().unwrap()]))
            .trim()
            .to_owned();
    assert_eq!(ok(podbay(&node, &["ps", "-q", "--state", "created"])).trim(), second);
    ok(podbay(&node, &["start", &second]));
    assert_eq!(ok(podbay(&node, &["logs", "-f", &second])), "done\n");
    assert_eq!(ok(podbay(&node, &["ps", "-aq", "--state", "exited"])).trim(), second);

    // A running container is removed only with --force; stop and rm are idempotent.
    assert!(fail(podbay(&node, &["rm", &id])).contains("running"));
    ok(podbay(&node, &["stop", "-t", "1", &id]));
    ok(podbay(&node, &["stop", &id]));
    ok(podbay(&node, &["rm", "-a"]));
    assert_eq!(ok(podbay(&node, &["ps", "-aq"])).trim(), "");
    assert!(fail(podbay(&node, &["inspect", &id])).contains("NotFound"));
    assert!(
        fail(podbay(&node, &["create", &pod_id, "/nonexistent.json", pod.to_str().unwrap()]))
            .contains("/nonexistent.json")
    );
    ok(podbay(&node, &["rmp", "-a"]));
    node.assert_clean().unwrap();
}

#[tokio::test]
async fn rmp_all_tries_every_pod_and_errors_are_one_line() {
    require_root!();
    let mut node = Node::with_busybox().unwrap();
    // Removing a container fails: the pod that has one cannot be removed.
    node.kill_daemon().unwrap();
    node.set_env(&[("PODBAY_FAILPOINTS", "container.remove.runtime")]);
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    let a = run_pod(&mut c, pod_config("a")).await.unwrap();
    let stuck_config = pod_config("stuck");
    let stuck = run_pod(&mut c, stuck_config.clone()).await.unwrap();
    ctr::create(&mut c, &stuck, &stuck_config, ctr::sleeper("app")).await.unwrap();
    let b = run_pod(&mut c, pod_config("b")).await.unwrap();

    let out = podbay(&node, &["rmp", "--all"]);
    let err = fail(out.clone());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for id in [&a, &b] {
        assert!(stdout.contains(&format!("Removed sandbox {id}")), "{stdout}");
    }
    assert!(err.contains(&format!("remove pod {stuck}")), "{err}");
    assert!(err.contains("1 pod(s) not removed"), "{err}");
    let left: Vec<String> = list_pods(&mut c).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(left, vec![stuck.clone()]);

    // A failing call: one line naming the code, no "Error: Error:", no backtrace (even
    // with RUST_BACKTRACE=1, as set on many machines).
    let out = Command::new(podbay_bin())
        .args(["inspectp", "feedface"])
        .env("PODBAY_ENDPOINT", node.socket())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = fail(out);
    assert!(err.starts_with("podbay: "), "{err}");
    assert!(err.contains("NotFound"), "{err}");
    assert!(!err.contains("Error: Error") && !err.contains("acktrace"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    node.kill_daemon().unwrap();
    node.set_env(&[]);
    node.start_daemon().unwrap();
    ok(podbay(&node, &["rmp", "--all"]));
    node.assert_clean().unwrap();
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    require_root!();
    let node = Node::start().unwrap();
    let mut child = Command::new(podbay_bin())
        .args(["pods", "-o", "json"])
        .env("PODBAY_ENDPOINT", node.socket())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before podbay writes (as `| head -1` after its line).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let quiet = out.status.success() || out.status.signal() == Some(nix::libc::SIGPIPE);
    assert!(quiet, "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn control_characters_are_refused_in_names_and_keys() {
    require_root!();
    let node = Node::start().unwrap();
    let dir = node.dir();
    let cases = [
        (r#"{"metadata":{"name":"a\nfake-row","namespace":"default","uid":"u"}}"#, "metadata.name"),
        (r#"{"metadata":{"name":"a","namespace":"d\u001b[2J","uid":"u"}}"#, "metadata.namespace"),
        (
            r#"{"metadata":{"name":"a","namespace":"default","uid":"u"},"labels":{"k\u0000":"v"}}"#,
            "labels",
        ),
        (
            r#"{"metadata":{"name":"a","namespace":"default","uid":"u"},"annotations":{"k\n":"v"}}"#,
            "annotations",
        ),
    ];
    for (i, (json, field)) in cases.iter().enumerate() {
        let path = dir.join(format!("pod{i}.json"));
        std::fs::write(&path, json).unwrap();
        let err = fail(podbay(&node, &["runp", &path.to_string_lossy()]));
        assert!(err.contains("InvalidArgument") && err.contains(field), "{field}: {err}");
    }
    // Values may hold them.
    let path = dir.join("ok.json");
    std::fs::write(
        &path,
        r#"{"metadata":{"name":"fine","namespace":"default","uid":"u"},"labels":{"k":"line\nbreak"}}"#,
    )
    .unwrap();
    let id = ok(podbay(&node, &["runp", &path.to_string_lossy()]));
    let table = ok(podbay(&node, &["pods"]));
    assert_eq!(table.lines().count(), 2, "{table}");
    ok(podbay(&node, &["rmp", id.trim()]));
    node.assert_clean().unwrap();
}
