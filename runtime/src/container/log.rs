//! ReopenContainerLog: the pod's supervisor reopens the container's log file (after
//! kubelet rotated it).

use super::{ContainerState, Containers, Error};
use crate::supervisor::Client;

impl Containers {
    pub async fn reopen_log(&self, id: &str) -> Result<(), Error> {
        let rec = self.resolve(id)?.snapshot();
        if rec.state != ContainerState::Running {
            return Err(Error::State {
                id: rec.id,
                state: rec.state,
                what: "has no log to reopen",
            });
        }
        let pod = self.pod_of(&rec.sandbox_id)?;
        Client::new(&pod).reopen_log(&rec.id).await.map_err(Error::supervisor(&rec.id))
    }
}
