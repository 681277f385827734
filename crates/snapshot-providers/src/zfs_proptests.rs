//! Property tests of what the ZFS provider reads (issue 12): `zfs list -Hp`, `zpool list
//! -Hp` and `zfs holds -H` output (names chosen by whoever made the pools and datasets), and
//! the journal's record of a unit, which decides what `zfs destroy` is given.
//!
//! - Any text as any of these outputs: rows or an error, never a panic.
//! - Rows written as `-H` writes them (tab-separated fields, one line each) parse back to the
//!   same rows, typed ones included.
//! - `zfs destroy` is only ever given a recorded dataset's snapshot with the session's name,
//!   whatever the record and the listing say.

use super::*;
use proptest::prelude::*;

use snapshot_testkit::prop::config;

/// A ZFS name component: the characters `zfs_namecheck` allows (space included).
fn component() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-][A-Za-z0-9_.: -]{0,7}"
}

/// A dataset name: a pool (starting with a letter), then components.
fn dataset() -> impl Strategy<Value = String> {
    (
        "[A-Za-z][A-Za-z0-9_.:-]{0,7}",
        prop::collection::vec(component(), 0..3),
    )
        .prop_map(|(pool, rest)| {
            std::iter::once(pool)
                .chain(rest)
                .collect::<Vec<_>>()
                .join("/")
        })
}

/// A session object name (`snapshot-<8 hex>-<index>`).
fn object_name() -> impl Strategy<Value = String> {
    "snapshot-[0-9a-f]{8}-[0-9]{1,3}"
}

/// One `-H` field: anything but the separators (tab, newline); a carriage return neither,
/// as `lines()` would take it for a line end.
fn field() -> impl Strategy<Value = String> {
    "[^\t\n\r]{0,10}"
}

/// `-H` output of `rows`, with `\n` or `\r\n` line ends and a final newline or not.
fn render(rows: &[Vec<String>], crlf: bool, final_newline: bool) -> String {
    let end = if crlf { "\r\n" } else { "\n" };
    let mut text = rows
        .iter()
        .map(|r| r.join("\t"))
        .collect::<Vec<_>>()
        .join(end);
    if final_newline && !rows.is_empty() {
        text.push_str(end);
    }
    text
}

fn listing_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        "[a-z/@\t\n 0-9-]{0,64}",
        prop::collection::vec(prop::collection::vec(field(), 0..5), 0..5)
            .prop_map(|rows| render(&rows, false, true)),
    ]
}

