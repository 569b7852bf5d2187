//! Unit tests of the core through a small in-memory host: each behaviour of the write group,
//! read fallback, failure handling, resync and the persistent log, one by one. (The randomized,
//! adversarial testing lives in the simulator, `tests/sim`.)
use crate::*;
use std::collections::{BTreeMap, VecDeque};
use std::vec;
use std::vec::Vec;

pub(crate) struct TestHost {
    pub legs: Vec<Vec<u8>>,
    pub ss: usize,
    pub bufs: BTreeMap<u64, Vec<u8>>,
    pub resync_bufs: Vec<Vec<u8>>,
    pub pending: VecDeque<(LegIo<'static>, Vec<u8>)>,
    pub done: Vec<(u64, IoResult)>,
    pub events: Vec<Event>,
    /// Per leg: fail every I/O with this error.
    pub fail: Vec<Option<IoError>>,
    /// Per leg: sector ranges that fail to read.
    pub bad_reads: Vec<Vec<(u64, u64)>>,
    pub issued: Vec<LegIo<'static>>,
    /// Disk log tests: the last entry of `legs` is the log device (`LOG_DEV` I/O goes there).
    pub log_dev: bool,
}

impl TestHost {
    pub fn new(nlegs: usize, sectors: u64, ss: usize) -> TestHost {
        TestHost {
            legs: vec![vec![0u8; sectors as usize * ss]; nlegs],
            ss,
            bufs: BTreeMap::new(),
            resync_bufs: vec![vec![0u8; 1 << 20]; 8],
            pending: VecDeque::new(),
            done: Vec::new(),
            events: Vec::new(),
            fail: vec![None; nlegs],
            bad_reads: vec![Vec::new(); nlegs],
            issued: Vec::new(),
            log_dev: false,
        }
    }

