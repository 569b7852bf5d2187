//! Metadata rounds of the persistent log: stage dirty bitmap sectors (and the superblock after a
//! leg-state change), write them to every active leg, flush each leg, and then let the write
//! groups waiting on that round go on. One round at a time; what changes meanwhile waits for the
//! next one (group commit). See `log.rs` for what a round number promises.
use crate::format::{DiskLeg, DiskLegState, Superblock};
use crate::host::Host;
use crate::mirror::{bit, Lio, Mirror, Role, NIL};
use crate::types::*;

impl<'a> Mirror<'a> {
    /// The superblock leg `k` gets in the next round.
    pub(crate) fn superblock_for(&self, k: u8) -> Superblock {
        let mut legs = [DiskLeg::EMPTY; MAX_LEGS];
        for (i, d) in legs.iter_mut().enumerate().take(usize::from(self.cfg.legs)) {
            let Some(l) = self.legs.get(i) else { continue };
            let rebuilding = l.state == LegState::Rebuilding;
            *d = match l.state {
                LegState::Empty => DiskLeg {
                    uuid: l.uuid,
                    since: l.since.min(self.generation),
                    ..DiskLeg::EMPTY
                },
                _ => DiskLeg {
                    uuid: l.uuid,
                    state: DiskLegState::from(l.state),
                    full: rebuilding && l.resync.full,
                    checkpoint: if rebuilding { l.resync.checkpoint } else { 0 },
                    sectors: l.sectors,
                    since: l.since.min(self.generation),
                },
            };
        }
        let meta = self
            .legs
            .get(usize::from(k))
            .map(|l| l.meta)
            .unwrap_or(crate::log::MetaLayout::NONE);
        let (read_policy, read_policy_arg) =
            crate::format::encode_read_policy(self.cfg.read_policy);
        Superblock {
            seq: self.log.seq,
            generation: self.generation,
            mirror_uuid: self.mirror_uuid,
            leg_index: k,
            nlegs: self.cfg.legs,
            authoritative: self.authoritative,
            clean: self.log.clean,
            sector_size: self.cfg.sector_size,
            region_sectors: self.cfg.region_sectors,
            data_sectors: self.cfg.data_sectors,
            bitmap_start: meta.bitmap_start,
            bitmap_sectors: self.log.bm_sectors,
            tracking_start: meta.bitmap_start + self.log.bm_sectors,
            read_policy,
            read_policy_arg,
            name: self.name,
            legs,
        }
    }

    /// Start a round if one is due and none is in flight. True if one started.
    pub(crate) fn meta_pump<H: Host>(&mut self, host: &mut H) -> bool {
        if !self.log.persistent() || self.log.in_flight || self.log.meta_inflight != 0 {
            return false;
        }
        if let Some(g) = self.log.gate {
            #[cfg(any(test, feature = "mutants"))]
            let early = self.mutant == crate::Mutant::ClearBeforeFlush;
            #[cfg(not(any(test, feature = "mutants")))]
            let early = false;
            if self.log.completed >= g || early {
                self.log.apply_clears();
                self.log.gate = None;
            }
        }
        let gate_round = self.log.gate == Some(self.log.round + 1);
        if !(self.log.anything_dirty() || self.log.sb_dirty || gate_round) {
            return false;
        }
        if self.log.dev.on {
            return self.dev_pump(host, gate_round);
        }
        let round = self.log.round + 1;
        self.log.round = round;
        self.log.in_flight = true;
        let nitems = self.log.stage(round);
        let with_sb = self.log.sb_dirty;
        let active = self.active_mask();
        let mut sb_bad = 0u32;
        if with_sb {
            self.log.sb_dirty = false;
            self.log.seq += 1;
            let sbb = self.log.sb_bytes;
            for k in 0..self.cfg.legs {
                if active & bit(k) == 0 {
                    continue;
                }
                let sb = self.superblock_for(k);
                let range = usize::from(k) * sbb..(usize::from(k) + 1) * sbb;
                let ok = match self.log.sb.get_mut(range) {
                    Some(buf) => {
                        buf.fill(0);
                        sb.encode(buf).is_ok()
                    }
                    None => false,
                };
                // A superblock built from the mirror's own state always encodes; if one ever did
                // not, nothing is written for that leg (never a blank slot) and it is counted.
                if !ok {
                    self.counters.meta_errors += 1;
                    sb_bad |= bit(k);
                }
            }
        }
        self.log.round_flush = self.log.set_pending || with_sb || gate_round;
        self.log.set_pending = false;
        self.log.part = active;
        for k in 0..self.cfg.legs {
            if active & bit(k) == 0 {
                continue;
            }
            let mut issued = 0u32;
            for i in 0..nitems {
                let Some(&(first, last)) = self.log.items.get(i) else {
                    continue;
                };
                if self.issue_meta_write(host, k, round, Some((first, last))) {
                    issued += 1;
                }
            }
            if with_sb && sb_bad & bit(k) == 0 && self.issue_meta_write(host, k, round, None) {
                issued += 1;
            }
            if let Some(p) = self.log.pending.get_mut(usize::from(k)) {
                *p = issued;
            }
            if issued == 0 {
                self.meta_writes_done(host, k);
            }
        }
        if self.log.part == 0 {
            self.finish_round();
        }
        true
    }

