//! Starting and stopping a node: checks before anything runs, one executor
//! per core, and an orderly shutdown in which every core stops taking
//! requests before any core closes its partitions.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::cluster::admin::{self, AdminInbox};
use crate::cluster::runtime::{Cluster, ClusterSettings};
use crate::config::{Config, ConfigError};
use crate::security::tls::TlsContext;
use crate::service::systemd::{self, Heartbeats};
use crate::service::{self, StartError};
use crate::shard::{self, MeshEnds, Shard, ShardMsg};
use crate::{net, topics};

/// Messages a core may have queued towards another before a sender waits.
/// Large, because a small mesh channel can deadlock under load (architecture.md).
const MESH_CAPACITY: usize = 4096;

/// Longest an executor sleeps with nothing else armed (see `run_shard`).
const KEEP_AWAKE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Catalogue(#[from] topics::CatalogError),
    #[error(transparent)]
    Secrets(#[from] crate::auth::SecretsError),
    #[error("cannot start the watchdog thread: {0}")]
    Watchdog(std::io::Error),
    #[error("cannot start executors: {0}")]
    Executors(String),
    #[error("core {core} failed to start: {reason}")]
    Shard { core: usize, reason: String },
    #[error("core {core} stopped with an error: {reason}")]
    ShardFailed { core: usize, reason: String },
    #[error("peer_listen: {0}")]
    PeerListen(StartError),
    #[error("TLS: {0}")]
    Tls(ringmq_client::TlsError),
    #[error("cannot install the SIGHUP handler (TLS reload): {0}")]
    Signals(std::io::Error),
}

/// Runs a broker until it is asked to stop. Blocks the calling thread.
pub fn serve(mut config: Config) -> Result<(), ServeError> {
    config.validate()?;
    if let Some(files) = &config.tls_files {
        let ctx = TlsContext::load(files.clone(), config.tls_handshake_timeout)
            .map_err(ServeError::Tls)?;
        let ctx = Arc::new(ctx);
        crate::security::tls::reload_on_sighup(ctx.clone()).map_err(ServeError::Signals)?;
        config.tls = Some(ctx);
    }
    service::preflight::check_io_uring().map_err(StartError::from)?;
    service::raise_memlock(config.cores as u64 * (config.io_memory as u64 + (1 << 20)))?;
    let _lock = service::lock_data_dir(&config.data_dir)?;
    let listen = service::claim_port(config.listen)?;
    crate::quota::install(crate::quota::Quotas::new(
        config.quota_default,
        config.quotas.clone(),
    ));
    // Cluster mode: the peer port is claimed like the client port, and the
    // metrics thread gets a line to the Raft node on shard 0.
    if let Some(addr) = config.peer_listen_addr() {
        service::claim_port(addr).map_err(ServeError::PeerListen)?;
    }
    let (admin_client, admin_inbox) = match config.node_id {
        Some(_) => {
            let (client, inbox) = admin::channel();
            (Some(client), Some(inbox))
        }
        None => (None, None),
    };
    let admin_inbox = Arc::new(Mutex::new(admin_inbox));
    let catalogue = topics::load(&config.data_dir)?;
    let secrets = crate::auth::Secrets::load(
        &config.data_dir,
        config.admin_user.as_deref(),
        config.admin_password_file.as_deref(),
    )?;
    service::install_signal_handler()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.config_file.as_deref().map_or("(none)".into(), |p| p.display().to_string()),
        cores = config.cores,
        data_dir = %config.data_dir.display(),
        topics = catalogue.len(),
        authentication = config.authentication,
        authorization = config.authorization,
        admin_user = config.admin_user.as_deref().unwrap_or("(none)"),
        "starting ringmq"
    );
    if let Some(files) = &config.tls_files {
        tracing::info!(
            cert = %files.cert.display(),
            client_certificates = if files.client_ca.is_some() { "required" } else { "not asked" },
            "TLS on the client and peer listeners (SIGHUP reloads the files)"
        );
    }
    if config.node_id.is_some() && !config.peers_authenticated() {
        tracing::warn!(
            "peers are unauthenticated: any host that reaches the peer or client port can claim \
             to be a node of this cluster; set cluster_secret_file (or TLS with tls_client_ca)"
        );
    }
    if (config.authentication || config.authorization) && config.tls_files.is_none() {
        tracing::warn!(
            "authentication is on without TLS: SCRAM never sends a password, but everything \
             after it (the records, and the session itself) crosses the network in the clear; \
             set tls_cert and tls_key"
        );
    }
    if let Some(addr) = config.metrics_listen {
        let bound = crate::metrics::serve(addr, admin_client, config.cluster_secret.clone())
            .map_err(|source| StartError::Listen {
                addr,
                source,
                hint: " (metrics_listen)",
            })?;
        tracing::info!(addr = %bound, "serving metrics on {bound}");
    }
    systemd::status("starting: recovering partitions");
    let heartbeats = systemd::start_watchdog(config.cores).map_err(ServeError::Watchdog)?;

    let cores = config.cores;
    let config = Arc::new(Config {
        listen,
        auth_secrets: Some(Arc::new(secrets)),
        ..config
    });
    let mesh = shard::build_mesh::<ShardMsg>(cores, MESH_CAPACITY);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), (usize, String)>>();
    let drained = Arc::new(AtomicUsize::new(0));
    let pool = {
        let config = config.clone();
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(cores, None))
            .name("shard")
            .io_memory(config.io_memory)
            .ring_depth(256)
            .preempt_timer(Duration::from_millis(5))
            // Blocking work (fallocate, segment creation and sealing,
            // recovery) must not share the executor's CPU: by default
            // glommio pins each executor's blocking thread to the
            // executor's own CPU, where a long job took the CPU away from
            // the executor for milliseconds at a time (e2e p99 in the tens
            // of ms). Unbound, the scheduler runs it on an idle CPU.
            .blocking_thread_pool_placement(PoolPlacement::Unbound(cores))
            .on_all_shards(move || {
                let config = config.clone();
                let ends = shard::take_ends(&mesh);
                let catalogue = catalogue.clone();
                let ready = ready_tx.clone();
                let drained = drained.clone();
                let heartbeats = heartbeats.clone();
                let admin = admin_inbox.clone();
                async move {
                    run_shard(config, ends, catalogue, ready, drained, heartbeats, admin).await
                }
            })
            .map_err(|e| ServeError::Executors(service::explain_executor_error(e.to_string())))?
    };

    let mut started = 0;
    while started < cores {
        match ready_rx.recv() {
            Ok(Ok(())) => started += 1,
            Ok(Err((core, reason))) => {
                service::request_stop();
                let _ = pool.join_all();
                return Err(ServeError::Shard {
                    core,
                    reason: service::explain_executor_error(reason),
                });
            }
            Err(_) => break, // a shard died before reporting; join_all says why
        }
    }
    if started == cores {
        tracing::info!(addr = %listen, "listening on {listen}");
        systemd::ready(&format!("serving on {listen} with {cores} cores"));
    } else {
        service::request_stop();
    }

    let mut failure = None;
    for (core, result) in pool.join_all().into_iter().enumerate() {
        let reason = match result {
            Ok(Ok(())) => continue,
            Ok(Err(reason)) => reason,
            Err(e) => service::explain_executor_error(e.to_string()),
        };
        failure.get_or_insert(ServeError::ShardFailed { core, reason });
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped cleanly");
            systemd::status("stopped cleanly");
            Ok(())
        }
    }
}

