//! Live reload (README "Live reload"). Three sources feed one path: a file watcher on
//! the *directories* of every watched file (so renames and Kubernetes
//! ConfigMap `..data` symlink swaps are seen), a 1 s poll as a safety net,
//! and SIGHUP. A change of content (or SIGHUP) loads the configuration with
//! the same loader as start and `check`, builds a new snapshot and swaps it
//! in whole; a bad file leaves the running snapshot in force.
//!
//! Every piece of reload work that touches the file system or grows with
//! the configuration (stat, read and hash of the files, parse, compile, the
//! cache copy, the swap, retiring metric series) runs on tokio's blocking
//! pool, never on a runtime worker: with a 200,000-line hosts file a reload
//! is about a second of CPU, and a worker busy that long stalls the answers
//! queued on it (all of them on a one-core pod; `docs/robustness.md`). The poll compares each file's
//! metadata (device, inode, size, mtime, ctime) and reads contents only when
//! that changed; a watcher event always compares contents.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, LoadEnv, LogFormat};
use crate::health::HealthRegistry;
use crate::logging::LogHandle;
use crate::loop_guard::LoopGuard;
use crate::records::CompiledRecord;
use crate::resolve::Resolver;
use crate::snapshot::{Shared, Snapshot};

/// How often the files' metadata are compared.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A reload waits until the watched files have been quiet this long.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);
/// ... but never longer than this after the first change.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_millis(500);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched directory changed: reload if the contents did.
    FileEvent,
    /// The poll saw new contents, or SIGHUP: reload unconditionally.
    Forced,
}

/// Owns the reload path.
pub(crate) struct Reloader {
    resolver: Arc<Resolver>,
    shared: Arc<Shared>,
    loops: Arc<LoopGuard>,
    config_path: Option<PathBuf>,
    env: LoadEnv,
    log: LogHandle,
    watched: Vec<PathBuf>,
    fingerprint: u64,
    /// Metadata of the watched files when `fingerprint` was taken.
    stamps: u64,
    /// Fingerprint of a new file set, taken right after it was loaded.
    loaded_fingerprint: u64,
    /// Metadata of a new file set, taken right before `loaded_fingerprint`.
    loaded_stamps: u64,
    /// What only a restart changes, as the process started with it.
    fixed: FixedAtStart,
    watcher: Option<notify::RecommendedWatcher>,
    watched_dirs: Vec<PathBuf>,
}

/// The settings a reload cannot apply: the bound sockets and the log format.
#[derive(Debug, Clone, PartialEq)]
struct FixedAtStart {
    listen: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    log_format: LogFormat,
}

impl FixedAtStart {
    fn of(config: &Config) -> Self {
        Self {
            listen: config.server.listen.clone(),
            admin: config.admin.listen,
            log_format: config.log.format,
        }
    }
}

impl Reloader {
    /// A reloader for the configuration at `config_path` (`None`: built-in
    /// defaults, which still follow `resolv.conf`). Reads the watched files
    /// once (at start, before anything is served).
    pub(crate) fn new(
        resolver: Arc<Resolver>,
        shared: Arc<Shared>,
        loops: Arc<LoopGuard>,
        config_path: Option<PathBuf>,
        env: LoadEnv,
        log: LogHandle,
    ) -> Self {
        let snapshot = resolver.snapshot();
        let watched = snapshot.config.watched_files();
        let stamps = stamps(&watched);
        let fingerprint = fingerprint(&watched);
        let fixed = FixedAtStart::of(&snapshot.config);
        drop(snapshot);
        Self {
            resolver,
            shared,
            loops,
            config_path,
            env,
            log,
            watched,
            fingerprint,
            stamps,
            loaded_fingerprint: fingerprint,
            loaded_stamps: stamps,
            fixed,
            watcher: None,
            watched_dirs: Vec::new(),
        }
    }

