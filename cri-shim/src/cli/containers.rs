//! Container commands, as crictl has them: create, start, stop, rm, ps, inspect, logs,
//! exec (ExecSync), stats, statsp and run (pod + container in one go).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::{Output, ago, channel, connect, ctrconfig, parse_labels, podconfig, status_msg};

type Client = RuntimeServiceClient<Channel>;

/// `podbay ps` options (crictl's).
#[derive(Debug, clap::Args)]
pub struct PsQuery {
    /// Show every container, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// A container id or id prefix
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod (id or prefix)
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Only containers whose name contains this
    #[arg(long)]
    pub name: Option<String>,
    /// created, running, exited or unknown
    #[arg(long)]
    pub state: Option<String>,
    /// key=value; repeat to require several
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Only print container ids
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `podbay logs` options (crictl's).
#[derive(Debug, clap::Args)]
pub struct LogsQuery {
    /// A container id or unique prefix
    pub id: String,
    /// Keep printing new lines until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Prefix each line with its RFC 3339 timestamp
    #[arg(short, long)]
    pub timestamps: bool,
}

/// Creates a container from crictl's container and pod config files; prints its id.
pub async fn create(
    ep: &Path,
    pod: &str,
    container: &Path,
    pod_file: &Path,
    pull: bool,
) -> anyhow::Result<()> {
    let config = ctrconfig::read(container)?;
    let sandbox = podconfig::read(pod_file)?;
    let mut c = connect(ep).await?;
    if pull {
        ensure_image(ep, &config, &sandbox).await?;
    }
    println!("{}", create_in(&mut c, pod, config, sandbox).await?);
    Ok(())
}

/// `podbay run`: the pod, then the container in it, started; prints the container's id.
pub async fn run(ep: &Path, container: &Path, pod_file: &Path, pull: bool) -> anyhow::Result<()> {
    let config = ctrconfig::read(container)?;
    let sandbox = podconfig::read(pod_file)?;
    let mut c = connect(ep).await?;
    if pull {
        ensure_image(ep, &config, &sandbox).await?;
    }
    let req = cri::RunPodSandboxRequest { config: Some(sandbox.clone()), ..Default::default() };
    let pod = c.run_pod_sandbox(req).await.map_err(status_msg)?.into_inner().pod_sandbox_id;
    let id = create_in(&mut c, &pod, config, sandbox).await?;
    c.start_container(cri::StartContainerRequest { container_id: id.clone() })
        .await
        .map_err(|e| status_msg(e).context(format!("start container {id}")))?;
    println!("{id}");
    Ok(())
}

async fn create_in(
    c: &mut Client,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: cri::PodSandboxConfig,
) -> anyhow::Result<String> {
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.to_owned(),
        config: Some(config),
        sandbox_config: Some(sandbox),
    };
    Ok(c.create_container(req).await.map_err(status_msg)?.into_inner().container_id)
}

/// Pulls the container's image unless the store already has it (crictl's pull-on-create).
async fn ensure_image(
    ep: &Path,
    config: &cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> anyhow::Result<()> {
    let image = config.image.clone().context("the container config names no image")?;
    let mut c = ImageServiceClient::new(channel(ep).await?);
    let status = c
        .image_status(cri::ImageStatusRequest { image: Some(image.clone()), verbose: false })
        .await
        .map_err(status_msg)?;
    if status.into_inner().image.is_none() {
        let req = cri::PullImageRequest {
            image: Some(image.clone()),
            auth: None,
            sandbox_config: Some(sandbox.clone()),
        };
        c.pull_image(req)
            .await
            .map_err(|e| status_msg(e).context(format!("pull {}", image.image)))?;
    }
    Ok(())
}

pub async fn start(ep: &Path, ids: &[String]) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    for id in ids {
        c.start_container(cri::StartContainerRequest { container_id: id.clone() })
            .await
            .map_err(|e| status_msg(e).context(format!("start container {id}")))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn stop(ep: &Path, ids: &[String], timeout: i64) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    for id in ids {
        c.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout })
            .await
            .map_err(|e| status_msg(e).context(format!("stop container {id}")))?;
        println!("{id}");
    }
    Ok(())
}

