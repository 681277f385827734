//! Boots the guest under QEMU/TCG and collects the result.
//!
//! The guest's serial console is QEMU's stdout: each line is copied to our stderr as it comes
//! and into `console.log`. The guest prints `VMTEST-RESULT: rc=N` and then reports N through
//! `isa-debug-exit` (QEMU exits with `N*2+1`); a guest that powers off or panics without the
//! marker, or outlives the timeout (killed), is a failure.

use super::image::Guest;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Scratch disks: (serial, size). `scratch` becomes the guest's /var/tmp (loop backing files);
/// `data1`/`data2` are raw disks for tests that want real block devices as PVs.
const DISKS: &[(&str, u64)] = &[
    ("scratch", 16 << 30),
    ("data1", 2 << 30),
    ("data2", 2 << 30),
];

/// A disk attached to the guest, found there by its virtio serial.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub serial: String,
    /// QEMU drive options: `snapshot=on` (writes go to a throwaway overlay), `readonly=on`,
    /// or empty (written in place).
    pub mode: &'static str,
}

pub struct BootConfig<'a> {
    pub guest: &'a Guest,
    /// More kernel command line (`root=…` for a server disk).
    pub append: String,
    /// The root disk(s), attached before the payload.
    pub disks: Vec<Disk>,
    pub payload: &'a Path,
    pub run_dir: &'a Path,
    pub memory_mib: u32,
    pub timeout: Duration,
    /// A guest reboot restarts the guest (same disks; a `snapshot=on` overlay is kept) instead
    /// of ending QEMU (`-no-reboot`).
    pub allow_reboot: bool,
    /// Called once QEMU runs (it holds the images open from then on).
    pub on_started: Box<dyn FnOnce() + 'a>,
}

#[derive(Debug)]
pub struct Outcome {
    pub console_log: PathBuf,
    /// From the `VMTEST-RESULT: rc=N` marker.
    pub guest_rc: Option<i32>,
    pub qemu_status: Option<ExitStatus>,
    pub timed_out: bool,
    /// Names from `test NAME ... FAILED` lines (absent with `--nocapture`, which splits them).
    pub failed_tests: Vec<String>,
    /// Sums of libtest's `test result:` lines, one per test executable.
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    /// `test result:` lines seen: one per test executable that finished.
    pub executables_done: usize,
    /// The guest kernel panicked (with `allow_reboot`, QEMU is then stopped: `panic=-1`
    /// would reboot it forever).
    pub panicked: bool,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        // isa-debug-exit: status = rc*2+1, so a clean guest exit 0 is status 1.
        !self.timed_out
            && !self.panicked
            && self.guest_rc == Some(0)
            && self.qemu_status.and_then(|s| s.code()) == Some(1)
            && self.failed == 0
            && self.failed_tests.is_empty()
            && self.passed > 0
    }

    /// For `--script` runs: the script's status alone.
    pub fn script_passed(&self) -> bool {
        !self.timed_out
            && !self.panicked
            && self.guest_rc == Some(0)
            && self.qemu_status.and_then(|s| s.code()) == Some(1)
    }

    pub fn failure_reason(&self) -> String {
        if self.panicked {
            return "the guest kernel panicked".to_owned();
        }
        if self.timed_out {
            return "the guest did not finish within the timeout and was killed".to_owned();
        }
        if !self.failed_tests.is_empty() {
            return format!("guest tests failed: {}", self.failed_tests.join(", "));
        }
        if self.failed > 0 {
            return format!("{} guest tests failed", self.failed);
        }
        match (self.guest_rc, self.qemu_status.and_then(|s| s.code())) {
            (None, code) => format!(
                "the guest stopped without reporting a result (QEMU exit {code:?}): a panic, \
                 an OOM kill of init, or a crash before the tests ran"
            ),
            (Some(0), _) if self.passed == 0 => {
                "no guest test ran (a filter that matched nothing?)".to_owned()
            }
            (Some(rc), code) => format!("the guest reported status {rc} (QEMU exit {code:?})"),
        }
    }

    /// The figures of one boot (the run's closing line sums the boots).
    pub fn print_details(&self) {
        eprintln!(
            "vm-test: the guest ran {} test executable(s) in {:.1} s: {} passed, {} failed, {} ignored",
            self.executables_done,
            self.elapsed.as_secs_f64(),
            self.passed,
            self.failed,
            self.ignored
        );
        for t in &self.failed_tests {
            eprintln!("vm-test:   FAILED {t}");
        }
    }
}

