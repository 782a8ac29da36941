//! The log's compression dictionary on a real store: trained from JSON-like events it pays
//! (and from random data it does not); the first dictionary entry is the log's, later ones
//! change nothing; events compressed with it read back as they were given, from the store
//! itself, after a reopen, and on a store that installed a snapshot. Each of the last two in a
//! process that has forgotten every dictionary: the store and the snapshot must carry it.

use bytes::Bytes;
use evlog_raft_store::EventReader;
use evlog_raft_store::PageLimit;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::dictionary;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::DataEncoding;
use evlog_raft_store::types::NewEvent;
use openraft::entry::RaftEntry;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;

mod common;

/// A 1 KiB JSON object with the same keys as every other, its values varying with `n`.
fn json(n: u64) -> Bytes {
    let mut text = format!(
        "{{\"order_id\":\"ord-{n:08}\",\"customer\":{{\"id\":{},\"tier\":\"gold\"}},\"items\":[",
        n * 7919 % 100_000
    );
    let mut item = 0;
    while text.len() < 1000 {
        if item > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            "{{\"sku\":\"SKU-{:06}\",\"quantity\":{},\"unit_price\":{}.{:02}}}",
            (n * 31 + item) * 104_729 % 1_000_000,
            item % 9 + 1,
            (n + item) * 13 % 500,
            item * 7 % 100
        ));
        item += 1;
    }
    text.push_str("]}");
    Bytes::from(text)
}

fn random(n: u64) -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..128)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect::<Vec<u8>>()
        .into()
}

struct Store {
    dir: TempDir,
    machine: StateMachine,
    reader: EventReader,
    next_index: u64,
}

impl Store {
    fn open(node_id: u64) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let (machine, reader) = open_in(&dir, node_id);
        Store {
            dir,
            machine,
            reader,
            next_index: 1,
        }
    }

    async fn apply(&mut self, command: Command) {
        let entry = Entry::new_normal(common::log_id(self.next_index), command);
        self.next_index += 1;
        common::apply(&mut self.machine, vec![entry])
            .await
            .expect("the entry applies");
    }

    async fn read_all(&self) -> Vec<Bytes> {
        read_all(&self.reader).await
    }
}

fn open_in(dir: &TempDir, node_id: u64) -> (StateMachine, EventReader) {
    let config = StoreConfig::new(dir.path(), node_id, "dictionary");
    let (_engine, _log, machine, reader) =
        evlog_raft_store::open(&config).expect("the store opens");
    (machine, reader)
}

async fn read_all(reader: &EventReader) -> Vec<Bytes> {
    reader
        .read(
            ReadTarget::All,
            ReadStart::Edge,
            PageLimit::count(10_000),
            false,
        )
        .await
        .expect("the read is served")
        .events
        .into_iter()
        .map(|event| event.data)
        .collect()
}

/// An append of `data` to stream "orders", each event's data as `encode` gives it.
fn append(data: &[Bytes], encode: impl Fn(&Bytes) -> (Bytes, DataEncoding)) -> Command {
    Command::Append(AppendCommand {
        stream: "orders".to_string(),
        events: data
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let (data, encoding) = encode(data);
                NewEvent {
                    id: format!("e{i}"),
                    event_type: "T".to_string(),
                    content_type: String::new(),
                    data,
                    metadata: vec![],
                    encoding,
                }
            })
            .collect(),
        expected_version: None,
        idempotency_key: None,
        request_fingerprint: 0,
        timestamp_ms: 1_000,
        idempotency: Default::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_compressed_events_read_back_after_a_reopen_and_a_snapshot_install() {
    let samples: Vec<Bytes> = (0..1_000).map(json).collect();
    let trained = dictionary::train(&samples).expect("JSON with the same keys trains a dictionary");
    assert!(trained.len() <= dictionary::DICTIONARY_BYTES);
    let encoder = dictionary::Encoder::new(&trained);
    let plain: usize = (0..100)
        .map(|n| evlog_raft_store::codec::compress(&json(5_000 + n)).map_or(1024, |f| f.len()))
        .sum();
    let with: usize = (0..100)
        .map(|n| encoder.compress(&json(5_000 + n)).map_or(1024, |f| f.len()))
        .sum();
    assert!(
        with * 5 <= plain * 4,
        "{with} bytes with the dictionary, {plain} without"
    );
    // Random data makes no dictionary worth having.
    let noise: Vec<Bytes> = (0..1_000).map(random).collect();
    assert!(dictionary::train(&noise).is_err());

    let mut store = Store::open(1);
    store
        .apply(Command::Dictionary(Bytes::from(trained.clone())))
        .await;
    assert_eq!(store.reader.applied().dictionary, encoder.id);
    // A later dictionary changes nothing: the first is the log's.
    let other = dictionary::train(&(0..1_000).map(|n| json(n * 3 + 1)).collect::<Vec<_>>())
        .expect("trains");
    assert_ne!(dictionary::id_of(&other), encoder.id);
    store.apply(Command::Dictionary(Bytes::from(other))).await;
    assert_eq!(store.reader.applied().dictionary, encoder.id);

    let data: Vec<Bytes> = (0..50).map(|n| json(10_000 + n)).collect();
    store
        .apply(append(&data, |data| {
            (
                Bytes::from(encoder.compress(data).expect("it pays")),
                DataEncoding::ZstdDictionary(encoder.id),
            )
        }))
        .await;
    assert_eq!(store.read_all().await, data);

    let built = store
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("the snapshot builds");

    // A process that never saw the dictionary: the snapshot brings it.
    dictionary::forget_all();
    let follower = Store::open(2);
    let mut machine = follower.machine.clone();
    machine
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .expect("the snapshot installs");
    assert_eq!(follower.reader.applied().dictionary, encoder.id);
    assert_eq!(follower.read_all().await, data);

    // And the store itself, opened again.
    dictionary::forget_all();
    let Store {
        dir,
        machine,
        reader,
        ..
    } = store;
    drop((machine, reader));
    let (_machine, reader) = open_in(&dir, 1);
    assert_eq!(reader.applied().dictionary, encoder.id);
    assert_eq!(read_all(&reader).await, data);
}
