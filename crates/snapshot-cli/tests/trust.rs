//! The trust rule through the real binary (loop tier: root): what runs or is read as root —
//! writer hooks, provider scripts, the freeze provider's device command, the configuration
//! file — must be owned by root and writable only by root, in directories that are too
//! (`snapshot_core::trust`). Each attack sits beside its positive control: the same set-up
//! without the attack works. A refused hook or script would leave a marker file if it ran:
//! the marker must be absent, and present in the control.

mod common;

use common::*;
use snapshot_testkit::set_mode;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: u32 = 65534;

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
}

/// A session's set-up: an ext4 loop filesystem (the DIR), a TARGET, an empty configuration
/// file (so that the machine's own cannot change what the test sees) and a marker path.
struct Setup {
    // Fields drop in order: the filesystem before the scratch directory holding it.
    _fs: LoopFs,
    scratch: Scratch,
    m: PathBuf,
    target: PathBuf,
    config: PathBuf,
    marker: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let scratch = Scratch::new(name).unwrap();
        let m = scratch.join("m");
        let fs = LoopFs::new(name, FsKind::Ext4, 32, &m).unwrap();
        let target = scratch.join("T");
        std::fs::create_dir(&target).unwrap();
        let config = scratch.join("snapshot.toml");
        std::fs::write(&config, "").unwrap();
        Self {
            marker: scratch.join("marker"),
            scratch,
            m,
            target,
            config,
            _fs: fs,
        }
    }

    /// A directory with `mode`.
    fn dir(&self, name: &str, mode: u32) -> PathBuf {
        let d = self.scratch.join(name);
        std::fs::create_dir(&d).unwrap();
        set_mode(&d, mode);
        d
    }

    /// A hook that leaves the marker (its arguments) when it runs.
    fn marker_hook(&self, path: &Path) {
        script(path, &format!("echo \"$*\" >> {}\nexit 0", s(&self.marker)));
    }

    fn ran(&self) -> bool {
        self.marker.exists()
    }

    fn forget_marker(&self) {
        let _ = std::fs::remove_file(&self.marker);
    }

    /// `snapshot --config C extra... -t T m`; returns the ready line, the status and stderr.
    fn session(&self, extra: &[&str]) -> (String, Option<i32>, String) {
        let mut args = vec!["--config", s(&self.config)];
        args.extend_from_slice(extra);
        args.extend(["-t", s(&self.target), s(&self.m)]);
        let mut run = Running::start(&args, &self.scratch.join("run"));
        let ready = run.ready();
        let (status, stderr) = run.finish();
        assert_clean(&self.target);
        assert_no_journal(&self.scratch.join("run"));
        (ready, status.code(), stderr)
    }

    /// A session with the writers of `wd`, optionally strict.
    fn with_writers(&self, wd: &Path, strict: bool) -> (String, Option<i32>, String) {
        let mut extra = vec!["--writers-dir", s(wd)];
        if strict {
            extra.push("--strict-writers");
        }
        self.session(&extra)
    }
}

