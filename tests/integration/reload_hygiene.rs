//! What a reload leaves behind (issue 11; README "Live reload" "a reload leaves no task
//! of the old configuration running", "Admin endpoint and metrics"): nothing of a replaced
//! configuration's upstreams survives reloads made while loop probes are
//! in flight; reload work never stalls the runtime that answers queries;
//! and the metric series of records and upstreams a reload removed leave
//! `/metrics` while the live ones keep their counts.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use accel_dns::app::Server;
use accel_dns::config;
use accel_dns::internals::logging::LogHandle;
use accel_dns::internals::metrics::{
    ENDPOINT_UP, RECORD_HITS, RECORD_UP, UPSTREAM_DURATION, UPSTREAM_ERRORS, UPSTREAM_LOOPS,
};
use accel_dns::internals::reload::Trigger;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::admin::{answer_a, reloads};
use crate::common::*;

fn is_probe(query: &Message) -> bool {
    query
        .queries
        .first()
        .is_some_and(|q| q.name().to_ascii().ends_with(".accel-dns-loop-probe."))
}

/// Regression (issue 11, item 2): with an upstream that never answers, a
/// reload cancelled the running loop probe, whose entry stayed in the loop
/// guard holding the old upstream (16 sockets and their reader tasks) for
/// the life of the process: 16 fds more per reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_loop_probes_leave_nothing_of_the_old_upstreams() {
    const RELOADS: usize = 6;
    let upstream = FakeUpstream::start().await;
    let probes = Arc::new(AtomicUsize::new(0));
    {
        let probes = probes.clone();
        upstream.set_handler(move |query, _tcp| {
            if is_probe(query) {
                probes.fetch_add(1, Ordering::SeqCst);
            }
            Reply::Drop
        });
    }
    // A probe waits the whole upstream timeout: longer than the test.
    let body = "[upstream]\nservers = [\"@UPSTREAM@\"]\ntimeout = \"30s\"\n";
    let server = TestServer::start(body, Some(upstream.addr)).await;
    let running = server.server.as_ref().expect("running");
    let resolver = running.resolver.clone();
    let mut old_upstreams = Vec::new();
    let mut old_snapshots = Vec::new();
    for n in 0..RELOADS {
        wait_until("the running snapshot's probe reached the upstream", || {
            let seen = probes.load(Ordering::SeqCst);
            async move { seen > n }
        })
        .await;
        let snapshot = resolver.snapshot();
        old_upstreams.push(Arc::downgrade(&snapshot.upstreams.servers()[0]));
        old_snapshots.push(Arc::downgrade(&snapshot));
        drop(snapshot);
        running.reload.send(Trigger::Forced).await.expect("reload");
        let expected = (n + 1) as f64;
        wait_until("the reload is done", || async {
            server.metric(&reloads("ok")).await == Some(expected)
        })
        .await;
    }
    let alive = |weak: &[Weak<accel_dns::internals::upstream::UpstreamServer>]| {
        weak.iter().filter(|w| w.upgrade().is_some()).count()
    };
    let deadline = Instant::now() + DEADLINE;
    while alive(&old_upstreams) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        alive(&old_upstreams),
        0,
        "upstreams (sockets, reader tasks) of replaced snapshots still alive after {RELOADS} reloads"
    );
    assert!(
        old_snapshots.iter().all(|w| w.upgrade().is_none()),
        "a replaced snapshot is still alive"
    );
    // The running snapshot still probes, and still gets its answers.
    assert!(resolver.snapshot().upstreams.has_usable());
}

/// A hosts-file FIFO: every read of it blocks until the test feeds it,
/// which makes "a reload is reading its files right now" observable.
struct Fifo {
    path: PathBuf,
}

