//! `capcri serve`: the CRI socket, its exclusivity, and graceful shutdown.

use crate::admin::AdminService;
use crate::admin::proto::admin_server::AdminServer;
use crate::config::{Config, LogFormat};
use crate::cri::{CriImageService, CriRuntimeService, RuntimeRoutes};
use crate::metrics::{CriMetricsLayer, MetricsServer, NodeCollector, Refresh, SnapshotSource};
use crate::node::Node;
use crate::node::exec::NodeStreams;
use anyhow::{Context, bail};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::info;

/// gRPC message limit: kubelet uses 16 MiB, ExecSync output and large pod
/// lists can exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Holds an exclusive flock next to the socket for the daemon's lifetime,
/// so a second `capcri serve` refuses instead of unlinking a live socket.
struct SocketLock {
    _file: std::fs::File,
}

fn lock_socket(socket: &Path) -> anyhow::Result<SocketLock> {
    let lock_path = socket.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
    // SAFETY: flock on an fd we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
        bail!(
            "another capcri serve (pid {}) already serves {}: stop it first, or give this one another --socket",
            holder.trim(),
            socket.display()
        );
    }
    file.set_len(0)?;
    std::fs::write(&lock_path, format!("{}\n", std::process::id()))?;
    Ok(SocketLock { _file: file })
}

/// Who may connect to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAccess {
    /// root and one group (mode 0660; gid 0 = root only): the CRI socket.
    Group(u32),
    /// root only (mode 0600, root:root) whatever `socket_gid` says: the
    /// admin socket. Its dry-run evaluates policies against any pod spec
    /// and its explain shows every container's decision, so a CRI client
    /// group is not an admin (issue 12 item 10).
    RootOnly,
}

impl SocketAccess {
    pub fn owner_and_mode(self) -> (u32, u32) {
        match self {
            SocketAccess::Group(gid) => (gid, 0o660),
            SocketAccess::RootOnly => (0, 0o600),
        }
    }
}