/// The life of one core: open its partitions, serve until stopped, drain,
/// wait for every other core to drain, close.
async fn run_shard(
    config: Arc<Config>,
    ends: Option<MeshEnds<ShardMsg>>,
    catalogue: topics::Catalogue,
    ready: mpsc::Sender<Result<(), (usize, String)>>,
    drained: Arc<AtomicUsize>,
    heartbeats: Option<Arc<Heartbeats>>,
    admin: Arc<Mutex<Option<AdminInbox>>>,
) -> Result<(), String> {
    // glommio 0.9 can miss a wake-up from another thread while an executor
    // sleeps with no timer armed: under load a core stayed parked in
    // io_uring_enter at start, its mesh connect or first blocking job long
    // done, until a debugger's attach interrupted the syscall (test runs of
    // 2026-11-24). A timer that is always armed bounds any such sleep, for
    // the whole life of the core: start, serving and shutdown alike.
    let keep_awake = glommio::timer::TimerActionRepeat::repeat(|| async { Some(KEEP_AWAKE) });
    let mut ready = Ready(Some(ready), usize::MAX);
    let ends = ends.ok_or_else(|| ready.fail("more executors than mesh ends".into()))?;
    let (mesh, receivers) = ends.connect().await;
    let id = mesh.id();
    ready.1 = id;
    crate::metrics::install_core(id);
    let cores = mesh.cores();
    let shard = Shard::open(config.clone(), mesh, catalogue)
        .await
        .map_err(|e| ready.fail(e.to_string()))?;
    for stream in receivers {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = stream.recv().await {
                let shard = shard.clone();
                glommio::spawn_local(async move { shard.handle(msg).await }).detach();
            }
        })
        .detach();
    }
    let listener = bind(config.listen).map_err(|e| ready.fail(e.to_string()))?;
    // Shard 0 runs the cluster node, beside its share of the partitions.
    let cluster = match ClusterSettings::from_config(&config).filter(|_| id == 0) {
        Some(settings) => {
            let inbox = admin.lock().ok().and_then(|mut a| a.take());
            let cluster = Cluster::start(settings, inbox)
                .await
                .map_err(|e| ready.fail(e.to_string()))?;
            Some(cluster)
        }
        None => None,
    };
    // Shard 0 follows the applied metadata for every core of the node.
    let follower = cluster.as_ref().map(|c| {
        let controllers = config.peers.len();
        glommio::spawn_local(shard::follow_cluster(
            shard.clone(),
            c.handle(),
            c.peer_net(),
            controllers,
        ))
    });
    ready.done();
    tracing::debug!(core = id, "core ready");
    let retention = spawn_retention(shard.clone(), config.retention_check_interval);
    let group_ticker = spawn_group_ticker(shard.clone());
    let heartbeat = heartbeats.map(|hb| spawn_heartbeat(hb, id));
    let reporter = shard.clone();
    let busy = glommio::timer::TimerActionRepeat::repeat(move || {
        let shard = reporter.clone();
        async move {
            crate::metrics::core_busy(glommio::executor().executor_stats().total_runtime());
            shard.report_metrics();
            shard.report_group_lag().await;
            Some(Duration::from_secs(1))
        }
    });

    net::serve(shard.clone(), listener, config.shutdown_timeout).await;
    if let Some(follower) = follower {
        follower.cancel().await;
    }
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    // No expiry once clients can no longer reach us: members stored now are
    // restored at the next start with a fresh session.
    group_ticker.cancel().await;

    // Every core keeps answering the mesh until all have drained their clients,
    // so a request forwarded during the drain still finds its partition open.
    drained.fetch_add(1, Ordering::SeqCst);
    while drained.load(Ordering::SeqCst) < cores {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    shard.close_forwarding();
    retention.cancel().await;
    busy.cancel().await;
    shard.close().await;
    if let Some(hb) = heartbeat {
        hb.cancel().await;
    }
    keep_awake.cancel().await;
    Ok(())
}

