//! Parent I/O paths: admission and ordering, write groups, reads with fallback and repair,
//! flushes, discards, and the completion of leg I/Os. See `mirror.rs` for the rules.
use crate::host::Host;
use crate::mirror::{bit, Kind, Lio, Mirror, Parent, Phase, Role, Shutdown, NIL};
use crate::types::*;

impl<'a> Mirror<'a> {
    /// A new parent I/O. Invalid ones (beyond the end, empty) are completed at once with
    /// `IoError::Invalid`. `Err(Busy)` when the parent pool is full or a shutdown is under way: the
    /// host keeps the parent, in order, and submits it again after `Event::Ready` or any parent
    /// completion.
    pub fn submit<H: Host>(&mut self, host: &mut H, io: ParentIo) -> Result<(), Busy> {
        let kind = match io.op {
            ParentOp::Read => Kind::Read,
            ParentOp::Write => Kind::Write,
            ParentOp::Flush => Kind::Flush,
            ParentOp::Discard => Kind::Discard,
        };
        if kind != Kind::Flush
            && (io.count == 0
                || io
                    .sector
                    .checked_add(u64::from(io.count))
                    .is_none_or(|e| e > self.cfg.data_sectors))
        {
            self.counters.parent_errors += 1;
            host.complete(io.handle, Err(IoError::Invalid));
            return Ok(());
        }
        if self.shutdown != Shutdown::No || self.free_parent == NIL {
            self.counters.busy += 1;
            self.told_busy = true;
            return Err(Busy);
        }
        let pi = self.free_parent;
        let Some(p) = self.parents.get_mut(pi as usize) else {
            return Err(Busy);
        };
        self.free_parent = p.wnext;
        *p = Parent {
            kind,
            handle: io.handle,
            buf: io.buf,
            sector: io.sector,
            count: io.count,
            fua: io.fua,
            ..Parent::FREE
        };
        if kind == Kind::Flush {
            p.sector = 0;
            p.count = 0;
        }
        match kind {
            Kind::Read => self.counters.parent_reads += 1,
            Kind::Write => self.counters.parent_writes += 1,
            Kind::Flush => self.counters.parent_flushes += 1,
            _ => self.counters.parent_discards += 1,
        }
        self.inflight_parents += 1;
        self.admit(host, pi);
        self.pump(host);
        Ok(())
    }

    /// Leg-I/O slots a parent needs for its whole life.
    fn slots_needed(&self, pi: u32) -> u32 {
        let Some(p) = self.parents.get(pi as usize) else {
            return 1;
        };
        // A group may grow by legs added while it waits: reserve for every slot.
        let active = u32::from(self.cfg.legs);
        match p.kind {
            Kind::Read => match self.cfg.read_policy {
                ReadPolicy::Split { min_sectors } if p.count >= min_sectors => active,
                _ => 1,
            },
            Kind::Resync => 1,
            _ => active,
        }
    }

    /// Put an entry at the tail of the admission list and start it if it can.
    pub(crate) fn admit<H: Host>(&mut self, host: &mut H, pi: u32) {
        self.link_tail(pi);
        let need = self.slots_needed(pi);
        let resync = self
            .parents
            .get(pi as usize)
            .is_some_and(|p| p.kind == Kind::Resync);
        // Resync entries have slots of their own; parents queue in order behind each other.
        if resync || (self.fifo_head == NIL && self.lio_available >= need) {
            if !resync {
                self.lio_available -= need;
            }
            if let Some(p) = self.parents.get_mut(pi as usize) {
                p.reserved = if resync { 0 } else { need };
            }
            self.try_start(host, pi);
        } else {
            if let Some(p) = self.parents.get_mut(pi as usize) {
                p.phase = Phase::SlotWait;
                p.wnext = NIL;
            }
            match self.parents.get_mut(self.fifo_tail as usize) {
                Some(t) => t.wnext = pi,
                None => self.fifo_head = pi,
            }
            self.fifo_tail = pi;
        }
    }

