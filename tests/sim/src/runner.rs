//! One seed, one run: configuration, workload, faults, leg adds, crashes, and the final checks.
use crate::core::Core;
use crate::crash;
use crate::leg::Leg;
use crate::pattern;
use crate::refcore::{RefBug, RefCore};
use crate::rng::Rng;
use crate::world::{Mutant, Stats, World};
use dmirror::{Config, LegState, LogKind, Mirror, ParentOp, ReadPolicy, Status};

#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Persistent metadata, volatile leg caches, crashes and reassembly (issue 3).
    pub crash: bool,
    /// Print every event.
    pub trace: bool,
    pub mutant: Option<Mutant>,
    /// Which core to drive.
    pub backend: Backend,
    /// Skip the "metadata buffer unchanged until completion" check.
    pub no_meta_check: bool,
    /// A bug planted in the dmirror core itself (needs the `core-mutants` feature).
    pub core_mutant: Option<CoreMutant>,
    /// No faults and no leg control operations: only I/O, ticks and crashes.
    pub calm: bool,
    /// dm-mirror's `disk` log: legs carry only data, metadata on a separate log device
    /// (`LogKind::Device`), which gets its own faults (a failing log device).
    pub disk_log: bool,
}

/// The dmirror core's own plantable bugs (`dmirror::Mutant`, feature `core-mutants`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreMutant {
    /// A write group completes as soon as one leg reported.
    CompleteEarly,
    /// Overlapping writes start without waiting for each other.
    NoWriteOrdering,
    /// Data reaches a leg before its bitmap bit is durable.
    SkipJournal,
    /// Write-intent bits cleared without the data flush first.
    ClearBeforeFlush,
    /// Disk log: a log-device round counts as durable before its flush (data overtakes the mark).
    LogNoFlush,
}

#[cfg(feature = "core-mutants")]
fn plant(m: &mut Mirror<'_>, _: &mut World, mutant: CoreMutant) {
    m.set_mutant(match mutant {
        CoreMutant::CompleteEarly => dmirror::Mutant::CompleteEarly,
        CoreMutant::NoWriteOrdering => dmirror::Mutant::NoWriteOrdering,
        CoreMutant::SkipJournal => dmirror::Mutant::SkipJournal,
        CoreMutant::ClearBeforeFlush => dmirror::Mutant::ClearBeforeFlush,
        CoreMutant::LogNoFlush => dmirror::Mutant::LogNoFlush,
    });
}

#[cfg(not(feature = "core-mutants"))]
fn plant(_: &mut Mirror<'_>, w: &mut World, mutant: CoreMutant) {
    w.fail(format!(
        "core mutant {mutant:?} needs `--features core-mutants`"
    ));
}

/// The core under test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The dmirror core (`dmirror::Mirror`).
    #[default]
    Dmirror,
    /// The simulator's own reference core, optionally with a planted bug (tests the simulator).
    Reference(Option<RefBug>),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    /// `Err` holds the first violation the model found.
    pub result: Result<(), String>,
    pub stats: Stats,
    pub summary: String,
}

/// Everything the seed decides before the run starts.
#[derive(Clone, Debug)]
pub struct Setup {
    pub cfg: Config,
    pub leg_sectors: u64,
    pub assume_clean: bool,
    pub steps: u64,
    /// Entry-point call counts at which power fails (crash mode).
    pub crash_at: Vec<u64>,
    pub discard_supported: Vec<bool>,
}

fn policy(rng: &mut Rng, legs: u8) -> ReadPolicy {
    match rng.below(4) {
        0 => ReadPolicy::RoundRobin {
            batch: rng.range(1, 16) as u32,
        },
        1 => ReadPolicy::Load,
        2 => ReadPolicy::Prefer {
            leg: rng.below(u64::from(legs)) as u8,
        },
        _ => ReadPolicy::Split {
            min_sectors: rng.range(2, 64) as u32,
        },
    }
}

