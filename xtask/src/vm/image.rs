//! The cached guest: kernel, root filesystem image, initramfs.
//!
//! - **kernel** `kernel-<key>/`: the `linux-image-<abi>-amd64` package that
//!   `linux-image-amd64` currently depends on (`apt-get download`, the .deb kept in `debs/`),
//!   unpacked, its bzImage's xz payload extracted to an uncompressed ELF `vmlinux` (QEMU boots
//!   it through the PVH entry: no firmware, no decompression under TCG — about 3 s per boot),
//!   and the dependency closure of [`IMAGE_MODULES`] with `depmod`. Key: package, version,
//!   module list, this file's text.
//! - **rootfs** `rootfs-<key>.img`: `debootstrap --variant=minbase` (main and contrib) with
//!   [`GUEST_PACKAGES`] and `zfsutils-linux`, trimmed, the kernel modules and the ZFS modules
//!   ([`super::zfs`], built by DKMS and cached on their own) added, packed with `mkfs.ext4 -d`.
//!   QEMU attaches it `snapshot=on`, so it is never modified. Key: suite, mirror, packages and
//!   their candidate versions (`apt-cache policy`; the contrib ones from the ZFS lookup), the
//!   kernel key, the ZFS modules' key, this file's text. When the ZFS modules are not cached
//!   they are built while debootstrap runs. Beside it, `lvmtools-<key>/`: the tree's `lvm`
//!   and the shared libraries it loads (found by the guest's own loader, `ld.so --list` in a
//!   chroot), for the initramfs.
//! - **initramfs** `initrd-<key>.cpio`: static busybox, the modules that mount the root
//!   (virtio, ext4; and for a server disk device-mapper and btrfs), `lvm` with its libraries,
//!   and [`INITRAMFS_INIT`], which mounts the root image — or, given `root=` like a server's
//!   kernel command line, activates LVM and mounts that root — and the per-run payload disk,
//!   and switches to the payload's `init`. Key: kernel key, busybox version, the root image's
//!   key, this file's text.
//!
//! The server disks ([`super::server`]) are made from the root image by an installer boot.

use super::cache::{remove_path, Cache, Key};
use super::cpio;
use super::host;
use super::zfs;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const SUITE: &str = "bookworm";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Guest userland beyond minbase (from main): the LVM, filesystem and loop tools the tests
/// drive. `zfsutils-linux` (contrib) is added by the build, its version coming from the ZFS
/// lookup: the host's apt lists usually lack contrib.
pub const GUEST_PACKAGES: &[&str] = &[
    "lvm2",
    "thin-provisioning-tools",
    "xfsprogs",
    "btrfs-progs",
    "e2fsprogs",
    "kmod",
    "util-linux",
    "mount",
    "procps",
    "fdisk",
    // The backup clients of the whole-system tests (tests/wholesystem.rs) and of certification
    // through real clients: Debian 12 ships restic 0.14, borgbackup 1.2, borgmatic 1.7.
    "restic",
    "borgbackup",
    "borgmatic",
    "rsync",
    "tar",
    // systemd as init (the `server-systemd` machine, issue 16: the package installed with apt,
    // its units run by systemd): udev makes the device units fstab mounts wait for, dbus is
    // what systemd's tools expect on a Debian system. Only booted with `init=`; the other
    // machines' init stays vm-tests/init.
    "systemd",
    "udev",
    "dbus",
];

/// Modules copied into the root image (with their dependencies).
pub const IMAGE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "ext4",
    "xfs",
    "btrfs",
    "dm_mod",
    "dm_snapshot",
    "dm_thin_pool",
    "dm_zero",
    "loop",
    "crc32c_generic",
];

/// `modprobe zfs` in the guest: a small ARC leaves room for LVM and the tests in 1 GiB.
const ZFS_MODPROBE_CONF: &str = "options zfs zfs_arc_max=67108864\n";

/// Modules the initramfs loads to reach the root image.
const INITRAMFS_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];

/// More modules the initramfs loads when it boots a server disk (a `root=` on the kernel
/// command line): device-mapper for an LVM root, btrfs for a subvolume root.
const INITRAMFS_SERVER_MODULES: &[&str] = &["dm_mod", "dm_snapshot", "dm_thin_pool", "btrfs"];

