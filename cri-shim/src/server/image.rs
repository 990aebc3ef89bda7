//! The CRI ImageService's calls (ListImages, ImageStatus, PullImage, RemoveImage,
//! ImageFsInfo): the handlers and the conversions of image records and requests.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use podbay_runtime::image::{Credentials, ImageRecord};
use tonic::Status;

use super::fields::invalid;
use super::status::to_status;

pub async fn list(
    rt: &Runtime,
    req: cri::ListImagesRequest,
) -> Result<cri::ListImagesResponse, Status> {
    let filter = req.filter.and_then(|f| f.image).map(|s| s.image);
    let images =
        rt.images().list(filter.as_deref()).await.map_err(|e| to_status("ListImages", e))?;
    Ok(cri::ListImagesResponse { images: images.iter().map(cri_image).collect() })
}

pub async fn status(
    rt: &Runtime,
    req: cri::ImageStatusRequest,
) -> Result<cri::ImageStatusResponse, Status> {
    let image = image_ref("image.image", req.image.as_ref())?;
    let found = rt.images().find(&image).await.map_err(|e| to_status("ImageStatus", e))?;
    // An image that is not there is no error: the response simply has none.
    let Some((rec, _)) = found else { return Ok(Default::default()) };
    let mut info = HashMap::new();
    if req.verbose {
        let config = rt.images().config(&rec).await.map_err(|e| to_status("ImageStatus", e))?;
        info.insert("info".to_owned(), image_info(&rec, &config).to_string());
    }
    Ok(cri::ImageStatusResponse { image: Some(cri_image(&rec)), info })
}

pub async fn pull(
    rt: &Runtime,
    req: cri::PullImageRequest,
) -> Result<cri::PullImageResponse, Status> {
    let image = image_ref("image.image", req.image.as_ref())?;
    let creds = image_auth(req.auth)?;
    let rec = rt.images().pull(&image, creds).await.map_err(|e| to_status("PullImage", e))?;
    Ok(cri::PullImageResponse { image_ref: rec.id })
}

pub async fn remove(
    rt: &Runtime,
    req: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse, Status> {
    let image = image_ref("image.image", req.image.as_ref())?;
    rt.images().remove(&image).await.map_err(|e| to_status("RemoveImage", e))?;
    Ok(cri::RemoveImageResponse {})
}

pub async fn fs_info(rt: &Runtime) -> Result<cri::ImageFsInfoResponse, Status> {
    let usage = rt.images().fs_usage().await.map_err(|e| to_status("ImageFsInfo", e))?;
    let fs = cri::FilesystemUsage {
        timestamp: podbay_runtime::clock::now_ns(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: rt.layout().images_dir().display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
        inodes_used: Some(cri::UInt64Value { value: usage.inodes }),
    };
    Ok(cri::ImageFsInfoResponse { image_filesystems: vec![fs], container_filesystems: vec![] })
}

/// The image named by a request's ImageSpec, or InvalidArgument naming the field.
pub fn image_ref(field: &str, spec: Option<&cri::ImageSpec>) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(i) if !i.is_empty() => Ok(i.to_owned()),
        _ => Err(invalid(field, "is empty")),
    }
}

/// Credentials from a CRI AuthConfig: username/password, `auth` (base64 user:pass), an
/// identity token (sent as the password, as registries that issue them accept), or a
/// registry token (a bearer token used as is).
pub fn image_auth(auth: Option<cri::AuthConfig>) -> Result<Option<Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.registry_token.is_empty() {
        return Ok(Some(Credentials::Bearer(a.registry_token)));
    }
    if !a.identity_token.is_empty() {
        let username = if a.username.is_empty() { "<token>".to_owned() } else { a.username };
        return Ok(Some(Credentials::Basic { username, password: a.identity_token }));
    }
    if !a.auth.is_empty() {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| invalid("auth.auth", format!("is not base64: {e}")))?;
        let text = String::from_utf8(raw).map_err(|_| invalid("auth.auth", "is not UTF-8"))?;
        let (username, password) =
            text.split_once(':').ok_or_else(|| invalid("auth.auth", "is not user:password"))?;
        return Ok(Some(Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }));
    }
    if a.username.is_empty() && a.password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::Basic { username: a.username, password: a.password }))
}

/// An image as the CRI shows it: a numeric USER is the uid, a name the username.
pub fn cri_image(rec: &ImageRecord) -> cri::Image {
    let user = rec.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user.to_owned()),
    };
    cri::Image {
        id: rec.id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size(),
        uid,
        username,
        spec: Some(cri::ImageSpec { image: rec.id.clone(), ..Default::default() }),
        pinned: false,
    }
}

/// ImageStatus' verbose `info`: digests, layers and the config.
pub fn image_info(rec: &ImageRecord, config: &[u8]) -> serde_json::Value {
    let layers: Vec<_> = rec
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "digest": l.digest, "mediaType": l.media_type, "size": l.size,
                "diffID": l.diff_id, "chainID": l.chain_id,
            })
        })
        .collect();
    serde_json::json!({
        "id": rec.id,
        "repoTags": rec.repo_tags,
        "repoDigests": rec.repo_digests,
        "manifestDigest": rec.manifest,
        "indexDigest": rec.index,
        "layers": layers,
        "config": serde_json::from_slice::<serde_json::Value>(config).unwrap_or_default(),
    })
}
