//! `accel-dns node-resolv` (README "Command line"): keeps a node's
//! resolv.conf pointed at accel-dns while, and only while, accel-dns is
//! ready — the job of `deploy/node/accel-dns-node-resolv.sh` with its
//! `accel-dns-node-setup.sh install|uninstall`, done by this binary so that
//! the node-resolv DaemonSet runs the accel-dns image and nothing else.
//!
//! Every `interval`: when `GET /readyz` answers 200, install (a no-op when
//! the file is already right, a repair when DHCP rewrote it); otherwise
//! uninstall, so a node never waits on a proxy that is gone. On SIGTERM or
//! SIGINT: uninstall, then exit 0.
//!
//! The file it writes is the one the script writes, byte for byte (same
//! marker line, same `options timeout:1 attempts:2`, same backup path), so
//! either can undo what the other did. [`rewrite`] is a pure function and
//! applying it to its own output changes nothing. The file is rewritten in
//! place (same inode): a hostPath or bind mount of resolv.conf keeps working.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::admin_client;
use crate::cli::NodeResolvArgs;

/// The first characters of the line that marks a rewritten file.
pub(crate) const MARKER_PREFIX: &str = "# accel-dns-node-setup:";
/// The options line of a rewritten file: a dead proxy costs one second.
pub(crate) const PROXY_OPTIONS: &str = "options timeout:1 attempts:2";
/// How long one `/readyz` may take.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// What a rewrite found besides the new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// The new contents.
    pub text: String,
    /// `options rotate` was dropped (it would send every other query past the proxy).
    pub dropped_rotate: bool,
    /// More than 3 nameservers now: glibc uses only the first 3.
    pub too_many: bool,
}

/// Why a rewrite is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RewriteError {
    /// Without a nameserver there is no fallback to keep.
    #[error(
        "no nameserver line: refusing, the VPC resolver must stay in it as the fallback (and accel-dns's \"system\" upstream reads it)"
    )]
    NoNameserver,
}

/// The address a marker line names, if `line` is one.
fn marked_address(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(MARKER_PREFIX)?;
    let mut words = rest.split_whitespace();
    while let Some(word) = words.next() {
        if word == "nameserver" {
            return words.next();
        }
    }
    None
}

fn join(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The accel-dns version of resolv.conf `original`: `nameserver address`
/// first, every other nameserver after it, `options timeout:1 attempts:2`
/// (other options kept, `rotate` dropped).
pub(crate) fn rewrite(original: &str, address: IpAddr) -> Result<Rewritten, RewriteError> {
    let addr = address.to_string();
    let mut out = vec![format!(
        "{MARKER_PREFIX} nameserver {addr} added first; undo: accel-dns-node-setup.sh uninstall"
    )];
    let mut previous: Option<String> = None;
    let (mut inserted, mut others, mut dropped_rotate) = (false, 0, false);
    for line in original.lines() {
        if let Some(marked) = marked_address(line) {
            previous = Some(marked.to_string());
            continue;
        }
        if line.starts_with(MARKER_PREFIX) {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["nameserver", server, ..]
                if *server == addr || previous.as_deref() == Some(*server) =>
            {
                continue;
            }
            ["options", rest @ ..] => {
                let kept: Vec<&str> = rest
                    .iter()
                    .copied()
                    .filter(|o| {
                        let ours = o.starts_with("timeout:") || o.starts_with("attempts:");
                        dropped_rotate |= *o == "rotate";
                        !ours && *o != "rotate"
                    })
                    .collect();
                if kept.len() == rest.len() {
                    out.push(line.to_string());
                } else if !kept.is_empty() {
                    out.push(format!("options {}", kept.join(" ")));
                }
                continue;
            }
            ["nameserver", ..] => {
                if !inserted {
                    out.push(format!("nameserver {addr}"));
                    inserted = true;
                }
                others += 1;
            }
            _ => {}
        }
        out.push(line.to_string());
    }
    out.push(PROXY_OPTIONS.to_string());
    if !inserted {
        return Err(RewriteError::NoNameserver);
    }
    Ok(Rewritten {
        text: join(&out),
        dropped_rotate,
        too_many: others >= 3,
    })
}

/// `text` without the lines an install added: the fallback original when
/// the backup was lost.
pub(crate) fn strip_ours(text: &str) -> String {
    let previous = text.lines().find_map(marked_address).map(str::to_string);
    let kept: Vec<String> = text
        .lines()
        .filter(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            !(line.starts_with(MARKER_PREFIX)
                || *line == PROXY_OPTIONS
                || matches!(words.as_slice(), ["nameserver", s, ..] if previous.as_deref() == Some(*s)))
        })
        .map(str::to_string)
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        join(&kept)
    }
}

