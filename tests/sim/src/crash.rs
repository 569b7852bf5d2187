//! Power loss and reassembly.
//!
//! `crash` keeps, on every leg, its durable image plus any subset of its cached and in-flight
//! writes (torn at sector boundaries), and records which contents each data sector may hold now
//! (`Model::crash_allowed`). `reassemble` builds the starting state of the next mirror from the
//! crashed legs.
//!
//! Reassembly today: `dmirror::assemble` (the reader of the on-leg superblocks and bitmaps) is not
//! in the tree yet, so the harness reassembles the way a mirror with no usable metadata must: the
//! lowest leg that was in sync and healthy at the crash is the only source, every other leg is
//! rebuilt in full from it. That proves "old or new data, flushed writes intact, legs identical
//! after resync" for the data path, but not the write-intent bitmap (a full resync hides a lost
//! bitmap bit). `reassemble` is the one function to switch to `assemble` when it lands.
use crate::runner::Sim;
use dmirror::{Config, Init, LegInit, LegState, LogKind, Rebuild, MAX_LEGS};

/// Leg size for a configuration: the data, plus (for on-leg metadata) a generous metadata area.
pub fn leg_sectors(cfg: &Config) -> u64 {
    match cfg.log {
        LogKind::Core => cfg.data_sectors,
        LogKind::OnLegs => {
            let ss = u64::from(cfg.sector_size);
            let regions = cfg.data_sectors.div_ceil(cfg.region_sectors);
            let bitmap = regions.div_ceil(8).div_ceil(ss).max(1);
            // Two superblock slots of up to 8 KiB, the write-intent bitmap and one tracking
            // bitmap per leg (twice, for double buffering), plus room for alignment.
            let meta = 2 * 8192 / ss + 2 * (1 + u64::from(cfg.legs)) * bitmap + 64;
            (cfg.data_sectors + meta).next_multiple_of(8)
        }
    }
}

/// The owned form of `dmirror::Init` (which borrows its bitmaps).
pub struct InitOwned {
    pub mirror_uuid: [u8; 16],
    pub generation: u64,
    pub seq: u64,
    pub authoritative: u8,
    pub legs: [LegInit; MAX_LEGS],
    pub dirty: Option<Vec<u8>>,
    pub tracking: Vec<Option<Vec<u8>>>,
}

impl InitOwned {
    pub fn init(&self) -> Init<'_> {
        let mut name = [0u8; 32];
        name[..3].copy_from_slice(b"sim");
        let mut tracking = [None; MAX_LEGS];
        for (t, b) in tracking.iter_mut().zip(&self.tracking) {
            *t = b.as_deref();
        }
        Init {
            mirror_uuid: self.mirror_uuid,
            name,
            generation: self.generation,
            seq: self.seq,
            authoritative: self.authoritative,
            legs: self.legs,
            dirty: self.dirty.as_deref(),
            tracking,
        }
    }
}

fn mirror_uuid(sim: &Sim) -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&sim.setup.cfg.data_sectors.to_le_bytes());
    u[8..].copy_from_slice(b"dmsimirr");
    u
}

/// The first mirror of a run.
pub fn fresh(sim: &Sim) -> Option<InitOwned> {
    let n = sim.setup.cfg.legs;
    let base = Init::fresh(n, sim.setup.leg_sectors, sim.setup.assume_clean);
    let mut legs = base.legs;
    for (i, l) in legs.iter_mut().enumerate().take(usize::from(n)) {
        l.uuid = sim.w.track[i].uuid;
    }
    Some(InitOwned {
        mirror_uuid: mirror_uuid(sim),
        generation: base.generation,
        seq: base.seq,
        authoritative: base.authoritative,
        legs,
        dirty: None,
        tracking: Vec::new(),
    })
}

/// Power fails now.
pub fn crash(sim: &mut Sim) {
    let w = &mut sim.w;
    w.stats.crashes += 1;
    w.now += 1;
    // The source for the fallback reassembly: a leg in sync and healthy until now.
    sim.crash_source = (0..w.legs.len())
        .find(|&i| w.track[i].trusted_since.is_some())
        .unwrap_or(0);
    w.log(|| format!("CRASH (source for reassembly: leg {})", sim.crash_source));
    let tokens: Vec<u64> = w.pending.keys().copied().collect();
    let mut inflight: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); w.legs.len()];
    for t in tokens {
        let Some(p) = w.pending.get(&t) else { continue };
        if p.op != dmirror::LegOp::Write {
            continue;
        }
        let (leg, sector) = (usize::from(p.leg), p.sector);
        if let Some(bytes) = w.pending_source(t) {
            inflight[leg].push((sector, bytes));
        }
    }
    for (l, writes) in inflight.iter().enumerate() {
        w.legs[l].crash(&mut sim.rng, writes);
        w.legs[l].faults.clear();
    }
    let n = w.cfg.data_sectors as usize;
    sim.post_crash = Some((0..n).map(|s| w.model.crash_allowed(s)).collect());
    w.model.crashed(w.now);
    w.drop_in_flight();
    sim.crash_idx_advance();
}

/// The starting state of the mirror after a crash.
pub fn reassemble(sim: &mut Sim) -> Option<InitOwned> {
    let n = usize::from(sim.setup.cfg.legs);
    let src = sim.crash_source;
    let crashes = sim.w.stats.crashes;
    let mut legs = [LegInit::EMPTY; MAX_LEGS];
    for (i, l) in legs.iter_mut().enumerate().take(n) {
        l.uuid = sim.w.track[i].uuid;
        l.sectors = sim.setup.leg_sectors;
        l.state = if i == src {
            LegState::InSync
        } else {
            LegState::Rebuilding
        };
        l.rebuild = Rebuild {
            checkpoint: 0,
            full: true,
        };
    }
    sim.w.log(|| {
        format!("ASSEMBLY (fallback, full resync): leg {src} authoritative, others rebuild in full")
    });
    Some(InitOwned {
        mirror_uuid: mirror_uuid(sim),
        generation: 1 + 100 * crashes,
        seq: 1_000_000 * crashes,
        authoritative: src as u8,
        legs,
        dirty: None,
        tracking: Vec::new(),
    })
}