/// Removes containers; a running one only with `force` (crictl's rule).
pub async fn rm(ep: &Path, ids: &[String], force: bool, all: bool) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let mut ids = ids.to_vec();
    if all {
        ids.extend(list(&mut c, cri::ContainerFilter::default()).await?.into_iter().map(|x| x.id));
    } else if ids.is_empty() {
        bail!("give container ids, or --all");
    }
    let mut failed = Vec::new();
    for id in ids {
        // Every container is tried; each failure is reported, and the exit status says so.
        if let Err(e) = remove_one(&mut c, &id, force).await {
            eprintln!("podbay: {e:#}");
            failed.push(id);
        } else {
            println!("{id}");
        }
    }
    match failed.len() {
        0 => Ok(()),
        n => bail!("{n} container(s) not removed: {}", failed.join(", ")),
    }
}

async fn remove_one(c: &mut Client, id: &str, force: bool) -> anyhow::Result<()> {
    if !force {
        let s = status(c, id, false).await?.status.unwrap_or_default();
        if s.state == cri::ContainerState::ContainerRunning as i32 {
            bail!("container {id} is running: stop it first, or use --force");
        }
    }
    c.remove_container(cri::RemoveContainerRequest { container_id: id.to_owned() })
        .await
        .map_err(|e| status_msg(e).context(format!("remove container {id}")))?;
    Ok(())
}

async fn list(c: &mut Client, filter: cri::ContainerFilter) -> anyhow::Result<Vec<cri::Container>> {
    let req = cri::ListContainersRequest { filter: Some(filter) };
    Ok(c.list_containers(req).await.map_err(status_msg)?.into_inner().containers)
}

async fn status(
    c: &mut Client,
    id: &str,
    verbose: bool,
) -> anyhow::Result<cri::ContainerStatusResponse> {
    let req = cri::ContainerStatusRequest { container_id: id.to_owned(), verbose };
    c.container_status(req)
        .await
        .map_err(|e| status_msg(e).context(format!("container {id}")))
        .map(tonic::Response::into_inner)
}

fn state_name(state: i32) -> &'static str {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => "Created",
        Ok(cri::ContainerState::ContainerRunning) => "Running",
        Ok(cri::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

fn parse_state(s: &str) -> anyhow::Result<cri::ContainerState> {
    Ok(match s.to_ascii_lowercase().trim_start_matches("container_") {
        "created" => cri::ContainerState::ContainerCreated,
        "running" => cri::ContainerState::ContainerRunning,
        "exited" => cri::ContainerState::ContainerExited,
        "unknown" => cri::ContainerState::ContainerUnknown,
        _ => bail!("--state: {s:?} is not created, running, exited or unknown"),
    })
}

/// Pod names by id, for the POD columns.
async fn pod_names(c: &mut Client) -> anyhow::Result<HashMap<String, String>> {
    let pods = c
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .map_err(status_msg)?
        .into_inner()
        .items;
    Ok(pods.into_iter().map(|p| (p.id, p.metadata.map(|m| m.name).unwrap_or_default())).collect())
}

fn short(id: &str) -> &str {
    &id[..13.min(id.len())]
}

pub async fn ps(ep: &Path, q: PsQuery) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let state = match (&q.state, q.all) {
        (Some(s), _) => Some(parse_state(s)?),
        (None, false) => Some(cri::ContainerState::ContainerRunning),
        (None, true) => None,
    };
    let filter = cri::ContainerFilter {
        id: q.id.clone().unwrap_or_default(),
        state: state.map(|s| cri::ContainerStateValue { state: s as i32 }),
        pod_sandbox_id: q.pod.clone().unwrap_or_default(),
        label_selector: parse_labels(&q.labels)?,
    };
    let mut items = list(&mut c, filter).await?;
    if let Some(name) = &q.name {
        items.retain(|x| x.metadata.as_ref().is_some_and(|m| m.name.contains(name.as_str())));
    }
    items.sort_by_key(|x| std::cmp::Reverse(x.created_at)); // newest first, as crictl
    if q.quiet {
        for x in &items {
            println!("{}", x.id);
        }
        return Ok(());
    }
    match q.output {
        Output::Json | Output::Yaml => {
            print_doc(q.output, &serde_json::json!({ "containers": items }))?
        }
        Output::Table => {
            let pods = pod_names(&mut c).await?;
            println!(
                "{:<13}  {:<30}  {:<16}  {:<8}  {:<20}  {:<7}  {:<13}  POD",
                "CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID"
            );
            for x in &items {
                let m = x.metadata.clone().unwrap_or_default();
                let image = x.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
                println!(
                    "{:<13}  {:<30}  {:<16}  {:<8}  {:<20}  {:<7}  {:<13}  {}",
                    short(&x.id),
                    super::cell(image),
                    ago(x.created_at),
                    state_name(x.state),
                    super::cell(&m.name),
                    m.attempt,
                    short(&x.pod_sandbox_id),
                    super::cell(pods.get(&x.pod_sandbox_id).map(String::as_str).unwrap_or("-")),
                );
            }
        }
    }
    Ok(())
}

