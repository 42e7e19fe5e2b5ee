//! The `capcri` binary: the daemon, its per-pod monitor, and the admin CLI.

use capcri::config::{Config, LogFormat};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "capcri",
    version,
    about = "A Kubernetes CRI runtime with policy-driven Linux capabilities"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the Serve variant (with the bench
// gone, the others are small) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the CRI on a unix socket (defaults embedded; see --help).
    Serve(ServeArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script: `capcri completions bash > /etc/bash_completion.d/capcri`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The capability decision of a live container, from the running daemon.
    Explain {
        container_id: String,
        /// capcri's admin socket
        #[arg(long, default_value = capcri::config::DEFAULT_ADMIN_SOCKET)]
        admin_socket: PathBuf,
        /// table or json
        #[arg(long, default_value = "table")]
        output: String,
    },
    /// Capability policies: validate them, or dry-run a decision offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The per-pod monitor; started by `capcri serve`, not by hand.
    #[command(hide = true)]
    Monitor {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Forks the pod monitors; started by `capcri serve`, not by hand.
    #[command(hide = true, name = "monitor-template")]
    MonitorTemplate {
        /// Room for each monitor's command line (blank).
        #[arg(allow_hyphen_values = true)]
        room: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files (YAML and CEL); exit code 1 on any error.
    Check {
        /// Files or directories [default: /etc/capcri/policies]
        paths: Vec<PathBuf>,
    },
    /// Run the table-driven cases (*_test.yaml) next to the policies of DIR;
    /// prints a diff per failed case, exit code 1 on any failure.
    Test {
        /// Policy directory holding the policies and their *_test.yaml cases
        dir: PathBuf,
    },
    /// Evaluate the policies for a crictl-style pod and container config.
    Eval {
        /// Pod config JSON (crictl runp format)
        #[arg(long)]
        pod: PathBuf,
        /// Container config JSON (crictl create format)
        #[arg(long)]
        container: PathBuf,
        /// An image capcri has pulled: its config and file capabilities become the image facts
        #[arg(long)]
        image: Option<String>,
        /// Policy directory [default: /etc/capcri/policies]
        #[arg(long)]
        policy_dir: Option<PathBuf>,
        /// capcri's data directory, where --image is looked up [default: /var/lib/capcri]
        #[arg(long, default_value = capcri::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// table or json
        #[arg(long, default_value = "table")]
        output: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file; flags override it, it overrides the embedded defaults.
    #[arg(long, env = "CAPCRI_CONFIG")]
    config: Option<PathBuf>,
    /// CRI socket path [default: /run/capcri/capcri.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Admin API socket path [default: /run/capcri/capcri-admin.sock]
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Volatile state directory [default: /run/capcri]
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/capcri]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format on stderr [default: human]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// tracing filter, e.g. info or capcri=debug [default: info]
    #[arg(long)]
    log_level: Option<String>,
    /// Cgroup parent of pods kubelet gives none: an absolute path (cgroupfs) or a slice (systemd) [default: /capcri or capcri.slice]
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Cgroup driver, kubelet's cgroupDriver [default: systemd if PID 1 is systemd on cgroup v2, else cgroupfs]
    #[arg(long, value_enum)]
    cgroup_driver: Option<capcri::config::CgroupDriver>,
    /// Streaming server (exec, attach, port-forward) address, loopback; port 0 = any free port [default: 127.0.0.1:0]
    #[arg(long)]
    stream_address: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at GET /metrics on this address, e.g. 127.0.0.1:9090 [default: off]
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    /// CNI network config directory [default: /etc/cni/net.d]
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directory (repeatable) [default: /opt/cni/bin and /usr/lib/cni]
    #[arg(long = "cni-bin-dir")]
    cni_bin_dirs: Vec<PathBuf>,
    /// Capability policy directory [default: /etc/capcri/policies]
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Registry mirror, HOST=ENDPOINT (repeatable, tried in order), e.g. registry.k8s.io=127.0.0.1:5000
    #[arg(long = "registry-mirror", value_name = "HOST=ENDPOINT")]
    registry_mirrors: Vec<String>,
    /// Registry spoken to over plain HTTP, HOST:PORT (repeatable); loopback always is
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.socket {
            c.socket = v;
        }
        if let Some(v) = self.admin_socket {
            c.admin_socket = v;
        }
        if let Some(v) = self.stream_address {
            c.stream_address = v;
        }
        if let Some(v) = self.metrics_address {
            c.metrics_address = Some(v);
        }
        if let Some(v) = self.state_dir {
            c.state_dir = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = self.log_level {
            c.log_level = v;
        }
        if let Some(v) = self.cni_conf_dir {
            c.cni_conf_dir = v;
        }
        if !self.cni_bin_dirs.is_empty() {
            c.cni_bin_dirs = self.cni_bin_dirs;
        }
        if let Some(v) = self.policy_dir {
            c.policy_dir = v;
        }
        if let Some(v) = self.cgroup_parent {
            c.cgroup_parent = v;
        }
        if let Some(v) = self.cgroup_driver {
            c.cgroup_driver = Some(v);
        }
        for m in self.registry_mirrors {
            let Some((host, endpoint)) = m.split_once('=') else {
                anyhow::bail!(
                    "--registry-mirror {m:?} is not HOST=ENDPOINT, e.g. registry.k8s.io=127.0.0.1:5000"
                );
            };
            c.registries
                .mirrors
                .entry(host.to_string())
                .or_default()
                .push(endpoint.to_string());
        }
        c.registries.insecure.extend(self.insecure_registries);
        c.validate()?;
        Ok(c)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "capcri {} (CRI {})",
                env!("CARGO_PKG_VERSION"),
                capcri::cri::CRI_API_VERSION
            );
            std::process::ExitCode::SUCCESS
        }
        Command::Policy(cmd) => policy_command(cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "capcri", &mut std::io::stdout());
            std::process::ExitCode::SUCCESS
        }
        Command::Explain {
            container_id,
            admin_socket,
            output,
        } => explain(container_id, admin_socket, output),
        Command::Monitor { args } => {
            // Single-threaded on purpose: libcontainer must not be called
            // from a multi-threaded process (see monitor/). A monitor exec'd
            // directly (no template) gives back the loader's table too.
            capcri::util::loader_pages::release_relocation_tables();
            let code = capcri::monitor::monitor_main(&args);
            std::process::ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::MonitorTemplate { room: _ } => {
            // Single-threaded too: it forks the monitors, which then
            // do not map the relocation tables either.
            capcri::util::loader_pages::release_relocation_tables();
            let code = capcri::monitor::template_main();
            std::process::ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::Serve(args) => {
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("capcri: {e:#}");
                    return std::process::ExitCode::from(2);
                }
            };
            capcri::malloc_tuning::tune();
            capcri::server::init_tracing(config.log_format, &config.log_level);
            let released = capcri::util::loader_pages::release_relocation_tables();
            tracing::debug!(bytes = released, "relocation tables given back");
            // Blocking-pool threads (file and process work) exit after a
            // second without work, not tokio's 10 s: an idle node should
            // not hold a burst's extra threads and their stacks, and a new
            // thread costs tens of microseconds against the milliseconds of
            // any CRI call that needs one.
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_keep_alive(std::time::Duration::from_secs(1))
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("capcri: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(capcri::server::serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("capcri: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn policy_command(cmd: PolicyCommand) -> std::process::ExitCode {
    match cmd {
        PolicyCommand::Check { paths } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from(
                    capcri::capabilities::policy::DEFAULT_POLICY_DIR,
                )]
            } else {
                paths
            };
            let (report, ok) = capcri::capabilities::policy::cli_check(&paths);
            print!("{report}");
            if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        PolicyCommand::Test { dir } => {
            let (report, ok) = capcri::capabilities::policy::cli_test(&dir);
            print!("{report}");
            if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        PolicyCommand::Eval {
            pod,
            container,
            image,
            policy_dir,
            data_dir,
            output,
        } => {
            let run = || -> anyhow::Result<String> {
                let pod = std::fs::read_to_string(&pod)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", pod.display()))?;
                let ctr = std::fs::read_to_string(&container)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", container.display()))?;
                let image = match image {
                    Some(r) => Some(
                        capcri::container::capabilities::image_facts_from_data_dir(&data_dir, &r)
                            .map_err(|e| anyhow::anyhow!(e))?,
                    ),
                    None => None,
                };
                let json = match output.as_str() {
                    "json" => true,
                    "table" => false,
                    other => anyhow::bail!("--output {other:?}: use table or json"),
                };
                Ok(capcri::capabilities::policy::cli_eval(
                    policy_dir.as_deref(),
                    &pod,
                    &ctr,
                    image,
                    json,
                )?)
            };
            match run() {
                Ok(out) => {
                    print!("{out}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("capcri policy eval: {e:#}");
                    std::process::ExitCode::from(1)
                }
            }
        }
    }
}

fn explain(container_id: String, admin_socket: PathBuf, output: String) -> std::process::ExitCode {
    let run = async {
        use capcri::admin::proto::{ExplainRequest, admin_client::AdminClient};
        let channel = capcri::server::unix_channel(&admin_socket).await?;
        let reply = AdminClient::new(channel)
            .explain(ExplainRequest { container_id })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        Ok::<_, anyhow::Error>(match output.as_str() {
            "json" => reply.decision_json,
            _ => format!("container    {}\n{}", reply.container_id, reply.table),
        })
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capcri explain: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run) {
        Ok(text) => {
            println!("{}", text.trim_end());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capcri explain: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
