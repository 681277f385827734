//! `cargo xtask vm-test`: the VM tier (docs/DESIGN.md §4 tier 3). Boots throwaway QEMU guests
//! (Debian 12 kernel and userland, TCG: KVM hangs on these machines) whose init runs the
//! project's guest-only integration tests (built with `--features vm-tests`) as root, then
//! powers off. One boot per machine ([`Machine`]):
//!
//! - `classic`: the test root image; `tests/{lvm,zfs}.rs` against device-mapper and ZFS on
//!   fixtures of their own.
//! - `server-lvm`, `server-btrfs`: disks that boot like servers (root on an LVM LV, or on a
//!   btrfs `@` subvolume, `/home` and `/boot` mounted from fstab); `tests/wholesystem.rs`
//!   snapshots the running system itself.
//! - `server-systemd`: the `server-lvm` disk booted with systemd as init
//!   (`vm-tests/systemd-init`); `vm-tests/systemd-tests.sh` installs the `.deb` of
//!   `cargo xtask dist` with apt and drives its units, across a hard reset of the guest (the
//!   power cut test: this machine's QEMU keeps running through a guest reboot).
//!
//! - [`image`]: the guest kernel (uncompressed vmlinux for the PVH entry), the root filesystem
//!   image (debootstrap minbase) and the busybox initramfs, cached and keyed by their inputs.
//! - [`server`]: the server disks, made once by an installer boot and cached.
//! - [`zfs`]: the ZFS modules for the guest kernel (zfs-dkms in a builder chroot, minutes),
//!   cached on their own, keyed by kernel and ZFS versions.
//! - [`guest_debs`]: packages the image lacks, for one run's guest (`--guest-packages`).
//! - [`payload`]: what changes every run (the tool's binaries, the test executables, the guest
//!   scripts from `vm-tests/`), packed into a small read-only ext4 disk.
//! - [`qemu`]: boots the guest with scratch disks, streams its console to stderr, enforces a
//!   timeout and reads the result marker.

mod cache;
mod cpio;
mod guest_debs;
mod host;
mod image;
mod payload;
mod qemu;
mod server;
mod zfs;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// Rebuild the cached guest kernel, root image and initramfs even if their inputs did not
    /// change (not the ZFS modules: --rebuild-zfs).
    #[arg(long)]
    rebuild: bool,

    /// Rebuild the cached ZFS modules (zfs-dkms for the guest kernel, ≈ 5 min) and the root
    /// image that holds them, even if their inputs did not change.
    #[arg(long)]
    rebuild_zfs: bool,

    /// Keep the guest's console log (under target/vm-logs/) also when everything passed.
    #[arg(long)]
    keep_logs: bool,

    /// Also run the loop tier (`tests/protocol.rs`) inside the guest.
    #[arg(long)]
    loop_tier: bool,

    /// Run only this guest test target (repeatable): lvm, zfs (the classic guest), wholesystem
    /// (the server guests), systemd (the systemd guest's script). Default: all of them.
    #[arg(long = "test", value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(SELECTABLE_TESTS))]
    tests: Vec<String>,

    /// Boot only this machine (repeatable): classic (the test image: lvm, zfs), server-lvm
    /// and server-btrfs (booting like servers: wholesystem), server-systemd (the LVM server
    /// with systemd as init and the .deb installed: systemd). Default: every machine that
    /// runs a selected test; with --script, classic.
    #[arg(long = "machine", value_name = "MACHINE", value_parser = clap::builder::PossibleValuesParser::new(MACHINES))]
    machines: Vec<String>,

    /// Build the binaries and tests in release mode.
    #[arg(long)]
    release: bool,

    /// Kill a guest after this many seconds (each boot).
    #[arg(long, default_value_t = 1200, value_name = "SECONDS")]
    timeout: u64,

    /// Guest memory in MiB (192 is the floor: below it lvcreate is OOM-killed).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    memory: u32,

    /// Cache directory (default: $SNAPSHOT_VM_CACHE, else $XDG_CACHE_HOME/snapshot-vm,
    /// else ~/.cache/snapshot-vm).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Only build (or check) the cached guest artifacts; boot nothing.
    #[arg(long)]
    build_only: bool,

    /// Run this bash script in the guest instead of the tests (measurements, experiments):
    /// the run passes when it exits 0. The tool's binaries are in the guest as usual.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,

    /// Debian packages the root image lacks, installed for this run only: downloaded on the
    /// host with what they need beyond the image (apt against the image's dpkg status), put in
    /// the payload as /run/vmtest/*.deb for the guest script to `dpkg -i` (e.g.
    /// mariadb-server,postgresql for vm-tests/bench-db.sh).
    #[arg(long, value_delimiter = ',', value_name = "PACKAGES")]
    guest_packages: Vec<String>,

    /// More files for the guest, in /run/vmtest under their own names (repeatable).
    #[arg(long = "payload-file", value_name = "FILE")]
    payload_files: Vec<PathBuf>,

    /// Run only the guest tests whose name contains this (passed to the test harness).
    #[arg(value_name = "FILTER")]
    filter: Option<String>,

    /// More arguments for the guest's test harness (e.g. `-- --nocapture`).
    #[arg(last = true, value_name = "HARNESS_ARGS")]
    harness_args: Vec<String>,
}