impl Fifo {
    fn create(path: &Path) -> Self {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path and creates a node.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The write end, if some thread has the FIFO open for reading (a FIFO
    /// opened for writing without blocking fails with ENXIO otherwise).
    fn writer(&self) -> Option<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .ok()
    }
}

/// One A query over UDP with a blocking socket: whether it was answered
/// within `wait` (this thread is not the server's runtime).
fn answered_within(server: SocketAddr, qname: &str, wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let query = query_message(qname, RecordType::A, None);
    socket
        .send_to(&query.to_vec().expect("encode"), server)
        .expect("send");
    let mut buffer = [0u8; 4096];
    let len = socket.recv(&mut buffer).ok()?;
    Message::from_vec(&buffer[..len]).ok()
}

/// Regression (issue 11, item 4): the reload read, parsed and compiled its
/// files on a runtime worker, and the 1 s poll read every watched file in
/// full there too. On a runtime with one thread, a reload whose hosts file
/// is slow to read (a FIFO here, that the test holds open and silent) then
/// stalled every answer; reload work must run off the runtime.
#[test]
fn a_reload_stuck_reading_a_file_does_not_stall_the_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("registry.hosts");
    std::fs::write(&hosts, "203.0.113.1 old.test\n").expect("write hosts");
    let config_path = dir.path().join("accel-dns.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"\"\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n\
             [records]\nhosts_files = [\"{}\"]\n\
             [[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n",
            hosts.display()
        ),
    )
    .expect("write config");
    let env = test_env(dir.path());

    // The server on a current-thread runtime of its own: one thread serves
    // every listener, so anything blocking it silences them all.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn({
        let config_path = config_path.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = config::load(&config_path, &env).expect("valid config");
                let mut server =
                    Server::start(config, Some(config_path), env, LogHandle::detached())
                        .await
                        .expect("server starts");
                server.lame_duck = Duration::ZERO;
                started_tx
                    .send((server.dns_addrs[0], server.reload.clone()))
                    .expect("send");
                let _ = stop_rx.await;
                server.stop().await;
            });
            // A reader still blocked on the FIFO must not hold the exit.
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    });
    let (dns, reload) = started_rx.recv_timeout(DEADLINE).expect("server started");
    assert!(answered_within(dns, "docker.io.", Duration::from_secs(5)).is_some());

    // The hosts file becomes a FIFO (kept under a second name, to unblock
    // late readers at the end), and a reload is asked for.
    let fifo = Fifo::create(&dir.path().join("registry.fifo"));
    std::fs::hard_link(&fifo.path, dir.path().join("registry.fifo.new")).expect("link");
    std::fs::rename(dir.path().join("registry.fifo.new"), &hosts).expect("rename");
    reload.blocking_send(Trigger::Forced).expect("reload");

    // Wait until the reloader has the FIFO open: then it is stuck reading it
    // for as long as the test holds the write end open without writing.
    let deadline = Instant::now() + DEADLINE;
    let writer = loop {
        if let Some(writer) = fifo.writer() {
            break writer;
        }
        assert!(
            Instant::now() < deadline,
            "the reload never read the hosts file"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let during = answered_within(dns, "docker.io.", Duration::from_secs(2));
    // Let the reload go on: the new hosts file, as many times as it is read.
    let contents = b"203.0.113.2 new.test\n";
    let mut writer = Some(writer);
    let mut answered_new = false;
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Some(mut open) = writer.take().or_else(|| fifo.writer()) {
            let _ = open.write_all(contents);
        }
        let answer = answered_within(dns, "new.test.", Duration::from_millis(200));
        if answer.is_some_and(|a| a.answers.len() == 1) {
            answered_new = true;
            break;
        }
    }
    // Clean up before asserting: a plain file again, every reader unblocked.
    std::fs::write(dir.path().join("plain.new"), contents).expect("write");
    std::fs::rename(dir.path().join("plain.new"), &hosts).expect("rename");
    let _ = stop_tx.send(());
    let deadline = Instant::now() + DEADLINE;
    while !serving.is_finished() {
        assert!(Instant::now() < deadline, "the server thread never stopped");
        drop(fifo.writer());
        std::thread::sleep(Duration::from_millis(10));
    }
    serving.join().expect("server thread");

    let during = during.expect("a record query answered while the reload was stuck reading");
    assert_eq!(
        a_records(&during),
        [std::net::Ipv4Addr::new(203, 0, 113, 10)]
    );
    assert!(
        answered_new,
        "the reload went through once its file could be read"
    );
}

/// Whether any line of the exposition is a series of `metric` whose labels
/// contain `label`.
fn has_series(body: &str, metric: &str, label: &str) -> bool {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .any(|line| line.starts_with(metric) && line.contains(label))
}