pub fn setup(seed: u64, rng: &mut Rng, opts: &Opts) -> Setup {
    let legs = rng.range(2, 4) as u8;
    let region = rng.pow2(8, 64);
    let regions = rng.range(2, 32);
    let data_sectors = (regions * region - rng.below(region)).clamp(64, 2048);
    let mut cfg = Config::new(legs, data_sectors);
    cfg.region_sectors = region;
    cfg.read_policy = policy(rng, legs);
    cfg.max_parents = rng.range(4, 64) as u32;
    cfg.max_leg_ios = rng.range(8, 256) as u32;
    cfg.clear_delay_ticks = rng.range(1, 10) as u32;
    cfg.resync.max_inflight = rng.range(1, 4) as u32;
    cfg.resync.chunk_sectors = rng.pow2(1, region) as u32;
    cfg.resync.sectors_per_tick = if rng.chance(1, 2) {
        0
    } else {
        rng.range(u64::from(cfg.resync.chunk_sectors), 4 * region)
    };
    cfg.resync.checkpoint_regions = rng.range(1, 8) as u32;
    cfg.log = if opts.disk_log {
        LogKind::Device
    } else if opts.crash {
        LogKind::OnLegs
    } else {
        LogKind::Core
    };
    let leg_sectors = crash::leg_sectors(
        &cfg,
        if rng.chance(1, 2) {
            0
        } else {
            rng.range(1, 64)
        },
    );
    let assume_clean = rng.chance(1, 2);
    let steps = rng.range(100, 700);
    let mut crash_at = Vec::new();
    if opts.crash {
        // Even seeds sweep the crash point over the first events one by one (so every early
        // instant, including the first metadata writes, gets its crash); odd seeds crash at
        // random points, sometimes twice.
        if seed.is_multiple_of(2) {
            crash_at.push((seed / 2) % 400 + 1);
        } else {
            crash_at.push(rng.range(1, steps * 3));
        }
        if rng.chance(1, 3) {
            let last = crash_at[0];
            crash_at.push(last + rng.range(1, steps * 3));
        }
    }
    let discard_supported = (0..legs).map(|_| rng.chance(3, 4)).collect();
    Setup {
        cfg,
        leg_sectors,
        assume_clean,
        steps,
        crash_at,
        discard_supported,
    }
}

/// A simulation: the world (host + model) plus the seed's decisions.
pub struct Sim {
    pub w: World,
    pub rng: Rng,
    pub setup: Setup,
    pub step: u64,
    /// Per leg: device generation (a replaced device gets new junk and a new uuid).
    crash_idx: usize,
    /// The core keeps metadata on the legs (the dmirror core in crash mode): reassemble through
    /// `dmirror::assemble` and check the write-intent invariant.
    pub metadata: bool,
    /// For a core without metadata: the source leg after a crash.
    pub crash_source: usize,
    /// `Opts::calm`.
    calm: bool,
    /// Crash points count entry-point calls from this value; `None` until the new mirror's label
    /// (its first metadata) is durable, as a host's label step would guarantee.
    armed: Option<u64>,
    /// After a crash: per sector, what the reassembled mirror may hold.
    pub post_crash: Option<Vec<Vec<u64>>>,
}

enum PhaseEnd {
    Crashed,
    Finished,
}