/// The machines a run can boot, in boot order.
const MACHINES: &[&str] = &["classic", "server-lvm", "server-btrfs", "server-systemd"];

/// What `--test` selects: snapshot-cli's guest-only test targets (`required-features =
/// ["vm-tests"]`) and the systemd guest's script ([`SYSTEMD_TESTS`]).
const SELECTABLE_TESTS: &[&str] = &["lvm", "zfs", "wholesystem", SYSTEMD_TESTS];

/// The systemd guest's tests: a bash script (`vm-tests/systemd-tests.sh`) that prints
/// libtest's result lines, not a cargo test target.
const SYSTEMD_TESTS: &str = "systemd";

/// One guest boot of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Machine {
    /// The test root image (`snapshot=on`): fixtures of the tests' own.
    Classic,
    /// A server disk: the running system is what the tests snapshot.
    Server(server::Layout),
    /// The LVM server disk booted with systemd as init: the package and its units.
    Systemd,
}

impl Machine {
    fn all() -> [Machine; 4] {
        [
            Machine::Classic,
            Machine::Server(server::Layout::Lvm),
            Machine::Server(server::Layout::Btrfs),
            Machine::Systemd,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            Machine::Classic => "classic",
            Machine::Server(server::Layout::Lvm) => "server-lvm",
            Machine::Server(server::Layout::Btrfs) => "server-btrfs",
            Machine::Systemd => "server-systemd",
        }
    }

    /// The guest test targets it runs.
    fn tests(self) -> &'static [&'static str] {
        match self {
            Machine::Classic => &["lvm", "zfs"],
            Machine::Server(_) => &["wholesystem"],
            Machine::Systemd => &[SYSTEMD_TESTS],
        }
    }

    /// The systemd guest's disk is the LVM server's.
    fn server_layout(self) -> Option<server::Layout> {
        match self {
            Machine::Classic => None,
            Machine::Server(l) => Some(l),
            Machine::Systemd => Some(server::Layout::Lvm),
        }
    }
}

/// The kernel command line of the systemd guest beyond the LVM server's: its pre-init (which
/// installs the test unit and masks what a test guest lacks, then execs systemd).
const SYSTEMD_KERNEL_ARGS: &str = "init=/run/vmtest/systemd-init systemd.show_status=0";

