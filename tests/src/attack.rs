//! What the security tests attack with: small C programs compiled by the test itself with
//! Debian's gcc, images made of busybox plus those programs (and, where a program needs
//! them, the host's shared libraries), and running a command as an unprivileged host user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

use crate::Node;
use crate::images::{Compression, Entry, Image, Tar, busybox_tar, layer, write_layout};

/// Compiles C source with gcc into `dir/name` (`args` e.g. `-static` or `-shared -fPIC`).
pub fn cc(dir: &Path, name: &str, source: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source)?;
    let out = dir.join(name);
    let done = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .args(args)
        .output()
        .context("gcc (scripts/install-deps installs it)")?;
    if !done.status.success() {
        bail!("gcc {name}: {}", String::from_utf8_lossy(&done.stderr));
    }
    Ok(out)
}

/// The shared libraries a host binary loads (ldd), with their paths.
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// busybox plus `extra` files (path in the image, content, mode) as one more layer,
/// imported into the node under `name`.
pub fn import_image(
    node: &Node,
    name: &str,
    extra: &[(String, Vec<u8>, u32)],
) -> anyhow::Result<()> {
    let mut t = Tar::default();
    let mut dirs: Vec<String> = Vec::new();
    for (path, _, _) in extra {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(format!("{}/", p.display()));
            parent = p.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        t = t.dir(d);
    }
    for (path, data, mode) in extra {
        t = t.file(path, data, *mode);
    }
    import_tar(node, name, t)
}

/// Imports an image of busybox with a second layer `t` on top.
pub fn import_tar(node: &Node, name: &str, t: Tar) -> anyhow::Result<()> {
    let layers =
        vec![layer(busybox_tar().bytes(), Compression::Gzip), layer(t.bytes(), Compression::Gzip)];
    let image = Image::new(layers, "amd64", serde_json::json!({}));
    let layout = node.dir().join(format!("layout-{}", name.replace(['/', ':'], "-")));
    write_layout(&layout, &[(name, &Entry::Image(image))])?;
    let out = node.cli(&["image", "import", &layout.to_string_lossy()])?;
    if !out.status.success() {
        bail!("import {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs a shell script in the node as uid/gid 65534 with no supplementary groups.
pub fn as_nobody(node: &Node, script: &str) -> anyhow::Result<Output> {
    Ok(node
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script])
        .output()?)
}

/// sha256 of a file, as hex (coreutils' sha256sum: the test binaries are not optimised,
/// and the podbay binaries are hundreds of MB in a debug build).
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or_default().to_owned())
}
