//! A deliberately simple mirror core, written only to test the simulator itself: it shows that the
//! model passes a correct core (no false alarms) and catches core-side bugs planted in it
//! ([`RefBug`]). It is not the dmirror core and shares no code with it.
//!
//! Design: writes and discards take a range lock (overlapping ones wait, in order) and go to every
//! active leg; reads go to one in-sync leg and move to the next on error; flushes go to every
//! active leg; a leg whose write or flush fails is failed (`Gone`: missing); a leg that is added
//! is rebuilt in full, one chunk at a time under the same range lock. No metadata, no pools
//! beyond the parent count.
use crate::core::Core;
use dmirror::{
    BufRef, Busy, Config, ControlError, Counters, Event, Host, Init, IoError, IoResult, LegIo,
    LegOp, LegState, LegStatus, ParentIo, ParentOp, ReadPolicy, Status, Token, MAX_LEGS,
};
use std::collections::{BTreeMap, VecDeque};

/// Bugs that can be planted in the reference core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefBug {
    /// A write parent completes when all but one of its leg writes reported.
    EarlyCompletion,
    /// Overlapping writes do not wait for each other (legs may see them in different orders).
    NoWriteOrdering,
    /// A parent flush is sent to the first active leg only.
    FlushOneLeg,
}

enum IoCtx {
    Parent {
        h: u64,
        leg: usize,
    },
    ResyncRead,
    ResyncWrite,
    /// The rebuilt leg's copies are made durable before it counts as in sync.
    ResyncFlush {
        leg: usize,
        epoch: u64,
    },
}

struct PCtx {
    io: ParentIo,
    outstanding: u32,
    any_ok: bool,
    last_err: IoError,
    tried: Vec<bool>,
    completed: bool,
}

const RESYNC_OWNER: u64 = u64::MAX;

pub struct RefCore {
    cfg: Config,
    legs: Vec<LegState>,
    /// Rebuilding legs: sectors below this are copied.
    pos: Vec<u64>,
    next_token: u64,
    ios: BTreeMap<u64, IoCtx>,
    parents: BTreeMap<u64, PCtx>,
    /// Accepted writes/discards waiting for their range.
    waiting: VecDeque<u64>,
    /// Held ranges: (start, end, owner).
    locks: Vec<(u64, u64, u64)>,
    /// The copy in flight: (target leg, start, end, target's epoch when it began).
    resync: Option<(usize, u64, u64, u64)>,
    /// Bumped when a leg is (re)added, so a copy begun for its previous life is not counted.
    epoch: Vec<u64>,
    rr: usize,
    /// A rebuilt leg's final flush is in flight.
    flushing: bool,
    want_ready: bool,
    counters: Counters,
    pub bug: Option<RefBug>,
}

impl RefCore {
    pub fn new(cfg: &Config, init: &Init<'_>) -> RefCore {
        let n = usize::from(cfg.legs);
        RefCore {
            cfg: *cfg,
            legs: init.legs[..n].iter().map(|l| l.state).collect(),
            pos: vec![0; n],
            next_token: 1,
            ios: BTreeMap::new(),
            parents: BTreeMap::new(),
            waiting: VecDeque::new(),
            locks: Vec::new(),
            resync: None,
            epoch: vec![0; n],
            rr: 0,
            flushing: false,
            want_ready: false,
            counters: Counters::default(),
            bug: None,
        }
    }

    // One argument per field of the leg I/O, as the host receives it.
    #[allow(clippy::too_many_arguments)]
    fn issue<H: Host>(
        &mut self,
        host: &mut H,
        leg: usize,
        op: LegOp,
        sector: u64,
        count: u32,
        fua: bool,
        buf: BufRef<'_>,
        ctx: IoCtx,
    ) {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.ios.insert(token.0, ctx);
        host.issue(&LegIo {
            token,
            leg: leg as u8,
            op,
            sector,
            count,
            fua,
            buf,
        });
    }

    fn lose_leg<H: Host>(&mut self, host: &mut H, leg: usize, error: IoError) {
        if !self.legs[leg].is_active() {
            return;
        }
        let state = if error == IoError::Gone {
            LegState::Missing
        } else {
            LegState::Failed
        };
        self.legs[leg] = state;
        host.event(Event::LegFailed {
            leg: leg as u8,
            state,
            error,
        });
    }

    fn overlaps(&self, a: u64, b: u64, upto_waiting: usize) -> bool {
        self.locks.iter().any(|&(s, e, _)| s < b && a < e)
            || self.waiting.iter().take(upto_waiting).any(|h| {
                self.parents
                    .get(h)
                    .is_some_and(|p| p.io.sector < b && a < p.io.sector + u64::from(p.io.count))
            })
    }

