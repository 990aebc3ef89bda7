//! `[metrics] address`: Prometheus metrics on `/metrics` (prometheus-client's encoders: the
//! Prometheus text format, or OpenMetrics when the scraper asks for it).
//!
//! Three sources: what the runtime counts as it works (pod start steps, database commits,
//! image pulls, supervisor exits; [`Runtime::register_metrics`]), what the CRI layer here
//! counts per call ([`RpcLayer`]), and what is read at scrape time (pods and containers by
//! state, IPAM addresses, overlay peers).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use podbay_runtime::Runtime;
use podbay_runtime::container::{ContainerFilter, ContainerState};
use podbay_runtime::sandbox::{SandboxFilter, SandboxState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::codegen::http;

/// RPC names kept as label values; past this many distinct paths, calls count as `other`
/// (a client cannot grow the series without bound with made-up paths).
const MAX_METHODS: usize = 128;
/// Scrapes served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 16;
/// A scraper that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Counts and latencies of the gRPC calls the daemon serves (CRI and podbay's own).
#[derive(Clone)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    methods: Arc<Mutex<HashSet<String>>>,
}

impl RpcMetrics {
    fn new() -> Self {
        Self {
            calls: Family::default(),
            seconds: Family::new_with_constructor(podbay_runtime::steps::latency_histogram),
            methods: Arc::default(),
        }
    }

    /// The label for a request path (`/runtime.v1.RuntimeService/RunPodSandbox` →
    /// `RunPodSandbox`).
    fn method(&self, path: &str) -> String {
        let name = path.rsplit('/').next().unwrap_or_default();
        let mut seen = self.methods.lock().expect("methods lock");
        if seen.contains(name) {
            return name.to_owned();
        }
        let valid =
            !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if valid && seen.len() < MAX_METHODS {
            seen.insert(name.to_owned());
            return name.to_owned();
        }
        "other".to_owned()
    }

    fn record(&self, method: String, code: &'static str, took: f64) {
        self.seconds.get_or_create(&MethodLabels { method: method.clone() }).observe(took);
        self.calls.get_or_create(&CallLabels { method, code }).inc();
    }
}

/// A tower layer for tonic's server that records each call into [`RpcMetrics`].
#[derive(Clone)]
pub struct RpcLayer(RpcMetrics);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.metrics.method(req.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let out = call.await;
            // A unary call that fails is answered with its status in the headers (gRPC's
            // trailers-only response); one that succeeds carries none there.
            let code = match &out {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or("OK", |n| code_name(tonic::Code::from_i32(n))),
                Err(_) => "Unavailable",
            };
            metrics.record(method, code, started.elapsed().as_secs_f64());
            out
        })
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// What is read from the runtime at each scrape.
struct Gauges {
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    ipam: Family<StateLabels, Gauge>,
    overlay_peers: Gauge,
    overlay_synced: Gauge<f64, AtomicU64>,
}

impl Gauges {
    fn update(&self, rt: &Runtime) {
        let sandbox_states = [SandboxState::Ready, SandboxState::NotReady, SandboxState::Unknown];
        for state in sandbox_states {
            self.pods.get_or_create(&StateLabels { state: sandbox_state(state) }).set(0);
        }
        for p in rt.sandboxes().list(&SandboxFilter::default()) {
            self.pods.get_or_create(&StateLabels { state: sandbox_state(p.state) }).inc();
        }
        let container_states = [
            ContainerState::Created,
            ContainerState::Running,
            ContainerState::Exited,
            ContainerState::Unknown,
        ];
        for state in container_states {
            self.containers.get_or_create(&StateLabels { state: container_state(state) }).set(0);
        }
        for c in rt.containers().list(&ContainerFilter::default()) {
            self.containers.get_or_create(&StateLabels { state: container_state(c.state) }).inc();
        }
        let (used, capacity) = rt.network().ipam_usage().unwrap_or((0, 0));
        let used = used as i64;
        self.ipam.get_or_create(&StateLabels { state: "used" }).set(used);
        self.ipam
            .get_or_create(&StateLabels { state: "free" })
            .set((i64::from(capacity) - used).max(0));
        let (peers, synced) = rt.network().overlay_sync_state().unwrap_or((0, None));
        self.overlay_peers.set(peers as i64);
        let synced = synced
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.overlay_synced.set(synced);
    }
}

fn sandbox_state(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Ready => "ready",
        SandboxState::NotReady => "notready",
        SandboxState::Unknown => "unknown",
    }
}

