//! Metadata rounds of the disk log (`LogKind::Device`, dm-mirror's `disk` log): the legs carry
//! only data, and the superblock (leg table and states) and every bitmap live on one separate log
//! device, which the core addresses as leg [`LOG_DEV`] (layout: docs/FORMAT.md, section 9).
//!
//! A round is staged exactly as with on-leg metadata (`log.rs`: dirty bitmap sectors, the
//! superblock after a state change), but written once, to the log device, then flushed there.
//! When that flush completes the round is durable **for every leg at once** (`durable[k]` of
//! every leg advances), so a write group's Journal step waits for one log-device round, whatever
//! the number of legs.
//!
//! Clearing differs from on-leg metadata: there, the round's flush of a leg also makes that leg's
//! data durable, which is what lets idle regions' bits be cleared after the gate round. The log
//! device's flush says nothing about the legs' caches, so a **gate round** (the one clearing
//! waits for, including the shutdown's) also flushes every active leg, and completes only when
//! those flushes did too.
//!
//! # Log device failure
//!
//! The mirror never acknowledges a write whose durability depends on state it could not persist:
//! - the first failed write or flush on the log device marks the log failed (`Event::LogFailed`,
//!   dm status `D`); nothing more is written to it;
//! - rounds then complete at once without I/O. Writes go on as long as every leg takes them: the
//!   legs stay identical, and after a log failure the administrator reloads with a new log (full
//!   resync), so the marks the dead log misses are not needed;
//! - a round that had to record a leg-state change (a leg failed, went missing, was added,
//!   became in sync) and could not is *lost*. Every write, discard or flush that depends on a
//!   lost change (`need_super` at or past the first lost round) fails with `IoError::Io` instead
//!   of being acknowledged on fewer legs than the persisted leg table claims. Since every later
//!   write depends on the newest state, from then on writes fail and reads go on.
use crate::host::Host;
use crate::mirror::{Lio, Mirror, Role, NIL};
use crate::types::*;

/// The disk log device's state, kept in the region log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DevLog {
    /// This mirror has a disk log.
    pub(crate) on: bool,
    /// A write or flush to the log device failed: nothing more is written to it.
    pub(crate) failed: bool,
    /// The first round that had to record a leg-state change and could not (0: none).
    pub(crate) lost: u64,
    /// The round in flight records a leg-state change.
    round_state: bool,
    /// Log-device writes of the round in flight not yet completed.
    pending: u32,
    /// Leg data flushes of the round in flight not yet completed (gate rounds).
    legs_left: u32,
    /// The round's log-device flush completed (or none was needed).
    flushed: bool,
}

impl DevLog {
    pub(crate) const fn new(on: bool) -> DevLog {
        DevLog {
            on,
            failed: false,
            lost: 0,
            round_state: false,
            pending: 0,
            legs_left: 0,
            flushed: false,
        }
    }

    /// Does a group that depends on the leg states of round `need_super` depend on a change the
    /// log device could not record?
    pub(crate) fn lost(&self, need_super: u64) -> bool {
        self.lost != 0 && need_super >= self.lost
    }

    fn lose(&mut self, round: u64) {
        if self.round_state && (self.lost == 0 || round < self.lost) {
            self.lost = round;
        }
    }
}

impl<'a> Mirror<'a> {
    /// The disk log device failed (see the module documentation).
    pub fn log_failed(&self) -> bool {
        self.log.dev.failed
    }

    /// Encode the superblock written to the log device into the round's buffer: the mirror's
    /// state, marked as a log device's (`leg_index == LOG_DEVICE_INDEX`), bitmaps at the log
    /// device's layout. Inlined into the pump, where on-leg rounds build their superblocks too
    /// (the two share a stack slot: kernel-stack-report.sh shows the I/O path unchanged).
    #[inline(always)]
    fn dev_encode_superblock(&mut self) -> bool {
        let Ok(l) = crate::format::log_layout(
            self.cfg.sector_size,
            self.cfg.region_sectors,
            self.cfg.data_sectors,
        ) else {
            return false;
        };
        let mut sb = self.superblock_for(0);
        sb.leg_index = crate::format::LOG_DEVICE_INDEX;
        sb.bitmap_start = l.bitmap_start;
        sb.bitmap_sectors = l.bitmap_sectors;
        sb.tracking_start = l.tracking_start;
        let sbb = self.log.sb_bytes;
        match self.log.sb.get_mut(..sbb) {
            Some(buf) => {
                buf.fill(0);
                sb.encode(buf).is_ok()
            }
            None => false,
        }
    }

