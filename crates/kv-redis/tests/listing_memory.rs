//! What a key listing holds in this process, measured: the walk over a store of many short keys
//! must not allocate beyond the caller's budget, whether it succeeds or is refused. (Its own test
//! binary, with one test, so that nothing else allocates meanwhile.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use keyvalue::{Bounds, KeyValue, KvError};
use kv_redis::RedisStore;
use redis_test_server::RedisServer;

/// Counts what the allocator hands out as glibc's malloc does: each block with its 8-byte header,
/// rounded to 16 bytes, at least 32.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn block(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}

fn grow(size: usize) {
    let held = HELD.fetch_add(block(size), Relaxed) + block(size);
    PEAK.fetch_max(held, Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(block(layout.size()), Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a move: the old and the new block exist at once.
        grow(new_size);
        // SAFETY: the caller's contract is the system allocator's.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        HELD.fetch_sub(block(layout.size()), Relaxed);
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The result of `f` and the most it held beyond what was held before it ran.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.load(Relaxed);
    PEAK.store(before, Relaxed);
    let result = f();
    (result, PEAK.load(Relaxed) - before)
}

#[test]
fn listing_short_keys_holds_no_more_than_the_budget() {
    let server = RedisServer::start();
    let kv = RedisStore::new(&server.url()).expect("valid url");
    // 20 000 names of 5 bytes: 100 000 bytes of names, well within the budgets below; each
    // costs the host about 90 bytes more while listed.
    for i in 0..20_000 {
        kv.set("s", &format!("{i:05}"), b"", &Bounds::UNBOUNDED)
            .expect("set");
    }
    // The connection and its kept buffer exist before the measurements.
    kv.keys("s", &Bounds::UNBOUNDED).expect("warm-up listing");

    // The request's command, the SCAN pattern and the reply's outer values: a constant.
    const SLACK: usize = 4096;
    for budget in [200_000, 1 << 20] {
        let (result, peak) = peak_of(|| kv.keys("s", &Bounds::new(None, budget)));
        assert_eq!(
            result,
            Err(KvError::TooLarge {
                limit: budget,
                size: None
            })
        );
        eprintln!("a listing refused with a budget of {budget} held {peak} bytes");
        assert!(
            peak <= budget + SLACK,
            "a refused listing held {peak} bytes with a budget of {budget}"
        );
        // The connection dropped for being out of step is reopened before the next measurement.
        kv.open("s", &Bounds::UNBOUNDED).expect("reconnects");
    }
    let budget = 8 << 20;
    let (listed, peak) = peak_of(|| kv.keys("s", &Bounds::new(None, budget)).map(|k| k.len()));
    assert_eq!(listed, Ok(20_000));
    eprintln!("listing 20 000 keys held {peak} bytes");
    assert!(
        peak <= budget + SLACK,
        "listing held {peak} bytes with a budget of {budget}"
    );
}