/// The guest's LVM tool, copied with its shared-library closure from the root filesystem
/// tree into the initramfs (which activates the volume groups of a server disk).
const LVM_BINARY: &str = "/usr/sbin/lvm";

/// Changes to this file (the build recipe) change every key.
const RECIPE: &str = include_str!("image.rs");

/// The initramfs's `/init` (busybox sh). Disks are found by their virtio serial
/// (`/sys/block/vdX/serial`): there is no udev, so no /dev/disk/by-id.
///
/// Two ways to boot, chosen by the kernel command line:
/// - no `root=`: the test root image (serial `vmroot`, attached `snapshot=on`);
/// - `root=DEVICE` (`/dev/mapper/VG-LV`, or `UUID=…` found with `findfs`), with `rootfstype=`
///   and `rootflags=` (e.g. `subvol=@`) and `rw`: like a server's initramfs, it loads
///   device-mapper and btrfs, activates the root's volume group (`lvm vgchange -ay --sysinit VG`,
///   `DM_DISABLE_UDEV=1`: LVM makes its own device nodes) and mounts that root.
///   Only the root's volume group is activated (`/dev/mapper/VG-LV`, `/dev/VG/LV`).
///
/// Either way the payload disk (serial `payload`) goes to `/run/vmtest` (a tmpfs `/run`) and
/// the init is `init=` from the command line, by default the payload's `init`.
const INITRAMFS_INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "VMTEST initramfs: $*"; echo "VMTEST-RESULT: rc=2"; echo o > /proc/sysrq-trigger; sleep 10; }
root= rootfstype= rootflags= rootmode=ro init=/run/vmtest/init
for w in $(cat /proc/cmdline); do
  case $w in
    root=*) root=${w#root=} ;;
    rootfstype=*) rootfstype=${w#rootfstype=} ;;
    rootflags=*) rootflags=${w#rootflags=} ;;
    init=*) init=${w#init=} ;;
    rw) rootmode=rw ;;
    ro) rootmode=ro ;;
  esac
done
for ko in /mods/base/*.ko; do insmod "$ko" || echo "VMTEST initramfs: insmod $ko failed"; done
[ -n "$root" ] && for ko in /mods/server/*.ko; do insmod "$ko" || echo "VMTEST initramfs: insmod $ko failed"; done
by_serial() {
  for d in /sys/block/vd*; do
    [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
  done
  return 1
}
i=0
until payload=$(by_serial payload) && { [ -n "$root" ] || vmroot=$(by_serial vmroot); }; do
  i=$((i+1)); [ $i -gt 100 ] && fail "root or payload disk missing: $(ls /sys/block)"
  sleep 0.1
done
if [ -z "$root" ]; then
  mount -t ext4 -o rw "$vmroot" /newroot || fail "cannot mount the root image $vmroot"
else
  export DM_DISABLE_UDEV=1 LVM_SUPPRESS_FD_WARNINGS=1
  mkdir -p /run/lvm /run/lock/lvm
  lvmconf='devices { obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } backup { backup = 0 archive = 0 }'
  # The root's volume group: /dev/mapper/VG-LV (no `-` in VG) or /dev/VG/LV; none for UUID=.
  case $root in
    /dev/mapper/*) rootvg=${root#/dev/mapper/}; rootvg=${rootvg%%-*} ;;
    /dev/*/*) rootvg=${root#/dev/}; rootvg=${rootvg%%/*} ;;
    *) rootvg= ;;
  esac
  i=0
  while :; do
    case $root in
      UUID=*|LABEL=*) dev=$(findfs "$root" 2>/dev/null) ;;
      *) dev=$root ;;
    esac
    [ -n "$dev" ] && [ -b "$dev" ] && break
    i=$((i+1)); [ $i -gt 50 ] && fail "root device $root not found: $(ls /sys/block) $(ls /dev/mapper)"
    # Activates the root's volume group alone, as a distribution's initramfs activates only
    # what the root needs: other volume groups (a data disk's, with a thin pool whose
    # thin_check is not in here) are the booted system's business (udev, lvm2).
    [ -n "$rootvg" ] && /usr/sbin/lvm vgchange -ay --sysinit --config "$lvmconf" "$rootvg" >/dev/null 2>&1
    sleep 0.1
  done
  opts=$rootmode
  [ -n "$rootflags" ] && opts=$opts,$rootflags
  mount ${rootfstype:+-t "$rootfstype"} -o "$opts" "$dev" /newroot || fail "cannot mount the root $root ($dev, $opts)"
  echo "VMTEST initramfs: root $root ($dev) mounted $opts"
