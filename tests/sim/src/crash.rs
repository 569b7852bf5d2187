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
use crate::pattern;
use crate::runner::Sim;
use dmirror::format::{self, DiskLegState, FormatError, Superblock};
use dmirror::{Config, Init, LegInit, LegState, LogKind, Rebuild, MAX_LEGS};

/// Leg size for a configuration: the data alone (in-memory log), or the smallest leg whose
/// on-disk layout (`dmirror::format::layout`) holds the data and the metadata, plus `slack`.
pub fn leg_sectors(cfg: &Config, slack: u64) -> u64 {
    match cfg.log {
        LogKind::Core => cfg.data_sectors,
        LogKind::OnLegs => {
            let (ss, rs, ds) = (cfg.sector_size, cfg.region_sectors, cfg.data_sectors);
            let mut leg = ds;
            while format::layout(leg, ss, rs, ds).is_err() && leg < ds * 4 + 1_000_000 {
                leg += 1;
            }
            leg + slack
        }
    }
}

/// The metadata a crashed leg holds: its newest valid superblock and its write-intent bitmap.
pub struct OnDisk {
    pub sb: Superblock,
    pub bitmap: Vec<u8>,
}

/// Read leg `l`'s superblock slots and bitmap the way an assembler would.
pub fn read_disk(sim: &Sim, l: usize) -> Result<OnDisk, FormatError> {
    let leg = &sim.w.legs[l];
    let ss = sim.setup.cfg.sector_size;
    let lay = format::layout(
        sim.setup.leg_sectors,
        ss,
        sim.setup.cfg.region_sectors,
        sim.setup.cfg.data_sectors,
    )?;
    let read = |start: u64, n: u64| -> Vec<u8> {
        let mut b = vec![0u8; (n * u64::from(ss)) as usize];
        leg.read(start, &mut b);
        b
    };
    let s0 = Superblock::decode(&read(lay.slots[0], lay.slot_sectors));
    let s1 = Superblock::decode(&read(lay.slots[1], lay.slot_sectors));
    let sb = format::newest(s0, s1)?;
    let bitmap = read(sb.bitmap_start, sb.bitmap_sectors);
    Ok(OnDisk { sb, bitmap })
}

/// The write-intent invariant, checked on the crashed legs before anything repairs them: where
/// legs the newest metadata calls in sync hold different data, the region must be marked in a
/// durable write-intent bitmap, or no assembly can know to resync it (the legs would differ
/// forever). Catches a skipped bitmap flush and a bit cleared before the data flush.
pub fn check_journal(sim: &mut Sim) {
    let n = sim.w.legs.len();
    let disks: Vec<Option<OnDisk>> = (0..n)
        .map(|l| match read_disk(sim, l) {
            Ok(d) => Some(d),
            Err(e) => {
                sim.w
                    .log(|| format!("journal check: leg {l} metadata unreadable: {e:?}"));
                None
            }
        })
        .collect();
    let Some(newest) = disks
        .iter()
        .flatten()
        .max_by_key(|d| (d.sb.generation, d.sb.seq))
    else {
        sim.w
            .log(|| "journal check: no leg has valid metadata yet".to_string());
        return;
    };
    let gen = newest.sb.generation;
    let insync: Vec<usize> = (0..n)
        .filter(|&l| {
            newest.sb.legs[l].state == DiskLegState::InSync
                && disks[l].as_ref().is_some_and(|d| d.sb.generation == gen)
        })
        .collect();
    let mut marked = vec![0u8; newest.bitmap.len()];
    for d in disks.iter().flatten().filter(|d| d.sb.generation == gen) {
        format::or_into(&mut marked, &d.bitmap);
    }
    let is_marked = |r: u64| {
        marked
            .get((r / 8) as usize)
            .is_some_and(|b| b >> (r % 8) & 1 == 1)
    };
    let region = sim.setup.cfg.region_sectors;
    sim.w.log(|| {
        format!(
            "journal check: generation {gen}, in-sync legs {insync:?}, marked regions {}",
            (0..newest.sb.regions()).filter(|&r| is_marked(r)).count()
        )
    });
    let Some((&a, rest)) = insync.split_first() else {
        return;
    };
    for s in 0..sim.setup.cfg.data_sectors {
        if sim.w.model.possible_ids(s as usize).contains(&pattern::ANY)
            || sim
                .w
                .model
                .crash_allowed(s as usize)
                .contains(&pattern::ANY)
        {
            continue;
        }
        for &b in rest {
            if sim.w.legs[a].sector(s) != sim.w.legs[b].sector(s) && !is_marked(s / region) {
                let (x, y) = (
                    pattern::describe(sim.w.legs[a].sector(s)),
                    pattern::describe(sim.w.legs[b].sector(s)),
                );
                sim.w.fail(format!(
                    "after crash: in-sync legs {a} and {b} differ at sector {s} ({x} vs {y}) but region {} is not marked in any durable write-intent bitmap of generation {gen}",
                    s / region
                ));
                return;
            }
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
    if sim.setup.cfg.log == LogKind::OnLegs {
        check_journal(sim);
    }
    let w = &mut sim.w;
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
