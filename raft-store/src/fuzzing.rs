//! Fuzzing support shared by the property tests of the store and the node: changes to valid
//! input (bytes overwritten, inserted or removed, or the input cut), and store records sealed
//! with a CRC-32 that matches what they hold. Only with the `fuzzing` feature (tests).

use proptest::prelude::*;

/// A change to a valid record: bytes overwritten, inserted or removed, or the record cut.
#[derive(Clone, Debug)]
pub enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        1 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Cut),
    ]
}

/// `content` as a record: with the CRC-32 of what it holds after it.
pub fn sealed(mut content: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&content);
    content.extend_from_slice(&crc.to_le_bytes());
    content
}

/// A record's content (without its CRC) damaged by `edits`, sealed again.
pub fn resealed(record: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut content = record[..record.len() - 4].to_vec();
    damage(&mut content, edits);
    sealed(content)
}

pub fn damage(record: &mut Vec<u8>, edits: &[Edit]) {
    for edit in edits {
        let len = record.len().max(1);
        match *edit {
            Edit::Set(at, byte) => {
                if !record.is_empty() {
                    let at = at % record.len();
                    record[at] = byte;
                }
            }
            Edit::Insert(at, byte) => record.insert(at % (record.len() + 1), byte),
            Edit::Remove(at) => {
                if !record.is_empty() {
                    record.remove(at % len);
                }
            }
            Edit::Cut(at) => record.truncate(at % len),
        }
    }
}
