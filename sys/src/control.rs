//! Leg-state changes (failure, missing, added, removed), the authoritative leg, clean shutdown,
//! ticks (lazy clearing, resync rate) and status.
//!
//! Every leg-state change bumps the generation and asks the region log for a superblock round;
//! write groups and flushes that depend on the change (`need_super`) complete only after that
//! round is durable on every surviving leg.
use crate::host::Host;
use crate::mirror::{bit, ControlError, Kind, Mirror, Shutdown};
use crate::types::*;

impl<'a> Mirror<'a> {
    /// Take leg `k` out of service after an error. `Gone` makes it missing (tracked, incremental
    /// rejoin); any other error makes it failed (full resync before it is trusted again).
    ///
    /// The last in-sync leg is never taken out: without it no leg could serve a read. Its errors
    /// are counted and returned to the parents that met them, and it stays in service (as a
    /// gmirror user expects of the last component).
    pub(crate) fn leg_failed<H: Host>(&mut self, host: &mut H, k: u8, err: IoError) {
        if !self.leg_state(k).is_active() || self.last_in_sync(k) {
            return;
        }
        let state = if err == IoError::Gone {
            LegState::Missing
        } else {
            LegState::Failed
        };
        self.set_leg_out(host, k, state);
        host.event(Event::LegFailed {
            leg: k,
            state,
            error: err,
        });
    }

    fn set_leg_out<H: Host>(&mut self, host: &mut H, k: u8, state: LegState) {
        self.generation += 1;
        let g = self.generation;
        if let Some(l) = self.legs.get_mut(usize::from(k)) {
            l.state = state;
            l.since = g;
        }
        match state {
            // Regions with writes in flight may or may not have reached it: track them. So may
            // the regions still marked in the write-intent bitmap: writes it completed there may
            // sit in its volatile cache, never flushed (a bit is cleared only after a flush of
            // every active leg, which it will miss), and a power loss would drop them.
            LegState::Missing => {
                self.track_inflight(k);
                self.log.needs_sync_or_intent(k);
            }
            _ => self.log.fill_needs(k, true),
        }
        self.log.request_super();
        // It owes the metadata round nothing any more.
        if self.log.part & bit(k) != 0 {
            self.log.part &= !bit(k);
            if self.log.part == 0 {
                self.finish_round();
            }
        }
        if self.authoritative == k {
            self.choose_authoritative(host);
        }
        self.rescan = true;
    }

    /// Leg `k` may have missed any write or discard in flight now: mark their regions.
    fn track_inflight(&mut self, k: u8) {
        let mut pi = self.head;
        while let Some(p) = self.parents.get(pi as usize).copied() {
            if matches!(p.kind, Kind::Write | Kind::Discard) {
                for r in self.regions_of(p.sector, p.count).iter() {
                    self.log.set_needs(k, r);
                }
            }
            pi = p.next;
        }
    }

    /// The in-sync leg with the fewest regions out of sync becomes authoritative. Regions it was
    /// itself unsure of (after an unclean shutdown) become the truth, and every other leg must
    /// take them from it.
    fn choose_authoritative<H: Host>(&mut self, host: &mut H) {
        let best = (0..self.cfg.legs)
            .filter(|&j| self.leg_state(j) == LegState::InSync)
            .min_by_key(|&j| self.log.out_of_sync(j));
        let Some(a) = best else { return };
        if self.log.out_of_sync(a) > 0 {
            for m in 0..self.cfg.legs {
                if m == a || !self.leg_state(m).is_active() {
                    continue;
                }
                let mut r = 0;
                while let Some(x) = crate::log::RegionLog::next_resync(&self.log, a, r) {
                    self.log.set_needs(m, x);
                    r = x + 1;
                }
            }
            self.log.fill_needs(a, false);
            for m in 0..self.cfg.legs {
                if m != a && self.leg_state(m).is_active() && self.log.out_of_sync(m) > 0 {
                    let busy = self
                        .legs
                        .get(usize::from(m))
                        .is_some_and(|l| l.resync.out > 0);
                    if !busy {
                        self.start_resync_pass(m);
                    }
                }
            }
        }
        self.authoritative = a;
        host.event(Event::AuthoritativeChanged { leg: a });
    }

    fn last_in_sync(&self, k: u8) -> bool {
        self.leg_state(k) == LegState::InSync
            && (0..self.cfg.legs)
                .filter(|&j| self.leg_state(j) == LegState::InSync)
                .count()
                == 1
    }

    /// Administratively fail a leg (it will need a full resync).
    pub fn fail_leg<H: Host>(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        self.take_out(host, leg, IoError::Io)
    }

    /// The host learned that a leg's device went away (a GEOM orphan, a detached disk): mark it
    /// missing now, rather than at its next I/O, so status is honest and writes from now on are
    /// tracked for its incremental return. The last in-sync leg stays (see `leg_failed`).
    pub fn leg_gone<H: Host>(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        self.take_out(host, leg, IoError::Gone)
    }