    /// Deliver one pending I/O (the oldest, or the newest with `lifo`).
    pub fn step(&mut self, m: &mut Mirror<'_>, lifo: bool) -> bool {
        let Some((io, meta)) = (if lifo {
            self.pending.pop_back()
        } else {
            self.pending.pop_front()
        }) else {
            return false;
        };
        let leg = if self.log_dev && io.leg == LOG_DEV {
            self.legs.len() - 1
        } else {
            io.leg as usize
        };
        let ss = self.ss;
        let mut res = match self.fail[leg] {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if res.is_ok() && io.op == LegOp::Read {
            for &(a, b) in &self.bad_reads[leg] {
                if io.sector < b && a < io.sector + u64::from(io.count) {
                    res = Err(IoError::Io);
                }
            }
        }
        if res.is_ok() {
            let off = io.sector as usize * ss;
            let len = io.count as usize * ss;
            match (io.op, io.buf) {
                (LegOp::Write, BufRef::Parent { buf, offset }) => {
                    let b = &self.bufs[&buf][offset as usize..offset as usize + len];
                    self.legs[leg][off..off + len].copy_from_slice(b);
                }
                (LegOp::Write, BufRef::Resync { slot, offset }) => {
                    let b = self.resync_bufs[slot as usize][offset as usize..offset as usize + len]
                        .to_vec();
                    self.legs[leg][off..off + len].copy_from_slice(&b);
                }
                (LegOp::Write, BufRef::Meta(_)) => {
                    self.legs[leg][off..off + len].copy_from_slice(&meta[..len]);
                }
                (LegOp::Read, BufRef::Parent { buf, offset }) => {
                    let src = self.legs[leg][off..off + len].to_vec();
                    self.bufs.get_mut(&buf).unwrap()[offset as usize..offset as usize + len]
                        .copy_from_slice(&src);
                }
                (LegOp::Read, BufRef::Resync { slot, offset }) => {
                    let src = self.legs[leg][off..off + len].to_vec();
                    self.resync_bufs[slot as usize][offset as usize..offset as usize + len]
                        .copy_from_slice(&src);
                }
                (LegOp::Discard, _) => self.legs[leg][off..off + len].fill(0),
                _ => {}
            }
        }
        m.leg_done(self, io.token, res);
        true
    }

    pub fn run(&mut self, m: &mut Mirror<'_>) {
        let mut n = 0;
        while self.step(m, false) {
            n += 1;
            assert!(n < 1_000_000, "runaway");
        }
    }

    pub fn completed(&self, h: u64) -> Option<IoResult> {
        self.done.iter().find(|(x, _)| *x == h).map(|(_, r)| *r)
    }
}

impl Host for TestHost {
    fn issue(&mut self, io: &LegIo<'_>) {
        let meta = match io.buf {
            BufRef::Meta(b) => b.to_vec(),
            _ => Vec::new(),
        };
        let io2 = LegIo {
            buf: if let BufRef::Meta(_) = io.buf {
                BufRef::Meta(&[])
            } else {
                unsafe_static(io.buf)
            },
            ..*io
        };
        self.issued.push(io2);
        self.pending.push_back((io2, meta));
    }
    fn complete(&mut self, parent: ParentHandle, result: IoResult) {
        assert!(
            self.completed(parent).is_none(),
            "parent {parent} completed twice"
        );
        self.done.push((parent, result));
    }
    fn event(&mut self, e: Event) {
        self.events.push(e);
    }
}

fn unsafe_static(b: BufRef<'_>) -> BufRef<'static> {
    match b {
        BufRef::None => BufRef::None,
        BufRef::Parent { buf, offset } => BufRef::Parent { buf, offset },
        BufRef::Resync { slot, offset } => BufRef::Resync { slot, offset },
        BufRef::Meta(_) => BufRef::Meta(&[]),
    }
}

pub(crate) fn cfg(legs: u8, data: u64, log: LogKind) -> Config {
    let mut c = Config::new(legs, data);
    c.region_sectors = 16;
    c.log = log;
    c.max_parents = 16;
    c.max_leg_ios = 64;
    c.resync.chunk_sectors = 8;
    c.resync.max_inflight = 2;
    c.clear_delay_ticks = 2;
    c
}

pub(crate) fn write(
    h: &mut TestHost,
    m: &mut Mirror<'_>,
    handle: u64,
    sector: u64,
    count: u32,
    byte: u8,
) {
    h.bufs.insert(handle, vec![byte; count as usize * h.ss]);
    m.submit(
        h,
        ParentIo {
            handle,
            op: ParentOp::Write,
            sector,
            count,
            fua: false,
            buf: handle,
        },
    )
    .unwrap();
}

pub(crate) fn read(h: &mut TestHost, m: &mut Mirror<'_>, handle: u64, sector: u64, count: u32) {
    h.bufs.insert(handle, vec![0xEE; count as usize * h.ss]);
    m.submit(
        h,
        ParentIo {
            handle,
            op: ParentOp::Read,
            sector,
            count,
            fua: false,
            buf: handle,
        },
    )
    .unwrap();
}

fn leg_bytes(h: &TestHost, leg: usize, sector: u64, count: u64) -> &[u8] {
    &h.legs[leg][sector as usize * h.ss..(sector + count) as usize * h.ss]
}

macro_rules! mirror {
    ($m:ident, $mem:ident, $cfg:expr, $init:expr) => {
        let c = $cfg;
        let mut $mem = vec![0u8; Mirror::memory_needed(&c).unwrap()];
        let init = $init;
        #[allow(unused_mut)]
        let mut $m = Mirror::new(&c, &init, &mut $mem).unwrap();
    };
}

#[test]
fn write_group_completes_only_after_every_leg() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    write(&mut h, &mut m, 1, 10, 4, 0xAB);
    assert_eq!(
        h.pending.len(),
        2,
        "one data write per leg, no journal with the core log"
    );
    h.step(&mut m, false);
    assert_eq!(h.completed(1), None, "must not complete after one leg");
    h.step(&mut m, false);
    assert_eq!(h.completed(1), Some(Ok(())));
    assert!(leg_bytes(&h, 0, 10, 4).iter().all(|b| *b == 0xAB));
    assert!(leg_bytes(&h, 1, 10, 4).iter().all(|b| *b == 0xAB));
    assert!(m.is_idle());
}

#[test]
fn write_error_fails_the_leg_not_the_parent_unless_all_fail() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    h.fail[1] = Some(IoError::Io);
    write(&mut h, &mut m, 1, 0, 8, 1);
    h.run(&mut m);
    assert_eq!(h.completed(1), Some(Ok(())));
    assert_eq!(m.status().leg[1].state, LegState::Failed);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::LegFailed { leg: 1, .. })));
    // Further writes go to leg 0 only.
    write(&mut h, &mut m, 2, 0, 8, 2);
    assert_eq!(h.pending.len(), 1);
    h.fail[0] = Some(IoError::Io);
    h.run(&mut m);
    assert_eq!(h.completed(2), Some(Err(IoError::Io)), "every leg failed");
    // The last in-sync leg is not taken out: it keeps serving what it can.
    assert_eq!(m.status().leg[0].state, LegState::InSync);
    assert_eq!(m.status().leg[0].errors, 1);
    h.fail[0] = None;
    read(&mut h, &mut m, 3, 0, 8);
    h.run(&mut m);
    assert_eq!(h.completed(3), Some(Ok(())));
}