pub fn run(seed: u64, opts: &Opts) -> Outcome {
    let mut rng = Rng::new(seed);
    let setup = setup(seed, &mut rng, opts);
    let cfg = setup.cfg;
    let summary = format!(
        "{} legs, {} data sectors ({} per leg), region {}, {:?}, parents {}, leg ios {}, resync {:?}, clean={}, steps {}, crash at {:?}",
        cfg.legs,
        cfg.data_sectors,
        setup.leg_sectors,
        cfg.region_sectors,
        cfg.read_policy,
        cfg.max_parents,
        cfg.max_leg_ios,
        cfg.resync,
        setup.assume_clean,
        setup.steps,
        setup.crash_at
    );
    let ss = cfg.sector_size as usize;
    let legs: Vec<Leg> = (0..usize::from(cfg.legs))
        .map(|i| {
            let ds = cfg.data_sectors;
            let clean = i == 0 || setup.assume_clean;
            let mut leg = Leg::new(setup.leg_sectors, ss, move |s| {
                if s >= ds {
                    None
                } else if clean {
                    Some(pattern::INITIAL)
                } else {
                    Some(pattern::junk(i))
                }
            });
            leg.discard_supported = setup.discard_supported[i];
            if opts.mutant == Some(Mutant::LoseFlushedWrite) && i == 0 {
                leg.lose_flushed_write = true;
            }
            leg
        })
        .collect();
    let w = World::new(
        cfg,
        setup.leg_sectors,
        legs,
        opts.crash,
        opts.trace,
        opts.mutant,
    );
    let mut w = w;
    w.meta_check = !opts.no_meta_check;
    if cfg.log == LogKind::Device {
        // The log device: blank, or holding what another program left there (no dmirror
        // magic: the activation takes it as unlabelled), with room to spare or exactly the size.
        let need = dmirror::format::log_device_sectors(
            cfg.sector_size,
            cfg.region_sectors,
            cfg.data_sectors,
            cfg.legs,
        )
        .unwrap_or(64);
        let sectors = need
            + if rng.chance(1, 2) {
                0
            } else {
                rng.range(1, 16)
            };
        let junk = rng.chance(1, 3);
        w.logdev = Some(Leg::new(sectors, ss, move |s| {
            junk.then_some(pattern::junk(7) ^ s)
        }));
    }
    let mut sim = Sim {
        w,
        rng: rng.fork(),
        setup,
        step: 0,
        crash_idx: 0,
        post_crash: None,
        armed: None,
        metadata: opts.crash && opts.backend == Backend::Dmirror,
        crash_source: 0,
        calm: opts.calm,
    };
    sim.w.log(|| format!("seed {seed}: {summary}"));
    let mut phase = 0;
    loop {
        let end = {
            let init_owned = if phase == 0 {
                crash::fresh(&sim)
            } else if sim.metadata && cfg.log == LogKind::Device {
                crash::reassemble_log(&mut sim)
            } else if sim.metadata {
                crash::reassemble(&mut sim)
            } else {
                crash::reassemble_without_metadata(&mut sim)
            };
            let Some(init_owned) = init_owned else { break };
            let init = init_owned.init();
            if let Backend::Reference(bug) = opts.backend {
                let mut core = RefCore::new(&cfg, &init);
                core.bug = bug;
                sim.drive(&mut core, phase)
            } else {
                let need = match Mirror::memory_needed(&cfg) {
                    Ok(n) => n,
                    Err(e) => {
                        sim.w
                            .fail(format!("memory_needed refused the configuration: {e:?}"));
                        break;
                    }
                };
                let mut mem = vec![0u8; need];
                let mut mirror = match Mirror::new(&cfg, &init, &mut mem) {
                    Ok(m) => m,
                    Err(e) => {
                        sim.w.fail(format!("Mirror::new refused: {e:?}"));
                        break;
                    }
                };
                if let Some(m) = opts.core_mutant {
                    plant(&mut mirror, &mut sim.w, m);
                }
                sim.drive(&mut mirror, phase)
            }
        };
        match end {
            PhaseEnd::Finished => break,
            PhaseEnd::Crashed => {
                crash::crash(&mut sim);
                phase += 1;
            }
        }
        if sim.w.failed() {
            break;
        }
    }
    let result = match sim.w.failure.take() {
        Some(f) => Err(f),
        None => Ok(()),
    };
    Outcome {
        seed,
        result,
        stats: sim.w.stats.clone(),
        summary,
    }
}

const SETTLE_LIMIT: u64 = 200_000;

impl Sim {
    fn crash_due(&self) -> bool {
        let Some(base) = self.armed else { return false };
        self.setup
            .crash_at
            .get(self.crash_idx)
            .is_some_and(|&c| self.w.calls >= base + c)
    }

    fn status<C: Core<World>>(&mut self, core: &C) -> Status {
        let st = core.status();
        self.w.observe(&st);
        st
    }

