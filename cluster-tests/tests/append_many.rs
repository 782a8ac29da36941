//! `AppendMany` carries independent appends in one call, each with its own result, on any
//! node; the Rust client coalesces the appends of concurrent callers into such calls, and
//! every caller gets exactly its own append's result.

use std::collections::BTreeMap;

use evlog_client::ClientOptions;
use evlog_client::EvlogClient;
use evlog_cluster_tests::proto::AppendManyRequest;
use evlog_cluster_tests::proto::AppendRequest;
use evlog_cluster_tests::proto::AppendResponse;
use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::proto::append_result;
use evlog_cluster_tests::{Cluster, ClusterOptions, event, timeouts};
use tonic::Code;

fn append(stream: &str, expected_version: Option<u64>, key: Option<&str>) -> AppendRequest {
    AppendRequest {
        stream: stream.to_string(),
        events: vec![event("", "Noted", format!("{stream} {key:?}"))],
        expected_version,
        idempotency_key: key.map(str::to_string),
    }
}

/// What one append of an `AppendMany` got: its response, or its error's code and message.
fn outcome(result: &append_result::Result) -> Result<AppendResponse, (Code, String)> {
    match result {
        append_result::Result::Appended(response) => Ok(*response),
        append_result::Result::Error(error) => {
            let status = error.to_status();
            Err((status.code(), status.message().to_string()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_append_of_a_call_gets_its_own_result_on_any_node() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster
        .append(leader, "taken", vec![event("", "Noted", "first")])
        .await
        .expect("an event in stream taken");

    for (round, node) in [follower, leader].into_iter().enumerate() {
        let fresh = format!("fresh-{round}");
        let key = format!("key-{round}");
        let request = AppendManyRequest {
            appends: vec![
                append(&fresh, Some(0), None),
                append("taken", Some(0), None),
                append("bad name!", None, None),
                append(&format!("keyed-{round}"), None, Some(&key)),
                append(&format!("keyed-{round}"), None, Some(&key)),
                AppendRequest {
                    events: Vec::new(),
                    ..append("empty", None, None)
                },
            ],
        };
        let mut request = tonic::Request::new(request);
        request.set_timeout(cluster.rpc_timeout());
        let results = cluster
            .client(node)
            .append_many(request)
            .await
            .unwrap_or_else(|status| panic!("AppendMany on node {node}: {status}"))
            .into_inner()
            .results;
        let outcomes: Vec<_> = results
            .iter()
            .map(|result| outcome(result.result.as_ref().expect("a result or an error")))
            .collect();
        assert_eq!(outcomes.len(), 6, "node {node}: {outcomes:?}");

        let appended = outcomes[0].as_ref().expect("the fresh stream's append");
        assert_eq!(appended.stream_version, 1);
        let stored = cluster
            .read_stream(node, &fresh, Consistency::Linearizable)
            .await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].position, appended.first_position);

        let (code, message) = outcomes[1].as_ref().expect_err("a wrong expected version");
        assert_eq!(*code, Code::FailedPrecondition, "{message}");
        let error = match results[1].result.as_ref() {
            Some(append_result::Result::Error(error)) => error,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            error
                .metadata
                .get(evlog_proto::metadata::ACTUAL_VERSION)
                .map(String::as_str),
            Some("1"),
            "the actual version travels with the error"
        );

        let (code, message) = outcomes[2].as_ref().expect_err("a bad stream name");
        assert_eq!(*code, Code::InvalidArgument);
        assert!(message.contains("bad name!"), "{message}");

        // The same key twice in one call: appended once, both answered with its positions.
        let (first, second) = (
            outcomes[3].as_ref().expect("keyed"),
            outcomes[4].as_ref().expect("keyed again"),
        );
        assert_eq!(first.first_position, second.first_position);
        assert_eq!(
            [first.deduplicated, second.deduplicated]
                .iter()
                .filter(|deduplicated| **deduplicated)
                .count(),
            1,
            "{first:?} {second:?}"
        );
        let (code, _) = outcomes[5].as_ref().expect_err("an empty append");
        assert_eq!(*code, Code::InvalidArgument);
    }
    let taken = cluster
        .read_stream(leader, "taken", Consistency::Linearizable)
        .await;
    assert_eq!(taken.len(), 1, "the refused append added nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_limits_are_refused_whole() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let mut client = cluster.client(leader);
    let too_many = AppendManyRequest {
        appends: (0..1_025)
            .map(|i| append(&format!("s-{i}"), None, None))
            .collect(),
    };
    let status = client
        .append_many(too_many)
        .await
        .expect_err("1,025 appends in one call");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("1024"), "{status}");
    let status = client
        .append_many(AppendManyRequest::default())
        .await
        .expect_err("no appends");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let all = cluster.read_all(leader, Consistency::Linearizable).await;
    assert!(all.is_empty(), "a refused call appends nothing: {all:?}");
}

/// 300 callers append at once through one client, each to its own stream at expected
/// version 0: the client sends them in fewer calls than appends, and every caller's answer is
/// its own append (the position it is told holds its stream's event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_one_client_are_coalesced_and_each_gets_its_own_answer() {
    const CALLERS: usize = 300;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(str::to_string).collect();
    let client = EvlogClient::new(&endpoints, ClientOptions::default()).expect("endpoints");
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                let stream = format!("caller-{caller}");
                let events = (0..=caller % 3)
                    .map(|n| event("", "Noted", format!("{caller}/{n}")))
                    .collect::<Vec<_>>();
                let response = client
                    .append(AppendRequest {
                        stream: stream.clone(),
                        events: events.clone(),
                        expected_version: Some(0),
                        idempotency_key: None,
                    })
                    .await
                    .unwrap_or_else(|status| panic!("caller {caller}: {status}"));
                (stream, events.len() as u64, response)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(CALLERS);
    for caller in callers {
        answers.push(caller.await.expect("a caller"));
    }
    let stats = client.coalescing_stats();
    let calls = stats.calls.load(std::sync::atomic::Ordering::Relaxed);
    let carried = stats.appends.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(carried, CALLERS as u64, "every append sent once");
    assert!(
        calls < carried,
        "{carried} concurrent appends went in {calls} calls: nothing was coalesced"
    );

    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let log: BTreeMap<u64, String> = cluster
        .read_all(leader, Consistency::Linearizable)
        .await
        .into_iter()
        .map(|event| (event.position, event.stream))
        .collect();
    assert_eq!(
        log.len(),
        answers.iter().map(|(_, n, _)| *n as usize).sum::<usize>()
    );
    for (stream, count, response) in &answers {
        assert_eq!(response.stream_version, *count, "{stream}: {response:?}");
        assert_eq!(
            response.last_position - response.first_position + 1,
            *count,
            "{stream}: {response:?}"
        );
        for position in response.first_position..=response.last_position {
            assert_eq!(
                log.get(&position),
                Some(stream),
                "{stream} was told its events are at {}..={}",
                response.first_position,
                response.last_position
            );
        }
    }
}

/// `callers` tasks, each appending `rounds` times in a loop (one at a time) with `send`, which
/// gets the caller's number; panics on any failure.
async fn append_in_loops<F, Fut>(callers: usize, rounds: usize, send: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<AppendResponse, tonic::Status>> + Send,
{
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let send = send.clone();
            tokio::spawn(async move {
                for round in 0..rounds {
                    send(caller).await.unwrap_or_else(|status| {
                        panic!("caller {caller}, round {round}: {status}")
                    });
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a caller");
    }
}

/// Callers in a loop through one client: the callers one call answered queue their next
/// appends at about the same moment, and those go together in the next call (not the first of
/// them alone and the rest in the call after it, as when the lane woke on the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_answered_together_append_together_next() {
    const CALLERS: usize = 16;
    const ROUNDS: usize = 40;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let client =
        EvlogClient::new(&[cluster.address(leader)], ClientOptions::default()).expect("endpoint");
    let looping = client.clone();
    append_in_loops(CALLERS, ROUNDS, move |caller| {
        let client = looping.clone();
        async move {
            client
                .append(append(&format!("loop-{caller}"), None, None))
                .await
        }
    })
    .await;
    let stats = client.coalescing_stats();
    let calls = stats.calls.load(std::sync::atomic::Ordering::Relaxed);
    let carried = stats.appends.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(carried, (CALLERS * ROUNDS) as u64, "every append sent once");
    // All together would be 16 a call; the first alone and the rest next, 8.
    assert!(
        carried >= 12 * calls,
        "{carried} appends of {CALLERS} callers in a loop went in {calls} calls"
    );
}

/// Unary callers in a loop on one connection: the appends that arrive together share a Raft
/// entry (the proposing task lets those woken with the first in before it proposes), rather
/// than one entry each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_appends_arriving_together_share_entries() {
    const CALLERS: usize = 32;
    const ROUNDS: usize = 20;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let batches = "evlog_raft_proposal_batch_events_count";
    let events = "evlog_raft_proposal_batch_events_sum";
    let (batches_before, events_before) = (
        cluster.metric(leader, batches).await,
        cluster.metric(leader, events).await,
    );
    let client = cluster.client(leader);
    append_in_loops(CALLERS, ROUNDS, move |caller| {
        let mut client = client.clone();
        async move {
            let request = append(&format!("unary-{caller}"), None, None);
            client
                .append(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    let batches = cluster.metric(leader, batches).await - batches_before;
    let events = cluster.metric(leader, events).await - events_before;
    assert_eq!(
        events,
        (CALLERS * ROUNDS) as f64,
        "every append proposed once"
    );
    // One entry per append was 1.0 (measured 1.02 under load before the task yielded).
    assert!(
        events >= 2.0 * batches,
        "{events} appends of {CALLERS} unary callers in a loop were {batches} proposals"
    );
}

/// A client kept across Tokio runtimes (a runtime per call, as a synchronous wrapper makes)
/// appends on each: its lanes start again on the new runtime when the old one is gone.
#[test]
fn a_client_outlives_the_runtime_of_its_first_append() {
    let main = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = main.block_on(async {
        let cluster = Cluster::start(ClusterOptions::default()).await;
        cluster.wait_for_leader(timeouts::LEADER).await;
        cluster
    });
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(str::to_string).collect();
    let client = main.block_on(async {
        EvlogClient::new(&endpoints, ClientOptions::default()).expect("endpoints")
    });
    for round in 0..3 {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let response = runtime
            .block_on(client.append(append(&format!("runtime-{round}"), Some(0), None)))
            .unwrap_or_else(|status| panic!("round {round}: {status}"));
        assert_eq!(response.stream_version, 1);
        drop(runtime);
    }
    main.block_on(async move { drop(cluster) });
}

/// A node of an older version has no `AppendMany` (played by a failpoint that answers it
/// `UNIMPLEMENTED`). As the leader, a follower forwarding a call to it sends the appends one by
/// one; a client talking to it sends them one by one too. Every append gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_reach_a_leader_of_an_older_version_one_by_one() {
    evlog_cluster_tests::require_failpoints();
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    // Nodes 2 and 3 become "old" (one at a time, so a quorum stays up); node 1 stays new.
    let new = 1;
    for id in [2, 3] {
        cluster.kill(id).await;
        cluster.restart_with_env(
            id,
            &[(
                "FAILPOINTS".to_string(),
                "grpc::no-append-many=return".to_string(),
            )],
        );
        cluster.wait_for_convergence(timeouts::LEADER).await;
    }
    let mut old = cluster.wait_for_convergence(timeouts::LEADER).await;
    let mut attempts = 0;
    while old == new {
        // The two old nodes elect one of them; then the new one comes back as a follower.
        attempts += 1;
        assert!(attempts <= 5, "no old node led after {attempts} tries");
        cluster.kill(new).await;
        cluster.wait_for_leader(timeouts::LEADER).await;
        cluster.restart(new);
        old = cluster.wait_for_convergence(timeouts::LEADER).await;
    }
    let follower = new;

    // A new follower hands the whole call on; the old leader refuses it; the follower
    // forwards its appends one by one, and each gets its own answer.
    let request = AppendManyRequest {
        appends: vec![
            append("via-follower-1", Some(0), None),
            append("via-follower-2", Some(0), None),
            append("via-follower-1", Some(5), None),
        ],
    };
    let results = cluster
        .client(follower)
        .append_many(request)
        .await
        .expect("AppendMany through a new follower")
        .into_inner()
        .results;
    let outcomes: Vec<_> = results
        .iter()
        .map(|result| outcome(result.result.as_ref().expect("a result")))
        .collect();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert_eq!(
        outcomes[2].as_ref().err().map(|(code, _)| *code),
        Some(Code::FailedPrecondition),
        "{outcomes:?}"
    );

    // The old leader itself refuses AppendMany: the client sends one by one.
    let client =
        EvlogClient::new(&[cluster.address(old)], ClientOptions::default()).expect("an endpoint");
    let callers: Vec<_> = (0..20)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .append(append(&format!("via-client-{caller}"), Some(0), None))
                    .await
            })
        })
        .collect();
    for (caller, joined) in callers.into_iter().enumerate() {
        let response = joined
            .await
            .expect("a caller")
            .unwrap_or_else(|status| panic!("caller {caller}: {status}"));
        assert_eq!(response.stream_version, 1, "caller {caller}");
    }
    let log = cluster.read_all(old, Consistency::Linearizable).await;
    assert_eq!(
        log.len(),
        22,
        "two appends via the follower, twenty via the client"
    );
}
