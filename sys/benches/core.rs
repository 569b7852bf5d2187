//! `cargo bench -p dmirror`: nanoseconds per 2-leg 4 KiB write group, per read, per flush,
//! through a zero-latency host (the cost of the core itself). Hand-rolled timing (no harness
//! dependency): best of several batches, to be robust to a busy machine.
use dmirror::*;
use std::time::Instant;

#[path = "../tests/support/zerolat.rs"]
mod zerolat;
use zerolat::*;

fn bench(name: &str, log: LogKind, op: ParentOp, sequential_regions: bool) {
    let c = config(log);
    let mut mem = vec![0u8; Mirror::memory_needed(&c).unwrap()];
    let init = Init::fresh(2, leg_sectors(&c), true);
    let mut h = Box::new(ZeroLat::new());
    let mut m = Mirror::new(&c, &init, &mut mem).unwrap();
    m.start(&mut *h);
    h.drain(&mut m);
    const N: u64 = 200_000;
    let mut best = f64::MAX;
    let mut handle = 0u64;
    for _batch in 0..7 {
        let t = Instant::now();
        for i in 0..N {
            handle += 1;
            // Same few regions (already marked) unless asked otherwise.
            let sector = if sequential_regions {
                (i * 8) % (c.data_sectors - 8)
            } else {
                (i % 64) * 8
            };
            m.submit(&mut *h, io(handle, op, sector)).unwrap();
            h.drain(&mut m);
        }
        let ns = t.elapsed().as_nanos() as f64 / N as f64;
        best = best.min(ns);
    }
    assert_eq!(h.failed, 0);
    println!("{name:<44} {best:>8.1} ns/op");
}

fn main() {
    println!("dmirror core, zero-latency host, 2 legs, 4 KiB I/Os (best of 7 x 200k)");
    bench(
        "write group (core log)",
        LogKind::Core,
        ParentOp::Write,
        false,
    );
    bench(
        "write group (on-legs log, region marked)",
        LogKind::OnLegs,
        ParentOp::Write,
        false,
    );
    bench(
        "write group (on-legs log, sequential)",
        LogKind::OnLegs,
        ParentOp::Write,
        true,
    );
    bench("read (core log)", LogKind::Core, ParentOp::Read, false);
    bench("read (on-legs log)", LogKind::OnLegs, ParentOp::Read, false);
    bench("flush (core log)", LogKind::Core, ParentOp::Flush, false);
}