    fn start_write<H: Host>(&mut self, host: &mut H, h: u64) {
        let Some(p) = self.parents.get(&h) else {
            return;
        };
        let io = p.io;
        if self.bug != Some(RefBug::NoWriteOrdering) {
            self.locks
                .push((io.sector, io.sector + u64::from(io.count), h));
        }
        let active: Vec<usize> = (0..self.legs.len())
            .filter(|&l| self.legs[l].is_active())
            .collect();
        if active.is_empty() {
            self.finish(host, h, Err(IoError::NoLegs));
            return;
        }
        if let Some(p) = self.parents.get_mut(&h) {
            p.outstanding = active.len() as u32;
        }
        for l in active {
            let (op, buf) = match io.op {
                ParentOp::Discard => (LegOp::Discard, BufRef::None),
                _ => (
                    LegOp::Write,
                    BufRef::Parent {
                        buf: io.buf,
                        offset: 0,
                    },
                ),
            };
            self.issue(
                host,
                l,
                op,
                io.sector,
                io.count,
                io.fua,
                buf,
                IoCtx::Parent { h, leg: l },
            );
        }
    }

    fn start_waiting<H: Host>(&mut self, host: &mut H) {
        let mut i = 0;
        while i < self.waiting.len() {
            let h = self.waiting[i];
            let Some(p) = self.parents.get(&h) else {
                self.waiting.remove(i);
                continue;
            };
            let (a, b) = (p.io.sector, p.io.sector + u64::from(p.io.count));
            if self.overlaps(a, b, i) {
                i += 1;
                continue;
            }
            self.waiting.remove(i);
            self.start_write(host, h);
        }
    }

    fn read_leg(&mut self, tried: &[bool]) -> Option<usize> {
        let n = self.legs.len();
        let pick = match self.cfg.read_policy {
            ReadPolicy::Prefer { leg } => Some(usize::from(leg)),
            _ => None,
        };
        if let Some(l) = pick.filter(|&l| l < n && self.legs[l] == LegState::InSync && !tried[l]) {
            return Some(l);
        }
        for k in 0..n {
            let l = (self.rr + k) % n;
            if self.legs[l] == LegState::InSync && !tried[l] {
                self.rr = (l + 1) % n;
                return Some(l);
            }
        }
        None
    }

    fn start_read<H: Host>(&mut self, host: &mut H, h: u64) {
        let Some(p) = self.parents.get(&h) else {
            return;
        };
        let (io, tried) = (p.io, p.tried.clone());
        match self.read_leg(&tried) {
            Some(l) => {
                if let Some(p) = self.parents.get_mut(&h) {
                    p.outstanding = 1;
                    p.tried[l] = true;
                }
                self.issue(
                    host,
                    l,
                    LegOp::Read,
                    io.sector,
                    io.count,
                    false,
                    BufRef::Parent {
                        buf: io.buf,
                        offset: 0,
                    },
                    IoCtx::Parent { h, leg: l },
                );
            }
            None => {
                let e = self.parents.get(&h).map_or(IoError::NoLegs, |p| p.last_err);
                self.finish(host, h, Err(e));
            }
        }
    }

    fn finish<H: Host>(&mut self, host: &mut H, h: u64, result: IoResult) {
        let Some(p) = self.parents.get_mut(&h) else {
            return;
        };
        if p.completed {
            return;
        }
        p.completed = true;
        let op = p.io.op;
        match op {
            ParentOp::Read => self.counters.parent_reads += 1,
            ParentOp::Write => self.counters.parent_writes += 1,
            ParentOp::Flush => self.counters.parent_flushes += 1,
            ParentOp::Discard => self.counters.parent_discards += 1,
        }
        if result.is_err() {
            self.counters.parent_errors += 1;
        }
        host.complete(h, result);
        if self.want_ready {
            self.want_ready = false;
            host.event(Event::Ready);
        }
    }

    fn release(&mut self, owner: u64) {
        self.locks.retain(|&(_, _, o)| o != owner);
    }

