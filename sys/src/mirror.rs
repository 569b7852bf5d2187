//! The mirror: admission and ordering of parent I/Os, write groups with their per-leg
//! transactions, reads with fallback and repair, failure handling, and the glue to the region log
//! (`log.rs`: journal and super rounds) and the resync engine (`resync.rs`).
//!
//! # Write groups and leg transactions
//!
//! A parent write (or discard) becomes a write group: one [`Tx`] per leg that was active when the
//! group started. Each transaction walks
//!
//! ```text
//!   Journal ──(write-intent bits of its regions durable on this leg)──▶ Data
//!   Data    ──(leg write reported: ok, or error → the leg is failed)──▶ Super
//!   Super   ──(every leg-state change the group depends on is durable)──▶ Done
//! ```
//!
//! Skip rules, each tested in `tests` below:
//! - Journal is skipped when every region the write touches is already durably marked on that leg
//!   (and, for every missing leg, durably tracked) — `RegionLog::mark` answers the round that makes
//!   them durable, and a leg that has completed that round skips straight to Data. With the
//!   in-memory log the round is always 0: Journal is always skipped.
//! - Super is skipped (Done at once) when no leg-state change is pending: the group's `need_super`
//!   is a round already completed.
//! - A leg that leaves service while its transaction is in Journal goes to Super without writing:
//!   the group must not complete before the metadata saying that leg is out is durable, or a crash
//!   could bring the stale leg back as in sync.
//!
//! The parent completes only when every transaction is Done; it succeeds when at least one leg
//! that was in sync for the written range wrote it.
//!
//! # Ordering
//!
//! Every admitted parent sits in one list in admission order. A write, discard or resync copy may
//! not start while an earlier entry overlapping it is unfinished, and a read may not start while an
//! earlier overlapping write is unfinished (reads share). So overlapping writes reach every leg in
//! admission order, a read never sees a half-applied write, and a read repair never races a write.
//! Parents that cannot get their leg-I/O slots wait in a FIFO: nothing is failed for lack of
//! resources.
use crate::arena::Arena;
use crate::init::Init;
use crate::log::{Log, MetaLayout, Regions};
use crate::resync::ResyncLeg;
use crate::types::*;

/// Why a control operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// No such leg slot.
    NoSuchLeg,
    /// The slot is in the wrong state for this operation (e.g. adding to a leg in use).
    WrongState,
    /// It would leave no in-sync leg.
    LastLeg,
    /// The new leg's device is too small.
    TooSmall,
    /// A shutdown is in progress.
    ShuttingDown,
}

pub(crate) const NIL: u32 = u32::MAX;

/// What a slot of the parent table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Free,
    Read,
    Write,
    Flush,
    Discard,
    /// A resync copy (an internal entry: it takes part in ordering like a write).
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting in the FIFO for leg-I/O slots.
    SlotWait,
    /// Waiting for an earlier overlapping entry to finish.
    Blocked,
    Running,
}

/// The state of one leg's transaction in a write group (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Tx {
    /// This leg is not part of the group.
    None,
    Journal,
    Data,
    Super,
    Done,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Parent {
    pub(crate) kind: Kind,
    pub(crate) phase: Phase,
    pub(crate) handle: ParentHandle,
    pub(crate) buf: u64,
    pub(crate) sector: u64,
    pub(crate) count: u32,
    pub(crate) fua: bool,
    /// Admission list links (admission order).
    pub(crate) prev: u32,
    pub(crate) next: u32,
    /// FIFO link while in `SlotWait`; free-list link while free.
    pub(crate) wnext: u32,
    /// Leg-I/O slots reserved for this entry.
    pub(crate) reserved: u32,
    /// Leg I/Os in flight for this entry.
    pub(crate) outstanding: u32,
    /// The leg transactions, one bitmask per state (a leg is in at most one; a member of the
    /// group in none of them is Done). See [`Parent::tx`].
    pub(crate) tx_journal: u32,
    pub(crate) tx_data: u32,
    pub(crate) tx_super: u32,
    /// Legs of the group (or of the flush).
    pub(crate) members: u32,
    /// Legs whose data (or flush) succeeded.
    pub(crate) ok: u32,
    /// Round after which this group's write-intent marks are durable.
    pub(crate) need_journal: u64,
    /// Round after which the leg states this group depends on are durable.
    pub(crate) need_super: u64,
    pub(crate) err: Option<IoError>,
    /// Resync entries: the leg being brought in sync and the copy's source.
    pub(crate) target: u8,
    pub(crate) source: u8,
    pub(crate) tried: u32,
}

