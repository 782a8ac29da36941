//! A store created empty records, durably and before anything else, that its node must catch
//! up with a leader (or, a founding member, confirm that its cluster is new) before it votes;
//! the mark stays across restarts until then. A founding store also records that it is one,
//! for good.

use evlog_raft_store::StoreConfig;

fn open(dir: &std::path::Path, founding: bool) -> evlog_raft_store::Engine {
    let config = StoreConfig {
        founding,
        ..StoreConfig::new(dir, 1, "catch-up")
    };
    evlog_raft_store::open(&config).expect("the store opens").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_store_must_catch_up_until_it_has() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(dir.path(), false);
    assert!(engine.created());
    assert!(engine.needs_catch_up());
    drop(engine);
    // A restart (told to found or not: the store remembers what it is) still needs it.
    let engine = open(dir.path(), true);
    assert!(!engine.created());
    assert!(engine.needs_catch_up(), "the mark survives a restart");
    engine.mark_caught_up().await.expect("marked caught up");
    assert!(!engine.needs_catch_up());
    drop(engine);
    let engine = open(dir.path(), false);
    assert!(!engine.needs_catch_up(), "caught up for good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_founding_store_waits_too_and_remembers_it_is_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(dir.path(), true);
    assert!(engine.created());
    assert!(engine.founding_member());
    assert!(
        engine.needs_catch_up(),
        "a founding member votes only once its node confirmed the cluster is new"
    );
    engine.mark_caught_up().await.expect("confirmed");
    drop(engine);
    let engine = open(dir.path(), false);
    assert!(!engine.created());
    assert!(
        !engine.needs_catch_up(),
        "an existing store keeps what it recorded"
    );
    assert!(engine.founding_member(), "whatever the flag says now");
    drop(engine);
    let joining = tempfile::tempdir().expect("temp dir");
    assert!(!open(joining.path(), false).founding_member());
}