/// The boots of this run and the test targets of each.
fn plan_boots(args: &VmTestArgs) -> Result<Vec<(Machine, Vec<&'static str>)>> {
    let chosen = |m: Machine| -> bool {
        if args.machines.is_empty() {
            // A script runs once, in the classic guest, unless told otherwise.
            args.script.is_none() || m == Machine::Classic
        } else {
            args.machines.iter().any(|n| n == m.name())
        }
    };
    let mut boots = Vec::new();
    for m in Machine::all().into_iter().filter(|m| chosen(*m)) {
        let mut tests: Vec<&'static str> = m
            .tests()
            .iter()
            .copied()
            .filter(|t| args.tests.is_empty() || args.tests.iter().any(|o| o == t))
            .collect();
        if args.loop_tier && m == Machine::Classic {
            tests.push("protocol");
        }
        if args.script.is_none() && tests.is_empty() {
            continue;
        }
        boots.push((m, tests));
    }
    if boots.is_empty() {
        bail!(
            "no machine runs the selected tests ({}) — classic runs lvm and zfs, server-lvm \
             and server-btrfs run wholesystem, server-systemd runs systemd",
            args.tests.join(", ")
        );
    }
    Ok(boots)
}

pub fn run(args: &VmTestArgs) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("vm-test must run as root (debootstrap, mkfs -d of a root filesystem tree)");
    }
    let started = Instant::now();
    let boots = plan_boots(args)?;
    let needs_servers = args.build_only || boots.iter().any(|(m, _)| m.server_layout().is_some());
    host::ensure_packages()?;

    let cache = cache::Cache::open(args.cache_dir.clone())?;
    let t = Instant::now();
    let (guest, servers) = {
        let _build = cache.lock_exclusive()?;
        cache.prune_stale_runs(Duration::from_secs(args.timeout.max(3600) * 4))?;
        let guest = image::ensure(
            &cache,
            image::Rebuild {
                image: args.rebuild,
                zfs: args.rebuild_zfs,
            },
        )?;
        let servers = if needs_servers {
            Some(server::ensure(
                &cache,
                &guest,
                args.rebuild,
                Duration::from_secs(args.timeout),
            )?)
        } else {
            None
        };
        (guest, servers)
    };
    step("guest artifacts ready", t.elapsed());
    if args.build_only {
        eprintln!(
            "vm-test: kernel {}, vmlinux {}, root image {}, initramfs {}",
            guest.kernel_release,
            guest.vmlinux.display(),
            guest.rootfs.display(),
            guest.initrd.display()
        );
        if let Some(s) = &servers {
            for l in server::Layout::ALL {
                eprintln!(
                    "vm-test: server disk {}: {}",
                    l.name(),
                    s.image(l).display()
                );
            }
        }
        return Ok(());
    }

    // The systemd guest installs the packages `cargo xtask dist` builds: built here, every
    // run, so the guest always tests this tree's package (incremental when nothing changed).
    let debs = if boots.iter().any(|(m, _)| *m == Machine::Systemd) {
        let t = Instant::now();
        let debs = build_debs()?;
        step("packages built (cargo xtask dist)", t.elapsed());
        debs
    } else {
        Vec::new()
    };

    let t = Instant::now();
    let mut all_tests: Vec<String> = Vec::new();
    for (_, tests) in &boots {
        for t in tests {
            if *t != SYSTEMD_TESTS && !all_tests.iter().any(|a| a == t) {
                all_tests.push((*t).to_owned());
            }
        }
    }
    let built = payload::build(&payload::BuildOptions {
        release: args.release,
        tests: all_tests,
    })?;
    step("binaries and tests built", t.elapsed());

    let mut harness = Vec::new();
    if let Some(f) = &args.filter {
        harness.push(f.clone());
    }
    harness.extend(args.harness_args.iter().cloned());

    let mut extra = Vec::new();
    for f in &args.payload_files {
        if !f.is_file() {
            bail!("--payload-file {}: not a file", f.display());
        }
        extra.push(f.clone());
    }
    if !args.guest_packages.is_empty() {
        let t = Instant::now();
        extra.extend(guest_debs::fetch(
            &cache,
            &guest.rootfs,
            &args.guest_packages,
        )?);
        step("guest packages downloaded", t.elapsed());
    }

    let mut results = Vec::new();
    for (machine, tests) in &boots {
        eprintln!("vm-test: ==== booting {} ====", machine.name());
        let mut for_boot = built.only(tests);
        for_boot.files.extend(extra.iter().cloned());
        if *machine == Machine::Systemd {
            for_boot.files.extend(debs.iter().cloned());
        }
        let result = boot_one(
            args,
            &cache,
            &guest,
            servers.as_ref(),
            *machine,
            &for_boot,
            &harness,
        );
        results.push((*machine, result));
    }

    let mut passed_all = true;
    let (mut passed, mut failed) = (0, 0);
    let mut reasons = Vec::new();
    for (machine, result) in &results {
        match result {
            Ok(r) => {
                eprintln!(
                    "vm-test: {}: {} in {:.1} s{}",
                    machine.name(),
                    if r.passed { "passed" } else { "FAILED" },
                    r.outcome.elapsed.as_secs_f64(),
                    r.log
                        .as_ref()
                        .map(|l| format!(" (console log {})", l.display()))
                        .unwrap_or_default()
                );
                if args.script.is_none() {
                    r.outcome.print_details();
                }
                passed += r.outcome.passed;
                failed += r.outcome.failed;
                if !r.passed {
                    passed_all = false;
                    reasons.push(format!(
                        "{}: {}",
                        machine.name(),
                        r.outcome.failure_reason()
                    ));
                }
            }
            Err(e) => {
                passed_all = false;
                eprintln!("vm-test: {}: could not run: {e:#}", machine.name());
                reasons.push(format!("{}: {e:#}", machine.name()));
            }
        }
    }
    if args.script.is_none() {
        // The closing line CI's log reader understands.
        println!("vm-test: {passed} passed, {failed} failed");
    }
    eprintln!("vm-test: total {:.1} s", started.elapsed().as_secs_f64());
    if !passed_all {
        bail!("vm-test failed: {}", reasons.join("; "));
    }
    Ok(())
}

