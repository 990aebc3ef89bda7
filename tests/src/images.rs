//! Test images, built deterministically from Debian's busybox-static into OCI layouts, and
//! a real registry (Debian's docker-registry) inside a node, filled with skopeo.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::Node;

pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A blob ready for a layout: bytes, digest, media type.
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl Blob {
    pub fn new(data: Vec<u8>, media_type: &str) -> Self {
        Self { digest: digest(&data), data, media_type: media_type.into() }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

pub fn digest(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in h.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A layer tar under construction; entries are written in the order given.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Default for Tar {
    fn default() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

impl Tar {
    pub fn dir(mut self, path: &str) -> Self {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// A directory with `mode`, owned by `uid`:`gid`.
    pub fn owned_dir(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, 0, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A regular file owned by `uid`:`gid`.
    pub fn owned_file(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A character device node `major:minor` with `mode`.
    pub fn char_device(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Char, 0, mode);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// An entry with a name or link target tar::Builder would refuse (`..`, absolute).
    pub fn raw(
        mut self,
        kind: tar::EntryType,
        path: &str,
        link: Option<&str>,
        data: &[u8],
    ) -> Self {
        let mut h = header(kind, data.len() as u64, 0o644);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The busybox layer: /bin/busybox, its applets as symlinks, and a minimal /etc.
pub fn busybox_tar() -> Tar {
    let bin = std::fs::read(BUSYBOX).expect("busybox-static is installed (scripts/install-deps)");
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    let mut applets: Vec<String> =
        String::from_utf8_lossy(&list.stdout).lines().map(str::to_owned).collect();
    applets.sort();
    applets.dedup();
    let mut t = Tar::default();
    for d in ["bin/", "sbin/", "usr/", "usr/bin/", "usr/sbin/", "etc/", "tmp/"] {
        t = t.dir(d);
    }
    t = t.file("bin/busybox", &bin, 0o755);
    for a in applets.iter().filter(|a| a.as_str() != "bin/busybox") {
        t = t.symlink(a, "/bin/busybox");
    }
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\n", 0o644)
}

pub fn layer(tar: Vec<u8>, c: Compression) -> (Blob, String) {
    let diff_id = digest(&tar);
    let blob = match c {
        Compression::None => Blob::new(tar, "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut e = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            Blob::new(e.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
        }
        Compression::Zstd => Blob::new(
            zstd::encode_all(&tar[..], 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    };
    (blob, diff_id)
}

/// An image: layers and config, ready to be written into a layout.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<(Blob, String)>,
    pub config: Blob,
    pub manifest: Blob,
    pub arch: String,
}

impl Image {
    pub fn new(layers: Vec<(Blob, String)>, arch: &str, extra: serde_json::Value) -> Image {
        let diff_ids: Vec<&str> = layers.iter().map(|(_, d)| d.as_str()).collect();
        let mut cfg = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, v) in m {
                cfg["config"][k] = v;
            }
        }
        let config = Blob::new(
            serde_json::to_vec(&cfg).unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": layers.iter().map(|(b, _)| b.descriptor()).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(
            serde_json::to_vec(&manifest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        Image { layers, config, manifest, arch: arch.into() }
    }

    /// The image id podbay and crictl show: the config digest.
    pub fn id(&self) -> &str {
        &self.config.digest
    }

    fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.layers.iter().map(|(b, _)| b).chain([&self.config, &self.manifest])
    }
}

/// What a layout entry points at: one image or an index of several platforms.
#[derive(Debug, Clone)]
pub enum Entry {
    Image(Image),
    Index(Vec<Image>, Blob),
}

impl Entry {
    pub fn index(images: Vec<Image>) -> Entry {
        let manifests: Vec<_> = images
            .iter()
            .map(|i| {
                let mut d = i.manifest.descriptor();
                d["platform"] = serde_json::json!({"os": "linux", "architecture": i.arch});
                if i.arch == "arm64" {
                    d["platform"]["variant"] = "v8".into();
                }
                d
            })
            .collect();
        let v = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        Entry::Index(
            images,
            Blob::new(serde_json::to_vec(&v).unwrap(), "application/vnd.oci.image.index.v1+json"),
        )
    }

    pub fn top(&self) -> &Blob {
        match self {
            Entry::Image(i) => &i.manifest,
            Entry::Index(_, b) => b,
        }
    }
}

/// Writes an OCI layout at `dir` with each entry named (`org.opencontainers.image.ref.name`).
pub fn write_layout(dir: &Path, entries: &[(&str, &Entry)]) -> anyhow::Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = Vec::new();
    for (name, entry) in entries {
        let mut all: Vec<&Blob> = vec![entry.top()];
        match entry {
            Entry::Image(i) => all.extend(i.blobs()),
            Entry::Index(imgs, _) => all.extend(imgs.iter().flat_map(|i| i.blobs())),
        }
        for b in all {
            std::fs::write(blobs.join(&b.digest[7..]), &b.data)?;
        }
        let mut d = entry.top().descriptor();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
        manifests.push(d);
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// A `docker save` tar of one image (uncompressed layers, RepoTags).
pub fn write_docker_save(path: &Path, image: &Image, tags: &[&str]) -> anyhow::Result<()> {
    let mut t = tar::Builder::new(std::fs::File::create(path)?);
    let mut add = |name: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        t.append_data(&mut h, name, data)
    };
    let config_name = format!("{}.json", &image.config.digest[7..]);
    add(&config_name, &image.config.data)?;
    let mut layers = Vec::new();
    for (i, (blob, _)) in image.layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        add(&name, &blob.data)?;
        layers.push(name);
    }
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": tags, "Layers": layers}]);
    add("manifest.json", &serde_json::to_vec(&manifest)?)?;
    t.into_inner()?.sync_all()?;
    Ok(())
}

/// A tar of a directory's files (an OCI archive when the directory is a layout).
pub fn tar_dir(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut t = tar::Builder::new(std::fs::File::create(out)?);
    t.append_dir_all(".", dir)?;
    t.into_inner()?.sync_all()?;
    Ok(())
}

/// The fixtures every image test uses.
pub struct Fixtures {
    pub busybox: Image,
    pub busybox_zstd: Image,
    /// Three layers: busybox, then one deleting and replacing files in /data, then one
    /// making /data/dir opaque.
    pub layered: Image,
    pub multiarch: Entry,
    pub arm64_only: Entry,
    pub configured: Image,
}

pub fn fixtures() -> Fixtures {
    let bb = busybox_tar().bytes();
    let bb_gz = layer(bb.clone(), Compression::Gzip);
    let busybox = Image::new(vec![bb_gz.clone()], "amd64", serde_json::json!({}));
    let busybox_zstd =
        Image::new(vec![layer(bb.clone(), Compression::Zstd)], "amd64", serde_json::json!({}));
    let l2 = Tar::default()
        .dir("data/")
        .file("data/a", b"a1\n", 0o644)
        .file("data/b", b"b1\n", 0o644)
        .dir("data/dir/")
        .file("data/dir/x", b"x\n", 0o644)
        .file("data/dir/y", b"y\n", 0o644)
        .bytes();
    let l3 = Tar::default()
        .file("data/.wh.a", b"", 0o644)
        .file("data/b", b"b2\n", 0o644)
        .file("data/dir/.wh..wh..opq", b"", 0o644)
        .file("data/dir/z", b"z\n", 0o644)
        .bytes();
    let layered = Image::new(
        vec![bb_gz.clone(), layer(l2, Compression::Gzip), layer(l3, Compression::Gzip)],
        "amd64",
        serde_json::json!({}),
    );
    let arm = Image::new(
        vec![layer(Tar::default().file("ARCH", b"arm64\n", 0o644).bytes(), Compression::Gzip)],
        "arm64",
        serde_json::json!({}),
    );
    let multiarch = Entry::index(vec![arm.clone(), busybox.clone()]);
    let arm64_only = Entry::index(vec![arm]);
    let configured = Image::new(
        vec![bb_gz],
        "amd64",
        serde_json::json!({
            "User": "1000:1000",
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
            "WorkingDir": "/tmp",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $GREETING"],
            "StopSignal": "SIGUSR1",
        }),
    );
    Fixtures { busybox, busybox_zstd, layered, multiarch, arm64_only, configured }
}

/// Hostile images, each with one bad layer on top of nothing.
pub fn hostile() -> Vec<(&'static str, Image)> {
    let one = |t: Tar| {
        Image::new(vec![layer(t.bytes(), Compression::Gzip)], "amd64", serde_json::json!({}))
    };
    vec![
        (
            "dotdot",
            one(Tar::default().raw(tar::EntryType::Regular, "../../../../evil-dotdot", None, b"x")),
        ),
        (
            "symlink",
            one(Tar::default().symlink("etc", "/etc").raw(
                tar::EntryType::Regular,
                "etc/evil-symlink",
                None,
                b"x",
            )),
        ),
        (
            "hardlink",
            one(Tar::default().raw(tar::EntryType::Link, "passwd", Some("/etc/passwd"), b"")),
        ),
    ]
}

/// A registry (Debian's docker-registry) inside a node, on a loopback port of the node's
/// own network namespace. It dies with the node.
pub struct Registry {
    pub port: u16,
    pub dir: PathBuf,
    pub auth: Option<(String, String)>,
}

impl Registry {
    pub fn start(node: &Node, port: u16, auth: Option<(&str, &str)>) -> anyhow::Result<Registry> {
        let dir = node.dir().join(format!("registry-{port}"));
        std::fs::create_dir_all(dir.join("data"))?;
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((u, p)) = auth {
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .context("htpasswd (apache2-utils)")?;
            std::fs::write(dir.join("htpasswd"), &out.stdout)?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: podbay-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), yaml)?;
        node.command("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log"))?)
            .spawn()
            .context("start docker-registry")?;
        node.sh(&format!(
            "for i in $(seq 200); do bash -c 'echo > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && exit 0; sleep 0.05; done; exit 1"
        ))
        .context("docker-registry did not start")?;
        Ok(Registry { port, dir, auth: auth.map(|(u, p)| (u.into(), p.into())) })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `entry` as `<host>/<repo>` (repo with tag) through an OCI layout and skopeo.
    pub fn push(&self, node: &Node, entry: &Entry, repo: &str) -> anyhow::Result<()> {
        let layout = tempfile::Builder::new().prefix("layout").tempdir_in(node.dir())?;
        write_layout(layout.path(), &[("push", entry)])?;
        let mut cmd = node.command("skopeo");
        cmd.args(["copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.auth {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:push", layout.path().display()))
            .arg(format!("docker://{}/{repo}", self.host()))
            .output()?;
        if !out.status.success() {
            bail!("skopeo copy to {repo}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Where the registry keeps a blob (for corrupting it on purpose).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir.join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}
