//! The crictl-compatible client commands of the `podbay` binary.

pub mod containers;
pub mod ctrconfig;
pub mod images;
pub mod podconfig;
pub mod stream;
pub mod topology;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Where the CLI connects: `--endpoint`, else `PODBAY_ENDPOINT`, else the default socket.
pub fn endpoint_path(flag: Option<&str>) -> PathBuf {
    let raw = flag
        .map(str::to_owned)
        .or_else(|| std::env::var("PODBAY_ENDPOINT").ok())
        .unwrap_or_else(|| "/run/podbay/podbay.sock".into());
    PathBuf::from(raw.strip_prefix("unix://").unwrap_or(&raw))
}

pub async fn connect(path: &Path) -> anyhow::Result<RuntimeServiceClient<Channel>> {
    // ExecSync answers carry up to 16 MiB per stream.
    Ok(RuntimeServiceClient::new(channel(path).await?).max_decoding_message_size(64 << 20))
}

/// A gRPC channel to the daemon's socket (CRI and podbay.admin.v1 share it).
pub async fn channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://podbay.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connect to podbay at {shown}"))?;
    Ok(channel)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// `podbay pods` options (crictl's).
#[derive(Debug, clap::Args)]
pub struct PodsQuery {
    /// A pod id or id prefix
    #[arg(long)]
    pub id: Option<String>,
    /// ready or notready
    #[arg(long)]
    pub state: Option<String>,
    /// key=value; repeat to require several
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Only pods whose name contains this
    #[arg(long)]
    pub name: Option<String>,
    /// Only print pod ids
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Text for a table cell: control characters escaped, so a name cannot break or fake a row.
pub(crate) fn cell(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.escape_debug().to_string()
    } else {
        text.to_owned()
    }
}

/// A gRPC failure as the CLI shows it: the code's name, then the daemon's message.
pub(crate) fn status_msg(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

pub async fn runp(ep: &Path, file: &Path) -> anyhow::Result<()> {
    let config = podconfig::read(file)?;
    let mut c = connect(ep).await?;
    let resp = c
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), ..Default::default() })
        .await
        .map_err(status_msg)?;
    println!("{}", resp.into_inner().pod_sandbox_id);
    Ok(())
}

pub async fn pods(ep: &Path, q: PodsQuery) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let state = match q.state.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("ready" | "sandbox_ready") => Some(cri::PodSandboxState::SandboxReady),
        Some("notready" | "sandbox_notready") => Some(cri::PodSandboxState::SandboxNotready),
        Some(other) => bail!("--state: {other:?} is not ready or notready"),
    };
    let filter = cri::PodSandboxFilter {
        id: q.id.clone().unwrap_or_default(),
        state: state.map(|s| cri::PodSandboxStateValue { state: s as i32 }),
        label_selector: parse_labels(&q.labels)?,
    };
    let resp = c
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
        .await
        .map_err(status_msg)?;
    let mut items = resp.into_inner().items;
    if let Some(name) = &q.name {
        items.retain(|p| p.metadata.as_ref().is_some_and(|m| m.name.contains(name.as_str())));
    }
    items.reverse(); // newest first, as crictl shows them
    if q.quiet {
        for p in &items {
            println!("{}", p.id);
        }
        return Ok(());
    }
    match q.output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "items": items }))?)
        }
        Output::Yaml => {
            print!("{}", serde_norway::to_string(&serde_json::json!({ "items": items }))?)
        }
        Output::Table => {
            println!(
                "{:<13}  {:<20}  {:<8}  {:<30}  {:<15}  {:<7}  RUNTIME",
                "POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT"
            );
            for p in &items {
                let m = p.metadata.clone().unwrap_or_default();
                let state = if p.state == cri::PodSandboxState::SandboxReady as i32 {
                    "Ready"
                } else {
                    "NotReady"
                };
                println!(
                    "{:<13}  {:<20}  {:<8}  {:<30}  {:<15}  {:<7}  {}",
                    &p.id[..13.min(p.id.len())],
                    ago(p.created_at),
                    state,
                    cell(&m.name),
                    cell(&m.namespace),
                    m.attempt,
                    if p.runtime_handler.is_empty() { "(default)" } else { &p.runtime_handler }
                );
            }
        }
    }
    Ok(())
}

/// `--label key=value` flags as a label selector.
fn parse_labels(flags: &[String]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    flags
        .iter()
        .map(|l| {
            let (k, v) =
                l.split_once('=').with_context(|| format!("--label {l:?}: expected key=value"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn ago(created_ns: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let s = (now - created_ns).max(0) / 1_000_000_000;
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

pub async fn inspectp(ep: &Path, ids: &[String]) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    for id in ids {
        let resp = c
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            })
            .await
            .map_err(status_msg)?
            .into_inner();
        let mut status = serde_json::to_value(&resp.status)?;
        if let Some(state) = status.get_mut("state") {
            let ready = state.as_i64() == Some(cri::PodSandboxState::SandboxReady as i64);
            *state = if ready { "SANDBOX_READY" } else { "SANDBOX_NOTREADY" }.into();
        }
        let info = resp
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "status": status, "info": info }))?
        );
    }
    Ok(())
}

pub async fn stopp(ep: &Path, ids: &[String]) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    for id in ids {
        c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
            .map_err(|e| status_msg(e).context(format!("stop pod {id}")))?;
        println!("Stopped sandbox {id}");
    }
    Ok(())
}