struct BootResult {
    outcome: qemu::Outcome,
    passed: bool,
    log: Option<PathBuf>,
}

fn boot_one(
    args: &VmTestArgs,
    cache: &cache::Cache,
    guest: &image::Guest,
    servers: Option<&server::ServerDisks>,
    machine: Machine,
    built: &payload::Built,
    harness: &[String],
) -> Result<BootResult> {
    // Held until QEMU has opened the images, so a concurrent `--rebuild` elsewhere cannot
    // remove them in between.
    let in_use = cache.lock_shared()?;
    let run_dir = tempfile::Builder::new()
        .prefix("snapshot-vm-run-")
        .tempdir_in(cache.runs_dir()?)
        .context("creating the per-run directory")?;
    let t = Instant::now();
    // The systemd guest's runner is its test script, unless --script replaces it.
    let systemd_tests = payload::vm_tests_dir().join("systemd-tests.sh");
    let runner = match (args.script.as_deref(), machine) {
        (Some(s), _) => Some(s),
        (None, Machine::Systemd) => Some(systemd_tests.as_path()),
        (None, _) => None,
    };
    let payload_img = payload::pack(built, harness, runner, run_dir.path())?;
    step("payload disk packed", t.elapsed());
    let (append, disk) = match machine {
        Machine::Classic => (
            String::new(),
            qemu::Disk {
                path: guest.rootfs.clone(),
                serial: "vmroot".into(),
                mode: "snapshot=on",
            },
        ),
        Machine::Server(layout) => (
            layout.kernel_args(),
            qemu::Disk {
                path: servers
                    .context("the server disks were not prepared")?
                    .image(layout),
                serial: "server".into(),
                mode: "snapshot=on",
            },
        ),
        Machine::Systemd => (
            format!(
                "{} {SYSTEMD_KERNEL_ARGS}",
                server::Layout::Lvm.kernel_args()
            ),
            qemu::Disk {
                path: servers
                    .context("the server disks were not prepared")?
                    .image(server::Layout::Lvm),
                serial: "server".into(),
                mode: "snapshot=on",
            },
        ),
    };
    let t = Instant::now();
    let outcome = qemu::boot(qemu::BootConfig {
        guest,
        append,
        disks: vec![disk],
        payload: &payload_img,
        run_dir: run_dir.path(),
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout),
        // The power cut test resets the systemd guest (sysrq b) and checks the next boot:
        // QEMU restarts it (same disks, the `snapshot=on` overlay kept) instead of exiting.
        allow_reboot: machine == Machine::Systemd,
        on_started: Box::new(move || drop(in_use)),
    })?;
    step(&format!("guest {} run", machine.name()), t.elapsed());
    // The systemd guest's script prints libtest's lines: judged like the test executables.
    let passed = if args.script.is_some() {
        outcome.script_passed()
    } else {
        outcome.passed()
    };
    let log = if args.keep_logs || !passed {
        Some(keep_log(&outcome.console_log, machine.name())?)
    } else {
        None
    };
    Ok(BootResult {
        outcome,
        passed,
        log,
    })
}