    /// After any entry point: resubmit waiting parents if the core made room, poll status.
    fn after<C: Core<World>>(&mut self, core: &mut C) {
        if self.w.retry {
            self.w.pump(core);
        }
        let _ = self.status(core);
    }

    fn tick<C: Core<World>>(&mut self, core: &mut C) {
        self.w.now += 1;
        self.w.calls += 1;
        self.w.log(|| "tick".to_string());
        core.tick(&mut self.w);
    }

    fn deliver_one<C: Core<World>>(&mut self, core: &mut C) -> bool {
        let toks = self.w.deliverable();
        if toks.is_empty() {
            return false;
        }
        let t = toks[self.rng.index(toks.len())];
        self.w.deliver(core, t);
        true
    }

    fn drive<C: Core<World>>(&mut self, core: &mut C, phase: u32) -> PhaseEnd {
        let st = self.status(core);
        if phase > 0 {
            self.after_reassembly(&st);
        } else if self.metadata {
            // Labelling: the first metadata the mirror writes becomes durable on every leg before
            // any crash (a host labels the legs before it serves the mirror).
            let mut n = 0;
            while n < 10_000 && !self.w.failed() && !crash::labelled(self) {
                n += 1;
                if !self.deliver_one(core) {
                    self.tick(core);
                }
                self.after(core);
            }
            if !crash::labelled(self) {
                self.w.fail(
                    "the new mirror never made its metadata durable on every leg".to_string(),
                );
                return PhaseEnd::Finished;
            }
            self.w
                .log(|| "label durable on every leg: crashes armed".to_string());
        }
        if self.armed.is_none() {
            self.armed = Some(self.w.calls);
        }
        while self.step < self.setup.steps && !self.w.failed() {
            self.step += 1;
            let in_flight = self.w.parents_in_flight() + self.w.fifo.len();
            let room = in_flight < 2 * self.setup.cfg.max_parents as usize;
            let pending = !self.w.deliverable().is_empty();
            let calm = self.calm;
            let weights = [
                if pending { 45 } else { 0 },
                if room { 30 } else { 0 },
                6,
                if calm { 0 } else { 2 },
                if calm { 0 } else { 1 },
                1,
                1,
            ];
            match self.rng.weighted(&weights) {
                0 => {
                    self.deliver_one(core);
                }
                1 => {
                    // Submit at once only if nothing waits before it; otherwise it queues behind
                    // the parents the core refused, until a completion or Event::Ready.
                    let was_empty = self.w.fifo.is_empty();
                    self.new_parent();
                    if was_empty {
                        self.w.pump(core);
                    }
                }
                2 => self.tick(core),
                3 => self.fault(core),
                4 => self.control(core),
                5 => {
                    let forged = self.rng.next_u64();
                    self.w.deliver_stale(core, forged);
                }
                _ => self.settle(core, false),
            }
            self.after(core);
            if self.crash_due() {
                return PhaseEnd::Crashed;
            }
        }
        if self.w.failed() {
            return PhaseEnd::Finished;
        }
        self.heal_all(core);
        self.settle(core, true);
        if self.crash_due() {
            return PhaseEnd::Crashed;
        }
        if self.metadata
            && !self.w.failed()
            && self.setup.crash_at.get(self.crash_idx).is_none()
            && self.rng.chance(1, 2)
        {
            // A clean shutdown, then the power goes: the legs must say clean, and reassemble
            // to the same data.
            self.clean_shutdown(core);
            if !self.w.failed() {
                return PhaseEnd::Crashed;
            }
        }
        PhaseEnd::Finished
    }

