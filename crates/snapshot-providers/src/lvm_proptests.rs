//! Property tests of what the LVM providers read (issue 12): `lvs --reportformat json`
//! (names chosen by whoever made the VGs and LVs), and the `--lvm-size` text of the command
//! line and the configuration file.
//!
//! - Any text, and any JSON, as an `lvs` report: rows or an error, never a panic; and
//!   nothing derived from any row (device number, size, kind, pool fullness, validity, the
//!   `lvremove` gate) panics.
//! - Rows written as LVM writes them (every field a JSON string, sections in a `report`
//!   array, unknown fields and a `log` beside it) parse back to the same rows.
//! - The `lvremove` gate never lets through anything but the recorded, session-named
//!   snapshot of the recorded origin, whatever the rows say.
//! - `--lvm-size`: any text parses or fails without a panic, and what it parses to gives a
//!   snapshot size without overflow; percentages and sizes with units come back exactly.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

use snapshot_testkit::prop::config;

/// A field's text: often a number or a name of the sample's, otherwise any text.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => ".{0,10}",
        1 => "-?[0-9]{1,20}(\\.[0-9]{0,3})?",
        1 => prop::sample::select(&["", "-1", "lv1", "pool", "mvg", "100.00", "NaN", "inf"][..])
            .prop_map(str::to_owned),
        1 => "[-a-zA-Z]{10}",
    ]
}

fn lv_row() -> impl Strategy<Value = LvRow> {
    (
        (field(), field(), field(), field(), field(), field()),
        (field(), field(), field(), field(), field(), field()),
        (field(), field()),
    )
        .prop_map(|((a, b, c, d, e, f), (g, h, i, j, k, l), (m, n))| LvRow {
            lv_name: a,
            vg_name: b,
            lv_attr: c,
            lv_size: d,
            lv_kernel_major: e,
            lv_kernel_minor: f,
            pool_lv: g,
            origin: h,
            data_percent: i,
            metadata_percent: j,
            snap_percent: k,
            lv_dm_path: l,
            vg_free: m,
            vg_extent_size: n,
        })
}

fn lv_json(r: &LvRow) -> Value {
    json!({
        "lv_name": r.lv_name, "vg_name": r.vg_name, "lv_attr": r.lv_attr, "lv_size": r.lv_size,
        "lv_kernel_major": r.lv_kernel_major, "lv_kernel_minor": r.lv_kernel_minor,
        "pool_lv": r.pool_lv, "origin": r.origin, "data_percent": r.data_percent,
        "metadata_percent": r.metadata_percent, "snap_percent": r.snap_percent,
        "lv_dm_path": r.lv_dm_path, "vg_free": r.vg_free, "vg_extent_size": r.vg_extent_size,
    })
}

/// A report as LVM prints it: `{"report": [{"lv": [...]}, ...]}`, here with fields LVM may add
/// (and this tool does not ask for) and a `log` array beside the report, indented or not.
fn report(key: &str, sections: Vec<Vec<Value>>, extra: bool, pretty: bool) -> String {
    let sections: Vec<Value> = sections
        .into_iter()
        .map(|rows| {
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|mut r| {
                    if extra {
                        r["lv_uuid"] = "Xy3k-0000".into();
                    }
                    r
                })
                .collect();
            json!({ key: rows })
        })
        .collect();
    let mut v = json!({ "report": sections });
    if extra {
        v["log"] = json!([{"log_seq_num": "1", "log_type": "status", "log_message": ""}]);
    }
    if pretty {
        serde_json::to_string_pretty(&v).unwrap()
    } else {
        v.to_string()
    }
}

/// Any JSON value, for reports of the wrong shape.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        field().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(&["report", "lv", "vg", "lv_name", "vg_free", "x"][..])
                    .prop_map(str::to_owned),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Recorded snapshot data for the gate: names drawn from a few, so that rows and records
/// often agree in part.
fn snapshot_data() -> impl Strategy<Value = SnapshotData> {
    let name = prop::sample::select(
        &[
            "lv1",
            "lvm-snapshot-0a1b2c3d-0",
            "lvm-snapshot-0a1b2c3d-1",
            "lvm-snapshot-",
            "snapshot-0a1b2c3d-0",
            "",
        ][..],
    )
    .prop_map(str::to_owned);
    (
        prop::sample::select(&["mvg", "other", ""][..]).prop_map(str::to_owned),
        prop_oneof![name.clone(), field()],
        prop_oneof![name, field()],
        prop::option::of(prop::sample::select(&["pool", "lv1"][..]).prop_map(str::to_owned)),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(vg, name, origin, pool, size_bytes)| SnapshotData {
            vg,
            name,
            origin,
            fstype: "ext4".into(),
            size_bytes,
            pool,
            staging: "/run/snapshot/snapshot-0a1b2c3d/lvm-0".into(),
        })
}

