//! Property tests of the configuration file (issue 12): `/etc/snapshot/snapshot.toml` is read
//! by a root tool, and its durations and sizes are text.
//!
//! - Any text, and any TOML of any shape with the real keys and others, loads or fails with
//!   a message naming the file, never a panic; and what it loads applies or fails the same
//!   way.
//! - A valid configuration, written as TOML (by `toml` or by hand), loads to exactly its
//!   values, and applies them to the session options where the command line left defaults.
//! - `--freeze-timeout` / `freeze_timeout`: any text parses or fails without a panic; a
//!   duration written with any unit is read exactly.

use super::*;
use clap::{CommandFactory, FromArgMatches, Parser};
use proptest::prelude::*;
use std::time::Duration;

use snapshot_testkit::prop::cases;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    session: SessionArgs,
}

/// Loads `text` as the configuration file, as `snapshot` does.
fn load(text: &str) -> (tempfile::TempDir, PathBuf, Result<Config, ConfigError>) {
    let dir = tempfile::Builder::new()
        .prefix("snaptest-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("snapshot.toml");
    std::fs::write(&path, text).unwrap();
    let r = Config::load(Some(&path)).map(|(cfg, p)| {
        assert_eq!(p.as_deref(), Some(path.as_path()));
        cfg
    });
    (dir, path, r)
}

/// Session options from a command line of just `DIR`, then `cfg` applied.
fn applied(cfg: &Config, path: &Path) -> Result<SessionArgs, ConfigError> {
    let matches = Cli::command().get_matches_from(["snapshot", "/d"]);
    let mut cli = Cli::from_arg_matches(&matches).unwrap();
    cfg.apply(&mut cli.session, &matches, path)?;
    Ok(cli.session)
}

const KEYS: [&str; 10] = [
    "target",
    "require_snapshot",
    "writers_dirs",
    "no_writers",
    "strict_writers",
    "freeze_timeout",
    "scripts_dir",
    "lvm_size",
    "freeze_command",
    "providers",
];

/// A TOML value of any type, often a plausible one.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value;
    let leaf = prop_oneof![
        ".{0,12}".prop_map(Value::String),
        "[0-9.]{1,6}(ms|s|m|[kKmMgG]|%ORIGIN)?".prop_map(Value::String),
        "[0-9]{1,2}[eE]-?[0-9]{2,3}(ms|s|m|[kKmMgGeE]|%ORIGIN)?".prop_map(Value::String),
        "/[a-z/ ]{0,10}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A table with real keys (and sometimes others) of any value types.
fn toml_table() -> impl Strategy<Value = toml::Table> {
    prop::collection::btree_map(
        prop_oneof![
            4 => prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
            1 => "[a-z_]{1,12}",
        ],
        toml_value(),
        0..6,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// Text of a path as TOML can hold it: any characters but NUL.
fn path_text() -> impl Strategy<Value = String> {
    prop_oneof!["/[^\u{0}]{0,16}", "/[a-z0-9/._-]{0,16}"]
}

/// A duration as the tool writes it in examples: a number and maybe a unit.
fn duration_text() -> impl Strategy<Value = (String, Duration)> {
    (
        1u64..100_000,
        prop::sample::select(&["", "s", "ms", "m"][..]),
        any::<bool>(),
    )
        .prop_map(|(n, unit, space)| {
            let d = match unit {
                "ms" => Duration::from_millis(n),
                "m" => Duration::from_secs(n * 60),
                _ => Duration::from_secs(n),
            };
            let sep = if space && !unit.is_empty() { " " } else { "" };
            (format!("{n}{sep}{unit}"), d)
        })
}

/// A valid configuration: each key present or not, with a valid value.
#[derive(Debug, Clone)]
struct Valid {
    target: Option<String>,
    require_snapshot: Option<bool>,
    writers_dirs: Option<Vec<String>>,
    no_writers: Option<bool>,
    strict_writers: Option<bool>,
    freeze_timeout: Option<(String, Duration)>,
    scripts_dir: Option<String>,
    lvm_size: Option<(String, snapshot_providers::lvm::LvmSize)>,
    freeze_command: Option<String>,
}

fn lvm_size_text() -> impl Strategy<Value = (String, snapshot_providers::lvm::LvmSize)> {
    use snapshot_providers::lvm::LvmSize;
    prop_oneof![
        (1u32..=100).prop_map(|p| (format!("{p}%ORIGIN"), LvmSize::PercentOfOrigin(p.into()))),
        (
            1u64..4096,
            prop::sample::select(&[("M", 20), ("G", 30), ("k", 10)][..])
        )
            .prop_map(|(n, (u, s))| (format!("{n}{u}"), LvmSize::Bytes(n << s))),
    ]
}

fn valid() -> impl Strategy<Value = Valid> {
    use prop::option::of;
    (
        (
            of(path_text()),
            of(any::<bool>()),
            of(prop::collection::vec(path_text(), 0..3)),
        ),
        (of(any::<bool>()), of(any::<bool>()), of(duration_text())),
        (of(path_text()), of(lvm_size_text()), of(path_text())),
    )
        .prop_map(
            |(
                (target, require_snapshot, writers_dirs),
                (no_writers, strict_writers, freeze_timeout),
                (scripts_dir, lvm_size, freeze_command),
            )| Valid {
                target,
                require_snapshot,
                writers_dirs,
                no_writers,
                strict_writers,
                freeze_timeout,
                scripts_dir,
                lvm_size,
                freeze_command,
            },
        )
}

/// `v` as TOML: through the `toml` crate, or by hand with literal strings where they can
/// hold the text (no `'`, no control characters), in either case with comments and blank
/// lines about.
fn render(v: &Valid, by_hand: bool) -> String {
    use toml::Value;
    let mut t = toml::Table::new();
    let s = |x: &str| Value::String(x.to_owned());
    if let Some(x) = &v.target {
        t.insert("target".into(), s(x));
    }
    if let Some(x) = v.require_snapshot {
        t.insert("require_snapshot".into(), Value::Boolean(x));
    }
    if let Some(x) = &v.writers_dirs {
        t.insert(
            "writers_dirs".into(),
            Value::Array(x.iter().map(|d| s(d)).collect()),
        );
    }
    if let Some(x) = v.no_writers {
        t.insert("no_writers".into(), Value::Boolean(x));
    }
    if let Some(x) = v.strict_writers {
        t.insert("strict_writers".into(), Value::Boolean(x));
    }
    if let Some((x, _)) = &v.freeze_timeout {
        t.insert("freeze_timeout".into(), s(x));
    }
    if let Some(x) = &v.scripts_dir {
        t.insert("scripts_dir".into(), s(x));
    }
    if let Some((x, _)) = &v.lvm_size {
        t.insert("lvm_size".into(), s(x));
    }
    if let Some(x) = &v.freeze_command {
        t.insert("freeze_command".into(), s(x));
    }
    if !by_hand {
        return format!("# snapshot.toml\n\n{}", toml::to_string(&t).unwrap());
    }
    let literal = |x: &str| {
        if x.contains('\'') || x.chars().any(char::is_control) {
            Value::String(x.to_owned()).to_string()
        } else {
            format!("'{x}'")
        }
    };
    let mut out = String::from("# written by hand\n");
    for (k, val) in &t {
        let text = match val {
            Value::String(x) => literal(x),
            Value::Array(a) => format!(
                "[ {} ]",
                a.iter()
                    .map(|d| literal(d.as_str().unwrap()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        };
        out.push_str(&format!("{k} = {text}   # {k}\n\n"));
    }
    out
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any text as a duration: a duration or an error, never a panic; and a duration it
    /// accepts is more than nothing.
    #[test]
    fn parse_duration_of_anything(text in prop_oneof![
        ".{0,12}",
        "[-+0-9.eE]{1,12}(ms|s|m)?",
        "[0-9]{1,3}[eE][0-9]{2,3}(ms|s|m)?",
    ]) {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(d > Duration::ZERO, "{:?} for {:?}", d, text);
        }
    }

    /// A whole number with any unit is read exactly.
    #[test]
    fn durations_round_trip((text, d) in duration_text()) {
        // With a space before the unit the number is trimmed: still exact.
        prop_assert_eq!(parse_duration(&text), Ok(d));
    }
}

proptest! {
    // Each case writes a file (and the trust check walks its directories): fewer cases.
    #![proptest_config(cases(128))]

    /// Any text as the configuration file: loaded or refused with its path named, never a
    /// panic.
    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        ".{0,64}",
        "([a-z_]{1,14} ?= ?[\"'\\[\\]{}0-9a-z/.,= ]{0,16}\n){0,4}",
    ]) {
        let (_dir, path, r) = load(&text);
        match r {
            Ok(cfg) => { let _ = applied(&cfg, &path); }
            Err(e) => prop_assert!(e.to_string().contains(&format!("{path:?}")), "{}", e),
        }
    }

    /// TOML of any shape, with the real keys and others: loaded or refused (an unknown key
    /// or a wrong type named), never a panic; what loads applies or is refused, never a
    /// panic either.
    #[test]
    fn any_toml_never_panics(t in toml_table()) {
        let text = toml::to_string(&t).unwrap_or_default();
        let (_dir, path, r) = load(&text);
        match r {
            Ok(cfg) => {
                prop_assert!(t.keys().all(|k| KEYS.contains(&k.as_str())), "unknown key accepted: {:?}", t);
                if let Err(e) = applied(&cfg, &path) {
                    prop_assert!(e.to_string().contains(&format!("{path:?}")), "{}", e);
                }
            }
            Err(e) => prop_assert!(e.to_string().contains(&format!("{path:?}")), "{}", e),
        }
    }

    /// A valid configuration loads to exactly its values, and applies them over the
    /// defaults of a command line that names only a DIR.
    #[test]
    fn valid_configs_round_trip(v in valid(), by_hand in any::<bool>()) {
        let text = render(&v, by_hand);
        let (_dir, path, r) = load(&text);
        let cfg = r.map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let p = |x: &Option<String>| x.as_ref().map(PathBuf::from);
        prop_assert_eq!(&cfg.target, &p(&v.target));
        prop_assert_eq!(cfg.require_snapshot, v.require_snapshot);
        prop_assert_eq!(
            &cfg.writers_dirs,
            &v.writers_dirs.as_ref().map(|d| d.iter().map(PathBuf::from).collect::<Vec<_>>())
        );
        prop_assert_eq!(cfg.no_writers, v.no_writers);
        prop_assert_eq!(cfg.strict_writers, v.strict_writers);
        prop_assert_eq!(&cfg.freeze_timeout, &v.freeze_timeout.as_ref().map(|(t, _)| t.clone()));
        prop_assert_eq!(&cfg.scripts_dir, &p(&v.scripts_dir));
        prop_assert_eq!(&cfg.lvm_size, &v.lvm_size.as_ref().map(|(t, _)| t.clone()));
        prop_assert_eq!(&cfg.freeze_command, &p(&v.freeze_command));

        let args = applied(&cfg, &path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let defaults = applied(&Config::default(), &path).unwrap();
        prop_assert_eq!(args.target, p(&v.target).unwrap_or(defaults.target));
        prop_assert_eq!(args.require_snapshot, v.require_snapshot.unwrap_or(false));
        prop_assert_eq!(
            args.writers_dirs,
            v.writers_dirs.as_ref().map(|d| d.iter().map(PathBuf::from).collect::<Vec<_>>()).unwrap_or_default()
        );
        prop_assert_eq!(args.no_writers, v.no_writers.unwrap_or(false));
        prop_assert_eq!(args.strict_writers, v.strict_writers.unwrap_or(false));
        prop_assert_eq!(args.freeze_timeout, v.freeze_timeout.map_or(defaults.freeze_timeout, |(_, d)| d));
        prop_assert_eq!(args.scripts_dir, p(&v.scripts_dir));
        prop_assert_eq!(args.lvm_size, v.lvm_size.map_or(defaults.lvm_size, |(_, s)| s));
        prop_assert_eq!(args.freeze_command, p(&v.freeze_command));
    }
}

/// Found by `parse_duration_of_anything`: a duration too long for `Duration` (`1E20`, or
/// `freeze_timeout = "1e20"` in the file) panicked ("cannot convert float seconds to
/// Duration"); one too short for a nanosecond (`1e-10`) was accepted as zero.
#[test]
fn parse_duration_regressions() {
    for text in ["1E20", "1e20m", "1e300", "1e-10", "1e-7ms"] {
        assert!(parse_duration(text).is_err(), "{text}");
    }
    assert_eq!(parse_duration("1e-9"), Ok(Duration::from_nanos(1)));
    let (_dir, path, cfg) = load("freeze_timeout = \"1e20\"\n");
    let e = applied(&cfg.unwrap(), &path).unwrap_err().to_string();
    assert!(
        e.contains("freeze_timeout") && e.contains("too long"),
        "{e}"
    );
}