    fn kick_resync<H: Host>(&mut self, host: &mut H) {
        if self.resync.is_some() {
            return;
        }
        let Some(t) = (0..self.legs.len()).find(|&l| self.legs[l] == LegState::Rebuilding) else {
            return;
        };
        if self.pos[t] >= self.cfg.data_sectors {
            if !self.flushing {
                self.flushing = true;
                let epoch = self.epoch[t];
                self.issue(
                    host,
                    t,
                    LegOp::Flush,
                    0,
                    0,
                    false,
                    BufRef::None,
                    IoCtx::ResyncFlush { leg: t, epoch },
                );
            }
            return;
        }
        let Some(src) = (0..self.legs.len()).find(|&l| self.legs[l] == LegState::InSync) else {
            return;
        };
        let a = self.pos[t];
        let b = (a + u64::from(self.cfg.resync.chunk_sectors)).min(self.cfg.data_sectors);
        if self.overlaps(a, b, self.waiting.len()) {
            return;
        }
        self.locks.push((a, b, RESYNC_OWNER));
        self.resync = Some((t, a, b, self.epoch[t]));
        self.issue(
            host,
            src,
            LegOp::Read,
            a,
            (b - a) as u32,
            false,
            BufRef::Resync { slot: 0, offset: 0 },
            IoCtx::ResyncRead,
        );
    }
}

impl RefCore {
    fn is_idle_now(&self) -> bool {
        self.ios.is_empty() && self.parents.values().all(|p| p.completed)
    }
}

