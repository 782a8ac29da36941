//! Test support, built only with the `testing` feature (the node's `failpoints` build turns it
//! on): a storage backend that can lose power.
//!
//! SIGKILL leaves the kernel's page cache alone, so a store that never fsynced survives it as
//! well as one that did: a crash test built on killing processes cannot tell them apart.
//! [`CrashBackend`] can: it remembers what every page held at the last `sync_data`, and
//! [`PowerSwitch::lose_power`] puts those bytes back, so everything written since the last
//! sync is gone, as after a power cut.

mod crash_backend;

pub use crash_backend::CrashBackend;
pub use crash_backend::CrashJournal;
pub use crash_backend::PowerSwitch;

use std::sync::OnceLock;

/// The environment variable a failpoints build of the node reads at start: its store's disk
/// is full once the database file has grown by this many bytes (see
/// [`PowerSwitch::set_free_space`]). For tests that cannot mount a small filesystem.
pub const DISK_FREE_BYTES_ENV: &str = "EVLOG_TEST_DISK_FREE_BYTES";

/// The power switch of this process's store, when it runs on a [`CrashBackend`] (the node's
/// failpoints build); a crash point armed with `return(power-loss)` and the node's SIGUSR1
/// handler use it.
static PROCESS_SWITCH: OnceLock<PowerSwitch> = OnceLock::new();

/// Makes `switch` the one [`lose_power_and_abort`] uses. Only the first call counts: a
/// process has one store.
pub fn install_process_switch(switch: PowerSwitch) {
    if PROCESS_SWITCH.set(switch).is_err() {
        tracing::warn!("a power switch was installed already; keeping the first");
    }
}

/// Cuts the power of this process's store at its next sync (every write of the commit being
/// made durable is lost with the rest since the last sync), or after `within` if no sync
/// comes, then aborts the process. The node's SIGUSR1 handler (failpoints builds).
pub fn lose_power_at_next_sync_and_abort(why: &str, within: std::time::Duration) {
    match PROCESS_SWITCH.get() {
        Some(switch) => switch.lose_power_at_next_sync_and_abort(why, within),
        None => {
            eprintln!("{why}: power loss asked for, but the store has no power switch; aborting");
            std::process::abort()
        }
    }
}

/// Loses every write since the last sync (when the process's store runs on a
/// [`CrashBackend`]), then aborts the process: a power cut at this instant.
pub fn lose_power_and_abort(why: &str) -> ! {
    match PROCESS_SWITCH.get() {
        Some(switch) => {
            let lost = switch.lose_power();
            eprintln!(
                "{why}: power loss: {} unsynced pages ({} bytes) lost, store cut back to its \
                 last sync; aborting the process",
                lost.pages, lost.bytes
            );
        }
        None => eprintln!("{why}: power loss asked for, but the store has no power switch"),
    }
    std::process::abort()
}
