//! Live reload and restarts (README "Live reload"): every way a watched file changes is
//! live within 2 s; a bad file changes nothing but the reload metrics; a
//! storm of swaps under query load answers every query from one whole
//! configuration; the cache, the listeners and the probes survive; and a
//! second instance on the same address takes over without losing a query.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use accel_dns::app::Server;
use accel_dns::config;
use accel_dns::internals::logging::LogHandle;
use accel_dns::internals::metrics::LAST_RELOAD_SUCCESS;
use accel_dns::internals::reload::Trigger;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::admin::{
    LogCapture, answer_a, complete, metric_or_zero, query_from, reloads, rewrite, udp_outcome,
    wait_within,
};
use crate::common::*;

/// README "Live reload": a change is live within this long.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// A record `docker.io` with these addresses.
fn docker(addresses: &[&str]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[record]]\nname = \"docker.io\"\na = [{}]\n",
        list.join(", ")
    )
}

/// Starts a server on files the test already wrote in `dir` (the harness's
/// `TestServer::start` writes its own config file, which a symlinked
/// ConfigMap layout or a hosts file that must exist first cannot use).
pub async fn start_prepared(dir: tempfile::TempDir, config_path: PathBuf) -> TestServer {
    let env = test_env(dir.path());
    let config =
        config::load(&config_path, &env).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let server = Server::start(
        config,
        Some(config_path.clone()),
        env,
        LogHandle::detached(),
    )
    .await
    .expect("server starts");
    TestServer {
        dns: server.dns_addrs[0],
        admin: server.admin_addr,
        server: Some(server),
        dir,
        config_path,
    }
}

/// Writes `text` next to `path` and renames it over `path` (an atomic
/// replace, as editors with backups, `install` and `kubectl cp` do).
fn rename_replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// Waits for the A answer of `qname` to become `expected`; asserts it does
/// within [`LIVE_WITHIN`] and returns how long it took.
async fn live(server: &TestServer, qname: &str, expected: &[&str], how: &str) -> Duration {
    let elapsed = wait_within(LIVE_WITHIN, how, || async {
        answer_a(server.dns, qname).await == expected
    })
    .await;
    eprintln!("reload latency, {how}: {elapsed:?}");
    elapsed
}

#[tokio::test]
async fn an_in_place_edit_is_live_within_2s() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(upstream.addr)).await;
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["203.0.113.10"]);
    rewrite(&server, &docker(&["203.0.113.11"]), upstream.addr);
    live(&server, "docker.io.", &["203.0.113.11"], "in-place edit").await;
    // And again: the watch is still armed after the first reload.
    rewrite(&server, &docker(&["203.0.113.12"]), upstream.addr);
    live(
        &server,
        "docker.io.",
        &["203.0.113.12"],
        "second in-place edit",
    )
    .await;
    assert_eq!(server.metric(&reloads("ok")).await, Some(2.0));
}

#[tokio::test]
async fn a_rename_replace_is_live_within_2s() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(upstream.addr)).await;
    for (n, address) in ["203.0.113.21", "203.0.113.22", "203.0.113.23"]
        .iter()
        .enumerate()
    {
        rename_replace(
            &server.config_path,
            &complete(&docker(&[address]), upstream.addr),
        );
        live(
            &server,
            "docker.io.",
            &[address],
            &format!("rename-replace #{}", n + 1),
        )
        .await;
    }
}

/// The layout kubelet gives a ConfigMap mounted as a directory: every key is
/// a symlink into `..data`, itself a symlink to a timestamped directory that
/// an update replaces by renaming a new `..data` over the old one.
struct ConfigMapDir {
    root: PathBuf,
    version: usize,
}

impl ConfigMapDir {
    fn create(root: &Path, files: &[(&str, String)]) -> Self {
        let mut map = Self {
            root: root.to_path_buf(),
            version: 0,
        };
        map.publish(files);
        for (key, _) in files {
            std::os::unix::fs::symlink(format!("..data/{key}"), root.join(key)).expect("key link");
        }
        map
    }