/// A record as the journal may hold it: datasets and names from the generators, or close to
/// them, or anything.
fn snapshot_data() -> impl Strategy<Value = (Created, SnapshotData)> {
    let ds = prop_oneof![
        4 => dataset(),
        1 => "[a-z@#/ \t]{0,8}",
    ];
    (
        prop_oneof![4 => object_name(), 1 => ".{0,12}"],
        prop_oneof![4 => object_name(), 1 => ".{0,12}"],
        prop_oneof![3 => "[A-Za-z][A-Za-z0-9]{0,3}", 1 => ".{0,4}"],
        prop::collection::vec(ds, 0..4),
    )
        .prop_map(|(entry, name, pool, datasets)| {
            let d = SnapshotData {
                pool,
                datasets,
                name,
                staging: "/run/snapshot/x/zfs-0".into(),
            };
            let c = Created {
                provider: "zfs".into(),
                unit: format!("pool:{}", d.pool),
                name: entry,
                consistent: true,
                data: serde_json::to_value(&d).unwrap(),
            };
            (c, d)
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any text as any listing: rows or an error, never a panic.
    #[test]
    fn arbitrary_listings_never_panic(text in listing_text(), tag in field()) {
        let rows = parse_rows(&text);
        prop_assert!(rows.iter().all(|r| !r.is_empty()));
        let _ = parse_dataset_rows(&text);
        let _ = parse_pool_rows(&text);
        let _ = parse_userrefs(&text);
        let _ = parse_holds(&text, &tag);
    }

    /// Rows of any fields, written as `-H` writes them, come back field for field (rows
    /// whose fields are all blank are no rows).
    #[test]
    fn rows_round_trip(
        rows in prop::collection::vec(
            prop::collection::vec(field(), 1..5)
                .prop_filter("a row with something in it", |r| r.iter().any(|f| !f.trim().is_empty())),
            0..6,
        ),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        prop_assert_eq!(parse_rows(&render(&rows, crlf, final_newline)), rows);
    }

    /// `zfs list -Hp -o name,type` round-trips.
    #[test]
    fn dataset_rows_round_trip(
        rows in prop::collection::vec(
            (dataset(), prop::sample::select(&["filesystem", "volume", "snapshot", "bookmark"][..])),
            0..6,
        ),
        crlf in any::<bool>(),
    ) {
        let want: Vec<DatasetRow> = rows
            .iter()
            .map(|(name, kind)| DatasetRow { name: name.clone(), kind: (*kind).into() })
            .collect();
        let text = render(
            &want.iter().map(|r| vec![r.name.clone(), r.kind.clone()]).collect::<Vec<_>>(),
            crlf,
            true,
        );
        prop_assert_eq!(parse_dataset_rows(&text), Ok(want));
    }

    /// `zpool list -Hp -o name,health,readonly` round-trips.
    #[test]
    fn pool_rows_round_trip(
        rows in prop::collection::vec(
            (
                "[A-Za-z][A-Za-z0-9_.:-]{0,7}",
                prop::sample::select(&["ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "SUSPENDED"][..]),
                any::<bool>(),
            ),
            0..6,
        ),
    ) {
        let want: Vec<PoolRow> = rows
            .iter()
            .map(|(name, health, readonly)| PoolRow {
                name: name.clone(),
                health: (*health).into(),
                readonly: *readonly,
            })
            .collect();
        let text = render(
            &want
                .iter()
                .map(|r| vec![r.name.clone(), r.health.clone(), (if r.readonly { "on" } else { "off" }).into()])
                .collect::<Vec<_>>(),
            false,
            true,
        );
        prop_assert_eq!(parse_pool_rows(&text), Ok(want));
    }

    /// `zfs list -Hp -t snapshot -o name,userrefs` round-trips.
    #[test]
    fn userrefs_round_trip(
        rows in prop::collection::vec((dataset(), object_name(), any::<u64>()), 0..6),
    ) {
        let want: Vec<(String, u64)> =
            rows.iter().map(|(d, n, refs)| (format!("{d}@{n}"), *refs)).collect();
        let text = render(
            &want.iter().map(|(s, r)| vec![s.clone(), r.to_string()]).collect::<Vec<_>>(),
            false,
            true,
        );
        prop_assert_eq!(parse_userrefs(&text), want);
    }

    /// `zfs holds -H` (`NAME TAG TIMESTAMP`): exactly the snapshots that carry the tag.
    #[test]
    fn holds_round_trip(
        rows in prop::collection::vec(
            (dataset(), object_name(), prop_oneof![object_name(), "[a-z_.-]{1,8}"], "[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]{2} [0-9:]{8} [0-9]{4}"),
            0..6,
        ),
        tag in object_name(),
        tagged in prop::collection::vec(any::<bool>(), 6),
    ) {
        let rows: Vec<(String, String, String)> = rows
            .into_iter()
            .zip(tagged)
            .map(|((d, n, other, time), t)| (format!("{d}@{n}"), if t { tag.clone() } else { other }, time))
            .collect();
        let want: Vec<String> =
            rows.iter().filter(|(_, t, _)| *t == tag).map(|(s, ..)| s.clone()).collect();
        let text = render(
            &rows.iter().map(|(s, t, time)| vec![s.clone(), t.clone(), time.clone()]).collect::<Vec<_>>(),
            false,
            true,
        );
        prop_assert_eq!(parse_holds(&text, &tag), want);
    }

    /// The record gate and the `zfs destroy` gate together: a record `from_created` accepts
    /// names only snapshots `destroy_target` lets through; and `destroy_target` lets through
    /// only `DATASET@NAME` for a recorded, valid dataset and the record's session name,
    /// whatever text a listing puts in front of it.
    #[test]
    fn zfs_destroy_gets_only_the_sessions_snapshots(
        (created, data) in snapshot_data(),
        listed in prop::collection::vec(
            prop_oneof![
                3 => (dataset(), object_name()).prop_map(|(d, n)| format!("{d}@{n}")),
                1 => ".{0,16}",
                1 => "[a-z/@ #-]{0,16}",
            ],
            0..6,
        ),
    ) {
        if let Ok(d) = SnapshotData::from_created(&created) {
            prop_assert_eq!(&d, &data);
            for s in d.snapshots() {
                prop_assert!(destroy_target(&d, &s).is_ok(), "{} refused", s);
            }
        }
        let candidates = listed.into_iter().chain(data.snapshots()).chain(
            data.datasets.iter().cloned(), // datasets themselves: never
        );
        for s in candidates {
            if let Ok(t) = destroy_target(&data, &s) {
                prop_assert_eq!(t.name(), s.as_str());
                let (ds, name) = s.split_once('@').unwrap();
                prop_assert_eq!(name, data.name.as_str());
                prop_assert!(is_session_object_name(name));
                prop_assert!(data.datasets.iter().any(|d| d == ds));
                prop_assert!(valid_dataset_name(ds));
            }
        }
    }
}
