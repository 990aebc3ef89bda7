//! UpdateContainerResources: new limits on the container's cgroup (through libcgroups;
//! nothing is forked), and the saved OCI spec kept in step so ContainerStatus shows them.

use super::{Containers, Error, Resources};
use crate::cgroups;

impl Containers {
    /// Applies new resource limits to a running or created container's cgroup.
    pub async fn update_resources(&self, id: &str, res: Resources) -> Result<(), Error> {
        let c = self.resolve(id)?;
        let _op = c.op.lock().await;
        let rec = c.snapshot();
        if !rec.state.may_run() {
            return Err(Error::State { id: rec.id, state: rec.state, what: "cannot be updated" });
        }
        let linux = super::spec::linux_resources(&res, &self.inner.node)?;
        let cgroup = rec.cgroup.clone();
        let config = self.inner.layout.container(rec.id.as_str()).config();
        tokio::task::spawn_blocking(move || {
            cgroups::apply(&cgroup, &linux)?;
            save_resources(&config, linux)
        })
        .await
        .expect("cgroup task panicked")?;
        let rec = c.update(|r| r.spec.resources = res);
        self.persist(&rec).await
    }
}

/// Keeps the container's saved OCI spec in step with an update, keeping its device rules.
fn save_resources(
    config: &std::path::Path,
    mut res: oci_spec::runtime::LinuxResources,
) -> Result<(), Error> {
    let fail = |source| Error::SaveSpec { path: config.to_path_buf(), source };
    let mut spec = oci_spec::runtime::Spec::load(config).map_err(fail)?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let devices = linux.resources().as_ref().and_then(|r| r.devices().clone());
    res.set_devices(devices);
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
    spec.save(config).map_err(fail)
}