#[test]
fn read_falls_back_and_repairs() {
    let mut h = TestHost::new(2, 256, 512);
    let mut c = cfg(2, 256, LogKind::Core);
    c.read_policy = ReadPolicy::Prefer { leg: 0 };
    mirror!(m, mem, c, Init::fresh(2, 256, true));
    write(&mut h, &mut m, 1, 0, 16, 7);
    h.run(&mut m);
    h.legs[0][512 * 3] = 0x55; // would be wrong data, but leg 0 reports an error there anyway
    h.bad_reads[0].push((2, 5));
    read(&mut h, &mut m, 2, 0, 8);
    h.run(&mut m);
    assert_eq!(h.completed(2), Some(Ok(())));
    assert!(h.bufs[&2].iter().all(|b| *b == 7), "served from leg 1");
    assert_eq!(m.status().counters.repairs, 1);
    assert!(
        leg_bytes(&h, 0, 0, 8).iter().all(|b| *b == 7),
        "leg 0 rewritten"
    );
    assert_eq!(m.status().leg[0].state, LegState::InSync);
}

#[test]
fn read_with_no_candidate_fails_with_last_error() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    h.bad_reads[0].push((0, 1));
    h.bad_reads[1].push((0, 1));
    read(&mut h, &mut m, 1, 0, 1);
    h.run(&mut m);
    assert_eq!(h.completed(1), Some(Err(IoError::Io)));
}

#[test]
fn overlapping_writes_reach_legs_in_order() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    write(&mut h, &mut m, 1, 0, 8, 1);
    write(&mut h, &mut m, 2, 4, 8, 2);
    assert_eq!(h.pending.len(), 2, "the second write waits for the first");
    // Deliver newest first: still ordered, because the second is not issued yet.
    while h.step(&mut m, true) {}
    assert_eq!(h.completed(2), Some(Ok(())));
    for leg in 0..2 {
        assert!(leg_bytes(&h, leg, 4, 8).iter().all(|b| *b == 2));
        assert!(leg_bytes(&h, leg, 0, 4).iter().all(|b| *b == 1));
    }
}

