//! Proves the hot path allocates nothing: after a mirror is created, thousands of writes, reads,
//! flushes and discards — with the persistent log, metadata rounds, lazy clearing and a resync —
//! run with a counting global allocator that sees no allocation at all.
use dmirror::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

#[path = "support/zerolat.rs"]
mod zerolat;
use zerolat::*;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only allocations made by the test's own thread while armed count (the test harness's
    /// other threads allocate as they please).
    static ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn run(log: LogKind) {
    let c = config(log);
    let mut mem = vec![0u8; Mirror::memory_needed(&c).unwrap()];
    let mut init = Init::fresh(2, leg_sectors(&c), true);
    init.legs[1].state = LegState::Rebuilding; // a resync runs alongside
    let mut h = Box::new(ZeroLat::new());
    let mut m = Mirror::new(&c, &init, &mut mem).unwrap();
    let before = ALLOCS.load(Ordering::SeqCst);
    ARMED.with(|a| a.set(true));
    m.start(&mut *h);
    h.drain(&mut m);
    let ops = [
        ParentOp::Write,
        ParentOp::Read,
        ParentOp::Write,
        ParentOp::Flush,
        ParentOp::Discard,
    ];
    for i in 0..20_000u64 {
        let op = ops[(i % 5) as usize];
        let sector = (i * 7919 * 8) % (c.data_sectors - 8);
        m.submit(&mut *h, io(i, op, sector)).unwrap();
        h.drain(&mut m);
        if i % 500 == 0 {
            m.tick(&mut *h);
            h.drain(&mut m);
        }
    }
    let _ = m.status();
    ARMED.with(|a| a.set(false));
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(
        after - before,
        0,
        "{log:?}: the hot path allocated {} times",
        after - before
    );
    assert_eq!(h.completed, 20_000);
    assert_eq!(h.failed, 0);
    assert!(m.status().counters.resync_sectors > 0);
    // The counter does see allocations when armed (the test can fail).
    ARMED.with(|a| a.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    ARMED.with(|a| a.set(false));
    drop(v);
    assert!(ALLOCS.load(Ordering::SeqCst) > after);
}

#[test]
fn no_allocation_on_the_hot_path() {
    run(LogKind::Core);
    run(LogKind::OnLegs);
}
