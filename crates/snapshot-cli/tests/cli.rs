//! Command-line errors and exit statuses (no root needed: validation comes first).

mod common;
use assert_cmd::Command;
use common::*;
use predicates::str::contains;

fn snapshot() -> Command {
    Command::new(bin("snapshot"))
}

/// Every bad input exits 64 with a message naming it, and creates nothing.
#[test]
fn bad_inputs_exit_64_naming_the_argument() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    let target = t.path().join("T");
    let full = t.path().join("full");
    let file = t.path().join("file");
    std::fs::create_dir_all(d.join("inner")).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "").unwrap();
    std::fs::write(&file, "").unwrap();
    let rt = t.path().join("run");
    let dd = format!("{}/../d", d.display());
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["-t".into(), s(&target).into(), "relative/dir".into()],
            "relative/dir".into(),
        ),
        (vec!["-t".into(), s(&target).into(), dd.clone()], dd.clone()),
        (
            vec![
                "-t".into(),
                s(&target).into(),
                format!("{}/missing", d.display()),
            ],
            "missing".into(),
        ),
        (
            vec!["-t".into(), s(&target).into(), s(&file).into()],
            s(&file).into(),
        ),
        (
            vec!["-t".into(), s(&full).into(), s(&d).into()],
            s(&full).into(),
        ),
        (
            vec![
                "-t".into(),
                format!("{}/nope", t.path().display()),
                s(&d).into(),
            ],
            "nope".into(),
        ),
        // TARGET may lie inside a DIR, but may not be one.
        (
            vec![
                "-t".into(),
                s(&d.join("inner")).into(),
                s(&d.join("inner")).into(),
            ],
            "it is DIR".into(),
        ),
        (vec!["-t".into(), s(&target).into()], "DIR".into()),
        (
            vec!["--freeze-timeout".into(), "soon".into(), s(&d).into()],
            "soon".into(),
        ),
        (vec!["--bogus".into(), s(&d).into()], "--bogus".into()),
    ];
    for (args, named) in cases {
        snapshot()
            .args(&args)
            .arg("--runtime-dir")
            .arg(&rt)
            .assert()
            .code(64)
            .stdout("")
            .stderr(contains(named.as_str()));
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "{args:?} created something"
        );
        assert!(!rt.exists(), "{args:?} created the runtime dir");
    }
}

#[test]
fn help_documents_exit_statuses() {
    snapshot()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(contains("Exit status"))
        .stdout(contains("75"));
    Command::new(bin("start-snapshot"))
        .arg("--help")
        .assert()
        .code(0);
    Command::new(bin("stop-snapshot"))
        .arg("--help")
        .assert()
        .code(0);
}

/// Not root: 77, after validation, before anything is created.
#[test]
fn not_root_exits_77() {
    if !require_privileges("not_root_exits_77") {
        return;
    }
    let t = Scratch::new("noroot").unwrap();
    let (d, target) = (t.join("d"), t.join("T"));
    std::fs::create_dir(&d).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::process::Command::new("chmod")
        .args(["755", s(t.path())])
        .status()
        .unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("snapshot"))
        .args([
            "--no-writers",
            "--runtime-dir",
            s(&t.join("run")),
            "-t",
            s(&target),
            s(&d),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
}

/// `snapshot plan` has no side effects and says which provider takes what.
#[test]
fn plan_names_provider_and_consistency() {
    let t = tempfile::tempdir().unwrap();
    let out = snapshot()
        .args(["plan", "--json", s(t.path())])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["mounts"][0]["dirs"][0],
        s(&t.path().canonicalize().unwrap())
    );
    assert!(v["units"][0]["provider"].is_string());
    snapshot()
        .args(["plan", "relative"])
        .assert()
        .code(64)
        .stderr(contains("relative"));
}
