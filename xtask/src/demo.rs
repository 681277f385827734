//! `cargo xtask demo`: the main job, shown on loop-device filesystems the demo makes and
//! removes itself: `/srv/a` (btrfs), `/srv/b` (XFS) and `/srv/a/nested` (ext4) under a scratch
//! directory, snapshotted into one read-only view while the originals keep changing.

use crate::{cargo, install_deps, root, run};
use anyhow::{bail, Context, Result};
use snapshot_testkit::{mounts_under, FsKind, LoopFs, Scratch};
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

    println!("== fixtures: three filesystems on loop devices (removed at the end)");
    let scratch = Scratch::new("demo")?;
    let (a, b) = (scratch.join("srv/a"), scratch.join("srv/b"));
    let nested = a.join("nested");
    let fa = LoopFs::new("demo-a", FsKind::Btrfs, FsKind::Btrfs.min_size_mb(), &a)?;
    let fb = LoopFs::new("demo-b", FsKind::Xfs, FsKind::Xfs.min_size_mb(), &b)?;
    let fnest = LoopFs::new("demo-n", FsKind::Ext4, 32, &nested)?;
    for (fs, name) in [(&fa, "a"), (&fb, "b"), (&fnest, "nested")] {
        fs.write("report.txt", &format!("{name}: version 1\n"))?;
        println!(
            "   {:<50} {:<6} {}",
            fs.mount_point.display(),
            fs.kind.name(),
            fs.device.display()
        );
    }
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
    for (fs, name) in [(&fa, "a"), (&fb, "b"), (&fnest, "nested")] {
        fs.write("report.txt", &format!("{name}: version 2\n"))?;
        let view_file = view_path(&target, &fs.mount_point).join("report.txt");
        println!(
            "   {:<8} original: {:<18} view: {}",
            name,
            read(&fs.mount_point.join("report.txt")),
            read(&view_file)
        );
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
    let left = mounts_under(&target);
    let empty = std::fs::read_dir(&target)?.next().is_none();
    println!(
        "   exit status {}; mounts left under the target: {}; target empty: {empty}",
        status.code().unwrap_or(-1),
        left.len()
    );
    drop((fnest, fb, fa));
    if !status.success() || !left.is_empty() || !empty {
        bail!("the demo did not end clean");
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