impl Parent {
    pub(crate) const FREE: Parent = Parent {
        kind: Kind::Free,
        phase: Phase::Running,
        handle: 0,
        buf: 0,
        sector: 0,
        count: 0,
        fua: false,
        prev: NIL,
        next: NIL,
        wnext: NIL,
        reserved: 0,
        outstanding: 0,
        tx_journal: 0,
        tx_data: 0,
        tx_super: 0,
        members: 0,
        ok: 0,
        need_journal: 0,
        need_super: 0,
        err: None,
        target: 0,
        source: 0,
        tried: 0,
    };

    /// The state of leg `k`'s transaction.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn tx(&self, k: u8) -> Tx {
        let b = bit(k);
        if self.members & b == 0 {
            Tx::None
        } else if self.tx_journal & b != 0 {
            Tx::Journal
        } else if self.tx_data & b != 0 {
            Tx::Data
        } else if self.tx_super & b != 0 {
            Tx::Super
        } else {
            Tx::Done
        }
    }

    /// Some transaction is not Done.
    pub(crate) fn tx_pending(&self) -> bool {
        self.tx_journal | self.tx_data | self.tx_super != 0
    }

    pub(crate) fn end(&self) -> u64 {
        self.sector.saturating_add(u64::from(self.count))
    }

    /// Must `self` wait for an earlier overlapping `earlier`? User writes and discards exclude
    /// everything overlapping them; reads share with reads; resync copies share with reads (a
    /// read never goes to the leg being copied to) and with each other (different targets).
    pub(crate) fn conflicts_with(&self, earlier: &Parent) -> bool {
        let excl = |k: Kind| matches!(k, Kind::Write | Kind::Discard);
        self.kind != Kind::Flush
            && earlier.kind != Kind::Flush
            && (excl(self.kind) || excl(earlier.kind))
            && earlier.sector < self.end()
            && self.sector < earlier.end()
    }
}

/// What a leg-I/O slot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Free,
    /// A piece of a parent read.
    Read,
    /// A rewrite of a range that failed to read on this leg.
    Repair,
    /// A write group's data write or discard.
    Data,
    /// A parent flush's leg flush.
    Flush,
    /// Resync copy: reading the source, then writing the target.
    CopyRead,
    CopyWrite,
    /// Metadata round: a bitmap or superblock write, then the leg flush.
    MetaWrite,
    MetaFlush,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Lio {
    pub(crate) gen: u32,
    pub(crate) role: Role,
    /// Owning parent slot (NIL for metadata).
    pub(crate) owner: u32,
    pub(crate) leg: u8,
    /// Data-relative sector and length (parent pieces).
    pub(crate) sector: u64,
    pub(crate) count: u32,
    /// Byte offset into the parent's buffer.
    pub(crate) offset: u64,
    /// Read pieces: legs tried, and legs that returned a read error (to repair).
    pub(crate) tried: u32,
    pub(crate) bad: u32,
    /// Metadata round this I/O belongs to.
    pub(crate) round: u64,
    pub(crate) next: u32,
}

impl Lio {
    pub(crate) const FREE: Lio = Lio {
        gen: 0,
        role: Role::Free,
        owner: NIL,
        leg: 0,
        sector: 0,
        count: 0,
        offset: 0,
        tried: 0,
        bad: 0,
        round: 0,
        next: NIL,
    };
}

/// Per-leg runtime state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leg {
    pub(crate) state: LegState,
    pub(crate) uuid: [u8; 16],
    pub(crate) sectors: u64,
    pub(crate) inflight: u32,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) errors: u64,
    pub(crate) repairs: u64,
    /// Where this leg's metadata lives (persistent log only).
    pub(crate) meta: MetaLayout,
    pub(crate) resync: ResyncLeg,
    /// Generation at which this leg's state last changed (see `LegInit::since`).
    pub(crate) since: u64,
}

