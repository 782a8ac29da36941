//! Access control (`evlog serve --auth`): every client call needs a token (or a certificate a
//! role names), and is checked against the grants of the caller's roles, the same way on every
//! RPC, through followers (which forward the caller's token) as through the leader. A
//! revocation ends the token's live subscriptions and consumer streams within a second.
//! Tokens never reach a node's log.

use std::time::Duration;
use std::time::Instant;

use evlog_cluster_tests::proto::access_client::AccessClient;
use evlog_cluster_tests::proto::cluster_client::ClusterClient;
use evlog_cluster_tests::proto::consumers_client::ConsumersClient;
use evlog_cluster_tests::proto::event_log_client::EventLogClient;
use evlog_cluster_tests::proto::maintenance_client::MaintenanceClient;
use evlog_cluster_tests::proto::{self as pb};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, timeouts};
use futures::StreamExt;
use tonic::Code;
use tonic::Request;

/// A cluster of `options` with access control on, and the bootstrap token every node accepts.
async fn secured_cluster(options: ClusterOptions) -> (Cluster, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = format!("evl_{}_{}", "0123456789abcdef", "5a".repeat(32));
    let file = dir.path().join("bootstrap-token");
    std::fs::write(&file, format!("{token}\n")).expect("the token file is written");
    let mut extra_args = options.extra_args.clone();
    extra_args.extend([
        "--auth".to_owned(),
        "--bootstrap-token-file".to_owned(),
        file.display().to_string(),
    ]);
    let cluster = Cluster::start(ClusterOptions {
        extra_args,
        ..options
    })
    .await;
    (cluster, token, dir)
}

/// `message` carrying `token` (none: no credentials).
fn with<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ASCII"),
        );
    }
    request
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn append(stream: &str) -> pb::AppendRequest {
    pb::AppendRequest {
        stream: stream.to_owned(),
        events: vec![event(uuid_like(stream), "Tested", "{}")],
        expected_version: None,
        idempotency_key: None,
    }
}

fn uuid_like(seed: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed) + seed.len() as u64 * 1_000_000
    )
}

fn grant(permission: pb::Permission, prefix: &str) -> pb::Grant {
    pb::Grant {
        permission: permission as i32,
        prefix: prefix.to_owned(),
    }
}

/// Puts role `name` with `grants`, as the bootstrap principal.
async fn put_role(cluster: &Cluster, node: u64, admin: &str, name: &str, grants: Vec<pb::Grant>) {
    AccessClient::new(cluster.channel(node))
        .put_role(with(
            Some(admin),
            pb::PutRoleRequest {
                role: Some(pb::Role {
                    name: name.to_owned(),
                    grants,
                    principals: vec![],
                }),
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("role {name} is put: {status:?}"));
}

/// A token for `principal` with `roles`, created through `node`: (id, token).
async fn create_token(
    cluster: &Cluster,
    node: u64,
    admin: &str,
    principal: &str,
    roles: &[&str],
) -> (String, String) {
    let created = AccessClient::new(cluster.channel(node))
        .create_token(with(
            Some(admin),
            pb::CreateTokenRequest {
                principal: principal.to_owned(),
                roles: roles.iter().map(|role| role.to_string()).collect(),
                ttl_seconds: 0,
            },
        ))
        .await
        .expect("a token is created")
        .into_inner();
    (created.info.expect("its description").id, created.token)
}

fn subscribe_all(prefixes: &[&str]) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::All(pb::AllStreams {})),
        filter: Some(pb::SubscribeFilter {
            stream_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            event_types: vec![],
        }),
        ..Default::default()
    }
}

fn create_consumer(name: &str, prefixes: &[&str]) -> pb::CreateConsumerRequest {
    pb::CreateConsumerRequest {
        name: name.to_owned(),
        target: Some(pb::create_consumer_request::Target::All(pb::AllStreams {})),
        filter: Some(pb::SubscribeFilter {
            stream_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            event_types: vec![],
        }),
        ..Default::default()
    }
}