    /// Writes a new timestamped directory, repoints `..data` at it
    /// atomically, and removes the previous one, as kubelet does.
    fn publish(&mut self, files: &[(&str, String)]) {
        self.version += 1;
        let dir_name = format!(
            "..2026_01_01_00_00_0{}.{}",
            self.version,
            1000 + self.version
        );
        let dir = self.root.join(&dir_name);
        std::fs::create_dir(&dir).expect("version dir");
        for (key, text) in files {
            std::fs::write(dir.join(key), text).expect("write key");
        }
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&dir_name, &tmp).expect("tmp link");
        let previous = std::fs::read_link(self.root.join("..data")).ok();
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.root.join(previous)).expect("remove old version");
        }
    }
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_live_within_2s() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = |address: &str, hosts_address: &str| {
        vec![
            (
                "accel-dns.toml",
                complete(
                    &format!(
                        "[records]\nhosts_files = [\"registry.hosts\"]\n{}",
                        docker(&[address])
                    ),
                    upstream.addr,
                ),
            ),
            ("registry.hosts", format!("{hosts_address} quay.io\n")),
        ]
    };
    let mut map = ConfigMapDir::create(dir.path(), &files("203.0.113.10", "203.0.113.50"));
    let config_path = dir.path().join("accel-dns.toml");
    let server = start_prepared(dir, config_path).await;
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["203.0.113.10"]);
    assert_eq!(answer_a(server.dns, "quay.io.").await, ["203.0.113.50"]);

    map.publish(&files("203.0.113.11", "203.0.113.51"));
    live(&server, "docker.io.", &["203.0.113.11"], "ConfigMap swap").await;
    assert_eq!(answer_a(server.dns, "quay.io.").await, ["203.0.113.51"]);

    // The second update goes to a new directory again: the watch follows.
    map.publish(&files("203.0.113.12", "203.0.113.52"));
    live(
        &server,
        "docker.io.",
        &["203.0.113.12"],
        "second ConfigMap swap",
    )
    .await;
    live(
        &server,
        "quay.io.",
        &["203.0.113.52"],
        "hosts file in the ConfigMap",
    )
    .await;
    assert_eq!(server.metric(&reloads("error")).await, Some(0.0));
}

#[tokio::test]
async fn a_hosts_file_change_is_live_within_2s() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // In a directory of its own, which must be watched too.
    let hosts_dir = dir.path().join("hosts.d");
    std::fs::create_dir(&hosts_dir).expect("mkdir");
    let hosts = hosts_dir.join("registry.hosts");
    std::fs::write(&hosts, "203.0.113.60 registry.test\n").expect("write hosts");
    let config_path = dir.path().join("accel-dns.toml");
    std::fs::write(
        &config_path,
        complete(
            "[records]\nhosts_files = [\"hosts.d/registry.hosts\"]\n",
            upstream.addr,
        ),
    )
    .expect("write config");
    let server = start_prepared(dir, config_path).await;
    assert_eq!(
        answer_a(server.dns, "registry.test.").await,
        ["203.0.113.60"]
    );

    std::fs::write(
        &hosts,
        "203.0.113.61 registry.test\n203.0.113.62 mirror.test\n",
    )
    .expect("edit hosts");
    live(
        &server,
        "registry.test.",
        &["203.0.113.61"],
        "hosts file edited",
    )
    .await;
    assert_eq!(answer_a(server.dns, "mirror.test.").await, ["203.0.113.62"]);

    rename_replace(&hosts, "203.0.113.63 registry.test\n");
    live(
        &server,
        "registry.test.",
        &["203.0.113.63"],
        "hosts file replaced",
    )
    .await;
    // A name gone from the hosts file is forwarded again.
    live(
        &server,
        "mirror.test.",
        &["198.51.100.7"],
        "hosts name removed",
    )
    .await;
}