impl Leg {
    const EMPTY: Leg = Leg {
        state: LegState::Empty,
        uuid: [0; 16],
        sectors: 0,
        inflight: 0,
        reads: 0,
        writes: 0,
        errors: 0,
        repairs: 0,
        meta: MetaLayout::NONE,
        resync: ResyncLeg::IDLE,
        since: 0,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shutdown {
    No,
    /// Draining parents and copies.
    Draining,
    /// Waiting for the flush round that lets every dirty bit be cleared.
    Flushing(u64),
    /// Waiting for the round that writes the clean superblock.
    Writing(u64),
    Done,
}

/// One mirror. All memory comes from the buffer given to [`Mirror::new`].
pub struct Mirror<'a> {
    pub(crate) cfg: Config,
    pub(crate) parents: &'a mut [Parent],
    pub(crate) free_parent: u32,
    /// Resync entries live at the end of the parent table, one per resync buffer.
    pub(crate) resync_base: u32,
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) fifo_head: u32,
    pub(crate) fifo_tail: u32,
    pub(crate) lios: &'a mut [Lio],
    pub(crate) free_lio: u32,
    /// Leg-I/O slots parents may still reserve (the rest are for metadata).
    pub(crate) lio_available: u32,
    pub(crate) lios_busy: u32,
    /// One entry per leg slot (`cfg.legs`), carved like every other table: the `Mirror` value
    /// itself stays small, so creating one needs little stack.
    pub(crate) legs: &'a mut [Leg],
    pub(crate) log: Log<'a>,
    pub(crate) authoritative: u8,
    pub(crate) generation: u64,
    pub(crate) mirror_uuid: [u8; 16],
    pub(crate) name: [u8; 32],
    pub(crate) counters: Counters,
    pub(crate) rr_leg: u8,
    pub(crate) rr_count: u32,
    pub(crate) ticks: u64,
    pub(crate) resync_budget: u64,
    /// Something finished or changed: blocked and waiting entries must be looked at again.
    pub(crate) rescan: bool,
    pub(crate) shutdown: Shutdown,
    /// Set by `submit` when it answered Busy; cleared when `Event::Ready` is sent.
    pub(crate) told_busy: bool,
    pub(crate) inflight_parents: u32,
    #[cfg(any(test, feature = "mutants"))]
    pub(crate) mutant: crate::Mutant,
}

/// Sectors of the region `r` cover `[r * region, (r + 1) * region)`.
pub(crate) fn bit(leg: u8) -> u32 {
    1u32.checked_shl(u32::from(leg)).unwrap_or(0)
}

impl<'a> Mirror<'a> {
    fn check(cfg: &Config) -> Result<(), ConfigError> {
        if cfg.legs == 0 || usize::from(cfg.legs) > MAX_LEGS {
            return Err(ConfigError::LegCount);
        }
        if !cfg.sector_size.is_power_of_two() || !(512..=65536).contains(&cfg.sector_size) {
            return Err(ConfigError::SectorSize);
        }
        if !cfg.region_sectors.is_power_of_two() || cfg.region_sectors > (1 << 32) {
            return Err(ConfigError::RegionSize);
        }
        if cfg.data_sectors == 0 || cfg.data_sectors > (1u64 << 56) {
            return Err(ConfigError::DataSize);
        }
        let regions = crate::arith::div_ceil(cfg.data_sectors, cfg.region_sectors);
        if regions > (1u64 << 26) {
            return Err(ConfigError::RegionSize);
        }
        match cfg.read_policy {
            ReadPolicy::RoundRobin { batch: 0 } => return Err(ConfigError::ReadPolicy),
            ReadPolicy::Prefer { leg } if leg >= cfg.legs => return Err(ConfigError::ReadPolicy),
            ReadPolicy::Split { min_sectors } if min_sectors < 2 => {
                return Err(ConfigError::ReadPolicy)
            }
            _ => {}
        }
        if cfg.max_parents == 0
            || cfg.max_parents > 1 << 20
            || cfg.max_leg_ios < u32::from(cfg.legs)
            || cfg.max_leg_ios > 1 << 22
        {
            return Err(ConfigError::PoolSize);
        }
        let r = &cfg.resync;
        if r.max_inflight == 0
            || r.max_inflight > 1024
            || r.chunk_sectors == 0
            || r.checkpoint_regions == 0
        {
            return Err(ConfigError::Resync);
        }
        if cfg.clear_delay_ticks == 0 {
            return Err(ConfigError::Resync);
        }
        Ok(())
    }