fi
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "cannot mount /run"
mkdir -p /newroot/run/vmtest
mount -t ext4 -o ro "$payload" /newroot/run/vmtest || fail "cannot mount the payload disk $payload"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot "$init"
"#;

/// What the guest boots.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel_release: String,
    pub vmlinux: PathBuf,
    pub rootfs: PathBuf,
    /// The root image's cache key (the server disks are built from it).
    pub rootfs_key: String,
    pub initrd: PathBuf,
}

/// What to rebuild although cached.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuild {
    /// Kernel, root image, initramfs.
    pub image: bool,
    /// The ZFS modules (minutes).
    pub zfs: bool,
}

/// Returns the cached guest, building what is missing or stale. Call with the exclusive lock.
pub fn ensure(cache: &Cache, rebuild: Rebuild) -> Result<Guest> {
    let kernel = ensure_kernel(cache, rebuild.image)?;
    let zfs = zfs::plan(
        cache,
        zfs::KernelId {
            package: kernel.package.clone(),
            version: kernel.version.clone(),
            release: kernel.release.clone(),
        },
        SUITE,
        &mirror(),
    )?;
    // A rebuilt ZFS means a new root image too.
    let rebuild_rootfs = rebuild.image || rebuild.zfs;
    let rootfs = ensure_rootfs(cache, &kernel, &zfs, rebuild_rootfs, rebuild.zfs)?;
    let initrd = ensure_initrd(cache, &kernel, &rootfs, rebuild.image)?;
    Ok(Guest {
        kernel_release: kernel.release.clone(),
        vmlinux: kernel.dir.join("vmlinux"),
        rootfs: rootfs.image,
        rootfs_key: rootfs.key,
        initrd,
    })
}

#[derive(Debug)]
struct Kernel {
    key: String,
    dir: PathBuf,
    release: String,
    package: String,
    version: String,
}

impl Kernel {
    /// The module tree (`<dir>/modules/lib/modules/<release>`), depmod-ed.
    fn modules_root(&self) -> PathBuf {
        self.dir.join("modules")
    }
}

/// The kernel package to use: the current ABI package and its candidate version, or (apt
/// knows none, e.g. offline with stale lists) the newest .deb already in the cache.
fn kernel_package(cache: &Cache) -> Result<(String, String, PathBuf)> {
    let debs = cache.debs_dir()?;
    let lookup = || -> Result<(String, String)> {
        let pkg = host::kernel_abi_package()?;
        let version = host::candidates(&[&pkg])?
            .remove(&pkg)
            .flatten()
            .with_context(|| format!("apt knows no candidate version of {pkg}"))?;
        Ok((pkg, version))
    };
    let (pkg, version) = match lookup() {
        Ok(v) => v,
        Err(first) => {
            eprintln!("vm-test: {first:#}; running apt-get update");
            host::apt_update()?;
            match lookup() {
                Ok(v) => v,
                Err(e) => return newest_cached_deb(&debs).with_context(|| format!("{e:#}")),
            }
        }
    };
    let deb = debs.join(format!("{pkg}_{}_amd64.deb", version.replace(':', "%3a")));
    if !deb.exists() {
        let t = Instant::now();
        let download = |debs: &Path| {
            host::run_quiet(
                Command::new("apt-get")
                    .args(["download", "-q", &format!("{pkg}={version}")])
                    .current_dir(debs),
            )
        };
        if download(&debs).is_err() {
            // Stale lists point at a superseded kernel that left the archive.
            host::apt_update()?;
            download(&debs).with_context(|| format!("downloading {pkg} {version}"))?;
        }
        if !deb.exists() {
            bail!(
                "apt-get download {pkg}={version} did not produce {}",
                deb.display()
            );
        }
        eprintln!(
            "vm-test: downloaded {pkg} {version} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok((pkg, version, deb))
}

fn newest_cached_deb(debs: &Path) -> Result<(String, String, PathBuf)> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(debs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with("_amd64.deb"))
        })
        .collect();
    found.sort();
    let deb = found
        .pop()
        .context("and no kernel package is cached either")?;
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut parts = name.trim_end_matches("_amd64.deb").splitn(2, '_');
    let pkg = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or_default().replace("%3a", ":");
    eprintln!("vm-test: using the cached {}", deb.display());
    Ok((pkg, version, deb))
}