    fn clean_shutdown<C: Core<World>>(&mut self, core: &mut C) {
        self.w.now += 1;
        self.w.calls += 1;
        self.w.shutdown_done = false;
        self.w.log(|| "control: shutdown".to_string());
        core.shutdown(&mut self.w);
        let mut n = 0;
        while !self.w.shutdown_done && !self.w.failed() {
            n += 1;
            if n > SETTLE_LIMIT {
                self.w
                    .fail("shutdown never finished (no ShutdownDone)".to_string());
                return;
            }
            if !self.deliver_one(core) {
                self.tick(core);
            }
        }
        // New parents are refused while shut down.
        let h = self.w.new_parent(ParentOp::Read, 0, 1, false);
        self.w.pump(core);
        if self.w.fifo.front() != Some(&h) {
            self.w
                .fail("a parent was accepted after the clean shutdown".to_string());
            return;
        }
        self.w.fifo.clear();
        self.w.parents.remove(&h);
        if !self.w.pending.is_empty() {
            self.w.fail(format!(
                "{} leg I/Os still in flight after ShutdownDone",
                self.w.pending.len()
            ));
            return;
        }
        if self.setup.cfg.log == LogKind::Device {
            // Disk log: the log device says clean (unless it failed: then nothing can be said,
            // and the next activation resyncs in full).
            if !self.w.log_failed {
                match crash::durable_log_superblock(self) {
                    Ok(sb) if sb.clean => {}
                    other => self.w.fail(format!(
                        "after ShutdownDone the log device's durable superblock is not clean: {other:?}"
                    )),
                }
            }
            return;
        }
        for l in 0..self.w.legs.len() {
            match crash::durable_superblock(self, l) {
                Ok(sb) if sb.clean => {}
                Ok(sb) => {
                    self.w.fail(format!("after ShutdownDone leg {l}'s durable superblock (seq {}) is not marked clean", sb.seq));
                    return;
                }
                Err(e) => {
                    self.w.fail(format!(
                        "after ShutdownDone leg {l} has no valid durable superblock: {e:?}"
                    ));
                    return;
                }
            }
        }
        self.w
            .log(|| "shutdown done: every leg durably clean".to_string());
        // The next phase: power off now.
        self.setup.crash_at.push(0);
    }

    fn new_parent(&mut self) {
        let cfg = self.setup.cfg;
        let data = cfg.data_sectors;
        let region = cfg.region_sectors;
        let op = [
            ParentOp::Read,
            ParentOp::Write,
            ParentOp::Flush,
            ParentOp::Discard,
        ][self.rng.weighted(&[45, 40, 7, 8])];
        if op == ParentOp::Flush {
            self.w.new_parent(op, 0, 0, false);
            return;
        }
        let max = match op {
            ParentOp::Discard => 2 * region,
            _ => 3 * region,
        }
        .min(data);
        let count = match self.rng.weighted(&[30, 40, 30]) {
            0 => 1,
            1 => self.rng.range(2, 8),
            _ => self.rng.range(9, max.max(9)),
        }
        .min(data);
        let sector = if self.rng.chance(1, 3) {
            // Straddle a region boundary.
            let b = self.rng.range(1, data.div_ceil(region)) * region;
            b.saturating_sub(self.rng.below(count)).min(data - count)
        } else {
            self.rng.below(data - count + 1)
        };
        let fua = op == ParentOp::Write && self.rng.chance(1, 8);
        self.w.new_parent(op, sector, count as u32, fua);
    }

    fn trusted_legs(&self) -> Vec<usize> {
        (0..self.w.legs.len())
            .filter(|&i| self.w.track[i].trusted_since.is_some())
            .collect()
    }

    /// A leg may be hurt only if another leg stays trusted (so every parent can still succeed).
    fn victim(&mut self, st: &Status) -> Option<usize> {
        let trusted = self.trusted_legs();
        let cands: Vec<usize> = (0..self.w.legs.len())
            .filter(|&i| st.leg[i].state.is_active() && trusted.iter().any(|&t| t != i))
            .collect();
        if cands.is_empty() {
            None
        } else {
            Some(cands[self.rng.index(cands.len())])
        }
    }

