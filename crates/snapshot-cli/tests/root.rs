//! `/` as a DIR (docs/DESIGN.md §2.4), on this machine's real root filesystem, with a btrfs
//! loop filesystem mounted below it as a second DIR (loop tier: root). The host's root is not
//! a filesystem any provider here snapshots, so `/` takes the bind fallback; the guests of the
//! VM tier (tests/wholesystem.rs) boot with their root on LVM and on btrfs. Nothing here
//! writes to the host's root outside the test's scratch directory.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `snapshot plan /` works (TARGET, wherever it is, lies inside `/`) and says which provider
/// takes `/` and why the others declined.
#[test]
fn plan_of_the_root_explains_the_decision() {
    if !require_privileges("plan_of_the_root_explains_the_decision") {
        return;
    }
    let (code, out, err) = run_bin("snapshot", &["plan", "/"]);
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("/ "), "{out}");
    assert!(out.contains("    DIR /"), "{out}");
    assert!(out.contains("declined"), "the others' reasons: {out}");
    let (code, out, err) = run_bin("snapshot", &["plan", "--json", "/"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["mounts"][0]["mount"]["mount_point"], "/", "{out}");
}

/// `/` and a btrfs filesystem below it, TARGET inside `/`: the view of `/` is TARGET itself,
/// the btrfs snapshot sits at TARGET + its mount point, TARGET shows itself as the empty
/// directory it was, a change after ready is not in the btrfs snapshot, and teardown leaves
/// nothing. Negative control: TARGET may not be a DIR.
#[test]
fn root_as_a_dir_is_the_view_itself() {
    if !require_privileges("root_as_a_dir_is_the_view_itself") {
        return;
    }
    let scratch = Scratch::new("root-view").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("root-view", FsKind::Btrfs, 128, &m).unwrap();
    fs.write("f", "v1\n").unwrap();
    std::fs::write(scratch.join("plain"), "on the root\n").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let mut run = Running::start(
        &["--no-writers", "--json", "-t", s(&target), "/", s(&m)],
        &rt,
    );
    let ready = run.ready();
    let manifest: serde_json::Value = serde_json::from_str(&ready).expect(&ready);
    let mounts = manifest["mounts"].as_array().unwrap();
    assert_eq!(mounts[0]["mount_point"], "/");
    assert_eq!(mounts[0]["path"], s(&target), "/ is TARGET itself");
    assert_eq!(mounts[1]["path"], s(&in_view(&target, &m)));
    assert_eq!(mounts[1]["provider"], "btrfs");
    assert_eq!(mounts[1]["consistent"], true);
    fs.write("f", "v2\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &m).join("f")).unwrap(),
        "v1\n",
        "the btrfs snapshot shows the instant"
    );
    assert_eq!(
        std::fs::read_to_string(in_view(&target, &scratch.join("plain"))).unwrap(),
        "on the root\n"
    );
    let inner = in_view(&target, &target);
    assert!(
        std::fs::read_dir(&inner).unwrap().next().is_none(),
        "TARGET inside the view of / is the empty directory it was"
    );
    assert_read_only(&target);
    assert_read_only(&in_view(&target, &m));
    let (status, stderr) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_clean(&target);
    assert_no_journal(&rt);

    let (code, _, err) = run_bin(
        "snapshot",
        &["--no-writers", "-t", s(&target), s(&target), s(&m)],
    );
    assert_eq!(code, 64, "TARGET as a DIR: {err}");
    assert!(err.contains("it is DIR"), "{err}");
    assert_clean(&target);
    drop(fs);
}

