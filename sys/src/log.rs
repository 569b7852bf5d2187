//! The region log behind the journal state: which regions may differ between legs, which legs
//! need which regions resynced, and — with the persistent log — which bitmap sectors and
//! superblocks must be written before whom.
//!
//! Memory (all carved at creation):
//! - `intent`: the write-intent bitmap (a region with a write in flight or recently written);
//! - `needs[k]`: per leg, the regions it may differ in (out of sync). For a missing leg this is
//!   its tracking bitmap: what was written while it was away;
//! - `recent` / `cand`: lazy clearing (a region idle for a whole sweep period becomes a candidate;
//!   a write cancels its candidacy);
//! - persistent log only: `img`, the bytes of the bitmap area as last staged for writing (never
//!   changed while a round writes them), a dirty bit and the staging round per area sector, and one
//!   superblock buffer per leg.
//!
//! # Rounds
//! Metadata is written in rounds, one at a time (`meta.rs`). A round stages every dirty area
//! sector (and the superblock, when a leg state changed), writes them to every active leg, then
//! flushes each leg (unless the round only cleared bits). A bit set before round `n` started is
//! durable on leg `k` once `durable[k] >= n`; so `mark` answers, for the sectors a write depends
//! on, the round that will make them durable: the next round for a dirty sector, the round that
//! staged it otherwise. Group commit falls out: every write marking a sector while a round is in
//! flight waits for the same next round.
use crate::arena::Arena;
use crate::arith::{div, div_ceil, rem};
use crate::bitmap::Bits;
use crate::types::{Config, LogKind, MAX_LEGS};

/// Bytes of one metadata write at most (hosts' largest transfer is often 128 KiB).
pub(crate) const META_IO_BYTES: u64 = 128 * 1024;

/// The dirty-region log operations (after the dm dirty-log interface), for any log
/// implementation: in memory (`LogKind::Core`) or on the legs (`LogKind::OnLegs`).
pub trait RegionLog {
    /// Record that a write to regions `first..=last` is about to happen while the legs in
    /// `absent` are away; answers the metadata round that must be durable first (0: none).
    fn mark(&mut self, first: u64, last: u64, absent: u32) -> u64;
    /// Ask for `region`'s write-intent bit to be cleared once its data is durable everywhere.
    fn clear(&mut self, region: u64);
    /// Whether metadata is waiting to be written (a round should start).
    fn flush_needed(&self) -> bool;
    /// Is `leg` in sync for `region`?
    fn in_sync(&self, leg: u8, region: u64) -> bool;
    /// Has `region` no write intent recorded?
    fn is_clean(&self, region: u64) -> bool;
    /// The next region at or after `from` that `leg` needs resynced.
    fn next_resync(&self, leg: u8, from: u64) -> Option<u64>;
    /// Record that `leg` is (or is not) in sync for `region`.
    fn set_region_sync(&mut self, leg: u8, region: u64, in_sync: bool);
    /// Regions `leg` is in sync for.
    fn sync_count(&self, leg: u8) -> u64;
}

/// Where one leg's metadata lives (absolute sectors on that leg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetaLayout {
    pub(crate) bitmap_start: u64,
    pub(crate) slots: [u64; 2],
}

impl MetaLayout {
    pub(crate) const NONE: MetaLayout = MetaLayout {
        bitmap_start: 0,
        slots: [0, 0],
    };

    pub(crate) fn for_leg(cfg: &Config, leg_sectors: u64) -> Option<MetaLayout> {
        let l = crate::format::layout(
            leg_sectors,
            cfg.sector_size,
            cfg.region_sectors,
            cfg.data_sectors,
        )
        .ok()?;
        if l.tracking_start != l.bitmap_start.checked_add(l.bitmap_sectors)? {
            return None;
        }
        Some(MetaLayout {
            bitmap_start: l.bitmap_start,
            slots: l.slots,
        })
    }
}

/// The regions a range touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Regions {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