    fn fault<C: Core<World>>(&mut self, core: &mut C) {
        let st = self.status(core);
        let data = self.setup.cfg.data_sectors;
        let kind = self.rng.weighted(&[35, 15, 10, 10, 30]);
        if kind == 4 {
            // Heal a faulty leg; bring it back if the core took it out.
            let faulty: Vec<usize> = (0..self.w.legs.len())
                .filter(|&i| self.w.legs[i].faults.any())
                .collect();
            if let Some(&l) = faulty.get(self.rng.index(faulty.len().max(1))) {
                self.w.legs[l].faults.clear();
                self.w.log(|| format!("fault: leg {l} healed"));
                self.readd(core, l, &st);
            }
            return;
        }
        if self.w.logdev.is_some() && self.rng.chance(1, 20) {
            // The disk log device fails: its next flush, or every write from now on.
            self.w.stats.faults += 1;
            let flush = self.rng.chance(1, 2);
            if let Some(dev) = self.w.logdev.as_mut() {
                if flush {
                    dev.faults.flush_fail = true;
                } else {
                    dev.faults.write_err.iter_mut().for_each(|b| *b = true);
                    dev.faults.sectors = true;
                }
            }
            self.w.log(|| {
                format!(
                    "fault: log device {}",
                    if flush {
                        "next flush fails"
                    } else {
                        "write errors"
                    }
                )
            });
            return;
        }
        let Some(l) = self.victim(&st) else { return };
        self.w.stats.faults += 1;
        self.w.track[l].trusted_since = None;
        let start = self.rng.below(data);
        let len = self.rng.range(1, 16).min(data - start);
        let leg = &mut self.w.legs[l];
        leg.faults.sectors |= kind < 2;
        match kind {
            0 => {
                leg.faults.read_err[start as usize..(start + len) as usize]
                    .iter_mut()
                    .for_each(|b| *b = true);
                self.w
                    .log(|| format!("fault: leg {l} read errors on {start}+{len}"));
            }
            1 => {
                leg.faults.write_err[start as usize..(start + len) as usize]
                    .iter_mut()
                    .for_each(|b| *b = true);
                self.w
                    .log(|| format!("fault: leg {l} write errors on {start}+{len}"));
            }
            2 => {
                leg.faults.gone = true;
                self.w.log(|| format!("fault: leg {l} vanished"));
            }
            _ => {
                leg.faults.flush_fail = true;
                self.w.log(|| format!("fault: leg {l} next flush fails"));
            }
        }
    }

    /// Put leg `l` back in service according to what the core thinks of it.
    fn readd<C: Core<World>>(&mut self, core: &mut C, l: usize, st: &Status) {
        let state = st.leg[l].state;
        let incremental = match state {
            LegState::Missing => !self.w.track[l].force_full,
            LegState::Failed | LegState::Empty => false,
            _ => return,
        };
        let mut uuid = self.w.track[l].uuid;
        if !incremental {
            // A new incarnation of the device: a new UUID (digits 13..16 count them).
            let n: u16 = std::str::from_utf8(&uuid[13..16])
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            uuid[13..16].copy_from_slice(format!("{:03}", (n + 1) % 1000).as_bytes());
            let busy = self.w.pending.values().any(|p| usize::from(p.leg) == l);
            if self.rng.chance(1, 2) && !busy {
                // A brand-new device: junk everywhere (only when the old one has nothing in
                // flight: its completions would otherwise come from the new device).
                let ds = self.setup.cfg.data_sectors;
                let supported = self.w.legs[l].discard_supported;
                let mut leg = Leg::new(self.setup.leg_sectors, self.w.ss, |s| {
                    if s < ds {
                        Some(pattern::junk(l))
                    } else {
                        None
                    }
                });
                leg.discard_supported = supported;
                self.w.legs[l] = leg;
            }
        }
        self.w.now += 1;
        self.w.calls += 1;
        self.w
            .log(|| format!("control: add_leg({l}, incremental={incremental}) [was {state:?}]"));
        match core.add_leg(
            &mut self.w,
            l as u8,
            uuid,
            self.setup.leg_sectors,
            incremental,
        ) {
            Ok(()) => {
                let t = &mut self.w.track[l];
                t.fenced = false;
                t.must_be_out = false;
                t.force_full = false;
                t.uuid = uuid;
            }
            Err(e) => self.w.fail(format!(
                "add_leg({l}, incremental={incremental}) of a {state:?} leg refused: {e:?}"
            )),
        }
    }

