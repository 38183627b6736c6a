//! Registry bundles (README "Unmapped names" first half, README "Command line" `accel-dns registries`): the
//! subcommand lists every built-in bundle with its sources and dates, a
//! `registry = "ID"` record answers every name of its bundle over real UDP,
//! `exclude` and an explicit `name` take names out of it, and each mistake
//! is reported by `check` with its line.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use accel_dns::internals::registries;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_accel-dns");

/// The binary with a clean environment and a `resolv.conf` from `dir`.
fn run(dir: &Path, args: &[&str]) -> Output {
    std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.1\n").expect("write");
    Command::new(BIN)
        .env_remove("RUST_LOG")
        .env("ACCEL_DNS_RESOLV_CONF", dir.join("resolv.conf"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run accel-dns")
}

/// The name to ask for a bundle name: itself, or a wildcard's SNI name.
fn asked(name: &registries::BundleName) -> String {
    name.server_name().to_ascii()
}

#[test]
fn registries_lists_every_bundle_with_sources_and_dates_without_a_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A configuration that does not exist does not matter: nothing is loaded.
    let missing = dir.path().join("missing.toml");
    let output = Command::new(BIN)
        .env("ACCEL_DNS_CONFIG", &missing)
        .arg("registries")
        .stdin(Stdio::null())
        .output()
        .expect("run accel-dns");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for id in [
        "docker-hub",
        "ghcr",
        "quay",
        "registry-k8s",
        "gcr",
        "mcr",
        "ecr-public",
    ] {
        assert!(text.contains(&format!("{id}: ")), "{id} missing:\n{text}");
    }
    for bundle in registries::bundles() {
        for name in &bundle.names {
            let label = name.name.label();
            let at = text
                .find(&format!("    {label}\n"))
                .unwrap_or_else(|| panic!("{label} not listed:\n{text}"));
            let entry = &text[at..];
            assert!(
                entry.contains(&format!("source:  {}", name.source))
                    && entry.contains(&format!("checked: {}", name.checked)),
                "{label}: no source or date"
            );
        }
    }
    assert!(text.contains("production.cloudfront.docker.com"));
    assert!(text.contains("zones: docker.io, docker.com"));
}

#[tokio::test]
async fn a_registry_record_answers_every_name_of_its_bundle() {
    let mut body = String::new();
    for (i, bundle) in registries::bundles().iter().enumerate() {
        body.push_str(&format!(
            "[[record]]\nregistry = \"{}\"\na = [\"192.0.2.{}\"]\n",
            bundle.id,
            i + 1
        ));
    }
    let mut server = TestServer::start(&body, None).await;
    let mut asked_names = 0;
    for (i, bundle) in registries::bundles().iter().enumerate() {
        let octet = u8::try_from(i + 1).expect("few bundles");
        for name in &bundle.names {
            let qname = asked(name);
            let answer = query_udp(server.dns, &qname, RecordType::A).await;
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "{qname}"
            );
            assert_eq!(
                a_records(&answer),
                vec![Ipv4Addr::new(192, 0, 2, octet)],
                "{qname} of {}",
                bundle.id
            );
            asked_names += 1;
        }
    }
    assert!(asked_names >= 20, "only {asked_names} names");
    server.stop().await;
}

#[tokio::test]
async fn exclude_leaves_a_name_to_upstream_and_an_explicit_name_wins() {
    let upstream = FakeUpstream::start().await;
    let body = "[[record]]\nregistry = \"docker-hub\"\na = [\"192.0.2.10\"]\n\
                exclude = [\"production.cloudfront.docker.com\"]\n\
                [[record]]\nname = \"auth.docker.io\"\na = [\"192.0.2.99\"]\n";
    let mut server = TestServer::start(body, Some(upstream.addr)).await;
    let a = |answer: hickory_proto::op::Message| a_records(&answer);
    assert_eq!(
        a(query_udp(server.dns, "registry-1.docker.io.", RecordType::A).await),
        vec![Ipv4Addr::new(192, 0, 2, 10)]
    );
    // Excluded: forwarded, answered by the upstream's zone.
    assert_eq!(
        a(query_udp(
            server.dns,
            "production.cloudfront.docker.com.",
            RecordType::A
        )
        .await),
        vec![Ipv4Addr::new(198, 51, 100, 7)]
    );
    // The explicit record, written after the bundle, beats the bundle's.
    assert_eq!(
        a(query_udp(server.dns, "auth.docker.io.", RecordType::A).await),
        vec![Ipv4Addr::new(192, 0, 2, 99)]
    );
    server.stop().await;
}

#[test]
fn check_counts_the_records_of_bundles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("accel-dns.toml");
    std::fs::write(
        &config,
        "[[record]]\nregistry = \"quay\"\na = [\"192.0.2.1\"]\nexclude = [\"cdn.quay.io\"]\n\
         [[record]]\nname = \"quay.io\"\na = [\"192.0.2.2\"]\n",
    )
    .expect("write");
    let output = run(
        dir.path(),
        &["check", "--config", &config.display().to_string()],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.starts_with("ok: 4 records (3 from bundles), "),
        "{text}"
    );
}

#[test]
fn check_reports_each_bundle_mistake_with_its_line() {
    let cases = [
        (
            "unknown bundle",
            "[upstream]\nservers = [\"192.0.2.1\"]\n[[record]]\nregistry = \"dockerhub\"\na = [\"192.0.2.1\"]\n",
            ":4:12: unknown registry \"dockerhub\": the built-in bundles are docker-hub, ghcr, quay, registry-k8s, gcr, mcr, ecr-public",
        ),
        (
            "bad exclude",
            "[[record]]\nregistry = \"ghcr\"\na = [\"192.0.2.1\"]\nexclude = [\"ghcr.io\", \"quay.io\"]\n",
            ":4:23: registry \"ghcr\": exclude \"quay.io\" is not a name of the bundle",
        ),
        (
            "bundle clash",
            "[[record]]\nregistry = \"mcr\"\na = [\"192.0.2.1\"]\n\n[[record]]\nregistry = \"mcr\"\ncname = \"ga.accel.test\"\n",
            ":5:1: record mcr.microsoft.com: given by registry \"mcr\" here and by registry \"mcr\" on line 1",
        ),
        (
            "name and registry",
            "[[record]]\na = [\"192.0.2.1\"]\nname = \"ghcr.io\"\nregistry = \"ghcr\"\n",
            ":4:12: record has both name and registry",
        ),
    ];
    for (what, text, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("accel-dns.toml");
        std::fs::write(&config, text).expect("write");
        let output = run(
            dir.path(),
            &["check", "--config", &config.display().to_string()],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {output:?}");
        let want = format!("error: {}{expected}", config.display());
        assert!(
            stderr.starts_with(&want),
            "{what}:\n got: {stderr}\nwant: {want}"
        );
    }
}
