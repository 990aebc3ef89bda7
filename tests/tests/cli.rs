//! The `podbay` command line: config handling and the crictl-compatible client commands.

use std::process::{Command, Output};

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
