//! The undo stack of a creation in several steps (RunPodSandbox, CreateContainer).
//!
//! Each step registers how to undo it before the next step starts. On failure the undos
//! run newest first, past failures of their own; the caller gets the cause together with
//! whatever cleaning up could not do (youki's `CreateContainerError(cause, cleanup)`).

use std::future::Future;

/// An error that can carry, beside its cause, the failures of the undos that followed it.
pub(crate) trait WithCleanup: Sized {
    fn with_cleanup(cause: Self, cleanup: Vec<Self>) -> Self;
}

/// Undo steps registered so far, of a step type `S` that the creation defines.
pub(crate) struct Undo<S>(Vec<S>);

impl<S> Default for Undo<S> {
    fn default() -> Self {
        Undo(Vec::new())
    }
}

impl<S> Undo<S> {
    pub(crate) fn push(&mut self, step: S) {
        self.0.push(step);
    }

    /// Runs every undo, newest first, with `undo`; keeps going past failures and returns
    /// `cause`, with the cleanup failures attached when there were any.
    pub(crate) async fn unwind<E, F, Fut>(self, cause: E, mut undo: F) -> E
    where
        E: WithCleanup,
        F: FnMut(S) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut cleanup = Vec::new();
        for step in self.0.into_iter().rev() {
            if let Err(e) = undo(step).await {
                cleanup.push(e);
            }
        }
        if cleanup.is_empty() { cause } else { E::with_cleanup(cause, cleanup) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        One(&'static str),
        Undo(Box<E>, Vec<E>),
    }

    impl WithCleanup for E {
        fn with_cleanup(cause: Self, cleanup: Vec<Self>) -> Self {
            E::Undo(Box::new(cause), cleanup)
        }
    }

    #[tokio::test]
    async fn undos_run_newest_first_past_failures() {
        let mut undo = Undo::default();
        for s in ["a", "b", "c"] {
            undo.push(s);
        }
        let mut ran = Vec::new();
        let e = undo
            .unwind(E::One("cause"), |s| {
                ran.push(s);
                async move { if s == "b" { Err(E::One("b failed")) } else { Ok(()) } }
            })
            .await;
        assert_eq!(ran, ["c", "b", "a"]);
        assert_eq!(e, E::Undo(Box::new(E::One("cause")), vec![E::One("b failed")]));
        let clean = Undo::<()>::default().unwind(E::One("x"), |_| async { Ok(()) }).await;
        assert_eq!(clean, E::One("x"));
    }
}