/// Binds `socket` with its owner and mode set before anyone can connect:
/// the socket is bound inside a fresh 0700 directory next to it, given its
/// owner and mode there, and only then renamed into place. Binding at the
/// final path and chmod-ing after leaves a window in which a socket made
/// with the process umask accepts connections that outlive the chmod.
fn bind_socket(socket: &Path, access: SocketAccess) -> anyhow::Result<UnixListener> {
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".capcri-bind-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a staging directory in {}", dir.display()))?;
    let staged = staging.path().join("socket");
    let listener = UnixListener::bind(&staged)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let (gid, mode) = access.owner_and_mode();
    std::os::unix::fs::chown(&staged, Some(0), Some(gid))
        .with_context(|| format!("cannot chown {}", socket.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", socket.display()))?;
    // rename(2) replaces a stale socket atomically.
    std::fs::rename(&staged, socket)
        .with_context(|| format!("cannot move the new socket to {}", socket.display()))?;
    Ok(listener)
}

/// The directories capcri keeps, each with its mode and why.
fn node_directories(config: &Config) -> Vec<(std::path::PathBuf, u32, bool)> {
    use crate::store::perms::{PRIVATE_DIR, TRAVERSE_DIR};
    // Socket group members must reach the sockets through their directory.
    let socket_dir_mode = if config.socket_gid != 0 {
        TRAVERSE_DIR
    } else {
        PRIVATE_DIR
    };
    let mut dirs = vec![
        // Traversed (never listed) by a user-namespaced container's init on
        // its way to its bundle's rootfs and its pod's hosts/resolv.conf.
        (config.state_dir.clone(), TRAVERSE_DIR, true),
        (config.pods_dir(), TRAVERSE_DIR, true),
        (config.bundles_dir(), TRAVERSE_DIR, true),
        // libcontainer's container state (pid, annotations): root only.
        // Its notify socket is bound by the monitor, not by the init.
        (config.runtime_root(), PRIVATE_DIR, true),
        // Layers and writable layers hold the images' setuid-root binaries:
        // a 0700 parent keeps local users from running them
        // (CVE-2021-41091). Only root (the overlay's mounter) goes in.
        (config.data_dir.clone(), PRIVATE_DIR, true),
        (config.images_dir(), PRIVATE_DIR, true),
        (config.meta_dir(), PRIVATE_DIR, true),
        (config.writable_layers_dir(), PRIVATE_DIR, true),
        (config.cni_state_dir(), PRIVATE_DIR, true),
    ];
    for socket in [&config.socket, &config.admin_socket] {
        if let Some(parent) = socket.parent()
            && !dirs.iter().any(|(d, _, _)| d == parent)
        {
            // Possibly shared (--socket /run/capcri.sock): made if missing,
            // never changed.
            dirs.push((parent.to_path_buf(), socket_dir_mode, false));
        }
    }
    dirs
}

/// Creates capcri's directories (and missing parents) with their modes,
/// tightens existing ones, and says what it did: on a fresh node nothing
/// exists yet (issue 13: `/run/capcri` was never created).
fn prepare_directories(config: &Config) -> anyhow::Result<()> {
    use crate::store::perms::{DirChange, ensure_dir};
    for (dir, mode, own) in node_directories(config) {
        let changes = ensure_dir(&dir, mode, own)
            .with_context(|| format!("cannot create or set the mode of {}", dir.display()))?;
        for change in changes {
            match change {
                DirChange::Created { path, mode } => {
                    info!(path = %path.display(), mode = format!("{mode:o}"), "created directory")
                }
                DirChange::Changed { path, from, to } => tracing::warn!(
                    path = %path.display(),
                    from = format!("{from:o}"),
                    to = format!("{to:o}"),
                    "directory mode changed to capcri's (a looser one exposed state to local users)"
                ),
            }
        }
    }
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    // A cgroup driver this host cannot run is refused before anything is
    // made (Node::open checks it again for its other callers).
    crate::pod::cgroups::CgroupSetup::resolve(&config)?;
    // Everything the daemon creates is root-only unless it says otherwise
    // (pod files containers read, CRI logs); files holding state also set
    // 0600 explicitly, so this is a second line, not the only one.
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(0o077) };
    prepare_directories(&config)?;
    let _lock = lock_socket(&config.socket)?;
    let node = Node::open(config.clone()).context("cannot open capcri's state")?;
    node.reconcile()
        .await
        .context("cannot reconcile what the previous run left")?;
    node.policies().watch(std::time::Duration::from_secs(
        config.policy_poll_seconds.max(1),
    ));
    node.follow_live_monitors().await;
    let listener = bind_socket(&config.socket, SocketAccess::Group(config.socket_gid))?;
    let admin_listener = bind_socket(&config.admin_socket, SocketAccess::RootOnly)?;
    info!(socket = %config.socket.display(), state_dir = %config.state_dir.display(), data_dir = %config.data_dir.display(), "capcri serving the CRI");

    let streams = crate::stream::StreamServer::bind(
        config.stream_address,
        Arc::new(NodeStreams::new(node.clone())),
    )
    .await
    .context("cannot start the streaming server (exec, attach, port-forward)")?;
    let runtime = RuntimeRoutes::new(
        CriRuntimeService::new(node.clone()).with_stream_server(streams),
        MAX_MESSAGE_BYTES,
    );
    let images = ImageServiceServer::new(CriImageService::new(node.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(node.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install a SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down, containers keep running"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down, containers keep running"),
        }
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics = match config.metrics_address {
        Some(addr) => Some(metrics_server(&node, addr).await?),
        None => None,
    };
    crate::malloc_tuning::release_after_start();
    let cri = tonic::transport::Server::builder()
        .layer(CriMetricsLayer::new(node.metrics().clone()))
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx.clone()));
    let admin = tonic::transport::Server::builder()
        .add_service(admin)
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(admin_listener),
            stopped(stop_rx.clone()),
        );
    let metrics = async move {
        if let Some(server) = metrics {
            server.serve(stopped(stop_rx)).await;
        }
    };
    node.netns_pool.fill();
    let (cri, admin, ()) = tokio::join!(cri, admin, metrics);
    node.netns_pool.drain();
    cri.context("CRI gRPC server failed")?;
    admin.context("admin gRPC server failed")?;
    let _ = std::fs::remove_file(&config.socket);
    let _ = std::fs::remove_file(&config.admin_socket);
    Ok(())
}

/// The metrics endpoint of `node` on `addr`, bound (so a busy port fails
/// the start, like the CRI socket) but not yet serving.
async fn metrics_server(node: &Arc<Node>, addr: SocketAddr) -> anyhow::Result<MetricsServer> {
    let registry = node
        .metrics()
        .registry(NodeCollector::new(node.clone() as Arc<dyn SnapshotSource>));
    let refresh_node = node.clone();
    let refresh: Refresh = Arc::new(move || {
        let node = refresh_node.clone();
        Box::pin(async move { node.refresh_container_states().await })
    });
    let server = MetricsServer::bind(addr, registry, refresh).await?;
    Ok(server)
}

/// A gRPC channel over a unix socket (for the CLI's admin calls).
pub async fn unix_channel(path: &Path) -> anyhow::Result<tonic::transport::Channel> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    tonic::transport::Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .with_context(|| {
            format!("cannot reach capcri's admin socket {shown}: is `capcri serve` running?")
        })
}
