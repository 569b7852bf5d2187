//! The resync engine: brings a leg that is new, behind, or recovering from an unclean shutdown in
//! sync, region by region, from a leg that is in sync for that region.
//!
//! - Only regions the leg may differ in are copied (`needs[k]` in the region log: all of them for
//!   a new or failed leg, the tracked ones for a leg that was missing, the dirty ones after a
//!   crash).
//! - A copy is an entry in the admission list like a write, so a user write to the same range
//!   waits for it and it waits for earlier user writes: a copy never races a write into
//!   divergence. Reads never go to a leg for a region it is not in sync for.
//! - At most `resync.max_inflight` copies at once (one host resync buffer each), at most
//!   `resync.sectors_per_tick` sectors per tick.
//! - Copies write with FUA, so a region is durable on the target before its out-of-sync bit is
//!   cleared (and before the tracking bitmap or checkpoint that records it can be persisted).
//! - The checkpoint (next region of the pass) is persisted every `checkpoint_regions` regions; an
//!   interrupted rebuild resumes from it (with its tracking bitmap, nothing already copied is lost).
use crate::host::Host;
use crate::mirror::{bit, Kind, Lio, Mirror, Parent, Role};
use crate::types::*;

pub(crate) const NONE_REGION: u64 = u64::MAX;
/// Ticks to wait before retrying regions no source could be read for.
const RETRY_TICKS: u64 = 50;

#[derive(Clone, Copy, Debug)]
pub(crate) struct ResyncLeg {
    /// Next region to look at in this pass.
    pub(crate) cursor: u64,
    /// Region being copied, or NONE_REGION.
    pub(crate) cur: u64,
    /// Sector offset in `cur` of the next chunk to copy.
    pub(crate) next_off: u64,
    /// Chunks of `cur` in flight.
    pub(crate) out: u32,
    /// A chunk of `cur` could not be copied.
    pub(crate) failed: bool,
    pub(crate) done: u64,
    pub(crate) total: u64,
    /// Persisted progress: regions below it were copied in this rebuild.
    pub(crate) checkpoint: u64,
    pub(crate) full: bool,
    pub(crate) since_checkpoint: u32,
    pub(crate) stalled: u64,
    pub(crate) retry_at: u64,
}

impl ResyncLeg {
    pub(crate) const IDLE: ResyncLeg = ResyncLeg {
        cursor: 0,
        cur: NONE_REGION,
        next_off: 0,
        out: 0,
        failed: false,
        done: 0,
        total: 0,
        checkpoint: 0,
        full: false,
        since_checkpoint: 0,
        retry_at: 0,
        stalled: 0,
    };
}

impl<'a> Mirror<'a> {
    /// Begin (or restart) a pass over the regions leg `k` needs.
    pub(crate) fn start_resync_pass(&mut self, k: u8) {
        let total = self
            .log
            .out_of_sync(k)
            .saturating_mul(self.cfg.region_sectors)
            .min(self.cfg.data_sectors);
        let Some(l) = self.legs.get_mut(usize::from(k)) else {
            return;
        };
        let out = l.resync.out;
        l.resync = ResyncLeg {
            checkpoint: l.resync.checkpoint,
            full: l.resync.full,
            out,
            total,
            ..ResyncLeg::IDLE
        };
    }

    /// A leg in sync for region `r` to copy it from (the authoritative leg first).
    fn copy_source(&self, k: u8, r: u64, tried: u32) -> Option<u8> {
        let ok = |j: u8| {
            j != k
                && tried & bit(j) == 0
                && self.leg_state(j).is_active()
                && self.log.in_sync_leg(j, r)
        };
        if ok(self.authoritative) {
            return Some(self.authoritative);
        }
        (0..self.cfg.legs).find(|&j| ok(j))
    }

    /// Start copies while there are free resync entries, budget, and work. True if any started.
    pub(crate) fn resync_pump<H: Host>(&mut self, host: &mut H) -> bool {
        if self.shutdown != crate::mirror::Shutdown::No {
            return false;
        }
        if self.log.total_out_of_sync() == 0 {
            return false;
        }
        let mut progress = false;
        let chunk = u64::from(self.cfg.resync.chunk_sectors).min(self.cfg.region_sectors);
        for e in 0..self.cfg.resync.max_inflight {
            let pi = self.resync_base + e;
            if self
                .parents
                .get(pi as usize)
                .is_none_or(|p| p.kind != Kind::Free)
            {
                continue;
            }
            if self.cfg.resync.sectors_per_tick != 0 && self.resync_budget < chunk {
                break;
            }
            let Some((k, sector, count)) = self.next_chunk(chunk) else {
                break;
            };
            let r = crate::arith::div(sector, self.cfg.region_sectors);
            let Some(src) = self.copy_source(k, r, 0) else {
                // Nothing in sync to copy from: give up on this region for this pass.
                self.chunk_finished(host, k, false);
                progress = true;
                continue;
            };
            self.resync_budget = self.resync_budget.saturating_sub(u64::from(count));
            if let Some(p) = self.parents.get_mut(pi as usize) {
                *p = Parent {
                    kind: Kind::Resync,
                    sector,
                    count,
                    target: k,
                    source: src,
                    tried: bit(src),
                    ..Parent::FREE
                };
            }
            self.admit(host, pi);
            progress = true;
        }
        progress
    }