impl<H: Host> Core<H> for RefCore {
    fn submit(&mut self, host: &mut H, io: ParentIo) -> Result<(), Busy> {
        let live = self.parents.values().filter(|p| !p.completed).count();
        if live >= self.cfg.max_parents as usize {
            self.want_ready = true;
            self.counters.busy += 1;
            return Err(Busy);
        }
        self.parents.retain(|_, p| !p.completed);
        let n = self.legs.len();
        self.parents.insert(
            io.handle,
            PCtx {
                io,
                outstanding: 0,
                any_ok: false,
                last_err: IoError::NoLegs,
                tried: vec![false; n],
                completed: false,
            },
        );
        match io.op {
            ParentOp::Read => self.start_read(host, io.handle),
            ParentOp::Write | ParentOp::Discard => {
                let (a, b) = (io.sector, io.sector + u64::from(io.count));
                if self.bug != Some(RefBug::NoWriteOrdering)
                    && self.overlaps(a, b, self.waiting.len())
                {
                    self.waiting.push_back(io.handle);
                } else {
                    self.start_write(host, io.handle);
                }
            }
            ParentOp::Flush => {
                let mut active: Vec<usize> = (0..n).filter(|&l| self.legs[l].is_active()).collect();
                if self.bug == Some(RefBug::FlushOneLeg) {
                    active.truncate(1);
                }
                if active.is_empty() {
                    self.finish(host, io.handle, Err(IoError::NoLegs));
                    return Ok(());
                }
                if let Some(p) = self.parents.get_mut(&io.handle) {
                    p.outstanding = active.len() as u32;
                }
                for l in active {
                    self.issue(
                        host,
                        l,
                        LegOp::Flush,
                        0,
                        0,
                        false,
                        BufRef::None,
                        IoCtx::Parent {
                            h: io.handle,
                            leg: l,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn leg_done(&mut self, host: &mut H, token: Token, result: IoResult) {
        let Some(ctx) = self.ios.remove(&token.0) else {
            return;
        };
        match ctx {
            IoCtx::Parent { h, leg } => {
                let Some(p) = self.parents.get_mut(&h) else {
                    return;
                };
                p.outstanding = p.outstanding.saturating_sub(1);
                let op = p.io.op;
                match result {
                    Ok(()) => p.any_ok = true,
                    Err(IoError::NotSupported) if op == ParentOp::Discard => p.any_ok = true,
                    Err(e) => p.last_err = e,
                }
                let (outstanding, any_ok, last_err) = (p.outstanding, p.any_ok, p.last_err);
                match (op, result) {
                    (ParentOp::Read, Ok(())) => self.finish(host, h, Ok(())),
                    (ParentOp::Read, Err(e)) => {
                        if e == IoError::Gone {
                            self.lose_leg(host, leg, e);
                        }
                        self.start_read(host, h);
                    }
                    (_, r) => {
                        if let Err(e) = r {
                            if !(op == ParentOp::Discard && e == IoError::NotSupported) {
                                self.lose_leg(host, leg, e);
                            }
                        }
                        let done = outstanding == 0
                            || (self.bug == Some(RefBug::EarlyCompletion)
                                && outstanding == 1
                                && op == ParentOp::Write);
                        if outstanding == 0 {
                            self.release(h);
                        }
                        if done {
                            self.finish(host, h, if any_ok { Ok(()) } else { Err(last_err) });
                        }
                        if outstanding == 0 {
                            self.parents
                                .retain(|_, p| !p.completed || p.outstanding > 0);
                            self.start_waiting(host);
                        }
                    }
                }
            }
            IoCtx::ResyncRead => {
                let Some((t, a, b, ep)) = self.resync else {
                    return;
                };
                match result {
                    Ok(()) if self.legs[t] == LegState::Rebuilding && self.epoch[t] == ep => {
                        self.issue(
                            host,
                            t,
                            LegOp::Write,
                            a,
                            (b - a) as u32,
                            false,
                            BufRef::Resync { slot: 0, offset: 0 },
                            IoCtx::ResyncWrite,
                        );
                    }
                    _ => {
                        self.resync = None;
                        self.release(RESYNC_OWNER);
                        self.start_waiting(host);
                    }
                }
            }
            IoCtx::ResyncFlush { leg, epoch } => {
                self.flushing = false;
                if self.epoch[leg] == epoch && self.legs[leg] == LegState::Rebuilding {
                    match result {
                        Ok(()) => {
                            self.legs[leg] = LegState::InSync;
                            host.event(Event::LegInSync { leg: leg as u8 });
                        }
                        Err(e) => self.lose_leg(host, leg, e),
                    }
                }
                self.kick_resync(host);
            }
            IoCtx::ResyncWrite => {
                let Some((t, a, b, ep)) = self.resync.take() else {
                    return;
                };
                let current = self.epoch[t] == ep && self.legs[t] == LegState::Rebuilding;
                match result {
                    Ok(()) if current => {
                        self.pos[t] = b;
                        self.counters.resync_sectors += b - a;
                    }
                    Ok(()) => {}
                    Err(e) if current => self.lose_leg(host, t, e),
                    Err(_) => {}
                }
                self.release(RESYNC_OWNER);
                self.start_waiting(host);
                self.kick_resync(host);
            }
        }
    }

    fn tick(&mut self, host: &mut H) {
        self.kick_resync(host);
    }

    fn status(&self) -> Status {
        let mut leg = [LegStatus::EMPTY; MAX_LEGS];
        let regions = self.cfg.data_sectors.div_ceil(self.cfg.region_sectors);
        for (i, l) in self.legs.iter().enumerate() {
            leg[i].state = *l;
            leg[i].regions_out_of_sync = match l {
                LegState::InSync => 0,
                LegState::Rebuilding => regions - self.pos[i] / self.cfg.region_sectors,
                _ => regions,
            };
        }
        Status {
            legs: self.cfg.legs,
            leg,
            authoritative: self
                .legs
                .iter()
                .position(|&l| l == LegState::InSync)
                .unwrap_or(0) as u8,
            generation: 1,
            regions,
            regions_in_sync: if self.legs.iter().all(|&l| l == LegState::InSync) {
                regions
            } else {
                0
            },
            dirty_regions: 0,
            inflight_parents: self.parents.values().filter(|p| !p.completed).count() as u32,
            inflight_leg_ios: self.ios.len() as u32,
            counters: self.counters,
            read_policy: self.cfg.read_policy,
        }
    }

    fn is_idle(&self) -> bool {
        self.ios.is_empty() && self.parents.values().all(|p| p.completed)
    }

    fn set_read_policy(&mut self, policy: ReadPolicy) -> bool {
        self.cfg.read_policy = policy;
        true
    }

    fn fail_leg(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        let l = usize::from(leg);
        if l >= self.legs.len() {
            return Err(ControlError::NoSuchLeg);
        }
        if !self.legs[l].is_active() {
            return Err(ControlError::WrongState);
        }
        if !(0..self.legs.len()).any(|k| k != l && self.legs[k] == LegState::InSync) {
            return Err(ControlError::LastLeg);
        }
        self.lose_leg(host, l, IoError::Io);
        Ok(())
    }

    fn remove_leg(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        self.fail_leg(host, leg)?;
        self.legs[usize::from(leg)] = LegState::Empty;
        Ok(())
    }

    fn shutdown(&mut self, host: &mut H) {
        // No metadata to make clean: done once nothing is in flight (the simulator calls this
        // only when quiet).
        if self.is_idle_now() {
            host.event(Event::ShutdownDone);
        }
    }

    fn add_leg(
        &mut self,
        host: &mut H,
        leg: u8,
        _uuid: [u8; 16],
        _sectors: u64,
        _incremental: bool,
    ) -> Result<(), ControlError> {
        let l = usize::from(leg);
        if l >= self.legs.len() {
            return Err(ControlError::NoSuchLeg);
        }
        if self.legs[l].is_active() {
            return Err(ControlError::WrongState);
        }
        self.legs[l] = LegState::Rebuilding;
        self.pos[l] = 0;
        self.epoch[l] += 1;
        self.kick_resync(host);
        Ok(())
    }
}