    /// Write area sectors `first..=last` (or, with `None`, this leg's superblock) to leg `k`.
    fn issue_meta_write<H: Host>(
        &mut self,
        host: &mut H,
        k: u8,
        round: u64,
        range: Option<(u64, u64)>,
    ) -> bool {
        let Some(meta) = self.legs.get(usize::from(k)).map(|l| l.meta) else {
            return false;
        };
        let Some(li) = self.alloc_lio(NIL, Role::MetaWrite, k) else {
            return false;
        };
        if let Some(l) = self.lios.get_mut(li as usize) {
            l.round = round;
        }
        self.log.meta_inflight += 1;
        let token = self.token(li);
        let ss = u64::from(self.cfg.sector_size);
        self.counters.meta_writes += 1;
        match range {
            Some((first, last)) => {
                let bytes = self.log.img_bytes(first, last);
                host.issue(&LegIo {
                    token,
                    leg: k,
                    op: LegOp::Write,
                    sector: meta.bitmap_start + first,
                    count: (last - first + 1) as u32,
                    fua: false,
                    buf: BufRef::Meta(bytes),
                });
            }
            None => {
                let sbb = self.log.sb_bytes;
                let slot = meta
                    .slots
                    .get((self.log.seq & 1) as usize)
                    .copied()
                    .unwrap_or(0);
                let bytes = self
                    .log
                    .sb
                    .get(usize::from(k) * sbb..(usize::from(k) + 1) * sbb)
                    .unwrap_or(&[]);
                host.issue(&LegIo {
                    token,
                    leg: k,
                    op: LegOp::Write,
                    sector: slot,
                    count: crate::arith::div(sbb as u64, ss) as u32,
                    fua: false,
                    buf: BufRef::Meta(bytes),
                });
            }
        }
        true
    }

    fn meta_writes_done<H: Host>(&mut self, host: &mut H, k: u8) {
        if self.log.round_flush && self.issue_meta_flush(host, k) {
            return;
        }
        self.leg_round_done(k);
    }

    /// The round's flush of leg `k` (or of the log device, `LOG_DEV`). False if no leg-I/O slot
    /// was free: the round then goes on without it, as before flushes were counted per round.
    pub(crate) fn issue_meta_flush<H: Host>(&mut self, host: &mut H, k: u8) -> bool {
        let Some(li) = self.alloc_lio(NIL, Role::MetaFlush, k) else {
            return false;
        };
        if let Some(l) = self.lios.get_mut(li as usize) {
            l.round = self.log.round;
        }
        self.log.meta_inflight += 1;
        self.counters.meta_flushes += 1;
        let token = self.token(li);
        host.issue(&LegIo {
            token,
            leg: k,
            op: LegOp::Flush,
            sector: 0,
            count: 0,
            fua: false,
            buf: BufRef::None,
        });
        true
    }

    fn leg_round_done(&mut self, k: u8) {
        if let Some(d) = self.log.durable.get_mut(usize::from(k)) {
            *d = self.log.round;
        }
        // Transactions waiting on this leg alone may go on now.
        self.rescan = true;
        self.log.part &= !bit(k);
        if self.log.part == 0 {
            self.finish_round();
        }
    }

    pub(crate) fn finish_round(&mut self) {
        if self.log.in_flight {
            self.log.completed = self.log.round;
            self.log.in_flight = false;
            self.rescan = true;
        }
    }

    pub(crate) fn meta_done<H: Host>(&mut self, host: &mut H, li: u32, l: Lio, result: IoResult) {
        if self.log.dev.on {
            return self.dev_meta_done(host, li, l, result);
        }
        self.free_lio_slot(li);
        self.log.meta_inflight = self.log.meta_inflight.saturating_sub(1);
        if self.log.meta_inflight == 0 && !self.log.in_flight {
            // A round held back by a departed leg's writes may start now.
            self.rescan = true;
        }
        if !self.log.in_flight || l.round != self.log.round || self.log.part & bit(l.leg) == 0 {
            return;
        }
        if let Err(e) = result {
            if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                leg.errors += 1;
            }
            self.leg_failed(host, l.leg, e);
            if !self.leg_state(l.leg).is_active() {
                return;
            }
            // The last in-sync leg stays in service: the round goes on without this write (the
            // other legs' write-intent bitmaps, which assembly ORs, still record the marks).
        }
        match l.role {
            Role::MetaWrite => {
                let left = match self.log.pending.get_mut(usize::from(l.leg)) {
                    Some(p) => {
                        *p = p.saturating_sub(1);
                        *p
                    }
                    None => 0,
                };
                if left == 0 {
                    self.meta_writes_done(host, l.leg);
                }
            }
            _ => self.leg_round_done(l.leg),
        }
    }
}