pub fn boot(cfg: BootConfig<'_>) -> Result<Outcome> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-M", "pc", "-cpu", "max", "-smp", "1"])
        .args(["-m", &cfg.memory_mib.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&cfg.guest.vmlinux)
        .arg("-initrd")
        .arg(&cfg.guest.initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 quiet panic=-1 {}", cfg.append).trim_end());
    if !cfg.allow_reboot {
        cmd.arg("-no-reboot");
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        let id = format!("disk{i}");
        cmd.arg("-drive")
            .arg(drive(&d.path, &id, d.mode))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive={id},serial={}", d.serial));
    }
    cmd.arg("-drive")
        .arg(drive(cfg.payload, "payload", "readonly=on"))
        .args(["-device", "virtio-blk-pci,drive=payload,serial=payload"]);
    for (serial, size) in DISKS {
        let path = cfg.run_dir.join(format!("{serial}.raw"));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(*size))
            .with_context(|| format!("creating the sparse disk {}", path.display()))?;
        cmd.arg("-drive")
            .arg(drive(&path, serial, "aio=threads"))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive={serial},serial={serial}"));
    }
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        // snapshot=on puts the root's write overlay in TMPDIR: keep it in the run directory.
        .env("TMPDIR", cfg.run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("vm-test: {}", super::host::render(&cmd));

    let log_path = cfg.run_dir.join("console.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    (cfg.on_started)();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || forward_lines(stdout, &tx));
    std::thread::spawn(move || forward_lines(stderr, &tx2));

    let mut outcome = Outcome {
        console_log: log_path.clone(),
        guest_rc: None,
        qemu_status: None,
        timed_out: false,
        failed_tests: Vec::new(),
        passed: 0,
        failed: 0,
        ignored: 0,
        executables_done: 0,
        panicked: false,
        elapsed: Duration::ZERO,
    };
    let deadline = started + cfg.timeout;
    let stderr_out = std::io::stderr();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                let _ = writeln!(stderr_out.lock(), "{line}");
                outcome.note(&line);
                if outcome.panicked && cfg.allow_reboot {
                    // The panic's trace follows; then `panic=-1` reboots, again and again.
                    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
                        let _ = writeln!(log, "{line}");
                        let _ = writeln!(stderr_out.lock(), "{line}");
                    }
                    eprintln!("vm-test: the guest kernel panicked: stopping QEMU");
                    let _ = child.kill();
                    outcome.qemu_status = child.wait().ok();
                    break;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Both pipes closed: QEMU is gone (or closing).
                outcome.qemu_status = Some(child.wait().context("waiting for qemu")?);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = child.try_wait().context("polling qemu")? {
            // Drain what is still in the pipes.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
                let _ = writeln!(log, "{line}");
                let _ = writeln!(stderr_out.lock(), "{line}");
                outcome.note(&line);
            }
            outcome.qemu_status = Some(status);
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "vm-test: the guest is still running after {} s: killing QEMU (pid {})",
                cfg.timeout.as_secs(),
                child.id()
            );
            let _ = child.kill();
            outcome.qemu_status = child.wait().ok();
            outcome.timed_out = true;
            show_tail(&log_path);
            break;
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

impl Outcome {
    /// Reads the marker, libtest's summary (`test result: ok. 9 passed; 0 failed; 1 ignored;
    /// …`) and its `test NAME ... FAILED` lines.
    fn note(&mut self, line: &str) {
        let line = &strip_ansi(line);
        if line.contains("Kernel panic - not syncing") {
            self.panicked = true;
        }
        if let Some(rc) = line.trim().strip_prefix("VMTEST-RESULT: rc=") {
            self.guest_rc = rc.split_whitespace().next().and_then(|r| r.parse().ok());
            return;
        }
        if let Some(summary) = line.strip_prefix("test result: ") {
            self.executables_done += 1;
            for part in summary.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<usize>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
            return;
        }
        if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.rsplit_once(" ... "))
        {
            if result.trim() == "FAILED" {
                self.failed_tests.push(name.to_owned());
            }
        }
    }
}

/// `line` without ANSI escape sequences (`ESC [ … letter`): a test harness may colour its
/// output on the serial console.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn drive(path: &Path, id: &str, extra: &str) -> String {
    // A comma in a path must be doubled in QEMU option syntax.
    let file = path.display().to_string().replace(',', ",,");
    format!("file={file},format=raw,if=none,id={id},cache=unsafe,{extra}")
}

fn forward_lines(r: impl std::io::Read, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

fn show_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(60);
    eprintln!("vm-test: last console lines:");
    for l in &lines[from..] {
        eprintln!("  | {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            console_log: PathBuf::new(),
            guest_rc: None,
            qemu_status: None,
            timed_out: false,
            failed_tests: vec![],
            passed: 0,
            failed: 0,
            ignored: 0,
            executables_done: 0,
            panicked: false,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn reads_results_and_marker() {
        let mut o = outcome();
        for l in [
            "test classic::ext4 ... ok",
            "test overflow ... \x1b[31mFAILED\x1b[m",
            "test slow ... ignored, needs zfs",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 3.1s",
            "VMTEST-RESULT: rc=1 at 42.0s",
        ] {
            o.note(l);
        }
        assert_eq!(o.failed_tests, vec!["overflow"]);
        assert_eq!((o.passed, o.failed, o.ignored), (1, 1, 1));
        assert_eq!(o.guest_rc, Some(1));
        assert!(!o.passed());
        o.note("test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out");
        assert_eq!((o.passed, o.executables_done), (5, 2));
    }

    #[test]
    fn drive_escapes_commas() {
        assert_eq!(
            drive(Path::new("/a,b/x.img"), "d", "readonly=on"),
            "file=/a,,b/x.img,format=raw,if=none,id=d,cache=unsafe,readonly=on"
        );
    }
}
