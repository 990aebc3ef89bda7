//! The CRI ImageService: thin handlers that validate, call the runtime, map errors.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use podbay_runtime::Runtime;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::to_status;

pub struct CriImageService {
    pub runtime: Runtime,
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for CriImageService {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        let filter = req.into_inner().filter.and_then(|f| f.image).map(|s| s.image);
        let images = self
            .runtime
            .list_images(filter.as_deref())
            .await
            .map_err(|e| to_status("ListImages", e))?;
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(convert::cri_image).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        let req = req.into_inner();
        let image = convert::image_ref("image.image", req.image.as_ref())?;
        let found =
            self.runtime.find_image(&image).await.map_err(|e| to_status("ImageStatus", e))?;
        // An image that is not there is no error: the response simply has none.
        let Some((rec, _)) = found else { return Ok(Response::new(Default::default())) };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let config =
                self.runtime.image_config(&rec).await.map_err(|e| to_status("ImageStatus", e))?;
            info.insert("info".to_owned(), convert::image_info(&rec, &config).to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse { image: Some(convert::cri_image(&rec)), info }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        let req = req.into_inner();
        let image = convert::image_ref("image.image", req.image.as_ref())?;
        let creds = convert::image_auth(req.auth)?;
        let rec =
            self.runtime.pull_image(&image, creds).await.map_err(|e| to_status("PullImage", e))?;
        Ok(Response::new(cri::PullImageResponse { image_ref: rec.id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        let image = convert::image_ref("image.image", req.into_inner().image.as_ref())?;
        self.runtime.remove_image(&image).await.map_err(|e| to_status("RemoveImage", e))?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        let usage = self.runtime.image_fs_usage().await.map_err(|e| to_status("ImageFsInfo", e))?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let fs = cri::FilesystemUsage {
            timestamp: now.as_nanos() as i64,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: self.runtime.layout().images_dir().display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
            inodes_used: Some(cri::UInt64Value { value: usage.inodes }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: vec![],
        }))
    }
}