fn ensure_kernel(cache: &Cache, rebuild: bool) -> Result<Kernel> {
    let (pkg, version, deb) = kernel_package(cache)?;
    let mut key = Key::default();
    key.add("package", &pkg)
        .add("version", &version)
        .add("modules", IMAGE_MODULES.join(","))
        .add("recipe", RECIPE);
    let key_hex = key.hex();
    let dir = cache.path(&format!("kernel-{key_hex}"));
    let release_file = dir.join("release");
    if !rebuild {
        if let Ok(release) = std::fs::read_to_string(&release_file) {
            eprintln!("vm-test: kernel {pkg} {version} (cached)");
            return Ok(Kernel {
                key: key_hex,
                dir,
                release: release.trim().to_owned(),
                package: pkg,
                version,
            });
        }
    }
    let t = Instant::now();
    eprintln!("vm-test: preparing kernel {pkg} {version}");
    let tmp = cache.path(&format!("kernel-{key_hex}.tmp-{}", std::process::id()));
    remove_path(&tmp)?;
    std::fs::create_dir_all(&tmp)?;
    let unpacked = tmp.join("unpacked");
    host::run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    let release = single_entry(&unpacked.join("lib/modules"))?;
    // The .deb ships no modules.dep: modprobe needs it to resolve dependencies.
    host::run_quiet(
        Command::new("depmod")
            .arg("-b")
            .arg(&unpacked)
            .arg(&release),
    )?;
    extract_vmlinux(
        &unpacked.join(format!("boot/vmlinuz-{release}")),
        &tmp.join("vmlinux"),
    )?;
    copy_module_closure(&unpacked, &release, IMAGE_MODULES, &tmp.join("modules"))?;
    remove_path(&unpacked)?;
    std::fs::write(tmp.join("release"), &release)?;
    std::fs::write(tmp.join("key.txt"), key.describe())?;
    remove_path(&dir)?;
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    cache.prune("kernel", &dir)?;
    eprintln!(
        "vm-test: kernel {release} ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(Kernel {
        key: key_hex,
        dir,
        release,
        package: pkg,
        version,
    })
}

fn single_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {names:?}",
            dir.display()
        ),
    }
}

/// The ELF kernel inside a bzImage: its payload is one xz stream (Debian's kernel config);
/// `xz --single-stream` ignores what follows it.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let data = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let start = data
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .with_context(|| format!("{}: no xz payload (not an xz bzImage)", bzimage.display()))?;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .context("running xz")?;
    let mut stdin = child.stdin.take().expect("piped");
    // xz stops reading after the stream: a broken pipe on the rest is expected.
    let _ = stdin.write_all(&data[start..]);
    drop(stdin);
    let result = child.wait_with_output().context("waiting for xz")?;
    if !result.status.success() {
        bail!(
            "xz -dc {} (from offset {start}) failed: {}",
            bzimage.display(),
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    let mut head = [0u8; 4];
    use std::io::Read;
    std::fs::File::open(out)?.read_exact(&mut head)?;
    if &head != b"\x7fELF" {
        bail!("{}: the xz payload is not an ELF kernel", bzimage.display());
    }
    Ok(())
}

/// Paths (absolute, inside `kroot`) of the modules `names` need, dependencies first.
fn module_closure(kroot: &Path, release: &str, names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for name in names {
        let text = host::output(Command::new("modprobe").arg("-d").arg(kroot).args([
            "-S",
            release,
            "--show-depends",
            name,
        ]))
        .with_context(|| format!("resolving module {name}"))?;
        for line in text.lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                let path = PathBuf::from(path.split_whitespace().next().unwrap_or_default());
                if !out.contains(&path) {
                    out.push(path);
                }
            }
            // `builtin NAME`: compiled in, nothing to copy.
        }
    }
    Ok(out)
}

