//! Attacks on the node, each reproduced as an adversary would try it (an image, a
//! container's processes, CRI request fields, an unprivileged host user), each asserting
//! that the attack fails and that the legitimate use still works.

use std::time::Duration;

use podbay_tests::attack::{as_nobody, cc, import_image, sha256_file, shared_libraries};
use podbay_tests::ctr::{create, ctr, logged_pod, run, security, sh, status};
use podbay_tests::images::{Compression, Entry, Image, Tar, busybox_tar, layer, write_layout};
use podbay_tests::{
    Node, cri, pod_info, remove_pod, require_root, run_pod, wait_until, with_pid_mode,
};

/// Loaded into podbay's supervisor binary when a container runs `/proc/self/exe`: keeps a
/// handle on the binary, hands it to `/attacker` in a session of its own, and leaves the
/// binary (`sleep`), so that once podbay's own processes stop running it nothing is left
/// to keep it busy.
const PRELOAD: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void attack(void) {
    int fd = open("/proc/self/exe", O_RDONLY);
    if (fd < 0) return;
    if (fork() == 0) {
        setsid();
        char arg[16];
        snprintf(arg, sizeof arg, "%d", fd);
        execl("/attacker", "attacker", arg, (char *)0);
        _exit(127);
    }
    execl("/bin/sleep", "sleep", "3600", (char *)0);
}
"#;