    /// Metadata I/O slots: per leg, one round's writes, a superblock and a flush.
    fn meta_lios(cfg: &Config) -> u32 {
        u32::from(cfg.legs).saturating_mul(Log::meta_ios_per_leg(cfg))
    }

    #[allow(clippy::type_complexity)]
    fn carve(
        cfg: &Config,
        arena: &mut Arena<'a>,
    ) -> Option<(&'a mut [Parent], &'a mut [Lio], &'a mut [Leg], Log<'a>)> {
        let nparents = cfg.max_parents as usize + cfg.resync.max_inflight as usize;
        let nlios = cfg.max_leg_ios as usize
            + Self::meta_lios(cfg) as usize
            + cfg.resync.max_inflight as usize;
        let parents = arena.slice(nparents, Parent::FREE);
        let lios = arena.slice(nlios, Lio::FREE);
        let legs = arena.slice(usize::from(cfg.legs), Leg::EMPTY);
        let log = Log::carve(cfg, arena);
        Some((parents?, lios?, legs?, log?))
    }

    /// Bytes of memory [`Mirror::new`] needs for this configuration.
    pub fn memory_needed(cfg: &Config) -> Result<usize, ConfigError> {
        Self::check(cfg)?;
        let mut arena = Arena::measure();
        let _ = Self::carve(cfg, &mut arena);
        if arena.is_measuring() {
            Ok(arena.needed())
        } else {
            Err(ConfigError::Memory)
        }
    }