/// Copies the closure of `names` from the unpacked kernel at `kroot` into `dest` (same
/// layout) and runs depmod there.
fn copy_module_closure(kroot: &Path, release: &str, names: &[&str], dest: &Path) -> Result<()> {
    let src = kroot.join("lib/modules").join(release);
    let dst = dest.join("lib/modules").join(release);
    std::fs::create_dir_all(&dst)?;
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dst.join(f)).with_context(|| format!("copying {f}"))?;
        }
    }
    for ko in module_closure(kroot, release, names)? {
        let rel = ko
            .strip_prefix(kroot)
            .with_context(|| format!("{} is outside {}", ko.display(), kroot.display()))?;
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().expect("a module has a parent"))?;
        std::fs::copy(&ko, &to).with_context(|| format!("copying {}", ko.display()))?;
    }
    host::run_quiet(Command::new("depmod").arg("-b").arg(dest).arg(release))?;
    Ok(())
}

fn mirror() -> String {
    std::env::var("SNAPSHOT_VM_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_owned())
}

fn ensure_rootfs(
    cache: &Cache,
    kernel: &Kernel,
    zfs: &zfs::Plan,
    rebuild: bool,
    rebuild_zfs: bool,
) -> Result<Rootfs> {
    let mut versions = host::candidates(GUEST_PACKAGES)?;
    if versions.values().any(Option::is_none) {
        host::apt_update()?;
        versions = host::candidates(GUEST_PACKAGES)?;
    }
    let mut key = Key::default();
    key.add("suite", SUITE).add("mirror", mirror());
    for (pkg, v) in &versions {
        key.add(pkg, v.as_deref().unwrap_or("unknown"));
    }
    key.add(zfs::GUEST_PACKAGE, &zfs.utils_version)
        .add("zfs-modules", &zfs.key)
        .add("kernel", &kernel.key)
        .add("recipe", RECIPE);
    let img = cache.path(&format!("rootfs-{}.img", key.hex()));
    let tools = cache.path(&format!("{LVM_TOOLS}-{}", key.hex()));
    let built = Rootfs {
        image: img.clone(),
        key: key.hex(),
        lvm_tools: tools.clone(),
    };
    if img.exists() && tools.is_dir() && !rebuild {
        eprintln!("vm-test: root image {} (cached)", img.display());
        return Ok(built);
    }
    let t = Instant::now();
    let tmp = cache.path(&format!("rootfs-{}.tmp-{}", key.hex(), std::process::id()));
    remove_path(&tmp)?;
    std::fs::create_dir_all(&tmp)?;
    let tree = tmp.join("tree");
    let log = tmp.join("build.log");
    eprintln!(
        "vm-test: building the guest root filesystem (debootstrap {SUITE}, about a minute; log {})",
        log.display()
    );
    let mut packages: Vec<&str> = GUEST_PACKAGES.to_vec();
    packages.push(zfs::GUEST_PACKAGE);
    // The ZFS modules (minutes when not cached) are built while debootstrap runs. A failed
    // debootstrap is reported once that build ends: its result is cached for the next run.
    let (bootstrapped, zfs_modules) = std::thread::scope(|s| {
        let modules = s.spawn(|| zfs.ensure(cache, SUITE, &mirror(), rebuild_zfs));
        // A private mount namespace: the /proc and /sys debootstrap mounts in the tree vanish
        // with it, even if it is killed half-way.
        let bootstrap = host::run_logged(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "debootstrap"])
                .args(["--variant=minbase", "--components=main,contrib"])
                .arg(format!("--include={}", packages.join(",")))
                .arg(SUITE)
                .arg(&tree)
                .arg(mirror())
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &log,
        )
        .context("debootstrap of the guest root filesystem");
        let bootstrapped = t.elapsed();
        let modules = modules
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the ZFS module build panicked")));
        bootstrap.map(|()| (bootstrapped, modules))
    })?;
    let zfs_modules = zfs_modules?;
    trim_tree(&tree)?;
    // Through the merged-/usr symlink (lib -> usr/lib) when there is one.
    let modules = tree.join("lib/modules");
    std::fs::create_dir_all(&modules)?;
    host::run_quiet(
        Command::new("cp")
            .arg("-a")
            .arg(
                kernel
                    .modules_root()
                    .join("lib/modules")
                    .join(&kernel.release),
            )
            .arg(&modules),
    )?;
    host::run_quiet(
        Command::new("cp")
            .arg("-a")
            .arg(
                zfs_modules
                    .tree()
                    .join("lib/modules")
                    .join(&kernel.release)
                    .join("updates"),
            )
            .arg(modules.join(&kernel.release)),
    )
    .context("copying the ZFS modules into the root filesystem")?;
    host::run_quiet(
        Command::new("depmod")
            .arg("-b")
            .arg(&tree)
            .arg(&kernel.release),
    )?;
    std::fs::write(
        tree.join("etc/modprobe.d/snapshot-vm-zfs.conf"),
        ZFS_MODPROBE_CONF,
    )?;
    std::fs::write(tree.join("etc/hostname"), "snapshot-vm\n")?;
    std::fs::write(tmp.join("key.txt"), key.describe())?;
    let tmp_tools = tmp.join(LVM_TOOLS);
    copy_with_libraries(&tree, LVM_BINARY, &tmp_tools)
        .context("copying lvm and its libraries for the initramfs")?;
    let tmp_img = tmp.join("rootfs.img");
    host::run_logged(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "vmroot", "-d"])
            .arg(&tree)
            .arg(&tmp_img)
            .arg("1G"),
        &log,
    )?;
    remove_path(&tools)?;
    std::fs::rename(&tmp_tools, &tools)
        .with_context(|| format!("renaming {} to {}", tmp_tools.display(), tools.display()))?;
    std::fs::rename(&tmp_img, &img)
        .with_context(|| format!("renaming {} to {}", tmp_img.display(), img.display()))?;
    remove_path(&tmp)?;
    cache.prune("rootfs", &img)?;
    cache.prune(LVM_TOOLS, &tools)?;
    eprintln!(
        "vm-test: root image built in {:.1} s (debootstrap {:.1} s)",
        t.elapsed().as_secs_f64(),
        bootstrapped.as_secs_f64()
    );
    Ok(built)
}

