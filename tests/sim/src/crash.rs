//! Power loss and reassembly.
//!
//! `crash` keeps, on every leg, its durable image plus any subset of its cached and in-flight
//! writes (torn at sector boundaries), and records which contents each data sector may hold now
//! (`Model::crash_allowed`). `reassemble` builds the starting state of the next mirror from the
//! crashed legs.
//!
//! Reassembly goes through `dmirror::assemble` exactly as a host would (superblock slots, then the
//! bitmaps it asks for). Before that, `check_journal` checks the write-intent invariant directly on
//! the crashed legs.
use crate::pattern;
use crate::runner::Sim;
use dmirror::assemble::{self, AssembleError, LegRead};
use dmirror::format::{self, DiskLegState, FormatError, Superblock};
use dmirror::{Config, Init, LegInit, LegState, LogKind, Rebuild, MAX_LEGS};

/// Leg size for a configuration: the data alone (in-memory log), or the smallest leg whose
/// on-disk layout (`dmirror::format::layout`) holds the data and the metadata, plus `slack`.
pub fn leg_sectors(cfg: &Config, slack: u64) -> u64 {
    match cfg.log {
        LogKind::Core => cfg.data_sectors,
        // Disk log: the legs are plain data devices.
        LogKind::Device => cfg.data_sectors + slack,
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

/// The superblock leg `l` would show after a power loss that kept nothing cached.
pub fn durable_superblock(sim: &Sim, l: usize) -> Result<Superblock, FormatError> {
    let ss = sim.setup.cfg.sector_size;
    let slots = format::slot_positions(sim.setup.leg_sectors, ss);
    let len = (format::slot_sectors(ss) * u64::from(ss)) as usize;
    let img = sim.w.legs[l].durable_image();
    let at = |s: u64| &img[(s * u64::from(ss)) as usize..(s * u64::from(ss)) as usize + len];
    format::newest(
        Superblock::decode(at(slots[0])),
        Superblock::decode(at(slots[1])),
    )
}

/// Does every leg hold a valid superblock in its durable image? (With a disk log: does the log
/// device?)
pub fn labelled(sim: &Sim) -> bool {
    if sim.setup.cfg.log == LogKind::Device {
        return durable_log_superblock(sim).is_ok();
    }
    (0..sim.w.legs.len()).all(|l| durable_superblock(sim, l).is_ok())
}

/// The log device's two superblock slots in `img` (sectors `[0, slot_sectors]`).
fn log_slots(sim: &Sim, img: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ss = u64::from(sim.setup.cfg.sector_size);
    let slot = format::slot_sectors(sim.setup.cfg.sector_size);
    let len = (slot * ss) as usize;
    let at = |s: u64| img[(s * ss) as usize..(s * ss) as usize + len].to_vec();
    (at(0), at(slot))
}

/// The superblock the log device would show after a power loss that kept nothing cached.
pub fn durable_log_superblock(sim: &Sim) -> Result<Superblock, FormatError> {
    let Some(dev) = sim.w.logdev.as_ref() else {
        return Err(FormatError::Blank);
    };
    let (s0, s1) = log_slots(sim, dev.durable_image());
    format::decode_newest_log(&s0, &s1)
}

/// Disk log: the write-intent invariant on the crashed legs and log device. Where two legs the
/// log calls in sync (or rebuilt past the region) hold different data, the region must be marked
/// in the log's durable write-intent bitmap, or the next activation cannot know to resync it.
/// Catches data sent to the legs before its mark was durable on the log device.
pub fn check_log_journal(sim: &mut Sim) {
    let Some(dev) = sim.w.logdev.as_ref() else {
        return;
    };
    let img = dev.current.clone();
    let (s0, s1) = log_slots(sim, &img);
    let sb = match format::decode_newest_log(&s0, &s1) {
        Ok(sb) => sb,
        // A new log (the administrator's reload after a log failure) whose label never became
        // durable: the next reload starts from the in-sync leg again (`reassemble_log`).
        Err(_) if sim.w.log_replaced => return,
        Err(e) => {
            sim.w
                .fail(format!("after crash: log device unreadable: {e}"));
            return;
        }
    };
    let ss = sim.setup.cfg.sector_size as usize;
    let at = sb.bitmap_start as usize * ss;
    let bitmap = img[at..at + sb.bitmap_sectors as usize * ss].to_vec();
    let marked = |r: u64| {
        bitmap
            .get((r / 8) as usize)
            .is_some_and(|x| x >> (r % 8) & 1 == 1)
    };
    let n = sim.w.legs.len();
    // A slot whose device was replaced after the log last recorded it holds another device
    // than the one the log describes (legs carry no identity of their own): the administrator
    // re-adds it in full (`reassemble_log`), so it is not compared.
    let same = |l: usize| sb.legs[l].uuid == sim.w.track[l].uuid;
    let copied = |l: usize, r: u64| {
        let e = &sb.legs[l];
        same(l)
            && (e.state == DiskLegState::InSync
                || (e.state == DiskLegState::Rebuilding && r < e.checkpoint))
    };
    let Some(a) = (0..n).find(|&l| sb.legs[l].state == DiskLegState::InSync && same(l)) else {
        return;
    };
    sim.w.log(|| {
        format!(
            "log journal check: gen {} seq {} clean {} legs {:?}",
            sb.generation,
            sb.seq,
            sb.clean,
            (0..n).map(|l| sb.legs[l].state).collect::<Vec<_>>()
        )
    });
    let region = sim.setup.cfg.region_sectors;
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
        let r = s / region;
        for b in (0..n).filter(|&b| b != a && copied(b, r)) {
            if sim.w.legs[a].sector(s) != sim.w.legs[b].sector(s) && !marked(r) {
                let (x, y) = (
                    pattern::describe(sim.w.legs[a].sector(s)),
                    pattern::describe(sim.w.legs[b].sector(s)),
                );
                sim.w.fail(format!(
                    "after crash: legs {a} and {b} (in sync by the log) differ at sector {s} ({x} vs {y}) but region {r} is not marked in the log device's durable write-intent bitmap"
                ));
                return;
            }
        }
    }
}

/// Disk log: the starting state after a crash, the way the dm target activates: read the log
/// device's two slots, `dmirror::logdev::assemble_log` with the table's legs, read the bitmaps it
/// asks for.
///
/// After a log failure the log's marks and leg table may be stale, and the documented recovery
/// is the administrator's: reload with a new, blank log, the table listing first a leg that was
/// in sync (lvm2 does this when it converts the mirror's log): a new mirror whose other legs
/// resync in full from that leg. Modelled here by wiping the log device and starting from the
/// leg the model knows was in sync and healthy (`crash_source`), as a reordered table would.
pub fn reassemble_log(sim: &mut Sim) -> Option<InitOwned> {
    use dmirror::logdev::{assemble_log, LogRead, LogSync, LogTable};
    let cfg = sim.setup.cfg;
    let n = usize::from(cfg.legs);
    let replace = std::mem::take(&mut sim.w.log_failed)
        || (sim.w.log_replaced && durable_log_superblock(sim).is_err());
    if replace {
        if let Some(dev) = sim.w.logdev.as_mut() {
            let sectors = dev.sectors;
            *dev = crate::leg::Leg::new(sectors, cfg.sector_size as usize, |_| None);
        }
        sim.w.log_replaced = true;
        sim.w
            .log(|| "ASSEMBLY (disk log): the log failed; reload with a new log".to_string());
        return reassemble_without_metadata(sim);
    }
    sim.w.log_replaced = false;
    let Some(dev) = sim.w.logdev.as_ref() else {
        sim.w
            .fail("disk log mirror without a log device".to_string());
        return None;
    };
    let img = dev.current.clone();
    let sectors = dev.sectors;
    let (s0, s1) = log_slots(sim, &img);
    let legs = vec![sim.setup.leg_sectors; n];
    let table = LogTable {
        leg_sectors: &legs,
        data_sectors: cfg.data_sectors,
        region_sectors: cfg.region_sectors,
        sector_size: cfg.sector_size,
        sync: LogSync::Default,
        uuid: mirror_uuid(sim),
    };
    let a = match assemble_log(
        &LogRead {
            sectors,
            sector_size: cfg.sector_size,
            slot0: &s0,
            slot1: &s1,
            tail: None,
        },
        &table,
    ) {
        Ok(a) if a.fresh => {
            sim.w
                .fail("after crash: the log device lost its label".to_string());
            return None;
        }
        Ok(a) => a,
        Err(e) => {
            sim.w
                .fail(format!("activation from the log device refused: {e}"));
            return None;
        }
    };
    // Legs are named by position only: a slot whose device was replaced (dmsetup message add)
    // after the log last recorded it is described by the log as the old device. The
    // administrator, who replaced it, activates it in full (dm_target_mirror.4, BUGS).
    let mut a = a;
    for k in 0..n {
        if a.legs[k].uuid != sim.w.track[k].uuid {
            sim.w.log(|| {
                format!("ASSEMBLY (disk log): slot {k} holds a replaced device: rebuilt in full")
            });
            a.legs[k].state = dmirror::LegState::Rebuilding;
            a.legs[k].uuid = sim.w.track[k].uuid;
            a.legs[k].rebuild = dmirror::Rebuild {
                checkpoint: 0,
                full: true,
            };
            a.tracking_needed &= !(1u32 << k);
        }
    }
    if a.legs[usize::from(a.authoritative)].state != dmirror::LegState::InSync {
        match (0..n).find(|&k| a.legs[k].state == dmirror::LegState::InSync) {
            Some(k) => a.authoritative = k as u8,
            None => {
                sim.w
                    .log(|| "ASSEMBLY (disk log): no recorded in-sync leg left".to_string());
                return reassemble_without_metadata(sim);
            }
        }
    }
    let ss = cfg.sector_size as usize;
    let read = |sector: u64, count: u64| -> Vec<u8> {
        img[sector as usize * ss..(sector + count) as usize * ss].to_vec()
    };
    let regions = a.regions();
    let dirty = a.dirty_read().map(|b| read(b.sector, b.sectors));
    let mut tracking: Vec<Option<Vec<u8>>> = vec![None; MAX_LEGS];
    for k in 0..n as u8 {
        if let Some(b) = a.tracking_read(k) {
            tracking[usize::from(k)] = Some(read(b.sector, b.sectors));
        }
    }
    for b in dirty.iter().chain(tracking.iter().flatten()) {
        if let Err(e) = format::check_bitmap(b, regions) {
            sim.w.fail(format!("log device bitmap rejected: {e:?}"));
            return None;
        }
    }
    sim.w.log(|| {
        format!(
            "ASSEMBLY (disk log): gen {} seq {} authoritative {} clean {} legs {:?} tracking {:#x}",
            a.generation,
            a.seq,
            a.authoritative,
            a.clean,
            (0..n)
                .map(|k| (a.legs[k].state, a.legs[k].rebuild.full))
                .collect::<Vec<_>>(),
            a.tracking_needed
        )
    });
    let init = {
        let mut t: [Option<&[u8]>; MAX_LEGS] = [None; MAX_LEGS];
        for (d, s) in t.iter_mut().zip(&tracking) {
            *d = s.as_deref();
        }
        a.init(dirty.as_deref(), t)
    };
    for k in 0..n {
        sim.w.track[k].uuid = init.legs[k].uuid;
    }
    Some(InitOwned {
        mirror_uuid: init.mirror_uuid,
        generation: init.generation,
        seq: init.seq,
        authoritative: init.authoritative,
        legs: init.legs,
        dirty: init.dirty.map(<[u8]>::to_vec),
        tracking: init
            .tracking
            .iter()
            .map(|t| t.map(<[u8]>::to_vec))
            .collect(),
        name: init.name,
    })
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
    for (l, d) in disks.iter().enumerate() {
        if let Some(d) = d {
            let table: Vec<String> = (0..usize::from(d.sb.nlegs))
                .map(|k| {
                    let e = &d.sb.legs[k];
                    format!(
                        "{:?}{}@{}",
                        e.state,
                        if e.full { "(full)" } else { "" },
                        e.checkpoint
                    )
                })
                .collect();
            sim.w.log(|| {
                format!(
                    "journal check: leg {l} superblock gen {} seq {} authoritative {} clean {} uuid {} table [{}]",
                    d.sb.generation,
                    d.sb.seq,
                    d.sb.authoritative,
                    d.sb.clean,
                    String::from_utf8_lossy(&d.sb.leg_uuid()),
                    table.join(", ")
                )
            });
        }
    }
    let insync: Vec<usize> = (0..n)
        .filter(|&l| {
            newest.sb.legs[l].state == DiskLegState::InSync
                && disks[l].as_ref().is_some_and(|d| d.sb.generation == gen)
        })
        .collect();
    // What assembly reads: the write-intent bitmaps of every present leg, ORed (a rebuilding
    // leg copied past a region takes writes there, so its bitmap counts too).
    let mut marked = vec![0u8; newest.bitmap.len()];
    for d in disks.iter().flatten() {
        format::or_into(&mut marked, &d.bitmap);
    }
    let bit = |b: &[u8], r: u64| {
        b.get((r / 8) as usize)
            .is_some_and(|x| x >> (r % 8) & 1 == 1)
    };
    let is_marked = |r: u64| bit(&marked, r);
    let marked_on = |r: u64| -> Vec<usize> {
        (0..n)
            .filter(|&l| disks[l].as_ref().is_some_and(|d| bit(&d.bitmap, r)))
            .collect()
    };
    let region = sim.setup.cfg.region_sectors;
    sim.w.log(|| {
        format!(
            "journal check: generation {gen}, in-sync legs {insync:?}, marked regions {}",
            (0..newest.sb.regions()).filter(|&r| is_marked(r)).count()
        )
    });
    let Some(&a) = insync.first() else {
        return;
    };
    // A rebuilding leg of this generation holds the data of the regions below its checkpoint
    // (assembly resumes the copy there): those regions count as in sync too.
    let copied = |l: usize, r: u64| {
        let e = &newest.sb.legs[l];
        let current = disks[l].as_ref().is_some_and(|d| d.sb.generation == gen);
        current
            && (e.state == DiskLegState::InSync
                || (e.state == DiskLegState::Rebuilding && r < e.checkpoint))
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
        let r = s / region;
        for b in (0..n).filter(|&b| b != a && copied(b, r)) {
            if sim.w.legs[a].sector(s) != sim.w.legs[b].sector(s) && !is_marked(r) {
                let (x, y) = (
                    pattern::describe(sim.w.legs[a].sector(s)),
                    pattern::describe(sim.w.legs[b].sector(s)),
                );
                let how = if newest.sb.legs[b].state == DiskLegState::InSync {
                    "in sync"
                } else {
                    "rebuilt past this region"
                };
                sim.w.fail(format!(
                    "after crash: legs {a} (in sync) and {b} ({how}) differ at sector {s} ({x} vs {y}) but region {r} is not marked in the durable write-intent bitmap of any leg (generation {gen}) (marked on legs {:?})",
                    marked_on(r)
                ));
                return;
            }
        }
    }
}

/// The owned form of `dmirror::Init` (which borrows its bitmaps).
pub struct InitOwned {
    pub mirror_uuid: [u8; 16],
    pub name: [u8; 32],
    pub generation: u64,
    pub seq: u64,
    pub authoritative: u8,
    pub legs: [LegInit; MAX_LEGS],
    pub dirty: Option<Vec<u8>>,
    pub tracking: Vec<Option<Vec<u8>>>,
}

impl InitOwned {
    pub fn init(&self) -> Init<'_> {
        let mut tracking = [None; MAX_LEGS];
        for (t, b) in tracking.iter_mut().zip(&self.tracking) {
            *t = b.as_deref();
        }
        Init {
            mirror_uuid: self.mirror_uuid,
            name: self.name,
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
    let mut name = [0u8; 32];
    name[..3].copy_from_slice(b"sim");
    Some(InitOwned {
        mirror_uuid: mirror_uuid(sim),
        name,
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
    // For a core without metadata (the reference core): the leg it would rebuild the others from.
    sim.crash_source = (0..w.legs.len())
        .find(|&i| w.track[i].trusted_since.is_some())
        .unwrap_or(0);
    w.log(|| "CRASH".to_string());
    let tokens: Vec<u64> = w.pending.keys().copied().collect();
    let mut inflight: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); w.legs.len()];
    let mut log_inflight: Vec<(u64, Vec<u8>)> = Vec::new();
    for t in tokens {
        let Some(p) = w.pending.get(&t) else { continue };
        if p.op != dmirror::LegOp::Write {
            continue;
        }
        let (leg, sector) = (p.leg, p.sector);
        if let Some(bytes) = w.pending_source(t) {
            if leg == dmirror::LOG_DEV {
                log_inflight.push((sector, bytes));
            } else {
                inflight[usize::from(leg)].push((sector, bytes));
            }
        }
    }
    for (l, writes) in inflight.iter().enumerate() {
        w.legs[l].crash(&mut sim.rng, writes);
        w.legs[l].faults.clear();
    }
    if let Some(dev) = w.logdev.as_mut() {
        // The log device loses its cache and in-flight writes like any device; after the
        // reboot it answers again (a failed log is replaced by the administrator's `sync`
        // reload, modelled in `reassemble_log`).
        dev.crash(&mut sim.rng, &log_inflight);
        dev.faults.clear();
    }
    if sim.setup.cfg.log == LogKind::OnLegs && sim.metadata {
        check_journal(sim);
    }
    if sim.setup.cfg.log == LogKind::Device && sim.metadata && !sim.w.log_failed {
        check_log_journal(sim);
    }
    let w = &mut sim.w;
    let n = w.cfg.data_sectors as usize;
    sim.post_crash = Some((0..n).map(|s| w.model.crash_allowed(s)).collect());
    w.model.crashed(w.now);
    w.drop_in_flight();
    sim.crash_idx_advance();
}

/// After a crash, for a core that keeps no metadata (the reference core): the leg that was in sync
/// and healthy at the crash is the only source; every other leg is rebuilt in full from it.
pub fn reassemble_without_metadata(sim: &mut Sim) -> Option<InitOwned> {
    let n = usize::from(sim.setup.cfg.legs);
    let src = sim.crash_source;
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
    sim.w
        .log(|| format!("ASSEMBLY (no metadata): leg {src} authoritative, others rebuild in full"));
    let mut name = [0u8; 32];
    name[..3].copy_from_slice(b"sim");
    Some(InitOwned {
        mirror_uuid: mirror_uuid(sim),
        name,
        generation: 1 + sim.w.stats.crashes,
        seq: 0,
        authoritative: src as u8,
        legs,
        dirty: None,
        tracking: Vec::new(),
    })
}

const LABELS: [&str; MAX_LEGS] = [
    "leg0", "leg1", "leg2", "leg3", "leg4", "leg5", "leg6", "leg7", "leg8", "leg9", "leg10",
    "leg11", "leg12", "leg13", "leg14", "leg15", "leg16", "leg17", "leg18", "leg19", "leg20",
    "leg21", "leg22", "leg23", "leg24", "leg25", "leg26", "leg27", "leg28", "leg29", "leg30",
    "leg31",
];

/// The starting state of the mirror after a crash, the way a host assembles it: read both
/// superblock slots of every leg, `dmirror::assemble`, read and check the bitmaps it asks for,
/// `Assembly::init`. A leg without readable metadata (a new device whose label never became
/// durable) is left out and added back in full afterwards; any other refusal is a failure.
pub fn reassemble(sim: &mut Sim) -> Option<InitOwned> {
    let n = usize::from(sim.setup.cfg.legs);
    let ss = sim.setup.cfg.sector_size;
    let leg_sectors = sim.setup.leg_sectors;
    let slots = assemble::slot_positions(leg_sectors, ss);
    let slot_sectors = format::slot_sectors(ss);
    let read = |sim: &Sim, l: usize, start: u64, count: u64| -> Vec<u8> {
        let mut b = vec![0u8; (count * u64::from(ss)) as usize];
        sim.w.legs[l].read(start, &mut b);
        b
    };
    let images: Vec<[Vec<u8>; 2]> = (0..n)
        .map(|l| {
            [
                read(sim, l, slots[0], slot_sectors),
                read(sim, l, slots[1], slot_sectors),
            ]
        })
        .collect();
    let mut present: Vec<usize> = (0..n).collect();
    let asm = loop {
        let reads: Vec<LegRead<'_>> = present
            .iter()
            .map(|&l| LegRead {
                label: LABELS[l],
                sectors: leg_sectors,
                sector_size: ss,
                slot0: &images[l][0],
                slot1: &images[l][1],
            })
            .collect();
        match assemble::assemble(&reads, None) {
            Ok(a) => break a,
            // A new device whose label never became durable, or a device removed or replaced
            // that still carries old metadata: not part of the mirror; it is added back in full.
            Err(e @ (AssembleError::Unreadable { leg, .. } | AssembleError::NotMember { leg }))
                if present.len() > 1 =>
            {
                let l = LABELS.iter().position(|&x| x == leg).unwrap_or(0);
                sim.w.log(|| format!("ASSEMBLY: left out: {e}"));
                present.retain(|&x| x != l);
                sim.w.track[l].force_full = true;
            }
            Err(e) => {
                let msg = format!("assembly after crash refused: {e}");
                sim.w.fail(msg);
                return None;
            }
        }
    };
    let input_leg = |i: usize| present[i];
    let bytes = asm.bitmap_bytes() as usize;
    let regions = asm.regions();
    let mut dirty: Option<Vec<u8>> = None;
    for k in 0..n as u8 {
        if let Some(br) = asm.dirty_read(k) {
            let b = read(sim, input_leg(br.input), br.sector, br.sectors);
            if let Err(e) = format::check_bitmap(&b, regions) {
                sim.w
                    .fail(format!("write-intent bitmap of slot {k} rejected: {e:?}"));
                return None;
            }
            format::or_into(dirty.get_or_insert_with(|| vec![0u8; bytes]), &b);
        }
    }
    let mut tracking: Vec<Option<Vec<u8>>> = vec![None; MAX_LEGS];
    for k in 0..n as u8 {
        if let Some(br) = asm.tracking_read(k) {
            let b = read(sim, input_leg(br.input), br.sector, br.sectors);
            if let Err(e) = format::check_bitmap(&b, regions) {
                sim.w
                    .fail(format!("tracking bitmap of slot {k} rejected: {e:?}"));
                return None;
            }
            let regs: Vec<u64> = (0..regions)
                .filter(|&r| {
                    b.get((r / 8) as usize)
                        .is_some_and(|x| x >> (r % 8) & 1 == 1)
                })
                .collect();
            sim.w.log(|| {
                format!(
                    "ASSEMBLY: tracking bitmap for slot {k} (from leg {}): regions {regs:?}",
                    input_leg(br.input)
                )
            });
            tracking[usize::from(k)] = Some(b);
        }
    }
    if !asm.clean && dirty.is_none() {
        dirty = Some(vec![0u8; bytes]);
    }
    let marked: Vec<u64> = dirty.as_ref().map_or(Vec::new(), |d| {
        (0..regions)
            .filter(|&r| {
                d.get((r / 8) as usize)
                    .is_some_and(|b| b >> (r % 8) & 1 == 1)
            })
            .collect()
    });
    let states: Vec<LegState> = (0..n).map(|k| asm.legs[k].state).collect();
    sim.w.log(|| {
        format!(
            "ASSEMBLY: winner {} gen {} seq {} authoritative {} clean {} legs {states:?}, dirty regions {marked:?}, tracking {:#x}, rebuild {:?}",
            LABELS[present[asm.winner_input]],
            asm.generation,
            asm.seq,
            asm.authoritative,
            asm.clean,
            asm.tracking_needed,
            (0..n).map(|k| (asm.legs[k].rebuild.checkpoint, asm.legs[k].rebuild.full)).collect::<Vec<_>>()
        )
    });
    let init = {
        let mut t: [Option<&[u8]>; MAX_LEGS] = [None; MAX_LEGS];
        for (d, s) in t.iter_mut().zip(&tracking) {
            *d = s.as_deref();
        }
        asm.init(dirty.as_deref(), t)
    };
    Some(InitOwned {
        mirror_uuid: init.mirror_uuid,
        generation: init.generation,
        seq: init.seq,
        authoritative: init.authoritative,
        legs: init.legs,
        dirty: init.dirty.map(<[u8]>::to_vec),
        tracking: init
            .tracking
            .iter()
            .map(|t| t.map(<[u8]>::to_vec))
            .collect(),
        name: init.name,
    })
}