/// `snapshot run --in-place / M` (M a btrfs filesystem): the command's root is the view —
/// the root read-only, M its snapshot (a change the test makes live while the command waits
/// is not seen, also through the command's working directory, re-entered) — with the live
/// `/proc`, `/dev` and `/tmp`, and the `--writable` directory live and writable (what the
/// command writes there is on the host afterwards). The caller's namespace keeps its live
/// root. A `--writable` path that does not exist is a usage error naming it.
#[test]
fn run_in_place_root_pivots_into_the_view() {
    if !require_privileges("run_in_place_root_pivots_into_the_view") {
        return;
    }
    let scratch = Scratch::new("root-run").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("root-run", FsKind::Btrfs, 128, &m).unwrap();
    fs.write("f", "v1\n").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let state = rt.join("state");
    let repo = scratch.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let out = repo.join("out");
    let handshake = Handshake::in_dir(&repo);
    let cmd = handshake.script(&format!(
        "{{ cat f; cat {m}/f; \
           if [ -w /etc ]; then echo root-writable; else echo root-read-only; fi; \
           if [ -e /proc/self/status ]; then echo proc; fi; \
           if [ -c /dev/null ]; then echo dev; fi; \
           t=$(mktemp) && rm \"$t\" && echo tmp; \
           echo from-the-command > {repo}/written && echo repo-writable; \
           awk '$5 == \"/\" {{ print $6 }}' /proc/self/mountinfo; \
         }} > {out} 2>&1",
        out = s(&out),
        m = s(&m),
        repo = s(&repo),
    ));
    let base = [
        "--runtime-dir",
        s(&rt),
        "--state-dir",
        s(&state),
        "--no-writers",
        "-t",
        s(&target),
    ];
    let mut child = Command::new(bin("snapshot"))
        .args(["run", "--in-place", "-v", "--writable", s(&repo)])
        .args(base)
        .args(["/", s(&m), "--", "sh", "-c", &cmd])
        .current_dir(&m)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    handshake.wait_ready(&mut child);
    fs.write("f", "v2\n").unwrap();
    let stderr = handshake.go_and_finish(&mut child);
    let seen = lines(&out);
    assert_eq!(
        seen[..7],
        [
            "v1",
            "v1",
            "root-read-only",
            "proc",
            "dev",
            "tmp",
            "repo-writable"
        ],
        "{stderr}"
    );
    // The root mount in the command's namespace is the view of /, not the live root.
    assert!(
        seen[7].split(',').any(|o| o == "ro"),
        "the command's root: {seen:?}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("written")).unwrap(),
        "from-the-command\n"
    );
    assert!(stderr.contains("in place: / is the view"), "{stderr}");
    assert_clean(&target);
    assert_no_journal(&rt);

    let missing = scratch.join("missing");
    let (code, _, err) = run_bin(
        "snapshot",
        &[
            "run",
            "--in-place",
            "--writable",
            s(&missing),
            "--no-writers",
            "-t",
            s(&target),
            "/",
            "--",
            "true",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(&format!("--writable {}", s(&missing))),
        "{err}"
    );
    assert_clean(&target);
    drop(fs);
}

/// The view of `/` becomes the command's root only if TARGET still shows it when the command
/// starts: a user who owns the directories above TARGET renames TARGET's parent (TARGET, a
/// mount point, cannot be renamed itself) and puts a directory of their own at TARGET's path
/// while the session waits at ready. The command must not start
/// (in the user's directory or anywhere else), the session must tear down what it made and
/// leave nothing. Positive control: the same stop without the swap runs the command.
#[test]
fn in_place_root_refuses_a_target_swapped_before_the_command() {
    if !require_privileges("in_place_root_refuses_a_target_swapped_before_the_command") {
        return;
    }
    for attack in [false, true] {
        let scratch = Scratch::new("root-swap").unwrap();
        snapshot_testkit::set_mode(scratch.path(), 0o755);
        let home = scratch.join("home");
        let sub = home.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        for d in [&home, &sub] {
            std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
        }
        let target = sub.join("T");
        std::fs::create_dir(&target).unwrap();
        let rt = scratch.join("run");
        let ran = scratch.join("ran");
        let mut child = Command::new(bin("snapshot"))
            .args(["run", "--in-place", "--fault-injection", "--no-writers"])
            .args(["--runtime-dir", s(&rt), "--state-dir", s(&rt.join("state"))])
            .args(["-t", s(&target), "/", "--", "touch", s(&ran)])
            .env("SNAPSHOT_FAULT", "after-ready:stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        wait_stopped(&mut child, Duration::from_secs(60));
        let swapped = !attack || {
            // A tree of the user's own, with every place the session binds a live path on.
            let swap = format!(
                "mv {d} {d}.moved && mkdir -p {t} && cd {t} && mkdir proc sys dev run tmp",
                d = s(&sub),
                t = s(&target)
            );
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                    &swap,
                ])
                .status()
                .unwrap()
                .success()
        };
        rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(60));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(swapped, "the user's swap failed");
        if !attack {
            assert_eq!(status.code(), Some(0), "positive control: {stderr}");
            assert!(ran.exists(), "positive control: the command ran");
            assert_clean(&target);
            assert_no_journal(&rt);
            continue;
        }
        assert_ne!(status.code(), Some(0), "{stderr}");
        assert!(!ran.exists(), "the command ran: {stderr}");
        assert!(
            stderr.contains("cannot run") && stderr.contains("TARGET or a DIR changed"),
            "{stderr}"
        );
        assert_eq!(
            mounts_under(scratch.path()),
            Vec::<std::path::PathBuf>::new()
        );
        assert_clean(&home.join("sub.moved/T"));
        assert_no_journal(&rt);
    }
}

