//! ZFS for the guest: Debian's kernel has no ZFS, so the modules are built by `zfs-dkms` for
//! the guest kernel, once, and cached apart from the root image (the build takes minutes, the
//! image a minute).
//!
//! - **Versions** come from a private apt state under `apt-contrib/` in the cache (Debian's
//!   `contrib` component, where `zfs-dkms` and `zfsutils-linux` live, is usually not in the
//!   host's sources, and the host's apt configuration is not ours to change). Its lists are
//!   refreshed when older than [`LISTS_MAX_AGE`]; offline, the old lists serve.
//! - **Modules** `zfs-<key>/modules/lib/modules/<release>/updates/dkms/*.ko`: a throwaway
//!   `debootstrap --variant=minbase` builder with the guest kernel's `linux-headers` package
//!   (the same version as the kernel image, from bookworm or bookworm-security) and `dkms`;
//!   installing `zfs-dkms` builds the modules for every kernel whose headers are there, which
//!   is only the guest's (the host's kernel is not in the chroot). The chroot's /proc, /dev
//!   and /tmp are mounted in a private mount namespace and unmounted explicitly (the namespace
//!   also drops them if the build is killed). Key: kernel package and version, `zfs-dkms`
//!   version, suite, mirrors and [`BUILD_SCRIPT`] — not the image recipe, so that editing
//!   the image never costs a ZFS rebuild.
//!
//! The root image (`image.rs`) installs `zfsutils-linux` and copies these modules in.

use super::cache::{remove_path, Cache, Key};
use super::host;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// The guest's ZFS userland (contrib); the rootfs build adds it to debootstrap's packages.
pub const GUEST_PACKAGE: &str = "zfsutils-linux";

/// The DKMS source package.
const DKMS_PACKAGE: &str = "zfs-dkms";

/// How old the private contrib lists may get before a run refreshes them (about 0.5 s).
const LISTS_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// Runs in the builder chroot's private mount namespace (`unshare --mount`). Inputs from the
/// environment: `B` (the chroot), `KREL` (kernel release), `KVER` (its package version),
/// `ZVER` (zfs-dkms version). Part of the cache key: changing it rebuilds the modules.
const BUILD_SCRIPT: &str = r#"set -euo pipefail
mount -t proc proc "$B/proc"
mount --bind /dev "$B/dev"
mount -t tmpfs tmpfs "$B/tmp"
cleanup() { umount "$B/tmp" "$B/dev" "$B/proc" || true; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
in_chroot() { chroot "$B" "$@" </dev/null; }
s=$(date +%s)
in_chroot apt-get update -q
in_chroot apt-get install -y -q --no-install-recommends \
  "linux-headers-$KREL=$KVER" dkms file lsb-release libpython3-stdlib python3-distutils libc6-dev
m=$(date +%s); echo "TIMING headers and toolchain $((m-s)) s"
# The postinst builds for every kernel with headers in the chroot: the guest's.
in_chroot apt-get install -y -q --no-install-recommends "zfs-dkms=$ZVER"
e=$(date +%s); echo "TIMING zfs-dkms (DKMS build in its postinst) $((e-m)) s"
if ! ls "$B/lib/modules/$KREL/updates/dkms/"zfs.ko* >/dev/null 2>&1; then
  echo "the postinst built nothing for $KREL: dkms install"
  in_chroot dkms install "zfs/${ZVER%%-*}" -k "$KREL"
fi
in_chroot dkms status
"#;

/// Bumped when the build changes in a way [`BUILD_SCRIPT`] does not show.
const BUILD_RECIPE_VERSION: u32 = 1;

/// The kernel the modules are built for.
#[derive(Debug, Clone)]
pub struct KernelId {
    /// `linux-image-6.1.0-56-amd64`
    pub package: String,
    /// `6.1.192-2`
    pub version: String,
    /// `6.1.0-56-amd64`
    pub release: String,
}

/// What the ZFS part of the guest will be, known without building anything.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kernel: KernelId,
    pub dkms_version: String,
    pub utils_version: String,
    pub key: String,
    dir: PathBuf,
}