pub async fn rmp(ep: &Path, ids: &[String], all: bool) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let mut ids = ids.to_vec();
    if all {
        let items = c
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(status_msg)?
            .into_inner()
            .items;
        ids.extend(items.into_iter().map(|p| p.id));
    } else if ids.is_empty() {
        bail!("give pod ids, or --all");
    }
    let mut failed = Vec::new();
    for id in ids {
        // Every pod is tried; each failure is reported, and the exit status says so.
        match c
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
        {
            Ok(_) => println!("Removed sandbox {id}"),
            Err(e) => {
                eprintln!("podbay: remove pod {id}: {:#}", status_msg(e));
                failed.push(id);
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        n => bail!("{n} pod(s) not removed: {}", failed.join(", ")),
    }
}

/// The runtime version of the daemon serving `ep`.
pub async fn daemon_version(ep: &Path) -> anyhow::Result<String> {
    let mut c = connect(ep).await?;
    let v = c.version(cri::VersionRequest::default()).await.map_err(status_msg)?.into_inner();
    Ok(v.runtime_version)
}

pub async fn version(ep: &Path) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let v = c.version(cri::VersionRequest::default()).await.map_err(status_msg)?.into_inner();
    println!("Version:  {}", v.version);
    println!("RuntimeName:  {}", v.runtime_name);
    println!("RuntimeVersion:  {}", v.runtime_version);
    println!("RuntimeApiVersion:  {}", v.runtime_api_version);
    Ok(())
}

/// The runtime's verbose status: conditions, and the info JSON.
pub(crate) async fn status_info(
    ep: &Path,
) -> anyhow::Result<(Option<cri::RuntimeStatus>, serde_json::Value)> {
    let mut c = connect(ep).await?;
    let s = c.status(cri::StatusRequest { verbose: true }).await.map_err(status_msg)?.into_inner();
    let info = s
        .info
        .get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .unwrap_or_default();
    Ok((s.status, info))
}

/// `podbay net show`: the node network as `ip` and `nft` would show it, in one place.
pub async fn net_show(ep: &Path, output: &str) -> anyhow::Result<()> {
    let (_, info) = status_info(ep).await?;
    let net = &info["network"];
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(net)?),
        "text" => print!("{}", render_network(net)),
        "dot" | "svg" => {
            let view = topology::NodeView {
                name: "node".into(),
                net: Some(serde_json::from_value(net.clone())?),
            };
            let nodes = [view];
            let picture = if output == "dot" {
                topology::dot(&nodes, None)
            } else {
                topology::svg(&nodes, None)
            };
            print!("{picture}");
        }
        other => bail!("unknown output format {other:?} (text, json, dot or svg)"),
    }
    Ok(())
}

fn render_network(net: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let ready = if net["ready"] == true {
        "ready".to_owned()
    } else {
        format!("NOT READY: {}", s(&net["reason"]))
    };
    let _ = writeln!(out, "network:      {ready}");
    let prefix = s(&net["subnet"]).rsplit('/').next().unwrap_or_default().to_owned();
    let _ = writeln!(
        out,
        "bridge:       {} (gateway {}/{prefix})",
        s(&net["bridge"]),
        s(&net["gateway"])
    );
    let _ =
        writeln!(out, "subnet:       {} (cluster {})", s(&net["subnet"]), s(&net["clusterCidr"]));
    let _ = writeln!(out, "mtu:          {}", s(&net["mtu"]));
    let _ = writeln!(out, "node ip:      {}", s(&net["nodeIp"]));
    let _ =
        writeln!(out, "masquerade:   {}   hairpin: {}", s(&net["masquerade"]), s(&net["hairpin"]));
    let _ = writeln!(out, "subnets:      {}", s(&net["subnetStore"]));
    let o = &net["overlay"];
    if o.is_object() {
        let _ = writeln!(
            out,
            "overlay:      {} vni {} port {} local {} vtep {} mtu {} tx-csum-offload {}",
            s(&o["device"]),
            s(&o["vni"]),
            s(&o["port"]),
            s(&o["localVtep"]),
            s(&o["vtepMac"]),
            s(&o["mtu"]),
            if o["txChecksumOffload"].as_bool() == Some(true) { "on" } else { "off" }
        );
        if let Some(e) = o["storeError"].as_str() {
            let _ = writeln!(out, "lease store:  NOT FOLLOWED: {e}");
        }
        let _ = writeln!(
            out,
            "\n{:<16} {:<18} {:<18} {:<6} {:<6} FDB",
            "PEER NODE", "SUBNET", "VTEP MAC", "ROUTE", "ARP"
        );
        let yes = |v: &serde_json::Value| if v == true { "yes" } else { "NO" };
        for p in o["peers"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:<16} {:<18} {:<18} {:<6} {:<6} {}",
                s(&p["nodeIp"]),
                s(&p["subnet"]),
                s(&p["vtepMac"]),
                yes(&p["route"]),
                yes(&p["arp"]),
                yes(&p["fdb"])
            );
        }
    }
    let _ = writeln!(out, "\n{:<16} {:<14} {:<18} {:<30} HOSTPORTS", "IP", "VETH", "MAC", "POD");
    for p in net["pods"].as_array().into_iter().flatten() {
        let ports: Vec<String> = p["hostPorts"].as_array().into_iter().flatten().map(s).collect();
        let pod = format!("{}/{}", s(&p["namespace"]), s(&p["name"]));
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:<18} {:<30} {}",
            s(&p["ip"]),
            s(&p["veth"]),
            s(&p["mac"]),
            pod,
            if ports.is_empty() { "-".into() } else { ports.join(", ") }
        );
    }
    let _ = writeln!(out, "\n{}", s(&net["rules"]));
    out
}

pub async fn info(ep: &Path) -> anyhow::Result<()> {
    let (status, info) = status_info(ep).await?;
    let out = serde_json::json!({ "status": status, "info": info });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
