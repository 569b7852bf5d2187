//! `cargo bench -p dmirror --bench meta_overhead`: what the persistent log costs, and what it saves.
//!
//! 1. Per 1,000 user writes, for uniform random 4 KiB writes over a 1 GiB mirror and for 1 GiB of
//!    sequential 4 KiB writes: user writes, metadata writes, flushes, and extra bytes (metadata
//!    bytes written / user bytes written). Legs complete I/Os in submission order with a few
//!    writes in flight (queue depth 16), and the clock ticks every 1,000 writes (a fast disk
//!    doing 10k IOPS with a 100 ms tick), so lazy clearing runs as it would.
//! 2. A crash in the middle of a workload that touched 1 % of the device: the regions marked
//!    dirty on disk are what reassembly resyncs; reported as a share of the device (a mirror with
//!    no write-intent log resyncs 100 %).
use dmirror::*;
use std::collections::VecDeque;

struct Counting {
    q: VecDeque<(Token, LegOp, bool, u32)>,
    user_writes: u64,
    user_bytes: u64,
    meta_writes: u64,
    meta_bytes: u64,
    flushes: u64,
    /// Latest durable write-intent bitmap bytes on leg 0 (bitmap at `bitmap_start`).
    bitmap_start: u64,
    bitmap_disk: Vec<u8>,
    bitmap_cache: Vec<(u64, Vec<u8>)>,
    ss: u64,
    completed: u64,
}

impl Host for Counting {
    fn issue(&mut self, io: &LegIo<'_>) {
        let meta = matches!(io.buf, BufRef::Meta(_));
        match io.op {
            LegOp::Write if meta => {
                self.meta_writes += 1;
                self.meta_bytes += u64::from(io.count) * self.ss;
                if let BufRef::Meta(b) = io.buf {
                    if io.leg == 0 && io.sector >= self.bitmap_start {
                        let off = ((io.sector - self.bitmap_start) * self.ss) as usize;
                        if off < self.bitmap_disk.len() {
                            self.bitmap_cache.push((off as u64, b.to_vec()));
                        }
                    }
                }
            }
            LegOp::Write => {
                self.user_writes += 1;
                self.user_bytes += u64::from(io.count) * self.ss;
            }
            LegOp::Flush => {
                self.flushes += 1;
                if io.leg == 0 {
                    // Cached bitmap writes become durable.
                    for (off, b) in self.bitmap_cache.drain(..) {
                        let end = (off as usize + b.len()).min(self.bitmap_disk.len());
                        self.bitmap_disk[off as usize..end]
                            .copy_from_slice(&b[..end - off as usize]);
                    }
                }
            }
            _ => {}
        }
        self.q.push_back((io.token, io.op, meta, io.count));
    }
    fn complete(&mut self, _p: ParentHandle, r: IoResult) {
        assert!(r.is_ok());
        self.completed += 1;
    }
}

fn setup(c: &Config) -> (Counting, u64) {
    let leg = c.data_sectors + 65536;
    let lay = format::layout(leg, c.sector_size, c.region_sectors, c.data_sectors).unwrap();
    let h = Counting {
        q: VecDeque::new(),
        user_writes: 0,
        user_bytes: 0,
        meta_writes: 0,
        meta_bytes: 0,
        flushes: 0,
        bitmap_start: lay.bitmap_start,
        bitmap_disk: vec![0; (lay.bitmap_sectors * u64::from(c.sector_size)) as usize],
        bitmap_cache: Vec::new(),
        ss: u64::from(c.sector_size),
        completed: 0,
    };
    (h, leg)
}

fn run(name: &str, sequential: bool, stop_at_touched_share: Option<f64>) {
    let mut c = Config::new(2, 1 << 21); // 1 GiB
    c.log = LogKind::OnLegs;
    let (mut h, leg) = setup(&c);
    let mut mem = vec![0u8; Mirror::memory_needed(&c).unwrap()];
    let init = Init::fresh(2, leg, true);
    let mut m = Mirror::new(&c, &init, &mut mem).unwrap();
    m.start(&mut h);
    while let Some((t, ..)) = h.q.pop_front() {
        m.leg_done(&mut h, t, Ok(()));
    }
    let base = (h.meta_writes, h.meta_bytes, h.flushes);
    h.user_writes = 0;
    h.user_bytes = 0;
    let total_writes = c.data_sectors / 8; // 1 GiB of 4 KiB writes
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut touched = std::collections::HashSet::new();
    let mut n = 0u64;
    while n < total_writes {
        let sector = if sequential {
            n * 8
        } else if let Some(share) = stop_at_touched_share {
            // Random writes confined to `share` of the device (a hot set).
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % ((c.data_sectors as f64 * share) as u64 / 8)) * 8
        } else {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % (c.data_sectors / 8)) * 8
        };
        touched.insert(sector / 8);
        let io = ParentIo {
            handle: n,
            op: ParentOp::Write,
            sector,
            count: 8,
            fua: false,
            buf: 0,
        };
        m.submit(&mut h, io).unwrap();
        n += 1;
        // Queue depth 16: the next write is submitted when fewer than 16 are in flight.
        while n - h.completed >= 16 {
            let (t, ..) = h.q.pop_front().unwrap();
            m.leg_done(&mut h, t, Ok(()));
        }
        if n.is_multiple_of(1000) {
            m.tick(&mut h);
        }
        if let Some(share) = stop_at_touched_share {
            if n >= 50_000 {
                // Crash now: what is marked on disk is what reassembly will resync.
                let dirty: u64 = h
                    .bitmap_disk
                    .iter()
                    .map(|b| u64::from(b.count_ones()))
                    .sum();
                let regions = c.data_sectors.div_ceil(c.region_sectors);
                println!(
                    "{name}: touched {:.2} % of the device; {} of {} regions dirty on disk -> resync {:.2} % of the device (gmirror: 100 %)",
                    share * 100.0,
                    dirty,
                    regions,
                    dirty as f64 * 100.0 / regions as f64
                );
                return;
            }
        }
    }
    while let Some((t, ..)) = h.q.pop_front() {
        m.leg_done(&mut h, t, Ok(()));
    }
    let per = |x: u64| x as f64 * 1000.0 / n as f64;
    let mw = h.meta_writes - base.0;
    let mb = h.meta_bytes - base.1;
    let fl = h.flushes - base.2;
    println!(
        "{name:<34} per 1000 user writes: {:>7.0} leg data writes, {:>7.2} metadata writes, {:>7.2} flushes; extra bytes {:.3} %",
        per(h.user_writes),
        per(mw),
        per(fl),
        mb as f64 * 100.0 / h.user_bytes as f64
    );
}

fn main() {
    println!(
        "dmirror persistent-log overhead, 2 legs, 1 GiB mirror, 512 KiB regions, 4 KiB writes"
    );
    run("sequential 4 KiB (1 GiB)", true, None);
    run("uniform random 4 KiB (1 GiB total)", false, None);
    run("crash after 50k writes, 1 % hot set", false, Some(0.01));
}