fn has_marker(text: &str) -> bool {
    text.lines().any(|l| l.starts_with(MARKER_PREFIX))
}

/// Replaces the contents of `path` without replacing the file (same inode,
/// mode and owner; a bind mount keeps seeing it).
fn write_in_place(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn refuse_symlink(path: &Path) -> anyhow::Result<()> {
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        bail!(
            "{} is a symlink (managed by systemd-resolved or resolvconf): configure that manager instead, see deploy/README.md",
            path.display()
        );
    }
    Ok(())
}

/// The resolv.conf this process manages and its backup.
#[derive(Debug, Clone)]
pub(crate) struct ResolvConf {
    /// The file.
    pub path: PathBuf,
    /// Where its original is kept.
    pub backup: PathBuf,
}

impl ResolvConf {
    /// `path`, with its backup at `backup` or `PATH.accel-dns-orig`.
    pub(crate) fn new(path: PathBuf, backup: Option<PathBuf>) -> Self {
        let backup = backup.unwrap_or_else(|| {
            let mut name = path.clone().into_os_string();
            name.push(".accel-dns-orig");
            PathBuf::from(name)
        });
        Self { path, backup }
    }

    /// Points the file at `address` first; returns whether it changed.
    pub(crate) fn install(&self, address: IpAddr) -> anyhow::Result<bool> {
        refuse_symlink(&self.path)?;
        let current = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let new = rewrite(&current, address).with_context(|| self.path.display().to_string())?;
        if new.dropped_rotate {
            eprintln!(
                "warning: dropped 'options rotate' from {}: it would send every other query past accel-dns",
                self.path.display()
            );
        }
        if new.too_many {
            eprintln!(
                "warning: {} now has more than 3 nameservers: glibc uses only the first 3",
                self.path.display()
            );
        }
        if new.text == current {
            return Ok(false);
        }
        if has_marker(&current) {
            if !self.backup.exists() {
                self.save_backup(&strip_ours(&current))?;
                eprintln!(
                    "warning: no backup at {}: saved {} without the accel-dns lines as the original",
                    self.backup.display(),
                    self.path.display()
                );
            }
        } else {
            self.save_backup(&current)?;
        }
        write_in_place(&self.path, &new.text)?;
        Ok(true)
    }