    fn link_tail(&mut self, pi: u32) {
        let tail = self.tail;
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.prev = tail;
            p.next = NIL;
        }
        match self.parents.get_mut(tail as usize) {
            Some(t) => t.next = pi,
            None => self.head = pi,
        }
        self.tail = pi;
    }

    fn unlink(&mut self, pi: u32) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        match self.parents.get_mut(p.prev as usize) {
            Some(q) => q.next = p.next,
            None => self.head = p.next,
        }
        match self.parents.get_mut(p.next as usize) {
            Some(q) => q.prev = p.prev,
            None => self.tail = p.prev,
        }
    }

    /// Does an earlier unfinished entry forbid `pi` from starting?
    fn blocked_by_earlier(&self, pi: u32) -> bool {
        let Some(p) = self.parents.get(pi as usize) else {
            return false;
        };
        let mut qi = p.prev;
        while let Some(q) = self.parents.get(qi as usize) {
            if p.conflicts_with(q) {
                #[cfg(any(test, feature = "mutants"))]
                if self.mutant == crate::Mutant::NoWriteOrdering
                    && p.kind == Kind::Write
                    && q.kind == Kind::Write
                {
                    qi = q.prev;
                    continue;
                }
                return true;
            }
            qi = q.prev;
        }
        false
    }

    fn try_start<H: Host>(&mut self, host: &mut H, pi: u32) {
        if self.blocked_by_earlier(pi) {
            if let Some(p) = self.parents.get_mut(pi as usize) {
                p.phase = Phase::Blocked;
            }
            return;
        }
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.phase = Phase::Running;
        }
        match self.parents.get(pi as usize).map(|p| p.kind) {
            Some(Kind::Read) => self.start_read(host, pi),
            Some(Kind::Write) | Some(Kind::Discard) => self.start_write(host, pi),
            Some(Kind::Flush) => self.start_flush(host, pi),
            Some(Kind::Resync) => self.start_copy(host, pi),
            _ => {}
        }
    }

    /// Start what can start, move write groups along, run metadata rounds and resync; repeat
    /// until nothing changes. Every entry point ends here.
    pub(crate) fn pump<H: Host>(&mut self, host: &mut H) {
        for _ in 0..64 {
            let mut progress = false;
            // Parents waiting for slots, in order.
            while let Some(p) = self.parents.get(self.fifo_head as usize).copied() {
                let pi = self.fifo_head;
                let need = self.slots_needed(pi);
                if self.lio_available < need {
                    break;
                }
                self.lio_available -= need;
                self.fifo_head = p.wnext;
                if self.fifo_head == NIL {
                    self.fifo_tail = NIL;
                }
                if let Some(p) = self.parents.get_mut(pi as usize) {
                    p.reserved = need;
                    p.wnext = NIL;
                }
                self.try_start(host, pi);
                progress = true;
            }
            if self.rescan {
                self.rescan = false;
                let mut pi = self.head;
                while let Some(p) = self.parents.get(pi as usize).copied() {
                    let next = p.next;
                    match (p.phase, p.kind) {
                        (Phase::Blocked, _) => {
                            self.try_start(host, pi);
                        }
                        (Phase::Running, Kind::Write | Kind::Discard | Kind::Flush) => {
                            self.advance(host, pi)
                        }
                        (Phase::Running, Kind::Read) => self.maybe_finish(host, pi),
                        _ => {}
                    }
                    pi = next;
                }
                progress = true;
            }
            progress |= self.meta_pump(host);
            progress |= self.resync_pump(host);
            progress |= self.shutdown_pump(host);
            if self.told_busy && self.free_parent != NIL && self.shutdown == Shutdown::No {
                self.told_busy = false;
                host.event(Event::Ready);
            }
            if !progress {
                break;
            }
        }
    }

    // ---- leg-I/O slots ----

    pub(crate) fn alloc_lio(&mut self, owner: u32, role: Role, leg: u8) -> Option<u32> {
        let li = self.free_lio;
        let l = self.lios.get_mut(li as usize)?;
        self.free_lio = l.next;
        let gen = l.gen.wrapping_add(1);
        *l = Lio {
            gen,
            role,
            owner,
            leg,
            ..Lio::FREE
        };
        self.lios_busy += 1;
        if let Some(leg) = self.legs.get_mut(usize::from(leg)) {
            leg.inflight += 1;
        }
        Some(li)
    }

    pub(crate) fn free_lio_slot(&mut self, li: u32) {
        let head = self.free_lio;
        if let Some(l) = self.lios.get_mut(li as usize) {
            if l.role == Role::Free {
                return;
            }
            if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                leg.inflight = leg.inflight.saturating_sub(1);
            }
            l.role = Role::Free;
            l.next = head;
            self.free_lio = li;
            self.lios_busy = self.lios_busy.saturating_sub(1);
        }
    }

    pub(crate) fn token(&self, li: u32) -> Token {
        let gen = self.lios.get(li as usize).map(|l| l.gen).unwrap_or(0);
        Token((u64::from(gen) << 32) | u64::from(li))
    }

    /// Issue a data I/O for a parent entry: sector is data-relative, `offset` bytes into its buffer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn issue_data<H: Host>(
        &mut self,
        host: &mut H,
        li: u32,
        op: LegOp,
        sector: u64,
        count: u32,
        offset: u64,
        fua: bool,
        buf: BufRef<'_>,
    ) {
        let leg = match self.lios.get_mut(li as usize) {
            Some(l) => {
                l.sector = sector;
                l.count = count;
                l.offset = offset;
                l.leg
            }
            None => return,
        };
        if let Some(lg) = self.legs.get_mut(usize::from(leg)) {
            match op {
                LegOp::Read => lg.reads += 1,
                LegOp::Write | LegOp::Discard => lg.writes += 1,
                LegOp::Flush => {}
            }
        }
        let token = self.token(li);
        host.issue(&LegIo {
            token,
            leg,
            op,
            sector,
            count,
            fua,
            buf,
        });
    }

    // ---- reads ----

    /// Legs that may serve `[sector, sector + count)`: active and in sync for every region.
    pub(crate) fn read_candidates(&self, sector: u64, count: u32) -> u32 {
        if self.log.total_out_of_sync() == 0 {
            return self.active_mask();
        }
        let mut m = 0;
        let regs = self.regions_of(sector, count);
        for k in 0..self.cfg.legs {
            let st = self.leg_state(k);
            if !st.is_active() {
                continue;
            }
            if self.log.out_of_sync(k) == 0 || regs.iter().all(|r| self.log.in_sync_leg(k, r)) {
                m |= bit(k);
            }
        }
        m
    }

    fn pick_leg(&mut self, cands: u32) -> Option<u8> {
        if cands == 0 {
            return None;
        }
        let first = cands.trailing_zeros() as u8;
        match self.cfg.read_policy {
            ReadPolicy::RoundRobin { batch } => {
                if cands & bit(self.rr_leg) != 0 && self.rr_count < batch {
                    self.rr_count += 1;
                    return Some(self.rr_leg);
                }
                // The next candidate after the current leg, wrapping.
                let above = cands & !(bit(self.rr_leg) | bit(self.rr_leg).wrapping_sub(1));
                let k = if above != 0 {
                    above.trailing_zeros() as u8
                } else {
                    first
                };
                self.rr_leg = k;
                self.rr_count = 1;
                Some(k)
            }
            ReadPolicy::Load => {
                let mut best = first;
                let mut best_load = u32::MAX;
                for k in 0..self.cfg.legs {
                    if cands & bit(k) != 0 {
                        let load = self
                            .legs
                            .get(usize::from(k))
                            .map(|l| l.inflight)
                            .unwrap_or(u32::MAX);
                        if load < best_load {
                            best = k;
                            best_load = load;
                        }
                    }
                }
                Some(best)
            }
            ReadPolicy::Prefer { leg } => Some(if cands & bit(leg) != 0 { leg } else { first }),
            ReadPolicy::Split { .. } => Some(first),
        }
    }

    fn start_read<H: Host>(&mut self, host: &mut H, pi: u32) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        let cands = self.read_candidates(p.sector, p.count);
        if cands == 0 {
            self.set_err(pi, IoError::NoLegs);
            self.maybe_finish(host, pi);
            return;
        }
        let pieces = match self.cfg.read_policy {
            ReadPolicy::Split { min_sectors } if p.count >= min_sectors => {
                cands.count_ones().min(p.reserved).min(p.count).max(1)
            }
            _ => 1,
        };
        let mut legs_left = cands;
        let mut at = 0u32;
        for i in 0..pieces {
            let len = if i + 1 == pieces {
                p.count - at
            } else {
                p.count.checked_div(pieces).unwrap_or(p.count)
            };
            let leg = if pieces > 1 {
                let k = legs_left.trailing_zeros() as u8;
                legs_left &= !bit(k);
                k
            } else {
                match self.pick_leg(cands) {
                    Some(k) => k,
                    None => break,
                }
            };
            self.issue_read_piece(host, pi, leg, p.sector + u64::from(at), len, bit(leg), 0);
            at += len;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_read_piece<H: Host>(
        &mut self,
        host: &mut H,
        pi: u32,
        leg: u8,
        sector: u64,
        count: u32,
        tried: u32,
        bad: u32,
    ) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        let Some(li) = self.alloc_lio(pi, Role::Read, leg) else {
            // Cannot happen: slots were reserved at admission. Fail the piece rather than hang.
            self.set_err(pi, IoError::Io);
            return;
        };
        if let Some(l) = self.lios.get_mut(li as usize) {
            l.tried = tried;
            l.bad = bad;
        }
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.outstanding += 1;
        }
        let offset = (sector - p.sector) * u64::from(self.cfg.sector_size);
        self.issue_data(
            host,
            li,
            LegOp::Read,
            sector,
            count,
            offset,
            false,
            BufRef::Parent { buf: p.buf, offset },
        );
    }

    fn read_done<H: Host>(&mut self, host: &mut H, li: u32, l: Lio, result: IoResult) {
        let pi = l.owner;
        match (l.role, result) {
            (Role::Read, Ok(())) => {
                // Repair the legs that failed this range, one at a time, from the data just read.
                if let Some(k) = self.first_repairable(l.bad) {
                    self.issue_repair(host, pi, li, l, k);
                    return;
                }
            }
            (Role::Read, Err(e)) => {
                self.counters.read_retries += 1;
                if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                    leg.errors += 1;
                }
                let bad = if e == IoError::Gone {
                    self.leg_failed(host, l.leg, IoError::Gone);
                    l.bad
                } else {
                    l.bad | bit(l.leg)
                };
                let cands = self.read_candidates(l.sector, l.count) & !l.tried;
                if let Some(k) = self.pick_leg(cands) {
                    self.release_piece(pi, li);
                    self.issue_read_piece(host, pi, k, l.sector, l.count, l.tried | bit(k), bad);
                    return;
                }
                self.set_err(pi, if e == IoError::Gone { IoError::Io } else { e });
            }
            (Role::Repair, res) => {
                match res {
                    Ok(()) => {
                        self.counters.repairs += 1;
                        if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                            leg.repairs += 1;
                        }
                        host.event(Event::Repaired {
                            leg: l.leg,
                            sector: l.sector,
                            count: l.count,
                        });
                    }
                    Err(e) => {
                        self.leg_failed(host, l.leg, e);
                        let need = self.log.state_need();
                        if let Some(p) = self.parents.get_mut(pi as usize) {
                            p.need_super = p.need_super.max(need);
                        }
                    }
                }
                let rest = l.bad & !bit(l.leg);
                if let Some(k) = self.first_repairable(rest) {
                    let next = Lio { bad: rest, ..l };
                    self.issue_repair(host, pi, li, next, k);
                    return;
                }
            }
            _ => {}
        }
        self.release_piece(pi, li);
        self.maybe_finish(host, pi);
    }

    fn first_repairable(&self, bad: u32) -> Option<u8> {
        (0..self.cfg.legs).find(|&k| bad & bit(k) != 0 && self.leg_state(k).is_active())
    }

    /// Rewrite the piece's range on leg `k` from the parent's buffer, reusing the piece's slot.
    fn issue_repair<H: Host>(&mut self, host: &mut H, pi: u32, li: u32, l: Lio, k: u8) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        // Retire the old token: a fresh generation for the repair write.
        self.free_lio_slot(li);
        let Some(nli) = self.alloc_lio(pi, Role::Repair, k) else {
            self.release_piece_counted(pi);
            self.maybe_finish(host, pi);
            return;
        };
        if let Some(n) = self.lios.get_mut(nli as usize) {
            n.bad = l.bad & !bit(k);
            n.tried = l.tried;
        }
        let offset = (l.sector - p.sector) * u64::from(self.cfg.sector_size);
        self.issue_data(
            host,
            nli,
            LegOp::Write,
            l.sector,
            l.count,
            offset,
            false,
            BufRef::Parent { buf: p.buf, offset },
        );
    }

    fn release_piece(&mut self, pi: u32, li: u32) {
        self.free_lio_slot(li);
        self.release_piece_counted(pi);
    }

    fn release_piece_counted(&mut self, pi: u32) {
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
    }

    fn set_err(&mut self, pi: u32, e: IoError) {
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.err = Some(e);
        }
    }

    // ---- writes, discards, flushes ----

    fn start_write<H: Host>(&mut self, host: &mut H, pi: u32) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        let active = self.active_mask();
        let mut absent = 0u32;
        for k in 0..self.cfg.legs {
            if matches!(self.leg_state(k), LegState::Missing | LegState::Failed) {
                absent |= bit(k);
            }
        }
        let regs = self.regions_of(p.sector, p.count);
        let need_journal = self.log.mark(regs, absent, self.cfg.legs);
        let need_super = self.log.state_need();
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.need_journal = need_journal;
            p.need_super = need_super;
            p.members = active;
            p.tx_journal = active;
        }
        self.advance(host, pi);
    }

    fn start_flush<H: Host>(&mut self, host: &mut H, pi: u32) {
        let active = self.active_mask();
        let need_super = self.log.state_need();
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.need_super = need_super;
        }
        for k in 0..self.cfg.legs {
            if active & bit(k) == 0 {
                continue;
            }
            let Some(li) = self.alloc_lio(pi, Role::Flush, k) else {
                continue;
            };
            if let Some(p) = self.parents.get_mut(pi as usize) {
                p.outstanding += 1;
                p.members |= bit(k);
                p.tx_data |= bit(k);
            }
            self.issue_data(host, li, LegOp::Flush, 0, 0, 0, false, BufRef::None);
        }
        self.advance(host, pi);
    }

    /// Move every transaction of a write group (or flush) as far as it can go; complete the
    /// parent when all are Done.
    pub(crate) fn advance<H: Host>(&mut self, host: &mut H, pi: u32) {
        let Some(p) = self.parents.get(pi as usize) else {
            return;
        };
        if p.phase != Phase::Running {
            return;
        }
        let (mut journal, need_journal, need_super) = (p.tx_journal, p.need_journal, p.need_super);
        // Journal → Data when the marks are durable on that leg; → Super when the leg left.
        let mut to_data = 0;
        let mut to_super = 0;
        while journal != 0 {
            let k = journal.trailing_zeros() as u8;
            journal &= journal - 1;
            if !self.leg_state(k).is_active() {
                to_super |= bit(k);
            } else if self.log.durable_on(k, need_journal) {
                to_data |= bit(k);
            }
        }
        // A member that left must be recorded as out before the group may complete.
        let need_super = if to_super != 0 {
            need_super.max(self.log.state_need())
        } else {
            need_super
        };
        let super_done = self.log.completed() >= need_super;
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.need_super = need_super;
            p.tx_journal &= !(to_data | to_super);
            p.tx_data |= to_data;
            p.tx_super |= to_super;
            if super_done {
                p.tx_super = 0;
            }
        }
        let mut d = to_data;
        while d != 0 {
            let k = d.trailing_zeros() as u8;
            d &= d - 1;
            self.issue_group_data(host, pi, k);
        }
        self.maybe_finish(host, pi);
    }

    fn issue_group_data<H: Host>(&mut self, host: &mut H, pi: u32, k: u8) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        let Some(li) = self.alloc_lio(pi, Role::Data, k) else {
            return;
        };
        if let Some(pm) = self.parents.get_mut(pi as usize) {
            pm.outstanding += 1;
        }
        let (op, buf) = if p.kind == Kind::Discard {
            (LegOp::Discard, BufRef::None)
        } else {
            (
                LegOp::Write,
                BufRef::Parent {
                    buf: p.buf,
                    offset: 0,
                },
            )
        };
        self.issue_data(host, li, op, p.sector, p.count, 0, p.fua, buf);
    }

    fn group_done<H: Host>(&mut self, host: &mut H, li: u32, l: Lio, result: IoResult) {
        let pi = l.owner;
        self.free_lio_slot(li);
        let kind = self.parents.get(pi as usize).map(|p| p.kind);
        let result = match (kind, result) {
            // A leg that cannot discard is not failing.
            (Some(Kind::Discard), Err(IoError::NotSupported)) => Ok(()),
            (_, r) => r,
        };
        match result {
            Ok(()) => {
                if let Some(p) = self.parents.get_mut(pi as usize) {
                    p.ok |= bit(l.leg);
                }
            }
            Err(e) => {
                if let Some(leg) = self.legs.get_mut(usize::from(l.leg)) {
                    leg.errors += 1;
                }
                self.leg_failed(host, l.leg, e);
            }
        }
        let need = self.log.state_need();
        if let Some(p) = self.parents.get_mut(pi as usize) {
            p.outstanding = p.outstanding.saturating_sub(1);
            if result.is_err() {
                p.need_super = p.need_super.max(need);
            }
            // Data → Super (Done at once in `advance` when no change is pending).
            p.tx_data &= !bit(l.leg);
            p.tx_super |= bit(l.leg);
        }
        #[cfg(any(test, feature = "mutants"))]
        if self.mutant == crate::Mutant::CompleteEarly {
            // Planted bug: complete the group as soon as one leg reported.
            if let Some(p) = self.parents.get_mut(pi as usize) {
                p.tx_journal = 0;
                p.tx_data = 0;
                p.tx_super = 0;
                p.outstanding = 0;
            }
            self.maybe_finish(host, pi);
            return;
        }
        self.advance(host, pi);
    }

    /// Complete a parent whose work is all done.
    pub(crate) fn maybe_finish<H: Host>(&mut self, host: &mut H, pi: u32) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        if p.kind == Kind::Free || p.phase != Phase::Running || p.outstanding != 0 {
            return;
        }
        if p.tx_pending() {
            return;
        }
        if p.kind == Kind::Resync {
            return;
        }
        // Disk log: a write (or flush) that depends on a leg-state change the failed log device
        // could not record is never acknowledged (devlog.rs).
        let lost = matches!(p.kind, Kind::Write | Kind::Discard | Kind::Flush)
            && self.log.dev.lost(p.need_super);
        let result = match p.kind {
            _ if lost => Err(IoError::Io),
            Kind::Read => match p.err {
                Some(e) => Err(e),
                None => Ok(()),
            },
            // Every member wrote it: the common case.
            Kind::Write | Kind::Discard
                if p.ok == p.members && self.log.total_out_of_sync() == 0 =>
            {
                Ok(())
            }
            Kind::Write | Kind::Discard => {
                // Success needs a leg that was in sync for the range and wrote it.
                let good = self.read_candidates(p.sector, p.count)
                    | self.legs_in_sync_for(p.sector, p.count);
                if p.ok & good != 0 {
                    Ok(())
                } else {
                    Err(p.err.unwrap_or(IoError::Io))
                }
            }
            _ => {
                if p.ok != 0 {
                    Ok(())
                } else {
                    Err(IoError::Io)
                }
            }
        };
        if result.is_err() {
            self.counters.parent_errors += 1;
        }
        self.release_parent(pi);
        host.complete(p.handle, result);
    }

    /// Legs (active or not) whose data for the range was in sync before this write: used so a
    /// write that a leg took just before failing is still counted.
    fn legs_in_sync_for(&self, sector: u64, count: u32) -> u32 {
        let regs = self.regions_of(sector, count);
        let mut m = 0;
        for k in 0..self.cfg.legs {
            if self.leg_state(k) == LegState::InSync
                && regs.iter().all(|r| self.log.in_sync_leg(k, r))
            {
                m |= bit(k);
            }
        }
        m
    }

    pub(crate) fn release_parent(&mut self, pi: u32) {
        let Some(p) = self.parents.get(pi as usize).copied() else {
            return;
        };
        self.unlink(pi);
        if p.kind != Kind::Resync {
            self.lio_available += p.reserved;
            self.inflight_parents = self.inflight_parents.saturating_sub(1);
        }
        if let Some(pm) = self.parents.get_mut(pi as usize) {
            *pm = Parent::FREE;
            if pi < self.resync_base {
                pm.wnext = self.free_parent;
            }
        }
        if pi < self.resync_base {
            self.free_parent = pi;
        }
        self.rescan = true;
    }

    // ---- completions ----

    /// A leg I/O the host issued has finished. Unknown or stale tokens are ignored.
    pub fn leg_done<H: Host>(&mut self, host: &mut H, token: Token, result: IoResult) {
        let li = (token.0 & 0xffff_ffff) as u32;
        let gen = (token.0 >> 32) as u32;
        let Some(l) = self.lios.get(li as usize).copied() else {
            return;
        };
        if l.role == Role::Free || l.gen != gen {
            return;
        }
        match l.role {
            Role::Read | Role::Repair => self.read_done(host, li, l, result),
            Role::Data | Role::Flush => self.group_done(host, li, l, result),
            Role::CopyRead | Role::CopyWrite => self.copy_done(host, li, l, result),
            Role::MetaWrite | Role::MetaFlush => self.meta_done(host, li, l, result),
            Role::Free => {}
        }
        self.pump(host);
    }

    /// Nothing in flight: no parent, no leg I/O, no metadata round.
    pub fn is_idle(&self) -> bool {
        self.head == NIL && self.lios_busy == 0 && !self.log.round_in_flight()
    }
}