/// Binds UDP and TCP on `ip:53` for a fake upstream, if this process may
/// (port 53 needs root or CAP_NET_BIND_SERVICE).
async fn upstream_on_port_53(ip: &str, answer: &'static str) -> Option<FakeUpstream> {
    let addr: SocketAddr = format!("{ip}:53").parse().expect("addr");
    std::net::UdpSocket::bind(addr).ok()?;
    std::net::TcpListener::bind(addr).ok()?;
    let answer: std::net::Ipv4Addr = answer.parse().expect("ip");
    Some(
        FakeUpstream::start_on(
            addr,
            Arc::new(move |query: &Message, _tcp| {
                let mut response = response_to(query);
                let q = &query.queries[0];
                response.add_answer(hickory_proto::rr::Record::from_rdata(
                    q.name().clone(),
                    300,
                    hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(answer)),
                ));
                Reply::Answer(response)
            }),
        )
        .await,
    )
}

/// With `servers = ["system"]`, resolv.conf is watched like the config file.
#[tokio::test]
async fn a_resolv_conf_change_reloads_system_upstreams() {
    let first = upstream_on_port_53("127.0.0.151", "198.51.100.151").await;
    let second = upstream_on_port_53("127.0.0.152", "198.51.100.152").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.151\n").expect("write resolv.conf");
    let config_path = dir.path().join("accel-dns.toml");
    std::fs::write(
        &config_path,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nservers = [\"system\"]\ntimeout = \"1s\"\n",
    )
    .expect("write config");
    let server = start_prepared(dir, config_path).await;
    let running = server.server.as_ref().expect("running");
    let upstreams = || running.resolver.snapshot().config.upstream.servers.clone();
    assert_eq!(
        upstreams(),
        ["127.0.0.151:53".parse::<SocketAddr>().expect("addr")]
    );

    rename_replace(
        &resolv,
        "# rewritten by the DHCP client\nnameserver 127.0.0.152\n",
    );
    let elapsed = wait_within(LIVE_WITHIN, "resolv.conf change reloads", || async {
        upstreams() == ["127.0.0.152:53".parse::<SocketAddr>().expect("addr")]
    })
    .await;
    eprintln!("reload latency, resolv.conf replaced: {elapsed:?}");
    assert_eq!(server.metric(&reloads("ok")).await, Some(1.0));
    match (first, second) {
        (Some(first), Some(second)) => {
            // End to end: new names go to the new nameserver.
            assert_eq!(
                answer_a(server.dns, "after.test.").await,
                ["198.51.100.152"]
            );
            assert_eq!(first.count(), 0);
            assert_eq!(second.count(), 1);
        }
        _ => eprintln!("port 53 not bindable here: checked the upstream list only"),
    }
}

/// Edits in quick succession, faster than the debounce and while reloads
/// run: whatever the timing, the last one is what ends up in force (a write
/// landing while a reload compiles must not be taken as already seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_edits_ends_on_the_last_one() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.100"]), Some(upstream.addr)).await;
    let mut last = String::new();
    for n in 1..=40u32 {
        last = format!("203.0.113.{}", 100 + n);
        // 200 more records, so that compiling takes a moment, as it does
        // with a real fleet's file.
        let mut body = docker(&[&last]);
        for i in 0..200 {
            body.push_str(&format!(
                "[[record]]\nname = \"pad{i}.test\"\na = [\"203.0.113.1\"]\n"
            ));
        }
        if n % 2 == 0 {
            rewrite(&server, &body, upstream.addr);
        } else {
            rename_replace(&server.config_path, &complete(&body, upstream.addr));
        }
        tokio::time::sleep(Duration::from_millis(7 * u64::from(n % 5))).await;
    }
    live(
        &server,
        "docker.io.",
        &[&last],
        "last of a burst of 40 edits",
    )
    .await;
}