    /// Runs until `shutdown`: watches, polls, and reloads on `triggers`
    /// (the sender side is also given to the SIGHUP handler). The timers
    /// and the debounce run here; every step that reads files or builds a
    /// snapshot runs on the blocking pool.
    pub(crate) async fn run(
        mut self,
        tx: mpsc::Sender<Trigger>,
        mut triggers: mpsc::Receiver<Trigger>,
        shutdown: CancellationToken,
    ) {
        self.watcher = make_watcher(tx.clone());
        let core = Arc::new(Mutex::new(self));
        off_the_workers(&core, Reloader::rewatch).await;
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poll.tick() => {
                    if off_the_workers(&core, Reloader::poll_changed).await != Some(true) {
                        continue;
                    }
                    Trigger::FileEvent
                }
                received = triggers.recv() => match received {
                    Some(trigger) => trigger,
                    None => return,
                },
            };
            // Editors and kubelet write in bursts: wait until the files have
            // been quiet for DEBOUNCE, but no longer than SETTLE_LIMIT, so
            // that a file rewritten without pause is still picked up in time.
            let mut forced = trigger == Trigger::Forced;
            let limit = tokio::time::Instant::now() + SETTLE_LIMIT;
            loop {
                let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(limit);
                tokio::select! {
                    () = tokio::time::sleep_until(quiet) => break,
                    more = triggers.recv() => match more {
                        Some(Trigger::Forced) => forced = true,
                        Some(Trigger::FileEvent) => {}
                        None => return,
                    },
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = off_the_workers(&core, move |reloader| reloader.settle(forced)) => {}
            }
        }
    }

    /// The poll (blocking): whether the watched files' contents changed.
    /// Reads them only when their metadata changed since the last look, so
    /// a quiet second costs one `stat` per file.
    fn poll_changed(&mut self) -> bool {
        let now = stamps(&self.watched);
        if now == self.stamps {
            return false;
        }
        self.stamps = now;
        fingerprint(&self.watched) != self.fingerprint
    }

    /// After the debounce (blocking): reloads if the contents changed or
    /// the reload is forced, then re-arms the watches.
    fn settle(&mut self, forced: bool) {
        // Taken before the files are read: a write that lands while they
        // are read or compiled then differs from it and is loaded at the
        // next check. (A fingerprint taken after the reload took such a
        // write as loaded, and it was never seen.) The metadata are taken
        // before the contents for the same reason.
        let stamps = stamps(&self.watched);
        let before = fingerprint(&self.watched);
        if !forced && before == self.fingerprint {
            self.stamps = stamps;
            return;
        }
        let files = self.watched.clone();
        self.fingerprint = before;
        self.stamps = stamps;
        self.reload();
        if self.watched != files {
            // Hosts files added or removed: describe the new set. A write
            // between the load and here goes unseen until the next one;
            // the window is the time of one read, not of a whole build.
            self.fingerprint = self.loaded_fingerprint;
            self.stamps = self.loaded_stamps;
        }
        self.rewatch();
    }

    /// Loads, validates and swaps in the configuration; on error keeps the
    /// running one. Returns whether it was taken. Blocking: it reads and
    /// compiles every file, so it is called on the blocking pool.
    pub(crate) fn reload(&mut self) -> bool {
        let loaded = match &self.config_path {
            Some(path) => config::load(path, &self.env),
            None => config::builtin(&self.env),
        };
        let metrics = self.resolver.metrics();
        let config = match loaded {
            Ok(config) => config,
            Err(error) => {
                metrics.reload(Some(error.to_string()));
                tracing::error!(%error, "reload failed; the running configuration stays in force");
                return false;
            }
        };
        let watched = config.watched_files();
        if watched != self.watched {
            self.loaded_stamps = stamps(&watched);
            self.loaded_fingerprint = fingerprint(&watched);
        }
        self.watched = watched;
        let old = self.resolver.snapshot();
        warn_restart_needed(&self.fixed, &FixedAtStart::of(&config));
        self.log.apply(&config.log);
        let summary = config.summary();
        let next = Arc::new(Snapshot::build(config, Some(&old.cache), &self.shared));
        start_snapshot_tasks(&next, &self.loops, &self.shared.health);
        let previous = self.resolver.swap(next.clone());
        previous.tasks.cancel();
        // Series of records and upstreams the new snapshot no longer has
        // leave /metrics now; those it kept keep their values.
        metrics.retire(&previous.gone_from(&next));
        metrics.reload(None);
        tracing::info!(%summary, "configuration reloaded");
        true
    }

    /// Watches the directory of every watched file (blocking: it resolves
    /// symlinks).
    fn rewatch(&mut self) {
        rewatch(&mut self.watcher, &self.watched, &mut self.watched_dirs);
    }
}

/// Runs `work` on the reloader from tokio's blocking pool and waits for it
/// without holding a worker. `None` if it panicked (a bug: logged, and the
/// running configuration stays in force; the next trigger tries again).
async fn off_the_workers<T, F>(core: &Arc<Mutex<Reloader>>, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Reloader) -> T + Send + 'static,
{
    let core = core.clone();
    // The caller's subscriber goes along: a scoped one (a test's log
    // capture) would otherwise miss every line the reload logs.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let job = tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let mut reloader = core.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut reloader)
        })
    });
    match job.await {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(%error, "reload work failed; the running configuration stays in force");
            None
        }
    }
}

/// Starts the background work of a snapshot (loop probes of its
/// upstreams, the log of health-checked records stepping aside); it stops
/// when the snapshot's token is cancelled.
pub(crate) fn start_snapshot_tasks(
    snapshot: &Arc<Snapshot>,
    loops: &Arc<LoopGuard>,
    health: &HealthRegistry,
) {
    log_record_health(snapshot, health);
    let token = snapshot.tasks.clone();
    let pool = snapshot.upstreams.clone();
    let budget = snapshot.config.upstream.timeout;
    let loops = loops.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(crate::loop_guard::PROBE_INTERVAL);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = ticker.tick() => {}
            }
            for server in pool.servers() {
                if token.is_cancelled() {
                    return;
                }
                if !server.is_looped() {
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = loops.probe(server, budget) => {}
                    }
                }
            }
        }
    });
}