/// Rows that look like the record's, with any one field changed.
fn rows_like(data: &SnapshotData) -> impl Strategy<Value = Vec<LvRow>> {
    let base = LvRow {
        lv_name: data.name.clone(),
        vg_name: data.vg.clone(),
        lv_attr: "swi-a-s---".into(),
        origin: data.origin.clone(),
        ..LvRow::default()
    };
    prop::collection::vec(
        prop_oneof![
            Just(base.clone()),
            lv_row(),
            (lv_row(), 0..4usize).prop_map(move |(r, which)| {
                let mut b = base.clone();
                match which {
                    0 => b.lv_name = r.lv_name,
                    1 => b.vg_name = r.vg_name,
                    2 => b.origin = r.origin,
                    _ => b.lv_attr = r.lv_attr,
                }
                b
            }),
        ],
        0..5,
    )
}

proptest! {
    #![proptest_config(config())]

    /// Any text as `lvs` output: rows or an error, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        ".{0,64}",
        "[\\[\\]{}\":, a-z0-9_]{0,64}",
    ]) {
        let _ = parse_lvs(&text);
    }

    /// Any JSON, of any shape, as a report: rows or an error, never a panic.
    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let text = v.to_string();
        let _ = parse_lvs(&text);
    }

    /// Rows written as LVM writes them parse back to the same rows, all sections in order.
    #[test]
    fn lvs_reports_round_trip(
        sections in prop::collection::vec(prop::collection::vec(lv_row(), 0..4), 0..3),
        extra in any::<bool>(),
        pretty in any::<bool>(),
    ) {
        let json = sections.iter().map(|s| s.iter().map(lv_json).collect()).collect();
        let text = report("lv", json, extra, pretty);
        let rows = parse_lvs(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(rows, sections.concat());
    }

    /// A row missing any of its fields reads them as empty (`lvs` leaves out none, but an
    /// older LVM may lack one).
    #[test]
    fn missing_fields_are_empty(row in lv_row(), keep in prop::collection::vec(any::<bool>(), 14)) {
        let mut v = lv_json(&row);
        let obj = v.as_object_mut().unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        let mut expected = lv_json(&LvRow::default());
        for (k, keep) in keys.iter().zip(keep) {
            if keep {
                expected[k.as_str()] = obj[k].clone();
            } else {
                obj.remove(k);
            }
        }
        let rows = parse_lvs(&report("lv", vec![vec![v]], false, false)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(lv_json(&rows[0]), expected);
    }

    /// Device numbers as `lvs` prints them (`-1` for an inactive LV) are read exactly, and
    /// only when both are numbers.
    #[test]
    fn device_numbers(major in prop_oneof![any::<u32>().prop_map(|n| n.to_string()), field()],
                      minor in prop_oneof![any::<u32>().prop_map(|n| n.to_string()), field()]) {
        let row = LvRow { lv_kernel_major: major.clone(), lv_kernel_minor: minor.clone(), ..LvRow::default() };
        let want = major.trim().parse::<u32>().ok().zip(minor.trim().parse::<u32>().ok());
        prop_assert_eq!(row.device_number(), want);
    }

    /// Nothing derived from any rows panics: accessors, pool fullness, the validity verdict.
    #[test]
    fn derived_facts_never_panic(rows in prop::collection::vec(lv_row(), 0..4), data in snapshot_data(), limit in any::<f64>()) {
        for r in &rows {
            let _ = (r.kind(), r.is_thin(), r.size_bytes(), r.device_number(), r.describe());
            let _ = (percent(&r.data_percent), pool_too_full(r, limit), pool_too_full(r, THIN_POOL_FULL));
            let _ = removable(&data, r);
        }
        let _ = validity(&data, &rows);
    }

    /// The `lvremove` gate: whatever the rows say, it lets through only the record's own LV —
    /// session-named, in the recorded VG, a snapshot of the recorded origin and not the origin
    /// — and names exactly that LV.
    #[test]
    fn the_lvremove_gate_lets_through_only_the_recorded_snapshot(
        (data, rows) in snapshot_data().prop_flat_map(|d| { let r = rows_like(&d); (Just(d), r) }),
    ) {
        for row in &rows {
            if let Ok(target) = removable(&data, row) {
                prop_assert!(is_session_lv_name(&row.lv_name));
                prop_assert_eq!(&row.lv_name, &data.name);
                prop_assert_eq!(&row.vg_name, &data.vg);
                prop_assert!(!row.origin.is_empty());
                prop_assert_eq!(&row.origin, &data.origin);
                prop_assert_ne!(&row.lv_name, &data.origin);
                let name = format!("{}/{}", data.vg, data.name);
                prop_assert_eq!(lvremove_args(&target), ["-f", name.as_str()]);
            }
        }
    }

    /// Any `--lvm-size` text: a size or an error, never a panic; and a size it accepts gives
    /// a snapshot size for any origin and extent (as `lvs`/`vgs` report them) without a panic,
    /// at least the size asked (unless it saturates) and a whole number of extents.
    #[test]
    fn lvm_size_of_anything(
        text in prop_oneof![
            ".{0,16}",
            "[0-9.]{1,24}[kKmMgGtTpPeEbBsSiI%ORIGNorign ]{0,8}",
            "[0-9]{1,4}(\\.[0-9]{1,3})?[eEpP]",
            "[0-9]{1,3}(\\.[0-9]{1,2})?%(ORIGIN|origin)",
            "1[0-9]{19}b",
        ],
        origin in prop_oneof![any::<u64>(), 0u64..1 << 45, u64::MAX - (1 << 30)..=u64::MAX],
        extent in prop_oneof![any::<u64>(), Just(4u64 << 20), 0u64..1 << 30],
    ) {
        if let Ok(size) = text.parse::<LvmSize>() {
            let _ = size.to_string();
            let bytes = size.snapshot_bytes(origin, extent);
            // Whole extents (at least one), or saturated: more than any VG has.
            let extent = extent.max(1);
            let saturated = bytes == u64::MAX;
            prop_assert!(saturated || (bytes % extent == 0 && bytes >= extent), "{}", bytes);
            // Never less than asked: a size that wrapped around would pass the free-space
            // check and make a snapshot too small to last the backup.
            let wanted = match size {
                LvmSize::Bytes(b) => {
                    prop_assert!(b > 0);
                    b
                }
                LvmSize::PercentOfOrigin(p) => {
                    prop_assert!(p > 0.0 && p <= 100.0);
                    (origin as f64 * p / 100.0).ceil() as u64
                }
            };
            prop_assert!(bytes >= wanted, "{} < {}", bytes, wanted);
        }
    }

    /// `NN%ORIGIN` as it shows (`Display`) parses back to the same percentage.
    #[test]
    fn percentages_round_trip(p in (1u32..=1_000_000).prop_map(|n| f64::from(n) / 10_000.0), lower in any::<bool>()) {
        let size = LvmSize::PercentOfOrigin(p);
        let text = if lower { size.to_string().to_lowercase() } else { size.to_string() };
        prop_assert_eq!(text.parse::<LvmSize>(), Ok(size));
    }

    /// A whole number with any of `lvcreate -L`'s units (any case, `B`/`iB` or not) is that
    /// many units.
    #[test]
    fn sizes_with_units_are_exact(
        n in 1u64..1 << 20,
        (unit, shift) in prop::sample::select(&[("", 20), ("k", 10), ("m", 20), ("g", 30), ("t", 40), ("b", 0)][..]),
        upper in any::<bool>(),
        suffix in prop::sample::select(&["", "b", "ib"][..]),
        space in any::<bool>(),
    ) {
        let suffix = if unit.is_empty() || unit == "b" { "" } else { suffix };
        let mut text = format!("{n}{}{unit}{suffix}", if space { " " } else { "" });
        if upper {
            text = text.to_uppercase();
        }
        prop_assert_eq!(text.parse::<LvmSize>(), Ok(LvmSize::Bytes(n << shift)), "{}", text);
    }
}

/// Found by `lvm_size_of_anything`: a size within one extent of 2^64 (`--lvm-size
/// 18446744073709549568b`, or `100%ORIGIN` of a 16 EiB LV) overflowed when rounded up to
/// whole extents: a panic in a debug build, and in a release build a size of 0 that passed
/// the free-space check (and failed in `lvcreate`, inside the frozen window).
#[test]
fn snapshot_bytes_saturate_instead_of_wrapping() {
    let huge: LvmSize = "18446744073709549568b".parse().unwrap();
    assert_eq!(huge.snapshot_bytes(1 << 30, 4 << 20), u64::MAX);
    assert_eq!(
        LvmSize::PercentOfOrigin(100.0).snapshot_bytes(u64::MAX, 4 << 20),
        u64::MAX
    );
    assert_eq!(
        "11000000000000000000b"
            .parse::<LvmSize>()
            .unwrap()
            .snapshot_bytes(0, 1 << 63),
        u64::MAX
    );
}