/// Built modules: `tree()` is laid out as `lib/modules/<release>/updates/dkms/*.ko`.
#[derive(Debug, Clone)]
pub struct Modules {
    dir: PathBuf,
}

impl Modules {
    pub fn tree(&self) -> PathBuf {
        self.dir.join("modules")
    }
}

fn security_mirror() -> String {
    std::env::var("SNAPSHOT_VM_SECURITY_MIRROR")
        .unwrap_or_else(|_| DEFAULT_SECURITY_MIRROR.to_owned())
}

/// Looks up the ZFS versions and computes the modules' key. Cheap: no build, and the network
/// at most for the contrib lists (twice a day).
pub fn plan(cache: &Cache, kernel: KernelId, suite: &str, mirror: &str) -> Result<Plan> {
    let apt = PrivateApt::new(cache, suite, mirror)?;
    apt.refresh_if_stale()?;
    let mut versions = apt.candidates(&[DKMS_PACKAGE, GUEST_PACKAGE])?;
    let mut take = |pkg: &str| {
        versions.remove(pkg).flatten().with_context(|| {
            format!(
                "{pkg} has no candidate in {suite} contrib (lists in {})",
                apt.dir.display()
            )
        })
    };
    let dkms_version = take(DKMS_PACKAGE)?;
    let utils_version = take(GUEST_PACKAGE)?;
    let mut key = Key::default();
    key.add("kernel-package", &kernel.package)
        .add("kernel-version", &kernel.version)
        .add("kernel-release", &kernel.release)
        .add("zfs-dkms", &dkms_version)
        .add("suite", suite)
        .add("mirror", mirror)
        .add("security-mirror", security_mirror())
        .add("script", BUILD_SCRIPT)
        .add("recipe-version", BUILD_RECIPE_VERSION.to_string());
    let key_hex = key.hex();
    let dir = cache.path(&format!("zfs-{key_hex}"));
    Ok(Plan {
        kernel,
        dkms_version,
        utils_version,
        key: key_hex,
        dir,
    })
}

impl Plan {
    /// True when the modules are in the cache.
    pub fn is_cached(&self) -> bool {
        self.dir.join("key.txt").exists()
    }