impl Regions {
    pub(crate) fn of(sector: u64, count: u32, region_sectors: u64) -> Regions {
        let rs = region_sectors.max(1);
        let end = sector.saturating_add(u64::from(count.max(1))) - 1;
        Regions {
            first: sector / rs,
            last: end / rs,
        }
    }

    pub(crate) fn iter(self) -> core::ops::RangeInclusive<u64> {
        self.first..=self.last
    }
}

pub(crate) struct Log<'a> {
    persistent: bool,
    regions: u64,
    /// Words per bitmap.
    words: usize,
    legs: u8,
    intent: &'a mut [u64],
    recent: &'a mut [u64],
    cand: &'a mut [u64],
    needs: &'a mut [u64],
    oos: [u64; MAX_LEGS],
    // ---- persistent log ----
    sector_size: u64,
    /// Sectors of one bitmap (write intent, or one leg's tracking).
    pub(crate) bm_sectors: u64,
    /// Area sectors per metadata write.
    pub(crate) chunk: u64,
    pub(crate) img: &'a mut [u8],
    dirty: &'a mut [u64],
    stage: &'a mut [u64],
    pub(crate) sb: &'a mut [u8],
    pub(crate) sb_bytes: usize,
    pub(crate) round: u64,
    pub(crate) completed: u64,
    /// Intent bits cleared in memory whose cleared image no round has staged yet, and those
    /// staged by round `clears_round` (not on disk until that round completes): status counts
    /// them as dirty, so "0 dirty regions" means a crash now resyncs nothing.
    clears_unstaged: u64,
    clears_staged: u64,
    clears_round: u64,
    pub(crate) in_flight: bool,
    /// Legs taking part in the round in flight, and those still owing it writes or a flush.
    pub(crate) part: u32,
    pub(crate) pending: [u32; MAX_LEGS],
    pub(crate) durable: [u64; MAX_LEGS],
    pub(crate) round_flush: bool,
    /// Metadata I/Os in flight, including those to legs that left the round: the next round
    /// may not restage their buffers before they complete.
    pub(crate) meta_inflight: u32,
    /// A newly set bit awaits staging (its round must flush).
    pub(crate) set_pending: bool,
    pub(crate) sb_dirty: bool,
    pub(crate) seq: u64,
    pub(crate) state_need: u64,
    /// Clearing: the round whose flush must complete before candidates may be cleared.
    pub(crate) gate: Option<u64>,
    pub(crate) clean: bool,
    /// Per chunk of the area, the `[first, last]` sectors the round in flight writes.
    pub(crate) items: &'a mut [(u64, u64)],
    pub(crate) nitems: usize,
    /// The disk log device (`LogKind::Device`): its state (see `devlog.rs`).
    pub(crate) dev: crate::devlog::DevLog,
    #[cfg(any(test, feature = "mutants"))]
    pub(crate) mutant: crate::Mutant,
}

impl<'a> Log<'a> {
    pub(crate) fn bitmap_sectors(cfg: &Config) -> u64 {
        let regions = cfg.data_sectors.div_ceil(cfg.region_sectors.max(1));
        div_ceil(regions.div_ceil(8), u64::from(cfg.sector_size)).max(1)
    }

    /// Area sectors (write intent + one tracking bitmap per leg).
    fn area_sectors(cfg: &Config) -> u64 {
        Self::bitmap_sectors(cfg) * (1 + u64::from(cfg.legs))
    }

    fn chunk_sectors(cfg: &Config) -> u64 {
        div(META_IO_BYTES, u64::from(cfg.sector_size)).max(1)
    }

    /// Metadata writes one leg may need in one round: one per chunk of the area, plus the
    /// superblock and the flush.
    pub(crate) fn meta_ios_per_leg(cfg: &Config) -> u32 {
        if cfg.log == LogKind::Core {
            return 0;
        }
        let chunks = div_ceil(Self::area_sectors(cfg), Self::chunk_sectors(cfg));
        // Disk log: the log device's writes, superblock and flush, and one data flush per leg
        // (`devlog.rs`); counted per leg by the caller, one more per leg covers it.
        let extra = if cfg.log == LogKind::Device { 3 } else { 2 };
        u32::try_from(chunks.saturating_add(extra)).unwrap_or(u32::MAX)
    }

