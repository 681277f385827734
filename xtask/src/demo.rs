//! `cargo xtask demo`: the main job, shown on filesystems the demo makes and removes itself,
//! under a scratch directory: `/srv/a` (btrfs: the btrfs provider), `/srv/b` (XFS) and
//! `/srv/a/nested` (ext4) — both on loop devices whose backing files lie on a btrfs the demo
//! makes, so the freeze provider clones them inside the frozen window — and `/srv/scratch`, a
//! tmpfs no provider can snapshot: the flagged fallback. All are snapshotted into one
//! read-only view while the originals keep changing.

use crate::{cargo, install_deps, root, run};
use anyhow::{bail, Context, Result};
use snapshot_testkit::{mounts_under, FsKind, LoopFs, Scratch, TestMount};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

pub fn run_demo() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the demo makes loop devices and mounts: run it as root");
    }
    install_deps()?;
    run(cargo().args(["build", "--quiet", "-p", "snapshot-cli"]))?;
    let snapshot = root().join("target/debug/snapshot");

    println!("== fixtures: four filesystems (removed at the end)");
    let scratch = Scratch::new("demo")?;
    // Backing files of the XFS and ext4 loop devices: on btrfs, so they can be cloned.
    let base_dir = scratch.join("backing");
    let base = LoopFs::new("demo-base", FsKind::Btrfs, 1024, &base_dir)?;
    let (a, b) = (scratch.join("srv/a"), scratch.join("srv/b"));
    let nested = a.join("nested");
    let fa = LoopFs::new("demo-a", FsKind::Btrfs, FsKind::Btrfs.min_size_mb(), &a)?;
    let fb = LoopFs::new_in(&base_dir, "demo-b", FsKind::Xfs, 0, &b)?;
    let fnest = LoopFs::new_in(&base_dir, "demo-n", FsKind::Ext4, 32, &nested)?;
    let tmp = scratch.join("srv/scratch");
    let ftmp = TestMount::new(&["-t", "tmpfs", "-o", "size=1m", "snaptest-demo"], &tmp)?;
    for (fs, name) in [(&fa, "a"), (&fb, "b"), (&fnest, "nested")] {
        fs.write("report.txt", &format!("{name}: version 1\n"))?;
        println!(
            "   {:<50} {:<6} {}",
            fs.mount_point.display(),
            fs.kind.name(),
            fs.device.display()
        );
    }
    std::fs::write(tmp.join("report.txt"), "scratch: version 1\n")?;
    println!(
        "   {:<50} {:<6} (no provider takes it)",
        tmp.display(),
        "tmpfs"
    );
    let target = scratch.join("view");
    std::fs::create_dir(&target)?;

    let args = [
        "--no-writers",
        "--json",
        "-t",
        s(&target),
        s(&a),
        s(&b),
        s(&nested),
        s(&tmp),
    ];
    println!("\n== snapshot {}", args.join(" "));
    let mut child = Command::new(&snapshot)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting snapshot")?;
    let mut ready = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut ready)?;
    if ready.is_empty() {
        let status = child.wait()?;
        bail!("snapshot failed before the view was ready ({status})");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&ready).context("parsing the manifest")?;
    println!("   ready (stdout closed); session {}", manifest["session"]);
    for m in manifest["mounts"].as_array().into_iter().flatten() {
        println!(
            "   {:<70} {:<6} by {:<6} {}",
            m["path"].as_str().unwrap_or_default(),
            m["fstype"].as_str().unwrap_or_default(),
            m["provider"].as_str().unwrap_or_default(),
            if m["consistent"] == true {
                "point-in-time snapshot"
            } else {
                "live bind (NOT consistent)"
            }
        );
    }

    println!("\n== the originals change after the view is ready");
    let mut wrong = Vec::new();
    for (dir, name) in [(&a, "a"), (&b, "b"), (&nested, "nested"), (&tmp, "scratch")] {
        std::fs::write(dir.join("report.txt"), format!("{name}: version 2\n"))?;
        let seen = read(&view_path(&target, dir).join("report.txt"));
        println!(
            "   {:<8} original: {:<20} view: {seen}",
            name,
            read(&dir.join("report.txt")),
        );
        // A snapshot keeps version 1; the tmpfs is a live bind and shows version 2.
        let want = if name == "scratch" { 2 } else { 1 };
        if seen != format!("{name}: version {want}") {
            wrong.push(name);
        }
    }
    // Every filesystem a point in time, but the tmpfs: flagged.
    let mounts = manifest["mounts"].as_array().cloned().unwrap_or_default();
    let flags_right = mounts.len() == 4
        && mounts
            .iter()
            .all(|m| (m["consistent"] == true) == (m["fstype"] != "tmpfs"));
    if !flags_right {
        wrong.push("the manifest's consistent flags");
    }

    println!("\n== the view is read-only");
    let probe = view_path(&target, &a).join("new-file");
    match std::fs::write(&probe, "x") {
        Err(e) => println!("   writing {} -> {e}", probe.display()),
        Ok(()) => bail!("{probe:?} was writable"),
    }

    println!("\n== closing stdin: the backup is done");
    drop(child.stdin.take());
    let status = child.wait()?;
    // The target is this run's own path, named by no other session: its lock file would
    // otherwise stay in the runtime directory until reboot (one per demo).
    let runtime = Path::new(snapshot_core::lock::RUNTIME_DIR);
    if let Err(e) = snapshot_core::lock::TargetLock::remove_unused(runtime, &target) {
        println!("   removing the target's lock file: {e}");
    }
    let left = mounts_under(&target);
    let empty = std::fs::read_dir(&target)?.next().is_none();
    println!(
        "   exit status {}; mounts left under the target: {}; target empty: {empty}",
        status.code().unwrap_or(-1),
        left.len()
    );
    drop((ftmp, fnest, fb, fa, base));
    if !status.success() || !left.is_empty() || !empty {
        bail!("the demo did not end clean");
    }
    if !wrong.is_empty() {
        bail!("the view did not show what it should: {wrong:?}");
    }
    println!("\n== fixtures removed; done");
    Ok(())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("demo paths are UTF-8")
}

fn view_path(target: &Path, p: &Path) -> std::path::PathBuf {
    target.join(p.strip_prefix("/").unwrap_or(p))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("<{e}>"))
}
