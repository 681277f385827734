//! Provider scripts through the real binary (loop tier: root), written to the original tool's
//! convention: `SCRIPT snapshot SOURCE TARGET` mounts the snapshot at `"$TARGET$SOURCE"`,
//! `SCRIPT remove SOURCE TARGET` (the same two arguments) unmounts it and removes it. Also the
//! `providers` setting (`--providers`, the configuration key, `snapshot plan`), and a script
//! that hangs (killed with its process group at `--freeze-timeout`, the filesystem falls
//! back to bind).

mod common;

use common::*;
use snapshot_testkit::{set_mode, TestMount};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A scratch directory with a trusted scripts directory, a TARGET, an empty configuration
/// file (so that the machine's own cannot change what the test sees), and the log where
/// scripts write their arguments.
struct Setup {
    scratch: Scratch,
    scripts: PathBuf,
    target: PathBuf,
    config: PathBuf,
    calls: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let scratch = Scratch::new(name).unwrap();
        let scripts = scratch.join("filesystems.d");
        std::fs::create_dir(&scripts).unwrap();
        set_mode(&scripts, 0o755);
        let target = scratch.join("T");
        std::fs::create_dir(&target).unwrap();
        let config = scratch.join("snapshot.toml");
        std::fs::write(&config, "").unwrap();
        Self {
            calls: scratch.join("calls"),
            scripts,
            target,
            config,
            scratch,
        }
    }

    fn runtime(&self) -> PathBuf {
        self.scratch.join("run")
    }

    /// A provider script written for the original tool: it copies SOURCE into a directory of
    /// its own and bind-mounts the copy read-only at "$TARGET$SOURCE", which must exist.
    /// Every call appends `ACTION|SOURCE|TARGET` to the calls log.
    fn copying_script(&self, name: &str) -> PathBuf {
        let store = self.scratch.join("store");
        let path = self.scripts.join(name);
        script(
            &path,
            &format!(
                r#"printf '%s|%s|%s\n' "$1" "$2" "$3" >> '{calls}'
store='{store}'
case "$1" in
  snapshot)
    [ -d "$3$2" ] || {{ echo "$3$2 does not exist" >&2; exit 3; }}
    mkdir -p "$store" && cp -a "$2/." "$store/" || exit 4
    mount --bind "$store" "$3$2" || exit 5
    mount -o remount,bind,ro "$3$2" || {{ umount "$3$2"; exit 6; }}
    echo "snaptest-copy: copied $2"
    echo "snaptest-copy: on stderr" >&2 ;;
  remove)
    umount "$3$2" && rm -rf "$store" ;;
  *) exit 2 ;;
esac"#,
                calls = s(&self.calls),
                store = s(&store),
            ),
        );
        set_mode(&path, 0o755);
        path
    }

    fn calls(&self) -> Vec<String> {
        lines(&self.calls)
    }

    /// `snapshot --config C --no-writers --scripts-dir S extra... -t T dirs...`.
    fn start(&self, extra: &[&str], dirs: &[&Path]) -> Running {
        let mut args = vec![
            "--config",
            s(&self.config),
            "--no-writers",
            "--json",
            "-v",
            "--scripts-dir",
            s(&self.scripts),
        ];
        args.extend_from_slice(extra);
        args.extend(["-t", s(&self.target)]);
        args.extend(dirs.iter().map(|d| s(d)));
        Running::start(&args, &self.runtime())
    }

    /// `snapshot plan --config C --scripts-dir S extra... DIR`.
    fn plan(&self, extra: &[&str], dir: &Path) -> Output {
        Command::new(bin("snapshot"))
            .arg("plan")
            .args([
                "--config",
                s(&self.config),
                "--scripts-dir",
                s(&self.scripts),
            ])
            .args(extra)
            .arg(dir)
            .output()
            .unwrap()
    }

    /// Nothing left: no mount under TARGET or the runtime directory, TARGET empty, no
    /// journal, no staging directory of a script.
    fn assert_nothing_left(&self) {
        assert_clean(&self.target);
        assert_no_journal(&self.runtime());
        let rt = self.runtime();
        assert_eq!(mounts_under(&rt), Vec::<PathBuf>::new(), "mounts left");
        let staging = find_named(&rt, "script-");
        assert!(staging.is_empty(), "staging left: {staging:?}");
    }
}