    pub(crate) fn carve(cfg: &Config, arena: &mut Arena<'a>) -> Option<Log<'a>> {
        let persistent = cfg.log != LogKind::Core;
        let regions = div_ceil(cfg.data_sectors, cfg.region_sectors);
        let ss = u64::from(cfg.sector_size);
        let bm_sectors = Self::bitmap_sectors(cfg);
        let words = if persistent {
            usize::try_from(bm_sectors * ss / 8).ok()?
        } else {
            Bits::words_for(regions)
        };
        let legs = usize::from(cfg.legs);
        let area = if persistent {
            usize::try_from(Self::area_sectors(cfg)).ok()?
        } else {
            0
        };
        let sb_bytes = if persistent {
            (cfg.sector_size as usize).max(crate::format::SB_BYTES)
        } else {
            0
        };
        let intent = arena.slice(words, 0u64);
        let recent = arena.slice(words, 0u64);
        let cand = arena.slice(words, 0u64);
        let needs = arena.slice(words.checked_mul(legs)?, 0u64);
        let img = arena.slice(area.checked_mul(cfg.sector_size as usize)?, 0u8);
        let dirty = arena.slice(area.div_ceil(64), 0u64);
        let stage = arena.slice(area, 0u64);
        let sb = arena.slice(sb_bytes.checked_mul(legs)?, 0u8);
        let nitems = if persistent {
            usize::try_from(div_ceil(area as u64, Self::chunk_sectors(cfg))).ok()?
        } else {
            0
        };
        let items = arena.slice(nitems, (0u64, 0u64));
        Some(Log {
            persistent,
            regions,
            words,
            legs: cfg.legs,
            intent: intent?,
            recent: recent?,
            cand: cand?,
            needs: needs?,
            oos: [0; MAX_LEGS],
            sector_size: ss,
            bm_sectors,
            chunk: Self::chunk_sectors(cfg),
            img: img?,
            dirty: dirty?,
            stage: stage?,
            sb: sb?,
            sb_bytes,
            round: 0,
            completed: 0,
            clears_unstaged: 0,
            clears_staged: 0,
            clears_round: 0,
            in_flight: false,
            part: 0,
            pending: [0; MAX_LEGS],
            durable: [0; MAX_LEGS],
            round_flush: false,
            meta_inflight: 0,
            set_pending: false,
            sb_dirty: false,
            seq: 0,
            state_need: 0,
            gate: None,
            clean: false,
            items: items?,
            nitems: 0,
            dev: crate::devlog::DevLog::new(cfg.log == LogKind::Device),
            #[cfg(any(test, feature = "mutants"))]
            mutant: crate::Mutant::None,
        })
    }

    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }

    pub(crate) fn regions(&self) -> u64 {
        self.regions
    }

    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    fn leg_words(&self, k: u8) -> core::ops::Range<usize> {
        let s = usize::from(k) * self.words;
        s..s + self.words
    }

