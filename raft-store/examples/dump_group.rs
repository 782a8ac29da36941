//! Debug aid: prints a consumer group's record and tracked events from a stopped node's data
//! directory. `cargo run -p evlog-raft-store --example dump_group DIR NODE_ID CLUSTER_ID GROUP`
#![allow(clippy::unwrap_used)]

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config =
        evlog_raft_store::StoreConfig::new(&args[1], args[2].parse().unwrap(), args[3].clone());
    let (_engine, _log, _machine, reader) = evlog_raft_store::open(&config).unwrap();
    let (record, pending) = reader.consumer(args[4].clone()).await.unwrap().unwrap();
    println!("{record:?}");
    for (key, row) in pending.iter().take(40) {
        println!("{key}: {row:?}");
    }
    println!("{} tracked", pending.len());
}