    /// The next chunk to copy: (target leg, data sector, sectors). Opens a new region when the
    /// current one is fully issued.
    fn next_chunk(&mut self, chunk: u64) -> Option<(u8, u64, u32)> {
        let rs = self.cfg.region_sectors;
        for k in 0..self.cfg.legs {
            let active = self.leg_state(k).is_active();
            let oos = self.log.out_of_sync(k);
            let ticks = self.ticks;
            let Some(l) = self.legs.get(usize::from(k)).map(|l| l.resync) else {
                continue;
            };
            if !active || oos == 0 || ticks < l.retry_at {
                continue;
            }
            let mut st = l;
            if st.cur == NONE_REGION {
                if st.out != 0 {
                    continue;
                }
                match crate::log::RegionLog::next_resync(&self.log, k, st.cursor) {
                    Some(r) => {
                        st.cur = r;
                        st.next_off = 0;
                        st.failed = false;
                    }
                    None => {
                        // End of a pass with regions left (stalled ones): retry later.
                        st.cursor = 0;
                        st.retry_at = if st.stalled > 0 {
                            ticks + RETRY_TICKS
                        } else {
                            ticks
                        };
                        st.stalled = 0;
                        if let Some(leg) = self.legs.get_mut(usize::from(k)) {
                            leg.resync = st;
                        }
                        continue;
                    }
                }
            }
            let start = st.cur.saturating_mul(rs).saturating_add(st.next_off);
            let region_end = st
                .cur
                .saturating_add(1)
                .saturating_mul(rs)
                .min(self.cfg.data_sectors);
            if st.next_off >= rs || start >= region_end {
                // Fully issued; waiting for its chunks.
                if let Some(leg) = self.legs.get_mut(usize::from(k)) {
                    leg.resync = st;
                }
                continue;
            }
            let count = chunk.min(region_end - start);
            st.next_off += count;
            if start + count >= region_end {
                st.next_off = rs;
            }
            st.out += 1;
            if let Some(leg) = self.legs.get_mut(usize::from(k)) {
                leg.resync = st;
            }
            return Some((k, start, count as u32));
        }
        None
    }

