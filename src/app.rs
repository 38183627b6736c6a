//! Wiring: load the configuration, bind, serve, reload, and shut down
//! (README "Command line" signals, "Live reload" restarts). `serve` takes the configuration and
//! returns when a shutdown signal has been handled and in-flight queries
//! drained; [`Server::start`] is the same in pieces, for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{Config, LoadEnv};
use crate::health::HealthRegistry;
use crate::logging::LogHandle;
use crate::loop_guard::LoopGuard;
use crate::metrics::Metrics;
use crate::reload::{self, Reloader, Trigger};
use crate::resolve::Resolver;
use crate::server::{self, Listeners};
use crate::snapshot::{Shared, Snapshot};
use crate::upstream::MAX_IN_FLIGHT;

// The binary's other entry points (`src/main.rs`), so that the engine's
// modules stay private: the helper subcommands, which need no configuration,
// and the logger `serve` is given.
pub use crate::commands::{lookup, status};
pub use crate::logging::init as init_logging;
pub use crate::node_address::run as node_address;
pub use crate::node_resolv::run as node_resolv;
pub use crate::registries::render as registries;

/// Longest time in-flight queries get to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopping server keeps answering with `/readyz` failing
/// before it stops accepting (the lame duck of CoreDNS's `health`):
/// long enough for a load balancer or a kubelet probe to take it out of
/// rotation, short enough to keep a rolling restart quick.
pub const LAME_DUCK: Duration = Duration::from_secs(1);

/// A running server.
pub struct Server {
    /// The DNS addresses bound (useful when `listen` used port 0).
    pub dns_addrs: Vec<SocketAddr>,
    /// The admin address bound, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The query path.
    pub resolver: Arc<Resolver>,
    /// Sends reload requests (what SIGHUP does).
    pub reload: mpsc::Sender<Trigger>,
    /// How long [`Server::stop`] keeps serving with `/readyz` failing
    /// before it stops accepting; [`LAME_DUCK`] unless changed.
    pub lame_duck: Duration,
    shutdown: CancellationToken,
    admin_shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    tasks: TaskTracker,
    serving: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds every listener and starts serving `config`. `config_path` is
    /// what reloads re-read (`None`: the built-in defaults).
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        env: LoadEnv,
        log: LogHandle,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            health: HealthRegistry::default(),
            upstream_permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            metrics: Metrics::new(),
            unmapped: Arc::default(),
        });
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let listeners = Listeners::bind(&config.server.listen, workers)
            .with_context(|| format!("cannot bind {:?}", config.server.listen))?;
        let dns_addrs = listeners.local_addrs();
        let admin_listener = match config.admin.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind the admin endpoint on {addr}"))?,
            ),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        let loops = Arc::new(LoopGuard::default());
        let snapshot = Arc::new(Snapshot::build(config, None, &shared));
        let resolver = Arc::new(Resolver::new(
            snapshot.clone(),
            shared.metrics.clone(),
            loops.clone(),
        ));
        // CNAME targets are health-checked through the running resolver.
        let target_resolver: Arc<dyn crate::health::TargetResolver> = resolver.clone();
        shared.health.set_resolver(Arc::downgrade(&target_resolver));
        reload::start_snapshot_tasks(&snapshot, &loops, &shared.health);
        shared.metrics.loaded_at_start();

        let shutdown = CancellationToken::new();
        // The admin endpoint outlives the DNS listeners so that `/readyz`
        // answers 503 (not connection refused) for the whole drain.
        let admin_shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));

        if let Some(listener) = admin_listener {
            let state = AdminState {
                resolver: resolver.clone(),
                ready: ready.clone(),
                draining: draining.clone(),
                scrape: Arc::default(),
                started: std::time::Instant::now(),
            };
            let stop = admin_shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = admin::serve(listener, state, stop).await {
                    tracing::error!(%error, "admin endpoint failed");
                }
            });
        }

        let (reload_tx, reload_rx) = mpsc::channel(8);
        let reloader = Reloader::new(
            resolver.clone(),
            shared.clone(),
            loops,
            config_path,
            env,
            log,
        );
        tokio::spawn(reloader.run(reload_tx.clone(), reload_rx, shutdown.clone()));

        let serving = {
            let resolver = resolver.clone();
            let shutdown = shutdown.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                if let Err(error) =
                    server::serve(listeners, resolver, shutdown, tasks, DRAIN_TIMEOUT).await
                {
                    tracing::error!(%error, "DNS listeners failed");
                }
            })
        };
        ready.store(true, Ordering::Release);
        tracing::info!(
            dns = ?dns_addrs,
            admin = ?admin_addr,
            summary = %resolver.snapshot().config.summary(),
            "accel-dns serving"
        );
        Ok(Self {
            dns_addrs,
            admin_addr,
            resolver,
            reload: reload_tx,
            lame_duck: LAME_DUCK,
            shutdown,
            admin_shutdown,
            draining,
            tasks,
            serving,
        })
    }

    /// Fails `/readyz` and keeps answering for [`Server::lame_duck`], then
    /// stops accepting, lets in-flight queries finish (at most
    /// [`DRAIN_TIMEOUT`]), and returns. With a new instance already bound
    /// beside it (SO_REUSEPORT), no query is lost: the UDP loops of
    /// [`crate::server`] empty their sockets' queues before closing them.
    pub async fn stop(self) {
        self.draining.store(true, Ordering::Release);
        if !self.lame_duck.is_zero() {
            tracing::info!(lame_duck = ?self.lame_duck, "draining: /readyz fails; still answering until the lame duck ends");
            tokio::time::sleep(self.lame_duck).await;
        }
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let _ = tokio::time::timeout_at(deadline, self.serving).await;
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timed out; exiting with queries still in flight");
        }
        self.resolver.snapshot().tasks.cancel();
        self.admin_shutdown.cancel();
    }
}

/// `accel-dns serve`: runs until SIGTERM or SIGINT, reloads on SIGHUP.
pub async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    env: LoadEnv,
    log: LogHandle,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let server = Server::start(config, config_path, env, log).await?;
    loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: draining"); break }
            _ = interrupt.recv() => { tracing::info!("SIGINT: draining"); break }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let _ = server.reload.send(Trigger::Forced).await;
            }
        }
    }
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft open-files limit to the hard one: every upstream query
/// and TCP client holds a descriptor, and the bounds of README "How a query is answered", limits need more
/// than the usual 1024.
pub fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