/// `cargo xtask dist` (this xtask, another process): the release binaries, man pages,
/// completions and packages into target/dist; returns the `.deb`s of snapshot and
/// snapshot-certify.
fn build_debs() -> Result<Vec<PathBuf>> {
    let me = std::env::current_exe().context("locating the xtask executable")?;
    let mut cmd = std::process::Command::new(&me);
    cmd.arg("dist").stdin(std::process::Stdio::null());
    eprintln!("vm-test: {}", host::render(&cmd));
    let status = cmd.status().context("running xtask dist")?;
    if !status.success() {
        bail!("cargo xtask dist failed ({status})");
    }
    let dist = crate::root().join("target/dist");
    ["snapshot", "snapshot-certify"]
        .iter()
        .map(|name| {
            let deb = dist.join(format!("{name}_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")));
            if !deb.is_file() {
                bail!("cargo xtask dist did not write {}", deb.display());
            }
            Ok(deb)
        })
        .collect()
}

fn step(what: &str, took: Duration) {
    eprintln!("vm-test: {what} in {:.1} s", took.as_secs_f64());
}

/// Copies the console log out of the per-run directory (which is removed) into target/vm-logs/.
fn keep_log(log: &std::path::Path, machine: &str) -> Result<PathBuf> {
    let dir = payload::target_dir()?.join("vm-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dest = dir.join(format!(
        "console-{stamp}-{}-{machine}.log",
        std::process::id()
    ));
    std::fs::copy(log, &dest)
        .with_context(|| format!("copying {} to {}", log.display(), dest.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: VmTestArgs,
    }

    fn boots(argv: &[&str]) -> Result<Vec<(&'static str, Vec<&'static str>)>> {
        let cli = Cli::try_parse_from(std::iter::once("vm-test").chain(argv.iter().copied()))?;
        Ok(plan_boots(&cli.args)?
            .into_iter()
            .map(|(m, t)| (m.name(), t))
            .collect())
    }

    #[test]
    fn machines_and_tests() {
        assert_eq!(
            boots(&[]).unwrap(),
            vec![
                ("classic", vec!["lvm", "zfs"]),
                ("server-lvm", vec!["wholesystem"]),
                ("server-btrfs", vec!["wholesystem"]),
                ("server-systemd", vec!["systemd"]),
            ]
        );
        assert_eq!(
            boots(&["--test", "systemd"]).unwrap(),
            vec![("server-systemd", vec!["systemd"])]
        );
        assert_eq!(
            boots(&["--test", "wholesystem"]).unwrap(),
            vec![
                ("server-lvm", vec!["wholesystem"]),
                ("server-btrfs", vec!["wholesystem"]),
            ]
        );
        assert_eq!(
            boots(&["--test", "zfs", "--loop-tier"]).unwrap(),
            vec![("classic", vec!["zfs", "protocol"])]
        );
        assert_eq!(
            boots(&["--machine", "server-btrfs"]).unwrap(),
            vec![("server-btrfs", vec!["wholesystem"])]
        );
        assert_eq!(
            boots(&["--script", "x.sh"]).unwrap(),
            vec![("classic", vec!["lvm", "zfs"])]
        );
        assert_eq!(
            boots(&["--script", "x.sh", "--machine", "server-lvm"]).unwrap(),
            vec![("server-lvm", vec!["wholesystem"])]
        );
        assert!(boots(&["--test", "lvm", "--machine", "server-lvm"]).is_err());
        assert!(boots(&["--machine", "nosuch"]).is_err());
    }
}