    /// Create a mirror from a configuration, its starting state, and memory
    /// (at least [`Mirror::memory_needed`] bytes; any alignment).
    pub fn new(
        cfg: &Config,
        init: &Init<'_>,
        mem: &'a mut [u8],
    ) -> Result<Mirror<'a>, ConfigError> {
        let mut place = None;
        Self::new_in(cfg, init, mem, &mut place)?;
        // new_in left a mirror in `place` (it returned Ok).
        place.ok_or(ConfigError::Memory)
    }

    /// [`Mirror::new`], building the mirror in `place` (the host's memory) instead of returning
    /// it: the `Mirror` value (~1.3 KiB) is never moved through temporaries, so creating one needs
    /// little stack (a kernel glue creates it straight into its allocated block). On success
    /// `place` holds the mirror; on error it is `None`.
    pub fn new_in(
        cfg: &Config,
        init: &Init<'_>,
        mem: &'a mut [u8],
        place: &mut Option<Mirror<'a>>,
    ) -> Result<(), ConfigError> {
        *place = None;
        let r = Self::build_in(cfg, init, mem, place);
        if r.is_err() {
            *place = None;
        }
        r
    }

    fn build_in(
        cfg: &Config,
        init: &Init<'_>,
        mem: &'a mut [u8],
        place: &mut Option<Mirror<'a>>,
    ) -> Result<(), ConfigError> {
        Self::check(cfg)?;
        let mut arena = Arena::new(mem);
        let (parents, lios, legs, log) = Self::carve(cfg, &mut arena).ok_or(ConfigError::Memory)?;
        *place = Some(Mirror {
            cfg: *cfg,
            parents,
            free_parent: NIL,
            resync_base: cfg.max_parents,
            head: NIL,
            tail: NIL,
            fifo_head: NIL,
            fifo_tail: NIL,
            lios,
            free_lio: NIL,
            lio_available: cfg.max_leg_ios,
            lios_busy: 0,
            legs,
            log,
            authoritative: init.authoritative,
            generation: init.generation,
            mirror_uuid: init.mirror_uuid,
            name: init.name,
            counters: Counters::default(),
            rr_leg: 0,
            rr_count: 0,
            ticks: 0,
            resync_budget: 0,
            rescan: false,
            shutdown: Shutdown::No,
            told_busy: false,
            inflight_parents: 0,
            #[cfg(any(test, feature = "mutants"))]
            mutant: crate::Mutant::None,
        });
        let Some(m) = place.as_mut() else {
            return Err(ConfigError::Memory);
        };
        // Free lists: parents below resync_base only; resync entries are addressed directly.
        for i in (0..cfg.max_parents).rev() {
            if let Some(p) = m.parents.get_mut(i as usize) {
                p.wnext = m.free_parent;
                m.free_parent = i;
            }
        }
        for i in (0..m.lios.len() as u32).rev() {
            if let Some(l) = m.lios.get_mut(i as usize) {
                l.next = m.free_lio;
                m.free_lio = i;
            }
        }
        m.log.set_seq(init.seq);
        let mut any_in_sync = false;
        for k in 0..cfg.legs {
            let li = init
                .legs
                .get(usize::from(k))
                .copied()
                .unwrap_or(crate::init::LegInit::EMPTY);
            let persistent = cfg.log == LogKind::OnLegs;
            let meta = if persistent && li.state != LegState::Empty {
                MetaLayout::for_leg(cfg, li.sectors).ok_or(ConfigError::LegTooSmall { leg: k })?
            } else {
                MetaLayout::NONE
            };
            if !persistent
                && li.state.is_active()
                && li.sectors != 0
                && li.sectors < cfg.data_sectors
            {
                return Err(ConfigError::LegTooSmall { leg: k });
            }
            let Some(leg) = m.legs.get_mut(usize::from(k)) else {
                continue;
            };
            leg.state = li.state;
            leg.uuid = li.uuid;
            leg.sectors = li.sectors;
            leg.meta = meta;
            leg.since = li.since;
            any_in_sync |= li.state == LegState::InSync;
            // What this leg may differ in.
            let regions = m.log.regions();
            match li.state {
                LegState::Rebuilding if li.rebuild.full => {
                    m.log
                        .needs_sync(k)
                        .set_range(li.rebuild.checkpoint.min(regions), regions);
                }
                LegState::Failed | LegState::Empty => m.log.needs_sync(k).fill(true),
                _ => {}
            }
            if let Some(Some(t)) = init.tracking.get(usize::from(k)) {
                if li.state != LegState::InSync {
                    m.log.needs_sync(k).or_bytes(t);
                }
            }
            if li.state == LegState::Rebuilding {
                if let Some(leg) = m.legs.get_mut(usize::from(k)) {
                    leg.resync.checkpoint = li.rebuild.checkpoint;
                    leg.resync.full = li.rebuild.full;
                }
            }
        }
        if !any_in_sync {
            return Err(ConfigError::InitialState);
        }
        if m.leg_state(m.authoritative) != LegState::InSync {
            m.authoritative = (0..cfg.legs)
                .find(|&k| m.leg_state(k) == LegState::InSync)
                .unwrap_or(0);
        }
        // After an unclean shutdown the dirty regions may differ between legs: every leg but the
        // authoritative one is out of sync there until resynced (and so never read there).
        if let Some(dirty) = init.dirty {
            m.log.intent().or_bytes(dirty);
            for k in 0..cfg.legs {
                if k != m.authoritative && m.leg_state(k).is_active() {
                    m.log.needs_sync_or_intent(k);
                }
            }
        }
        m.log.init_counts(cfg.legs);
        for k in 0..cfg.legs {
            if m.leg_state(k).is_active() && m.log.out_of_sync(k) > 0 {
                m.start_resync_pass(k);
            }
        }
        if m.log.persistent() {
            // First round: the assembled state under a new generation (so a later assembly can
            // tell a leg that missed it as stale, never as a split brain), the unclean flag, and
            // every bitmap sector (so every leg holds the same image). Writes wait for it.
            m.generation = m.generation.saturating_add(1);
            m.log.mark_all_dirty(cfg.legs);
            m.log.request_super();
        }
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn leg_state(&self, k: u8) -> LegState {
        self.legs
            .get(usize::from(k))
            .map(|l| l.state)
            .unwrap_or(LegState::Empty)
    }

    pub(crate) fn active_mask(&self) -> u32 {
        let mut m = 0;
        for k in 0..self.cfg.legs {
            if self.leg_state(k).is_active() {
                m |= bit(k);
            }
        }
        m
    }

    pub(crate) fn regions_of(&self, sector: u64, count: u32) -> Regions {
        Regions::of(sector, count, self.cfg.region_sectors)
    }
}