/// The first item of a subscription through `node`, or the status it was refused with.
async fn first_item(
    cluster: &Cluster,
    node: u64,
    token: &str,
    request: pb::SubscribeRequest,
) -> Code {
    let mut client = EventLogClient::new(cluster.channel(node));
    match client.subscribe(with(Some(token), request)).await {
        Err(status) => status.code(),
        Ok(response) => match response.into_inner().next().await {
            Some(Ok(_)) => Code::Ok,
            Some(Err(status)) => status.code(),
            None => Code::Aborted,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_checked_against_the_callers_grants() {
    let (cluster, admin, _dir) = secured_cluster(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    let mut log = EventLogClient::new(cluster.channel(follower));

    // No credentials, a malformed token, an unknown one: UNAUTHENTICATED. Status stays open.
    assert_eq!(
        code(log.append(with(None, append("orders-1"))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(log.append(with(Some("evl_nope"), append("orders-1"))).await),
        Code::Unauthenticated
    );
    let unknown = format!("evl_{}_{}", "fedcba9876543210", "00".repeat(32));
    assert_eq!(
        code(log.append(with(Some(&unknown), append("orders-1"))).await),
        Code::Unauthenticated
    );
    let wrong_secret = format!("evl_{}_{}", "0123456789abcdef", "00".repeat(32));
    assert_eq!(
        code(
            log.append(with(Some(&wrong_secret), append("orders-1")))
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            ClusterClient::new(cluster.channel(follower))
                .status(with(None, pb::StatusRequest {}))
                .await
        ),
        Code::Ok
    );

    // Roles and tokens, made through a follower (handed to the leader with the caller's token).
    put_role(
        &cluster,
        follower,
        &admin,
        "orders-reader",
        vec![grant(pb::Permission::Read, "orders-")],
    )
    .await;
    put_role(
        &cluster,
        follower,
        &admin,
        "orders-writer",
        vec![grant(pb::Permission::Append, "orders-")],
    )
    .await;
    put_role(
        &cluster,
        follower,
        &admin,
        "billing",
        vec![
            grant(pb::Permission::Consume, "billing-"),
            grant(pb::Permission::Read, "orders-"),
        ],
    )
    .await;
    let (_, alice) = create_token(
        &cluster,
        follower,
        &admin,
        "alice",
        &["orders-reader", "orders-writer"],
    )
    .await;
    let (_, carol) = create_token(&cluster, leader, &admin, "carol", &["billing"]).await;
    let (_, nobody) = create_token(&cluster, leader, &admin, "nobody", &[]).await;
    let alice = alice.as_str();
    let carol = carol.as_str();
    // A real token's id with another secret authenticates no one.
    let alice_id = alice.split('_').nth(1).expect("an id");
    let forged = format!("evl_{alice_id}_{}", "00".repeat(32));

    // A token the follower applied may not have reached it yet: wait until alice is known.
    evlog_cluster_tests::wait_until(
        timeouts::LEADER,
        "alice's token is applied on every node",
        async || {
            let mut ok = true;
            for id in cluster.node_ids() {
                let who = AccessClient::new(cluster.channel(id))
                    .who_am_i(with(Some(alice), pb::WhoAmIRequest {}))
                    .await;
                ok &= who.is_ok_and(|who| who.into_inner().principal == "alice");
            }
            ok
        },
    )
    .await;

    assert_eq!(
        code(log.append(with(Some(&forged), append("orders-1"))).await),
        Code::Unauthenticated
    );

    // Appends: granted on orders-, through a follower (forwarded) and the leader; not elsewhere.
    for node in [follower, leader] {
        let mut log = EventLogClient::new(cluster.channel(node));
        assert_eq!(
            code(log.append(with(Some(alice), append("orders-1"))).await),
            Code::Ok
        );
        assert_eq!(
            code(log.append(with(Some(alice), append("payments-1"))).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(log.append(with(Some(carol), append("orders-1"))).await),
            Code::PermissionDenied,
            "carol reads orders- but may not append"
        );
    }
    // AppendMany: each append checked on its own; the refused one gets its error in place.
    let many = log
        .append_many(with(
            Some(alice),
            pb::AppendManyRequest {
                appends: vec![append("orders-2"), append("payments-2"), append("orders-3")],
            },
        ))
        .await
        .expect("the call is answered")
        .into_inner();
    let outcomes: Vec<Option<i32>> = many
        .results
        .iter()
        .map(|result| match &result.result {
            Some(pb::append_result::Result::Appended(_)) => None,
            Some(pb::append_result::Result::Error(error)) => Some(error.code),
            None => Some(-1),
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![None, Some(Code::PermissionDenied as i32), None]
    );

    // Reads, stream summaries, listings and metadata.
    let read = |stream: &str, token: &str| {
        let mut log = EventLogClient::new(cluster.channel(follower));
        let request = pb::ReadRequest {
            target: Some(pb::read_request::Target::Stream(stream.to_owned())),
            ..Default::default()
        };
        let token = token.to_owned();
        async move { code(log.read(with(Some(&token), request)).await) }
    };
    assert_eq!(read("orders-1", alice).await, Code::Ok);
    assert_eq!(read("orders-1", carol).await, Code::Ok);
    assert_eq!(read("payments-1", alice).await, Code::PermissionDenied);
    assert_eq!(read("orders-1", &nobody).await, Code::PermissionDenied);
    let read_all = pb::ReadRequest {
        target: Some(pb::read_request::Target::All(pb::AllStreams {})),
        ..Default::default()
    };
    assert_eq!(
        code(log.read(with(Some(alice), read_all.clone())).await),
        Code::PermissionDenied
    );
    // Filtered to what READ covers, `all` is readable: only orders- events come back.
    let filtered = log
        .read(with(
            Some(alice),
            pb::ReadRequest {
                filter: Some(pb::SubscribeFilter {
                    stream_prefixes: vec!["orders-".to_owned()],
                    event_types: vec![],
                }),
                ..read_all.clone()
            },
        ))
        .await
        .expect("alice reads all filtered to orders-")
        .into_inner();
    assert!(!filtered.events.is_empty());
    assert!(
        filtered
            .events
            .iter()
            .all(|e| e.stream.starts_with("orders-"))
    );
    assert_eq!(code(log.read(with(Some(&admin), read_all)).await), Code::Ok);
    let get_stream = |stream: &str| {
        let mut log = log.clone();
        let request = with(
            Some(alice),
            pb::GetStreamRequest {
                stream: stream.to_owned(),
                ..Default::default()
            },
        );
        async move { code(log.get_stream(request).await) }
    };
    assert_eq!(get_stream("payments-1").await, Code::PermissionDenied);
    assert_eq!(get_stream("orders-1").await, Code::Ok);
    assert_eq!(
        code(
            log.list_streams(with(
                Some(alice),
                pb::ListStreamsRequest {
                    prefix: "orders-".to_owned(),
                    ..Default::default()
                }
            ))
            .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            log.list_streams(with(Some(alice), pb::ListStreamsRequest::default()))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            log.set_stream_metadata(with(
                Some(alice),
                pb::SetStreamMetadataRequest {
                    stream: "orders-1".to_owned(),
                    retention: Some(pb::StreamRetention {
                        max_count: Some(10),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            ))
            .await
        ),
        Code::PermissionDenied,
        "alice has no METADATA grant"
    );
    assert_eq!(
        code(
            log.delete_stream(with(
                Some(alice),
                pb::DeleteStreamRequest {
                    stream: "orders-1".to_owned(),
                    ..Default::default()
                }
            ))
            .await
        ),
        Code::PermissionDenied
    );

    // Subscriptions: `all` filtered to covered prefixes is allowed, unfiltered or wider is
    // refused (never narrowed).
    assert_eq!(
        first_item(&cluster, follower, alice, subscribe_all(&["orders-"])).await,
        Code::Ok
    );
    assert_eq!(
        first_item(&cluster, follower, alice, subscribe_all(&["orders-eu-"])).await,
        Code::Ok
    );
    assert_eq!(
        first_item(&cluster, follower, alice, subscribe_all(&[])).await,
        Code::PermissionDenied
    );
    assert_eq!(
        first_item(
            &cluster,
            follower,
            alice,
            subscribe_all(&["orders-", "payments-"])
        )
        .await,
        Code::PermissionDenied
    );
    let stream = |name: &str| pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::Stream(name.to_owned())),
        ..Default::default()
    };
    assert_eq!(
        first_item(&cluster, leader, alice, stream("orders-1")).await,
        Code::Ok
    );
    assert_eq!(
        first_item(&cluster, leader, alice, stream("payments-1")).await,
        Code::PermissionDenied
    );

    // Consumer groups: CONSUME on the group's name, and a filter no wider than READ grants.
    let mut consumers = ConsumersClient::new(cluster.channel(follower));
    assert_eq!(
        code(
            consumers
                .create(with(
                    Some(carol),
                    create_consumer("billing-1", &["orders-"])
                ))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            consumers
                .create(with(Some(carol), create_consumer("billing-2", &[])))
                .await
        ),
        Code::PermissionDenied,
        "a group reading all streams is wider than carol's grants"
    );
    assert_eq!(
        code(
            consumers
                .create(with(Some(carol), create_consumer("audit-1", &["orders-"])))
                .await
        ),
        Code::PermissionDenied,
        "no CONSUME grant covers audit-"
    );
    assert_eq!(
        code(
            consumers
                .create(with(
                    Some(alice),
                    create_consumer("billing-3", &["orders-"])
                ))
                .await
        ),
        Code::PermissionDenied,
        "alice reads orders- but has no CONSUME grant"
    );
    assert_eq!(
        code(
            consumers
                .get(with(
                    Some(carol),
                    pb::GetConsumerRequest {
                        name: "billing-1".to_owned()
                    }
                ))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            consumers
                .get(with(
                    Some(alice),
                    pb::GetConsumerRequest {
                        name: "billing-1".to_owned()
                    }
                ))
                .await
        ),
        Code::PermissionDenied
    );
    let listed = consumers
        .list(with(Some(carol), pb::ListConsumersRequest::default()))
        .await
        .expect("carol lists")
        .into_inner();
    assert_eq!(listed.consumers.len(), 1);

    // ADMIN only: membership, leadership, backups, replica checks, access control.
    let mut membership = ClusterClient::new(cluster.channel(follower));
    assert_eq!(
        code(
            membership
                .transfer_leader(with(Some(alice), pb::TransferLeaderRequest { to: None }))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            membership
                .change_membership(with(
                    Some(alice),
                    pb::ChangeMembershipRequest { voters: vec![1] }
                ))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            membership
                .add_learner(with(
                    Some(alice),
                    pb::AddLearnerRequest {
                        node_id: 9,
                        address: "127.0.0.1:1".to_owned(),
                        peer_address: String::new()
                    }
                ))
                .await
        ),
        Code::PermissionDenied
    );
    let mut maintenance = MaintenanceClient::new(cluster.channel(follower));
    assert_eq!(
        code(
            maintenance
                .backup(with(Some(alice), pb::BackupRequest::default()))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            maintenance
                .start_checksum(with(Some(carol), pb::ChecksumRequest::default()))
                .await
        ),
        Code::PermissionDenied
    );
    let mut access = AccessClient::new(cluster.channel(follower));
    assert_eq!(
        code(
            access
                .create_token(with(
                    Some(alice),
                    pb::CreateTokenRequest {
                        principal: "eve".to_owned(),
                        roles: vec![],
                        ttl_seconds: 0
                    }
                ))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            access
                .list_tokens(with(Some(alice), pb::ListTokensRequest {}))
                .await
        ),
        Code::PermissionDenied
    );
    let tokens = access
        .list_tokens(with(Some(&admin), pb::ListTokensRequest {}))
        .await
        .expect("the bootstrap principal lists tokens")
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 3);
    let me = access
        .who_am_i(with(Some(carol), pb::WhoAmIRequest {}))
        .await
        .expect("anyone may ask who they are")
        .into_inner();
    assert_eq!(
        (me.principal.as_str(), me.authenticated_by.as_str()),
        ("carol", "token")
    );
    assert_eq!(me.roles, vec!["billing".to_owned()]);

    // No token reached a node's log.
    for id in cluster.node_ids() {
        let log = std::fs::read_to_string(cluster.log_path(id)).expect("the node's log");
        for secret in [&admin, alice, carol, &nobody] {
            let secret_part = secret.rsplit('_').next().expect("a secret");
            assert!(
                !log.contains(secret_part),
                "node {id}'s log holds a token's secret"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_live_subscription_and_consumer_stream_within_a_second() {
    let (cluster, admin, _dir) = secured_cluster(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    put_role(
        &cluster,
        leader,
        &admin,
        "billing",
        vec![
            grant(pb::Permission::Consume, "billing-"),
            grant(pb::Permission::Read, "orders-"),
        ],
    )
    .await;
    let (id, carol) = create_token(&cluster, leader, &admin, "carol", &["billing"]).await;
    let mut log = EventLogClient::new(cluster.channel(leader));
    log.append(with(Some(&admin), append("orders-1")))
        .await
        .expect("an append");
    ConsumersClient::new(cluster.channel(leader))
        .create(with(
            Some(&carol),
            create_consumer("billing-1", &["orders-"]),
        ))
        .await
        .expect("carol creates her group");

    // A live subscription on a follower, and a consumer stream joined through it.
    evlog_cluster_tests::wait_until(
        timeouts::LEADER,
        "carol's token is applied on the follower",
        async || {
            AccessClient::new(cluster.channel(follower))
                .who_am_i(with(Some(&carol), pb::WhoAmIRequest {}))
                .await
                .is_ok()
        },
    )
    .await;
    let mut subscription = EventLogClient::new(cluster.channel(follower))
        .subscribe(with(Some(&carol), subscribe_all(&["orders-"])))
        .await
        .expect("carol subscribes")
        .into_inner();
    let first = subscription
        .next()
        .await
        .expect("an item")
        .expect("not an error");
    assert!(matches!(
        first.item,
        Some(pb::subscribe_response::Item::Subscribed(_))
    ));
    let (joins, join_rx) = tokio::sync::mpsc::channel(4);
    joins
        .send(pb::ConsumeRequest {
            msg: Some(pb::consume_request::Msg::Join(pb::Join {
                consumer: "billing-1".to_owned(),
                credit: 10,
                member_name: "carol".to_owned(),
            })),
        })
        .await
        .expect("the join is queued");
    let mut deliveries = ConsumersClient::new(cluster.channel(follower))
        .consume(with(Some(&carol), tokio_stream_of(join_rx)))
        .await
        .expect("carol joins her group")
        .into_inner();
    let joined = deliveries.next().await.expect("an answer").expect("joined");
    assert!(matches!(
        joined.msg,
        Some(pb::consume_response::Msg::Joined(_))
    ));

    // Revoked through the leader: both streams end PERMISSION_DENIED within a second of the
    // revocation's commit.
    AccessClient::new(cluster.channel(leader))
        .revoke_token(with(Some(&admin), pb::RevokeTokenRequest { id }))
        .await
        .expect("the token is revoked");
    let revoked = Instant::now();
    let ended = |what: &'static str| {
        move |item: Option<Result<_, tonic::Status>>| match item {
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}")
            }
            other => panic!(
                "{what} did not end with an error: {:?}",
                other.map(|r| r.map(|_| ()))
            ),
        }
    };
    let subscription_end = async {
        loop {
            match subscription.next().await {
                Some(Ok(_)) => continue,
                other => return other.map(|r| r.map(|_| ())),
            }
        }
    };
    let consume_end = async {
        loop {
            match deliveries.next().await {
                Some(Ok(_)) => continue,
                other => return other.map(|r| r.map(|_| ())),
            }
        }
    };
    let (subscription_end, consume_end) = tokio::time::timeout(
        Duration::from_secs(5),
        futures::future::join(subscription_end, consume_end),
    )
    .await
    .expect("both streams end");
    let took = revoked.elapsed();
    ended("the subscription")(subscription_end);
    ended("the consumer stream")(consume_end);
    assert!(
        took <= Duration::from_secs(1),
        "the streams ended {took:?} after the revocation"
    );
    drop(joins);

    // And the token authenticates no one any more.
    assert_eq!(
        code(log.append(with(Some(&carol), append("orders-1"))).await),
        Code::Unauthenticated
    );
}

/// A stream of the requests sent on `rx`, ending when it closes.
fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<pb::ConsumeRequest>,
) -> impl futures::Stream<Item = pb::ConsumeRequest> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// With `--client-ca`, a client certificate a role lists is the caller's principal: no token
/// needed, and its writes through a follower reach the leader as that principal (named by the
/// follower, believed only from a node's certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_a_role_names_is_its_principal() {
    let (cluster, admin, _dir) = secured_cluster(ClusterOptions {
        tls: true,
        client_ca: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    // The harness's channels present the dev-certs client certificate, named `client`.
    let mut log = EventLogClient::new(cluster.channel(follower));
    assert_eq!(
        code(log.append(with(None, append("orders-1"))).await),
        Code::Unauthenticated,
        "no role names the certificate yet"
    );
    AccessClient::new(cluster.channel(leader))
        .put_role(with(
            Some(&admin),
            pb::PutRoleRequest {
                role: Some(pb::Role {
                    name: "svc".to_owned(),
                    grants: vec![
                        grant(pb::Permission::Append, "orders-"),
                        grant(pb::Permission::Read, "orders-"),
                    ],
                    principals: vec!["client".to_owned()],
                }),
            },
        ))
        .await
        .expect("the role is put");
    evlog_cluster_tests::wait_until(
        timeouts::LEADER,
        "the role is applied on the follower",
        async || {
            AccessClient::new(cluster.channel(follower))
                .who_am_i(with(None, pb::WhoAmIRequest {}))
                .await
                .is_ok_and(|me| me.into_inner().principal == "client")
        },
    )
    .await;
    let me = AccessClient::new(cluster.channel(follower))
        .who_am_i(with(None, pb::WhoAmIRequest {}))
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.authenticated_by, "certificate");

    // Through the follower (forwarded, the follower naming the caller) and the leader.
    for node in [follower, leader] {
        let mut log = EventLogClient::new(cluster.channel(node));
        assert_eq!(
            code(log.append(with(None, append("orders-1"))).await),
            Code::Ok
        );
        assert_eq!(
            code(log.append(with(None, append("payments-1"))).await),
            Code::PermissionDenied
        );
    }
    // A client cannot name a principal itself: only a node's certificate may.
    let mut forged = with(None, append("payments-1"));
    forged.metadata_mut().insert(
        "evlog-forwarded-principal",
        "bootstrap".parse().expect("ASCII"),
    );
    assert_eq!(code(log.append(forged).await), Code::Unauthenticated);
}