#[test]
fn pool_exhaustion_waits_in_order_and_busy_when_parents_full() {
    let mut h = TestHost::new(2, 256, 512);
    let mut c = cfg(2, 256, LogKind::Core);
    c.max_leg_ios = 2;
    c.max_parents = 3;
    mirror!(m, mem, c, Init::fresh(2, 256, true));
    write(&mut h, &mut m, 1, 0, 1, 1);
    write(&mut h, &mut m, 2, 100, 1, 2);
    write(&mut h, &mut m, 3, 200, 1, 3);
    assert_eq!(h.pending.len(), 2, "only one group fits in two slots");
    h.bufs.insert(4, vec![0; 512]);
    assert_eq!(
        m.submit(
            &mut h,
            ParentIo {
                handle: 4,
                op: ParentOp::Write,
                sector: 0,
                count: 1,
                fua: false,
                buf: 4
            }
        ),
        Err(Busy)
    );
    h.run(&mut m);
    assert_eq!(
        h.done.iter().map(|d| d.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(h.events.contains(&Event::Ready));
}

#[test]
fn missing_leg_rejoins_incrementally() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    h.fail[1] = Some(IoError::Gone);
    write(&mut h, &mut m, 1, 32, 4, 9);
    h.run(&mut m);
    assert_eq!(m.status().leg[1].state, LegState::Missing);
    write(&mut h, &mut m, 2, 100, 4, 8);
    h.run(&mut m);
    h.fail[1] = None;
    m.add_leg(&mut h, 1, *b"dmirror-leg-0001", 256, true)
        .unwrap();
    assert_eq!(
        m.status().leg[1].regions_out_of_sync,
        2,
        "only the two regions written"
    );
    h.run(&mut m);
    assert_eq!(m.status().leg[1].state, LegState::InSync);
    assert_eq!(m.status().counters.resync_sectors, 32);
    assert_eq!(h.legs[0][..256 * 512], h.legs[1][..256 * 512]);
}

#[test]
fn a_leg_reported_gone_is_missing_at_once_and_tracked() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    m.leg_gone(&mut h, 1).unwrap();
    assert_eq!(m.status().leg[1].state, LegState::Missing);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::LegFailed {
            leg: 1,
            state: LegState::Missing,
            ..
        }
    )));
    assert_eq!(m.leg_gone(&mut h, 1), Err(ControlError::WrongState));
    assert_eq!(m.leg_gone(&mut h, 0), Err(ControlError::LastLeg));
    assert_eq!(m.leg_gone(&mut h, 7), Err(ControlError::NoSuchLeg));
    write(&mut h, &mut m, 1, 40, 4, 3);
    h.run(&mut m);
    assert_eq!(
        m.status().leg[1].regions_out_of_sync,
        1,
        "the write is tracked for its return"
    );
}

#[test]
fn new_leg_full_resync_while_writes_go_on() {
    let mut h = TestHost::new(2, 256, 512);
    let mut init = Init::fresh(2, 256, true);
    init.legs[1].state = LegState::Empty;
    mirror!(m, mem, cfg(2, 256, LogKind::Core), init);
    for i in 0..16u64 {
        write(&mut h, &mut m, i, i * 16, 16, i as u8 + 1);
    }
    h.run(&mut m);
    m.add_leg(&mut h, 1, [2; 16], 256, false).unwrap();
    // Interleave: writes during resync.
    for i in 0..8u64 {
        write(&mut h, &mut m, 100 + i, i * 32 + 3, 5, 0xF0 + i as u8);
        h.step(&mut m, false);
        h.step(&mut m, true);
    }
    h.run(&mut m);
    assert_eq!(m.status().leg[1].state, LegState::InSync);
    assert_eq!(h.legs[0], h.legs[1]);
    // Reads never went to leg 1 before it was in sync for the region: checked by the sim.
}

#[test]
fn a_rebuilding_leg_with_nothing_to_copy_comes_in_sync_at_the_next_tick() {
    // Assembly starts a stale leg whose tracking bitmap is empty as rebuilding (incremental):
    // the copy engine has nothing to visit, so without the tick's sweep it stayed rebuilding.
    let mut h = TestHost::new(3, 256, 512);
    let mut init = Init::fresh(3, 256, true);
    init.legs[2].state = LegState::Rebuilding;
    init.legs[2].rebuild = Rebuild {
        checkpoint: 0,
        full: false,
    };
    mirror!(m, mem, cfg(3, 256, LogKind::Core), init);
    h.run(&mut m);
    assert_eq!(m.status().leg[2].state, LegState::Rebuilding);
    m.tick(&mut h);
    h.run(&mut m);
    assert_eq!(m.status().leg[2].state, LegState::InSync);
    assert!(h.events.contains(&Event::LegInSync { leg: 2 }));
}