    fn control<C: Core<World>>(&mut self, core: &mut C) {
        let st = self.status(core);
        match self.rng.below(4) {
            0 | 1 => {
                let Some(l) = self.victim(&st) else { return };
                let remove = self.rng.chance(1, 3);
                self.w.now += 1;
                self.w.calls += 1;
                self.w.log(|| {
                    format!(
                        "control: {}({l})",
                        if remove { "remove_leg" } else { "fail_leg" }
                    )
                });
                // The leg leaves as the call begins: parents the core completes inside the call
                // no longer owe it their data. Undone if the core refuses.
                let saved = self.w.track[l].clone();
                let now = self.w.now;
                let t = &mut self.w.track[l];
                t.fenced = true;
                t.must_be_out = true;
                t.left_at = Some(now);
                t.insync_since = None;
                t.trusted_since = None;
                let r = if remove {
                    core.remove_leg(&mut self.w, l as u8)
                } else {
                    core.fail_leg(&mut self.w, l as u8)
                };
                match r {
                    Ok(()) => {}
                    Err(e) => {
                        self.w.track[l] = saved;
                        self.w
                            .fail(format!("fail/remove of active leg {l} refused: {e:?}"));
                    }
                }
            }
            2 => {
                let out: Vec<usize> = (0..self.w.legs.len())
                    .filter(|&i| {
                        matches!(
                            st.leg[i].state,
                            LegState::Failed | LegState::Empty | LegState::Missing
                        )
                    })
                    .collect();
                if let Some(&l) = out.get(self.rng.index(out.len().max(1))) {
                    self.w.legs[l].faults.clear();
                    self.readd(core, l, &st);
                }
            }
            _ => {
                let p = policy(&mut self.rng, self.setup.cfg.legs);
                self.w.log(|| format!("control: read policy {p:?}"));
                if !core.set_read_policy(p) {
                    self.w.fail(format!("set_read_policy({p:?}) refused"));
                }
            }
        }
    }

    fn heal_all<C: Core<World>>(&mut self, core: &mut C) {
        for l in 0..self.w.legs.len() {
            self.w.legs[l].faults.clear();
        }
        self.w.log(|| "heal all legs".to_string());
        // Let the core notice failures still in flight before re-adding.
        self.drain_parents(core);
        let st = self.status(core);
        for l in 0..self.w.legs.len() {
            self.readd(core, l, &st);
        }
    }

    /// Deliver until no parent is in flight or queued.
    fn drain_parents<C: Core<World>>(&mut self, core: &mut C) {
        let mut n = 0;
        while (self.w.parents_in_flight() > 0 || !self.w.fifo.is_empty()) && !self.w.failed() {
            n += 1;
            if n > SETTLE_LIMIT {
                self.w
                    .fail("parents never finished (livelock?)".to_string());
                return;
            }
            if self.rng.chance(1, 8) {
                self.tick(core);
            } else if !self.deliver_one(core) {
                if self.w.fifo.is_empty() || self.w.parents_in_flight() > 0 {
                    self.tick(core);
                } else {
                    // Queued parents, nothing in flight: the core must take one now.
                    let before = self.w.fifo.len();
                    self.w.pump(core);
                    if self.w.fifo.len() == before && self.w.parents_in_flight() == 0 {
                        self.w.fail(format!(
                            "submit answers Busy with nothing in flight ({before} queued)"
                        ));
                        return;
                    }
                }
            }
            self.after(core);
            if self.crash_due() {
                return;
            }
        }
    }