/// `snapshot plan --config C extra... DIR`.
fn plan(config: &Path, extra: &[&str], dir: &Path) -> Output {
    Command::new(bin("snapshot"))
        .arg("plan")
        .args(["--config", s(config)])
        .args(extra)
        .arg(dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the writers of `wd` (holding the marker hook at `hook`) with and without
/// `--strict-writers`: refused (`attack`), the hook never runs, a warning names `hook` and
/// `reason`, and strict ends the session with 79 before anything is frozen; trusted, it runs.
fn check_hook(set: &Setup, wd: &Path, hook: &Path, reason: &str, attack: bool) {
    for strict in [false, true] {
        set.forget_marker();
        let (ready, code, stderr) = set.with_writers(wd, strict);
        if !attack {
            assert_eq!(
                ready, "done\n",
                "positive control (strict: {strict}): {stderr}"
            );
            assert_eq!(code, Some(0), "{stderr}");
            assert!(set.ran(), "the trusted hook did not run");
            assert!(!stderr.contains("not trusted"), "{stderr}");
            continue;
        }
        let said = format!("writer {}: not trusted: {reason}", hook.display());
        assert!(stderr.contains(&said), "wanted {said:?} in {stderr}");
        assert!(!set.ran(), "the refused hook ran");
        if strict {
            assert_eq!(ready, "", "strict: no view");
            assert_eq!(code, Some(79), "{stderr}");
        } else {
            assert_eq!(ready, "done\n", "a refused hook is a warning: {stderr}");
            assert_eq!(code, Some(0), "{stderr}");
        }
    }
}

/// A hook anyone can write: refused. Control: the same hook, 0755.
#[test]
fn world_writable_hook_is_not_run() {
    if !require_privileges("trust world_writable_hook_is_not_run") {
        return;
    }
    let set = Setup::new("trust-mode");
    let wd = set.dir("writers.d", 0o755);
    let hook = wd.join("10-marker");
    set.marker_hook(&hook);
    set_mode(&hook, 0o777);
    let reason = format!(
        "{} is writable by group and others (mode 0777)",
        hook.display()
    );
    check_hook(&set, &wd, &hook, &reason, true);
    set_mode(&hook, 0o755);
    check_hook(&set, &wd, &hook, &reason, false);
}

/// A hook owned by another user (who could rewrite it): refused. Control: owned by root.
#[test]
fn hook_owned_by_another_user_is_not_run() {
    if !require_privileges("trust hook_owned_by_another_user_is_not_run") {
        return;
    }
    let set = Setup::new("trust-owner");
    let wd = set.dir("writers.d", 0o755);
    let hook = wd.join("10-marker");
    set.marker_hook(&hook);
    chown(&hook, USER);
    let reason = format!("{} is owned by uid {USER}, not by root", hook.display());
    check_hook(&set, &wd, &hook, &reason, true);
    chown(&hook, 0);
    check_hook(&set, &wd, &hook, &reason, false);
}

/// A root-owned 0755 hook in a directory its group can write (a member could put another file
/// in its place): refused. Control: the directory 0755.
#[test]
fn hook_in_a_group_writable_directory_is_not_run() {
    if !require_privileges("trust hook_in_a_group_writable_directory_is_not_run") {
        return;
    }
    let set = Setup::new("trust-dir");
    let wd = set.dir("writers.d", 0o755);
    let hook = wd.join("10-marker");
    set.marker_hook(&hook);
    set_mode(&wd, 0o775);
    let reason = format!("{} is writable by group (mode 0775)", wd.display());
    check_hook(&set, &wd, &hook, &reason, true);
    set_mode(&wd, 0o755);
    check_hook(&set, &wd, &hook, &reason, false);
}

/// A hook that is a symlink (in a trusted directory) to a file another user owns: refused,
/// naming the target. Control: the target owned by root.
#[test]
fn hook_symlinked_to_an_untrusted_file_is_not_run() {
    if !require_privileges("trust hook_symlinked_to_an_untrusted_file_is_not_run") {
        return;
    }
    let set = Setup::new("trust-link");
    let wd = set.dir("writers.d", 0o755);
    let elsewhere = set.dir("elsewhere", 0o755);
    let real = elsewhere.join("marker-hook");
    set.marker_hook(&real);
    let hook = wd.join("10-marker");
    std::os::unix::fs::symlink(&real, &hook).unwrap();
    chown(&real, USER);
    let reason = format!("{} is owned by uid {USER}, not by root", real.display());
    check_hook(&set, &wd, &hook, &reason, true);
    chown(&real, 0);
    check_hook(&set, &wd, &hook, &reason, false);
}

/// A provider script anyone can write: the script provider declines, `snapshot plan` shows
/// why, and a session never runs the script (the filesystem gets the bind fallback).
/// Control: the script 0755 is offered the filesystem (it leaves the marker and passes).
/// Likewise a scripts directory its group can write.
#[test]
fn provider_script_failing_the_rule_declines() {
    if !require_privileges("trust provider_script_failing_the_rule_declines") {
        return;
    }
    let set = Setup::new("trust-script");
    // A tmpfs DIR: no provider before the scripts takes it, whatever the machine.
    let dir = set.scratch.join("tmpfs");
    let _tmpfs =
        snapshot_testkit::TestMount::new(&["-t", "tmpfs", "-o", "size=1m", "snaptest-trust"], &dir)
            .expect("tmpfs");
    let sd = set.dir("filesystems.d", 0o755);
    let sc = sd.join("10-marker");
    script(&sc, &format!("echo \"$*\" >> {}\nexit 1", s(&set.marker)));
    let scripts = ["--scripts-dir", s(&sd)];
    let session = |set: &Setup| {
        let mut run = Running::start(
            &[
                "--config",
                s(&set.config),
                "--no-writers",
                "--scripts-dir",
                s(&sd),
                "-t",
                s(&set.target),
                s(&dir),
            ],
            &set.scratch.join("run"),
        );
        let ready = run.ready();
        let (status, stderr) = run.finish();
        assert_eq!(ready, "done\n", "{stderr}");
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert_clean(&set.target);
        stderr
    };
    let attacks = [
        (
            &sc,
            0o777,
            format!(
                "script declined: provider script {}: not trusted: {} is writable by group and \
                 others (mode 0777)",
                sc.display(),
                sc.display()
            ),
        ),
        (
            &sd,
            0o775,
            format!(
                "script declined: scripts directory {}: not trusted: {} is writable by group \
                 (mode 0775)",
                sd.display(),
                sd.display()
            ),
        ),
    ];
    for (path, mode, said) in &attacks {
        set_mode(path, *mode);
        let out = plan(&set.config, &scripts, &dir);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains(said), "wanted {said:?} in {stdout}");
        assert!(stdout.contains("-> bind"), "{stdout}");
        set.forget_marker();
        session(&set);
        assert!(!set.ran(), "the refused script ran");
        set_mode(path, 0o755);
    }
    // Positive control.
    let out = plan(&set.config, &scripts, &dir);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("-> script"), "{stdout}");
    assert!(!stdout.contains("not trusted"), "{stdout}");
    set.forget_marker();
    let stderr = session(&set);
    let calls = lines(&set.marker);
    assert_eq!(calls.len(), 1, "{calls:?} {stderr}");
    assert!(
        calls[0].starts_with(&format!("snapshot {} ", s(&dir))),
        "{calls:?}"
    );
}