/// A core's promise to report whether it started. If the core's future is
/// dropped or panics before it reports, the drop reports a failure, so the
/// main thread never waits forever.
struct Ready(Option<mpsc::Sender<Result<(), (usize, String)>>>, usize);

impl Ready {
    fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Ok(()));
        }
    }

    fn fail(&mut self, reason: String) -> String {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Err((self.1, reason.clone())));
        }
        reason
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.fail("the core stopped while starting".into());
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    glommio::net::TcpListener::bind(addr).map_err(|e| std::io::Error::other(e.to_string()))
}

fn spawn_retention(shard: Rc<Shard>, every: Duration) -> glommio::timer::TimerActionRepeat {
    glommio::timer::TimerActionRepeat::repeat(move || {
        let shard = shard.clone();
        async move {
            shard.apply_retention().await;
            Some(every)
        }
    })
}

/// How often a core looks for expired group members (and compacts
/// `__offsets`): expiry is late by at most this much.
const GROUP_TICK: Duration = Duration::from_millis(100);

fn spawn_group_ticker(shard: Rc<Shard>) -> glommio::timer::TimerActionRepeat {
    glommio::timer::TimerActionRepeat::repeat(move || {
        let shard = shard.clone();
        async move {
            shard.tick_groups().await;
            shard.tick_replication().await;
            Some(GROUP_TICK)
        }
    })
}

/// Proves to the watchdog thread that this core's executor runs: a timer
/// that only fires if the core gets back to its scheduler.
fn spawn_heartbeat(hb: Arc<Heartbeats>, core: usize) -> glommio::timer::TimerActionRepeat {
    glommio::timer::TimerActionRepeat::repeat(move || {
        hb.beat(core);
        let every = hb.every;
        async move { Some(every) }
    })
}