/// Regression: the reloader fingerprinted the files again *after* loading
/// and compiling them, so a write landing in between was taken as already
/// loaded and never reloaded. Here each write follows the moment a reload
/// swaps its snapshot in, which is inside that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_reload_is_not_lost() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.100"]), Some(upstream.addr)).await;
    let resolver = server.server.as_ref().expect("running").resolver.clone();
    for round in 1..=10u32 {
        let during = format!("203.0.113.{}", 100 + 2 * round - 1);
        let after = format!("203.0.113.{}", 100 + 2 * round);
        let before = resolver.snapshot();
        let path = server.config_path.clone();
        let next = complete(&docker(&[&after]), upstream.addr);
        let resolver = resolver.clone();
        // Spin on a thread of its own: the write must follow the swap at once.
        let writer = std::thread::spawn(move || {
            let started = Instant::now();
            while Arc::ptr_eq(&resolver.snapshot(), &before) {
                assert!(started.elapsed() < DEADLINE, "no reload");
                std::hint::spin_loop();
            }
            std::fs::write(&path, next).expect("write");
        });
        rewrite(&server, &docker(&[&during]), upstream.addr);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join")
            .expect("writer");
        live(
            &server,
            "docker.io.",
            &[&after],
            &format!("write during a reload, round {round}"),
        )
        .await;
    }
}

/// SIGHUP (the `Forced` trigger) reloads at once, even when no file changed.
#[tokio::test]
async fn a_forced_reload_is_immediate_and_unconditional() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(upstream.addr)).await;
    let trigger = server.server.as_ref().expect("running").reload.clone();
    trigger.send(Trigger::Forced).await.expect("send");
    let elapsed = wait_within(
        Duration::from_secs(1),
        "forced reload of an unchanged file",
        || async { server.metric(&reloads("ok")).await == Some(1.0) },
    )
    .await;
    eprintln!("reload latency, forced (unchanged file): {elapsed:?}");
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["203.0.113.10"]);
}

/// The real binary: SIGHUP reloads at once (even an unchanged file, which
/// no watcher would reload) and does not end the process.
#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dns_port = free_port("127.0.0.32");
    let admin: SocketAddr = format!("127.0.0.32:{}", free_port("127.0.0.32"))
        .parse()
        .expect("addr");
    let config = dir.path().join("accel-dns.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.32:{dns_port}\"]\n[admin]\nlisten = \"{admin}\"\n\
             [upstream]\nservers = [\"{}\"]\n{}",
            upstream.addr,
            docker(&["203.0.113.10"])
        ),
    )
    .expect("write config");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("resolv.conf");
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_accel-dns"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("ACCEL_DNS_RESOLV_CONF", &resolv)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn accel-dns"),
    );
    wait_until("/readyz", || async {
        tokio::net::TcpStream::connect(admin).await.is_ok()
            && http_get(admin, "/readyz").await.0 == 200
    })
    .await;
    let ok = |body: &str| metric_value(body, &reloads("ok"));
    assert_eq!(ok(&http_get(admin, "/metrics").await.1), Some(0.0));
    let pid = libc::pid_t::try_from(child.0.id()).expect("pid");
    // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let elapsed = wait_within(Duration::from_secs(1), "SIGHUP reloads", || async {
        ok(&http_get(admin, "/metrics").await.1) == Some(1.0)
    })
    .await;
    eprintln!("reload latency, SIGHUP (unchanged file): {elapsed:?}");
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    let dns: SocketAddr = format!("127.0.0.32:{dns_port}").parse().expect("addr");
    assert_eq!(answer_a(dns, "docker.io.").await, ["203.0.113.10"]);
}

