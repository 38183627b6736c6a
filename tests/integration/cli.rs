//! README "Command line" through the real binary: `check` (summary and exit 0, or the
//! file:line:column of the problem and exit 1), `--version`/`--help`, the
//! three ways to name the configuration, the built-in defaults, SIGTERM and
//! SIGINT draining to exit 0, and `RUST_LOG` over `[log] level`. Then real
//! clients: `dig` over UDP and TCP, and glibc's stub resolver (`getent`),
//! which does not chase CNAMEs itself, through a private mount namespace.
//!
//! The binary never reads the machine's `/etc/resolv.conf` here:
//! `ACCEL_DNS_RESOLV_CONF` points at a file of the test. The servers it
//! runs bind ports found free just before (the only place the tests do so:
//! a separate process cannot be handed an already-bound socket).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_accel-dns");

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

fn fixtures_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// A port free on 127.0.0.1 for both UDP and TCP right now.
fn free_port(ip: Ipv4Addr) -> u16 {
    loop {
        let udp = UdpSocket::bind((ip, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// A temp dir holding a `resolv.conf` for the binary.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 192.0.2.1\n").expect("write");
    dir
}

/// The binary with a clean environment: no `ACCEL_DNS_CONFIG`, no
/// `RUST_LOG`, and `resolv.conf` from `dir`.
fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("ACCEL_DNS_CONFIG")
        .env_remove("RUST_LOG")
        .env("ACCEL_DNS_RESOLV_CONF", dir.join("resolv.conf"))
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run accel-dns")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `accel-dns serve`; killed if the test ends early.
struct Running {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Writes `config` (the served fixture with `dns`, `admin` and
    /// `upstream` put in) and starts the binary with `args`/`envs`.
    fn start(
        dir: &Path,
        config: &str,
        dns: SocketAddr,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        let config = config.replace("127.0.0.1:9553", &admin.to_string());
        std::fs::write(dir.join("accel-dns.toml"), config).expect("write config");
        let stderr = dir.join("stderr.log");
        let log = std::fs::File::create(&stderr).expect("stderr file");
        let child = command(dir)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn accel-dns");
        Self {
            child,
            dns,
            admin,
            stderr,
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("accel-dns exited early: {status}\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(self.admin).await.is_ok()
                && http_get(self.admin, "/readyz").await.0 == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not 200 in time\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit in time\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The served fixture, pointed at `dns` and `upstream`, with its hosts file beside it.
fn served_config(dir: &Path, dns: SocketAddr, upstream: SocketAddr) -> String {
    std::fs::copy(fixture("valid/hosts"), dir.join("hosts")).expect("copy hosts");
    std::fs::read_to_string(fixture("valid/full.toml"))
        .expect("fixture")
        .replace("127.0.0.1:5353", &dns.to_string())
        .replace("127.0.0.1:5300", &upstream.to_string())
}

fn local_dns() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)))
}

#[test]
fn check_accepts_every_valid_fixture_with_a_summary() {
    let dir = workdir();
    for path in fixtures_in("valid") {
        let out = run(command(dir.path()).arg("check").arg("--config").arg(&path));
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            stdout,
            text(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
        for word in ["records", "upstreams", "listeners"] {
            assert!(stdout.contains(word), "{}: {stdout}", path.display());
        }
    }
    let out = run(command(dir.path())
        .args(["check", "--config"])
        .arg(fixture("valid/full.toml")));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("3 records"), "{stdout}");
    assert!(stdout.contains("2 hosts-file names"), "{stdout}");
    assert!(stdout.contains("1 upstreams (127.0.0.1:5300)"), "{stdout}");
    assert!(stdout.contains("1 listeners (127.0.0.1:5353)"), "{stdout}");
    // `system` reads the resolv.conf named by ACCEL_DNS_RESOLV_CONF.
    let out = run(command(dir.path())
        .args(["check", "--config"])
        .arg(fixture("valid/system.toml")));
    assert!(
        text(&out.stdout).contains(
            "5 upstreams (192.0.2.53:53, 192.0.2.54:5300, [2001:db8::53]:5300, [2001:db8::54]:53, 192.0.2.1:53)"
        ),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_rejects_every_invalid_fixture_with_file_line_and_column() {
    let dir = workdir();
    // (fixture, location or file named, what is wrong)
    let expected = [
        ("bad-address.toml", "bad-address.toml:3:", "invalid IPv4"),
        (
            "bad-cname-target.toml",
            "bad-cname-target.toml:3:",
            "invalid character",
        ),
        (
            "bad-hosts-line.toml",
            "bad-hosts-line.hosts:3:",
            "198.18.0.300",
        ),
        ("bad-name.toml", "bad-name.toml:2:", "empty label"),
        ("empty-upstreams.toml", "empty-upstreams.toml:2:", "empty"),
        (
            "bad-duration.toml",
            "bad-duration.toml:3:",
            "invalid duration",
        ),
        ("bad-wildcard.toml", "bad-wildcard.toml:2:", "wildcard"),
        (
            "cname-and-address.toml",
            "cname-and-address.toml:4:",
            "mutually exclusive",
        ),
        (
            "duplicate-name.toml",
            "duplicate-name.toml:5:",
            "more than once",
        ),
        (
            "missing-hosts-file.toml",
            "missing-hosts-file.toml:2:",
            "does-not-exist.hosts: cannot read",
        ),
        ("no-address.toml", "no-address.toml:1:", "needs a cname"),
        ("not-toml.toml", "not-toml.toml:1:", ""),
        (
            "unknown-key.toml",
            "unknown-key.toml:3:1:",
            "unknown field `max_entrys`",
        ),
        (
            "upstream-is-self.toml",
            "upstream-is-self.toml:5:",
            "listens on",
        ),
    ];
    assert_eq!(
        fixtures_in("invalid").len(),
        expected.len(),
        "every invalid fixture has an expectation"
    );
    for (file, location, problem) in expected {
        let out = run(command(dir.path())
            .args(["check", "--config"])
            .arg(fixture(&format!("invalid/{file}"))));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.contains(location), "{file}: {stderr}");
        assert!(stderr.contains(problem), "{file}: {stderr}");
        assert!(out.stdout.is_empty(), "{file}: nothing on stdout");
    }
    // A file that does not exist is an error too.
    let out = run(command(dir.path()).args(["check", "--config", "/nonexistent/accel-dns.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/accel-dns.toml"));
}

#[test]
fn check_binds_nothing() {
    let dir = workdir();
    // The fixture's listen and admin addresses are taken: check still passes.
    let _dns = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = std::fs::read_to_string(fixture("valid/full.toml"))
        .expect("fixture")
        .replace("127.0.0.1:5353", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9553", &format!("127.0.0.1:{port}"));
    std::fs::copy(fixture("valid/hosts"), dir.path().join("hosts")).expect("copy");
    let path = dir.path().join("taken.toml");
    std::fs::write(&path, config).expect("write");
    let out = run(command(dir.path()).arg("check").arg("--config").arg(&path));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn without_a_config_the_built_in_defaults_are_used_and_accel_dns_config_is_read() {
    let dir = workdir();
    let out = run(command(dir.path()).arg("check"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("0 records"), "{stdout}");
    assert!(
        stdout.contains("(192.0.2.1:53)"),
        "system upstreams: {stdout}"
    );
    assert!(
        stdout.contains("(127.0.0.1:5353)"),
        "default listener: {stdout}"
    );

    let out = run(command(dir.path())
        .arg("check")
        .env("ACCEL_DNS_CONFIG", fixture("valid/full.toml")));
    assert!(
        text(&out.stdout).contains("3 records"),
        "{}",
        text(&out.stdout)
    );
    let out = run(command(dir.path())
        .arg("check")
        .env("ACCEL_DNS_CONFIG", fixture("invalid/unknown-key.toml")));
    assert_eq!(out.status.code(), Some(1));
    // --config wins over the environment.
    let out = run(command(dir.path())
        .args(["check", "--config"])
        .arg(fixture("valid/system.toml"))
        .env("ACCEL_DNS_CONFIG", fixture("invalid/unknown-key.toml")));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn version_and_help() {
    let dir = workdir();
    let out = run(command(dir.path()).arg("--version"));
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("accel-dns {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(command(dir.path()).arg("--help"));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["serve", "check", "--config", "--version"] {
        assert!(help.contains(word), "{help}");
    }
    let out = run(command(dir.path()).arg("--no-such-flag"));
    assert!(!out.status.success());
}

/// Serves the full fixture started in each of the three ways, answers from
/// records, hosts file, upstream and a CNAME chase, and stops on `signal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_from_flag_or_environment_and_exits_0_on_sigterm_or_sigint() {
    let upstream = FakeUpstream::start().await;
    let ways: [(&[&str], bool, libc::c_int); 3] = [
        (&["serve", "--config", "@"], false, libc::SIGTERM),
        (&["--config", "@"], false, libc::SIGINT),
        (&["serve"], true, libc::SIGTERM),
    ];
    for (args, via_env, signal) in ways {
        let dir = workdir();
        let dns = local_dns();
        let config_path = dir.path().join("accel-dns.toml");
        let path_text = config_path.display().to_string();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "@" { path_text.as_str() } else { a })
            .collect();
        let envs: Vec<(&str, &str)> = if via_env {
            vec![("ACCEL_DNS_CONFIG", path_text.as_str())]
        } else {
            Vec::new()
        };
        let config = served_config(dir.path(), dns, upstream.addr);
        let mut running = Running::start(dir.path(), &config, dns, &args, &envs);
        running.wait_ready().await;

        let record = query_udp(running.dns, "docker.io.", RecordType::A).await;
        assert_eq!(
            a_records(&record),
            vec![Ipv4Addr::new(203, 0, 113, 10)],
            "{args:?}"
        );
        let hosts = query_tcp(running.dns, "mirror.internal.test.", RecordType::A).await;
        assert_eq!(a_records(&hosts), vec![Ipv4Addr::new(198, 18, 0, 1)]);
        let forwarded = query_udp(running.dns, "example.test.", RecordType::A).await;
        assert_eq!(a_records(&forwarded), vec![Ipv4Addr::new(198, 51, 100, 7)]);
        let chased = query_udp(
            running.dns,
            "production.cloudflare.docker.com.",
            RecordType::A,
        )
        .await;
        assert_eq!(chased.answers.len(), 2);
        assert_eq!(a_records(&chased), vec![Ipv4Addr::new(198, 51, 100, 7)]);

        running.signal(signal);
        let status = running.wait_exit().await;
        assert_eq!(
            status.code(),
            Some(0),
            "{args:?}: {status}\n{}",
            running.log()
        );
        let log = running.log();
        // [log] queries = true: one line per query.
        assert!(
            log.lines()
                .any(|l| l.contains("docker.io") && l.contains("record")),
            "query log line missing:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_queries_in_flight_before_exiting() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, tcp| {
        Reply::Delay(
            Duration::from_millis(700),
            Box::new(default_reply(query, tcp)),
        )
    });
    let dir = workdir();
    let dns = local_dns();
    let config = served_config(dir.path(), dns, upstream.addr);
    let path = dir.path().join("accel-dns.toml").display().to_string();
    let mut running = Running::start(dir.path(), &config, dns, &["serve", "--config", &path], &[]);
    running.wait_ready().await;
    let in_flight =
        tokio::spawn(async move { query_udp(dns, "slow.example.test.", RecordType::A).await });
    wait_until("the query is upstream", || async { upstream.count() >= 1 }).await;
    running.signal(libc::SIGTERM);
    let answer = in_flight.await.expect("client");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&answer), vec![Ipv4Addr::new(198, 51, 100, 7)]);
    let status = running.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", running.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_wins_over_the_configured_level() {
    let upstream = FakeUpstream::start().await;
    for (level, rust_log, shown) in [
        ("error", None, false),
        ("info", None, true),
        ("error", Some("info"), true),
        ("info", Some("error"), false),
    ] {
        let dir = workdir();
        let dns = local_dns();
        let config = served_config(dir.path(), dns, upstream.addr)
            .replace("level = \"info\"", &format!("level = \"{level}\""));
        let path = dir.path().join("accel-dns.toml").display().to_string();
        let envs: Vec<(&str, &str)> = rust_log.iter().map(|v| ("RUST_LOG", *v)).collect();
        let mut running = Running::start(
            dir.path(),
            &config,
            dns,
            &["serve", "--config", &path],
            &envs,
        );
        running.wait_ready().await;
        running.signal(libc::SIGTERM);
        assert_eq!(running.wait_exit().await.code(), Some(0));
        let log = running.log();
        assert_eq!(
            log.contains("accel-dns serving"),
            shown,
            "level {level}, RUST_LOG {rust_log:?}:\n{log}"
        );
    }
}

/// Runs a blocking client program off the runtime threads.
async fn client(program: &str, args: Vec<String>) -> Output {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run client")
    })
    .await
    .expect("client task")
}

fn have(program: &str) -> bool {
    Path::new(program).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_answers_over_udp_and_tcp() {
    if !have("/usr/bin/dig") {
        eprintln!("SKIPPED dig_gets_answers_over_udp_and_tcp: /usr/bin/dig is not installed");
        return;
    }
    let upstream = FakeUpstream::start().await;
    let dir = workdir();
    let dns = local_dns();
    let config = served_config(dir.path(), dns, upstream.addr);
    let path = dir.path().join("accel-dns.toml").display().to_string();
    let mut running = Running::start(dir.path(), &config, dns, &["serve", "--config", &path], &[]);
    running.wait_ready().await;
    let dig = |name: &str, rtype: &str, tcp: bool| {
        let mut args = vec![
            "@127.0.0.1".to_string(),
            "-p".into(),
            dns.port().to_string(),
            name.into(),
            rtype.into(),
            "+time=3".into(),
            "+tries=1".into(),
        ];
        if tcp {
            args.push("+tcp".into());
        }
        client("/usr/bin/dig", args)
    };
    for tcp in [false, true] {
        let out = dig("docker.io", "A", tcp).await;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("status: NOERROR"), "{stdout}");
        assert!(stdout.contains("flags: qr rd ra"), "{stdout}");
        assert!(stdout.contains("203.0.113.10"), "{stdout}");
        assert!(
            stdout.contains(if tcp { "(TCP)" } else { "(UDP)" }),
            "{stdout}"
        );

        let out = dig("production.cloudflare.docker.com", "A", tcp).await;
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("CNAME\tga-bp1test.aliyunga0019.com."),
            "{stdout}"
        );
        assert!(stdout.contains("198.51.100.7"), "{stdout}");

        let out = dig("nothing.nx.test", "A", tcp).await;
        assert!(
            text(&out.stdout).contains("status: NXDOMAIN"),
            "{}",
            text(&out.stdout)
        );

        let out = dig("registry-1.docker.io", "HTTPS", tcp).await;
        let stdout = text(&out.stdout);
        assert!(stdout.contains("status: NOERROR"), "{stdout}");
        assert!(stdout.contains("ANSWER: 0"), "{stdout}");
    }
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait_exit().await.code(), Some(0));
}

/// glibc's resolver (`getent ahosts`) asks A and AAAA and takes the
/// addresses that follow the CNAME in the same answer: it never asks for the
/// target itself. Runs in a private mount namespace where `/etc/resolv.conf`
/// points at accel-dns on 127.0.0.77:53.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glibc_resolves_a_cname_record_to_the_targets_addresses() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED glibc test: needs root for unshare -m and port 53");
        return;
    }
    let unshare_works = Command::new("unshare")
        .args(["-m", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !unshare_works || !have("/usr/bin/getent") {
        eprintln!("SKIPPED glibc test: `unshare -m` or getent is not available here");
        return;
    }
    let address = Ipv4Addr::new(127, 0, 0, 77);
    if UdpSocket::bind((address, 53)).is_err() || TcpListener::bind((address, 53)).is_err() {
        eprintln!("SKIPPED glibc test: 127.0.0.77:53 is taken");
        return;
    }
    let upstream = FakeUpstream::start().await;
    let dir = workdir();
    let dns = SocketAddr::from((address, 53));
    let config = served_config(dir.path(), dns, upstream.addr);
    let path = dir.path().join("accel-dns.toml").display().to_string();
    let mut running = Running::start(dir.path(), &config, dns, &["serve", "--config", &path], &[]);
    running.wait_ready().await;

    let resolv = dir.path().join("glibc-resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.77\noptions timeout:2 attempts:2\n",
    )
    .expect("write");
    let nsswitch = dir.path().join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: dns\n").expect("write");
    let getent = |name: &str| {
        let script = format!(
            "mount --bind {} /etc/resolv.conf && mount --bind {} /etc/nsswitch.conf && getent ahosts {name}",
            resolv.display(),
            nsswitch.display()
        );
        client(
            "unshare",
            vec!["-m".into(), "sh".into(), "-c".into(), script],
        )
    };
    let out = getent("production.cloudflare.docker.com").await;
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "getent failed: {stdout}{}\n{}",
        text(&out.stderr),
        running.log()
    );
    assert!(stdout.contains("198.51.100.7"), "{stdout}");
    assert!(stdout.contains("2001:db8::7"), "{stdout}");
    assert!(
        !stdout.contains("203.0.113."),
        "only the target's addresses: {stdout}"
    );
    let names: Vec<String> = upstream
        .seen()
        .iter()
        .map(|q| q.queries[0].name().to_lowercase().to_ascii())
        .collect();
    assert!(
        names.iter().all(|n| n == "ga-bp1test.aliyunga0019.com."),
        "only the target went upstream: {names:?}"
    );

    let out = getent("registry-1.docker.io").await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("203.0.113.11"), "{stdout}");
    assert!(stdout.contains("2001:db8::11"), "{stdout}");

    running.signal(libc::SIGTERM);
    assert_eq!(running.wait_exit().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    let upstream = FakeUpstream::start().await;
    let dir = workdir();
    let dns = local_dns();
    let config = served_config(dir.path(), dns, upstream.addr)
        .replace("format = \"text\"", "format = \"json\"");
    let path = dir.path().join("accel-dns.toml").display().to_string();
    let mut running = Running::start(dir.path(), &config, dns, &["serve", "--config", &path], &[]);
    running.wait_ready().await;
    query_udp(running.dns, "docker.io.", RecordType::A).await;
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait_exit().await.code(), Some(0));
    let log = running.log();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\""),
            "not a JSON log line: {line}"
        );
    }
    assert!(log.contains("docker.io"), "the query line: {log}");
}