#[test]
fn reads_avoid_a_leg_not_in_sync() {
    let mut h = TestHost::new(2, 256, 512);
    let mut init = Init::fresh(2, 256, false);
    init.legs[1].state = LegState::Rebuilding;
    let mut c = cfg(2, 256, LogKind::Core);
    c.read_policy = ReadPolicy::Prefer { leg: 1 };
    c.resync.sectors_per_tick = 1; // effectively paused until ticks
    mirror!(m, mem, c, init);
    read(&mut h, &mut m, 1, 0, 8);
    assert!(h.pending.iter().all(|(io, _)| !(io.leg == 1
        && io.op == LegOp::Read
        && matches!(io.buf, BufRef::Parent { .. }))));
    h.run(&mut m);
    assert_eq!(h.completed(1), Some(Ok(())));
}

#[test]
fn flush_and_discard() {
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    m.submit(
        &mut h,
        ParentIo {
            handle: 1,
            op: ParentOp::Flush,
            sector: 0,
            count: 0,
            fua: false,
            buf: 0,
        },
    )
    .unwrap();
    assert_eq!(
        h.pending
            .iter()
            .filter(|(io, _)| io.op == LegOp::Flush)
            .count(),
        2
    );
    h.run(&mut m);
    assert_eq!(h.completed(1), Some(Ok(())));
    // Discard: one leg does not support it — not a failure.
    m.submit(
        &mut h,
        ParentIo {
            handle: 2,
            op: ParentOp::Discard,
            sector: 0,
            count: 8,
            fua: false,
            buf: 0,
        },
    )
    .unwrap();
    let (io, meta) = h.pending.pop_back().unwrap();
    m.leg_done(&mut h, io.token, Err(IoError::NotSupported));
    let _ = meta;
    h.run(&mut m);
    assert_eq!(h.completed(2), Some(Ok(())));
    assert_eq!(m.status().leg[io.leg as usize].state, LegState::InSync);
    // Invalid parents complete at once.
    m.submit(
        &mut h,
        ParentIo {
            handle: 3,
            op: ParentOp::Read,
            sector: 250,
            count: 8,
            fua: false,
            buf: 0,
        },
    )
    .unwrap();
    assert_eq!(h.completed(3), Some(Err(IoError::Invalid)));
}

#[test]
fn bad_configurations_are_refused() {
    let good = cfg(2, 256, LogKind::Core);
    let mut c = good;
    c.legs = 0;
    assert_eq!(Mirror::memory_needed(&c), Err(ConfigError::LegCount));
    c = good;
    c.legs = 33;
    assert_eq!(Mirror::memory_needed(&c), Err(ConfigError::LegCount));
    c = good;
    c.sector_size = 1000;
    assert_eq!(Mirror::memory_needed(&c), Err(ConfigError::SectorSize));
    c = good;
    c.region_sectors = 24;
    assert_eq!(Mirror::memory_needed(&c), Err(ConfigError::RegionSize));
    c = good;
    c.read_policy = ReadPolicy::Prefer { leg: 5 };
    assert_eq!(Mirror::memory_needed(&c), Err(ConfigError::ReadPolicy));
    c = good;
    c.max_parents = 0;
    assert_eq!(Mirror::memory_needed(&c), Err(ConfigError::PoolSize));
    let mut small = [0u8; 64];
    let init = Init::fresh(2, 256, true);
    assert!(matches!(
        Mirror::new(&good, &init, &mut small),
        Err(ConfigError::Memory)
    ));
    let mut mem = vec![0u8; Mirror::memory_needed(&good).unwrap()];
    let mut init = Init::fresh(2, 256, true);
    init.legs[0].state = LegState::Failed;
    init.legs[1].state = LegState::Failed;
    assert!(matches!(
        Mirror::new(&good, &init, &mut mem),
        Err(ConfigError::InitialState)
    ));
}

// ---- the persistent log ----

fn persistent_setup(h: &mut TestHost) -> (Config, u64) {
    let data = 256;
    let c = cfg(2, data, LogKind::OnLegs);
    let need = crate::format::layout(1 << 20, 512, c.region_sectors, data).unwrap();
    let _ = need;
    let leg_sectors = (h.legs[0].len() / h.ss) as u64;
    (c, leg_sectors)
}

