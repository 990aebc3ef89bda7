//! Images end to end: a real registry (Debian's docker-registry) in each node, images
//! built from busybox-static and pushed with skopeo, pulled over the CRI.

use std::path::Path;
use std::time::Duration;

use podbay_tests::images::{
    Entry, Registry, fixtures, hostile, tar_dir, write_docker_save, write_layout,
};
use podbay_tests::{ImageClient, Node, cri, require_root, wait_until};

async fn pull(
    c: &mut ImageClient,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    let spec = cri::ImageSpec { image: image.into(), ..Default::default() };
    let req = cri::PullImageRequest { image: Some(spec), auth, sandbox_config: None };
    Ok(c.pull_image(req).await?.into_inner().image_ref)
}

async fn list(c: &mut ImageClient) -> Vec<cri::Image> {
    c.list_images(cri::ListImagesRequest { filter: None }).await.unwrap().into_inner().images
}

async fn status(c: &mut ImageClient, image: &str) -> cri::ImageStatusResponse {
    let spec = cri::ImageSpec { image: image.into(), ..Default::default() };
    c.image_status(cri::ImageStatusRequest { image: Some(spec), verbose: true })
        .await
        .unwrap()
        .into_inner()
}

async fn remove(c: &mut ImageClient, image: &str) {
    let spec = cri::ImageSpec { image: image.into(), ..Default::default() };
    c.remove_image(cri::RemoveImageRequest { image: Some(spec) }).await.unwrap();
}