    /// Stop submitting and let everything finish. `full`: also wait for resync and idleness, and
    /// check the whole mirror.
    fn settle<C: Core<World>>(&mut self, core: &mut C, full: bool) {
        self.w.log(|| format!("settle (full={full})"));
        self.drain_parents(core);
        if self.w.failed() || self.crash_due() {
            return;
        }
        if !full {
            let st = self.status(core);
            self.w.check_quiet(&st, false);
            return;
        }
        // A dirty bit clears after its region was idle for one to two sweep periods, then a
        // flush round and a clearing round.
        let quiet_ticks = 2 * u64::from(self.setup.cfg.clear_delay_ticks) + 3;
        let mut idle_ticks = 0;
        let mut n = 0;
        loop {
            n += 1;
            if n > SETTLE_LIMIT {
                let st = core.status();
                self.w.fail(format!(
                    "never settled: idle={} {}",
                    core.is_idle(),
                    brief_status(&st)
                ));
                return;
            }
            if self.deliver_one(core) {
                idle_ticks = 0;
            } else {
                let st = self.status(core);
                // Legs whose re-add was refused with Busy: again, now.
                for l in 0..self.w.legs.len() {
                    if !st.leg[l].state.is_active() {
                        self.readd(core, l, &st);
                    }
                }
                let st = core.status();
                let all_in = (0..self.w.legs.len()).all(|i| {
                    st.leg[i].state == LegState::InSync && st.leg[i].regions_out_of_sync == 0
                });
                if all_in && core.is_idle() && self.w.pending.is_empty() {
                    idle_ticks += 1;
                    if idle_ticks > quiet_ticks {
                        break;
                    }
                }
                self.tick(core);
            }
            self.after(core);
            if self.w.failed() || self.crash_due() {
                return;
            }
            if self.w.parents_in_flight() > 0 || !self.w.fifo.is_empty() {
                self.drain_parents(core);
            }
        }
        let st = self.status(core);
        self.w.check_quiet(&st, true);
        if st.regions_in_sync != st.regions || st.dirty_regions != 0 {
            self.w
                .fail(format!("quiet and in sync, but {}", brief_status(&st)));
        }
        if let Some(allowed) = self.post_crash.take() {
            let _ = allowed; // checked when the phase began (authoritative leg); legs now equal it
        }
        self.w.log(|| format!("settled: {}", brief_status(&st)));
    }

    /// A reassembled mirror starts: the authoritative leg's data must be what the crash allows,
    /// and from now on that is the only possible content.
    fn after_reassembly(&mut self, st: &Status) {
        let Some(allowed) = self.post_crash.clone() else {
            return;
        };
        let a = usize::from(st.authoritative);
        if a >= self.w.legs.len() {
            self.w.fail(format!("authoritative leg {a} does not exist"));
            return;
        }
        self.w
            .log(|| format!("reassembled: authoritative leg {a}, {}", brief_status(st)));
        for (s, allow) in allowed.iter().enumerate() {
            let v = if allow.contains(&pattern::ANY) {
                pattern::ANY
            } else {
                let bytes = self.w.legs[a].sector(s as u64);
                match pattern::decode(bytes) {
                    Some((id, at)) if at == s as u64 && allow.contains(&id) => id,
                    _ => {
                        let d = pattern::describe(bytes);
                        self.w.fail(format!("after crash: authoritative leg {a} sector {s} holds {d}, allowed {allow:?}"));
                        return;
                    }
                }
            };
            self.w.model.set_after_crash(s, v, self.w.now);
        }
    }

    pub fn crash_idx_advance(&mut self) {
        self.crash_idx += 1;
    }
}

pub fn brief_status(st: &Status) -> String {
    let legs: Vec<String> = (0..usize::from(st.legs))
        .map(|i| {
            let l = &st.leg[i];
            format!(
                "{:?}(oos {}, {}/{})",
                l.state, l.regions_out_of_sync, l.resync_done, l.resync_total
            )
        })
        .collect();
    format!(
        "legs [{}], auth {}, gen {}, regions {} in sync {}, dirty {}, in flight {}p/{}io",
        legs.join(", "),
        st.authoritative,
        st.generation,
        st.regions,
        st.regions_in_sync,
        st.dirty_regions,
        st.inflight_parents,
        st.inflight_leg_ios
    )
}