/// Paths under `dir` whose name starts with `prefix`.
fn find_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_named(&path, prefix));
        }
    }
    found
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tmpfs DIR (no provider before the scripts takes one), at a path with a space.
fn tmpfs_dir(set: &Setup, name: &str) -> TestMount {
    let dir = set.scratch.join(name);
    TestMount::new(&["-t", "tmpfs", "-o", "size=4m", "snaptest-scripts"], &dir).expect("tmpfs")
}

/// The original convention end to end: the script gets SOURCE and a private TARGET, where
/// "$TARGET$SOURCE" exists; the view shows its read-only copy; its output is in the log, not
/// on stdout; `remove` gets the same two arguments; nothing is left.
#[test]
fn original_convention_script_is_used_and_removed() {
    if !require_privileges("scripts original_convention_script_is_used_and_removed") {
        return;
    }
    let set = Setup::new("scripts-orig");
    set.copying_script("10-copy");
    let fs = tmpfs_dir(&set, "data dir");
    let dir = fs.target.clone();
    std::fs::write(dir.join("file"), "before").unwrap();

    let mut run = set.start(&[], &[&dir]);
    let ready = run.ready();
    let manifest: serde_json::Value =
        serde_json::from_str(&ready).unwrap_or_else(|e| panic!("not a manifest ({e}): {ready:?}"));
    assert!(!ready.contains("snaptest-copy"), "script output on stdout");
    let m = &manifest["mounts"][0];
    assert_eq!(m["provider"], "script", "{manifest}");
    assert_eq!(m["consistent"], true, "{manifest}");
    std::fs::write(dir.join("file"), "after").unwrap();
    let seen = in_view(&set.target, &dir);
    assert_eq!(
        std::fs::read_to_string(seen.join("file")).unwrap(),
        "before"
    );
    assert_read_only(&seen);
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Both streams of the script went to the log.
    assert!(
        stderr.contains(&format!(
            "provider script 10-copy: snaptest-copy: copied {}",
            dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("provider script 10-copy: snaptest-copy: on stderr"),
        "{stderr}"
    );

    let calls = set.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (snap, rm) = (&calls[0], &calls[1]);
    let prefix = format!("snapshot|{}|", dir.display());
    assert!(snap.starts_with(&prefix), "{calls:?}");
    let staging = &snap[prefix.len()..];
    assert!(
        Path::new(staging).starts_with(set.runtime().canonicalize().unwrap())
            && staging.contains("/script-"),
        "TARGET is a staging root under the runtime directory: {staging}"
    );
    assert_eq!(rm, &format!("remove|{}|{staging}", dir.display()));
    assert!(!Path::new(staging).exists(), "{staging} left behind");
    assert!(
        !set.scratch.join("store").exists(),
        "the script's copy left"
    );
    set.assert_nothing_left();
}

/// A script that hangs is killed at `--freeze-timeout` with its process group (its child
/// too), and the filesystem falls back to bind.
#[test]
fn hung_script_is_killed_and_the_filesystem_falls_back_to_bind() {
    if !require_privileges("scripts hung_script_is_killed_and_the_filesystem_falls_back_to_bind") {
        return;
    }
    let set = Setup::new("scripts-hang");
    let pidfile = set.scratch.join("child.pid");
    let hang = set.scripts.join("10-hang");
    script(
        &hang,
        &format!(
            r#"printf '%s|%s|%s\n' "$1" "$2" "$3" >> '{calls}'
case "$1" in
  snapshot) sleep 1000 & echo $! > '{pid}'; wait ;;
  *) exit 0 ;;
esac"#,
            calls = s(&set.calls),
            pid = s(&pidfile),
        ),
    );
    let fs = tmpfs_dir(&set, "data");
    let dir = fs.target.clone();

    let started = Instant::now();
    let mut run = set.start(&["--freeze-timeout", "2s"], &[&dir]);
    let ready = run.ready();
    let took = started.elapsed();
    let (status, stderr) = run.finish();
    let manifest: serde_json::Value =
        serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready:?} {stderr}"));
    assert_eq!(manifest["mounts"][0]["provider"], "bind", "{manifest}");
    assert_eq!(manifest["mounts"][0]["consistent"], false, "{manifest}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("10-hang: did not finish within 2s; its process group was killed"),
        "{stderr}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    assert!(
        stat.as_ref().map_or(true, |st| st
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))),
        "the script's child {pid} is still running: {stat:?}"
    );
    // It was asked to undo what it may have made, with the same arguments.
    let calls = set.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1], calls[0].replacen("snapshot|", "remove|", 1));
    set.assert_nothing_left();
}