/// Tries to open the binary behind the handle for writing until something other than
/// "text file busy" answers; reports each new answer in /out/result.
const ATTACKER: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void report(const char *what) {
    int o = open("/out/result", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (o >= 0) { dprintf(o, "%s\n", what); close(o); }
}
int main(int argc, char **argv) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", argc > 1 ? argv[1] : "3");
    int last = -1;
    for (int i = 0; i < 1200; i++) {
        int w = open(path, O_WRONLY | O_APPEND);
        if (w >= 0) {
            int n = write(w, "PWNED\n", 6);
            report(n == 6 ? "written" : strerrorname_np(errno));
            return 0;
        }
        if (errno != last) { report(strerrorname_np(errno)); last = errno; }
        if (errno != ETXTBSY) return 0;
        usleep(100000);
    }
    report("gave up");
    return 0;
}
"#;

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_binary_cannot_be_overwritten_from_a_container() {
    require_root!();
    // The node runs copies of its own: ETXTBSY lasts while anything runs the file, and the
    // other tests' daemons run the shared binaries all along.
    let mut node = Node::empty().unwrap();
    let bin = node.use_private_binaries().unwrap();
    node.start_daemon().unwrap();
    let work = node.dir().join("attack");
    std::fs::create_dir_all(&work).unwrap();
    let supervisor = bin.join("podbay-supervisor");
    let preload = cc(&work, "attack.so", PRELOAD, &["-shared", "-fPIC"]).unwrap();
    let attacker = cc(&work, "attacker", ATTACKER, &["-static"]).unwrap();
    // The image carries what the supervisor binary needs to run in it (its libraries)
    // and the preload that turns it against itself.
    let mut files = vec![
        ("attack.so".to_owned(), std::fs::read(&preload).unwrap(), 0o755),
        ("attacker".to_owned(), std::fs::read(&attacker).unwrap(), 0o755),
        ("etc/ld.so.preload".to_owned(), b"/attack.so\n".to_vec(), 0o644),
    ];
    for lib in shared_libraries(&supervisor).unwrap() {
        let path = lib.to_string_lossy().trim_start_matches('/').to_owned();
        files.push((path, std::fs::read(&lib).unwrap(), 0o755));
    }
    import_image(&node, "localhost/attack:1", &files).unwrap();
    let before = [sha256_file(&supervisor).unwrap(), sha256_file(&bin.join("podbay")).unwrap()];

    let mut c = node.client().await.unwrap();
    let pc = with_pid_mode(logged_pod(&node, "attack"), cri::NamespaceMode::Node);
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let out = node.dir().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut config = ctr("x", &["/proc/self/exe"]);
    config.image =
        Some(cri::ImageSpec { image: "localhost/attack:1".into(), ..Default::default() });
    config.mounts.push(cri::Mount {
        container_path: "/out".into(),
        host_path: out.to_string_lossy().into(),
        ..Default::default()
    });
    security(&mut config).namespace_options =
        Some(cri::NamespaceOption { pid: cri::NamespaceMode::Node as i32, ..Default::default() });
    let id = run(&mut c, &pod, &pc, config).await;
    let result = out.join("result");
    wait_until(Duration::from_secs(20), || read(&result).contains("ETXTBSY"))
        .unwrap_or_else(|_| panic!("the attack did not start: {:?}", read(&result)));

    // Nothing of podbay runs the binary any more; the container's attacker does not die
    // with its init (PID mode NODE).
    let supervisor_pid = pod_info(&mut c, &pod).await.unwrap()["pid"].as_u64().unwrap();
    drop(c);
    node.kill_daemon().unwrap();
    node.sh(&format!("kill -9 {supervisor_pid}")).unwrap();
    wait_until(Duration::from_secs(20), || read(&result).lines().count() > 1)
        .unwrap_or_else(|_| panic!("the attacker saw no change: {:?}", read(&result)));
    let seen = read(&result);
    assert!(!seen.contains("written"), "the binary was written: {seen}");
    assert!(seen.contains("EROFS") || seen.contains("EPERM"), "{seen}");
    let after = [sha256_file(&supervisor).unwrap(), sha256_file(&bin.join("podbay")).unwrap()];
    assert_eq!(before, after, "an installed binary changed");

    // Back up, podbay kills what is left of the container and says why.
    node.start_daemon().unwrap();
    let mut c = node.client().await.unwrap();
    wait_until(Duration::from_secs(10), || node.sh("pgrep -x attacker").is_err()).unwrap();
    let (s, _) = status(&mut c, &id).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert!(s.message.contains("supervisor"), "{}", s.message);
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_die_with_their_supervisor_and_say_so() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    for (mode, name) in [
        (cri::NamespaceMode::Container, "own"),
        (cri::NamespaceMode::Pod, "pod"),
        (cri::NamespaceMode::Node, "node"),
    ] {
        let pc = with_pid_mode(logged_pod(&node, name), mode);
        let pod = run_pod(&mut c, pc.clone()).await.unwrap();
        let mut config = ctr("c", &["sh", "-c", "sleep 3600 & sleep 3600"]);
        security(&mut config).namespace_options =
            Some(cri::NamespaceOption { pid: mode as i32, ..Default::default() });
        let id = run(&mut c, &pod, &pc, config).await;
        let cgroup = format!("/sys/fs/cgroup/pids/podbay/{pod}/{id}/cgroup.procs");
        wait_until(Duration::from_secs(5), || {
            read(std::path::Path::new(&cgroup)).lines().count() >= 2
        })
        .unwrap();
        let supervisor = pod_info(&mut c, &pod).await.unwrap()["pid"].as_u64().unwrap();
        node.sh(&format!("kill -9 {supervisor}")).unwrap();
        // Without a daemon restart: exited, with the reason, and nothing left running.
        let mut exited = None;
        for _ in 0..200 {
            let (s, _) = status(&mut c, &id).await;
            if s.state == cri::ContainerState::ContainerExited as i32 {
                exited = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let s = exited.unwrap_or_else(|| panic!("{name}: the container still runs"));
        assert!(s.message.contains("supervisor"), "{name}: {}", s.message);
        assert!(read(std::path::Path::new(&cgroup)).trim().is_empty(), "{name}: processes left");
        remove_pod(&mut c, &pod).await.unwrap();
    }
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn layer_and_container_content_is_root_only() {
    require_root!();
    let node = Node::start().unwrap();
    // The node's temp dirs stand for /var/lib and /run: open to everyone, as on a host.
    for dir in [node.dir().to_path_buf(), node.run_dir()] {
        node.sh(&format!("chmod 0755 {}", dir.display())).unwrap();
    }
    let work = node.dir().join("bin");
    std::fs::create_dir_all(&work).unwrap();
    let euid = cc(
        &work,
        "euid",
        "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"%d\\n\",geteuid());return 0;}\n",
        &["-static"],
    )
    .unwrap();
    // A setuid-root program and a world-writable kmsg device, shipped in a layer.
    let layer2 = Tar::default()
        .dir("usr/local/")
        .dir("usr/local/bin/")
        .file("usr/local/bin/euid", &std::fs::read(&euid).unwrap(), 0o4755)
        .char_device("kmsg", 1, 11, 0o666)
        .bytes();
    let image = Image::new(
        vec![layer(busybox_tar().bytes(), Compression::Gzip), layer(layer2, Compression::Gzip)],
        "amd64",
        serde_json::json!({}),
    );
    let layout = node.dir().join("layout");
    write_layout(&layout, &[("localhost/suid:1", &Entry::Image(image))]).unwrap();
    assert!(node.cli(&["image", "import", &layout.to_string_lossy()]).unwrap().status.success());

    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "suid");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    // A root container writes a setuid-root copy of busybox into its layer.
    let mut config =
        ctr("app", &["sh", "-c", "cp /bin/busybox /tmp/bb && chmod 4755 /tmp/bb && sleep 3600"]);
    config.image = Some(cri::ImageSpec { image: "localhost/suid:1".into(), ..Default::default() });
    let id = run(&mut c, &pod, &pc, config.clone()).await;
    // Inside a container a setuid binary works (images need them).
    config.metadata.as_mut().unwrap().name = "user".into();
    config.command = vec!["sleep".into(), "3600".into()];
    security(&mut config).run_as_user = Some(cri::Int64Value { value: 1000 });
    let user = run(&mut c, &pod, &pc, config).await;
    assert_eq!(sh(&mut c, &user, "/usr/local/bin/euid").await, (0, "0\n".into()));
    wait_until(Duration::from_secs(5), || {
        node.sh(&format!("test -e {}/root/containers/{id}/upper/tmp/bb", node.dir().display()))
            .is_ok()
    })
    .unwrap();

    // Every path below the root and run dirs that leads to image or container content.
    // `containers/` and `pods/` may be passed through (0711: a pod with its own user
    // namespace mounts from inside them), so each container's and pod's own dir is the
    // barrier: everything below it.
    let listing = node
        .sh(&format!(
            "find {root}/images -mindepth 1 2>/dev/null; find {root}/containers {run}/pods -mindepth 2 2>/dev/null",
            root = node.root().display(),
            run = node.run_dir().display()
        ))
        .unwrap();
    let paths: Vec<&str> = listing.lines().collect();
    assert!(paths.iter().any(|p| p.ends_with("/usr/local/bin/euid")), "the walk missed the layer");
    assert!(paths.iter().any(|p| p.ends_with("/upper/tmp/bb")), "the walk missed the container");
    let list = node.dir().join("paths");
    std::fs::write(&list, listing.as_bytes()).unwrap();
    node.sh(&format!("chmod 0644 {}", list.display())).unwrap();
    let out = as_nobody(
        &node,
        &format!(
            "while read -r p; do if ls -d \"$p\" >/dev/null 2>&1; then echo \"$p\"; fi; done < {}",
            list.display()
        ),
    )
    .unwrap();
    let reachable = String::from_utf8_lossy(&out.stdout);
    assert!(reachable.trim().is_empty(), "a host user reaches: {reachable}");
    // And directly: the setuid copies and the device are out of reach.
    let direct = as_nobody(
        &node,
        &format!(
            "{root}/containers/{id}/upper/tmp/bb id -u; echo x > $(ls -d {root}/images/layers/*/kmsg | head -1)",
            root = node.root().display()
        ),
    )
    .unwrap();
    assert!(!direct.status.success());
    assert!(!String::from_utf8_lossy(&direct.stdout).contains('0'));

    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_containers_get_devices_with_the_hosts_modes() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "priv");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let mut config = ctr("p", &["sleep", "3600"]);
    security(&mut config).privileged = true;
    security(&mut config).run_as_user = Some(cri::Int64Value { value: 1000 });
    let id = run(&mut c, &pod, &pc, config).await;
    let host = node.sh("stat -c '%a %u %g' /dev/kmsg").unwrap();
    let (code, inside) = sh(&mut c, &id, "stat -c '%a %u %g' /dev/kmsg").await;
    assert_eq!((code, inside), (0, host), "the device is not as on the host");
    // What the host's modes forbid uid 1000, it cannot do inside either.
    let (code, out) = sh(&mut c, &id, "echo podbay-test > /dev/kmsg").await;
    assert_ne!(code, 0, "uid 1000 wrote /dev/kmsg: {out}");
    // The privileged container still sees the host's devices.
    assert_eq!(sh(&mut c, &id, "test -b /dev/loop0 && echo ok").await, (0, "ok\n".into()));
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_follow_symlinks() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "logs");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let logs = std::path::PathBuf::from(&pc.log_directory);
    std::fs::create_dir_all(&logs).unwrap();
    let victim = node.dir().join("victim-rc");
    std::fs::write(&victim, "untouched\n").unwrap();
    let mounts_before = node.mounts().unwrap();

    // A symlink at the log path, and one as a directory on the way to it.
    std::os::unix::fs::symlink(&victim, logs.join("evil.log")).unwrap();
    std::os::unix::fs::symlink(node.dir(), logs.join("sub")).unwrap();
    for (name, log_path) in [("evil", "evil.log"), ("sub", "sub/x.log")] {
        let mut config = ctr(name, &["sh", "-c", "echo owned; sleep 3600"]);
        config.log_path = log_path.into();
        let e = create(&mut c, &pod, &pc, config).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("log_path"), "{}", e.message());
    }
    assert_eq!(read(&victim), "untouched\n");
    assert!(!node.dir().join("x.log").exists(), "a file was created through the symlink");
    assert_eq!(node.mounts().unwrap(), mounts_before, "a refused create left a mount");
    let ls = c.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner();
    assert!(ls.containers.is_empty());

    // A normal log is written, root-readable only by its group.
    let id = run(&mut c, &pod, &pc, ctr("ok", &["sh", "-c", "echo hello; sleep 3600"])).await;
    let log = logs.join("ok.log");
    wait_until(Duration::from_secs(5), || read(&log).contains("hello")).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
    // Rotated to a symlink, the log is not reopened through it.
    std::fs::rename(&log, logs.join("ok.log.1")).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let e = c
        .reopen_container_log(cri::ReopenContainerLogRequest { container_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(read(&victim), "untouched\n");
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

/// A layer of one file of `size` zero bytes (a few hundred KB once gzipped).
fn zeros_layer(size: usize) -> (podbay_tests::images::Blob, String) {
    layer(Tar::default().file("zeros", &vec![0u8; size], 0o644).bytes(), Compression::Gzip)
}

#[tokio::test(flavor = "multi_thread")]
async fn image_bombs_are_bounded_and_leave_nothing() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config(
        "[image]\nmax_layer_bytes = 16777216\nmax_image_bytes = 25165824\nmax_layer_entries = 1000\n",
    );
    node.start_daemon().unwrap();
    let registry = podbay_tests::images::Registry::start(&node, 5001, None).unwrap();
    let bb = layer(busybox_tar().bytes(), Compression::Gzip);
    let push = |name: &str, layers: Vec<(podbay_tests::images::Blob, String)>| {
        let image = Image::new(layers, "amd64", serde_json::json!({}));
        registry.push(&node, &Entry::Image(image), name).unwrap();
    };
    push("bomb:1", vec![bb.clone(), zeros_layer(64 << 20)]);
    push(
        "wide:1",
        vec![bb.clone(), zeros_layer(10 << 20), zeros_layer(10 << 20), zeros_layer(10 << 20)],
    );
    let mut many = Tar::default().dir("many/");
    for i in 0..1500 {
        many = many.file(&format!("many/{i}"), b"x", 0o644);
    }
    push("many:1", vec![bb.clone(), layer(many.bytes(), Compression::Gzip)]);
    push("fine:1", vec![bb.clone(), zeros_layer(4 << 20)]);

    let mut images = node.image_client().await.unwrap();
    let store = |node: &Node| {
        let count = |d: &str| std::fs::read_dir(node.root().join(d)).map_or(0, |e| e.count());
        (count("images/blobs/sha256"), count("images/layers"))
    };
    let empty = store(&node);
    for (name, words) in [
        ("bomb:1", "image.max_layer_bytes"),
        ("wide:1", "image.max_image_bytes"),
        ("many:1", "image.max_layer_entries"),
    ] {
        let image = format!("{}/{name}", registry.host());
        let spec = cri::ImageSpec { image: image.clone(), ..Default::default() };
        let req = cri::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
        let e = images.pull_image(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{name}: {e:?}");
        assert!(e.message().contains(words) && e.message().contains(name), "{}", e.message());
        assert_eq!(store(&node), empty, "{name}: the pull kept something");
    }
    // An image under every bound pulls.
    let spec =
        cri::ImageSpec { image: format!("{}/fine:1", registry.host()), ..Default::default() };
    let req = cri::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
    images.pull_image(req).await.unwrap();

    // The store's file system keeping a reserve: a pull that would eat it stops.
    node.stop_daemon().unwrap();
    node.set_config("[image]\nmin_free_bytes = 1125899906842624\n");
    node.start_daemon().unwrap();
    let mut images = node.image_client().await.unwrap();
    let spec =
        cri::ImageSpec { image: format!("{}/bomb:1", registry.host()), ..Default::default() };
    let req = cri::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
    let kept = store(&node);
    let e = images.pull_image(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("image.min_free_bytes"), "{}", e.message());
    assert_eq!(store(&node), kept, "the refused pull kept something");
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_may_not_replace_proc_sys_or_dev() {
    require_root!();
    let node = Node::start().unwrap();
    import_image(&node, "localhost/links:1", &[]).unwrap();
    // An image whose /mnt leads into /proc.
    let links = Tar::default().symlink("mnt", "/proc");
    let image = Image::new(
        vec![
            layer(busybox_tar().bytes(), Compression::Gzip),
            layer(links.bytes(), Compression::Gzip),
        ],
        "amd64",
        serde_json::json!({}),
    );
    let layout = node.dir().join("links-layout");
    write_layout(&layout, &[("localhost/procmnt:1", &Entry::Image(image))]).unwrap();
    assert!(node.cli(&["image", "import", &layout.to_string_lossy()]).unwrap().status.success());
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "mounts");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let host = node.dir().join("vol");
    std::fs::create_dir_all(&host).unwrap();
    let mounts_before = node.mounts().unwrap();
    for (image, dest) in [
        ("localhost/links:1", "/proc"),
        ("localhost/links:1", "/proc/sys/kernel"),
        ("localhost/links:1", "/x/../proc/1"),
        ("localhost/links:1", "/sys"),
        ("localhost/links:1", "/dev"),
        ("localhost/procmnt:1", "/mnt/sys"),
    ] {
        let mut config = ctr("m", &["sleep", "3600"]);
        config.image = Some(cri::ImageSpec { image: image.into(), ..Default::default() });
        config.mounts.push(cri::Mount {
            container_path: dest.into(),
            host_path: host.to_string_lossy().into(),
            ..Default::default()
        });
        let e = create(&mut c, &pod, &pc, config).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{dest}: {e:?}");
        assert!(e.message().contains("mounts[0].container_path"), "{dest}: {}", e.message());
    }
    assert_eq!(node.mounts().unwrap(), mounts_before);

    // Recursive read-only reaches submounts; plain read-only (as containerd) does not.
    let sub = host.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    node.sh(&format!("mount -t tmpfs tmpfs {}", sub.display())).unwrap();
    let vol = |rro: bool| cri::Mount {
        container_path: "/vol".into(),
        host_path: host.to_string_lossy().into(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    let mut config = ctr("rro", &["sleep", "3600"]);
    config.image = Some(cri::ImageSpec { image: "localhost/links:1".into(), ..Default::default() });
    config.mounts.push(vol(true));
    let rro = run(&mut c, &pod, &pc, config.clone()).await;
    let (code, out) = sh(&mut c, &rro, "touch /vol/sub/x").await;
    assert_ne!(code, 0, "a recursive read-only submount took a write: {out}");
    assert!(out.contains("Read-only"), "{out}");
    config.metadata.as_mut().unwrap().name = "ro".into();
    config.mounts = vec![vol(false)];
    let ro = run(&mut c, &pod, &pc, config.clone()).await;
    assert_ne!(sh(&mut c, &ro, "touch /vol/x").await.0, 0);
    assert_eq!(sh(&mut c, &ro, "touch /vol/sub/x && echo ok").await, (0, "ok\n".into()));
    // rro without readonly is refused.
    config.metadata.as_mut().unwrap().name = "bad".into();
    config.mounts = vec![cri::Mount { readonly: false, ..vol(true) }];
    let e = create(&mut c, &pod, &pc, config).await.unwrap_err();
    assert!(e.message().contains("recursive_read_only"), "{}", e.message());
    // kubelet reads the feature from Status.
    let s = c.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let features = s.runtime_handlers[0].features.unwrap();
    assert!(features.recursive_read_only_mounts);
    remove_pod(&mut c, &pod).await.unwrap();
    node.sh(&format!("umount {}", sub.display())).unwrap();
    node.assert_clean().unwrap();
}

/// The init's own mounts (podbay's, before libcontainer's init) resolve each destination
/// inside the rootfs: a file's destination reached through an image's symlink, even one
/// aimed out of the rootfs, is followed inside it, and the node's file it names is
/// untouched; one that leads nowhere yet is made where it leads, inside the rootfs (as
/// runc does). The mount point layer below every image fills in what an image lacks
/// without changing what it has.
#[tokio::test(flavor = "multi_thread")]
async fn mount_points_stay_in_the_rootfs_and_keep_the_images_attributes() {
    require_root!();
    let node = Node::start().unwrap();
    let victim = node.dir().join("victim");
    std::fs::write(&victim, "node's own\n").unwrap();
    // /etc is 0750 and uid 7's; /etc/hosts leads out of the rootfs to the node's file.
    // (The image has a file at the node's path, which the bind must land on.)
    let escape = format!("/../../../../../../..{}", victim.display());
    let mut t = Tar::default().owned_dir("etc/", 0o750, 7, 7).symlink("etc/hosts", &escape);
    let mut at = String::new();
    for part in victim.parent().unwrap().iter().skip(1) {
        at.push_str(&format!("{}/", part.to_string_lossy()));
        t = t.dir(&at);
    }
    t = t.file(&format!("{at}victim"), b"the image's\n", 0o644);
    podbay_tests::attack::import_tar(&node, "localhost/etclinks:1", t).unwrap();
    // /etc/resolv.conf leads where nothing is yet (as on images built for systemd):
    // made there, inside the rootfs, as runc makes it.
    let t = Tar::default().symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf");
    podbay_tests::attack::import_tar(&node, "localhost/dangling:1", t).unwrap();
    // An image of nothing but busybox: no /proc, /dev, /sys or /etc.
    let bin = std::fs::read(podbay_tests::images::BUSYBOX).unwrap();
    let mut bare = Tar::default().dir("bin/").file("bin/busybox", &bin, 0o755);
    for applet in ["sh", "cat", "stat", "sleep", "ls", "touch"] {
        bare = bare.symlink(&format!("bin/{applet}"), "/bin/busybox");
    }
    let image =
        Image::new(vec![layer(bare.bytes(), Compression::Gzip)], "amd64", serde_json::json!({}));
    let layout = node.dir().join("bare-layout");
    write_layout(&layout, &[("localhost/bare:1", &Entry::Image(image))]).unwrap();
    assert!(node.cli(&["image", "import", &layout.to_string_lossy()]).unwrap().status.success());

    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "points");
    let mounts_before = node.mounts().unwrap();
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let hostname = pc.hostname.clone();
    let mut config = ctr("links", &["sleep", "3600"]);
    config.image =
        Some(cri::ImageSpec { image: "localhost/etclinks:1".into(), ..Default::default() });
    let links = run(&mut c, &pod, &pc, config).await;
    let (code, out) =
        sh(&mut c, &links, "stat -c '%a %u' /etc; cat /etc/hostname /etc/hosts").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(&format!("750 7\n{hostname}\n")), "{out}");
    assert!(out.contains("localhost"), "the pod's hosts file is not behind the link: {out}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "node's own\n");
    let victim_name = victim.to_string_lossy().into_owned();
    assert!(
        !node.mounts().unwrap().iter().any(|m| m.contains(&victim_name)),
        "something was mounted on the node's file"
    );

    let mut config = ctr("dangling", &["sleep", "3600"]);
    config.image =
        Some(cri::ImageSpec { image: "localhost/dangling:1".into(), ..Default::default() });
    let dangling = run(&mut c, &pod, &pc, config).await;
    let (code, theirs) = sh(&mut c, &dangling, "cat /etc/resolv.conf").await;
    assert_eq!(code, 0, "{theirs}");
    let (_, ours) = sh(&mut c, &links, "cat /etc/resolv.conf").await;
    assert_eq!(theirs, ours, "the pod's resolv.conf is not behind the link");
    let (_, table) = sh(&mut c, &dangling, "cat /proc/self/mountinfo").await;
    assert!(table.contains(" /run/systemd/resolve/stub-resolv.conf "), "{table}");

    let mut config = ctr("bare", &["sleep", "3600"]);
    config.image = Some(cri::ImageSpec { image: "localhost/bare:1".into(), ..Default::default() });
    let bare = run(&mut c, &pod, &pc, config).await;
    let script = "stat -c '%n %a %u %F' /etc /proc /dev /sys; cat /etc/hostname; ls /etc; touch /etc/new && echo made";
    let (code, out) = sh(&mut c, &bare, script).await;
    assert_eq!(code, 0, "{out}");
    let want = format!(
        "/etc 755 0 directory\n/proc 555 0 directory\n/dev 755 0 directory\n/sys 555 0 directory\n{hostname}\nhostname\nhosts\nresolv.conf\nmade\n"
    );
    assert_eq!(out, want);
    // The layer itself is unchanged by what the container wrote.
    let layer = node.root().join("images/mountpoints/etc");
    let mut names: Vec<String> = std::fs::read_dir(&layer)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(e.metadata().unwrap().len(), 0, "{:?} was written", e.path());
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["hostname", "hosts", "resolv.conf"]);
    remove_pod(&mut c, &pod).await.unwrap();
    assert_eq!(node.mounts().unwrap(), mounts_before);
    node.assert_clean().unwrap();
}

/// A new container's devices allow-list (written by podbay as libcgroups writes it): the
/// spec's rules and libcgroups' defaults, nothing more; a node made for /dev/mem cannot
/// be opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_containers_devices_are_the_allowed_ones_only() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "devices");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, ctr("d", &["sleep", "3600"])).await;
    let (_, list) = sh(&mut c, &id, "cat /sys/fs/cgroup/devices/devices.list").await;
    let rules: Vec<&str> = list.lines().collect();
    for rule in
        ["c 1:3 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 136:* rwm", "c 10:200 rwm", "c *:* m", "b *:* m"]
    {
        assert!(rules.contains(&rule), "{rule} missing: {list}");
    }
    assert!(!rules.contains(&"a *:* rwm"), "everything allowed: {list}");
    let (code, out) = sh(&mut c, &id, "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem").await;
    assert_ne!(code, 0, "/dev/mem was read: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(sh(&mut c, &id, "echo x > /dev/null && echo ok").await, (0, "ok\n".into()));
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pods_pid_1_gives_a_container_with_ptrace_nothing_of_the_node() {
    require_root!();
    // In a pod that shares its PID namespace, the pod's PID 1 (podbay's pod init, a fork
    // of the supervisor) is visible to every container. One with CAP_SYS_PTRACE may open
    // its /proc entries and attach to it: the node's filesystem must not be behind them,
    // nor a process with the node's privileges.
    let node = Node::with_busybox().unwrap();
    std::fs::write(node.dir().join("node-secret"), "secret").unwrap();
    let mut c = node.client().await.unwrap();
    let pc = with_pid_mode(logged_pod(&node, "shared"), cri::NamespaceMode::Pod);
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let mut config = ctr("tracer", &["sleep", "3600"]);
    let sec = security(&mut config);
    sec.capabilities =
        Some(cri::Capability { add_capabilities: vec!["SYS_PTRACE".into()], ..Default::default() });
    sec.namespace_options =
        Some(cri::NamespaceOption { pid: cri::NamespaceMode::Pod as i32, ..Default::default() });
    let id = run(&mut c, &pod, &pc, config).await;
    let secret = node.dir().join("node-secret");
    let (code, out) = sh(&mut c, &id, "cat /proc/1/comm; ls -a /proc/1/root/ /proc/1/cwd/").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("pod-init\n"), "{out}");
    for name in ["bin", "etc", "proc", "tmp"] {
        assert!(!out.lines().any(|l| l == name), "the node's /{name} through /proc/1: {out}");
    }
    let (code, out) = sh(&mut c, &id, &format!("cat /proc/1/root{}", secret.display())).await;
    assert_ne!(code, 0, "{out}");
    let (_, out) =
        sh(&mut c, &id, "grep -E '^(Uid|CapEff|CapPrm)' /proc/1/status; ls /proc/1/fd").await;
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
    assert!(!out.contains("Uid:\t0\t"), "{out}");
    // Its only files are the standard three (or none).
    let fds: Vec<&str> = out.lines().filter(|l| l.parse::<u32>().is_ok()).collect();
    assert!(fds.iter().all(|fd| ["0", "1", "2"].contains(fd)), "{out}");
    // The pod works as before: PID 1 reaps, the container is in the pod's PID namespace.
    assert_eq!(sh(&mut c, &id, "sh -c 'sleep 0 &'; echo ok").await, (0, "ok\n".into()));
    remove_pod(&mut c, &pod).await.unwrap();
    node.assert_clean().unwrap();
}

/// Masked directories (`/proc/acpi`, `/sys/firmware`) and a cgroup v1 node's
/// `/sys/fs/cgroup` are read-only binds of node directories that every container without
/// CAP_SYS_ADMIN shares, instead of a tmpfs (a superblock) each: none of them can write
/// there; a request cannot name another directory for them; and a container with
/// CAP_SYS_ADMIN, which could make such a bind writable again, gets a tmpfs of its own,
/// so what it writes there no other container sees.
#[tokio::test(flavor = "multi_thread")]
async fn masked_directories_are_shared_read_only_and_nobody_writes_them() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let secret = node.dir().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("node-file"), "node").unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "masks");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();

    // An annotation naming a node directory as the masks' source is not podbay's own.
    let mut plain = ctr("plain", &["sleep", "3600"]);
    plain
        .annotations
        .insert("io.podbay.masked-dir-source".into(), secret.to_string_lossy().into_owned());
    let plain = run(&mut c, &pod, &pc, plain).await;
    let mut admin = ctr("admin", &["sleep", "3600"]);
    security(&mut admin).capabilities =
        Some(cri::Capability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() });
    let admin = run(&mut c, &pod, &pc, admin).await;

    let masked = "for d in /proc/acpi /sys/firmware; do [ -d $d ] || continue; \
                  [ -z \"$(ls -A $d)\" ] || exit 3; touch $d/x 2>&1 && exit 4; done; \
                  mkdir /sys/fs/cgroup/escape 2>&1 && exit 5; \
                  ls /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max \
                    2>/dev/null | grep -q . || exit 6; echo masked";
    let (code, out) = sh(&mut c, &plain, masked).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Read-only file system") && out.ends_with("masked\n"), "{out}");
    let (_, info) =
        sh(&mut c, &plain, "grep -E ' /(proc/acpi|sys/firmware) ' /proc/self/mountinfo").await;
    assert!(!info.contains("secret"), "a request named the masks' source: {info}");

    // The container with CAP_SYS_ADMIN makes its masks writable and writes there.
    let (code, out) = sh(
        &mut c,
        &admin,
        "for d in /proc/acpi /sys/firmware; do [ -d $d ] || continue; \
         mount -o remount,rw $d && touch $d/from-admin || exit 3; done; \
         mount -o remount,rw /sys/fs/cgroup 2>/dev/null; mkdir /sys/fs/cgroup/from-admin; echo done",
    )
    .await;
    assert_eq!((code, out.lines().last()), (0, Some("done")), "{out}");
    let (code, out) = sh(&mut c, &plain, masked).await;
    assert_eq!(code, 0, "the other container sees what one wrote: {out}");
    let third = run(&mut c, &pod, &pc, ctr("third", &["sleep", "3600"])).await;
    let (code, out) = sh(&mut c, &third, masked).await;
    assert_eq!(code, 0, "a later container sees what one wrote: {out}");
    let shared = [node.run_dir().join("empty"), node.run_dir().join("cgroup-v1")];
    for dir in &shared {
        if dir.exists() {
            let names: Vec<_> =
                std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name()).collect();
            assert!(!names.iter().any(|n| n == "from-admin"), "{}: {names:?}", dir.display());
        }
    }

    remove_pod(&mut c, &pod).await.unwrap();
    std::fs::remove_dir_all(&secret).unwrap();
    node.assert_clean().unwrap();
}
