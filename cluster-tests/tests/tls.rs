//! TLS (`evlog serve --tls-cert …`): the client port serves TLS only, and a client must trust
//! the cluster's CA; with `--client-ca` it must also present a certificate that CA signed.
//! The peer port requires mutual TLS: a peer whose certificate another CA signed (or that
//! presents none, or speaks plaintext) never reaches the peer protocol, and the cluster goes
//! on. Followers forward appends to the leader over TLS. Certificates come from
//! `evlog dev-certs` (rcgen) in the test's directory.

use std::process::Command;
use std::time::Duration;

use evlog_client::ClientTls;
use evlog_cluster_tests::proto::cluster_client::ClusterClient;
use evlog_cluster_tests::proto::event_log_client::EventLogClient;
use evlog_cluster_tests::proto::{AppendRequest, Consistency, StatusRequest};
use evlog_cluster_tests::{
    Cluster, ClusterOptions, TestTls, event, evlog_binary, http, timeouts, wait_for,
};
use evlog_proto::internal::v1::raft_peer_client::RaftPeerClient;
use evlog_proto::internal::v1::{PeerHeader, ReadIndexRequest};
use tonic::transport::{Channel, Endpoint};

/// A channel to `address` (`https://` with `tls`, else plaintext).
fn channel(address: &str, tls: Option<&ClientTls>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.config())
            .expect("a TLS configuration");
    }
    endpoint.connect_lazy()
}

fn append(stream: &str, id: &str) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        events: vec![event(id, "Tested", "data")],
        expected_version: None,
        idempotency_key: None,
    }
}

/// An append through `channel`, or the status it failed with.
async fn try_append(channel: Channel, request: AppendRequest) -> Result<u64, tonic::Status> {
    let response = EventLogClient::new(channel).append(request).await?;
    Ok(response.into_inner().last_position)
}

/// The whole error of a failed call: its message and the transport errors below it (where a
/// TLS failure is named).
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(&format!(" / {error}"));
        source = error.source();
    }
    text
}

