//! Storage benchmarks (issue 6): container write throughput, and index lookup
//! latency and start-up time with many indexed objects. Run by
//! `bench/cache-bench.sh`, or by hand:
//!
//!     cargo run --release -p storage --example storage-bench -- write DIR MIB
//!     cargo run --release -p storage --example storage-bench -- index DIR OBJECTS
//!
//! `write` stores 1 MiB objects until MIB MiB are written into a container of twice
//! that size and prints MB/s (from the first insert to the last object durable and
//! indexed). `index` stores OBJECTS empty objects (one 4 KiB block each), reopens
//! the cache (start-up time), then looks up random keys and prints p50/p99/max.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::{Cache, CacheConfig, DiskConfig, Lookup, Meta};

fn config(dir: &Path, size: u64) -> CacheConfig {
    CacheConfig {
        index_dir: dir.join("index"),
        disks: vec![DiskConfig {
            path: dir.join("disk0"),
            size,
        }],
        hot_entries: NonZeroUsize::new(100_000).expect("non-zero"),
        hot_bodies: NonZeroUsize::new(1024).expect("non-zero"),
        hot_body_max_bytes: 0,
        io_threads_per_disk: 4,
        io_queue_per_disk: 256,
        write_queue: 4096,
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("disk0")).expect("create the bench directory");
}

/// Inserts `n` objects of `body`, keeping at most `window` in flight; returns when
/// the last is durable and indexed.
fn fill(cache: &Cache, n: usize, body: &Bytes, key: impl Fn(usize) -> String, window: usize) {
    let (tx, rx) = channel::<bool>();
    let mut in_flight = 0;
    let mut failed = 0;
    for i in 0..n {
        loop {
            let tx = tx.clone();
            match cache.insert(&key(i), Meta::default(), vec![body.clone()], move |ok| {
                let _ = tx.send(ok);
            }) {
                Ok(()) => break,
                Err(_) => {
                    // The writer's queue is full: wait for one to finish.
                    failed += usize::from(!rx.recv().expect("writer alive"));
                    in_flight -= 1;
                }
            }
        }
        in_flight += 1;
        while in_flight >= window {
            failed += usize::from(!rx.recv().expect("writer alive"));
            in_flight -= 1;
        }
    }
    while in_flight > 0 {
        failed += usize::from(!rx.recv().expect("writer alive"));
        in_flight -= 1;
    }
    assert_eq!(failed, 0, "{failed} objects were not stored");
}

fn write(dir: &Path, mib: u64) {
    fresh(dir);
    let cache = Cache::open(&config(dir, (2 * mib + 16) << 20)).expect("open the cache");
    let body = Bytes::from(vec![0x5au8; 1 << 20]);
    let t0 = Instant::now();
    fill(&cache, mib as usize, &body, |i| format!("/w/{i}.m4s"), 256);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "container write: {mib} MiB of 1 MiB objects in {secs:.2} s = {:.0} MB/s (synced and indexed)",
        (mib << 20) as f64 / secs / 1e6
    );
}

fn index(dir: &Path, n: usize) {
    fresh(dir);
    let size = ((n as u64 * 4096) >> 20) + 64;
    let cfg = config(dir, size << 20);
    let key = |i: usize| format!("/streams/ch{}/{}/{}.m4s", i % 97, i % 5, i);
    {
        let cache = Cache::open(&cfg).expect("open the cache");
        let t0 = Instant::now();
        fill(&cache, n, &Bytes::new(), key, 4096);
        println!(
            "index fill: {n} objects in {:.1} s ({:.0} objects/s)",
            t0.elapsed().as_secs_f64(),
            n as f64 / t0.elapsed().as_secs_f64()
        );
        cache.flush();
    }
    let t0 = Instant::now();
    let cache = Cache::open(&cfg).expect("reopen the cache");
    let start_up = t0.elapsed();
    println!(
        "start-up with {n} indexed objects: {:.0} ms (Cache::open)",
        start_up.as_secs_f64() * 1e3
    );
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut samples = Vec::with_capacity(200_000);
    let mut misses = 0;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key((x % n as u64) as usize);
        let t = Instant::now();
        let found = cache.lookup(&k);
        samples.push(t.elapsed());
        if !matches!(found, Lookup::Hit(_)) {
            misses += 1;
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "lookup of random keys among {n}: p50 {:.1} us, p99 {:.1} us, max {:.0} us ({misses} misses of 200000; hot set 100000 entries)",
        us(pct(0.5)),
        us(pct(0.99)),
        us(*samples.last().expect("samples"))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: storage-bench write DIR MIB | index DIR OBJECTS";
    let (mode, dir, n) = match args.as_slice() {
        [_, m, d, n] => (m.as_str(), PathBuf::from(d), n.parse::<u64>().expect(usage)),
        _ => panic!("{usage}"),
    };
    match mode {
        "write" => write(&dir, n),
        "index" => index(&dir, n as usize),
        _ => panic!("{usage}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