    /// A host's request to take an active leg out (failed for `Io`, missing for `Gone`).
    fn take_out<H: Host>(
        &mut self,
        host: &mut H,
        leg: u8,
        why: IoError,
    ) -> Result<(), ControlError> {
        if leg >= self.cfg.legs {
            return Err(ControlError::NoSuchLeg);
        }
        if !self.leg_state(leg).is_active() {
            return Err(ControlError::WrongState);
        }
        if self.last_in_sync(leg) {
            return Err(ControlError::LastLeg);
        }
        self.leg_failed(host, leg, why);
        self.pump(host);
        Ok(())
    }

    /// Take a leg out of the mirror for good (its slot becomes empty).
    pub fn remove_leg<H: Host>(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        if leg >= self.cfg.legs {
            return Err(ControlError::NoSuchLeg);
        }
        if self.leg_state(leg) == LegState::Empty {
            return Err(ControlError::WrongState);
        }
        if self.last_in_sync(leg) {
            return Err(ControlError::LastLeg);
        }
        // The slot keeps the leg's UUID and when it left (see `format::DiskLeg::since`).
        self.set_leg_out(host, leg, LegState::Empty);
        self.pump(host);
        Ok(())
    }

    /// Put a device in an empty, failed or missing slot. A missing leg that comes back (same
    /// UUID) with `incremental` resyncs only what was written while it was away; otherwise all.
    pub fn add_leg<H: Host>(
        &mut self,
        host: &mut H,
        leg: u8,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    ) -> Result<(), ControlError> {
        if leg >= self.cfg.legs {
            return Err(ControlError::NoSuchLeg);
        }
        if self.shutdown != Shutdown::No {
            return Err(ControlError::ShuttingDown);
        }
        let Some(l) = self.legs.get(usize::from(leg)).copied() else {
            return Err(ControlError::NoSuchLeg);
        };
        if l.state.is_active() {
            return Err(ControlError::WrongState);
        }
        // I/O from before it left may still be in flight: harmless. Its writes belong to unfinished
        // entries that new writes and copies of the same range are ordered behind, metadata rounds
        // wait for it, and old copies cannot close a region of the new pass.
        let meta = if self.cfg.log == LogKind::OnLegs {
            crate::log::MetaLayout::for_leg(&self.cfg, sectors).ok_or(ControlError::TooSmall)?
        } else {
            if sectors < self.cfg.data_sectors {
                return Err(ControlError::TooSmall);
            }
            crate::log::MetaLayout::NONE
        };
        let incremental = incremental && l.state == LegState::Missing && l.uuid == uuid;
        if incremental {
            self.log.needs_sync_or_intent(leg);
        } else {
            self.log.fill_needs(leg, true);
        }
        self.generation += 1;
        let g = self.generation;
        if let Some(lm) = self.legs.get_mut(usize::from(leg)) {
            lm.state = LegState::Rebuilding;
            lm.since = g;
            lm.uuid = uuid;
            lm.sectors = sectors;
            lm.meta = meta;
            lm.resync.checkpoint = 0;
            lm.resync.full = !incremental;
        }
        if let Some(d) = self.log.durable.get_mut(usize::from(leg)) {
            *d = 0;
        }
        self.log.mark_all_dirty(self.cfg.legs);
        self.log.request_super();
        self.start_resync_pass(leg);
        if self.log.out_of_sync(leg) == 0 {
            // Nothing was written while it was away.
            if let Some(lm) = self.legs.get_mut(usize::from(leg)) {
                lm.state = LegState::InSync;
            }
            host.event(Event::LegInSync { leg });
        }
        self.rescan = true;
        self.pump(host);
        Ok(())
    }

    pub fn set_read_policy(&mut self, policy: ReadPolicy) -> Result<(), ConfigError> {
        let mut c = self.cfg;
        c.read_policy = policy;
        match policy {
            ReadPolicy::RoundRobin { batch: 0 } => return Err(ConfigError::ReadPolicy),
            ReadPolicy::Prefer { leg } if leg >= c.legs => return Err(ConfigError::ReadPolicy),
            ReadPolicy::Split { min_sectors } if min_sectors < 2 => {
                return Err(ConfigError::ReadPolicy)
            }
            _ => {}
        }
        self.cfg = c;
        self.log.sb_dirty |= self.log.persistent();
        Ok(())
    }

    /// Issue what a new mirror owes at once: the first metadata round (the unclean flag and the
    /// bitmaps on every leg) and any resync. Call once after [`Mirror::new`]; I/O submitted
    /// before it is also fine (it starts the same work).
    pub fn start<H: Host>(&mut self, host: &mut H) {
        self.pump(host);
    }

