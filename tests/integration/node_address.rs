//! `accel-dns node-address` in a network namespace of its own (`unshare
//! --net`, as root or with user namespaces), so the machine's interfaces
//! are never touched: add, add again (idempotent), show, del, show. Skipped
//! with a printed reason where `unshare` is not permitted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_accel-dns");

/// Whether `unshare --net` works here (as root, or mapping the user to root).
fn unshare_args() -> Option<Vec<&'static str>> {
    for args in [vec!["--net"], vec!["--net", "--map-root-user"]] {
        let ok = Command::new("unshare")
            .args(&args)
            .arg("true")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(args);
        }
    }
    None
}

#[test]
fn add_is_idempotent_show_sees_it_and_del_removes_it() {
    let Some(args) = unshare_args() else {
        eprintln!("skipped: `unshare --net` is not permitted here");
        return;
    };
    let script = r#"
        set -e
        b="$1"
        "$b" node-address add 169.254.20.53
        "$b" node-address add 169.254.20.53
        echo "== show"
        "$b" node-address show 169.254.20.53
        "$b" node-address del 169.254.20.53
        echo "== after del"
        if "$b" node-address show 169.254.20.53; then echo "still there"; exit 1; fi
        "$b" node-address add 2001:db8::53
        "$b" node-address show 2001:db8::53
        "$b" node-address del 2001:db8::53
    "#;
    let output = Command::new("unshare")
        .args(&args)
        .args(["sh", "-c", script, "sh", BIN])
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("added 169.254.20.53/32"), "{stdout}");
    assert!(stdout.contains("169.254.20.53 is already on"), "{stdout}");
    let (_, shown) = stdout.split_once("== show").expect("show");
    assert!(shown.contains("up 169.254.20.53"), "{stdout}");
    assert!(stdout.contains("removed 169.254.20.53"), "{stdout}");
    assert!(
        stdout.contains("added 2001:db8::53/128"),
        "{stdout}\n{stderr}"
    );
}