/// A file that fails validation leaves the running configuration in force,
/// logs where the problem is, and flips the reload metrics; the next good
/// file is taken and restores them.
#[tokio::test]
async fn a_bad_file_keeps_the_old_answers_until_a_good_one_comes() {
    let (logs, _guard) = LogCapture::start();
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(upstream.addr)).await;
    assert_eq!(server.metric(LAST_RELOAD_SUCCESS).await, Some(1.0));

    // Line 9 of the completed file: the typo `aa`.
    let bad = complete(
        "[[record]]\nname = \"docker.io\"\naa = [\"203.0.113.66\"]\n",
        upstream.addr,
    );
    let bad_line = bad
        .lines()
        .position(|l| l.starts_with("aa ="))
        .expect("line")
        + 1;
    server.write_config(&bad, None);
    wait_within(LIVE_WITHIN, "the bad file is rejected", || async {
        server.metric(&reloads("error")).await == Some(1.0)
    })
    .await;
    assert_eq!(server.metric(LAST_RELOAD_SUCCESS).await, Some(0.0));
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["203.0.113.10"]);
    let location = format!("accel-dns.toml:{bad_line}:");
    let errors = logs.lines_with(&["reload failed", &location, "unknown field"]);
    assert_eq!(
        errors.len(),
        1,
        "one error naming file and line:\n{}",
        logs.text()
    );
    assert!(errors[0].contains("ERROR"), "{}", errors[0]);

    // A second bad file (a record with neither cname nor addresses) too.
    server.write_config(
        &complete("[[record]]\nname = \"docker.io\"\n", upstream.addr),
        None,
    );
    wait_within(LIVE_WITHIN, "the second bad file is rejected", || async {
        server.metric(&reloads("error")).await == Some(2.0)
    })
    .await;
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["203.0.113.10"]);

    rewrite(&server, &docker(&["203.0.113.11"]), upstream.addr);
    live(
        &server,
        "docker.io.",
        &["203.0.113.11"],
        "good file after bad ones",
    )
    .await;
    assert_eq!(server.metric(LAST_RELOAD_SUCCESS).await, Some(1.0));
    assert_eq!(server.metric(&reloads("ok")).await, Some(1.0));
}

/// 20 swaps between two configurations while clients query without pause:
/// every query is answered, and each answer is exactly one configuration's
/// (never a mix, never an empty or forwarded answer from a half-built state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_swaps_under_load_answers_every_query_from_one_configuration() {
    let upstream = FakeUpstream::start().await;
    let first = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    let second = ["203.0.113.4", "203.0.113.5"];
    let config = |addresses: &[&str]| {
        complete(
            &format!(
                "{}[[record]]\nname = \"*.docker.io\"\ncname = \"docker.io\"\n",
                docker(addresses)
            ),
            upstream.addr,
        )
    };
    let server = TestServer::start(&config(&first), Some(upstream.addr)).await;
    let dns = server.dns;
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..2 {
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let mut buf = vec![0u8; 4096];
            let (mut answered, mut lost, mut mixed) = (0usize, 0usize, Vec::new());
            let started = Instant::now();
            // Bounded: stops when the swaps are done, or after 20 s at worst.
            while !done.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(20) {
                let qname = if answered % 2 == client {
                    "docker.io."
                } else {
                    "registry-1.docker.io."
                };
                let query = query_message(qname, RecordType::A, None);
                socket
                    .send_to(&query.to_vec().expect("encode"), dns)
                    .await
                    .expect("send");
                let answer = loop {
                    match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
                    {
                        Ok(Ok(len)) => {
                            let message = Message::from_vec(&buf[..len]).expect("decodes");
                            // A late answer to an earlier (lost) query is not this one's.
                            if message.metadata.id == query.metadata.id {
                                break Some(message);
                            }
                        }
                        _ => break None,
                    }
                };
                let Some(answer) = answer else {
                    lost += 1;
                    continue;
                };
                answered += 1;
                let mut got: Vec<String> =
                    a_records(&answer).iter().map(ToString::to_string).collect();
                got.sort();
                let ok = answer.metadata.response_code == ResponseCode::NoError
                    && (got == first || got == second);
                if !ok {
                    mixed.push(format!(
                        "{qname}: {:?} {got:?}",
                        answer.metadata.response_code
                    ));
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            (answered, lost, mixed)
        }));
    }

    let ok_before = metric_or_zero(&server, &reloads("ok")).await;
    for swap in 0..20 {
        let addresses: &[&str] = if swap % 2 == 0 { &second } else { &first };
        rename_replace(&server.config_path, &config(addresses));
        // Let each swap be its own reload (the debounce merges bursts).
        wait_within(LIVE_WITHIN, "a swap is taken", || async {
            metric_or_zero(&server, &reloads("ok")).await >= ok_before + f64::from(swap + 1)
        })
        .await;
    }
    done.store(true, Ordering::Release);
    let mut total = 0;
    for client in clients {
        let (answered, lost, mixed) = client.await.expect("client");
        assert_eq!(lost, 0, "queries without an answer during the storm");
        assert!(
            mixed.is_empty(),
            "answers from neither configuration: {mixed:?}"
        );
        total += answered;
    }
    eprintln!("storm: {total} queries answered across 20 reloads");
    assert!(total >= 100, "the clients kept querying: {total}");
    assert_eq!(metric_or_zero(&server, &reloads("error")).await, 0.0);
    assert_eq!(
        answer_a(server.dns, "docker.io.").await,
        first,
        "the last configuration is in force"
    );
    assert_eq!(upstream.count(), 0, "a record name is never forwarded");
}