    pub(crate) fn needs_sync(&mut self, k: u8) -> Bits<'_> {
        let r = self.leg_words(k);
        let regions = self.regions;
        Bits::new(self.needs.get_mut(r).unwrap_or(&mut []), regions)
    }

    fn needs_ref(&self, k: u8) -> &[u64] {
        self.needs.get(self.leg_words(k)).unwrap_or(&[])
    }

    pub(crate) fn intent(&mut self) -> Bits<'_> {
        Bits::new(self.intent, self.regions)
    }

    /// `needs[k] |= intent` (a leg leaving, or a crash: the regions with writes in flight).
    pub(crate) fn needs_sync_or_intent(&mut self, k: u8) {
        let r = self.leg_words(k);
        if let Some(n) = self.needs.get_mut(r) {
            for (d, s) in n.iter_mut().zip(self.intent.iter()) {
                *d |= *s;
            }
        }
        self.recount(k);
        self.dirty_tracking(k);
    }

    pub(crate) fn fill_needs(&mut self, k: u8, value: bool) {
        self.needs_sync(k).fill(value);
        self.recount(k);
        self.dirty_tracking(k);
    }

    pub(crate) fn recount(&mut self, k: u8) {
        let c = Bits::new(
            self.needs.get_mut(self.leg_words(k)).unwrap_or(&mut []),
            self.regions,
        )
        .count();
        if let Some(o) = self.oos.get_mut(usize::from(k)) {
            *o = c;
        }
    }

    pub(crate) fn init_counts(&mut self, legs: u8) {
        for k in 0..legs {
            self.recount(k);
        }
    }

    /// Regions out of sync summed over every leg (0: every leg holds everything, fast paths).
    pub(crate) fn total_out_of_sync(&self) -> u64 {
        self.oos.iter().take(usize::from(self.legs)).sum()
    }

    pub(crate) fn out_of_sync(&self, k: u8) -> u64 {
        self.oos.get(usize::from(k)).copied().unwrap_or(0)
    }

    pub(crate) fn in_sync_leg(&self, k: u8, r: u64) -> bool {
        let w = self.needs_ref(k);
        match w.get((r / 64) as usize) {
            Some(x) => (x >> (r % 64)) & 1 == 0,
            None => true,
        }
    }

    pub(crate) fn set_needs(&mut self, k: u8, r: u64) -> bool {
        let changed = self.needs_sync(k).set(r);
        if changed {
            if let Some(o) = self.oos.get_mut(usize::from(k)) {
                *o += 1;
            }
            self.set_pending |= self.persistent;
            self.dirty_area(self.track_sector(k, r));
        }
        changed
    }

    pub(crate) fn clear_needs(&mut self, k: u8, r: u64) -> bool {
        let changed = self.needs_sync(k).clear(r);
        if changed {
            if let Some(o) = self.oos.get_mut(usize::from(k)) {
                *o = o.saturating_sub(1);
            }
            self.dirty_area(self.track_sector(k, r));
        }
        changed
    }

    // ---- the persistent log's area sectors ----

    fn bits_per_sector(&self) -> u64 {
        self.sector_size * 8
    }

    fn intent_sector(&self, r: u64) -> u64 {
        div(r, self.bits_per_sector())
    }

    fn track_sector(&self, k: u8, r: u64) -> u64 {
        self.bm_sectors * (1 + u64::from(k)) + div(r, self.bits_per_sector())
    }

    fn dirty_area(&mut self, a: u64) {
        if !self.persistent {
            return;
        }
        if let Some(w) = self.dirty.get_mut((a / 64) as usize) {
            *w |= 1 << (a % 64);
        }
    }

    fn is_dirty(&self, a: u64) -> bool {
        self.dirty
            .get((a / 64) as usize)
            .is_some_and(|w| (w >> (a % 64)) & 1 == 1)
    }

    fn dirty_tracking(&mut self, k: u8) {
        if !self.persistent {
            return;
        }
        let start = self.bm_sectors * (1 + u64::from(k));
        for a in start..start + self.bm_sectors {
            self.dirty_area(a);
        }
        self.set_pending = true;
    }

    /// Every area sector must be written (first round, a leg joining).
    pub(crate) fn mark_all_dirty(&mut self, legs: u8) {
        if !self.persistent {
            return;
        }
        for a in 0..self.bm_sectors * (1 + u64::from(legs)) {
            self.dirty_area(a);
        }
        self.set_pending = true;
    }

    /// The round after which a bit in area sector `a` (already set in memory) is durable.
    fn sector_need(&self, a: u64) -> u64 {
        if self.is_dirty(a) {
            self.round + 1
        } else {
            self.stage.get(a as usize).copied().unwrap_or(0)
        }
    }

    /// The journal step of a write to `regs` while the legs in `absent` are away.
    pub(crate) fn mark(&mut self, regs: Regions, absent: u32, legs: u8) -> u64 {
        let mut need = 0;
        for r in regs.iter() {
            for k in 0..legs {
                if absent & crate::mirror::bit(k) != 0 {
                    self.set_needs(k, r);
                    if self.persistent {
                        need = need.max(self.sector_need(self.track_sector(k, r)));
                    }
                }
            }
            if !self.persistent {
                continue;
            }
            Bits::new(self.recent, self.regions).set(r);
            Bits::new(self.cand, self.regions).clear(r);
            #[cfg(any(test, feature = "mutants"))]
            let skip = self.mutant == crate::Mutant::SkipJournal;
            #[cfg(not(any(test, feature = "mutants")))]
            let skip = false;
            if Bits::new(self.intent, self.regions).set(r) && !skip {
                self.dirty_area(self.intent_sector(r));
                self.set_pending = true;
            }
            if !skip {
                need = need.max(self.sector_need(self.intent_sector(r)));
            }
        }
        need
    }

    /// A leg-state change happened: the next round carries the superblock.
    pub(crate) fn request_super(&mut self) {
        if self.persistent {
            self.sb_dirty = true;
            self.state_need = self.round + 1;
        }
    }

    pub(crate) fn state_need(&self) -> u64 {
        self.state_need
    }

    pub(crate) fn durable_on(&self, k: u8, need: u64) -> bool {
        need == 0 || self.durable.get(usize::from(k)).is_some_and(|d| *d >= need)
    }

    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }

    pub(crate) fn round_in_flight(&self) -> bool {
        self.in_flight
    }

    pub(crate) fn anything_dirty(&self) -> bool {
        self.dirty.iter().any(|w| *w != 0)
    }

    /// Copy dirty area sectors into `img` for round `round`; returns for each chunk of the area
    /// the `[first, last]` sectors to write (written into `out`, count returned).
    pub(crate) fn stage(&mut self, round: u64) -> usize {
        let area = self.bm_sectors * (1 + u64::from(self.legs));
        let ss = self.sector_size as usize;
        let wps = ss / 8;
        let mut n = 0;
        let mut a = 0;
        while a < area {
            let chunk_end = (a + self.chunk).min(area);
            let mut first = None;
            let mut last = 0;
            for s in a..chunk_end {
                if !self.is_dirty(s) {
                    continue;
                }
                // Source words: the intent bitmap or leg k's tracking bitmap.
                let which = div(s, self.bm_sectors);
                let within = rem(s, self.bm_sectors) as usize;
                let src: &[u64] = if which == 0 {
                    self.intent
                } else {
                    let k = (which - 1) as usize;
                    self.needs
                        .get(k * self.words..(k + 1) * self.words)
                        .unwrap_or(&[])
                };
                let words = src.get(within * wps..(within + 1) * wps).unwrap_or(&[]);
                if let Some(dst) = self.img.get_mut(s as usize * ss..(s as usize + 1) * ss) {
                    for (i, w) in words.iter().enumerate() {
                        if let Some(d) = dst.get_mut(i * 8..i * 8 + 8) {
                            for (x, y) in d.iter_mut().zip(w.to_le_bytes()) {
                                *x = y;
                            }
                        }
                    }
                }
                if let Some(st) = self.stage.get_mut(s as usize) {
                    *st = round;
                }
                if let Some(w) = self.dirty.get_mut((s / 64) as usize) {
                    *w &= !(1 << (s % 64));
                }
                first.get_or_insert(s);
                last = s;
            }
            if let Some(f) = first {
                if let Some(slot) = self.items.get_mut(n) {
                    *slot = (f, last);
                    n += 1;
                }
            }
            a = chunk_end;
        }
        self.nitems = n;
        // Every dirty area sector was staged: the clears made so far reach the disk with this
        // round.
        if self.clears_unstaged != 0 {
            if self.completed >= self.clears_round {
                self.clears_staged = 0;
            }
            self.clears_staged += core::mem::take(&mut self.clears_unstaged);
            self.clears_round = round;
        }
        n
    }

    pub(crate) fn img_bytes(&self, first: u64, last: u64) -> &[u8] {
        let ss = self.sector_size as usize;
        self.img
            .get(first as usize * ss..(last as usize + 1) * ss)
            .unwrap_or(&[])
    }

    // ---- lazy clearing ----

    /// A sweep: regions marked, idle for a whole period, with no leg needing them resynced and
    /// no write in flight (`busy` clears those first) become candidates. Returns whether any did.
    pub(crate) fn sweep(&mut self, active: u32) -> bool {
        let mut any = false;
        for i in 0..self.words {
            let mut c = match (self.intent.get(i), self.recent.get(i)) {
                (Some(m), Some(r)) => m & !r,
                _ => 0,
            };
            for k in 0..self.legs {
                if active & crate::mirror::bit(k) != 0 {
                    c &= !self
                        .needs
                        .get(usize::from(k) * self.words + i)
                        .copied()
                        .unwrap_or(0);
                }
            }
            if let Some(w) = self.cand.get_mut(i) {
                *w |= c;
                any |= *w != 0;
            }
            if let Some(r) = self.recent.get_mut(i) {
                *r = 0;
            }
        }
        any
    }

    /// A write in flight over `regs`: not a candidate.
    pub(crate) fn uncandidate(&mut self, regs: Regions) {
        for r in regs.iter() {
            Bits::new(self.cand, self.regions).clear(r);
        }
    }

    /// The gate round's flush is done: clear every remaining candidate's intent bit.
    pub(crate) fn apply_clears(&mut self) {
        for i in 0..self.words {
            let c = core::mem::take(self.cand.get_mut(i).unwrap_or(&mut 0));
            if c == 0 {
                continue;
            }
            let mut bits = c;
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let r = i as u64 * 64 + b;
                if Bits::new(self.intent, self.regions).clear(r) {
                    self.dirty_area(self.intent_sector(r));
                    if self.persistent {
                        self.clears_unstaged += 1;
                    }
                }
            }
        }
    }

    /// Clear every intent bit no active leg needs (clean shutdown, after a flush).
    pub(crate) fn clear_all_intent(&mut self, active: u32) {
        for i in 0..self.words {
            let mut keep = 0;
            for k in 0..self.legs {
                if active & crate::mirror::bit(k) != 0 {
                    keep |= self
                        .needs
                        .get(usize::from(k) * self.words + i)
                        .copied()
                        .unwrap_or(0);
                }
            }
            if let Some(w) = self.cand.get_mut(i) {
                *w = self.intent.get(i).copied().unwrap_or(0) & !keep;
            }
        }
        self.apply_clears();
    }

    /// Regions a crash now could leave marked on disk: the intent bits set in memory, and those
    /// cleared in memory whose cleared bitmap is not durable yet.
    pub(crate) fn dirty_regions(&self) -> u64 {
        let set: u64 = self.intent.iter().map(|w| u64::from(w.count_ones())).sum();
        let staged = if self.completed >= self.clears_round {
            0
        } else {
            self.clears_staged
        };
        set + self.clears_unstaged + staged
    }
}

