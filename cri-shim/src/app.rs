//! The `podbay` command line: its arguments (clap) and what each command runs.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::cli::PodsQuery;
use crate::cli::containers::{LogsQuery, PsQuery};
use crate::config::Config;
use crate::{cli, server};

#[derive(Parser)]
#[command(
    name = "podbay",
    version,
    args_override_self = true,
    about = "A small, fast Kubernetes container runtime with pod networking built in"
)]
struct Cli {
    /// CRI endpoint for client commands (a socket path or unix:// URL) [env: PODBAY_ENDPOINT]
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: the CRI server on a Unix socket.
    Serve {
        #[command(flatten)]
        paths: DaemonPaths,
        /// error, warn, info, debug, trace (or a tracing filter)
        #[arg(long)]
        log_level: Option<String>,
        /// text or json
        #[arg(long)]
        log_format: Option<String>,
        /// Start over when the state database cannot be read (or is missing over a store
        /// that holds pods or images): move it aside, remove every pod and container found.
        #[arg(long)]
        reset_state: bool,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a pod sandbox from a crictl PodSandboxConfig file (JSON or YAML).
    Runp { file: PathBuf },
    /// List pod sandboxes.
    Pods(PodsQuery),
    /// Show the status of pod sandboxes (ids or unique prefixes).
    Inspectp {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop pod sandboxes.
    Stopp {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove pod sandboxes (stopping them first).
    Rmp {
        ids: Vec<String>,
        #[arg(short, long)]
        all: bool,
    },
    /// Create a container in a pod from crictl's container and pod config files.
    Create {
        pod: String,
        container_config: PathBuf,
        pod_config: PathBuf,
        /// Pull the image first if the store does not have it
        #[arg(long)]
        with_pull: bool,
    },
    /// Run a pod and a container in it from crictl's config files; prints the container id.
    Run {
        container_config: PathBuf,
        pod_config: PathBuf,
        /// Do not pull the image if the store does not have it
        #[arg(long)]
        no_pull: bool,
    },
    /// Start created containers.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop running containers: the stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL (0: kill at once)
        #[arg(short, long, default_value_t = 0)]
        timeout: i64,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers.
    Rm {
        ids: Vec<String>,
        /// Also remove running containers (stopping them first)
        #[arg(short, long)]
        force: bool,
        /// Every container
        #[arg(short, long)]
        all: bool,
    },
    /// List containers (running ones unless -a).
    Ps(PsQuery),
    /// Show the status of containers, with the OCI spec and pid.
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, value_enum, default_value = "json")]
        output: cli::Output,
    },
    /// Print a container's log.
    Logs(LogsQuery),
    /// Run a command in a running container and exit with its exit code: ExecSync by
    /// default (-s), streamed with -i (stdin) or -t (a terminal, raw, resized with yours).
    Exec {
        /// Seconds before the command is killed (0: no limit; ExecSync only)
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        /// Pass stdin to the command (streamed exec)
        #[arg(short, long)]
        interactive: bool,
        /// Give the command a terminal (streamed exec)
        #[arg(short, long)]
        tty: bool,
        /// ExecSync: collect the output, print it when the command exits
        #[arg(short, long, conflicts_with_all = ["interactive", "tty"])]
        sync: bool,
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Attach to a running container's stdio (its output from now on; stdin with -i; -t
    /// for a container with a terminal). Detaching (Ctrl-C, or the end of stdin with
    /// stdin_once) leaves it running.
    Attach {
        #[arg(short, long)]
        interactive: bool,
        #[arg(short, long)]
        tty: bool,
        id: String,
    },
    /// Forward local ports to ports on a pod's localhost: LOCAL:REMOTE (or PORT for the
    /// same on both sides), until interrupted.
    PortForward {
        pod: String,
        #[arg(required = true)]
        ports: Vec<String>,
    },
    /// CPU, memory and disk use of containers (running ones, or the ids given).
    Stats {
        ids: Vec<String>,
        /// Only containers of this pod
        #[arg(short, long)]
        pod: Option<String>,
        /// Seconds between the two samples CPU % is computed from
        #[arg(short, long, default_value_t = 1)]
        seconds: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Output,
    },
    /// CPU, memory and network use of pods.
    Statsp {
        /// A pod id or prefix
        #[arg(long)]
        id: Option<String>,
        /// Seconds between the two samples CPU % is computed from
        #[arg(short, long, default_value_t = 1)]
        seconds: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Output,
    },
    /// Show the runtime's version.
    Version,
    /// Show the runtime's status and configuration.
    Info,
    /// Pull an image (per-layer progress on a terminal).
    Pull {
        image: String,
        /// Registry credentials
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
    },
    /// List images (optionally those an image reference finds).
    Images {
        filter: Option<String>,
        /// Only print image ids
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Output,
    },
    /// Remove images (by id, tag, digest or short name).
    Rmi {
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Show images' status with manifest, layers and config.
    Inspecti {
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Bytes and inodes used by the image store.
    Imagefsinfo,
    /// Image store commands.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The node's pod network.
    Net {
        #[command(subcommand)]
        command: NetCommand,
    },
    /// A multi-node cluster on this machine (underlay bridge, etcd, one daemon per node),
    /// for experiments and tests.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Run Kubernetes Pod manifests (Pods; Deployments and ReplicaSets as that many pods)
    /// on this node with kubelet's semantics; stays in the foreground restarting containers
    /// by restartPolicy until Ctrl-C (which stops the pods) unless --detach.
    Play {
        file: PathBuf,
        /// Remove the pods (and their volumes and logs) the file made
        #[arg(long)]
        down: bool,
        /// Return once every pod is started
        #[arg(short, long)]
        detach: bool,
        /// Where pod logs and emptyDir volumes live
        #[arg(long, default_value = crate::play::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Check what this node needs to run podbay (kernel features, cgroups, dirs, network
    /// devices, other runtimes, etcd, the config); exits non-zero when a check fails.
    Doctor {
        #[command(flatten)]
        paths: DaemonPaths,
        /// text or json
        #[arg(short, long, default_value = "text")]
        output: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// (install) Write man pages for podbay and each of its commands into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

/// The config file and the paths `podbay serve` (and `podbay doctor`) take over it.
#[derive(clap::Args)]
struct DaemonPaths {
    /// Config file [default: /etc/podbay/config.toml if present]
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    root: Option<PathBuf>,
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the underlay, start etcd and N nodes, each with its own daemon, and wait until
    /// every node's pod network is ready.
    Up {
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        /// The underlay network: lab0 takes .1 (and runs etcd), node N takes .10+N
        #[arg(long, default_value = crate::lab::DEFAULT_UNDERLAY)]
        underlay: ipnet::Ipv4Net,
        /// An OCI layout or archive to import into every node (repeatable)
        #[arg(long = "image")]
        images: Vec<PathBuf>,
    },
    /// Each node: underlay IP, whether its network is ready, its subnet, VTEP MAC, peers.
    Status {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        #[arg(short, long, default_value = "text")]
        output: String,
    },
    /// The whole lab as a picture: the underlay, each node's bridge and pods, the VXLAN
    /// tunnels between nodes.
    Show {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        /// dot (Graphviz) or svg
        #[arg(short, long, visible_alias = "output", default_value = "svg")]
        format: String,
    },
    /// Run a command inside a node (`node1` or `1`; `hub` is the underlay namespace with
    /// etcd), with PODBAY_ENDPOINT set to the node's socket.
    Exec {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        /// Run it in this pod's network namespace (id or unique prefix)
        #[arg(long)]
        pod: Option<String>,
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print the node's CRI socket (for crictl --runtime-endpoint or podbay --endpoint).
    Endpoint {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        node: String,
    },
    /// Add one more node to a running lab (its daemon started, network ready).
    Add {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        /// An OCI layout or archive to import into the node (repeatable)
        #[arg(long = "image")]
        images: Vec<PathBuf>,
    },
    /// Stop a node's daemon (its pods keep running) or the lab's etcd: `node2`, `etcd`.
    Stop {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        what: String,
    },
    /// Start what `lab stop` stopped, and wait until it serves.
    Start {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
        /// A node: return once its daemon answers, ready or not
        #[arg(long)]
        no_wait: bool,
        what: String,
    },
    /// (internal) Build a lab and stay as the parent of its processes.
    #[command(hide = true)]
    Keep {
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        name: String,
        #[arg(long)]
        underlay: ipnet::Ipv4Net,
        #[arg(long = "image")]
        images: Vec<PathBuf>,
    },
    /// Stop and remove everything of the lab (also after a crash of its processes).
    Down {
        #[arg(long, default_value = crate::lab::DEFAULT_LAB)]
        name: String,
    },
}

#[derive(Subcommand)]
enum NetCommand {
    /// Bridge, subnet, gateway, MTU, each pod's IP, veth, MAC and hostPorts, and the
    /// nftables rules podbay owns; or the topology as a picture (dot, svg).
    Show {
        /// Output format: text, json, dot (Graphviz) or svg
        #[arg(short, long, visible_alias = "format", default_value = "text")]
        output: String,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI layout directory, an OCI archive or a `docker save` tar on this
    /// machine, keeping the names it carries.
    Import { path: PathBuf },
    /// Mount an image read-write (its layers + a fresh upper dir) as the rootfs of ID in
    /// the daemon's mount namespace, and print the path.
    Mount { image: String, id: String },
    /// Unmount and delete the rootfs of ID.
    Unmount { id: String },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration as TOML.
    Default,
}

fn init_logging(cfg: &Config) {
    // A plain level applies to podbay's own crates; libraries (h2, tonic) stay at warn.
    let level = &cfg.log.level;
    let directives = if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        format!("warn,podbay={level},podbay_runtime={level},podbay_netplug={level}")
    } else {
        level.clone()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes when the log goes to a file or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if cfg.log.format == "json" { builder.json().init() } else { builder.init() }
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. } | Command::Lab { .. }) {
        // A client whose output goes to a closed pipe (`podbay pods | head -1`) ends
        // quietly, as Unix tools do, instead of failing to print.
        // SAFETY: SIG_DFL installs no handler; no other thread runs yet.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let ep = cli::endpoint_path(cli.endpoint.as_deref());
    let rt =
        || tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start tokio");
    match cli.command {
        Command::Serve {
            paths: DaemonPaths { config, root, run_dir, socket },
            log_level,
            log_format,
            reset_state,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            cfg.root = root.unwrap_or(cfg.root);
            cfg.run_dir = run_dir.unwrap_or(cfg.run_dir);
            cfg.socket = socket.unwrap_or(cfg.socket);
            cfg.log.level = log_level.unwrap_or(cfg.log.level);
            cfg.log.format = log_format.unwrap_or(cfg.log.format);
            cfg.validate()?;
            init_logging(&cfg);
            rt()?.block_on(server::serve(cfg, reset_state))
        }
        Command::Config { command: ConfigCommand::Default } => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Command::Runp { file } => rt()?.block_on(cli::runp(&ep, &file)),
        Command::Pods(q) => rt()?.block_on(cli::pods(&ep, q)),
        Command::Inspectp { ids } => rt()?.block_on(cli::inspectp(&ep, &ids)),
        Command::Stopp { ids } => rt()?.block_on(cli::stopp(&ep, &ids)),
        Command::Rmp { ids, all } => rt()?.block_on(cli::rmp(&ep, &ids, all)),
        Command::Create { pod, container_config, pod_config, with_pull } => rt()?.block_on(
            cli::containers::create(&ep, &pod, &container_config, &pod_config, with_pull),
        ),
        Command::Run { container_config, pod_config, no_pull } => {
            rt()?.block_on(cli::containers::run(&ep, &container_config, &pod_config, !no_pull))
        }
        Command::Start { ids } => rt()?.block_on(cli::containers::start(&ep, &ids)),
        Command::Stop { timeout, ids } => rt()?.block_on(cli::containers::stop(&ep, &ids, timeout)),
        Command::Rm { ids, force, all } => {
            rt()?.block_on(cli::containers::rm(&ep, &ids, force, all))
        }
        Command::Ps(q) => rt()?.block_on(cli::containers::ps(&ep, q)),
        Command::Inspect { ids, output } => {
            rt()?.block_on(cli::containers::inspect(&ep, &ids, output))
        }
        Command::Logs(q) => rt()?.block_on(cli::containers::logs(&ep, q)),
        Command::Exec { timeout, interactive, tty, sync: _, id, cmd } => {
            let code = if interactive || tty {
                let io = cli::stream::Stdio { stdin: interactive, tty };
                rt()?.block_on(cli::stream::exec(&ep, &id, &cmd, io))?
            } else {
                rt()?.block_on(cli::containers::exec(&ep, &id, &cmd, timeout))?
            };
            std::process::exit(code)
        }
        Command::Attach { interactive, tty, id } => {
            let io = cli::stream::Stdio { stdin: interactive, tty };
            let code = rt()?.block_on(cli::stream::attach(&ep, &id, io))?;
            std::process::exit(code)
        }
        Command::PortForward { pod, ports } => {
            rt()?.block_on(cli::stream::port_forward(&ep, &pod, &ports))
        }
        Command::Stats { ids, pod, seconds, output } => {
            rt()?.block_on(cli::containers::stats(&ep, &ids, pod.as_deref(), seconds, output))
        }
        Command::Statsp { id, seconds, output } => {
            rt()?.block_on(cli::containers::statsp(&ep, id.as_deref(), seconds, output))
        }
        Command::Version => rt()?.block_on(cli::version(&ep)),
        Command::Info => rt()?.block_on(cli::info(&ep)),
        Command::Pull { image, creds } => {
            rt()?.block_on(cli::images::pull(&ep, &image, creds.as_deref()))
        }
        Command::Images { filter, quiet, output } => {
            rt()?.block_on(cli::images::images(&ep, filter.as_deref(), quiet, output))
        }
        Command::Rmi { refs } => rt()?.block_on(cli::images::rmi(&ep, &refs)),
        Command::Inspecti { refs } => rt()?.block_on(cli::images::inspecti(&ep, &refs)),
        Command::Imagefsinfo => rt()?.block_on(cli::images::imagefsinfo(&ep)),
        Command::Image { command: ImageCommand::Import { path } } => {
            rt()?.block_on(cli::images::import(&ep, &path))
        }
        Command::Image { command: ImageCommand::Mount { image, id } } => {
            rt()?.block_on(cli::images::mount(&ep, &image, &id))
        }
        Command::Image { command: ImageCommand::Unmount { id } } => {
            rt()?.block_on(cli::images::unmount(&ep, &id))
        }
        Command::Net { command: NetCommand::Show { output } } => {
            rt()?.block_on(cli::net_show(&ep, &output))
        }
        Command::Lab { command } => lab(command),
        Command::Play { file, down, detach, state_dir } => {
            let opts = crate::play::Options { file, down, detach, state_dir };
            let code = rt()?.block_on(crate::play::run(&ep, &opts))?;
            std::process::exit(code)
        }
        Command::Doctor { paths: DaemonPaths { config, root, run_dir, socket }, output } => {
            let opts = crate::doctor::Options { config, root, run_dir, socket };
            let checks = rt()?.block_on(crate::doctor::run(&opts));
            if !crate::doctor::print(&checks, output == "json") {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "podbay", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man_pages(&dir),
    }
}

/// `podbay.1` and `podbay-<command>.1` for each visible command, from the clap definition.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let top = Cli::command();
    let write = |name: &str, cmd: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))
    };
    for sub in top.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("podbay-{}", sub.get_name());
        write(&name, sub.clone().name(name.clone()))?;
    }
    write("podbay", top)
}

fn lab(command: LabCommand) -> anyhow::Result<()> {
    match command {
        LabCommand::Up { nodes, name, underlay, images } => {
            let started = std::time::Instant::now();
            let state = crate::lab::up(&crate::lab::UpOptions {
                name: name.clone(),
                nodes,
                underlay,
                images,
            })?;
            println!(
                "lab {name} up in {:.1} s: {} nodes on {}, etcd {}",
                started.elapsed().as_secs_f64(),
                state.nodes.len(),
                state.underlay,
                state.etcd
            );
            for n in &state.nodes {
                println!("  {:<8} {:<14} {}", n.name, n.ip.to_string(), n.socket().display());
            }
            Ok(())
        }
        LabCommand::Status { name, output } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(crate::lab::status(&name, output == "json"))
        }
        LabCommand::Show { name, format } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(crate::lab::show(&name, &format))
        }
        LabCommand::Exec { name, pod, node, cmd } => {
            let code = crate::lab::exec(&name, &node, pod.as_deref(), &cmd)?;
            std::process::exit(code)
        }
        LabCommand::Endpoint { name, node } => {
            let state = crate::lab::load(&name)?;
            println!("{}", crate::lab::find_node(&state, &node)?.socket().display());
            Ok(())
        }
        LabCommand::Add { name, images } => {
            let node = crate::lab::add(&name, &images)?;
            println!("{} {} {}", node.name, node.ip, node.socket().display());
            Ok(())
        }
        LabCommand::Stop { name, what } => crate::lab::stop(&name, &what),
        LabCommand::Start { name, no_wait, what } => crate::lab::start(&name, &what, !no_wait),
        LabCommand::Keep { nodes, name, underlay, images } => {
            crate::lab::keep(&crate::lab::UpOptions { name, nodes, underlay, images })
        }
        LabCommand::Down { name } => crate::lab::down(&name),
    }
}