    /// The cached modules, built when missing (or when `rebuild`). Call with the exclusive
    /// cache lock.
    pub fn ensure(
        &self,
        cache: &Cache,
        suite: &str,
        mirror: &str,
        rebuild: bool,
    ) -> Result<Modules> {
        if self.is_cached() && !rebuild {
            eprintln!(
                "vm-test: ZFS modules {} for {} (cached)",
                self.dkms_version, self.kernel.release
            );
            return Ok(Modules {
                dir: self.dir.clone(),
            });
        }
        let t = Instant::now();
        let tmp = cache.path(&format!("zfs-{}.tmp-{}", self.key, std::process::id()));
        remove_path(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        let log = tmp.join("build.log");
        eprintln!(
            "vm-test: building the ZFS modules (zfs-dkms {} for {}; about 5 minutes on 2 \
             cores; log {})",
            self.dkms_version,
            self.kernel.release,
            log.display()
        );
        let builder = tmp.join("builder");
        host::run_logged(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "debootstrap"])
                .args(["--variant=minbase", "--components=main"])
                .arg(suite)
                .arg(&builder)
                .arg(mirror)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &log,
        )
        .context("debootstrap of the ZFS builder chroot")?;
        let bootstrapped = t.elapsed();
        std::fs::write(
            builder.join("etc/apt/sources.list"),
            format!(
                "deb {mirror} {suite} main contrib\n\
                 deb {security} {suite}-security main\n",
                security = security_mirror()
            ),
        )
        .context("writing the builder's apt sources")?;
        host::run_logged(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--"])
                .args(["bash", "-c", BUILD_SCRIPT])
                .env("B", &builder)
                .env("KREL", &self.kernel.release)
                .env("KVER", &self.kernel.version)
                .env("ZVER", &self.dkms_version),
            &log,
        )
        .with_context(|| {
            format!(
                "building zfs-dkms {} for {} in {}",
                self.dkms_version,
                self.kernel.release,
                builder.display()
            )
        })?;
        let built = builder
            .join("lib/modules")
            .join(&self.kernel.release)
            .join("updates/dkms");
        let dest = tmp
            .join("modules/lib/modules")
            .join(&self.kernel.release)
            .join("updates");
        std::fs::create_dir_all(&dest)?;
        host::run_quiet(Command::new("cp").arg("-a").arg(&built).arg(&dest))
            .context("copying the built ZFS modules")?;
        let names = module_names(&dest.join("dkms"))?;
        if !names.iter().any(|n| n == "zfs") {
            bail!(
                "the ZFS build produced no zfs module in {} (found {names:?}); see {}",
                built.display(),
                log.display()
            );
        }
        // The builder (≈ 850 MB) is only needed for the build; remove_path refuses if a mount
        // survived under it.
        remove_path(&builder)?;
        std::fs::write(
            tmp.join("key.txt"),
            format!(
                "zfs-dkms {}\nkernel {} {} ({})\nmodules {}\n",
                self.dkms_version,
                self.kernel.package,
                self.kernel.version,
                self.kernel.release,
                names.join(" ")
            ),
        )?;
        remove_path(&self.dir)?;
        std::fs::rename(&tmp, &self.dir)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.dir.display()))?;
        cache.prune("zfs", &self.dir)?;
        eprintln!(
            "vm-test: ZFS modules built in {:.1} s (builder debootstrap {:.1} s): {}",
            t.elapsed().as_secs_f64(),
            bootstrapped.as_secs_f64(),
            names.join(" ")
        );
        Ok(Modules {
            dir: self.dir.clone(),
        })
    }
}

/// Module names (`zfs`, `spl`, …) of the `.ko` files (possibly compressed) in `dir`.
fn module_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.split_once(".ko").map(|(stem, _)| stem.to_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// An apt state of our own (sources: `SUITE contrib`), to learn the ZFS package versions
/// without touching the host's apt configuration.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(cache: &Cache, suite: &str, mirror: &str) -> Result<Self> {
        let dir = cache.path("apt-contrib");
        for sub in ["lists/partial", "cache", "parts"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let sources = format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {suite} contrib\n"
        );
        let path = dir.join("sources.list");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&path, sources)
                .with_context(|| format!("writing {}", path.display()))?;
            // Other sources: the old lists say nothing about the new ones.
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        Ok(Self { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            format!("-oDir::Etc::SourceParts={d}/parts"),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            // The cache is under root's home, which the _apt sandbox user cannot enter.
            "-oAPT::Sandbox::User=root".to_owned(),
            "-oAcquire::Languages=none".to_owned(),
        ]
    }

    fn refresh_if_stale(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let age = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if age.is_some_and(|a| a < LISTS_MAX_AGE) {
            return Ok(());
        }
        let result = host::run_quiet(
            Command::new("apt-get")
                .args(self.options())
                .args(["-qq", "update"]),
        );
        match (result, age) {
            (Ok(()), _) => {
                std::fs::write(&stamp, "")?;
                Ok(())
            }
            (Err(e), Some(_)) => {
                eprintln!(
                    "vm-test: refreshing the contrib lists failed, using the old ones: {e:#}"
                );
                Ok(())
            }
            (Err(e), None) => Err(e).context("fetching Debian's contrib package lists"),
        }
    }

    fn candidates(
        &self,
        pkgs: &[&str],
    ) -> Result<std::collections::BTreeMap<String, Option<String>>> {
        host::candidates_with(&self.options(), pkgs)
    }
}
