//! The CRI RuntimeService: each call goes to its handler in the module of its noun
//! (`sandbox.rs`, `container.rs`, `container_stats.rs`, `sandbox_stats.rs`, `runtime.rs`),
//! where the request is validated and converted, the runtime called, the error mapped.

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use podbay_runtime::Runtime;
use tonic::{Request, Response, Status};

use super::{
    container, container_config, container_stats, events, metrics, runtime, sandbox, sandbox_stats,
};

pub struct CriService {
    pub runtime: Runtime,
    pub defaults: container_config::Defaults,
    pub stream: crate::stream::StreamServer,
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, Status>) -> Rpc<T> {
    r.map(Response::new)
}

#[tonic::async_trait]
impl RuntimeService for CriService {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Rpc<cri::VersionResponse> {
        Ok(Response::new(runtime::version()))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        ok(sandbox::run(&self.runtime, req.into_inner()).await)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        ok(sandbox::stop(&self.runtime, req.into_inner()).await)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        ok(sandbox::remove(&self.runtime, req.into_inner()).await)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        ok(sandbox::status(&self.runtime, req.into_inner()))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        Ok(Response::new(sandbox::list(&self.runtime, req.into_inner())))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Rpc<cri::StatusResponse> {
        Ok(Response::new(
            runtime::status(&self.runtime, &self.stream.base_url(), req.into_inner()).await,
        ))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Rpc<cri::RuntimeConfigResponse> {
        Ok(Response::new(runtime::config()))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        ok(runtime::update_config(&self.runtime, req.into_inner()).await)
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        ok(container::create(&self.runtime, &self.defaults, req.into_inner()).await)
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        ok(container::start(&self.runtime, req.into_inner()).await)
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        ok(container::stop(&self.runtime, req.into_inner()).await)
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        ok(container::remove(&self.runtime, req.into_inner()).await)
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        Ok(Response::new(container::list(&self.runtime, req.into_inner())))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        ok(container::status(&self.runtime, req.into_inner()))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        ok(container::update_resources(&self.runtime, req.into_inner()).await)
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        ok(container::reopen_log(&self.runtime, req.into_inner()).await)
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        ok(container::exec_sync(&self.runtime, req.into_inner()).await)
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        ok(container::exec(&self.runtime, &self.stream, req.into_inner()))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        ok(container::attach(&self.runtime, &self.stream, req.into_inner()))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        ok(sandbox::port_forward(&self.runtime, &self.stream, req.into_inner()))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        ok(container_stats::stats(&self.runtime, req.into_inner()).await)
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        Ok(Response::new(container_stats::list(&self.runtime, req.into_inner()).await))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        ok(sandbox_stats::stats(&self.runtime, req.into_inner()).await)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        ok(sandbox_stats::list(&self.runtime, req.into_inner()).await)
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        Err(Status::unimplemented(
            "CheckpointContainer: checkpoint and restore (CRIU) are out of podbay's scope",
        ))
    }

    type GetContainerEventsStream = events::EventStream;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        Ok(Response::new(events::subscribe(&self.runtime)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(metrics::descriptors()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        ok(metrics::pod_metrics(&self.runtime).await)
    }
}
