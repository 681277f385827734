//! The property tests' shared settings (`proptest`): failures are turned into plain
//! regression tests beside the property instead of files written into the tree.

use proptest::test_runner::Config;

/// Proptest's defaults (256 cases), without failure files.
pub fn config() -> Config {
    cases(Config::default().cases)
}

/// [`config`] with `n` cases: properties that create files and fsync run fewer.
pub fn cases(n: u32) -> Config {
    Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    }
}
