//! `podbay serve`: the CRI gRPC server on a Unix socket.

pub mod admin_service;
mod container;
pub mod container_config;
mod container_stats;
mod events;
mod exporter;
mod fields;
mod image;
pub mod image_service;
mod metrics;
pub mod runtime;
pub mod runtime_service;
mod sandbox;
pub mod sandbox_config;
mod sandbox_stats;
pub mod status;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use podbay_proto::admin::v1::images_server::ImagesServer;
use podbay_runtime::failpoint::Failpoints;
use podbay_runtime::{Runtime, RuntimeOptions};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::info;

use crate::config::Config;

/// Environment variable naming steps at which to inject failures (tests only).
pub const FAILPOINTS_ENV: &str = "PODBAY_FAILPOINTS";

/// The `podbay-supervisor` executable: configured, or beside the running `podbay`.
fn supervisor_exe(cfg: &Config) -> anyhow::Result<PathBuf> {
    if !cfg.supervisor_path.as_os_str().is_empty() {
        return Ok(cfg.supervisor_path.clone());
    }
    let me = std::env::current_exe().context("locate the podbay executable")?;
    Ok(me.with_file_name("podbay-supervisor"))
}

pub async fn serve(cfg: Config, reset_state: bool) -> anyhow::Result<()> {
    let supervisor_exe = supervisor_exe(&cfg)?;
    if !supervisor_exe.is_file() {
        bail!(
            "pod supervisor {} not found (set supervisor_path in the config)",
            supervisor_exe.display()
        );
    }
    let opts = RuntimeOptions {
        root: cfg.root.clone(),
        run: cfg.run_dir.clone(),
        supervisor_exe,
        stop_grace: Duration::from_secs(cfg.sandbox.stop_grace_seconds),
        shm_size: cfg.sandbox.shm_size_bytes,
        host_etc: "/etc".into(),
        network: cfg.network.to_config()?,
        registries: cfg.registry_config()?,
        image_limits: cfg.image.limits(),
        reset_state,
    };
    let failpoints = Failpoints::parse(&std::env::var(FAILPOINTS_ENV).unwrap_or_default());
    let runtime = Runtime::open(opts, failpoints).await?;
    let stream = crate::stream::StreamServer::start(&cfg.stream, runtime.clone())
        .await
        .context("start the streaming server")?;
    // Without a metrics address nothing is exported, and calls are not counted either.
    let rpc_metrics = if cfg.metrics.address.is_empty() {
        None
    } else {
        let (exporter, rpc_metrics) = exporter::Exporter::new(runtime.clone());
        exporter.serve(&cfg.metrics.address).await?;
        Some(rpc_metrics)
    };
    let listener = bind(&cfg.socket)?;
    info!(socket = %cfg.socket.display(), root = %cfg.root.display(), "podbay serving CRI");
    // systemd (Type=notify): ready once the socket takes connections.
    let status = format!("serving CRI on {}", cfg.socket.display());
    let ready = [sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)];
    if let Err(e) = sd_notify::notify(&ready) {
        tracing::warn!(error = %e, "telling the service manager we are ready (NOTIFY_SOCKET)");
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("shutting down; pods keep running");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    };
    let result = tonic::transport::Server::builder()
        .layer(tower::util::option_layer(rpc_metrics))
        .add_service(RuntimeServiceServer::new(runtime_service::CriService {
            runtime: runtime.clone(),
            defaults: container_config::Defaults {
                seccomp: cfg.container.unset_seccomp_profile.profile(),
            },
            stream,
        }))
        .add_service(ImageServiceServer::new(image_service::CriImageService {
            runtime: runtime.clone(),
        }))
        .add_service(ImagesServer::new(admin_service::AdminService { runtime: runtime.clone() }))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    runtime.release_mount_points();
    let _ = std::fs::remove_file(&cfg.socket);
    result.context("CRI server")
}

/// Binds the CRI socket (mode 0660). A stale socket file is replaced; a socket another
/// live process still answers on is refused.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("socket {} is in use by another running daemon", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("bind socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}