/// A reload keeps the cache: a forwarded name cached before it is answered
/// from the cache after it, without asking upstream again.
#[tokio::test]
async fn the_cache_survives_a_reload() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(upstream.addr)).await;
    assert_eq!(answer_a(server.dns, "cached.test.").await, ["198.51.100.7"]);
    assert_eq!(upstream.count(), 1);
    let cache_hits = metric_or_zero(&server, &udp_outcome("cache")).await;

    rewrite(&server, &docker(&["203.0.113.11"]), upstream.addr);
    live(&server, "docker.io.", &["203.0.113.11"], "record change").await;
    assert_eq!(answer_a(server.dns, "cached.test.").await, ["198.51.100.7"]);
    assert_eq!(upstream.count(), 1, "asked upstream again after the reload");
    assert_eq!(
        metric_or_zero(&server, &udp_outcome("cache")).await - cache_hits,
        1.0
    );

    // Also across a change of the cache bounds (the entries are carried over).
    rewrite(
        &server,
        &format!("[cache]\nmax_entries = 500\n{}", docker(&["203.0.113.12"])),
        upstream.addr,
    );
    live(
        &server,
        "docker.io.",
        &["203.0.113.12"],
        "cache bounds change",
    )
    .await;
    assert_eq!(answer_a(server.dns, "cached.test.").await, ["198.51.100.7"]);
    assert_eq!(
        upstream.count(),
        1,
        "asked upstream again after re-bounding"
    );
}

/// Upstreams, the ACL and the query log follow a reload.
#[tokio::test]
async fn upstreams_acl_and_query_log_take_effect_on_reload() {
    let (logs, _guard) = LogCapture::start();
    let first = FakeUpstream::start().await;
    let second = FakeUpstream::start().await;
    second.set_handler(|query, _| {
        let mut response = response_to(query);
        let q = &query.queries[0];
        response.add_answer(hickory_proto::rr::Record::from_rdata(
            q.name().clone(),
            300,
            hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(
                "198.51.100.99".parse().expect("ip"),
            )),
        ));
        Reply::Answer(response)
    });
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(first.addr)).await;
    assert_eq!(answer_a(server.dns, "one.test.").await, ["198.51.100.7"]);
    assert!(
        logs.lines_with(&["one.test"]).is_empty(),
        "no query log yet"
    );

    rewrite(
        &server,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.1/32\"]\n\
         [log]\nqueries = true\n",
        second.addr,
    );
    let mut n = 0;
    let dns = server.dns;
    wait_within(LIVE_WITHIN, "the new upstream answers new names", || {
        n += 1;
        let qname = format!("new{n}.test.");
        async move { answer_a(dns, &qname).await == ["198.51.100.99"] }
    })
    .await;
    let refused = query_from("127.0.0.2", server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    // The old record is gone with the old file: forwarded now.
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["198.51.100.99"]);
    let lines = logs.lines_with(&["docker.io", "outcome=\"upstream\""]);
    assert!(
        !lines.is_empty(),
        "query log on after reload:\n{}",
        logs.text()
    );
}

