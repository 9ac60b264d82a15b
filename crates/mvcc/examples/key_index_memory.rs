//! Measures what the key index costs per key: the resident memory a million keys add, keys
//! included. Run: `cargo run --release -p cairn-mvcc --example key_index_memory`.

use cairn_mvcc::{KeyIndex, Revision};

const KEYS: u64 = 1_000_000;

fn resident_kib() -> usize {
    let statm =
        std::fs::read_to_string("/proc/self/statm").expect("Linux exposes /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's second field is the resident page count");
    pages * 4
}

fn main() {
    let mut index = KeyIndex::new();
    let before = resident_kib();
    for i in 0..KEYS {
        // Kubernetes-like 25-byte keys, inserted in a scattered order.
        let key = format!("/registry/k{:014}", (i * 7919) % KEYS);
        index.put(key.as_bytes(), Revision::new(i as i64 + 2, 0));
    }
    let bytes_per_key = (resident_kib() - before) * 1024 / KEYS as usize;
    println!(
        "{} keys of 25 bytes: {bytes_per_key} bytes per key, keys included",
        index.len()
    );
}