/// A session over `/` and a btrfs filesystem killed (SIGKILL) once ready leaves `/`'s view
/// stacked on the view's tmpfs at TARGET: `snapshot cleanup` recognises the stack as the
/// dead session's, unmounts all of it and removes the btrfs snapshot; TARGET is empty after.
#[test]
fn a_killed_session_over_the_root_is_cleaned_up() {
    if !require_privileges("a_killed_session_over_the_root_is_cleaned_up") {
        return;
    }
    let scratch = Scratch::new("root-kill").unwrap();
    let m = scratch.join("m");
    let fs = LoopFs::new("root-kill", FsKind::Btrfs, 128, &m).unwrap();
    fs.write("f", "v1\n").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let state = rt.join("state");
    let mut killed = Running::start_env(
        &[
            "--no-writers",
            "--fault-injection",
            "-t",
            s(&target),
            "/",
            s(&m),
        ],
        &rt,
        &[("SNAPSHOT_FAULT", "after-ready:kill")],
    );
    assert_eq!(killed.ready(), "done\n");
    let (status, _) = killed.wait();
    assert_eq!(status.code(), None, "killed by the fault");
    assert!(
        mounts_under(&target).len() >= 3,
        "the dead session's view is there"
    );
    let (code, out, err) = run_bin("snapshot", &["cleanup", "--state-dir", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_clean(&target);
    assert_no_journal(&rt);
    let subvolumes = snapshot_testkit::run("btrfs", &["subvolume", "list", s(&m)]).unwrap();
    assert!(!subvolumes.contains("snapshot-"), "{subvolumes}");
    drop(fs);
}

/// A `--writable` repository on a filesystem of its own that is no DIR's (under `/`, outside
/// the live `/tmp`): the view of `/` shows its mount point empty, so the whole live filesystem
/// is bound there, writable, and what the command writes lands on it.
#[test]
fn a_writable_path_on_a_filesystem_no_dir_covers() {
    if !require_privileges("a_writable_path_on_a_filesystem_no_dir_covers") {
        return;
    }
    let scratch = Scratch::new("root-wfs").unwrap();
    let target = scratch.join("T");
    std::fs::create_dir(&target).unwrap();
    let rt = scratch.join("run");
    let fs_dir = std::path::PathBuf::from(format!("/var/tmp/snaptest-wfs-{}", std::process::id()));
    let fs = snapshot_testkit::TestMount::new(&["-t", "tmpfs", "snaptest-wfs"], &fs_dir).unwrap();
    let repo = fs_dir.join("restic");
    std::fs::create_dir(&repo).unwrap();
    let cmd = format!("echo from-the-command > {}/written", s(&repo));
    let (code, _, err) = run_bin(
        "snapshot",
        &[
            "run",
            "--in-place",
            "-v",
            "--writable",
            s(&repo),
            "--no-writers",
            "--runtime-dir",
            s(&rt),
            "--state-dir",
            &format!("{}/state", s(&rt)),
            "-t",
            s(&target),
            "/",
            "--",
            "sh",
            "-c",
            &cmd,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the filesystem holding it, is bound live"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("written")).unwrap(),
        "from-the-command\n"
    );
    assert_clean(&target);
    drop(fs);
    let _ = std::fs::remove_dir(&fs_dir);
}
