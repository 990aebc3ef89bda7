//! GetContainerEvents: the runtime's container events as the CRI's stream, each with the
//! pod's status and the statuses of its containers (what kubelet's evented PLEG reads).
//! A subscriber that falls more than the runtime's backlog behind gets an error ending the
//! stream (kubelet then re-lists); nothing waits for it.

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use podbay_runtime::container::{ContainerEvent, ContainerFilter, EventKind};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::container::container_status;
use super::sandbox::sandbox_status;

pub type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
>;

pub fn subscribe(rt: &Runtime) -> EventStream {
    let rx = rt.containers().subscribe();
    let rt = rt.clone();
    let stream = futures_util::stream::unfold(Some((rx, rt)), |state| async move {
        let (mut rx, rt) = state?;
        match rx.recv().await {
            Ok(event) => {
                let answer = response(&rt, &event);
                Some((Ok(answer), Some((rx, rt))))
            }
            Err(RecvError::Lagged(n)) => {
                let status = Status::resource_exhausted(format!(
                    "GetContainerEvents: this subscriber fell {n} events behind; re-list and \
                     subscribe again"
                ));
                Some((Err(status), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    Box::pin(stream)
}

fn response(rt: &Runtime, event: &ContainerEvent) -> cri::ContainerEventResponse {
    let rec = &event.record;
    let kind = match event.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    let pod_sandbox_status = rt
        .sandboxes()
        .status(rec.sandbox_id.as_str())
        .ok()
        .and_then(|s| sandbox_status(&s, rt.network().node_ip(), false).status);
    let filter =
        ContainerFilter { sandbox_id: Some(rec.sandbox_id.to_string()), ..Default::default() };
    let mut containers_statuses: Vec<cri::ContainerStatus> = rt
        .containers()
        .map(&filter, |c| container_status(c, None, false).status)
        .into_iter()
        .flatten()
        .collect();
    // The event's own container as the event saw it (a deleted one is no longer listed).
    containers_statuses.retain(|s| s.id != rec.id.as_str());
    containers_statuses.extend(container_status(rec, None, false).status);
    cri::ContainerEventResponse {
        container_id: rec.id.to_string(),
        container_event_type: kind as i32,
        created_at: event.at,
        pod_sandbox_status,
        containers_statuses,
    }
}