/// Asserts that a call failed in the transport (the connection was refused before any
/// gRPC answer: the code is tonic's for a transport failure, never one a service answers
/// with), and that the failure's description holds one of `expected` (none: any transport
/// failure). A server that refuses a client certificate does so after the client's side of a
/// TLS 1.3 handshake has finished, so what the client sees depends on timing: the server's
/// alert (`CertificateRequired`, `UnknownCA`), the connection closing, or a broken pipe; a
/// plaintext client sees an HTTP/2 protocol error or the connection closing. Only a refusal
/// by the client itself (it does not trust the server) has one description.
fn assert_transport_refusal(result: Result<u64, tonic::Status>, what: &str, expected: &[&str]) {
    let status = match result {
        Ok(answer) => panic!("{what}: accepted (answered {answer})"),
        Err(status) => status,
    };
    let text = describe(&status);
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Cancelled
        ) && text.contains("transport error"),
        "{what}: not a transport failure: {text}"
    );
    assert!(
        expected.is_empty() || expected.iter().any(|needle| text.contains(needle)),
        "{what}: expected one of {expected:?} in {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_tls_and_the_clusters_ca() {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    let tls = cluster.tls().expect("a TLS cluster").client();

    // The right CA: an append through a follower (forwarded to the leader over TLS) and one
    // through the leader, then a linearizable read of both on the follower.
    let first = try_append(
        channel(&cluster.address(follower), Some(&tls)),
        append("tls-1", "a"),
    )
    .await
    .expect("an append through a follower, over TLS");
    let second = try_append(
        channel(&cluster.address(leader), Some(&tls)),
        append("tls-1", "b"),
    )
    .await
    .expect("an append through the leader, over TLS");
    assert!(second > first);
    let events = cluster
        .read_stream(follower, "tls-1", Consistency::Linearizable)
        .await;
    let ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);

    // Plaintext: the TLS port does not speak it.
    for id in cluster.node_ids() {
        let refused = try_append(
            channel(&cluster.address(id), None),
            append("tls-1", "plain"),
        )
        .await;
        assert_transport_refusal(refused, "a plaintext client", &[]);
    }

    // A client that trusts another CA refuses the nodes' certificates.
    let stranger = TestTls::generate(&cluster.path().join("other-ca"), 1);
    let refused = try_append(
        channel(&cluster.address(leader), Some(&stranger.client())),
        append("tls-1", "other-ca"),
    )
    .await;
    assert_transport_refusal(refused, "a client trusting another CA", &["UnknownIssuer"]);

    // Nothing the refused clients sent was appended.
    let events = cluster
        .read_stream(leader, "tls-1", Consistency::Linearizable)
        .await;
    assert_eq!(events.len(), 2, "{events:?}");

    // The CLI: --ca makes the endpoints https; without it the command fails; a CA file that
    // does not exist is named.
    let evlog = |args: &[&str]| {
        Command::new(evlog_binary())
            .args(args)
            .args(["--endpoints", &cluster.endpoints(), "--timeout-ms", "10000"])
            .output()
            .expect("running the evlog CLI")
    };
    let ca = cluster
        .tls()
        .expect("a TLS cluster")
        .ca()
        .display()
        .to_string();
    let appended = evlog(&["append", "tls-cli", "hello", "--ca", &ca]);
    assert!(
        appended.status.success(),
        "evlog append --ca: {}",
        String::from_utf8_lossy(&appended.stderr)
    );
    let read = evlog(&["read", "--stream", "tls-cli", "--json", "--ca", &ca]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("hello"));
    let plaintext = evlog(&["read", "--stream", "tls-cli", "--timeout-ms", "2000"]);
    assert!(
        !plaintext.status.success(),
        "a plaintext CLI read succeeded"
    );
    let missing = evlog(&["read", "--stream", "tls-cli", "--ca", "/nonexistent/ca.pem"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("--ca /nonexistent/ca.pem"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_clients_must_present_a_certificate_it_signed() {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        client_ca: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let certs = cluster.tls().expect("a TLS cluster");
    let follower = cluster.follower_of(leader);

    // A client certificate of the cluster's CA: appends through a follower too (the follower
    // presents its own certificate to the leader's client port).
    try_append(
        channel(&cluster.address(follower), Some(&certs.client())),
        append("mtls", "a"),
    )
    .await
    .expect("an append with a client certificate, through a follower");

    // No client certificate: refused.
    let anonymous = ClientTls::from_files(&certs.ca(), None).expect("the CA");
    let refused = try_append(
        channel(&cluster.address(leader), Some(&anonymous)),
        append("mtls", "b"),
    )
    .await;
    assert_transport_refusal(refused, "a client without a certificate", &[]);

    // A client certificate of another CA (the client trusts the cluster's CA): refused.
    let stranger = TestTls::generate(&cluster.path().join("other-ca"), 1);
    let (cert, key) = stranger.certificate("client");
    let foreign = ClientTls::from_files(&certs.ca(), Some((&cert, &key))).expect("files");
    let refused = try_append(
        channel(&cluster.address(leader), Some(&foreign)),
        append("mtls", "c"),
    )
    .await;
    assert_transport_refusal(refused, "a client certificate of another CA", &[]);
    let events = cluster
        .read_stream(leader, "mtls", Consistency::Linearizable)
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
}

/// A `ReadIndex` on the peer port at `address`, as node `sender` of this cluster would send
/// it.
async fn peer_read_index(
    address: &str,
    tls: Option<&ClientTls>,
    sender: u64,
) -> Result<u64, tonic::Status> {
    let request = ReadIndexRequest {
        header: Some(PeerHeader {
            cluster_id: "evlog".to_owned(),
            group_id: 0,
            sender_id: sender,
        }),
    };
    let response = RaftPeerClient::new(channel(address, tls))
        .read_index(request)
        .await?;
    Ok(response.into_inner().read_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_a_peer_without_a_certificate_of_the_peer_ca() {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let certs = cluster.tls().expect("a TLS cluster");
    let peer_address = cluster.peer_address(leader);
    let (node_cert, node_key) = certs.certificate("node-1");
    let member = ClientTls::from_files(&certs.ca(), Some((&node_cert, &node_key))).expect("files");

    // A peer with a certificate of the cluster's CA is served (the nodes electing a leader
    // above proved it too).
    let index = peer_read_index(&peer_address, Some(&member), 1)
        .await
        .expect("a member's certificate is accepted");
    assert!(index >= 1);

    // A stranger: another CA signed its certificate (it trusts the cluster's CA, so only the
    // node's check of the peer certificate can refuse it).
    let stranger = TestTls::generate(&cluster.path().join("other-ca"), 4);
    let (cert, key) = stranger.certificate("node-4");
    let foreign = ClientTls::from_files(&certs.ca(), Some((&cert, &key))).expect("files");
    let refused = peer_read_index(&peer_address, Some(&foreign), 4)
        .await
        .map_err(|status| status.clone());
    assert_transport_refusal(refused, "a peer certificate of another CA", &[]);

    // No certificate at all, and plaintext: refused too.
    let anonymous = ClientTls::from_files(&certs.ca(), None).expect("the CA");
    let refused = peer_read_index(&peer_address, Some(&anonymous), 1).await;
    assert_transport_refusal(refused, "a peer without a certificate", &[]);
    let refused = peer_read_index(&peer_address, None, 1).await;
    assert_transport_refusal(refused, "a plaintext peer", &[]);

    // The cluster goes on, with its three members and no other.
    cluster
        .append(
            leader,
            "after-strangers",
            vec![event("x", "Tested", "data")],
        )
        .await
        .expect("an append after the strangers were refused");
    let status = cluster.status(leader).await.expect("status");
    let members: Vec<u64> = status.members.iter().map(|member| member.node_id).collect();
    assert_eq!(members, [1, 2, 3]);
}

/// `evlog_peer_messages_refused_total{reason="certificate_name"}` of node `id`.
async fn refused_certificate_names(cluster: &Cluster, id: u64) -> f64 {
    cluster
        .metric(
            id,
            "evlog_peer_messages_refused_total{reason=\"certificate_name\"}",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_certificate_must_name_the_node_that_sends() {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let certs = cluster.tls().expect("a TLS cluster");
    let peer_address = cluster.peer_address(leader);
    let holding = |name: &str| {
        let (cert, key) = certs.certificate(name);
        ClientTls::from_files(&certs.ca(), Some((&cert, &key))).expect("files")
    };
    let node_1 = holding("node-1");
    peer_read_index(&peer_address, Some(&node_1), 1)
        .await
        .expect("node 1, with its own certificate");
    assert_eq!(refused_certificate_names(&cluster, leader).await, 0.0);

    // Certificates of the cluster's CA (the handshake succeeds), each naming another node than
    // the one the message says sends it: node 1's as node 2, and the client certificate (it
    // names `client`) as node 1.
    for (certificate, sender) in [("node-1", 2), ("client", 1)] {
        let status = peer_read_index(&peer_address, Some(&holding(certificate)), sender)
            .await
            .expect_err("a sender its certificate does not name");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{certificate} as node {sender}: {}",
            describe(&status)
        );
        assert!(
            status.message().contains(&format!("node-{sender}")),
            "{}",
            status.message()
        );
    }
    assert_eq!(refused_certificate_names(&cluster, leader).await, 2.0);

    // The cluster goes on.
    cluster
        .append(leader, "named", vec![event("x", "Tested", "data")])
        .await
        .expect("an append after the impostors were refused");
}

/// `evlog_tls_reloads_total{result="…"}`, read from the `/metrics` of the node at `http`.
async fn tls_reloads(http: &str, result: &str) -> Result<f64, String> {
    let metrics = http::get(http, "/metrics", Duration::from_secs(5)).await?;
    Ok(http::sample_value(
        &metrics.body,
        &format!("evlog_tls_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0))
}

/// Copies the CA, and node 1's certificate and key, of `from` over those of `to`: the files
/// a node of `to` reads.
fn replace_certificates(from: &TestTls, to: &TestTls) {
    let (from_cert, from_key) = from.certificate("node-1");
    let (to_cert, to_key) = to.certificate("node-1");
    for (from, to) in [
        (from.ca(), to.ca()),
        (from_cert, to_cert),
        (from_key, to_key),
    ] {
        std::fs::copy(&from, &to)
            .unwrap_or_else(|error| panic!("copying {from:?} to {to:?}: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificates_and_a_bad_file_keeps_the_old_ones() {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        tls: true,
        ..ClusterOptions::default()
    })
    .await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let http = cluster.http_address(1).await;
    let address = cluster.address(1);
    let served = cluster.tls().expect("a TLS cluster").clone();
    // A copy of the first CA: the file the node reads is replaced below.
    let first_ca = cluster.path().join("first-ca.pem");
    std::fs::copy(served.ca(), &first_ca).expect("copying the first CA");
    let trusts_first = ClientTls::from_files(&first_ca, None).expect("the first CA");

    // A connection open before the reload, which must keep working after it.
    let open = channel(&address, Some(&trusts_first));
    try_append(open.clone(), append("reload", "before"))
        .await
        .expect("an append with the first CA");

    // Files of a second CA in place of the first, then SIGHUP.
    let second = TestTls::generate(&cluster.path().join("second-ca"), 1);
    replace_certificates(&second, &served);
    let trusts_second = second.client();
    cluster.signal_all(&[1], "HUP");
    wait_for(
        Duration::from_secs(30),
        "a client of the second CA",
        async || {
            try_append(
                channel(&address, Some(&trusts_second)),
                append("reload", "second"),
            )
            .await
            .map_err(|status| describe(&status))
        },
    )
    .await;
    let refused = try_append(
        channel(&address, Some(&trusts_first)),
        append("reload", "first"),
    )
    .await;
    assert_transport_refusal(
        refused,
        "a new connection trusting the first CA after the reload",
        &["UnknownIssuer"],
    );
    try_append(open.clone(), append("reload", "open"))
        .await
        .expect("the connection opened before the reload still works");
    assert_eq!(tls_reloads(&http, "ok").await, Ok(1.0));
    let log = std::fs::read_to_string(cluster.log_path(1)).expect("the node's log");
    assert!(
        log.lines()
            .any(|line| line.contains("certificates reloaded") && line.contains(" expires ")),
        "no reload with the new expiry in {}",
        cluster.log_tail(1, 20)
    );

    // A broken key: the reload fails, names the flag and the file, and the node goes on
    // serving the second CA's certificate.
    let (_, key) = served.certificate("node-1");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .expect("writing a broken key");
    cluster.signal_all(&[1], "HUP");
    wait_for(
        Duration::from_secs(30),
        "the failed reload",
        async || match tls_reloads(&http, "error").await? {
            1.0 => Ok(()),
            other => Err(format!("{other} failed reloads")),
        },
    )
    .await;
    let log = std::fs::read_to_string(cluster.log_path(1)).expect("the node's log");
    let expected = format!("--tls-key {}", key.display());
    assert!(
        log.lines()
            .any(|line| line.contains("not reloaded") && line.contains(&expected)),
        "no error naming {expected} in {}",
        cluster.log_tail(1, 20)
    );
    try_append(
        channel(&address, Some(&trusts_second)),
        append("reload", "after-bad-key"),
    )
    .await
    .expect("a new connection, served the second CA's certificate after the failed reload");
    assert_eq!(tls_reloads(&http, "ok").await, Ok(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sighup_nodes_dial_each_other_with_the_new_certificates() {
    let mut cluster = Cluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    let mut http = Vec::new();
    for id in cluster.node_ids() {
        http.push(cluster.http_address(id).await);
    }

    // Every node's files replaced by those of a second CA, and every node reloaded: the
    // connections between them stay open, on the first CA's certificates.
    let second = cluster.path().join("second-ca");
    let trusts_second = TestTls::generate(&second, 3).client();
    for entry in std::fs::read_dir(&second).expect("the second CA's directory") {
        let from = entry.expect("a file of the second CA").path();
        let to = cluster
            .path()
            .join("certs")
            .join(from.file_name().expect("a name"));
        std::fs::copy(&from, &to)
            .unwrap_or_else(|error| panic!("copying {from:?} to {to:?}: {error}"));
    }
    cluster.signal_all(&cluster.node_ids(), "HUP");
    for address in &http {
        wait_for(
            Duration::from_secs(30),
            "every node reloaded",
            async || match tls_reloads(address, "ok").await? {
                1.0 => Ok(()),
                other => Err(format!("{other} reloads at {address}")),
            },
        )
        .await;
    }

    // A follower restarted (with the second CA's files, which it reads at start) must be
    // dialed anew by the leader: only the leader's reloaded outgoing certificate gets through.
    // (The harness's own channels trust the first CA: a new connection of theirs to the
    // leader would fail, so the test asks the leader through the second CA.)
    cluster.kill(follower).await;
    let to_leader = channel(&cluster.address(leader), Some(&trusts_second));
    try_append(to_leader.clone(), append("after-rotation", "x"))
        .await
        .expect("an append while the follower is down");
    let applied = ClusterClient::new(to_leader)
        .status(StatusRequest::default())
        .await
        .expect("the leader's status")
        .into_inner()
        .applied_index;
    cluster.restart(follower);
    cluster
        .wait_for_applied(follower, applied, Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_when_a_node_speaks_the_other_protocol() {
    let secure = Cluster::start(ClusterOptions {
        nodes: 1,
        tls: true,
        ..ClusterOptions::default()
    })
    .await;
    let plain = Cluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    })
    .await;
    secure.wait_for_leader(timeouts::LEADER).await;
    plain.wait_for_leader(timeouts::LEADER).await;
    let ca = secure
        .tls()
        .expect("a TLS cluster")
        .ca()
        .display()
        .to_string();
    // The command fails, and its error says why (stderr).
    let fails = |args: &[&str]| {
        let output = Command::new(evlog_binary())
            .args(args)
            .args(["--timeout-ms", "3000"])
            .output()
            .expect("running the evlog CLI");
        assert!(!output.status.success(), "evlog {args:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    // Plaintext to the TLS port: through the client's retried calls (read) and through a
    // command that asks each node itself (status).
    let tls_node = secure.address(1);
    let expected = format!("the node at {tls_node} serves TLS: use an https:// endpoint and --ca");
    for command in [&["read", "--stream", "s"][..], &["status"]] {
        let stderr = fails(&[command, &["--endpoints", &tls_node]].concat());
        assert!(stderr.contains(&expected), "{command:?}: {stderr}");
    }

    // TLS to the plaintext port.
    let plain_node = plain.address(1);
    let expected = format!("the node at {plain_node} does not serve TLS");
    for command in [&["read", "--stream", "s"][..], &["status"]] {
        let https = format!("https://{plain_node}");
        let stderr = fails(&[command, &["--endpoints", &https, "--ca", &ca]].concat());
        assert!(
            stderr.contains(&expected.replace(&plain_node, &https)),
            "{command:?}: {stderr}"
        );
    }

    // The Rust client says it too, in the status of the call.
    let client = evlog_client::EvlogClient::new(
        std::slice::from_ref(&tls_node),
        evlog_client::ClientOptions {
            deadline: Duration::from_secs(3),
            ..evlog_client::ClientOptions::default()
        },
    )
    .expect("a client");
    let status = client
        .append(append("s", "plain"))
        .await
        .expect_err("a plaintext append to a TLS node");
    assert!(
        status
            .message()
            .contains(&format!("the node at {tls_node} serves TLS")),
        "{}",
        describe(&status)
    );

    // A command that fails for another reason gets no such sentence.
    let stderr = fails(&[
        "read",
        "--stream",
        "s",
        "--endpoints",
        &tls_node,
        "--ca",
        "/nonexistent",
    ]);
    assert!(!stderr.contains("TLS"), "{stderr}");
}