#[test]
fn journal_before_data_and_group_commit() {
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    m.start(&mut h);
    h.run(&mut m); // initial metadata round
    let issued_before = h.issued.len();
    // The first write starts a bitmap round at once; the two arriving while it is in flight
    // share the next one.
    write(&mut h, &mut m, 1, 0, 4, 1);
    write(&mut h, &mut m, 2, 20, 4, 2);
    write(&mut h, &mut m, 4, 40, 4, 4);
    // No data write is issued before the bitmap write + flush on that leg.
    let new: Vec<_> = h.issued[issued_before..].to_vec();
    assert!(
        new.iter().all(|io| matches!(io.buf, BufRef::Meta(_))),
        "only metadata first: {new:?}"
    );
    assert_eq!(
        new.iter().filter(|io| io.op == LegOp::Write).count(),
        2,
        "round 1: one bitmap write per leg"
    );
    h.run(&mut m);
    let rounds: Vec<_> = h.issued[issued_before..]
        .iter()
        .filter(|io| matches!(io.buf, BufRef::Meta(_)) && io.op == LegOp::Write)
        .collect();
    assert_eq!(
        rounds.len(),
        4,
        "two rounds for three writes (group commit)"
    );
    assert_eq!(h.completed(1), Some(Ok(())));
    assert_eq!(h.completed(2), Some(Ok(())));
    assert_eq!(h.completed(4), Some(Ok(())));
    // A second write to a marked region skips the journal.
    let before = h.issued.len();
    write(&mut h, &mut m, 3, 1, 1, 3);
    assert!(h.issued[before..]
        .iter()
        .all(|io| matches!(io.buf, BufRef::Parent { .. })));
    h.run(&mut m);
    // Order on each leg: the bitmap flush came before the data write.
    for leg in 0..2u8 {
        let seq: Vec<_> = h.issued.iter().filter(|io| io.leg == leg).collect();
        let first_data = seq
            .iter()
            .position(|io| matches!(io.buf, BufRef::Parent { .. }))
            .unwrap();
        assert!(seq[..first_data].iter().any(|io| io.op == LegOp::Flush));
    }
}

#[test]
fn zero_dirty_regions_means_the_cleared_bitmap_is_durable() {
    // A host waiting for "0 dirty regions" before it pulls the plug must find nothing to resync.
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    h.run(&mut m);
    write(&mut h, &mut m, 1, 0, 4, 1);
    h.run(&mut m);
    assert_eq!(m.status().dirty_regions, 1);
    let mut seen_zero = false;
    for _ in 0..8 {
        m.tick(&mut h);
        // Complete the metadata I/O one at a time, looking at the status in between.
        loop {
            let meta_pending = h
                .pending
                .iter()
                .any(|(io, _)| matches!(io.buf, BufRef::Meta(_)) || io.op == LegOp::Flush);
            if m.status().dirty_regions == 0 {
                seen_zero = true;
                assert!(
                    !meta_pending,
                    "0 dirty regions while the bitmap write is in flight"
                );
            }
            if !h.step(&mut m, false) {
                break;
            }
        }
    }
    assert!(seen_zero, "the region was never cleared");
}

#[test]
fn bits_clear_after_idle_period_with_flush_first() {
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    h.run(&mut m);
    write(&mut h, &mut m, 1, 0, 4, 1);
    h.run(&mut m);
    assert_eq!(m.status().dirty_regions, 1);
    let mut flushes_before_clear = 0;
    for _ in 0..6 {
        m.tick(&mut h);
        flushes_before_clear += h
            .pending
            .iter()
            .filter(|(io, _)| io.op == LegOp::Flush)
            .count();
        h.run(&mut m);
    }
    assert_eq!(m.status().dirty_regions, 0);
    assert!(flushes_before_clear >= 2);
}