/// A change of `listen` or `admin.listen` is taken for everything else, is
/// logged as needing a restart, and the running listeners keep serving.
#[tokio::test]
async fn a_listen_change_logs_that_it_needs_a_restart_and_keeps_serving() {
    let (logs, _guard) = LogCapture::start();
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&docker(&["203.0.113.10"]), Some(upstream.addr)).await;
    rewrite(
        &server,
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:5399\"]\n\
             [admin]\nlisten = \"127.0.0.1:9999\"\n{}",
            docker(&["203.0.113.11"])
        ),
        upstream.addr,
    );
    live(
        &server,
        "docker.io.",
        &["203.0.113.11"],
        "with a listen change",
    )
    .await;
    let warned = logs.lines_with(&["server.listen changed", "needs a restart"]);
    assert_eq!(warned.len(), 1, "{}", logs.text());
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert_eq!(
        logs.lines_with(&["admin.listen changed", "needs a restart"])
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        server.admin_get("/readyz").await.0,
        200,
        "admin where it was"
    );
    assert_eq!(
        a_records(&query_tcp(server.dns, "docker.io.", RecordType::A).await),
        ["203.0.113.11".parse::<std::net::Ipv4Addr>().expect("ip")]
    );

    // The next reload still differs from what is bound: it says so again,
    // and a log format change is flagged the same way.
    rewrite(
        &server,
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:5399\"]\n\
             [log]\nformat = \"json\"\n{}",
            docker(&["203.0.113.12"])
        ),
        upstream.addr,
    );
    live(
        &server,
        "docker.io.",
        &["203.0.113.12"],
        "listen still changed",
    )
    .await;
    let restart = |setting: &str| logs.lines_with(&[setting, "needs a restart"]).len();
    assert_eq!(restart("server.listen changed"), 2, "{}", logs.text());
    assert_eq!(restart("admin.listen changed"), 1, "admin back as bound");
    assert_eq!(restart("log.format changed"), 1, "{}", logs.text());

    // Back to what is bound: nothing needs a restart any more.
    rewrite(&server, &docker(&["203.0.113.13"]), upstream.addr);
    live(&server, "docker.io.", &["203.0.113.13"], "listen reverted").await;
    assert_eq!(restart("server.listen changed"), 2, "{}", logs.text());
    assert_eq!(restart("log.format changed"), 1);
}

/// A free port on `ip` for both UDP and TCP.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind(format!("{ip}:0")).expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// UDP queries an instance has answered (records, upstream and cache).
async fn answered_total(server: &TestServer) -> f64 {
    let mut total = 0.0;
    for outcome in ["record", "upstream", "cache"] {
        total += metric_or_zero(server, &udp_outcome(outcome)).await;
    }
    total
}

/// What one load client saw.
#[derive(Default, Debug)]
struct LoadReport {
    answered: usize,
    retried: usize,
    lost: usize,
}

/// Sends one query from a fresh socket; if no answer comes within 1 s,
/// sends it once more from the same socket (as dig does). Returns whether
/// it was answered, and whether it needed the retry.
async fn query_with_one_retry(dns: SocketAddr, query: &Message) -> (bool, bool) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bytes = query.to_vec().expect("encode");
    let mut buf = vec![0u8; 4096];
    for attempt in 0..2 {
        socket.send_to(&bytes, dns).await.expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Ok(Ok(len)) => {
                    if Message::from_vec(&buf[..len])
                        .is_ok_and(|m| m.metadata.id == query.metadata.id)
                    {
                        return (true, attempt > 0);
                    }
                }
                // ICMP port unreachable from a closed socket: retry at once.
                Ok(Err(_)) => break,
                Err(_) => break,
            }
        }
    }
    (false, true)
}

