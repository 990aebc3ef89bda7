//! Failure injection for tests of undo paths.
//!
//! The daemon builds a `Failpoints` set from the `PODBAY_FAILPOINTS` environment variable
//! (comma-separated step names such as `sandbox.run.pin`). Production runs have none, and
//! checking an empty set is one branch.

use std::collections::HashSet;

#[derive(Debug, Clone, Default)]
pub struct Failpoints(HashSet<String>);

/// A failure injected at a named step.
#[derive(Debug, thiserror::Error)]
#[error("injected failure at step {0}")]
pub struct Injected(pub &'static str);

impl Failpoints {
    /// Parses a comma-separated list; blanks are ignored.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    pub fn check(&self, step: &'static str) -> Result<(), Injected> {
        if !self.0.is_empty() && self.0.contains(step) {
            Err(Injected(step))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_steps_fail() {
        let fp = Failpoints::parse(" sandbox.run.pin, ,sandbox.run.shm");
        assert!(fp.check("sandbox.run.pin").is_err());
        assert!(fp.check("sandbox.run.shm").is_err());
        assert!(fp.check("sandbox.run.spawn").is_ok());
        assert!(Failpoints::default().check("sandbox.run.pin").is_ok());
    }
}