/// README "Command line": with neither `--config` nor `ACCEL_DNS_CONFIG`, the binary alone
/// is a working forwarder on the built-in defaults (127.0.0.1:5353, admin on
/// 127.0.0.1:9553, `system` upstreams). Those ports are fixed, so this runs
/// in a private network namespace, with a second accel-dns as the upstream
/// that resolv.conf names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_alone_on_built_in_defaults_is_a_working_forwarder() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !have("/usr/bin/dig") {
        eprintln!("SKIPPED built-in defaults test: needs root (unshare -n) and dig");
        return;
    }
    let netns_works = Command::new("unshare")
        .args(["-n", "ip", "link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !netns_works {
        eprintln!("SKIPPED built-in defaults test: `unshare -n` or `ip` is not available here");
        return;
    }
    let dir = workdir();
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 127.0.0.2\n").expect("write");
    std::fs::write(
        dir.path().join("upstream.toml"),
        "[server]\nlisten = [\"127.0.0.2:53\"]\n[upstream]\nservers = [\"192.0.2.1\"]\n\
         [admin]\nlisten = \"\"\n[[record]]\nname = \"example.test\"\na = [\"203.0.113.5\"]\n",
    )
    .expect("write");
    // Everything below runs inside the namespace; each wait is bounded.
    let script = format!(
        r#"set -u
cd {dir}
ip link set lo up
env -u ACCEL_DNS_CONFIG {bin} --config upstream.toml 2>upstream.log &
UP=$!
env -u ACCEL_DNS_CONFIG ACCEL_DNS_RESOLV_CONF={dir}/resolv.conf {bin} 2>defaults.log &
SERVER=$!
answer=""
# Until it answers, for at most 20 s: a refused query returns at once, so a
# count of attempts alone ran out before a slow (loaded) machine had bound.
deadline=$((SECONDS + 20))
for attempt in $(seq 1 400); do
  answer=$(dig +short +time=1 +tries=1 @127.0.0.1 -p 5353 example.test A 2>/dev/null)
  [ -n "$answer" ] && break
  [ $SECONDS -lt $deadline ] || break
  sleep 0.05
done
tcp=$(dig +short +tcp +time=2 +tries=1 @127.0.0.1 -p 5353 example.test A 2>/dev/null)
ready=$(exec 3<>/dev/tcp/127.0.0.1/9553 && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -n1 <&3)
kill -TERM $SERVER $UP
wait $SERVER; server_rc=$?
wait $UP; up_rc=$?
echo "udp=$answer"
echo "tcp=$tcp"
echo "ready=$ready"
echo "rc=$server_rc/$up_rc"
"#,
        dir = dir.path().display(),
        bin = BIN,
    );
    let out = client(
        "unshare",
        vec!["-n".into(), "bash".into(), "-c".into(), script],
    )
    .await;
    let stdout = text(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("defaults.log")).unwrap_or_default();
    assert!(stdout.contains("udp=203.0.113.5"), "{stdout}\n{log}");
    assert!(stdout.contains("tcp=203.0.113.5"), "{stdout}\n{log}");
    assert!(
        stdout.contains("ready=HTTP/1.0 200") || stdout.contains("ready=HTTP/1.1 200"),
        "{stdout}\n{log}"
    );
    assert!(stdout.contains("rc=0/0"), "{stdout}\n{log}");
}