/// A device-snapshot command anyone can write: the freeze provider declines with the reason
/// (`snapshot plan` shows it), and a session never runs it. Control: 0755, freeze takes it.
#[test]
fn freeze_command_failing_the_rule_declines() {
    if !require_privileges("trust freeze_command_failing_the_rule_declines") {
        return;
    }
    let scratch = Scratch::new("trust-fzcmd").unwrap();
    // Backing file on ext4: no reflink, so only the command could copy it.
    let plain = LoopFs::new("trust-fz-plain", FsKind::Ext4, 64, &scratch.join("plain")).unwrap();
    let fs = LoopFs::new_in(
        &plain.mount_point,
        "trust-fz",
        FsKind::Ext4,
        32,
        &scratch.join("m"),
    )
    .unwrap();
    let config = scratch.join("snapshot.toml");
    std::fs::write(&config, "").unwrap();
    let marker = scratch.join("marker");
    let cmd = scratch.join("freeze-cmd");
    script(&cmd, &format!("echo \"$*\" >> {}\nexit 1", s(&marker)));
    set_mode(&cmd, 0o757);
    let extra = ["--freeze-command", s(&cmd)];
    let out = plan(&config, &extra, &fs.mount_point);
    let stdout = text(&out.stdout);
    let said = format!(
        "--freeze-command {}: not trusted: {} is writable by others (mode 0757)",
        cmd.display(),
        cmd.display()
    );
    assert!(
        stdout.contains("freeze declined: ") && stdout.contains(&said),
        "wanted {said:?} in {stdout}"
    );
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let mut run = Running::start(
        &[
            "--config",
            s(&config),
            "--no-writers",
            "--freeze-command",
            s(&cmd),
            "--scripts-dir",
            s(&scratch.join("no-scripts")),
            "-t",
            s(&target),
            s(&fs.mount_point),
        ],
        &scratch.join("run"),
    );
    assert_eq!(run.ready(), "done\n");
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!marker.exists(), "the refused command ran");
    assert_clean(&target);
    // Positive control.
    set_mode(&cmd, 0o755);
    let stdout = text(&plan(&config, &extra, &fs.mount_point).stdout);
    assert!(stdout.contains("-> freeze"), "{stdout}");
    assert!(!stdout.contains("not trusted"), "{stdout}");
}