async fn fs_bytes(c: &mut ImageClient) -> u64 {
    let r = c.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
    r.image_filesystems[0].used_bytes.as_ref().unwrap().value
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// (blobs, unpacked layers, temp entries) in the node's image store.
fn store(node: &Node) -> (usize, usize, usize) {
    let images = node.root().join("images");
    (count(&images.join("blobs/sha256")), count(&images.join("layers")), count(&images.join("tmp")))
}

fn cli_ok(node: &Node, args: &[&str]) -> String {
    let out = node.cli(args).unwrap();
    assert!(out.status.success(), "podbay {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn pull_by_tag_and_digest_then_status_and_remove() {
    require_root!();
    let node = Node::start().unwrap();
    let reg = Registry::start(&node, 5000, None).unwrap();
    let fx = fixtures();
    reg.push(&node, &Entry::Image(fx.configured.clone()), "tools/bb:1.0").unwrap();
    let mut c = node.image_client().await.unwrap();
    let before = fs_bytes(&mut c).await;

    // A loopback registry without TLS: plain HTTP with no configuration. Two pulls at once
    // share one flight.
    let name = format!("{}/tools/bb:1.0", reg.host());
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (a, b) = tokio::join!(pull(&mut c1, &name, None), pull(&mut c2, &name, None));
    assert_eq!(a.unwrap(), fx.configured.id());
    assert_eq!(b.unwrap(), fx.configured.id());
    assert_eq!(node.log().matches("image pulled").count(), 1, "{}", node.log());
    assert!(fs_bytes(&mut c).await > before + 500_000);

    let images = list(&mut c).await;
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(img.repo_tags, vec![name.clone()]);
    let by_digest = format!("{}/tools/bb@{}", reg.host(), fx.configured.manifest.digest);
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);
    assert_eq!(img.uid.as_ref().map(|u| u.value), Some(1000));

    let st = status(&mut c, &fx.configured.id()[7..19]).await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(info["manifestDigest"], fx.configured.manifest.digest.as_str());
    assert_eq!(info["config"]["config"]["StopSignal"], "SIGUSR1");
    assert_eq!(info["layers"][0]["diffID"], fx.configured.layers[0].1.as_str());

    // Pull by digest: same image, nothing downloaded again.
    assert_eq!(pull(&mut c, &by_digest, None).await.unwrap(), fx.configured.id());
    // Remove by tag: no tag left, so the image goes, and its content with it.
    remove(&mut c, &name).await;
    assert!(list(&mut c).await.is_empty());
    assert!(status(&mut c, &by_digest).await.image.is_none());
    assert_eq!(store(&node), (0, 0, 0));
    // Removing an unknown image is fine.
    remove(&mut c, "nothing/here:1").await;
    // A missing tag names the registry and the reason.
    let err = pull(&mut c, &format!("{}/tools/bb:2.0", reg.host()), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("manifest unknown") && err.message().contains(&reg.host()),
        "{err:?}"
    );
    // Nothing listens there.
    let err = pull(&mut c, "127.0.0.1:5999/x:1", None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("unreachable"), "{err:?}");
}

#[tokio::test]
async fn index_resolves_to_the_node_platform() {
    require_root!();
    let node = Node::start().unwrap();
    let reg = Registry::start(&node, 5000, None).unwrap();
    let fx = fixtures();
    reg.push(&node, &fx.multiarch, "multi:1").unwrap();
    reg.push(&node, &fx.arm64_only, "armonly:1").unwrap();
    let mut c = node.image_client().await.unwrap();
    let id = pull(&mut c, &format!("{}/multi:1", reg.host()), None).await.unwrap();
    assert_eq!(id, fx.busybox.id());
    let img = &list(&mut c).await[0];
    // The repo digest is the index's, so pulling by it gives the same image.
    assert_eq!(img.repo_digests[0], format!("{}/multi@{}", reg.host(), fx.multiarch.top().digest));
    let err = pull(&mut c, &format!("{}/armonly:1", reg.host()), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("linux/amd64") && err.message().contains("linux/arm64/v8"),
        "{err:?}"
    );
}

#[tokio::test]
async fn credentials_come_from_the_request() {
    require_root!();
    let node = Node::start().unwrap();
    let reg = Registry::start(&node, 5001, Some(("alice", "s3cret"))).unwrap();
    let fx = fixtures();
    reg.push(&node, &Entry::Image(fx.busybox.clone()), "private/bb:1").unwrap();
    let mut c = node.image_client().await.unwrap();
    let name = format!("{}/private/bb:1", reg.host());
    let err = pull(&mut c, &name, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("401") && err.message().contains(&reg.host()), "{err:?}");
    let wrong =
        cri::AuthConfig { username: "alice".into(), password: "nope".into(), ..Default::default() };
    assert_eq!(
        pull(&mut c, &name, Some(wrong)).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let basic = cri::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(pull(&mut c, &name, Some(basic)).await.unwrap(), fx.busybox.id());
    remove(&mut c, &name).await;
    // `auth` is base64 of user:password, as in a docker config.
    let encoded = cri::AuthConfig { auth: "YWxpY2U6czNjcmV0".into(), ..Default::default() };
    assert_eq!(pull(&mut c, &name, Some(encoded)).await.unwrap(), fx.busybox.id());
    // The CLI's --creds.
    remove(&mut c, &name).await;
    cli_ok(&node, &["pull", "--creds", "alice:s3cret", &name]);
    assert_eq!(list(&mut c).await.len(), 1);
}

#[tokio::test]
async fn a_mirror_serves_another_registry() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config(
        "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n\
         [registries.\"nowhere.invalid\"]\nmirrors = [\"http://127.0.0.1:5999\", \"http://127.0.0.1:5000\"]\n",
    );
    node.start_daemon().unwrap();
    let reg = Registry::start(&node, 5000, None).unwrap();
    let fx = fixtures();
    reg.push(&node, &Entry::Image(fx.busybox.clone()), "pause:3.9").unwrap();
    let mut c = node.image_client().await.unwrap();
    // The node has no route to registry.k8s.io: only the mirror can answer.
    assert_eq!(pull(&mut c, "registry.k8s.io/pause:3.9", None).await.unwrap(), fx.busybox.id());
    assert_eq!(list(&mut c).await[0].repo_tags, vec!["registry.k8s.io/pause:3.9"]);
    // Mirrors in order: the first is down, the second has it.
    reg.push(&node, &Entry::Image(fx.busybox_zstd.clone()), "app:1").unwrap();
    assert_eq!(pull(&mut c, "nowhere.invalid/app:1", None).await.unwrap(), fx.busybox_zstd.id());
}

#[tokio::test]
async fn zstd_shared_layers_and_whiteouts_in_the_rootfs() {
    require_root!();
    let node = Node::start().unwrap();
    let reg = Registry::start(&node, 5000, None).unwrap();
    let fx = fixtures();
    reg.push(&node, &Entry::Image(fx.busybox.clone()), "bb:gz").unwrap();
    reg.push(&node, &Entry::Image(fx.busybox_zstd.clone()), "bb:zstd").unwrap();
    reg.push(&node, &Entry::Image(fx.layered.clone()), "layered:1").unwrap();
    let mut c = node.image_client().await.unwrap();
    let h = reg.host();
    pull(&mut c, &format!("{h}/bb:gz"), None).await.unwrap();
    assert_eq!(store(&node).1, 1);
    // zstd: same diff id, so the same unpacked layer.
    assert_eq!(pull(&mut c, &format!("{h}/bb:zstd"), None).await.unwrap(), fx.busybox_zstd.id());
    assert_eq!(store(&node).1, 1);
    // The three-layer image shares its base layer: two more.
    pull(&mut c, &format!("{h}/layered:1"), None).await.unwrap();
    assert_eq!(store(&node).1, 3);

    let mnt = cli_ok(&node, &["image", "mount", &format!("{h}/layered:1"), "c1"]).trim().to_owned();
    let look = node
        .sh(&format!("cd {mnt} && ls data data/dir && cat data/b && bin/busybox echo ok"))
        .unwrap();
    assert_eq!(
        look, "data:\nb\ndir\n\ndata/dir:\nz\nb2\nok\n",
        "whiteouts and opaque dir not honoured"
    );
    // Writes land in the container's upper dir, not in a layer.
    node.sh(&format!("echo new > {mnt}/data/new && rm {mnt}/data/b")).unwrap();
    assert!(node.root().join("containers/c1/upper/data/new").exists());
    // Removing the image keeps the layers the mounted rootfs uses.
    remove(&mut c, &format!("{h}/layered:1")).await;
    assert_eq!(store(&node).1, 3);
    assert_eq!(node.sh(&format!("cat {mnt}/data/dir/z")).unwrap(), "z\n");
    cli_ok(&node, &["image", "unmount", "c1"]);
    cli_ok(&node, &["image", "unmount", "c1"]);
    assert_eq!(store(&node).1, 1);
    assert!(!node.root().join("containers/c1").exists());
    assert!(node.mounts().unwrap().iter().all(|m| !m.contains("overlay")), "{:?}", node.mounts());
}

#[tokio::test]
async fn hostile_images_are_refused_and_leave_nothing() {
    require_root!();
    let node = Node::start().unwrap();
    let reg = Registry::start(&node, 5000, None).unwrap();
    let mut c = node.image_client().await.unwrap();
    for (what, image) in hostile() {
        reg.push(&node, &Entry::Image(image), &format!("hostile:{what}")).unwrap();
        let err = pull(&mut c, &format!("{}/hostile:{what}", reg.host()), None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains("entry") && err.message().contains("hostile"),
            "{what}: {err:?}"
        );
        assert_eq!(store(&node).1, 0, "{what}: a layer was kept");
        assert_eq!(store(&node).2, 0, "{what}: temp files were left");
    }
    let found = node.sh("find / -xdev -name 'evil-*' 2>/dev/null; true").unwrap();
    assert_eq!(found, "", "written outside the store");
    // A layer whose bytes do not match its digest (same size), corrupted in the registry.
    let fx = fixtures();
    reg.push(&node, &Entry::Image(fx.busybox.clone()), "corrupt:1").unwrap();
    let blob = reg.blob_file(&fx.busybox.layers[0].0.digest);
    let mut data = std::fs::read(&blob).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&blob, data).unwrap();
    let err = pull(&mut c, &format!("{}/corrupt:1", reg.host()), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&fx.busybox.layers[0].0.digest), "{err:?}");
    assert!(list(&mut c).await.is_empty());
    assert_eq!(store(&node), (0, 0, 0), "a failed pull left blobs, layers or temp files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pull_leaves_no_half_image() {
    require_root!();
    let mut node = Node::start().unwrap();
    let reg = Registry::start(&node, 5000, None).unwrap();
    // Large enough that the pull is still running when the daemon is killed.
    let mut big = vec![0u8; 40 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    use podbay_tests::images::{Compression, Image, Tar, layer};
    let tar = Tar::default().file("big", &big, 0o644).bytes();
    let image = Image::new(vec![layer(tar, Compression::None)], "amd64", serde_json::json!({}));
    reg.push(&node, &Entry::Image(image.clone()), "big:1").unwrap();
    let name = format!("{}/big:1", reg.host());
    let mut c = node.image_client().await.unwrap();
    let pulling = tokio::spawn({
        let mut c = c.clone();
        let name = name.clone();
        async move { pull(&mut c, &name, None).await }
    });
    wait_until(Duration::from_secs(20), || store(&node).2 > 0).unwrap();
    node.kill_daemon().unwrap();
    assert!(pulling.await.unwrap().is_err());
    node.start_daemon().unwrap();
    let mut c2 = node.image_client().await.unwrap();
    assert!(list(&mut c2).await.is_empty());
    assert_eq!(store(&node), (0, 0, 0), "partial files survived a restart");
    assert_eq!(pull(&mut c2, &name, None).await.unwrap(), image.id());
    let _ = &mut c;
}

#[tokio::test]
async fn import_of_a_layout_an_oci_archive_and_a_docker_save() {
    require_root!();
    let node = Node::start().unwrap();
    let fx = fixtures();
    let dir = node.dir().join("imports");
    let layout = dir.join("layout");
    write_layout(
        &layout,
        &[
            ("docker.io/library/busybox:1.36", &Entry::Image(fx.busybox.clone())),
            ("example.com/multi:2", &fx.multiarch),
        ],
    )
    .unwrap();
    let out = cli_ok(&node, &["image", "import", layout.to_str().unwrap()]);
    assert!(out.contains(fx.busybox.id()), "{out}");
    let mut c = node.image_client().await.unwrap();
    let st = status(&mut c, "busybox:1.36").await;
    assert_eq!(st.image.unwrap().id, fx.busybox.id());
    assert_eq!(status(&mut c, "example.com/multi:2").await.image.unwrap().id, fx.busybox.id());

    // An OCI archive: the layout as a tar; a bare tag gets the archive's name.
    let layout2 = dir.join("layout2");
    write_layout(&layout2, &[("v3", &Entry::Image(fx.layered.clone()))]).unwrap();
    let archive = dir.join("layered.tar");
    tar_dir(&layout2, &archive).unwrap();
    cli_ok(&node, &["image", "import", archive.to_str().unwrap()]);
    assert_eq!(status(&mut c, "localhost/layered:v3").await.image.unwrap().id, fx.layered.id());

    // docker save: uncompressed layers, RepoTags.
    let saved = dir.join("saved.tar");
    write_docker_save(&saved, &fx.configured, &["myapp:7"]).unwrap();
    cli_ok(&node, &["image", "import", saved.to_str().unwrap()]);
    let img = status(&mut c, "docker.io/library/myapp:7").await.image.unwrap();
    assert_eq!(img.id, fx.configured.id());
    assert_eq!(img.uid.unwrap().value, 1000);

    let listed = cli_ok(&node, &["images", "-q"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&node, &["images", "-o", "json"])).unwrap();
    assert_eq!(json["images"].as_array().unwrap().len(), 3);
    cli_ok(&node, &["inspecti", "myapp:7"]);
    cli_ok(&node, &["imagefsinfo"]);
    cli_ok(&node, &["rmi", "myapp:7", "busybox:1.36"]);
    assert_eq!(list(&mut c).await.len(), 2);

    // A blob whose content does not match its digest is refused; nothing is stored.
    use podbay_tests::images::{Compression, Image, Tar, layer};
    let unique = Image::new(
        vec![layer(Tar::default().file("x", &[7; 4096], 0o644).bytes(), Compression::Gzip)],
        "amd64",
        serde_json::json!({}),
    );
    let bad = dir.join("bad");
    write_layout(&bad, &[("bad:1", &Entry::Image(unique.clone()))]).unwrap();
    let layer = bad.join("blobs/sha256").join(&unique.layers[0].0.digest[7..]);
    let mut data = std::fs::read(&layer).unwrap();
    data[20] ^= 1;
    std::fs::write(&layer, data).unwrap();
    let out = node.cli(&["image", "import", bad.to_str().unwrap()]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&unique.layers[0].0.digest), "{out:?}");
    assert_eq!(list(&mut c).await.len(), 2);
    assert_eq!(store(&node).2, 0);
    // Not an image archive at all.
    let out = node.cli(&["image", "import", dir.to_str().unwrap()]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither an OCI layout"), "{out:?}");
}
