//! `scripts/bench images`: cold pull + unpack of a generated ~100 MiB three-layer image
//! (gzip, and its zstd twin) from a Debian docker-registry on the node's loopback: wall
//! time, MB/s, unpack MB/s per core (from the daemon's per-layer spans) and the daemon's
//! peak RSS during the pull; then `skopeo copy` + `umoci unpack` of the same image as a
//! reference point.

use std::time::Instant;

use podbay_tests::images::{Compression, Entry, Image, Registry, Tar, layer};
use podbay_tests::*;

const LAYER_FILES: usize = 2200;
const FILE_SIZE: usize = 16 * 1024;

/// Text-like content (compresses about 3:1 with gzip, like binaries and libraries do).
fn layer_tar(seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "pod",
        "node",
        "bridge",
        "veth",
        "layer",
        "overlay",
        "kubelet",
        "sandbox",
        "image",
        "registry",
        "digest",
        "manifest",
        "cgroup",
        "namespace",
        "route",
        "vxlan",
    ];
    let mut x = seed | 1;
    let mut t = Tar::default();
    for d in 0..22 {
        t = t.dir(&format!("usr/lib/pkg{d}/"));
    }
    for i in 0..LAYER_FILES {
        let mut data = Vec::with_capacity(FILE_SIZE);
        while data.len() < FILE_SIZE {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(7) {
                data.extend_from_slice(&x.to_le_bytes());
            } else {
                data.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
                data.push(b' ');
            }
        }
        data.truncate(FILE_SIZE);
        t = t.file(&format!("usr/lib/pkg{}/f{i}.so", i % 22), &data, 0o644);
    }
    t.bytes()
}

fn status_kb(node: &Node, field: &str) -> u64 {
    let pid = node.daemon_pid().expect("daemon");
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Sum of the "layer unpacked" spans (ms) logged since `from` bytes into the log.
fn unpack_ms(log: &str) -> f64 {
    log.lines()
        .filter(|l| l.contains("layer unpacked"))
        .filter_map(|l| l.split("ms=").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the bench needs root (node namespaces)");
    let runs: usize = std::env::var("BENCH_PULLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let node = Node::start()?;
    let reg = Registry::start(&node, 5000, None)?;
    let tars: Vec<Vec<u8>> = (1..=3).map(|s| layer_tar(0x9e37_79b9 * s)).collect();
    let raw: usize = tars.iter().map(Vec::len).sum();
    let mut variants = Vec::new();
    for (tag, c) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let img = Image::new(
            tars.iter().map(|t| layer(t.clone(), c)).collect(),
            "amd64",
            serde_json::json!({}),
        );
        reg.push(&node, &Entry::Image(img.clone()), &format!("big:{tag}"))?;
        variants.push((tag, img));
    }
    let fs = node.sh(&format!("stat -f -c %T {}", node.root().display()))?;
    println!(
        "podbay image bench: 3 layers, {LAYER_FILES} files each, {:.1} MiB uncompressed, {runs} cold pulls per variant, registry on the node's loopback, store on {}",
        raw as f64 / 1048576.0,
        fs.trim()
    );
    let mut c = node.image_client().await?;
    for (tag, img) in &variants {
        let compressed: usize = img.layers.iter().map(|(b, _)| b.data.len()).sum();
        let name = format!("{}/big:{tag}", reg.host());
        let (mut walls, mut rates, mut unpacks, mut peaks) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            // Cold: no image (and so no shared layer) left from an earlier pull.
            for (t, _) in &variants {
                let old = cri::ImageSpec {
                    image: format!("{}/big:{t}", reg.host()),
                    ..Default::default()
                };
                c.remove_image(cri::RemoveImageRequest { image: Some(old) }).await?;
            }
            let spec = cri::ImageSpec { image: name.clone(), ..Default::default() };
            let pid = node.daemon_pid().expect("daemon");
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?; // resets VmHWM
            let log_before = node.log().len();
            let t = Instant::now();
            c.pull_image(cri::PullImageRequest { image: Some(spec), ..Default::default() }).await?;
            let wall = t.elapsed();
            let log = node.log();
            walls.push(wall.as_secs_f64() * 1e3);
            rates.push(compressed as f64 / 1e6 / wall.as_secs_f64());
            unpacks.push(raw as f64 / 1e6 / (unpack_ms(&log[log_before..]) / 1e3));
            peaks.push(status_kb(&node, "VmHWM:") as f64 / 1024.0);
        }
        let (wmin, wp50, wmax) = stats(walls);
        let (_, rp50, _) = stats(rates);
        let (_, up50, _) = stats(unpacks);
        let (_, pp50, pmax) = stats(peaks);
        println!(
            "pull {tag:<5} {:>6.1} MiB compressed  wall min {wmin:>6.0} ms  p50 {wp50:>6.0} ms  max {wmax:>6.0} ms  {rp50:>6.0} MB/s compressed  unpack {up50:>5.0} MB/s per core (target >= 300, {})  daemon peak RSS p50 {pp50:.1} MiB max {pmax:.1} MiB",
            compressed as f64 / 1048576.0,
            if up50 >= 300.0 { "OK" } else { "MISSED" },
        );
    }
    // The reference point: skopeo copy to an OCI layout, then umoci unpack, in the node.
    for (tag, _) in &variants {
        if *tag == "zstd" {
            println!("skopeo copy + umoci unpack zstd  (umoci 0.4.7 cannot unpack zstd layers)");
            continue;
        }
        let mut walls = vec![];
        for i in 0..runs.min(3) {
            let dir = node.dir().join(format!("ref-{tag}-{i}"));
            std::fs::create_dir_all(&dir)?;
            let script = format!(
                "skopeo copy --quiet --src-tls-verify=false docker://{}/big:{tag} oci:{d}/layout:big && umoci unpack --image {d}/layout:big {d}/bundle >/dev/null",
                reg.host(),
                d = dir.display()
            );
            let t = Instant::now();
            node.sh(&script)?;
            walls.push(t.elapsed().as_secs_f64() * 1e3);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (wmin, wp50, _) = stats(walls);
        println!("skopeo copy + umoci unpack {tag:<5} wall min {wmin:>6.0} ms  p50 {wp50:>6.0} ms");
    }
    Ok(())
}
