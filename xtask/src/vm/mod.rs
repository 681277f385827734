//! `cargo xtask vm-test`: the VM tier (docs/DESIGN.md §4 tier 3). Boots a throwaway QEMU guest
//! (Debian 12 kernel and userland, TCG: KVM hangs on these machines) whose init runs the
//! project's guest-only integration tests (`crates/snapshot-cli/tests/{lvm,zfs}.rs`, built
//! with `--features vm-tests`) as root against device-mapper and ZFS, then powers off.
//!
//! - [`image`]: the guest kernel (uncompressed vmlinux for the PVH entry), the root filesystem
//!   image (debootstrap minbase) and the busybox initramfs, cached and keyed by their inputs.
//! - [`zfs`]: the ZFS modules for the guest kernel (zfs-dkms in a builder chroot, minutes),
//!   cached on their own, keyed by kernel and ZFS versions.
//! - [`payload`]: what changes every run (the tool's binaries, the test executables, the guest
//!   scripts from `vm-tests/`), packed into a small read-only ext4 disk.
//! - [`qemu`]: boots the guest with scratch disks, streams its console to stderr, enforces a
//!   timeout and reads the result marker.

mod cache;
mod cpio;
mod host;
mod image;
mod payload;
mod qemu;
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

    /// Run only this guest test target (repeatable): lvm, zfs. Default: all of them.
    #[arg(long = "test", value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(payload::GUEST_TESTS))]
    tests: Vec<String>,

    /// Build the binaries and tests in release mode.
    #[arg(long)]
    release: bool,

    /// Kill the guest after this many seconds.
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

    /// Run only the guest tests whose name contains this (passed to the test harness).
    #[arg(value_name = "FILTER")]
    filter: Option<String>,

    /// More arguments for the guest's test harness (e.g. `-- --nocapture`).
    #[arg(last = true, value_name = "HARNESS_ARGS")]
    harness_args: Vec<String>,
}

pub fn run(args: &VmTestArgs) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("vm-test must run as root (debootstrap, mkfs -d of a root filesystem tree)");
    }
    let started = Instant::now();
    host::ensure_packages()?;

    let cache = cache::Cache::open(args.cache_dir.clone())?;
    let t = Instant::now();
    let guest = {
        let _build = cache.lock_exclusive()?;
        cache.prune_stale_runs(Duration::from_secs(args.timeout.max(3600) * 4))?;
        image::ensure(
            &cache,
            image::Rebuild {
                image: args.rebuild,
                zfs: args.rebuild_zfs,
            },
        )?
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
        return Ok(());
    }
    // Held until QEMU has opened the images, so a concurrent `--rebuild` elsewhere cannot
    // remove them in between.
    let in_use = cache.lock_shared()?;

    let t = Instant::now();
    let built = payload::build(&payload::BuildOptions {
        release: args.release,
        loop_tier: args.loop_tier,
        only: args.tests.clone(),
    })?;
    step("binaries and tests built", t.elapsed());

    let run_dir = tempfile::Builder::new()
        .prefix("snapshot-vm-run-")
        .tempdir_in(cache.runs_dir()?)
        .context("creating the per-run directory")?;
    let mut harness = Vec::new();
    if let Some(f) = &args.filter {
        harness.push(f.clone());
    }
    harness.extend(args.harness_args.iter().cloned());
    let t = Instant::now();
    let payload_img = payload::pack(&built, &harness, args.script.as_deref(), run_dir.path())?;
    step("payload disk packed", t.elapsed());

    let t = Instant::now();
    let outcome = qemu::boot(qemu::BootConfig {
        guest: &guest,
        payload: &payload_img,
        run_dir: run_dir.path(),
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout),
        on_started: Box::new(move || drop(in_use)),
    })?;
    step("guest run", t.elapsed());

    let passed = if args.script.is_some() {
        outcome.script_passed()
    } else {
        outcome.passed()
    };
    let keep = args.keep_logs || !passed;
    let log = if keep {
        Some(keep_log(&outcome.console_log)?)
    } else {
        None
    };
    drop(run_dir);
    if args.script.is_none() {
        outcome.print_summary();
    }
    if let Some(log) = &log {
        eprintln!("vm-test: console log kept at {}", log.display());
    }
    eprintln!("vm-test: total {:.1} s", started.elapsed().as_secs_f64());
    if !passed {
        bail!("vm-test failed: {}", outcome.failure_reason());
    }
    Ok(())
}

fn step(what: &str, took: Duration) {
    eprintln!("vm-test: {what} in {:.1} s", took.as_secs_f64());
}

/// Copies the console log out of the per-run directory (which is removed) into target/vm-logs/.
fn keep_log(log: &std::path::Path) -> Result<PathBuf> {
    let dir = payload::target_dir()?.join("vm-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dest = dir.join(format!("console-{stamp}-{}.log", std::process::id()));
    std::fs::copy(log, &dest)
        .with_context(|| format!("copying {} to {}", log.display(), dest.display()))?;
    Ok(dest)
}
