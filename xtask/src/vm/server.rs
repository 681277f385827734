//! The server disks: guests that boot like servers, for the whole-system tests
//! (`crates/snapshot-cli/tests/wholesystem.rs`). Each is a whole disk with a partition table:
//!
//! - `lvm.img`: partition 1 `/boot` (ext4), partition 2 an LVM PV holding the VG [`ROOT_VG`]
//!   with the LVs `root` (ext4, the guest root image's files) and `home` (ext4), and free
//!   extents for classic snapshots. Booted with `root=/dev/mapper/sysvg-root`.
//! - `btrfs.img`: partition 1 `/boot` (ext4), partition 2 btrfs with the subvolumes `@` (the
//!   root image's files) and `@home`, mounted as `/` and `/home` (the Fedora/openSUSE layout).
//!   Booted with `root=UUID=… rootflags=subvol=@`.
//!
//! Their `/etc/fstab` mounts `/home` and `/boot`; the initramfs (`image.rs`) activates LVM or
//! mounts the subvolume, like a distribution's. This machine's kernel has no device-mapper,
//! so the disks are made by an *installer* boot of the test guest
//! (`vm-tests/install-server.sh`): the pristine root image attached a second time, read-only
//! (serial `source`), and two blank sparse disks written in place (serials `server-lvm`,
//! `server-btrfs`). They are then cached (`server-<key>/`) and attached `snapshot=on`, so no
//! boot ever modifies them. Key: the root image's key, the installer script, this file.

use super::cache::{remove_path, Cache, Key};
use super::image::Guest;
use super::{payload, qemu};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The volume group of the LVM server's system disk. Not `snaptest-…`: the leak check would
/// take it for a fixture left behind.
pub const ROOT_VG: &str = "sysvg";

/// The btrfs server's filesystem UUID (fixed, so the kernel command line can name it).
pub const BTRFS_UUID: &str = "5a9c0f0e-6d1b-4c7e-9b1f-3c2d7e8a4b10";

/// Size of each (sparse) server disk: `/boot` 256 MiB, the rest the PV or the btrfs.
const DISK_SIZE: u64 = 4 << 30;

const INSTALL_SCRIPT: &str = include_str!("../../../vm-tests/install-server.sh");
const RECIPE: &str = include_str!("server.rs");

/// The server layouts, one guest boot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Lvm,
    Btrfs,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::Lvm, Layout::Btrfs];

    /// `lvm`, `btrfs`: the guest's `SNAPSHOT_VM_LAYOUT`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Lvm => "lvm",
            Layout::Btrfs => "btrfs",
        }
    }

    /// The kernel command line that boots it (besides the console).
    pub fn kernel_args(self) -> String {
        let root = match self {
            Layout::Lvm => format!("root=/dev/mapper/{ROOT_VG}-root rootfstype=ext4"),
            Layout::Btrfs => format!("root=UUID={BTRFS_UUID} rootfstype=btrfs rootflags=subvol=@"),
        };
        format!("{root} rw vmtest.layout={}", self.name())
    }
}

/// The cached server disks.
#[derive(Debug, Clone)]
pub struct ServerDisks {
    dir: PathBuf,
}

impl ServerDisks {
    pub fn image(&self, layout: Layout) -> PathBuf {
        image_in(&self.dir, layout)
    }
}

fn image_in(dir: &Path, layout: Layout) -> PathBuf {
    dir.join(format!("{}.img", layout.name()))
}

/// Returns the cached server disks, making them in an installer boot when missing. Call with
/// the exclusive lock.
pub fn ensure(
    cache: &Cache,
    guest: &Guest,
    rebuild: bool,
    timeout: Duration,
) -> Result<ServerDisks> {
    let mut key = Key::default();
    key.add("rootfs", &guest.rootfs_key)
        .add("install-script", INSTALL_SCRIPT)
        .add("recipe", RECIPE);
    let dir = cache.path(&format!("server-{}", key.hex()));
    if !rebuild && Layout::ALL.iter().all(|l| image_in(&dir, *l).exists()) {
        eprintln!("vm-test: server disks {} (cached)", dir.display());
        return Ok(ServerDisks { dir });
    }
    let t = Instant::now();
    eprintln!("vm-test: making the server disks (LVM, btrfs) in an installer boot of the guest");
    let tmp = cache.path(&format!("server-{}.tmp-{}", key.hex(), std::process::id()));
    remove_path(&tmp)?;
    std::fs::create_dir_all(&tmp)?;
    let mut disks = vec![
        qemu::Disk {
            path: guest.rootfs.clone(),
            serial: "vmroot".into(),
            mode: "snapshot=on",
        },
        qemu::Disk {
            path: guest.rootfs.clone(),
            serial: "source".into(),
            mode: "readonly=on",
        },
    ];
    for layout in Layout::ALL {
        let path = image_in(&tmp, layout);
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(DISK_SIZE))
            .with_context(|| format!("creating the sparse disk {}", path.display()))?;
        disks.push(qemu::Disk {
            path,
            serial: format!("server-{}", layout.name()),
            mode: "aio=threads",
        });
    }
    // The script's parameters, one `NAME=VALUE` a line (the harness-arguments file).
    let params = vec![format!("VG={ROOT_VG}"), format!("BTRFS_UUID={BTRFS_UUID}")];
    let script = tmp.join("install-server.sh");
    std::fs::write(&script, INSTALL_SCRIPT)?;
    let built = payload::Built {
        bins: Vec::new(),
        tests: Vec::new(),
        files: Vec::new(),
    };
    let payload_img = payload::pack(&built, &params, Some(&script), &tmp)?;
    let outcome = qemu::boot(qemu::BootConfig {
        guest,
        append: String::new(),
        disks,
        payload: &payload_img,
        run_dir: &tmp,
        memory_mib: 1024,
        timeout,
        allow_reboot: false,
        on_started: Box::new(|| {}),
    })?;
    if !outcome.script_passed() {
        let log = super::keep_log(&outcome.console_log, "installer")?;
        bail!(
            "the installer boot failed: {} (console log kept at {})",
            outcome.failure_reason(),
            log.display()
        );
    }
    for layout in Layout::ALL {
        let from = image_in(&tmp, layout);
        let used = std::fs::metadata(&from)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        eprintln!(
            "vm-test: server disk {}: {} MiB written of {} MiB",
            layout.name(),
            used >> 20,
            DISK_SIZE >> 20
        );
    }
    std::fs::write(tmp.join("key.txt"), key.describe())?;
    for f in ["payload.img", "console.log", "install-server.sh"] {
        let _ = std::fs::remove_file(tmp.join(f));
    }
    // Scratch disks of the boot.
    for entry in std::fs::read_dir(&tmp)?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".raw") {
            std::fs::remove_file(entry.path())?;
        }
    }
    remove_path(&dir)?;
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    cache.prune("server", &dir)?;
    eprintln!(
        "vm-test: server disks ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(ServerDisks { dir })
}
