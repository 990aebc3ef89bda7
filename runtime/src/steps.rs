//! Step timing for the debug log.

use std::time::Duration;

/// Time spent per step of a RunPodSandbox or CreateContainer, logged at debug level when
/// it is done (the per-step breakdowns the benchmarks print).
pub(crate) struct StepTimer {
    last: std::time::Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StepTimer {
    pub(crate) fn new() -> Self {
        Self { last: std::time::Instant::now(), steps: Vec::new() }
    }

    pub(crate) fn done(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }

    pub(crate) fn summary(&self) -> String {
        self.steps
            .iter()
            .map(|(s, d)| format!("{s}={}us", d.as_micros()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