/// The root image and what was taken from its tree.
#[derive(Debug)]
struct Rootfs {
    image: PathBuf,
    key: String,
    /// `lvmtools-<key>/`: [`LVM_BINARY`] and its shared libraries at their guest paths.
    lvm_tools: PathBuf,
}

/// Cache kind of the LVM tools taken from the root tree (`lvmtools-<rootfs key>/`).
const LVM_TOOLS: &str = "lvmtools";

/// Copies `binary` (a path inside the guest tree `tree`) and the shared libraries it loads
/// into `dest`, each at its guest path (the file, not the symlink). The closure comes from
/// the guest's own loader (`chroot TREE ld.so --list`): the host's libraries never enter.
fn copy_with_libraries(tree: &Path, binary: &str, dest: &Path) -> Result<()> {
    let listing = host::output(Command::new("chroot").arg(tree).args([
        "/lib64/ld-linux-x86-64.so.2",
        "--list",
        binary,
    ]))?;
    let mut paths = vec![binary.to_owned()];
    paths.extend(parse_ld_list(&listing));
    for p in &paths {
        let from = tree.join(p.trim_start_matches('/'));
        let to = dest.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("an absolute path has a parent"))?;
        // Follows the symlinks inside the tree (merged /usr, library versions): all relative.
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// The absolute paths in `ld.so --list` output (`libx.so.1 => /lib/…/libx.so.1 (0x…)`, and
/// the loader itself as `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1` has none).
fn parse_ld_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once(" => ").map_or(l, |(_, p)| p);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

/// Drops what the guest never reads (documentation, locales, apt caches): 368 → ~230 MB.
fn trim_tree(tree: &Path) -> Result<()> {
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/cache/apt/archives",
        "var/lib/apt/lists",
    ] {
        let d = tree.join(dir);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_path(&e.path())?;
            } else if e.file_name() != "lock" {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    for bin in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
    ] {
        let _ = std::fs::remove_file(tree.join(bin));
    }
    Ok(())
}

