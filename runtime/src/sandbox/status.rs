//! PodSandboxStatus and ListPodSandbox, answered from memory.

use std::collections::BTreeMap;

use super::{Error, SandboxRecord, SandboxState, Sandboxes};

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

impl Sandboxes {
    pub fn status(&self, id: &str) -> Result<SandboxRecord, Error> {
        Ok(self.resolve(id)?.snapshot())
    }

    /// Sandboxes matching the filter, oldest first.
    pub fn list(&self, filter: &SandboxFilter) -> Vec<SandboxRecord> {
        let map = self.inner.map.read().expect("sandboxes lock");
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
