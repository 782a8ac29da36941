//! Prints each table's rows and stored bytes in a stopped node's database (a debugging aid).

use redb::ReadableDatabase;
use redb::ReadableTableMetadata;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: table_stats DATA_DIR")?;
    let db = redb::Database::open(std::path::Path::new(&path).join("evlog.redb"))?;
    let txn = db.begin_read()?;
    use evlog_raft_store::schema::*;
    let events = txn.open_table(EVENTS)?;
    println!(
        "events: {} rows, {:?}",
        events.len()?,
        events.stats()?.stored_bytes()
    );
    let log = txn.open_table(LOG)?;
    println!(
        "log: {} rows, {:?}",
        log.len()?,
        log.stats()?.stored_bytes()
    );
    let index = txn.open_table(STREAM_INDEX)?;
    println!(
        "index: {} rows, {:?}",
        index.len()?,
        index.stats()?.stored_bytes()
    );
    drop((events, log, index));
    drop(txn);
    let mut write = db.begin_write()?;
    let stats = write.stats()?;
    println!(
        "allocated pages {}, leaf pages {}, branch pages {}, stored {}, metadata {}, fragmented {}",
        stats.allocated_pages(),
        stats.leaf_pages(),
        stats.branch_pages(),
        stats.stored_bytes(),
        stats.metadata_bytes(),
        stats.fragmented_bytes()
    );
    write.set_durability(redb::Durability::None)?;
    write.abort()?;
    Ok(())
}
