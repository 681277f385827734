//! Property tests of the script provider's record (issue 12): the journal holds the script,
//! source and staging paths of a unit (any user's names), and `remove` reads them back.
//!
//! - A record with paths of any bytes reads back equal.
//! - Any JSON as a record: a record or an error, never a panic.

use super::*;
use proptest::prelude::*;

use snapshot_testkit::prop::config;

fn path() -> impl Strategy<Value = PathBuf> {
    prop::collection::vec(
        prop_oneof![3 => 1u8..=255, 1 => prop::sample::select(&b"/. \n\\\x80\xff"[..])],
        0..20,
    )
    .prop_map(|b| PathBuf::from(OsString::from_vec(b)))
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(&["script", "source", "staging", "x"][..])
                    .prop_map(str::to_owned),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// A record with any paths, written as JSON text (as the journal holds it), reads back
    /// equal.
    #[test]
    fn records_round_trip(script in prop::option::of(path()), source in path(), staging in path()) {
        let d = ScriptData { script, source, staging };
        let c = Created::new("script", "1", "snapshot-1-0", true, &d).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        let back: Created = serde_json::from_str(&text).unwrap();
        let back: ScriptData = back.data().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, d);
    }

    /// Any JSON as a record: a record or an error, never a panic; what it accepts writes
    /// back to a record that reads the same.
    #[test]
    fn any_json_as_a_record(v in any_json()) {
        let c = Created { provider: "script".into(), unit: "1".into(), name: "snapshot-1-0".into(), consistent: true, data: v };
        if let Ok(d) = c.data::<ScriptData>() {
            let again = Created::new("script", "1", "snapshot-1-0", true, &d).unwrap();
            prop_assert_eq!(again.data::<ScriptData>().ok(), Some(d));
        }
    }
}