/// `--providers script,btrfs` puts the script before btrfs: it takes a btrfs filesystem that
/// btrfs takes by default; `snapshot plan` shows the order in force (text and JSON), and the
/// configuration key does the same.
#[test]
fn providers_option_puts_the_script_before_btrfs() {
    if !require_privileges("scripts providers_option_puts_the_script_before_btrfs") {
        return;
    }
    let set = Setup::new("scripts-order");
    set.copying_script("10-copy");
    let fs = LoopFs::new("scripts-order", FsKind::Btrfs, 128, &set.scratch.join("m")).unwrap();
    let dir = fs.mount_point.clone();
    fs.write("file", "before").unwrap();

    let out = set.plan(&[], &dir);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(plan.contains("-> btrfs"), "{plan}");
    assert!(
        plan.contains("providers: zfs, btrfs, lvm-thin, lvm, freeze, script, bind"),
        "{plan}"
    );

    let out = set.plan(&["--providers", "script,btrfs"], &dir);
    let plan = text(&out.stdout);
    assert!(plan.contains("-> script"), "{plan}");
    assert!(plan.contains("providers: script, btrfs, bind"), "{plan}");
    let out = set.plan(&["--json", "--providers", "script,btrfs"], &dir);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["providers"],
        serde_json::json!(["script", "btrfs", "bind"])
    );
    assert_eq!(v["units"][0]["provider"], "script", "{v}");

    // Left out: declines, and says why.
    let out = set.plan(&["--providers", "zfs"], &dir);
    let plan = text(&out.stdout);
    assert!(plan.contains("-> bind"), "{plan}");
    assert!(
        plan.contains("btrfs declined: not in the providers setting (zfs,bind)"),
        "{plan}"
    );

    // The configuration key.
    std::fs::write(&set.config, "providers = [\"script\", \"btrfs\"]\n").unwrap();
    let plan = text(&set.plan(&[], &dir).stdout);
    assert!(plan.contains("-> script"), "{plan}");
    // The command line wins.
    let plan = text(&set.plan(&["--providers", "btrfs,script"], &dir).stdout);
    assert!(plan.contains("-> btrfs"), "{plan}");
    std::fs::write(&set.config, "").unwrap();

    let mut run = set.start(&["--providers", "script,btrfs"], &[&dir]);
    let ready = run.ready();
    fs.write("file", "after").unwrap();
    let seen = std::fs::read_to_string(in_view(&set.target, &dir).join("file"));
    let (status, stderr) = run.finish();
    let manifest: serde_json::Value =
        serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready:?} {stderr}"));
    assert_eq!(manifest["mounts"][0]["provider"], "script", "{manifest}");
    assert_eq!(seen.unwrap(), "before");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(set.calls().len(), 2, "{:?}", set.calls());
    set.assert_nothing_left();
}

/// An unknown provider name is a usage error naming it (64 on the command line, 78 in the
/// configuration file), as is bind listed before another provider. No root needed.
#[test]
fn unknown_provider_names_are_refused() {
    let t = tempfile::Builder::new()
        .prefix("snaptest-scripts-")
        .tempdir()
        .unwrap();
    let config = t.path().join("snapshot.toml");
    std::fs::write(&config, "").unwrap();
    let run = |args: &[&str]| {
        Command::new(bin("snapshot"))
            .arg("plan")
            .args(["--config", s(&config)])
            .args(args)
            .arg(t.path())
            .output()
            .unwrap()
    };
    let out = run(&["--providers", "script,btrfz"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown provider \"btrfz\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--providers", "bind,zfs"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("bind is the fallback"));
    let out = run(&["--providers", "zfs,zfs"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("\"zfs\" is listed twice"));

    std::fs::write(&config, "providers = [\"lvm\", \"snapper\"]\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("providers: unknown provider \"snapper\"") && err.contains("snapshot.toml"),
        "{err}"
    );
    // The default order, in the JSON plan.
    std::fs::write(&config, "").unwrap();
    let out = run(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["providers"],
        serde_json::json!(["zfs", "btrfs", "lvm-thin", "lvm", "freeze", "script", "bind"])
    );
}