/// Status (with state names, as crictl prints them) and the verbose info of containers.
pub async fn inspect(ep: &Path, ids: &[String], output: Output) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    for id in ids {
        let resp = status(&mut c, id, true).await?;
        let mut status = serde_json::to_value(&resp.status)?;
        if let Some(state) = status.get_mut("state") {
            let name = cri::ContainerState::try_from(state.as_i64().unwrap_or(-1) as i32)
                .map_or("CONTAINER_UNKNOWN", |s| s.as_str_name());
            *state = name.into();
        }
        let info = resp
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .unwrap_or_default();
        print_doc(output, &serde_json::json!({ "status": status, "info": info }))?;
    }
    Ok(())
}

/// Runs a command in a container (ExecSync), passes its output through and returns its
/// exit code.
pub async fn exec(ep: &Path, id: &str, cmd: &[String], timeout: i64) -> anyhow::Result<i32> {
    let mut c = connect(ep).await?;
    let req = cri::ExecSyncRequest { container_id: id.to_owned(), cmd: cmd.to_vec(), timeout };
    let r = c.exec_sync(req).await.map_err(status_msg)?.into_inner();
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    Ok(r.exit_code)
}

/// One line of a CRI log file: `<RFC3339Nano> <stdout|stderr> <P|F> <text>`.
#[derive(Debug, PartialEq, Eq)]
struct LogEntry<'a> {
    time: &'a str,
    stderr: bool,
    partial: bool,
    text: &'a str,
}

fn parse_log_line(line: &str) -> Option<LogEntry<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(LogEntry {
        time,
        stderr: match stream {
            "stdout" => false,
            "stderr" => true,
            _ => return None,
        },
        partial: tag.split(':').next() == Some("P"),
        text,
    })
}

/// Whole lines rebuilt from a CRI log's chunks (P chunks joined to their F), per stream.
#[derive(Default)]
struct Lines {
    pending: [Option<(String, String)>; 2],
    done: Vec<(bool, String, String)>,
}

impl Lines {
    fn push(&mut self, e: LogEntry<'_>) {
        let slot = &mut self.pending[e.stderr as usize];
        let (time, mut text) = slot.take().unwrap_or_else(|| (e.time.to_owned(), String::new()));
        text.push_str(e.text);
        if e.partial {
            *slot = Some((time, text));
        } else {
            text.push('\n');
            self.done.push((e.stderr, time, text));
        }
    }

    /// Lines still partial at the end of the file, as they are.
    fn flush(&mut self) {
        for (stderr, slot) in self.pending.iter_mut().enumerate() {
            if let Some((time, text)) = slot.take() {
                self.done.push((stderr == 1, time, text));
            }
        }
    }

    fn print(&mut self, timestamps: bool, skip: usize) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for (stderr, time, text) in self.done.drain(..).skip(skip) {
            let w: &mut dyn Write = if stderr { &mut err } else { &mut out };
            if timestamps {
                write!(w, "{time} ")?;
            }
            w.write_all(text.as_bytes())?;
        }
        out.flush()?;
        err.flush()
    }
}

/// Complete lines of `buf` from `*start`, fed into `lines`; `*start` moves past them.
fn feed(buf: &[u8], start: &mut usize, lines: &mut Lines) {
    while let Some(n) = buf[*start..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&buf[*start..*start + n]);
        if let Some(e) = parse_log_line(&line) {
            lines.push(e);
        }
        *start += n + 1;
    }
}