    /// Time passes (the host picks the period; `clear_delay_ticks` and the resync rate count in
    /// ticks). Sweeps idle dirty regions for clearing and refills the resync budget.
    pub fn tick<H: Host>(&mut self, host: &mut H) {
        self.ticks += 1;
        let per = self.cfg.resync.sectors_per_tick;
        self.resync_budget = if per == 0 {
            u64::MAX
        } else {
            self.resync_budget.saturating_add(per).min(per * 2)
        };
        if self.log.persistent()
            && self.shutdown == Shutdown::No
            && self.log.gate.is_none()
            && self
                .ticks
                .is_multiple_of(u64::from(self.cfg.clear_delay_ticks))
        {
            let any = self.log.sweep(self.active_mask());
            // Writes still in flight (started before the previous sweep) are not idle.
            let mut pi = self.head;
            while let Some(p) = self.parents.get(pi as usize).copied() {
                if matches!(p.kind, Kind::Write | Kind::Discard) {
                    self.log.uncandidate(self.regions_of(p.sector, p.count));
                }
                pi = p.next;
            }
            if any {
                self.log.gate = Some(self.log.round + 1);
            }
        }
        if self.shutdown == Shutdown::No {
            self.promote_rebuilt(host);
        }
        self.pump(host);
    }

    /// Begin a clean shutdown: new parents are answered `Busy`, in-flight ones finish, copies
    /// stop, legs are flushed, dirty bits cleared, the clean flag set; then `Event::ShutdownDone`.
    pub fn shutdown<H: Host>(&mut self, host: &mut H) {
        if self.shutdown == Shutdown::No {
            self.shutdown = Shutdown::Draining;
        }
        self.pump(host);
    }

    /// Undo a completed (or begun) shutdown: accept I/O again (dm resume after suspend).
    pub fn resume<H: Host>(&mut self, host: &mut H) {
        self.shutdown = Shutdown::No;
        if self.log.persistent() && self.log.clean {
            self.log.clean = false;
            self.log.sb_dirty = true;
        }
        self.pump(host);
    }

    pub(crate) fn shutdown_pump<H: Host>(&mut self, host: &mut H) -> bool {
        let quiet = self.head == crate::mirror::NIL && !self.log.in_flight;
        match self.shutdown {
            Shutdown::Draining if quiet => {
                if self.log.persistent() {
                    let g = self.log.round + 1;
                    self.log.gate = Some(g);
                    self.shutdown = Shutdown::Flushing(g);
                } else {
                    self.shutdown = Shutdown::Done;
                    host.event(Event::ShutdownDone);
                }
                true
            }
            Shutdown::Flushing(g) if quiet && self.log.completed >= g => {
                self.log.clear_all_intent(self.active_mask());
                self.log.clean = true;
                self.log.sb_dirty = true;
                self.log.set_pending = true;
                self.shutdown = Shutdown::Writing(self.log.round + 1);
                true
            }
            Shutdown::Writing(g) if quiet && self.log.completed >= g => {
                self.shutdown = Shutdown::Done;
                host.event(Event::ShutdownDone);
                true
            }
            _ => false,
        }
    }

    pub fn status(&self) -> Status {
        let mut s = Status::EMPTY;
        self.status_into(&mut s);
        s
    }

    /// [`Mirror::status`] into the caller's memory (a `Status` is ~2.2 KiB: a kernel glue
    /// converts it from one place instead of moving it through temporaries).
    pub fn status_into(&self, out: &mut Status) {
        for (k, s) in out.leg.iter_mut().enumerate() {
            *s = LegStatus::EMPTY;
            if k >= usize::from(self.cfg.legs) {
                continue;
            }
            let Some(l) = self.legs.get(k) else { continue };
            let oos = self.log.out_of_sync(k as u8);
            *s = LegStatus {
                state: l.state,
                regions_out_of_sync: oos,
                resync_done: l.resync.done,
                resync_total: l.resync.total.max(l.resync.done),
                inflight: l.inflight,
                reads: l.reads,
                writes: l.writes,
                errors: l.errors,
                repairs: l.repairs,
            };
        }
        let regions = self.log.regions();
        let mut oos = 0u64;
        let active = self.active_mask();
        // Regions some active leg is out of sync for.
        let mut r = 0;
        while r < regions {
            let w = r / 64;
            let mut word = 0u64;
            for k in 0..self.cfg.legs {
                if active & bit(k) != 0 {
                    word |= self.log_word(k, w);
                }
            }
            oos += u64::from(word.count_ones());
            r += 64;
        }
        out.legs = self.cfg.legs;
        out.authoritative = self.authoritative;
        out.generation = self.generation;
        out.regions = regions;
        out.regions_in_sync = regions - oos.min(regions);
        out.dirty_regions = self.log.dirty_regions();
        out.inflight_parents = self.inflight_parents;
        out.inflight_leg_ios = self.lios_busy;
        out.counters = self.counters;
        out.read_policy = self.cfg.read_policy;
    }

    fn log_word(&self, k: u8, w: u64) -> u64 {
        let mut word = 0;
        for b in 0..64 {
            let r = w * 64 + b;
            if r < self.log.regions() && !self.log.in_sync_leg(k, r) {
                word |= 1 << b;
            }
        }
        word
    }

    /// Plant a deliberate bug (mutation testing of the simulator's checks).
    #[cfg(any(test, feature = "mutants"))]
    pub fn set_mutant(&mut self, m: crate::Mutant) {
        self.mutant = m;
        self.log.mutant = m;
    }
}
