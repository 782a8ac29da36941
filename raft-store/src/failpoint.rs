//! Crash points for the chaos tests. Built only with the `failpoints` feature; then the `fail`
//! crate's `FAILPOINTS` environment variable (read by `evlog serve` at start) arms them, e.g.
//! `FAILPOINTS='store::before-commit=2%return'`. An armed point with the action `return` aborts
//! the process on the spot: a crash at that instant. The kernel keeps what the store wrote, as
//! it would after a real process crash; `return(power-loss)` also takes back every write since
//! the store's last sync, as a power cut would. Other `fail` actions (`sleep(ms)`, `pause`,
//! `panic`) work too.
//!
//! | point | where |
//! |---|---|
//! | `store::before-commit` | every write batch, before it commits (nothing of it written) |
//! | `store::before-fsync` | after a batch's writes became readable, before their fsync: the crash loses what was written since the last fsync |
//! | `store::after-commit` | after the commit, before anyone is told (durable, unacknowledged) |
//! | `store::vote` | a batch saving a vote, before its commit |
//! | `store::apply` | a batch applying entries, before its commit |
//! | `store::snapshot-install` | a batch installing a snapshot, before its commit |
//! | `store::snapshot-build` | building a snapshot (its view taken, not yet returned) |
//! | `store::apply-divergent-event` | applying an event: with `return`, this replica stores the event with other data (a divergent replica, for `evlog verify`'s test; not a crash) |
//! | `store::sync` | in the testing crash backend, at every `sync_data` (the commit's writes issued, not synced): `return(power-loss)` loses them with everything since the last sync |

/// Aborts the process here when the point is armed with `return`; with `return(power-loss)`,
/// first loses every write since the store's last sync (the node's failpoints build runs its
/// store on [`crate::testing::CrashBackend`]): a power cut rather than a process crash, which
/// leaves the kernel's page cache alone. Without the feature, nothing.
#[inline]
pub fn crash_point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    if let Some(action) = fail::eval(name, |argument| argument) {
        if action.as_deref() == Some(POWER_LOSS) {
            crate::testing::lose_power_and_abort(&format!("failpoint {name}"));
        }
        eprintln!("failpoint {name}: aborting the process (simulated crash)");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether the point is armed with `return`: for faults that are not crashes (a divergent
/// replica). Without the feature, never.
#[inline]
pub fn armed(name: &'static str) -> bool {
    #[cfg(feature = "failpoints")]
    return fail::eval(name, |_| ()).is_some();
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// The argument of a failpoint's `return` that makes it a power cut: `return(power-loss)`.
pub const POWER_LOSS: &str = "power-loss";