/// Prints a container's log from its CRI log file, as `crictl logs` does.
pub async fn logs(ep: &Path, q: LogsQuery) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let resp = status(&mut c, &q.id, false).await?;
    let s = resp.status.unwrap_or_default();
    if s.log_path.is_empty() {
        bail!("container {} has no log path (its pod has no log_directory)", q.id);
    }
    let path = Path::new(&s.log_path);
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).with_context(|| format!("read {}", path.display()))?;
    let (mut lines, mut used) = (Lines::default(), 0);
    feed(&buf, &mut used, &mut lines);
    if !q.follow {
        lines.flush();
    }
    let skip = q.tail.map_or(0, |n| lines.done.len().saturating_sub(n));
    lines.print(q.timestamps, skip)?;
    if !q.follow {
        return Ok(());
    }
    buf.drain(..used);
    let mut offset = file.stream_position()?;
    let mut inode = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
    loop {
        let running = status(&mut c, &s.id, false)
            .await?
            .status
            .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
        // A rotated log (ReopenContainerLog after a move) is followed into the new file.
        match std::fs::metadata(path) {
            Ok(m) if std::os::unix::fs::MetadataExt::ino(&m) != inode => {
                file.read_to_end(&mut buf)?;
                file = std::fs::File::open(path)?;
                inode = std::os::unix::fs::MetadataExt::ino(&m);
                offset = 0;
            }
            _ => {}
        }
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut buf)?;
        offset = file.stream_position()?;
        let mut used = 0;
        feed(&buf, &mut used, &mut lines);
        buf.drain(..used);
        if !running {
            lines.flush();
        }
        lines.print(q.timestamps, 0)?;
        if !running {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// JSON, or YAML when asked for.
fn print_doc(output: Output, doc: &serde_json::Value) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_norway::to_string(doc)?),
        _ => println!("{}", serde_json::to_string_pretty(doc)?),
    }
    Ok(())
}

/// Two samples `seconds` apart (CPU % is computed between them).
async fn two_samples<T>(
    c: &mut Client,
    seconds: u64,
    mut sample: impl AsyncFnMut(&mut Client) -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<(Vec<T>, Vec<T>)> {
    let first = sample(c).await?;
    tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
    Ok((first, sample(c).await?))
}

/// CPU cores used between two samples, as a percentage of one core.
fn cpu_percent(a: Option<&cri::CpuUsage>, b: Option<&cri::CpuUsage>) -> f64 {
    let (Some(a), Some(b)) = (a, b) else { return 0.0 };
    let used = |u: &cri::CpuUsage| u.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value);
    let dt = (b.timestamp - a.timestamp) as f64;
    if dt <= 0.0 {
        return 0.0;
    }
    used(b).saturating_sub(used(a)) as f64 / dt * 100.0
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n}B"),
        1024..1_048_576 => format!("{:.1}kB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1}MB", n as f64 / 1_048_576.0),
        _ => format!("{:.2}GB", n as f64 / 1_073_741_824.0),
    }
}

fn working_set(m: Option<&cri::MemoryUsage>) -> u64 {
    m.and_then(|m| m.working_set_bytes.as_ref()).map_or(0, |v| v.value)
}

/// `podbay stats`: CPU % (over `seconds`), memory working set and writable layer of
/// running containers (or the ids given).
pub async fn stats(
    ep: &Path,
    ids: &[String],
    pod: Option<&str>,
    seconds: u64,
    output: Output,
) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let sample = async |c: &mut Client| -> anyhow::Result<Vec<cri::ContainerStats>> {
        if !ids.is_empty() {
            let mut out = Vec::new();
            for id in ids {
                let req = cri::ContainerStatsRequest { container_id: id.clone() };
                let r = c.container_stats(req).await.map_err(status_msg)?.into_inner();
                out.extend(r.stats);
            }
            return Ok(out);
        }
        let filter = cri::ContainerStatsFilter {
            pod_sandbox_id: pod.unwrap_or_default().to_owned(),
            ..Default::default()
        };
        let req = cri::ListContainerStatsRequest { filter: Some(filter) };
        Ok(c.list_container_stats(req).await.map_err(status_msg)?.into_inner().stats)
    };
    let (first, second) = two_samples(&mut c, seconds, sample).await?;
    let key = |s: &cri::ContainerStats| s.attributes.as_ref().map(|a| a.id.clone());
    let before: HashMap<_, _> = first.iter().map(|s| (key(s), s)).collect();
    if output != Output::Table {
        return print_doc(output, &serde_json::json!({ "stats": second }));
    }
    println!(
        "{:<13}  {:<20}  {:>6}  {:>9}  {:>9}  INODES",
        "CONTAINER", "NAME", "CPU %", "MEM", "DISK"
    );
    for s in &second {
        let a = s.attributes.clone().unwrap_or_default();
        let cpu = cpu_percent(before.get(&key(s)).and_then(|b| b.cpu.as_ref()), s.cpu.as_ref());
        let layer = s.writable_layer.clone().unwrap_or_default();
        println!(
            "{:<13}  {:<20}  {:>6.2}  {:>9}  {:>9}  {}",
            short(&a.id),
            a.metadata.map(|m| m.name).unwrap_or_default(),
            cpu,
            bytes(working_set(s.memory.as_ref())),
            bytes(layer.used_bytes.map_or(0, |v| v.value)),
            layer.inodes_used.map_or(0, |v| v.value),
        );
    }
    Ok(())
}