fn ensure_initrd(
    cache: &Cache,
    kernel: &Kernel,
    rootfs: &Rootfs,
    rebuild: bool,
) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let mut key = Key::default();
    key.add("kernel", &kernel.key)
        .add("busybox", host::installed_version("busybox-static")?)
        // The LVM tools come from the root tree.
        .add("rootfs", &rootfs.key)
        .add("recipe", RECIPE);
    let out = cache.path(&format!("initrd-{}.cpio", key.hex()));
    if out.exists() && !rebuild {
        return Ok(out);
    }
    let mut a = cpio::Archive::default();
    for d in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/newroot",
        "/mods",
        "/mods/base",
        "/mods/server",
    ] {
        a.dir(d);
    }
    let bb = std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    a.file("/bin/busybox", 0o755, &bb);
    for applet in [
        "sh",
        "mount",
        "umount",
        "insmod",
        "switch_root",
        "mkdir",
        "cat",
        "echo",
        "sleep",
        "ls",
        "findfs",
    ] {
        a.symlink(&format!("/bin/{applet}"), "busybox");
    }
    let root = kernel.modules_root();
    let base = module_closure(&root, &kernel.release, INITRAMFS_MODULES)?;
    let server: Vec<PathBuf> = module_closure(&root, &kernel.release, INITRAMFS_SERVER_MODULES)?
        .into_iter()
        .filter(|m| !base.contains(m))
        .collect();
    for (dir, modules) in [("base", &base), ("server", &server)] {
        for (i, ko) in modules.iter().enumerate() {
            let name = ko.file_name().and_then(|n| n.to_str()).unwrap_or("module");
            let (name, data) = read_module(ko, name)?;
            // Numbered: the glob in /init loads them in dependency order.
            a.file(&format!("/mods/{dir}/{i:02}-{name}"), 0o644, &data);
        }
    }
    // lvm and its libraries at their guest paths.
    add_tree(&mut a, &rootfs.lvm_tools, "")?;
    a.file("/init", 0o755, INITRAMFS_INIT.as_bytes());
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, a.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out)?;
    cache.prune("initrd", &out)?;
    Ok(out)
}

/// Adds the files under `dir` to the archive at `/prefix/…` (directories first: the kernel
/// makes no parents).
fn add_tree(a: &mut cpio::Archive, dir: &Path, prefix: &str) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}/{name}");
        if e.file_type()?.is_dir() {
            a.dir(&path);
            add_tree(a, &e.path(), &path)?;
        } else {
            let data = std::fs::read(e.path())?;
            a.file(&path, 0o755, &data);
        }
    }
    Ok(())
}

/// A module's bytes, decompressed if the kernel package ships it compressed (busybox insmod
/// takes plain .ko files).
fn read_module(path: &Path, name: &str) -> Result<(String, Vec<u8>)> {
    let decompress = |tool: &str, ext: &str| -> Result<(String, Vec<u8>)> {
        let out = Command::new(tool)
            .arg("-dc")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!("{tool} -dc {} failed", path.display());
        }
        Ok((name.trim_end_matches(ext).to_owned(), out.stdout))
    };
    if name.ends_with(".ko.xz") {
        decompress("xz", ".xz")
    } else if name.ends_with(".ko.zst") {
        decompress("zstd", ".zst")
    } else {
        Ok((name.to_owned(), std::fs::read(path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_listing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd1b5f2000)\n\
                    \tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007f0c5a1e0000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c59e00000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c5a2a0000)\n";
        assert_eq!(
            parse_ld_list(text),
            vec![
                "/lib/x86_64-linux-gnu/libudev.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }
}