/// Regression (issue 11, item 5): series were never removed, so a record
/// deleted by a reload, a hosts-file name gone and an upstream dropped from
/// the list stayed in /metrics for ever, and a long-lived node's series
/// grew with every mapping change.
#[tokio::test]
async fn a_reload_retires_the_series_of_what_it_removed_and_keeps_the_counts_of_the_rest() {
    let kept_upstream = FakeUpstream::start().await;
    let dropped_upstream = FakeUpstream::start().await;
    let probe_target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let probe_port = probe_target.local_addr().expect("addr").port();
    let body = |records: &str, upstreams: &[SocketAddr]| {
        let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[upstream]\nservers = [{}]\ntimeout = \"1s\"\n\
             [records]\nhosts_files = [\"@DIR@/registry.hosts\"]\n{records}",
            list.join(", ")
        )
    };
    let both = [kept_upstream.addr, dropped_upstream.addr];
    let records_before = format!(
        "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n\
         [[record]]\nname = \"*.gone.test\"\na = [\"203.0.113.11\"]\n\
         [[record]]\nname = \"checked.test\"\na = [\"127.0.0.1\"]\n\
         health_check = {{ port = {probe_port}, interval = \"1s\", timeout = \"1s\" }}\n"
    );
    let dir_hosts = "203.0.113.20 kept.hosts.test\n203.0.113.21 gone.hosts.test\n";
    let server = {
        // The hosts file must exist before the server starts.
        let text = body(&records_before, &both);
        let server_dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(server_dir.path().join("registry.hosts"), dir_hosts).expect("hosts");
        let config_path = server_dir.path().join("accel-dns.toml");
        let text = crate::admin::complete(
            &text.replace("@DIR@", &server_dir.path().display().to_string()),
            kept_upstream.addr,
        );
        std::fs::write(&config_path, text).expect("config");
        crate::reload::start_prepared(server_dir, config_path).await
    };
    // Hits on every record; answers from both upstreams (the first one is
    // skipped after a failure, so the second answers too).
    for _ in 0..2 {
        assert_eq!(answer_a(server.dns, "docker.io.").await, ["203.0.113.10"]);
    }
    assert_eq!(answer_a(server.dns, "a.gone.test.").await, ["203.0.113.11"]);
    assert_eq!(answer_a(server.dns, "checked.test.").await, ["127.0.0.1"]);
    assert_eq!(
        answer_a(server.dns, "kept.hosts.test.").await,
        ["203.0.113.20"]
    );
    assert_eq!(
        answer_a(server.dns, "gone.hosts.test.").await,
        ["203.0.113.21"]
    );
    kept_upstream.set_handler(|_, _| Reply::Drop);
    assert_eq!(
        answer_a(server.dns, "forwarded.test.").await,
        ["198.51.100.7"]
    );
    kept_upstream.set_handler(default_reply);
    assert_eq!(
        answer_a(server.dns, "forwarded2.test.").await,
        ["198.51.100.7"]
    );

    let dropped = format!("upstream=\"{}\"", dropped_upstream.addr);
    let kept = format!("upstream=\"{}\"", kept_upstream.addr);
    let (_, before) = server.admin_get("/metrics").await;
    for (metric, label) in [
        (RECORD_HITS, "record=\"*.gone.test\""),
        (RECORD_HITS, "record=\"gone.hosts.test\""),
        (RECORD_UP, "record=\"checked.test\""),
        (ENDPOINT_UP, "record=\"checked.test\""),
        (UPSTREAM_DURATION, dropped.as_str()),
        (UPSTREAM_ERRORS, dropped.as_str()),
        (UPSTREAM_LOOPS, dropped.as_str()),
        (UPSTREAM_ERRORS, kept.as_str()),
    ] {
        assert!(
            has_series(&before, metric, label),
            "{metric} {label} before the reload:\n{before}"
        );
    }
    let kept_errors = format!("{UPSTREAM_ERRORS}{{{kept}}}");
    let errors_before = metric_value(&before, &kept_errors).expect("errors of the kept upstream");
    assert!(errors_before >= 1.0);
    let kept_duration = format!("{UPSTREAM_DURATION}_count{{{kept}}}");
    let duration_before = metric_value(&before, &kept_duration).expect("duration count");

    // The reload: one record and the health-checked one gone, one hosts
    // name gone, one upstream gone.
    std::fs::write(
        server.dir.path().join("registry.hosts"),
        "203.0.113.20 kept.hosts.test\n",
    )
    .expect("hosts");
    let records_after = "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n";
    let text = body(records_after, &[kept_upstream.addr]);
    server.write_config(
        &crate::admin::complete(&text, kept_upstream.addr),
        Some(kept_upstream.addr),
    );
    let running = server.server.as_ref().expect("running");
    running.reload.send(Trigger::Forced).await.expect("reload");
    wait_until("the reload took the new files", || async {
        answer_a(server.dns, "gone.hosts.test.").await == ["198.51.100.7"]
            && server.metric(&reloads("error")).await == Some(0.0)
    })
    .await;
    wait_until("the reload is counted", || async {
        server.metric(&reloads("ok")).await >= Some(1.0)
    })
    .await;

    let (_, after) = server.admin_get("/metrics").await;
    for (metric, label) in [
        (RECORD_HITS, "record=\"*.gone.test\""),
        (RECORD_HITS, "record=\"gone.hosts.test\""),
        (RECORD_HITS, "record=\"checked.test\""),
        (RECORD_UP, "record=\"checked.test\""),
        (ENDPOINT_UP, "record=\"checked.test\""),
        (UPSTREAM_DURATION, dropped.as_str()),
        (UPSTREAM_ERRORS, dropped.as_str()),
        (UPSTREAM_LOOPS, dropped.as_str()),
    ] {
        assert!(
            !has_series(&after, metric, label),
            "{metric} {label} still exported after the reload:\n{after}"
        );
    }
    // What is still configured keeps its series and its counts.
    assert_eq!(
        metric_value(&after, &format!("{RECORD_HITS}{{record=\"docker.io\"}}")),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &after,
            &format!("{RECORD_HITS}{{record=\"kept.hosts.test\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&after, &kept_errors), Some(errors_before));
    assert!(metric_value(&after, &kept_duration) >= Some(duration_before));
    drop(probe_target);
}