    pub(crate) fn start_copy<H: Host>(&mut self, host: &mut H, pi: u32) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        // The source may have left since the copy was queued.
        let r = crate::arith::div(p.sector, self.cfg.region_sectors);
        let src = if self.leg_state(p.source).is_active() && self.log.in_sync_leg(p.source, r) {
            Some(p.source)
        } else {
            self.copy_source(p.target, r, p.tried)
        };
        match src {
            Some(s) => self.issue_copy(host, pi, Role::CopyRead, s),
            None => self.copy_finished(host, pi, false),
        }
    }

    fn issue_copy<H: Host>(&mut self, host: &mut H, pi: u32, role: Role, leg: u8) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        let Some(li) = self.alloc_lio(pi, role, leg) else {
            self.copy_finished(host, pi, false);
            return;
        };
        if let Some(pm) = self.parents.get_mut(pi as usize) {
            pm.outstanding += 1;
            if role == Role::CopyRead {
                pm.source = leg;
                pm.tried |= bit(leg);
            }
        }
        let slot = pi - self.resync_base;
        let (op, fua) = if role == Role::CopyRead {
            (LegOp::Read, false)
        } else {
            (LegOp::Write, true)
        };
        self.issue_data(
            host,
            li,
            op,
            p.sector,
            p.count,
            0,
            fua,
            BufRef::Resync { slot, offset: 0 },
        );
    }

    pub(crate) fn copy_done<H: Host>(&mut self, host: &mut H, li: u32, l: Lio, result: IoResult) {
        let pi = l.owner;
        self.free_lio_slot(li);
        let Some(p) = self.parents.get_mut(pi as usize) else {
            return;
        };
        p.outstanding = p.outstanding.saturating_sub(1);
        let p = *p;
        match (l.role, result) {
            (Role::CopyRead, Ok(())) => {
                if self.leg_state(p.target).is_active() {
                    self.issue_copy(host, pi, Role::CopyWrite, p.target);
                } else {
                    self.copy_finished(host, pi, false);
                }
            }
            (Role::CopyRead, Err(e)) => {
                if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                    leg.errors += 1;
                }
                if e == IoError::Gone {
                    self.leg_failed(host, l.leg, e);
                }
                let r = crate::arith::div(p.sector, self.cfg.region_sectors);
                match self.copy_source(p.target, r, p.tried) {
                    Some(s) => self.issue_copy(host, pi, Role::CopyRead, s),
                    None => {
                        host.event(Event::ResyncStalled {
                            leg: p.target,
                            sector: p.sector,
                        });
                        self.copy_finished(host, pi, false);
                    }
                }
            }
            (Role::CopyWrite, Ok(())) => {
                self.counters.resync_sectors += u64::from(p.count);
                if let Some(leg) = self.legs.get_mut(usize::from(p.target)) {
                    leg.resync.done += u64::from(p.count);
                }
                self.copy_finished(host, pi, true);
            }
            (_, Err(e)) => {
                if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                    leg.errors += 1;
                }
                self.leg_failed(host, l.leg, e);
                self.copy_finished(host, pi, false);
            }
            _ => {}
        }
    }

    fn copy_finished<H: Host>(&mut self, host: &mut H, pi: u32, ok: bool) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        self.release_parent(pi);
        self.chunk_finished(host, p.target, ok);
    }

    /// One chunk of leg `k`'s current region is over; when the whole region is, record it.
    fn chunk_finished<H: Host>(&mut self, host: &mut H, k: u8, ok: bool) {
        let rs = self.cfg.region_sectors;
        let Some(st) = self.legs.get_mut(usize::from(k)).map(|l| &mut l.resync) else {
            return;
        };
        st.out = st.out.saturating_sub(1);
        if !ok {
            st.failed = true;
        }
        if st.out != 0 || st.next_off < rs || st.cur == NONE_REGION {
            return;
        }
        let st = *st;
        let r = st.cur;
        let active = self.leg_state(k).is_active();
        let mut next = ResyncLeg {
            cur: NONE_REGION,
            cursor: r + 1,
            ..st
        };
        if active && !st.failed {
            self.log.clear_needs(k, r);
            if self.leg_state(k) == LegState::Rebuilding {
                next.checkpoint = next.checkpoint.max(r + 1);
                next.since_checkpoint += 1;
                if next.since_checkpoint >= self.cfg.resync.checkpoint_regions {
                    next.since_checkpoint = 0;
                    self.log.sb_dirty |= self.log.persistent();
                }
            }
        } else if active {
            next.stalled += 1;
        } else {
            next = ResyncLeg {
                checkpoint: st.checkpoint,
                full: st.full,
                ..ResyncLeg::IDLE
            };
        }
        if let Some(l) = self.legs.get_mut(usize::from(k)) {
            l.resync = next;
        }
        if !active {
            return;
        }
        host.event(Event::ResyncProgress {
            leg: k,
            done: next.done,
            total: next.total,
        });
        if self.log.out_of_sync(k) == 0 {
            if self.leg_state(k) == LegState::Rebuilding {
                self.rebuilt(k);
            }
            host.event(Event::LegInSync { leg: k });
        }
    }

    /// Leg `k`'s rebuild has nothing left to copy: it is in sync, under a new generation.
    fn rebuilt(&mut self, k: u8) {
        self.generation += 1;
        let g = self.generation;
        if let Some(l) = self.legs.get_mut(usize::from(k)) {
            l.state = LegState::InSync;
            l.resync.checkpoint = 0;
            l.resync.full = false;
            l.since = g;
        }
        self.log.request_super();
        self.rescan = true;
    }

    /// A rebuilding leg with no region to copy and no copy in flight is in sync. Assembly can
    /// start one so (a stale leg whose tracking bitmap is empty: nothing was written while it was
    /// away); the copy engine only ever visits legs with regions to copy, so the tick sweeps.
    pub(crate) fn promote_rebuilt<H: Host>(&mut self, host: &mut H) {
        for k in 0..self.cfg.legs {
            let idle = self
                .legs
                .get(usize::from(k))
                .is_some_and(|l| l.state == LegState::Rebuilding && l.resync.out == 0);
            if idle && self.log.out_of_sync(k) == 0 {
                self.rebuilt(k);
                host.event(Event::LegInSync { leg: k });
            }
        }
    }
}