    /// Start a round on the log device (the caller checked one is due and none is in flight).
    pub(crate) fn dev_pump<H: Host>(&mut self, host: &mut H, gate_round: bool) -> bool {
        let round = self.log.round + 1;
        self.log.round = round;
        self.log.in_flight = true;
        let nitems = self.log.stage(round);
        let with_sb = self.log.sb_dirty;
        self.log.sb_dirty = false;
        self.log.dev.round_state = with_sb && self.log.state_need() >= round;
        self.log.round_flush = self.log.set_pending || with_sb || gate_round;
        self.log.set_pending = false;
        if self.log.dev.failed {
            // Nothing can be written: the round completes at once, and a state change in it is
            // lost.
            self.log.dev.lose(round);
            self.dev_round_done();
            return true;
        }
        let mut sb_ok = false;
        if with_sb {
            self.log.seq += 1;
            sb_ok = self.dev_encode_superblock();
            if !sb_ok {
                // Never expected (the state always encodes); nothing is written rather than a
                // blank slot, and it is counted.
                self.counters.meta_errors += 1;
            }
        }
        let Ok(l) = crate::format::log_layout(
            self.cfg.sector_size,
            self.cfg.region_sectors,
            self.cfg.data_sectors,
        ) else {
            self.dev_round_done();
            return true;
        };
        let mut issued = 0u32;
        for i in 0..nitems {
            let Some(&(first, last)) = self.log.items.get(i) else {
                continue;
            };
            if self.dev_write(host, round, l.bitmap_start + first, Some((first, last))) {
                issued += 1;
            }
        }
        if with_sb && sb_ok {
            let slot = l
                .slots
                .get((self.log.seq & 1) as usize)
                .copied()
                .unwrap_or(0);
            if self.dev_write(host, round, slot, None) {
                issued += 1;
            }
        }
        self.log.dev.pending = issued;
        self.log.dev.flushed = false;
        self.log.dev.legs_left = 0;
        if gate_round {
            // The data of the regions about to be cleared must be durable on the legs.
            for k in 0..self.cfg.legs {
                if self.leg_state(k).is_active() && self.issue_meta_flush(host, k) {
                    self.log.dev.legs_left += 1;
                }
            }
        }
        #[cfg(any(test, feature = "mutants"))]
        if self.mutant == crate::Mutant::LogNoFlush && issued != 0 && !with_sb {
            // Planted bug: a bitmap round counts as durable while its writes are still in
            // flight, and is never flushed (marks can sit in the log device's cache while the
            // data goes to the legs).
            self.log.round_flush = false;
            self.dev_round_done();
            self.log.in_flight = true;
            return true;
        }
        if issued == 0 {
            self.dev_writes_done(host);
        }
        true
    }

    /// Write area sectors `first..=last` (or, with `None`, the superblock) at `sector` of the log
    /// device.
    fn dev_write<H: Host>(
        &mut self,
        host: &mut H,
        round: u64,
        sector: u64,
        range: Option<(u64, u64)>,
    ) -> bool {
        let Some(li) = self.alloc_lio(NIL, Role::MetaWrite, LOG_DEV) else {
            return false;
        };
        if let Some(l) = self.lios.get_mut(li as usize) {
            l.round = round;
        }
        self.log.meta_inflight += 1;
        self.counters.meta_writes += 1;
        let token = self.token(li);
        let ss = u64::from(self.cfg.sector_size);
        let bytes = match range {
            Some((first, last)) => self.log.img_bytes(first, last),
            None => self.log.sb.get(..self.log.sb_bytes).unwrap_or(&[]),
        };
        host.issue(&LegIo {
            token,
            leg: LOG_DEV,
            op: LegOp::Write,
            sector,
            count: crate::arith::div(bytes.len() as u64, ss) as u32,
            fua: false,
            buf: BufRef::Meta(bytes),
        });
        true
    }

    /// The round is done when its log writes and flush, and its leg flushes, all completed.
    fn dev_maybe_done(&mut self) {
        let d = &self.log.dev;
        if d.pending == 0 && d.flushed && d.legs_left == 0 {
            self.dev_round_done();
        }
    }

    fn dev_writes_done<H: Host>(&mut self, host: &mut H) {
        if self.log.round_flush && self.issue_meta_flush(host, LOG_DEV) {
            return;
        }
        self.log.dev.flushed = true;
        self.dev_maybe_done();
    }

    /// The round is durable on the log device (or the log failed): durable for every leg.
    fn dev_round_done(&mut self) {
        let round = self.log.round;
        for d in self.log.durable.iter_mut().take(usize::from(self.cfg.legs)) {
            *d = round;
        }
        self.log.dev.round_state = false;
        self.rescan = true;
        self.finish_round();
    }

    pub(crate) fn dev_meta_done<H: Host>(
        &mut self,
        host: &mut H,
        li: u32,
        l: Lio,
        result: IoResult,
    ) {
        self.free_lio_slot(li);
        self.log.meta_inflight = self.log.meta_inflight.saturating_sub(1);
        if self.log.meta_inflight == 0 && !self.log.in_flight {
            self.rescan = true;
        }
        if l.leg != LOG_DEV {
            // A gate round's data flush of a leg.
            if let Err(e) = result {
                if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                    leg.errors += 1;
                }
                self.leg_failed(host, l.leg, e);
            }
            if self.log.in_flight && l.round == self.log.round {
                self.log.dev.legs_left = self.log.dev.legs_left.saturating_sub(1);
                self.dev_maybe_done();
            }
            return;
        }
        if let Err(error) = result {
            if !self.log.dev.failed {
                self.log.dev.failed = true;
                host.event(Event::LogFailed { error });
            }
            if self.log.in_flight && l.round == self.log.round {
                let round = self.log.round;
                self.log.dev.lose(round);
                self.dev_round_done();
            }
            return;
        }
        if !self.log.in_flight || l.round != self.log.round {
            return;
        }
        match l.role {
            Role::MetaWrite => {
                self.log.dev.pending = self.log.dev.pending.saturating_sub(1);
                if self.log.dev.pending == 0 {
                    self.dev_writes_done(host);
                }
            }
            _ => {
                self.log.dev.flushed = true;
                self.dev_maybe_done();
            }
        }
    }
}