/// Logs (warn) each time a health-checked record steps aside because every
/// address is down, and each time it answers again (README "Health-checked records (fail-open)"). Endpoints log
/// their own changes; this is the change operators act on. Holds the records
/// weakly so that it never keeps a probe of an old configuration alive.
fn log_record_health(snapshot: &Snapshot, health: &HealthRegistry) {
    let records: Vec<(Weak<CompiledRecord>, bool)> = snapshot
        .records
        .all()
        .iter()
        .filter(|r| r.health_checked)
        .map(|r| (Arc::downgrade(r), r.is_active()))
        .collect();
    if records.is_empty() {
        return;
    }
    let mut changes = health.subscribe();
    let token = snapshot.tasks.clone();
    tokio::spawn(async move {
        let mut records = records;
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            for (weak, was_active) in &mut records {
                let Some(record) = weak.upgrade() else { return };
                let active = record.is_active();
                if active == *was_active {
                    continue;
                }
                *was_active = active;
                let clients = &record.clients;
                if active {
                    tracing::warn!(record = %record.label, ?clients, "health check: an address is back; the record answers again");
                } else {
                    tracing::warn!(record = %record.label, ?clients, "health check: every address is down; the record steps aside and the name resolves as if it did not exist");
                }
            }
        }
    });
}

/// Warns, at every reload until the restart, about each setting that
/// differs from what the process started with and that only a restart
/// applies (compared with the start, not the previous file: a listener
/// moved in one reload is still where it was after the next).
fn warn_restart_needed(running: &FixedAtStart, configured: &FixedAtStart) {
    if running.listen != configured.listen {
        tracing::warn!(
            running = ?running.listen,
            configured = ?configured.listen,
            "server.listen changed: this needs a restart; still serving the old addresses"
        );
    }
    if running.admin != configured.admin {
        tracing::warn!(
            running = ?running.admin,
            configured = ?configured.admin,
            "admin.listen changed: this needs a restart; the admin endpoint stays where it is"
        );
    }
    if running.log_format != configured.log_format {
        tracing::warn!(
            running = ?running.log_format,
            configured = ?configured.log_format,
            "log.format changed: this needs a restart; the level and the query log follow the reload"
        );
    }
}

fn make_watcher(tx: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| is_change(&event.kind)) {
            // Full channel: a reload is already queued.
            let _ = tx.try_send(Trigger::FileEvent);
        }
    });
    match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "file watcher unavailable; changes are seen by the 1 s poll only");
            None
        }
    }
}

/// Whether an event can mean new contents. inotify also reports opens and
/// reads, and the reloader itself opens every watched file to fingerprint
/// it: counting those would make each check trigger the next one, a
/// re-read of every file ten times a second for ever (and `/etc`, watched
/// for `resolv.conf`, is opened all day by other processes). A close after
/// writing is the end of an in-place edit, so it counts.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches the directory of every file (and, for a symlink, of its target).
fn rewatch(
    watcher: &mut Option<notify::RecommendedWatcher>,
    files: &[PathBuf],
    watched: &mut Vec<PathBuf>,
) {
    let Some(watcher) = watcher else { return };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        for path in [Some(file.clone()), std::fs::canonicalize(file).ok()]
            .into_iter()
            .flatten()
        {
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
    }
    for old in watched.iter() {
        if !dirs.contains(old) {
            let _ = watcher.unwatch(old);
        }
    }
    for dir in &dirs {
        if !watched.contains(dir)
            && let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive)
        {
            tracing::debug!(dir = %dir.display(), %error, "cannot watch directory; the poll covers it");
        }
    }
    *watched = dirs;
}

/// A hash of the metadata that change whenever a file's contents do
/// (device, inode, size, mtime, ctime; or why it cannot be read): a
/// rename or a ConfigMap swap changes the inode (the target of a symlink is
/// stat'ed), an edit in place the size or the times.
fn stamps(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        match std::fs::metadata(file) {
            Ok(meta) => (
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec(),
            )
                .hash(&mut hasher),
            Err(error) => error.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// A hash of the contents (or absence) of every file.
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        match std::fs::read(file) {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(error) => error.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
    };

    /// Regression: fingerprinting opened the watched files, inotify reported
    /// the opens, and every check queued the next one.
    #[test]
    fn opens_and_reads_are_not_changes() {
        let cases = [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (EventKind::Access(AccessKind::Read), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Remove(RemoveKind::File), true),
            (EventKind::Any, true),
        ];
        for (kind, expected) in cases {
            assert_eq!(is_change(&kind), expected, "{kind:?}");
        }
    }
}
