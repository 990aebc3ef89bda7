//! The CRI RuntimeService: thin handlers that validate, call the runtime, map errors.

use std::pin::Pin;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use podbay_runtime::Runtime;
use tonic::{Request, Response, Status};

use super::convert;
use super::status::to_status;

pub const RUNTIME_NAME: &str = "podbay";
pub const RUNTIME_API_VERSION: &str = "v1";

pub struct CriService {
    pub runtime: Runtime,
}

type Rpc<T> = Result<Response<T>, Status>;

pub(super) fn unimplemented<T>(rpc: &str) -> Rpc<T> {
    Err(Status::unimplemented(format!("{rpc} is not implemented by podbay yet")))
}

/// Runtime information shown by `Status` (verbose) and `podbay info`.
pub fn runtime_info(runtime: &Runtime) -> serde_json::Value {
    let opts = runtime.options();
    serde_json::json!({
        "runtimeName": RUNTIME_NAME,
        "runtimeVersion": env!("CARGO_PKG_VERSION"),
        "root": opts.root,
        "runDir": opts.run,
        "supervisor": opts.supervisor_exe,
        "cgroupDriver": "cgroupfs",
        "network": runtime.network_report(),
    })
}

#[tonic::async_trait]
impl RuntimeService for CriService {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Rpc<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        let spec = convert::sandbox_spec(req.into_inner())?;
        let id = self.runtime.run_sandbox(spec).await.map_err(|e| to_status("RunPodSandbox", e))?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id: id.to_string() }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.runtime.stop_sandbox(&id).await.map_err(|e| to_status("StopPodSandbox", e))?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.runtime.remove_sandbox(&id).await.map_err(|e| to_status("RemovePodSandbox", e))?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let rec = self
            .runtime
            .sandbox_status(&req.pod_sandbox_id)
            .map_err(|e| to_status("PodSandboxStatus", e))?;
        let node_ip = self.runtime.network_node().and_then(|n| n.node_ip());
        Ok(Response::new(convert::sandbox_status(&rec, node_ip, req.verbose)))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        let filter = convert::sandbox_filter(req.into_inner().filter);
        let items =
            self.runtime.list_sandboxes(&filter).iter().map(convert::sandbox_summary).collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Rpc<cri::StatusResponse> {
        let condition =
            |kind: &str, status: bool, reason: &str, message: &str| cri::RuntimeCondition {
                r#type: kind.into(),
                status,
                reason: reason.into(),
                message: message.into(),
            };
        let network = match self.runtime.network_ready() {
            Ok(()) => condition("NetworkReady", true, "", ""),
            Err(reason) => condition("NetworkReady", false, "NetworkPluginNotReady", &reason),
        };
        let conditions = vec![condition("RuntimeReady", true, "", ""), network];
        let mut info = std::collections::HashMap::new();
        if req.into_inner().verbose {
            info.insert("info".into(), runtime_info(&self.runtime).to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Rpc<cri::RuntimeConfigResponse> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        // kubelet sends the node's pod CIDR here; podbay's node subnet comes from its own
        // config ([network]), as with flannel, so this is accepted and ignored.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn create_container(
        &self,
        _: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        unimplemented("CreateContainer")
    }

    async fn start_container(
        &self,
        _: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        unimplemented("StartContainer")
    }

    async fn stop_container(
        &self,
        _: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        unimplemented("StopContainer")
    }

    async fn remove_container(
        &self,
        _: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        unimplemented("RemoveContainer")
    }

    async fn list_containers(
        &self,
        _: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        unimplemented("ListContainers")
    }

    async fn container_status(
        &self,
        _: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        unimplemented("ContainerStatus")
    }

    async fn update_container_resources(
        &self,
        _: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        _: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        unimplemented("ReopenContainerLog")
    }

    async fn exec_sync(&self, _: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        unimplemented("ExecSync")
    }

    async fn exec(&self, _: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        unimplemented("Exec")
    }

    async fn attach(&self, _: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        unimplemented("Attach")
    }

    async fn port_forward(
        &self,
        _: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        unimplemented("PortForward")
    }

    async fn container_stats(
        &self,
        _: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        unimplemented("ContainerStats")
    }

    async fn list_container_stats(
        &self,
        _: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        unimplemented("ListContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        unimplemented("PodSandboxStats")
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        unimplemented("ListPodSandboxStats")
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    type GetContainerEventsStream = Pin<
        Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }
}