#[test]
fn leg_failure_is_durable_before_the_write_completes() {
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    h.run(&mut m);
    write(&mut h, &mut m, 1, 0, 4, 1);
    // Deliver the journal round, then fail leg 1's data write.
    while let Some((io, _)) = h.pending.front() {
        if matches!(io.buf, BufRef::Parent { .. }) {
            break;
        }
        h.step(&mut m, false);
    }
    h.fail[1] = Some(IoError::Io);
    let mut sb_write_seen = false;
    while let Some((io, _)) = h.pending.front().cloned() {
        if h.completed(1).is_some() {
            break;
        }
        if io.leg == 0
            && io.op == LegOp::Write
            && matches!(io.buf, BufRef::Meta(_))
            && io.count == 8
        {
            sb_write_seen = true;
        }
        h.step(&mut m, false);
    }
    h.run(&mut m);
    assert!(
        sb_write_seen,
        "a superblock went to the survivor before completion"
    );
    assert_eq!(h.completed(1), Some(Ok(())));
    // The survivor's superblock says leg 1 failed.
    let lay = crate::format::layout(ls, 512, 16, 256).unwrap();
    let s0 = crate::format::Superblock::decode(leg_bytes(&h, 0, lay.slots[0], 8));
    let s1 = crate::format::Superblock::decode(leg_bytes(&h, 0, lay.slots[1], 8));
    let sb = crate::format::newest(s0, s1).unwrap();
    assert_eq!(crate::LegState::from(sb.legs[1].state), LegState::Failed);
}

#[test]
fn clean_shutdown_sets_clean_and_clears_bits() {
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    write(&mut h, &mut m, 1, 0, 4, 1);
    h.run(&mut m);
    m.shutdown(&mut h);
    h.run(&mut m);
    assert!(h.events.contains(&Event::ShutdownDone));
    assert_eq!(m.status().dirty_regions, 0);
    let lay = crate::format::layout(ls, 512, 16, 256).unwrap();
    let s0 = crate::format::Superblock::decode(leg_bytes(&h, 1, lay.slots[0], 8));
    let s1 = crate::format::Superblock::decode(leg_bytes(&h, 1, lay.slots[1], 8));
    let sb = crate::format::newest(s0, s1);
    assert!(sb.as_ref().map(|s| s.clean).unwrap_or(false), "{sb:?}");
    assert!(leg_bytes(&h, 1, lay.bitmap_start, 1)
        .iter()
        .all(|b| *b == 0));
}

#[test]
fn crash_dirty_regions_resync_from_authoritative_only() {
    let mut h = TestHost::new(2, 256, 512);
    let mut init = Init::fresh(2, 256, true);
    let dirty = [0b0000_0101u8, 0, 0];
    init.dirty = Some(&dirty);
    init.authoritative = 1;
    h.legs[1][..512 * 16].fill(0x11);
    h.legs[0][..512 * 16].fill(0x22);
    mirror!(m, mem, cfg(2, 256, LogKind::Core), init);
    assert_eq!(m.status().leg[0].regions_out_of_sync, 2);
    read(&mut h, &mut m, 1, 0, 4);
    assert!(h.pending.iter().all(|(io, _)| io.op != LegOp::Read
        || io.leg == 1
        || !matches!(io.buf, BufRef::Parent { .. })));
    h.run(&mut m);
    assert!(h.bufs[&1].iter().all(|b| *b == 0x11));
    assert_eq!(m.status().leg[0].regions_out_of_sync, 0);
    assert_eq!(leg_bytes(&h, 0, 0, 16), leg_bytes(&h, 1, 0, 16));
    assert_eq!(m.status().counters.resync_sectors, 32);
}

#[test]
fn planted_bugs_change_behaviour() {
    // CompleteEarly: the parent completes after one leg.
    let mut h = TestHost::new(2, 256, 512);
    mirror!(
        m,
        mem,
        cfg(2, 256, LogKind::Core),
        Init::fresh(2, 256, true)
    );
    m.set_mutant(Mutant::CompleteEarly);
    write(&mut h, &mut m, 1, 0, 4, 1);
    h.step(&mut m, false);
    assert!(h.completed(1).is_some());
}

#[test]
fn superblock_of_a_fresh_mirror_encodes() {
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    let sb = m.superblock_for(0);
    let mut buf = vec![0u8; 4096];
    sb.encode(&mut buf).unwrap();
    let back = crate::format::Superblock::decode(&buf).unwrap();
    assert_eq!(back, sb);
}

