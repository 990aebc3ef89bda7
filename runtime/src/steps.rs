//! Step timing of RunPodSandbox, CreateContainer and StartContainer: logged at debug
//! level when a call is done (the per-step breakdowns the benchmarks print) and observed
//! into a histogram per step for the daemon's `/metrics`.

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// `podbay_pod_start_step_seconds{operation, step}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub operation: &'static str,
    pub step: &'static str,
}

/// Step durations of every successful RunPodSandbox, CreateContainer and StartContainer.
pub type StepHistograms = Family<StepLabels, Histogram, fn() -> Histogram>;

/// Buckets from 50 µs to ~26 s: a step takes from tens of microseconds (a directory) to
/// seconds (an image pull under load).
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

pub fn step_histograms() -> StepHistograms {
    Family::new_with_constructor(latency_histogram)
}

/// Time spent per step of one call.
pub(crate) struct StepTimer {
    operation: &'static str,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StepTimer {
    /// A timer whose first step started at `start` (the call's arrival).
    pub(crate) fn since(operation: &'static str, start: Instant) -> Self {
        Self { operation, last: start, steps: Vec::new() }
    }

    pub(crate) fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }

    /// A step that ran alongside the next one `done` names (its time is not the call's).
    pub(crate) fn alongside(&mut self, step: &'static str, took: Duration) {
        self.steps.push((step, took));
    }

    /// Observes every step into `into`.
    pub(crate) fn observe(&self, into: &StepHistograms) {
        for (step, took) in &self.steps {
            let labels = StepLabels { operation: self.operation, step };
            into.get_or_create(&labels).observe(took.as_secs_f64());
        }
    }

    /// One line for the debug log: `step=µs …`.
    pub(crate) fn summary(&self) -> String {
        self.steps
            .iter()
            .map(|(s, d)| format!("{s}={}us", d.as_micros()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