impl RegionLog for Log<'_> {
    fn mark(&mut self, first: u64, last: u64, absent: u32) -> u64 {
        let legs = self.legs;
        Log::mark(self, Regions { first, last }, absent, legs)
    }

    fn clear(&mut self, region: u64) {
        if self.persistent && Bits::new(self.intent, self.regions).get(region) {
            Bits::new(self.cand, self.regions).set(region);
        }
    }

    fn flush_needed(&self) -> bool {
        self.persistent && (self.anything_dirty() || self.sb_dirty)
    }

    fn in_sync(&self, leg: u8, region: u64) -> bool {
        self.in_sync_leg(leg, region)
    }

    fn is_clean(&self, region: u64) -> bool {
        self.intent
            .get((region / 64) as usize)
            .is_none_or(|w| (w >> (region % 64)) & 1 == 0)
    }

    fn next_resync(&self, leg: u8, from: u64) -> Option<u64> {
        let w = self.needs_ref(leg);
        let mut i = from;
        while i < self.regions {
            let word = *w.get((i / 64) as usize)? >> (i % 64);
            if word != 0 {
                let r = i + u64::from(word.trailing_zeros());
                return (r < self.regions).then_some(r);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    fn set_region_sync(&mut self, leg: u8, region: u64, in_sync: bool) {
        if in_sync {
            self.clear_needs(leg, region);
        } else {
            self.set_needs(leg, region);
        }
    }

    fn sync_count(&self, leg: u8) -> u64 {
        self.regions - self.out_of_sync(leg).min(self.regions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn cfg(log: LogKind) -> Config {
        let mut c = Config::new(2, 4096);
        c.region_sectors = 64;
        c.log = log;
        c
    }

    #[test]
    fn core_log_never_waits_and_tracks_absent_legs() {
        let c = cfg(LogKind::Core);
        let mut mem = vec![0u8; 1 << 16];
        let mut a = Arena::new(&mut mem);
        let mut log = Log::carve(&c, &mut a).unwrap();
        assert_eq!(log.mark(Regions::of(0, 130, 64), 0b10, 2), 0);
        assert!(!log.in_sync_leg(1, 0) && !log.in_sync_leg(1, 2) && log.in_sync_leg(1, 3));
        assert!(log.in_sync_leg(0, 0));
        assert_eq!(log.out_of_sync(1), 3);
        assert_eq!(RegionLog::next_resync(&log, 1, 1), Some(1));
        RegionLog::set_region_sync(&mut log, 1, 1, true);
        assert_eq!(RegionLog::sync_count(&log, 1), 64 - 2);
    }

    #[test]
    fn persistent_mark_waits_for_the_next_round_and_groups() {
        let c = cfg(LogKind::OnLegs);
        let mut mem = vec![0u8; 1 << 16];
        let mut a = Arena::new(&mut mem);
        let mut log = Log::carve(&c, &mut a).unwrap();
        // First write to a clean region needs round 1; a second write marking the same sector
        // before the round starts joins it (group commit).
        assert_eq!(log.mark(Regions::of(0, 8, 64), 0, 2), 1);
        assert_eq!(log.mark(Regions::of(640, 8, 64), 0, 2), 1);
        log.round = 1;
        assert_eq!(log.stage(1), 1);
        // Staged, round 1 in flight: a write to the same region waits for round 1 only; a
        // write to a new region (sector dirty again) waits for round 2.
        assert_eq!(log.mark(Regions::of(0, 8, 64), 0, 2), 1);
        assert_eq!(log.mark(Regions::of(64, 8, 64), 0, 2), 2);
        assert!(!log.durable_on(0, 1));
        log.durable[0] = 1;
        assert!(log.durable_on(0, 1) && !log.durable_on(1, 1));
        // The image holds the bits in disk order.
        assert_eq!(log.img_bytes(0, 0)[0] & 0b11, 0b01);
        assert_eq!(log.img_bytes(0, 0)[1] & 0b100, 0b100);
    }

    #[test]
    fn clearing_needs_idle_period_and_respects_new_writes() {
        let c = cfg(LogKind::OnLegs);
        let mut mem = vec![0u8; 1 << 16];
        let mut a = Arena::new(&mut mem);
        let mut log = Log::carve(&c, &mut a).unwrap();
        log.mark(Regions::of(0, 8, 64), 0, 2);
        log.mark(Regions::of(64, 8, 64), 0, 2);
        // Both recently written: the first sweep only ages them.
        assert!(!log.sweep(0b11));
        assert!(log.sweep(0b11));
        // A write to region 1 cancels its candidacy.
        log.uncandidate(Regions::of(64, 1, 64));
        log.apply_clears();
        assert!(RegionLog::is_clean(&log, 0));
        assert!(!RegionLog::is_clean(&log, 1));
    }
}
