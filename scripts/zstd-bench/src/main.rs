//! Compression of evlog-like event payloads: 1 KiB JSON objects with repeated keys, and random
//! bytes; per event (no dictionary), per event with a trained dictionary, per batch of 100.
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self, len: usize) -> String {
        (0..len).map(|_| (b'a' + (self.next() % 26) as u8) as char).collect()
    }
}

fn json_event(rng: &mut Rng, n: u64) -> Vec<u8> {
    let mut s = format!(
        "{{\"order_id\":\"ord-{:012}\",\"customer\":{{\"id\":{},\"name\":\"{} {}\",\"email\":\"{}@{}.com\",\"tier\":\"{}\"}},\"status\":\"placed\",\"currency\":\"EUR\",\"created_at\":\"2026-11-29T{:02}:{:02}:{:02}.{:03}Z\",\"items\":[",
        n, rng.next() % 1_000_000, rng.word(6), rng.word(8), rng.word(7), rng.word(5),
        ["gold", "silver", "bronze"][(rng.next() % 3) as usize],
        rng.next() % 24, rng.next() % 60, rng.next() % 60, rng.next() % 1000
    );
    let mut first = true;
    while s.len() < 950 {
        if !first { s.push(','); }
        first = false;
        s.push_str(&format!(
            "{{\"sku\":\"SKU-{:06}\",\"quantity\":{},\"unit_price\":{}.{:02},\"warehouse\":\"wh-{}\"}}",
            rng.next() % 1_000_000, rng.next() % 10 + 1, rng.next() % 500, rng.next() % 100, rng.next() % 20
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

fn random_event(rng: &mut Rng) -> Vec<u8> {
    (0..128).flat_map(|_| rng.next().to_le_bytes()).collect()
}

fn measure(name: &str, events: &[Vec<u8>], dict: Option<&[u8]>, batch: usize, level: i32) {
    let raw: usize = events.iter().map(Vec::len).sum();
    let mut compressed = Vec::new();
    let started = Instant::now();
    match dict {
        Some(dict) => {
            let mut c = zstd::bulk::Compressor::with_dictionary(level, dict).unwrap();
            for e in events { compressed.push(c.compress(e).unwrap()); }
        }
        None if batch > 1 => {
            let mut c = zstd::bulk::Compressor::new(level).unwrap();
            for chunk in events.chunks(batch) { compressed.push(c.compress(&chunk.concat()).unwrap()); }
        }
        None => {
            let mut c = zstd::bulk::Compressor::new(level).unwrap();
            for e in events { compressed.push(c.compress(e).unwrap()); }
        }
    }
    let c_secs = started.elapsed().as_secs_f64();
    let stored: usize = compressed.iter().map(Vec::len).sum();
    let started = Instant::now();
    let cap = events.iter().map(Vec::len).max().unwrap() * batch.max(1);
    match dict {
        Some(dict) => {
            let mut d = zstd::bulk::Decompressor::with_dictionary(dict).unwrap();
            for c in &compressed { std::hint::black_box(d.decompress(c, cap).unwrap()); }
        }
        None => {
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            for c in &compressed { std::hint::black_box(d.decompress(c, cap).unwrap()); }
        }
    }
    let d_secs = started.elapsed().as_secs_f64();
    println!(
        "{name:<44} ratio {:5.2}  compress {:7.1} MB/s ({:5.2} us/event)  decompress {:7.1} MB/s ({:5.2} us/event)",
        raw as f64 / stored as f64,
        raw as f64 / c_secs / 1e6, c_secs * 1e6 / events.len() as f64,
        raw as f64 / d_secs / 1e6, d_secs * 1e6 / events.len() as f64,
    );
}

fn main() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let n = 20_000;
    let json: Vec<Vec<u8>> = (0..n).map(|i| json_event(&mut rng, i)).collect();
    let random: Vec<Vec<u8>> = (0..n).map(|_| random_event(&mut rng)).collect();
    println!("json event: {} bytes avg; sample: {}", json.iter().map(Vec::len).sum::<usize>() / json.len(), String::from_utf8_lossy(&json[0][..200]));
    let started = Instant::now();
    let dict = zstd::dict::from_samples(&json[..2000], 16 * 1024).unwrap();
    println!("dictionary: {} bytes trained on 2,000 events in {:.0} ms", dict.len(), started.elapsed().as_secs_f64() * 1e3);
    for (name, events) in [("json 1KiB", &json), ("random 1KiB", &random)] {
        for level in [1, 3] {
            measure(&format!("{name} per event, level {level}"), events, None, 1, level);
        }
        measure(&format!("{name} per event + 16 KiB dictionary, level 3"), events, Some(&dict), 1, 3);
        measure(&format!("{name} per batch of 100, level 3"), events, None, 100, 3);
    }
}
