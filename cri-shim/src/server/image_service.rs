//! The CRI ImageService: images arrive with the images issue; until then every RPC answers
//! Unimplemented naming itself (an unregistered service would answer without a name).

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::runtime_service::unimplemented;

pub struct CriImageService;

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for CriImageService {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        unimplemented("ListImages")
    }

    async fn image_status(
        &self,
        _: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        unimplemented("ImageStatus")
    }

    async fn pull_image(&self, _: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        unimplemented("PullImage")
    }

    async fn remove_image(
        &self,
        _: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        unimplemented("ImageFsInfo")
    }
}