    fn save_backup(&self, text: &str) -> anyhow::Result<()> {
        if let Some(dir) = self.backup.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut temporary = self.backup.clone().into_os_string();
        temporary.push(".accel-dns.new");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &self.backup))
            .with_context(|| format!("cannot save the backup {}", self.backup.display()))
    }

    /// Restores the original; returns whether the file changed.
    pub(crate) fn uninstall(&self) -> anyhow::Result<bool> {
        refuse_symlink(&self.path)?;
        let current = std::fs::read_to_string(&self.path).ok();
        if let Ok(original) = std::fs::read_to_string(&self.backup) {
            let changed = match &current {
                Some(text) if !has_marker(text) => {
                    eprintln!(
                        "warning: {} was rewritten by something else since install: leaving it, removing the stale backup {}",
                        self.path.display(),
                        self.backup.display()
                    );
                    false
                }
                Some(text) if *text == original => false,
                _ => {
                    write_in_place(&self.path, &original)?;
                    true
                }
            };
            std::fs::remove_file(&self.backup)
                .with_context(|| format!("cannot remove {}", self.backup.display()))?;
            return Ok(changed);
        }
        match current {
            Some(text) if has_marker(&text) => {
                write_in_place(&self.path, &strip_ours(&text))?;
                eprintln!(
                    "warning: no backup at {}: removed the accel-dns lines from {} instead",
                    self.backup.display(),
                    self.path.display()
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

async fn ready(admin: SocketAddr) -> bool {
    matches!(
        admin_client::get(admin, "/readyz", READY_TIMEOUT).await,
        Ok((code, _)) if code.is_success()
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Up,
    Down,
}

/// One look: install while ready, uninstall otherwise.
async fn look(args: &NodeResolvArgs, file: &ResolvConf, state: State) -> State {
    let path = file.path.display();
    if ready(args.admin).await {
        match file.install(args.address) {
            Ok(_) => {
                if state != State::Up {
                    println!("accel-dns is ready: {path} asks {} first", args.address);
                }
                State::Up
            }
            Err(error) => {
                eprintln!("install failed; will retry: {error:#}");
                State::Unknown
            }
        }
    } else {
        match file.uninstall() {
            Ok(_) => {
                if state != State::Down {
                    println!(
                        "accel-dns is not ready at {}/readyz: {path} uses its own nameservers",
                        args.admin
                    );
                }
                State::Down
            }
            Err(error) => {
                eprintln!("uninstall failed; will retry: {error:#}");
                State::Unknown
            }
        }
    }
}

/// Runs until SIGTERM or SIGINT (or after one look with `--once`).
pub async fn run(args: NodeResolvArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let file = ResolvConf::new(args.resolv_conf.clone(), args.backup.clone());
    let mut state = State::Unknown;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = ticker.tick() => {
                state = look(&args, &file, state).await;
                if args.once {
                    return Ok(());
                }
            }
        }
    }
    file.uninstall()?;
    println!("stopping: {} restored", file.path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "169.254.20.53";

    fn addr() -> IpAddr {
        ADDR.parse().expect("ip")
    }

    #[test]
    fn install_puts_ours_first_and_keeps_the_rest() {
        let original = "search ns.svc.cluster.local\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:5 timeout:5 rotate\n";
        let new = rewrite(original, addr()).expect("rewrite");
        assert_eq!(
            new.text,
            format!(
                "{MARKER_PREFIX} nameserver {ADDR} added first; undo: accel-dns-node-setup.sh uninstall\n\
                 search ns.svc.cluster.local\nnameserver {ADDR}\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n\
                 options ndots:5\n{PROXY_OPTIONS}\n"
            )
        );
        assert!(new.dropped_rotate);
        assert!(!new.too_many);
        let again = rewrite(&new.text, addr()).expect("rewrite");
        assert_eq!(again.text, new.text, "idempotent");
        assert_eq!(
            strip_ours(&new.text),
            "search ns.svc.cluster.local\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:5\n"
        );
    }

    #[test]
    fn a_changed_address_replaces_the_old_one() {
        let first = rewrite("nameserver 10.0.0.2\n", addr()).expect("rewrite");
        let other: IpAddr = "127.0.0.1".parse().expect("ip");
        let second = rewrite(&first.text, other).expect("rewrite");
        assert!(!second.text.contains(ADDR), "{}", second.text);
        assert!(
            second
                .text
                .contains("nameserver 127.0.0.1\nnameserver 10.0.0.2\n")
        );
    }

    #[test]
    fn a_file_without_nameserver_is_refused() {
        assert_eq!(
            rewrite("search x\n", addr()),
            Err(RewriteError::NoNameserver)
        );
    }

    #[test]
    fn install_then_uninstall_restores_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        let original = "# from DHCP\nnameserver 10.0.0.2\noptions edns0\n";
        std::fs::write(&path, original).expect("write");
        let file = ResolvConf::new(path.clone(), None);
        assert!(file.install(addr()).expect("install"));
        assert!(!file.install(addr()).expect("install again"), "idempotent");
        assert!(file.backup.exists());
        assert!(file.uninstall().expect("uninstall"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), original);
        assert!(!file.backup.exists());
        assert!(!file.uninstall().expect("nothing to undo"));
    }
}
