//! PodSandboxStatus and ListPodSandbox, answered from memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Error, Sandbox, SandboxRecord, SandboxState};
use crate::Runtime;
use crate::ids::{Lookup, SandboxId};

/// A sandbox as reported to clients.
pub type SandboxView = SandboxRecord;

/// ListPodSandbox filters; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// A full id or a prefix of one.
    pub id: Option<String>,
    /// Ready, or not ready (NotReady and Unknown).
    pub ready: Option<bool>,
    pub labels: BTreeMap<String, String>,
}

impl SandboxFilter {
    pub fn matches(&self, rec: &SandboxRecord) -> bool {
        self.id.as_deref().is_none_or(|p| rec.id.as_str().starts_with(p))
            && self.ready.is_none_or(|r| rec.state.is_ready() == r)
            && self.labels.iter().all(|(k, v)| rec.spec.labels.get(k) == Some(v))
    }
}

impl Runtime {
    pub fn sandbox_status(&self, id: &str) -> Result<SandboxView, Error> {
        Ok(self.resolve(id)?.snapshot())
    }

    /// Sandboxes matching the filter, oldest first.
    pub fn list_sandboxes(&self, filter: &SandboxFilter) -> Vec<SandboxView> {
        let map = self.inner.sandboxes.read().expect("sandboxes lock");
        let mut out: Vec<_> = map
            .values()
            .filter_map(|s| {
                let rec = s.record.lock().expect("sandbox record lock");
                filter.matches(&rec).then(|| rec.clone())
            })
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }

    pub(crate) fn get(&self, id: &SandboxId) -> Option<Arc<Sandbox>> {
        self.inner.sandboxes.read().expect("sandboxes lock").get(id).cloned()
    }

    /// Finds a sandbox by full id or unique id prefix.
    pub(crate) fn resolve(&self, id: &str) -> Result<Arc<Sandbox>, Error> {
        let map = self.inner.sandboxes.read().expect("sandboxes lock");
        crate::ids::resolve(&map, id).map_err(|e| match e {
            Lookup::NotFound => Error::NotFound { id: id.into() },
            Lookup::Ambiguous => Error::Ambiguous { prefix: id.into() },
        })
    }
}

impl SandboxState {
    /// Lower-case name used in logs, JSON info and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Ready => "ready",
            SandboxState::NotReady => "notready",
            SandboxState::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::tests::record;

    #[test]
    fn filter_by_prefix_state_and_labels() {
        let mut a = record("a");
        a.state = SandboxState::Unknown;
        let b = record("b");
        let all = SandboxFilter::default();
        assert!(all.matches(&a) && all.matches(&b));
        let by_prefix = SandboxFilter { id: Some(a.id.as_str()[..5].into()), ..Default::default() };
        assert!(by_prefix.matches(&a));
        let not_ready = SandboxFilter { ready: Some(false), ..Default::default() };
        assert!(not_ready.matches(&a) && !not_ready.matches(&b));
        let labels = SandboxFilter {
            labels: BTreeMap::from([("app".into(), "b".into())]),
            ..Default::default()
        };
        assert!(!labels.matches(&a) && labels.matches(&b));
    }
}
