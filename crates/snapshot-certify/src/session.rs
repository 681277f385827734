//! One snapshot session driven like a backup script drives it: `snapshot --json` over pipes,
//! the manifest read to EOF, the view copied, stdin closed, the exit status awaited — then a
//! search for anything the session left behind.

use crate::fixtures::Fixture;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest wait for the ready line, and for the exit after stdin closes.
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub session: String,
    pub consistent: bool,
    pub mounts: Vec<ManifestMount>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestMount {
    pub path: PathBuf,
    pub mount_point: PathBuf,
    pub provider: String,
    pub consistent: bool,
}

/// A running session; dropping it ends the session (stdin closed, then SIGTERM, then SIGKILL)
/// so that no error path of the harness leaves a view or a snapshot behind.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<mpsc::Receiver<String>>,
    pub spawned: Instant,
}

/// How a session ended.
#[derive(Debug)]
pub struct Ended {
    pub code: Option<i32>,
    pub teardown: Duration,
    pub stderr: String,
}

impl Session {
    pub fn start(snapshot: &Path, fx: &Fixture) -> Result<Self> {
        let mut cmd = Command::new(snapshot);
        cmd.args(["--json", "-v", "--strict-writers", "--writers-dir"])
            .arg(&fx.hooks)
            .arg("--scripts-dir")
            .arg(&fx.scripts)
            .arg("--providers")
            .arg(fx.provider)
            .arg("--config")
            .arg(&fx.config)
            .arg("-t")
            .arg(&fx.target)
            .arg("--runtime-dir")
            .arg(&fx.runtime)
            .arg("--state-dir")
            .arg(fx.state())
            .arg(fx.fs1.mount_point())
            .arg(fx.fs2.mount_point())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", snapshot.display()))?;
        let stdin = child.stdin.take();
        let mut err = child.stderr.take().context("piped stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        Ok(Session {
            child,
            stdin,
            stderr: Some(rx),
            spawned,
        })
    }

    /// Reads stdout to EOF: the manifest, or `None` when the session failed before ready.
    pub fn ready(&mut self) -> Result<Option<String>> {
        let mut out = self.child.stdout.take().context("stdout read once")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let s = rx
            .recv_timeout(LIMIT)
            .with_context(|| format!("no ready line nor EOF within {LIMIT:?}"))?;
        Ok((!s.trim().is_empty()).then_some(s))
    }

    /// Closes stdin (the backup is done) and waits for the teardown.
    pub fn finish(mut self) -> Result<Ended> {
        let t = Instant::now();
        drop(self.stdin.take());
        let status = wait_limited(&mut self.child, LIMIT)?;
        let teardown = t.elapsed();
        let stderr = self
            .stderr
            .take()
            .and_then(|rx| rx.recv_timeout(Duration::from_secs(10)).ok())
            .unwrap_or_default();
        Ok(Ended {
            code: status.and_then(|s| s.code()),
            teardown,
            stderr,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        drop(self.stdin.take());
        if let Ok(Some(_)) = wait_limited(&mut self.child, Duration::from_secs(30)) {
            return;
        }
        // An orderly teardown on SIGTERM; SIGKILL only if that hangs too.
        eprintln!("certify: session {} did not end; SIGTERM", self.child.id());
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if let Ok(Some(_)) = wait_limited(&mut self.child, Duration::from_secs(30)) {
            return;
        }
        eprintln!("certify: session {} still alive; SIGKILL", self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit`; `None` when the process is still running.
fn wait_limited(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().context("waiting for snapshot")? {
            return Ok(Some(s));
        }
        if t.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `frozen window X ms` from the `-v` log.
pub fn frozen_window_ms(stderr: &str) -> Option<f64> {
    stderr.lines().find_map(|l| {
        let rest = l.split("frozen window ").nth(1)?;
        rest.split(" ms").next()?.trim().parse().ok()
    })
}

/// Everything the session may have left: mounts and entries under TARGET, mounts under the
/// runtime directory, a journal, any mount, loop device or btrfs subvolume carrying the
/// session id, an LV or ZFS snapshot of the fixtures named with it. Empty when clean.
/// Without a session id (no manifest), only the places the fixture owns are searched.
pub fn leaks(fx: &Fixture, session: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for m in snapshot_fixtures::mounts_under(&fx.target) {
        out.push(format!("mounted under TARGET: {}", m.display()));
    }
    match std::fs::read_dir(&fx.target) {
        Ok(d) => out.extend(
            d.flatten()
                .map(|e| format!("left in TARGET: {}", e.path().display())),
        ),
        Err(e) => out.push(format!("TARGET unreadable: {e}")),
    }
    for m in snapshot_fixtures::mounts_under(&fx.runtime) {
        out.push(format!(
            "mounted under the runtime directory: {}",
            m.display()
        ));
    }
    if let Ok(d) = std::fs::read_dir(fx.state().join("sessions")) {
        out.extend(
            d.flatten()
                .map(|e| format!("journal left: {}", e.path().display())),
        );
    }
    let Some(session) = session else {
        return out;
    };
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(t) => out.extend(
            t.lines()
                .filter(|l| l.contains(session))
                .map(|l| format!("mount carrying the session id: {l}")),
        ),
        Err(e) => out.push(format!("reading mountinfo: {e}")),
    }
    if let Ok(d) = std::fs::read_dir("/sys/block") {
        for e in d.flatten() {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file"));
            if backing.is_ok_and(|b| b.contains(session)) {
                out.push(format!(
                    "loop device {} backed by a file carrying the session id",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    // The freeze provider's clones sit next to the backing files.
    for fs in [&fx.fs1, &fx.fs2] {
        let Some(dir) = fs.backing().and_then(Path::parent) else {
            continue;
        };
        if let Ok(d) = std::fs::read_dir(dir) {
            out.extend(
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains(session))
                    .map(|e| format!("file carrying the session id: {}", e.path().display())),
            );
        }
    }
    // LVM: any LV of the fixtures' VG named with the session id.
    let mut vgs: Vec<&str> = [&fx.fs1, &fx.fs2].iter().filter_map(|f| f.vg()).collect();
    vgs.dedup();
    for vg in vgs {
        for lv in snapshot_fixtures::lvm::lvs_in(vg) {
            if lv.name.contains(session) {
                out.push(format!("logical volume left: {vg}/{}", lv.name));
            }
        }
    }
    // ZFS: any snapshot of the fixtures' datasets named with the session id.
    for ds in [&fx.fs1, &fx.fs2].iter().filter_map(|f| f.dataset()) {
        let args = ["list", "-H", "-r", "-t", "snapshot", "-o", "name", ds];
        match snapshot_fixtures::zfs::zfs_tool("zfs", &args) {
            Ok(list) => out.extend(
                list.lines()
                    .filter(|l| l.contains(session))
                    .map(|l| format!("ZFS snapshot left: {l}")),
            ),
            Err(e) => out.push(format!("zfs list -t snapshot {ds}: {e:#}")),
        }
    }
    for fs in [&fx.fs1, &fx.fs2] {
        if fs.kind() != snapshot_fixtures::FsKind::Btrfs {
            continue;
        }
        let mp = fs.mount_point().to_string_lossy();
        match snapshot_fixtures::run("btrfs", &["subvolume", "list", "-a", &mp]) {
            Ok(list) => out.extend(
                list.lines()
                    .filter(|l| l.contains(session))
                    .map(|l| format!("btrfs subvolume left on {mp}: {l}")),
            ),
            Err(e) => out.push(format!("btrfs subvolume list {mp}: {e:#}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_frozen_window() {
        let log = "snapshot: \"/a\" (btrfs on /dev/loop0): btrfs\n\
                   snapshot: frozen window 2.3 ms (snapshot creation 2.1 ms)\n";
        assert_eq!(frozen_window_ms(log), Some(2.3));
        assert_eq!(frozen_window_ms("nothing"), None);
    }
}
