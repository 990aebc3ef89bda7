//! Image commands: pull (with per-layer progress on a terminal), images, rmi, inspecti,
//! imagefsinfo, image import.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use podbay_proto::admin::v1 as admin;
use podbay_proto::admin::v1::images_client::ImagesClient;

use super::{Output, channel, status_msg};

pub async fn pull(ep: &Path, image: &str, creds: Option<&str>) -> anyhow::Result<()> {
    let (username, password) = match creds {
        Some(c) => {
            let (u, p) = c.split_once(':').context("--creds: expected user:password")?;
            (u.to_owned(), p.to_owned())
        }
        None => Default::default(),
    };
    let mut c = ImagesClient::new(channel(ep).await?);
    let req = admin::PullRequest { image: image.to_owned(), username, password };
    let mut events = c.pull(req).await.map_err(status_msg)?.into_inner();
    let tty = std::io::stderr().is_terminal();
    let mut drawn = 0;
    while let Some(event) = events.next().await {
        let event = event.map_err(status_msg)?;
        if let Some(img) = event.image {
            if tty && drawn > 0 {
                eprint!("\x1b[{drawn}A\x1b[J");
            }
            println!("Image is up to date for {}", img.id);
            return Ok(());
        }
        if tty && !event.layers.is_empty() {
            let mut err = std::io::stderr().lock();
            if drawn > 0 {
                write!(err, "\x1b[{drawn}A")?;
            }
            for l in &event.layers {
                let short = l.digest.strip_prefix("sha256:").unwrap_or(&l.digest);
                writeln!(
                    err,
                    "\x1b[2K{}: {:<11} {} / {}",
                    &short[..12.min(short.len())],
                    l.state,
                    mib(l.done),
                    mib(l.total)
                )?;
            }
            drawn = event.layers.len();
        }
    }
    anyhow::bail!("the daemon ended the pull without a result")
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
}

pub async fn import(ep: &Path, path: &Path) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let mut c = ImagesClient::new(channel(ep).await?);
    let req = admin::ImportRequest { path: path.display().to_string() };
    let resp = c.import(req).await.map_err(status_msg)?.into_inner();
    for img in resp.images {
        let names =
            img.repo_tags.iter().chain(&img.repo_digests).cloned().collect::<Vec<_>>().join(", ");
        println!("imported {} {names}", img.id);
    }
    Ok(())
}

pub async fn mount(ep: &Path, image: &str, id: &str) -> anyhow::Result<()> {
    let mut c = ImagesClient::new(channel(ep).await?);
    let req = admin::MountRequest { image: image.to_owned(), id: id.to_owned() };
    println!("{}", c.mount(req).await.map_err(status_msg)?.into_inner().path);
    Ok(())
}

pub async fn unmount(ep: &Path, id: &str) -> anyhow::Result<()> {
    let mut c = ImagesClient::new(channel(ep).await?);
    c.unmount(admin::UnmountRequest { id: id.to_owned() }).await.map_err(status_msg)?;
    Ok(())
}

fn image_json(i: &cri::Image) -> serde_json::Value {
    serde_json::json!({
        "id": i.id,
        "repoTags": i.repo_tags,
        "repoDigests": i.repo_digests,
        "size": i.size.to_string(),
        "uid": i.uid.as_ref().map(|u| serde_json::json!({"value": u.value.to_string()})),
        "username": i.username,
        "pinned": i.pinned,
    })
}

pub async fn images(
    ep: &Path,
    filter: Option<&str>,
    quiet: bool,
    output: Output,
) -> anyhow::Result<()> {
    let mut c = ImageServiceClient::new(channel(ep).await?);
    let filter = filter.map(|f| cri::ImageFilter {
        image: Some(cri::ImageSpec { image: f.into(), ..Default::default() }),
    });
    let mut images = c
        .list_images(cri::ListImagesRequest { filter })
        .await
        .map_err(status_msg)?
        .into_inner()
        .images;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags));
    if quiet {
        for i in &images {
            println!("{}", i.id);
        }
        return Ok(());
    }
    match output {
        Output::Json => {
            let items: Vec<_> = images.iter().map(image_json).collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "images": items }))?);
        }
        Output::Yaml => {
            let items: Vec<_> = images.iter().map(image_json).collect();
            print!("{}", serde_norway::to_string(&serde_json::json!({ "images": items }))?);
        }
        Output::Table => {
            println!("{:<50} {:<20} {:<15} {:>10}", "IMAGE", "TAG", "IMAGE ID", "SIZE");
            for i in &images {
                let id = &i.id.trim_start_matches("sha256:")[..13];
                let size = mib(i.size);
                if i.repo_tags.is_empty() {
                    let repo = i
                        .repo_digests
                        .first()
                        .and_then(|d| d.split('@').next())
                        .unwrap_or("<none>");
                    println!("{repo:<50} {:<20} {id:<15} {size:>10}", "<none>");
                }
                for t in &i.repo_tags {
                    let (repo, tag) = t.rsplit_once(':').unwrap_or((t, ""));
                    println!("{repo:<50} {tag:<20} {id:<15} {size:>10}");
                }
            }
        }
    }
    Ok(())
}

pub async fn rmi(ep: &Path, refs: &[String]) -> anyhow::Result<()> {
    let mut c = ImageServiceClient::new(channel(ep).await?);
    for r in refs {
        let spec = cri::ImageSpec { image: r.clone(), ..Default::default() };
        let found = c
            .image_status(cri::ImageStatusRequest { image: Some(spec.clone()), verbose: false })
            .await
            .map_err(status_msg)?
            .into_inner()
            .image;
        if found.is_none() {
            anyhow::bail!("no such image {r}");
        }
        c.remove_image(cri::RemoveImageRequest { image: Some(spec) }).await.map_err(status_msg)?;
        println!("Deleted: {r}");
    }
    Ok(())
}

pub async fn inspecti(ep: &Path, refs: &[String]) -> anyhow::Result<()> {
    let mut c = ImageServiceClient::new(channel(ep).await?);
    for r in refs {
        let spec = cri::ImageSpec { image: r.clone(), ..Default::default() };
        let resp = c
            .image_status(cri::ImageStatusRequest { image: Some(spec), verbose: true })
            .await
            .map_err(status_msg)?
            .into_inner();
        let Some(image) = resp.image else { anyhow::bail!("no such image {r}") };
        let info: serde_json::Value =
            resp.info.get("info").and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "status": image_json(&image), "info": info })
            )?
        );
    }
    Ok(())
}

pub async fn imagefsinfo(ep: &Path) -> anyhow::Result<()> {
    let mut c = ImageServiceClient::new(channel(ep).await?);
    let resp = c.image_fs_info(cri::ImageFsInfoRequest {}).await.map_err(status_msg)?.into_inner();
    let fs: Vec<_> = resp
        .image_filesystems
        .iter()
        .map(|f| {
            serde_json::json!({
                "timestamp": f.timestamp.to_string(),
                "fsId": {"mountpoint": f.fs_id.as_ref().map(|i| i.mountpoint.clone())},
                "usedBytes": {"value": f.used_bytes.as_ref().map(|v| v.value.to_string())},
                "inodesUsed": {"value": f.inodes_used.as_ref().map(|v| v.value.to_string())},
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "status": { "imageFilesystems": fs } }))?
    );
    Ok(())
}