/// The leg transaction walks Journal → Data → (Super) → Done, one step at a time.
#[test]
fn leg_transaction_states_one_by_one() {
    use crate::mirror::Tx;
    let mut h = TestHost::new(2, 2048, 512);
    let (c, ls) = persistent_setup(&mut h);
    mirror!(m, mem, c, Init::fresh(2, ls, true));
    m.start(&mut h);
    h.run(&mut m);
    write(&mut h, &mut m, 1, 0, 4, 1);
    let pi = m.head;
    let tx = |m: &Mirror<'_>, k| m.parents[pi as usize].tx(k);
    assert_eq!(
        (tx(&m, 0), tx(&m, 1)),
        (Tx::Journal, Tx::Journal),
        "clean region: journal first"
    );
    // Leg 0's bitmap write, then its flush: leg 0 moves to Data alone.
    let find = |h: &TestHost, leg: u8, op: LegOp| {
        h.pending
            .iter()
            .position(|(io, _)| io.leg == leg && io.op == op)
            .unwrap()
    };
    let i = find(&h, 0, LegOp::Write);
    let (io, _) = h.pending.remove(i).unwrap();
    m.leg_done(&mut h, io.token, Ok(()));
    assert_eq!(tx(&m, 0), Tx::Journal, "bitmap written but not flushed yet");
    let i = find(&h, 0, LegOp::Flush);
    let (io, _) = h.pending.remove(i).unwrap();
    m.leg_done(&mut h, io.token, Ok(()));
    assert_eq!((tx(&m, 0), tx(&m, 1)), (Tx::Data, Tx::Journal));
    // Leg 0's data write completes: no state change pending, so Super is skipped.
    let i = h
        .pending
        .iter()
        .position(|(io, _)| io.leg == 0 && matches!(io.buf, BufRef::Parent { .. }))
        .unwrap();
    let (io, _) = h.pending.remove(i).unwrap();
    m.leg_done(&mut h, io.token, Ok(()));
    assert_eq!(tx(&m, 0), Tx::Done);
    assert_eq!(h.completed(1), None);
    // Leg 1 fails its bitmap write: it leaves, its transaction waits in Super for the
    // superblock that records it, then the parent completes (successfully, on leg 0).
    h.fail[1] = Some(IoError::Io);
    let i = find(&h, 1, LegOp::Write);
    let (io, _) = h.pending.remove(i).unwrap();
    m.leg_done(&mut h, io.token, Err(IoError::Io));
    assert_eq!(tx(&m, 1), Tx::Super);
    assert_eq!(h.completed(1), None, "not before the failure is durable");
    h.run(&mut m);
    assert_eq!(h.completed(1), Some(Ok(())));
}

/// Every superblock the core writes decodes, whatever state the legs are in.
#[test]
fn superblocks_encode_in_every_leg_state() {
    let mut h = TestHost::new(3, 2048, 512);
    let (mut c, ls) = persistent_setup(&mut h);
    c.legs = 3;
    mirror!(m, mem, c, Init::fresh(3, ls, true));
    m.start(&mut h);
    h.run(&mut m);
    let check = |m: &Mirror<'_>| {
        for k in 0..3 {
            if m.leg_state(k).is_active() {
                let mut buf = vec![0u8; 4096];
                m.superblock_for(k).encode(&mut buf).unwrap();
            }
        }
    };
    check(&m);
    m.fail_leg(&mut h, 1).unwrap();
    h.run(&mut m);
    check(&m);
    m.remove_leg(&mut h, 1).unwrap();
    h.run(&mut m);
    check(&m);
    m.add_leg(&mut h, 1, *b"dmirror-leg-new1", ls, false)
        .unwrap();
    check(&m); // rebuilding, full, checkpoint 0
    write(&mut h, &mut m, 1, 0, 4, 1);
    h.run(&mut m);
    check(&m);
    h.fail[2] = Some(IoError::Gone);
    write(&mut h, &mut m, 2, 0, 4, 1);
    h.run(&mut m);
    check(&m); // missing
    assert_eq!(m.status().counters.meta_errors, 0);
}
