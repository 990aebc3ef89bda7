//! podbay.admin.v1: image import and pull-with-progress for the `podbay` command line.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use podbay_proto::admin::v1 as admin;
use podbay_proto::admin::v1::images_server::Images;
use podbay_runtime::Runtime;
use podbay_runtime::image::{Credentials, ImageRecord};
use tonic::{Request, Response, Status};

use super::status::to_status;

pub struct AdminService {
    pub runtime: Runtime,
}

fn stored(rec: &ImageRecord) -> admin::StoredImage {
    admin::StoredImage {
        id: rec.id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
    }
}

type PullStream = Pin<Box<dyn Stream<Item = Result<admin::PullEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Images for AdminService {
    async fn import(
        &self,
        req: Request<admin::ImportRequest>,
    ) -> Result<Response<admin::ImportResponse>, Status> {
        let path = req.into_inner().path;
        if path.is_empty() {
            return Err(Status::invalid_argument("path is empty"));
        }
        let images = self
            .runtime
            .images()
            .import(path.as_ref())
            .await
            .map_err(|e| to_status("Import", e))?;
        Ok(Response::new(admin::ImportResponse { images: images.iter().map(stored).collect() }))
    }

    async fn mount(
        &self,
        req: Request<admin::MountRequest>,
    ) -> Result<Response<admin::MountResponse>, Status> {
        let req = req.into_inner();
        let path = self
            .runtime
            .images()
            .mount_rootfs(&req.id, &req.image, None)
            .await
            .map_err(|e| to_status("Mount", e))?;
        Ok(Response::new(admin::MountResponse { path: path.display().to_string() }))
    }

    async fn unmount(
        &self,
        req: Request<admin::UnmountRequest>,
    ) -> Result<Response<admin::UnmountResponse>, Status> {
        self.runtime
            .images()
            .unmount_rootfs(&req.into_inner().id)
            .await
            .map_err(|e| to_status("Unmount", e))?;
        Ok(Response::new(admin::UnmountResponse {}))
    }

    type PullStream = PullStream;

    async fn pull(&self, req: Request<admin::PullRequest>) -> Result<Response<PullStream>, Status> {
        let req = req.into_inner();
        if req.image.is_empty() {
            return Err(Status::invalid_argument("image is empty"));
        }
        let creds = (!req.username.is_empty()).then(|| Credentials::Basic {
            username: req.username.clone(),
            password: req.password.clone(),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let images = runtime.images().clone();
            let pull = images.pull(&req.image, creds);
            tokio::pin!(pull);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let outcome = loop {
                tokio::select! {
                    r = &mut pull => break r,
                    _ = tick.tick() => {
                        let layers = images.pull_progress(&req.image).map(|p| p.snapshot()).unwrap_or_default();
                        let event = admin::PullEvent { layers: layers.into_iter().map(|l| admin::LayerProgress {
                            digest: l.digest, total: l.total, done: l.done, state: l.state.into(),
                        }).collect(), image: None };
                        // A client that went away is fine: the pull finishes on its own.
                        let _ = tx.send(Ok(event)).await;
                    }
                }
            };
            let last = outcome
                .map(|rec| admin::PullEvent { layers: vec![], image: Some(stored(&rec)) })
                .map_err(|e| to_status("Pull", e));
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
