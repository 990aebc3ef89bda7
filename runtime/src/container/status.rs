//! ContainerStatus and ListContainers.

use std::collections::BTreeMap;

use super::{ContainerRecord, ContainerState, Containers, Error};
use crate::ids::ContainerId;

/// ListContainers' filter (CRI ContainerFilter); unset fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    /// A full id or an id prefix.
    pub id: Option<String>,
    pub state: Option<ContainerState>,
    /// A full sandbox id or prefix.
    pub sandbox_id: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ContainerFilter {
    pub fn matches(&self, rec: &ContainerRecord) -> bool {
        self.id.as_ref().is_none_or(|id| rec.id.as_str().starts_with(id.as_str()))
            && self.state.is_none_or(|s| s == rec.state)
            && self
                .sandbox_id
                .as_ref()
                .is_none_or(|s| rec.sandbox_id.as_str().starts_with(s.as_str()))
            && self.labels.iter().all(|(k, v)| rec.spec.labels.get(k) == Some(v))
    }
}

impl Containers {
    pub fn status(&self, id: &str) -> Result<ContainerRecord, Error> {
        Ok(self.resolve(id)?.snapshot())
    }

    /// The OCI spec a container was created with (ContainerStatus verbose info), with its
    /// seccomp profile back in `linux.seccomp` where the daemon compiled it ahead (the
    /// profile is then kept beside `config.json`, which names none).
    pub fn oci_spec(&self, rec: &ContainerRecord) -> Option<serde_json::Value> {
        let dirs = self.inner.layout.container(rec.id.as_str());
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dirs.config()).ok()?).ok()?;
        let kept = std::fs::read(dirs.bundle().join(crate::layout::SECCOMP_PROFILE));
        if let Some(profile) = kept.ok().and_then(|p| serde_json::from_slice(&p).ok())
            && let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut())
        {
            linux.insert("seccomp".to_owned(), profile);
        }
        Some(spec)
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        self.map(filter, ContainerRecord::clone)
    }

    /// `f` of each container the filter matches, oldest first; `f` sees the record in
    /// place (ListContainers converts without copying whole records).
    pub fn map<T>(&self, filter: &ContainerFilter, f: impl Fn(&ContainerRecord) -> T) -> Vec<T> {
        let mut out: Vec<(i64, ContainerId, T)> = self
            .inner
            .map
            .read()
            .expect("containers lock")
            .values()
            .filter_map(|c| {
                let r = c.record.lock().expect("container record lock");
                filter.matches(&r).then(|| (r.created_at, r.id.clone(), f(&r)))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        out.into_iter().map(|(.., t)| t).collect()
    }
}

impl ContainerState {
    /// Lower-case name used in logs, JSON info and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}
