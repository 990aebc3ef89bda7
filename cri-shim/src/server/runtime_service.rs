//! The CRI RuntimeService: thin handlers that validate, call the runtime, map errors.

use std::pin::Pin;
use std::time::Duration;

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
pub async fn runtime_info(runtime: &Runtime) -> serde_json::Value {
    let opts = runtime.options();
    serde_json::json!({
        "runtimeName": RUNTIME_NAME,
        "runtimeVersion": env!("CARGO_PKG_VERSION"),
        "root": opts.root,
        "runDir": opts.run,
        "supervisor": opts.supervisor_exe,
        "cgroupDriver": "cgroupfs",
        "network": runtime.network_report().await,
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
            info.insert("info".into(), runtime_info(&self.runtime).await.to_string());
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
        req: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let spec = convert::container_spec(req.config)?;
        let id = self
            .runtime
            .create_container(&req.pod_sandbox_id, spec)
            .await
            .map_err(|e| to_status("CreateContainer", e))?;
        Ok(Response::new(cri::CreateContainerResponse { container_id: id.to_string() }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        let id = req.into_inner().container_id;
        self.runtime.start_container(&id).await.map_err(|e| to_status("StartContainer", e))?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        let req = req.into_inner();
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        self.runtime
            .stop_container(&req.container_id, timeout)
            .await
            .map_err(|e| to_status("StopContainer", e))?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        self.runtime.remove_container(&id).await.map_err(|e| to_status("RemoveContainer", e))?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        let filter = convert::container_filter(req.into_inner().filter);
        let containers = self.runtime.map_containers(&filter, convert::container_summary);
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        let rec = self
            .runtime
            .container_status(&req.container_id)
            .map_err(|e| to_status("ContainerStatus", e))?;
        let oci = req.verbose.then(|| self.runtime.container_oci_spec(&rec)).flatten();
        Ok(Response::new(convert::container_status(&rec, oci, req.verbose)))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        let res = convert::resources(req.linux.unwrap_or_default());
        self.runtime
            .update_container_resources(&req.container_id, res)
            .await
            .map_err(|e| to_status("UpdateContainerResources", e))?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        self.runtime
            .reopen_container_log(&id)
            .await
            .map_err(|e| to_status("ReopenContainerLog", e))?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let out = self
            .runtime
            .exec_sync(&req.container_id, req.cmd, timeout)
            .await
            .map_err(|e| to_status("ExecSync", e))?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
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
        req: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let stats =
            self.runtime.container_stats(&id).await.map_err(|e| to_status("ContainerStats", e))?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(convert::container_stats(&stats)),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = podbay_runtime::container::ContainerFilter {
            id: Some(f.id).filter(|s| !s.is_empty()),
            state: Some(podbay_runtime::container::ContainerState::Running),
            sandbox_id: Some(f.pod_sandbox_id).filter(|s| !s.is_empty()),
            labels: f.label_selector.into_iter().collect(),
        };
        let stats = self.runtime.list_container_stats(&filter).await;
        Ok(Response::new(cri::ListContainerStatsResponse {
            stats: stats.iter().map(convert::container_stats).collect(),
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let stats =
            self.runtime.pod_stats(Some(&id)).await.map_err(|e| to_status("PodSandboxStats", e))?;
        let rec = self.runtime.sandbox_status(&id).ok();
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: stats.first().map(|s| convert::pod_stats(s, rec.as_ref())),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let stats =
            self.runtime.pod_stats(None).await.map_err(|e| to_status("ListPodSandboxStats", e))?;
        let stats = stats
            .iter()
            .filter(|s| s.sandbox_id.as_str().starts_with(f.id.as_str()))
            .filter_map(|s| {
                let rec = self.runtime.sandbox_status(s.sandbox_id.as_str()).ok()?;
                f.label_selector
                    .iter()
                    .all(|(k, v)| rec.spec.labels.get(k) == Some(v))
                    .then(|| convert::pod_stats(s, Some(&rec)))
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
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
