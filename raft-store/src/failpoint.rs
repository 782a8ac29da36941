//! Crash points for the chaos tests. Built only with the `failpoints` feature; then the `fail`
//! crate's `FAILPOINTS` environment variable (read by `evlog serve` at start) arms them, e.g.
//! `FAILPOINTS='store::before-commit=2%return'`. An armed point with the action `return` aborts
//! the process on the spot: a crash at that instant, with whatever the store wrote since its
//! last fsync lost. Other `fail` actions (`sleep(ms)`, `pause`, `panic`) work too.
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

/// Aborts the process here when the point is armed with `return`. Without the feature, nothing.
#[inline]
pub fn crash_point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("failpoint {name}: aborting the process (simulated crash)");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
