//! Finds the `evlog` binary the tests start.
//!
//! Cargo builds integration-test executables into `target/<profile>/deps/`, and binaries into
//! `target/<profile>/`; the binary is not rebuilt by `cargo test`/`cargo nextest` for another
//! package's tests, so it has to be built first (`scripts/test.sh` does).

use std::path::PathBuf;

/// The environment variable that overrides where the `evlog` binary is.
pub const EVLOG_BIN: &str = "EVLOG_BIN";

/// The path of the `evlog` binary: `$EVLOG_BIN` when set, else `target/<profile>/evlog` next to
/// the running test executable.
///
/// # Panics
///
/// When the binary does not exist, with a message saying how to build it.
pub fn evlog_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(EVLOG_BIN) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{EVLOG_BIN}={} does not name a file; unset it to use target/<profile>/evlog",
            path.display()
        );
        return path;
    }
    let test_executable =
        std::env::current_exe().expect("the running test executable should have a path");
    let executable_dir = test_executable
        .parent()
        .expect("the test executable should live in a directory");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/
    let profile_dir = if executable_dir.ends_with("deps") {
        executable_dir
            .parent()
            .expect("the deps directory should have a parent")
    } else {
        executable_dir
    };
    let binary = profile_dir.join(format!("evlog{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the evlog binary is missing at {}: build it first with `cargo build --bin evlog` \
         (scripts/test.sh does), or point {EVLOG_BIN} at one",
        binary.display()
    );
    binary
}

/// A text only a failpoint-enabled `evlog` binary contains: a log line inside
/// `#[cfg(feature = "failpoints")]` (`node/src/app.rs`). A failpoint's name is a weaker
/// marker: an unoptimized build without the feature can still hold the names it passes to the
/// no-op `crash_point`.
const FAILPOINT_MARKER: &[u8] = b"failpoints build: the store runs on the testing crash backend";

/// Whether the `evlog` binary at `path` was built with its failpoints (the `failpoints` cargo
/// feature): see [`FAILPOINT_MARKER`].
///
/// # Errors
///
/// When the binary cannot be read.
pub fn failpoints_compiled_in(path: &std::path::Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .windows(FAILPOINT_MARKER.len())
        .any(|window| window == FAILPOINT_MARKER))
}

/// Panics unless the `evlog` binary the tests start has failpoints (a test that sets
/// `FAILPOINTS` would otherwise pass without its fault).
pub fn require_failpoints() {
    let binary = evlog_binary();
    assert!(
        failpoints_compiled_in(&binary).expect("the binary is readable"),
        "{} has no failpoints: build it with `scripts/test.sh` (--features evlog/failpoints)",
        binary.display()
    );
}