/// A node resolver may start before the node's network is up. An upstream
/// that cannot be reached at start (no route yet) must be used once it can:
/// an early failure must not stick until a reload. Runs in a private
/// network namespace where the upstream's address is added after start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_unreachable_at_start_is_used_once_the_network_is_up() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !have("/usr/bin/dig") {
        eprintln!("SKIPPED late-network test: needs root (unshare -n) and dig");
        return;
    }
    let netns_works = Command::new("unshare")
        .args(["-n", "ip", "link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !netns_works {
        eprintln!("SKIPPED late-network test: `unshare -n` or `ip` is not available here");
        return;
    }
    let dir = workdir();
    // The upstream: another accel-dns on every address, port 53.
    std::fs::write(
        dir.path().join("upstream.toml"),
        "[server]\nlisten = [\"0.0.0.0:53\"]\nallow = [\"0.0.0.0/0\"]\n\
         [upstream]\nservers = [\"198.51.100.99\"]\n[admin]\nlisten = \"\"\n\
         [[record]]\nname = \"example.test\"\na = [\"203.0.113.5\"]\n",
    )
    .expect("write");
    // The server under test forwards to 192.0.2.1, which has no route yet.
    std::fs::write(
        dir.path().join("server.toml"),
        "[server]\nlisten = [\"127.0.0.1:5353\"]\n[upstream]\nservers = [\"192.0.2.1\"]\n\
         timeout = \"1s\"\n[admin]\nlisten = \"127.0.0.1:9553\"\n",
    )
    .expect("write");
    let script = format!(
        r#"set -u
cd {dir}
ip link set lo up
{bin} --config upstream.toml 2>upstream.log &
UP=$!
{bin} --config server.toml 2>server.log &
SERVER=$!
ask() {{ dig +short +time=2 +tries=1 @127.0.0.1 -p 5353 example.test A 2>/dev/null; }}
# Up and answering (SERVFAIL, which +short prints as nothing) while the route is missing.
# (At most 20 s: a refused query returns at once, see the test above.)
deadline=$((SECONDS + 20))
for attempt in $(seq 1 400); do
  status=$(dig +time=1 +tries=1 @127.0.0.1 -p 5353 example.test A 2>/dev/null | grep -o 'status: [A-Z]*')
  [ -n "$status" ] && break
  [ $SECONDS -lt $deadline ] || break
  sleep 0.05
done
echo "before=$status"
# The network comes up.
ip addr add 192.0.2.1/32 dev lo
answer=""
for attempt in $(seq 1 5); do
  answer=$(ask)
  [ -n "$answer" ] && break
done
echo "after=$answer"
kill -TERM $SERVER $UP
wait $SERVER
wait $UP
"#,
        dir = dir.path().display(),
        bin = BIN,
    );
    let out = client(
        "unshare",
        vec!["-n".into(), "bash".into(), "-c".into(), script],
    )
    .await;
    let stdout = text(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        stdout.contains("before=status: SERVFAIL"),
        "{stdout}\n{log}"
    );
    assert!(stdout.contains("after=203.0.113.5"), "{stdout}\n{log}");
}

