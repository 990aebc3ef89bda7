//! Clients of podbay's streaming server that podbay does not own, on Docker's SPDY/3.1
//! library (Debian's golang-github-docker-spdystream-dev), built with Debian's Go in
//! GOPATH mode: `spdyexec`, a Kubernetes remotecommand client, and `spdyforward`, a
//! port-forward client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The `spdyexec` binary, built once per test process (into the workspace's target dir;
/// concurrent builders each write their own file and rename it into place).
pub fn spdyexec() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build("spdyexec").map_err(|e| format!("{e:#}")));
    built.clone().map_err(anyhow::Error::msg)
}

/// The `spdyforward` binary, built as `spdyexec` is.
pub fn spdyforward() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build("spdyforward").map_err(|e| format!("{e:#}")));
    built.clone().map_err(anyhow::Error::msg)
}

fn build(name: &str) -> anyhow::Result<PathBuf> {
    // A GOPATH of its own (the two clients and the package they share) before Debian's.
    let gopath = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
    let src = gopath.join("src").join(name);
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(name);
    let tmp = out_dir.join(format!("{name}.{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
        .env("GO111MODULE", "off")
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOFLAGS", "")
        .status()
        .context("run go (golang-go)")?;
    if !status.success() {
        bail!(
            "go build of {} failed (golang-github-docker-spdystream-dev installed?)",
            src.display()
        );
    }
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}
