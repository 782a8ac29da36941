//! The faults a chaos run can inject, by name.

/// One kind of fault. How each is carried out is in [`super::injector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL the leader, restart it after a while.
    KillLeader,
    /// SIGKILL a follower, restart it after a while.
    KillFollower,
    /// SIGSTOP the leader for 0.5-5 s, then SIGCONT.
    PauseLeader,
    /// Blackhole (or drop) every link to and from the leader.
    IsolateLeader,
    /// Blackhole (or drop) every link to and from a follower.
    IsolateFollower,
    /// Blackhole one directed link, between the leader and a follower.
    OneWay,
    /// Cut A-C both ways, keeping A-B and B-C: B bridges.
    Bridge,
    /// Isolate random nodes and heal them again, every few hundred milliseconds.
    Flapping,
    /// Delay every link, or one node's links, by 50-200 ms with jitter.
    SlowLinks,
    /// Reset connections at random on every link.
    LossyLinks,
    /// Cut a node's power after a write batch's commit, before its fsync: it loses every write
    /// since its last sync (the testing crash backend), not only what a process crash loses.
    CrashUnsynced,
    /// Crash a node after a commit is durable, before it is acknowledged.
    CrashAfterCommit,
    /// Crash a node while it saves a vote (an election is forced).
    CrashVote,
    /// Crash a node while it applies entries.
    CrashApply,
    /// Crash a node while it installs a snapshot (it is made to need one).
    CrashSnapshotInstall,
    /// Crash a node while it builds a snapshot.
    CrashSnapshotBuild,
    /// Wipe a node's data; a fresh node joins under a new id in its place.
    WipeRejoin,
    /// Stop a follower until the leader has purged the log it needs; it catches up from a
    /// snapshot.
    SnapshotCatchUp,
    /// Cut the power of every node at once, under load: each loses every write it had not
    /// synced; then restart them all.
    PowerLossAll,
}

impl Fault {
    pub const ALL: [Fault; 19] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseLeader,
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::OneWay,
        Fault::Bridge,
        Fault::Flapping,
        Fault::SlowLinks,
        Fault::LossyLinks,
        Fault::CrashUnsynced,
        Fault::CrashAfterCommit,
        Fault::CrashVote,
        Fault::CrashApply,
        Fault::CrashSnapshotInstall,
        Fault::CrashSnapshotBuild,
        Fault::WipeRejoin,
        Fault::SnapshotCatchUp,
        Fault::PowerLossAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::PauseLeader => "pause-leader",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateFollower => "isolate-follower",
            Fault::OneWay => "one-way",
            Fault::Bridge => "bridge",
            Fault::Flapping => "flapping",
            Fault::SlowLinks => "slow-links",
            Fault::LossyLinks => "lossy-links",
            Fault::CrashUnsynced => "crash-unsynced",
            Fault::CrashAfterCommit => "crash-after-commit",
            Fault::CrashVote => "crash-vote",
            Fault::CrashApply => "crash-apply",
            Fault::CrashSnapshotInstall => "crash-snapshot-install",
            Fault::CrashSnapshotBuild => "crash-snapshot-build",
            Fault::WipeRejoin => "wipe-rejoin",
            Fault::SnapshotCatchUp => "snapshot-catch-up",
            Fault::PowerLossAll => "power-loss-all",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Fault::KillLeader => "SIGKILL the leader, restart it 0.5-3 s later",
            Fault::KillFollower => "SIGKILL a follower, restart it 0.5-3 s later",
            Fault::PauseLeader => "SIGSTOP the leader for 0.5-5 s, then SIGCONT",
            Fault::IsolateLeader => "blackhole or drop every link of the leader for 1-4 s",
            Fault::IsolateFollower => "blackhole or drop every link of a follower for 1-4 s",
            Fault::OneWay => "blackhole one direction between the leader and a follower, 1-4 s",
            Fault::Bridge => "cut A-C both ways, A-B and B-C up, for 1-4 s",
            Fault::Flapping => "isolate and heal random nodes every 0.2-0.8 s, for 2-5 s",
            Fault::SlowLinks => "delay all links (or one node's) 50-150 ms + 0-50 ms jitter",
            Fault::LossyLinks => "reset connections on every link, 1-5 % per chunk, 2-4 s",
            Fault::CrashUnsynced => {
                "failpoint store::sync=return(power-loss): a power cut at a sync, losing unsynced writes"
            }
            Fault::CrashAfterCommit => "failpoint store::after-commit: crash after the fsync",
            Fault::CrashVote => "failpoint store::vote: crash saving a vote in a forced election",
            Fault::CrashApply => "failpoint store::apply: crash while applying",
            Fault::CrashSnapshotInstall => {
                "failpoint store::snapshot-install: crash installing a snapshot"
            }
            Fault::CrashSnapshotBuild => {
                "failpoint store::snapshot-build: crash building a snapshot"
            }
            Fault::WipeRejoin => "wipe a node; a new id joins by AddLearner + ChangeMembership",
            Fault::SnapshotCatchUp => "a follower down past the purged log catches up by snapshot",
            Fault::PowerLossAll => {
                "SIGUSR1 to every node at once: all lose their unsynced writes, then restart"
            }
        }
    }

    /// The fault named `name`.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|fault| fault.name() == name)
    }

    /// What the fault needs of a failpoints build of the `evlog` binary, if anything: a
    /// failpoint's name, or the power cut on SIGUSR1.
    pub fn needs_failpoints_build(self) -> Option<&'static str> {
        match self {
            Fault::PowerLossAll => Some("its power cut on SIGUSR1"),
            other => other.failpoint(),
        }
    }

    /// The failpoint the fault arms in the `evlog` binary, if any.
    pub fn failpoint(self) -> Option<&'static str> {
        match self {
            Fault::CrashUnsynced => Some("store::sync"),
            Fault::CrashAfterCommit => Some("store::after-commit"),
            Fault::CrashVote => Some("store::vote"),
            Fault::CrashApply => Some("store::apply"),
            Fault::CrashSnapshotInstall => Some("store::snapshot-install"),
            Fault::CrashSnapshotBuild => Some("store::snapshot-build"),
            _ => None,
        }
    }
}
