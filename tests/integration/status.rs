//! `GET /status` and `accel-dns status` against a running server: a
//! health-checked record (fall = 1, interval 200 ms) whose endpoint is a
//! listener the test opens, closes and opens again; the JSON and the CLI
//! table follow it up, down and up.

use std::net::SocketAddr;
use std::process::Command;

use accel_dns::internals::status::Status;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_accel-dns");

async fn status(server: &TestServer) -> Status {
    let (code, body) = server.admin_get("/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn health_of(status: &Status) -> String {
    status.records[0].addresses[0].health.clone()
}

/// Runs `accel-dns status` (on the blocking pool: the server answers from
/// this test's runtime).
async fn cli(admin: SocketAddr, json: bool) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(BIN);
        command.args(["status", "--admin", &admin.to_string()]);
        if json {
            command.arg("--json");
        }
        let output = command.output().expect("run accel-dns status");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// The table's line of the record's address.
fn address_line(table: &str) -> String {
    table
        .lines()
        .find(|l| l.contains("127.0.0.1") && l.starts_with("docker.io"))
        .unwrap_or_else(|| panic!("no record line in\n{table}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_health_checked_address_up_down_and_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = listener.local_addr().expect("addr");
    let upstream = FakeUpstream::start().await;
    let config = format!(
        "[records]\nwatch = [\"quay.io\"]\n\
         [[record]]\nname = \"docker.io\"\na = [\"127.0.0.1\"]\n\
         health_check = {{ port = {}, interval = \"200ms\", timeout = \"150ms\", fall = 1, rise = 1 }}\n\
         [[record]]\nname = \"ghcr.io\"\ncname = \"ga.example.test\"\n",
        endpoint.port()
    );
    let mut server = TestServer::start(&config, Some(upstream.addr)).await;
    let admin = server.admin.expect("admin");

    let first = status(&server).await;
    assert_eq!(first.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        first.config_file.as_deref(),
        Some(server.config_path.to_str().expect("utf-8"))
    );
    assert_eq!(first.last_reload.result, "ok");
    assert!(first.last_reload.at_start);
    assert_eq!(first.unmapped_names, 0);
    // A name of a watched zone that no record maps: forwarded, and counted.
    crate::admin::answer_a(server.dns, "cdn.quay.io.").await;
    wait_until("/status counts the unmapped name", || async {
        status(&server).await.unmapped_names == 1
    })
    .await;
    assert_eq!(first.upstreams[0].address, upstream.addr);
    assert_eq!(first.upstreams[0].state, "ok");
    assert_eq!(first.records.len(), 2);
    assert_eq!(first.records[0].kind, "a");
    assert_eq!(first.records[1].kind, "cname");
    assert_eq!(first.records[1].target.as_deref(), Some("ga.example.test"));
    assert_eq!(first.records[1].state, "up");

    wait_until("the address is up", || async {
        health_of(&status(&server).await) == "up"
    })
    .await;
    let (ok, table, stderr) = cli(admin, false).await;
    assert!(ok, "{stderr}");
    let line = address_line(&table);
    assert!(line.contains(" up ") && !line.contains("down"), "{table}");

    drop(listener);
    wait_until("the address is down", || async {
        health_of(&status(&server).await) == "down"
    })
    .await;
    let down = status(&server).await;
    assert_eq!(down.records[0].state, "stepped-aside");
    assert!(down.records[0].addresses[0].changed_unix_time.is_some());
    let (ok, table, stderr) = cli(admin, false).await;
    assert!(ok, "{stderr}");
    let line = address_line(&table);
    assert!(
        line.contains("stepped-aside") && line.contains("down"),
        "{table}"
    );

    let listener = std::net::TcpListener::bind(endpoint).expect("bind again");
    wait_until("the address is up again", || async {
        health_of(&status(&server).await) == "up"
    })
    .await;
    let (ok, json, stderr) = cli(admin, true).await;
    assert!(ok, "{stderr}");
    let parsed: Status = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(parsed.records[0].state, "up");
    assert_eq!(parsed.records[0].addresses[0].health, "up");

    // A bad file: the status says so, with the location.
    std::fs::write(&server.config_path, "[server]\nlisen = 1\n").expect("write");
    wait_until("the failed reload shows", || async {
        status(&server).await.last_reload.result == "error"
    })
    .await;
    let failed = status(&server).await;
    assert!(!failed.last_reload.at_start);
    let error = failed.last_reload.error.unwrap_or_default();
    assert!(error.contains("lisen"), "{error}");
    drop(listener);
    server.stop().await;
}

#[test]
fn status_without_a_server_exits_1_and_says_why() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let output = Command::new(BIN)
        .args(["status", "--admin", &addr.to_string()])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
