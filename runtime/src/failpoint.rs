//! Failure injection for tests of undo and recovery paths.
//!
//! The daemon builds a `Failpoints` set from the `PODBAY_FAILPOINTS` environment variable:
//! comma-separated step names such as `sandbox.run.pin` (the step fails with an error and
//! the undos run) or `sandbox.run.pin=crash` (the daemon SIGKILLs itself there, as a crash
//! would, leaving whatever was done so far for the next start to reconcile).
//! Production runs have none, and checking an empty set is one branch.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fail,
    Crash,
}

#[derive(Debug, Clone, Default)]
pub struct Failpoints(HashMap<String, Action>);

/// A failure injected at a named step.
#[derive(Debug, thiserror::Error)]
#[error("injected failure at step {0}")]
pub struct Injected(pub &'static str);

impl Failpoints {
    /// Parses a comma-separated list; blanks are ignored.
    pub fn parse(list: &str) -> Self {
        let entries = list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| {
            match s.strip_suffix("=crash") {
                Some(step) => (step.to_owned(), Action::Crash),
                None => (s.to_owned(), Action::Fail),
            }
        });
        Self(entries.collect())
    }

    pub fn check(&self, step: &'static str) -> Result<(), Injected> {
        if self.0.is_empty() {
            return Ok(());
        }
        match self.0.get(step) {
            None => Ok(()),
            Some(Action::Fail) => Err(Injected(step)),
            Some(Action::Crash) => {
                eprintln!("podbay: failpoint {step}=crash: killing the daemon");
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
                unreachable!("SIGKILL cannot be caught")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_steps_fail() {
        let fp = Failpoints::parse(" sandbox.run.pin, ,sandbox.run.shm,sandbox.run.x=crash");
        assert!(fp.check("sandbox.run.pin").is_err());
        assert!(fp.check("sandbox.run.shm").is_err());
        assert!(fp.check("sandbox.run.spawn").is_ok());
        assert_eq!(fp.0.get("sandbox.run.x"), Some(&Action::Crash));
        assert!(Failpoints::default().check("sandbox.run.pin").is_ok());
    }
}