/// The same over TCP, on a new connection each time (a reset or a close
/// without an answer is retried at once, as stub resolvers do).
async fn tcp_query_with_one_retry(dns: SocketAddr, query: &Message) -> (bool, bool) {
    let bytes = query.to_vec().expect("encode");
    for attempt in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(1), tcp_raw(dns, &bytes)).await;
        if let Ok(Some(answer)) = answer
            && Message::from_vec(&answer).is_ok_and(|m| m.metadata.id == query.metadata.id)
        {
            return (true, attempt > 0);
        }
    }
    (false, true)
}

/// Issue 4: a second instance starts on the same address while the first
/// runs (SO_REUSEPORT), then the first is stopped, while clients query
/// throughout (records and forwarded names, so answers are in flight when
/// it stops) — no query is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_load_loses_no_query() {
    let upstream = FakeUpstream::start().await;
    // Forwarded answers take a little while, so some are always in flight.
    upstream.set_handler(|query, tcp| {
        Reply::Delay(
            Duration::from_millis(20),
            Box::new(default_reply(query, tcp)),
        )
    });
    let ip = "127.0.0.31";
    let port = free_port(ip);
    let body = format!(
        "[server]\nlisten = [\"{ip}:{port}\"]\n{}",
        docker(&["203.0.113.10"])
    );
    let mut old = TestServer::start(&body, Some(upstream.addr)).await;
    let dns: SocketAddr = format!("{ip}:{port}").parse().expect("addr");

    // Open loop: a query every millisecond, each from a fresh socket (so the
    // kernel spreads them over every socket of the address) and in a task
    // of its own, whether or not the earlier ones were answered.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut queries = tokio::task::JoinSet::new();
            let mut pace = tokio::time::interval(Duration::from_millis(1));
            let started = Instant::now();
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(30) {
                pace.tick().await;
                n += 1;
                let qname = if n.is_multiple_of(2) {
                    "docker.io.".to_string()
                } else {
                    format!("q{n}.load.test.")
                };
                let query = query_message(&qname, RecordType::A, None);
                if n % 10 == 5 {
                    queries.spawn(async move { tcp_query_with_one_retry(dns, &query).await });
                } else {
                    queries.spawn(async move { query_with_one_retry(dns, &query).await });
                }
            }
            let mut report = LoadReport::default();
            while let Some(outcome) = queries.join_next().await {
                match outcome.expect("query task") {
                    (true, false) => report.answered += 1,
                    (true, true) => {
                        report.answered += 1;
                        report.retried += 1;
                    }
                    (false, _) => report.lost += 1,
                }
            }
            report
        })
    };
    wait_until("the old instance is under load", || async {
        answered_total(&old).await >= 50.0
    })
    .await;

    let new = TestServer::start(&body, Some(upstream.addr)).await;
    assert_eq!(new.dns, dns);
    wait_until("the new instance takes a share", || async {
        answered_total(&new).await >= 50.0
    })
    .await;

    let mut running = old.server.take().expect("running");
    running.lame_duck = Duration::from_millis(300);
    let stopping = tokio::spawn(running.stop());
    wait_until("the old instance fails /readyz", || async {
        old.admin_get("/readyz").await.0 == 503
    })
    .await;
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the old instance stops")
        .expect("stop task");
    let after_stop = answered_total(&new).await;
    wait_until("the new instance answers alone", || async {
        answered_total(&new).await >= after_stop + 100.0
    })
    .await;
    stop.store(true, Ordering::Release);
    let total = load.await.expect("load");
    eprintln!("restart under load: {total:?}");
    assert_eq!(total.lost, 0, "queries never answered: {total:?}");
    // Closing the old sockets as soon as shutdown began left about 10 of 650
    // queries to the client's retry (a second's delay each); draining them
    // leaves a window of microseconds. A little slack for a loaded machine.
    assert!(total.retried <= 2, "queries that needed a retry: {total:?}");
    assert!(total.answered >= 200, "{total:?}");
    old.stop().await;
}
