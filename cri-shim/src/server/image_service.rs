//! The CRI ImageService: each call goes to its handler in `image.rs`.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use podbay_runtime::Runtime;
use tonic::{Request, Response, Status};

use super::image;

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
        image::list(&self.runtime, req.into_inner()).await.map(Response::new)
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        image::status(&self.runtime, req.into_inner()).await.map(Response::new)
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        image::pull(&self.runtime, req.into_inner()).await.map(Response::new)
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        image::remove(&self.runtime, req.into_inner()).await.map(Response::new)
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        image::fs_info(&self.runtime).await.map(Response::new)
    }
}