/// `podbay statsp`: CPU % (over `seconds`), memory and eth0 bytes of pods.
pub async fn statsp(
    ep: &Path,
    id: Option<&str>,
    seconds: u64,
    output: Output,
) -> anyhow::Result<()> {
    let mut c = connect(ep).await?;
    let sample = async |c: &mut Client| -> anyhow::Result<Vec<cri::PodSandboxStats>> {
        let filter = cri::PodSandboxStatsFilter {
            id: id.unwrap_or_default().to_owned(),
            ..Default::default()
        };
        let req = cri::ListPodSandboxStatsRequest { filter: Some(filter) };
        Ok(c.list_pod_sandbox_stats(req).await.map_err(status_msg)?.into_inner().stats)
    };
    let (first, second) = two_samples(&mut c, seconds, sample).await?;
    let key = |s: &cri::PodSandboxStats| s.attributes.as_ref().map(|a| a.id.clone());
    let before: HashMap<_, _> = first.iter().map(|s| (key(s), s)).collect();
    if output != Output::Table {
        return print_doc(output, &serde_json::json!({ "stats": second }));
    }
    println!(
        "{:<30}  {:<13}  {:>6}  {:>9}  {:>9}  {:>9}",
        "POD", "POD ID", "CPU %", "MEM", "RX", "TX"
    );
    for s in &second {
        let a = s.attributes.clone().unwrap_or_default();
        let linux = s.linux.clone().unwrap_or_default();
        let prev = before.get(&key(s)).and_then(|b| b.linux.as_ref()).and_then(|l| l.cpu.as_ref());
        let eth0 = linux.network.and_then(|n| n.default_interface).unwrap_or_default();
        println!(
            "{:<30}  {:<13}  {:>6.2}  {:>9}  {:>9}  {:>9}",
            a.metadata.map(|m| m.name).unwrap_or_default(),
            short(&a.id),
            cpu_percent(prev, linux.cpu.as_ref()),
            bytes(working_set(linux.memory.as_ref())),
            bytes(eth0.rx_bytes.map_or(0, |v| v.value)),
            bytes(eth0.tx_bytes.map_or(0, |v| v.value)),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_parsed_and_joined() {
        let log = "2026-11-22T10:00:00.1Z stdout P hel\n\
                   2026-11-22T10:00:00.2Z stderr F oops\n\
                   2026-11-22T10:00:00.3Z stdout F lo\n\
                   2026-11-22T10:00:00.4Z stdout F \n\
                   2026-11-22T10:00:00.5Z stdout P tail";
        let mut lines = Lines::default();
        let mut used = 0;
        feed(log.as_bytes(), &mut used, &mut lines);
        assert_eq!(used, log.rfind('\n').unwrap() + 1, "the unfinished last line waits");
        lines.flush();
        let got: Vec<_> = lines.done.iter().map(|(e, t, s)| (*e, t.as_str(), s.as_str())).collect();
        assert_eq!(
            got,
            [
                (true, "2026-11-22T10:00:00.2Z", "oops\n"),
                (false, "2026-11-22T10:00:00.1Z", "hello\n"),
                (false, "2026-11-22T10:00:00.4Z", "\n"),
            ]
        );
        assert_eq!(parse_log_line("garbage"), None);
        assert_eq!(parse_log_line("t stdin F x"), None);
    }

    #[test]
    fn cpu_percent_from_two_samples() {
        let at = |t: i64, used: u64| cri::CpuUsage {
            timestamp: t,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: used }),
            ..Default::default()
        };
        assert_eq!(cpu_percent(Some(&at(0, 0)), Some(&at(1_000_000_000, 500_000_000))), 50.0);
        assert_eq!(cpu_percent(None, Some(&at(1, 1))), 0.0);
        assert_eq!(bytes(1536), "1.5kB");
    }
}