/// A configuration file anyone can write (or owned by another user, or in a directory its
/// group can write): exit 78 naming the file, before anything runs — `plan` and a session.
/// Control: the same file, root's and 0644, is applied.
#[test]
fn configuration_failing_the_rule_exits_78() {
    if !require_privileges("trust configuration_failing_the_rule_exits_78") {
        return;
    }
    let set = Setup::new("trust-config");
    let wd = set.dir("writers.d", 0o755);
    set.marker_hook(&wd.join("10-marker"));
    let cd = set.dir("etc", 0o755);
    let config = cd.join("snapshot.toml");
    // The file names the writers: whoever writes it picks what runs as root.
    std::fs::write(&config, format!("writers_dirs = [\"{}\"]\n", s(&wd))).unwrap();
    let run = |config: &Path| {
        let mut run = Running::start(
            &["--config", s(config), "-t", s(&set.target), s(&set.m)],
            &set.scratch.join("run"),
        );
        let ready = run.ready();
        let (status, stderr) = run.finish();
        (ready, status.code(), stderr)
    };
    // (attack, the reason it is refused with, undo)
    type Change<'a> = &'a dyn Fn();
    let attacks: [(Change, String, Change); 3] = [
        (
            &|| set_mode(&config, 0o666),
            format!(
                "{} is writable by group and others (mode 0666)",
                config.display()
            ),
            &|| set_mode(&config, 0o644),
        ),
        (
            &|| chown(&config, USER),
            format!("{} is owned by uid {USER}, not by root", config.display()),
            &|| chown(&config, 0),
        ),
        (
            &|| set_mode(&cd, 0o775),
            format!("{} is writable by group (mode 0775)", cd.display()),
            &|| set_mode(&cd, 0o755),
        ),
    ];
    for (attack, reason, undo) in &attacks {
        attack();
        let said = format!("configuration {}: not trusted: {reason}", config.display());
        let out = plan(&config, &[], &set.m);
        assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&said), "{}", text(&out.stderr));
        set.forget_marker();
        let (ready, code, stderr) = run(&config);
        assert_eq!((ready.as_str(), code), ("", Some(78)), "{stderr}");
        assert!(stderr.contains(&said), "wanted {said:?} in {stderr}");
        assert!(!set.ran(), "a writer ran despite the refused configuration");
        assert_clean(&set.target);
        undo();
    }
    // Positive control: applied, so its writer runs.
    let out = plan(&config, &[], &set.m);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    set.forget_marker();
    let (ready, code, stderr) = run(&config);
    assert_eq!((ready.as_str(), code), ("done\n", Some(0)), "{stderr}");
    assert!(set.ran(), "the configuration's writer did not run");
    assert_clean(&set.target);
}