/// Issue 11, item 1: a TCP client that asked once and then stays connected
/// and quiet used to hold the exit for the whole drain (6 s in all, and
/// "drain timed out" in the log). README "Command line": such a connection is closed and
/// the process exits within the lame duck (1 s) and a short grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_idle_tcp_client_exits_within_the_lame_duck_and_a_grace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = FakeUpstream::start().await;
    let dir = workdir();
    let dns = local_dns();
    let config = served_config(dir.path(), dns, upstream.addr);
    let path = dir.path().join("accel-dns.toml").display().to_string();
    let mut running = Running::start(dir.path(), &config, dns, &["serve", "--config", &path], &[]);
    running.wait_ready().await;
    let mut idle = tokio::net::TcpStream::connect(dns).await.expect("connect");
    let query = query_message("docker.io.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    idle.write_all(&framed).await.expect("write");
    let len = tokio::time::timeout(DEADLINE, idle.read_u16())
        .await
        .expect("answer in time")
        .expect("answer length");
    let mut answer = vec![0u8; usize::from(len)];
    idle.read_exact(&mut answer).await.expect("answer");
    let signalled = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait_exit().await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", running.log());
    assert!(
        took < Duration::from_millis(2500),
        "exit took {took:?} with an idle TCP client\n{}",
        running.log()
    );
    assert!(
        !running.log().contains("drain timed out"),
        "{}",
        running.log()
    );
    drop(idle);
}