fn container_state(s: ContainerState) -> &'static str {
    match s {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

/// The registry of everything and the scrape-time gauges.
pub struct Exporter {
    registry: Registry,
    gauges: Gauges,
    runtime: Runtime,
    /// One scrape updates and encodes at a time.
    scrape: tokio::sync::Mutex<()>,
}

impl Exporter {
    /// Registers every metric; returns the exporter and the layer that feeds its RPC part.
    pub fn new(runtime: Runtime) -> (Arc<Self>, RpcLayer) {
        let mut registry = Registry::with_prefix("podbay");
        runtime.register_metrics(&mut registry);
        let rpc = RpcMetrics::new();
        registry.register(
            "cri_requests",
            "gRPC calls served, by method and status code",
            rpc.calls.clone(),
        );
        registry.register(
            "cri_request_duration_seconds",
            "Duration of gRPC calls, by method",
            rpc.seconds.clone(),
        );
        let gauges = Gauges {
            pods: Family::default(),
            containers: Family::default(),
            ipam: Family::default(),
            overlay_peers: Gauge::default(),
            overlay_synced: Gauge::default(),
        };
        registry.register("pods", "Pod sandboxes by state", gauges.pods.clone());
        registry.register("containers", "Containers by state", gauges.containers.clone());
        registry.register(
            "ipam_addresses",
            "Pod addresses of the node's subnet, used (leased) and free",
            gauges.ipam.clone(),
        );
        registry.register(
            "overlay_peers",
            "Peer nodes programmed on the VXLAN device",
            gauges.overlay_peers.clone(),
        );
        registry.register(
            "overlay_last_sync_timestamp_seconds",
            "When the VXLAN device last matched the subnet leases (0: never, or no overlay)",
            gauges.overlay_synced.clone(),
        );
        let exporter =
            Arc::new(Self { registry, gauges, runtime, scrape: tokio::sync::Mutex::new(()) });
        (exporter, RpcLayer(rpc))
    }

    /// The metrics now, in OpenMetrics or in the Prometheus text format.
    pub async fn scrape(&self, openmetrics: bool) -> (&'static str, String) {
        let _one = self.scrape.lock().await;
        self.gauges.update(&self.runtime);
        let mut out = String::with_capacity(16 << 10);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
                .expect("writing to a String cannot fail");
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", out)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
                .expect("writing to a String cannot fail");
            (prometheus_client::encoding::prometheus_text::CONTENT_TYPE, out)
        }
    }

    /// Binds `address` and serves `/metrics` in the background; returns the bound address.
    pub async fn serve(self: Arc<Self>, address: &str) -> anyhow::Result<SocketAddr> {
        let addr: SocketAddr = address.parse().context("metrics.address")?;
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("bind metrics on {addr}"))?;
        let bound = listener.local_addr()?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let Ok((conn, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                    drop(slot);
                });
            }
        });
        tracing::info!(address = %bound, "metrics served on /metrics");
        Ok(bound)
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let reply = |status: u16, kind: &'static str, body: String| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", kind)
                .body(Full::new(Bytes::from(body)))
                .expect("a valid response")
        };
        if req.uri().path() != "/metrics" {
            return reply(404, "text/plain", "not found: metrics are on /metrics\n".into());
        }
        if !matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD) {
            return reply(405, "text/plain", "only GET\n".into());
        }
        let openmetrics = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        let (kind, body) = self.scrape(openmetrics).await;
        reply(200, kind, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        let m = RpcMetrics::new();
        assert_eq!(m.method("/runtime.v1.RuntimeService/RunPodSandbox"), "RunPodSandbox");
        assert_eq!(m.method("/x/bad-name"), "other");
        assert_eq!(m.method("/x/"), "other");
        for i in 0..MAX_METHODS * 2 {
            m.method(&format!("/x/Made{i}"));
        }
        assert_eq!(m.methods.lock().unwrap().len(), MAX_METHODS);
        assert_eq!(m.method("/x/Made9999"), "other");
        // Names seen before the cap keep their label.
        assert_eq!(m.method("/runtime.v1.RuntimeService/RunPodSandbox"), "RunPodSandbox");
    }

    #[test]
    fn codes_have_grpc_names() {
        assert_eq!(code_name(tonic::Code::from_i32(5)), "NotFound");
        assert_eq!(code_name(tonic::Code::from_i32(99)), "Unknown");
    }
}
