//! The simulated host: legs, parents and their buffers, leg I/Os in flight, and the checks the
//! reference model makes at every call the core makes (issue, complete, event) and at every
//! delivery. The first violation is recorded in `failure`; the runner stops there.
use crate::core::Core;
use crate::leg::Leg;
use crate::model::Model;
use crate::pattern::{self, ANY};
use dmirror::{
    BufRef, Busy, Config, Event, Host, IoError, IoResult, LegIo, LegOp, LegState, ParentHandle,
    ParentIo, ParentOp, Status, Token,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Bugs the simulator can plant on the host side to prove the model notices them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// Swallow one leg write's completion and report its parent complete anyway.
    EarlyCompletion,
    /// One leg acknowledges a write without applying it (the leg keeps older data).
    StaleLegWrite,
    /// One leg acknowledges flushes but loses a cached user write each time (crash mode).
    LoseFlushedWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PState {
    Queued,
    InFlight,
}

pub struct Parent {
    pub io: ParentIo,
    pub data: Vec<u8>,
    pub state: PState,
    pub accepted_at: u64,
    /// Leg I/Os issued on this parent's buffer and not yet reported.
    pub outstanding: u32,
    /// Reads: per sector, the values it may return.
    pub allowed: Vec<Vec<u64>>,
    /// Writes: per leg, per sector, written successfully for this parent.
    pub covered: Vec<Vec<bool>>,
    /// Writes: successful leg writes (leg, token), for the FUA check.
    pub leg_writes: Vec<(u8, u64)>,
    /// Legs where a leg I/O for this parent failed.
    pub failed_legs: Vec<u8>,
    /// Flushes in crash mode: `possible` when the flush was accepted.
    pub snap: Option<Vec<Vec<u64>>>,
}

#[derive(Clone, Debug)]
pub enum Buf {
    None,
    Parent { buf: u64, offset: u64 },
    Resync { slot: u32, offset: u64 },
    Meta { ptr: *const u8, bytes: Vec<u8> },
}

pub struct Pending {
    pub leg: u8,
    pub op: LegOp,
    pub sector: u64,
    pub count: u32,
    pub fua: bool,
    pub buf: Buf,
    /// For flushes: what the leg's cache held when it was issued.
    pub mark: u64,
    /// Never delivered (EarlyCompletion mutant).
    pub swallowed: bool,
    /// When it was issued (`now`).
    pub issued_at: u64,
}

/// What the model knows about a leg slot beyond its data.
#[derive(Clone, Debug, Default)]
pub struct LegTrack {
    /// The core said it left service (event or control call): no data I/O may go to it.
    pub fenced: bool,
    /// Since when the core reports it in sync everywhere.
    pub insync_since: Option<u64>,
    /// Since when it is in sync and fault-free (a read or write may fail only if no leg was).
    pub trusted_since: Option<u64>,
    /// Last time it left service.
    pub left_at: Option<u64>,
    /// A write/flush on it failed, or it was gone: the core must take it out of service.
    pub must_be_out: bool,
    pub uuid: [u8; 16],
    /// The device has no metadata of this mirror (it was left out of assembly): add it in full.
    pub force_full: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub busy: u64,
}

pub struct World {
    pub cfg: Config,
    pub ss: usize,
    pub leg_sectors: u64,
    pub legs: Vec<Leg>,
    pub track: Vec<LegTrack>,
    pub parents: BTreeMap<u64, Parent>,
    pub done: BTreeSet<u64>,
    pub inflight_reads: BTreeSet<u64>,
    pub fifo: VecDeque<u64>,
    pub pending: BTreeMap<u64, Pending>,
    pub resync_bufs: Vec<Vec<u8>>,
    pub model: Model,
    pub crash_mode: bool,
    pub now: u64,
    /// Entry-point calls into the core (crash points count these).
    pub calls: u64,
    pub next_handle: u64,
    pub retry: bool,
    pub expect: Expect,
    pub failure: Option<String>,
    pub trace: bool,
    pub mutant: Option<Mutant>,
    pub mutant_fired: bool,
    pub stats: Stats,
    /// Check that metadata buffers are unchanged until their write completes and that no
    /// superblock slot is written blank (on by default; `--no-meta-check` explores past them).
    pub meta_check: bool,
    /// `Event::ShutdownDone` arrived.
    pub shutdown_done: bool,
    /// The last token delivered (replayed as a stale completion now and then).
    pub last_delivered: Option<u64>,
    /// The disk log device (`LogKind::Device`): the core's `LOG_DEV` I/O goes here.
    pub logdev: Option<Leg>,
    /// `Event::LogFailed` arrived: the core may now fail writes that depend on a leg-state change
    /// it could not record, and the next assembly must resync in full (`sync`).
    pub log_failed: bool,
    /// The administrator replaced a failed log with a new, blank one (see
    /// `crash::reassemble_log`); until that log holds a label, another reload does the same.
    pub log_replaced: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub parents: u64,
    pub leg_ios: u64,
    pub meta_writes: u64,
    pub resync_ios: u64,
    pub faults: u64,
    pub crashes: u64,
    /// Calls the core made to the host (issue, complete, event).
    pub host_calls: u64,
}

fn range(sector: u64, count: u32) -> std::ops::Range<u64> {
    sector..sector + u64::from(count)
}

impl World {
    pub fn new(
        cfg: Config,
        leg_sectors: u64,
        legs: Vec<Leg>,
        crash_mode: bool,
        trace: bool,
        mutant: Option<Mutant>,
    ) -> World {
        let n = legs.len();
        let ss = cfg.sector_size as usize;
        let track = (0..n)
            .map(|i| {
                // Non-zero and distinct: the on-disk format rejects a zero leg UUID.
                let mut uuid = *b"dmsim-leg-00-000";
                uuid[11] = b'0' + i as u8;
                LegTrack {
                    uuid,
                    ..LegTrack::default()
                }
            })
            .collect();
        World {
            ss,
            leg_sectors,
            legs,
            track,
            parents: BTreeMap::new(),
            done: BTreeSet::new(),
            inflight_reads: BTreeSet::new(),
            fifo: VecDeque::new(),
            pending: BTreeMap::new(),
            resync_bufs: (0..cfg.resync.max_inflight)
                .map(|_| vec![0u8; cfg.resync.chunk_sectors as usize * ss])
                .collect(),
            model: Model::new(cfg.data_sectors),
            crash_mode,
            now: 0,
            calls: 0,
            next_handle: 1,
            retry: false,
            expect: Expect::default(),
            failure: None,
            trace,
            mutant,
            mutant_fired: false,
            stats: Stats::default(),
            meta_check: true,
            shutdown_done: false,
            last_delivered: None,
            logdev: None,
            log_failed: false,
            log_replaced: false,
            cfg,
        }
    }

    pub fn fail(&mut self, msg: String) {
        if self.trace {
            println!("{:>7} !! VIOLATION: {msg}", self.now);
        }
        if self.failure.is_none() {
            self.failure = Some(format!("t={}: {msg}", self.now));
        }
    }

    pub fn log(&self, f: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>7} {}", self.now, f());
        }
    }

    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    // ----- parents -----------------------------------------------------------------------------

    /// A new parent I/O from the upper layer; queued in the host FIFO.
    pub fn new_parent(&mut self, op: ParentOp, sector: u64, count: u32, fua: bool) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        let len = if matches!(op, ParentOp::Read | ParentOp::Write) {
            count as usize * self.ss
        } else {
            0
        };
        let mut data = vec![0xEEu8; len];
        if op == ParentOp::Write {
            for i in 0..count as usize {
                pattern::encode(
                    &mut data[i * self.ss..(i + 1) * self.ss],
                    h,
                    sector + i as u64,
                );
            }
        }
        let io = ParentIo {
            handle: h,
            op,
            sector,
            count,
            fua,
            buf: h,
        };
        self.parents.insert(
            h,
            Parent {
                io,
                data,
                state: PState::Queued,
                accepted_at: 0,
                outstanding: 0,
                allowed: Vec::new(),
                covered: Vec::new(),
                leg_writes: Vec::new(),
                failed_legs: Vec::new(),
                snap: None,
            },
        );
        self.fifo.push_back(h);
        self.stats.parents += 1;
        h
    }

    fn accept(&mut self, h: u64) {
        let now = self.now;
        let nlegs = self.legs.len();
        let crash = self.crash_mode;
        let Some(p) = self.parents.get(&h) else {
            return;
        };
        let io = p.io;
        let mut allowed = Vec::new();
        let mut snap = None;
        match io.op {
            ParentOp::Read => {
                allowed = range(io.sector, io.count)
                    .map(|s| self.model.read_allowed(s as usize))
                    .collect();
                self.inflight_reads.insert(h);
            }
            ParentOp::Write | ParentOp::Discard => {
                self.model
                    .write_accepted(h, io.sector, io.count, io.op == ParentOp::Discard, now);
                let v = if io.op == ParentOp::Discard { ANY } else { h };
                for r in self.inflight_reads.clone() {
                    let Some(rp) = self.parents.get_mut(&r) else {
                        continue;
                    };
                    for s in range(io.sector, io.count) {
                        if range(rp.io.sector, rp.io.count).contains(&s) {
                            rp.allowed[(s - rp.io.sector) as usize].push(v);
                        }
                    }
                }
            }
            ParentOp::Flush => {
                if crash {
                    snap = Some(self.model.snapshot());
                }
            }
        }
        let Some(p) = self.parents.get_mut(&h) else {
            return;
        };
        p.state = PState::InFlight;
        p.accepted_at = now;
        p.allowed = allowed;
        p.snap = snap;
        if io.op == ParentOp::Write {
            p.covered = vec![vec![false; io.count as usize]; nlegs];
        }
    }

    fn unaccept(&mut self, h: u64) {
        let Some(p) = self.parents.get_mut(&h) else {
            return;
        };
        p.state = PState::Queued;
        let op = p.io.op;
        self.inflight_reads.remove(&h);
        if matches!(op, ParentOp::Write | ParentOp::Discard) {
            self.model.write_unaccepted(h);
        }
    }

    /// Submit queued parents in order until the core answers Busy.
    pub fn pump<C: Core<World>>(&mut self, core: &mut C) {
        let mut guard = 0;
        while let Some(&h) = self.fifo.front() {
            if self.failed() {
                return;
            }
            let Some(io) = self.parents.get(&h).map(|p| p.io) else {
                self.fifo.pop_front();
                continue;
            };
            self.now += 1;
            self.calls += 1;
            self.accept(h);
            self.retry = false;
            self.log(|| {
                format!(
                    "submit h{h} {:?} {}+{} fua={}",
                    io.op, io.sector, io.count, io.fua
                )
            });
            match core.submit(self, io) {
                Ok(()) => {
                    self.fifo.pop_front();
                }
                Err(Busy) => {
                    self.expect.busy += 1;
                    self.log(|| format!("  -> Busy (h{h} stays queued)"));
                    if self.done.contains(&h) {
                        self.fail(format!(
                            "submit of h{h} answered Busy but the parent was completed"
                        ));
                        return;
                    }
                    self.unaccept(h);
                    guard += 1;
                    if !self.retry || guard > 4 {
                        break;
                    }
                }
            }
        }
    }

    /// Parents accepted and not completed.
    pub fn parents_in_flight(&self) -> usize {
        self.parents
            .values()
            .filter(|p| p.state == PState::InFlight)
            .count()
    }

    // ----- leg I/O delivery --------------------------------------------------------------------

    /// Tokens that can be delivered.
    pub fn deliverable(&self) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| !p.swallowed)
            .map(|(&t, _)| t)
            .collect()
    }

    /// The bytes a pending write would put on its leg right now.
    pub fn pending_source(&mut self, token: u64) -> Option<Vec<u8>> {
        let p = self.pending.remove(&token)?;
        let r = self.source_bytes(&p);
        self.pending.insert(token, p);
        r
    }

    fn source_bytes(&mut self, p: &Pending) -> Option<Vec<u8>> {
        let len = p.count as usize * self.ss;
        match &p.buf {
            Buf::Parent { buf, offset } => {
                let parent = self.parents.get(buf)?;
                parent
                    .data
                    .get(*offset as usize..*offset as usize + len)
                    .map(<[u8]>::to_vec)
            }
            Buf::Resync { slot, offset } => self
                .resync_bufs
                .get(*slot as usize)?
                .get(*offset as usize..*offset as usize + len)
                .map(<[u8]>::to_vec),
            Buf::Meta { bytes, .. } => Some(bytes.clone()),
            Buf::None => None,
        }
    }

    /// Complete leg I/O `token` as the simulated device would, and tell the core.
    pub fn deliver<C: Core<World>>(&mut self, core: &mut C, token: u64) {
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        self.now += 1;
        if p.leg == dmirror::LOG_DEV {
            self.deliver_log(core, token, p);
            return;
        }
        let leg = p.leg as usize;
        let now = self.now;
        let parent = match p.buf {
            Buf::Parent { buf, .. } => Some(buf),
            _ => None,
        };
        // The EarlyCompletion mutant: pretend the parent completed while this leg write is lost.
        if self.mutant == Some(Mutant::EarlyCompletion)
            && !self.mutant_fired
            && p.op == LegOp::Write
            && parent.is_some_and(|b| {
                self.parents
                    .get(&b)
                    .is_some_and(|q| q.io.op == ParentOp::Write && q.outstanding >= 2)
            })
        {
            self.mutant_fired = true;
            let h = parent.unwrap_or(0);
            self.log(|| format!("MUTANT: swallow t{token} and complete h{h} early"));
            self.pending.insert(
                token,
                Pending {
                    swallowed: true,
                    ..p
                },
            );
            self.complete(h, Ok(()));
            return;
        }
        let result: IoResult = match p.op {
            LegOp::Read => {
                let r = self.legs[leg].read_result(p.sector, p.count);
                if r.is_ok() {
                    let len = p.count as usize * self.ss;
                    let mut tmp = vec![0u8; len];
                    self.legs[leg].read(p.sector, &mut tmp);
                    let dst = match &p.buf {
                        Buf::Parent { buf, offset } => self
                            .parents
                            .get_mut(buf)
                            .and_then(|q| q.data.get_mut(*offset as usize..*offset as usize + len)),
                        Buf::Resync { slot, offset } => self
                            .resync_bufs
                            .get_mut(*slot as usize)
                            .and_then(|b| b.get_mut(*offset as usize..*offset as usize + len)),
                        _ => None,
                    };
                    match dst {
                        Some(d) => d.copy_from_slice(&tmp),
                        None => self.fail(format!(
                            "read t{token} lands in a buffer that does not exist: {:?}",
                            p.buf
                        )),
                    }
                }
                r
            }
            LegOp::Write => {
                let r = self.legs[leg].write_result(p.sector, p.count);
                if let (true, Buf::Meta { ptr, bytes }) = (self.meta_check, &p.buf) {
                    // SAFETY: the core promises the slice stays valid and unchanged until completion;
                    // this reads it back to hold it to that promise.
                    let now_bytes = unsafe { std::slice::from_raw_parts(*ptr, bytes.len()) };
                    if now_bytes != &bytes[..] {
                        self.fail(format!(
                            "metadata buffer of t{token} changed before its write completed"
                        ));
                    }
                }
                if r.is_ok() {
                    match self.source_bytes(&p) {
                        Some(data) => {
                            let stale = self.mutant == Some(Mutant::StaleLegWrite)
                                && !self.mutant_fired
                                && leg == self.legs.len() - 1
                                && parent.is_some()
                                && (0..p.count as u64).any(|i| {
                                    self.legs[leg].sector(p.sector + i)
                                        != &data[i as usize * self.ss..(i as usize + 1) * self.ss]
                                });
                            if stale {
                                self.mutant_fired = true;
                                self.log(|| format!("MUTANT: leg {leg} drops write t{token} but reports success"));
                            } else {
                                let tag = if parent.is_some() { token } else { 0 };
                                self.legs[leg].write(p.sector, &data, p.fua, tag, now);
                            }
                        }
                        None => self.fail(format!(
                            "write t{token} takes its data from a buffer that does not exist: {:?}",
                            p.buf
                        )),
                    }
                }
                r
            }
            LegOp::Flush => {
                let r = self.legs[leg].flush_result();
                if r.is_ok() {
                    self.legs[leg].flush_done(p.mark);
                }
                r
            }
            LegOp::Discard => {
                if self.legs[leg].faults.gone {
                    Err(IoError::Gone)
                } else if !self.legs[leg].discard_supported {
                    Err(IoError::NotSupported)
                } else {
                    let zeros = vec![0u8; p.count as usize * self.ss];
                    self.legs[leg].write(p.sector, &zeros, false, 0, now);
                    Ok(())
                }
            }
        };
        // An error obliges the core to take the leg out only if the I/O was issued to the leg
        // as it is now: one issued before the leg last left service belongs to its previous
        // time in the mirror (a re-added leg is rebuilt, and the core ignores such errors).
        let current = self.track[leg].left_at.is_none_or(|l| l < p.issued_at);
        match (p.op, result) {
            (_, Err(IoError::Gone)) | (LegOp::Write | LegOp::Flush, Err(IoError::Io))
                if current =>
            {
                self.track[leg].must_be_out = true
            }
            _ => {}
        }
        if let Some(b) = parent {
            if let Some(q) = self.parents.get_mut(&b) {
                q.outstanding = q.outstanding.saturating_sub(1);
                match result {
                    Ok(()) if p.op == LegOp::Write && q.io.op == ParentOp::Write => {
                        q.leg_writes.push((p.leg, token));
                        for s in range(p.sector, p.count) {
                            if let Some(c) = s
                                .checked_sub(q.io.sector)
                                .and_then(|i| q.covered[leg].get_mut(i as usize))
                            {
                                *c = true;
                            }
                        }
                    }
                    Ok(()) => {}
                    Err(_) => q.failed_legs.push(p.leg),
                }
            }
        }
        self.log(|| {
            format!(
                "done  t{token} leg{leg} {:?} {}+{} -> {result:?}",
                p.op, p.sector, p.count
            )
        });
        self.calls += 1;
        self.last_delivered = Some(token);
        core.leg_done(self, Token(token), result);
    }

    /// Complete an I/O to the disk log device (metadata writes and flushes only).
    fn deliver_log<C: Core<World>>(&mut self, core: &mut C, token: u64, p: Pending) {
        let now = self.now;
        let data = self.source_bytes(&p);
        if let (true, Buf::Meta { ptr, bytes }) = (self.meta_check, &p.buf) {
            // SAFETY: the core promises the slice stays valid and unchanged until completion.
            let now_bytes = unsafe { std::slice::from_raw_parts(*ptr, bytes.len()) };
            if now_bytes != &bytes[..] {
                self.fail(format!(
                    "log metadata buffer of t{token} changed before its write completed"
                ));
            }
        }
        let Some(dev) = self.logdev.as_mut() else {
            self.fail(format!("t{token} to the log device, but there is none"));
            return;
        };
        let result = match p.op {
            LegOp::Write => {
                let r = dev.write_result(p.sector, p.count);
                if r.is_ok() {
                    if let Some(d) = data {
                        dev.write(p.sector, &d, p.fua, 0, now);
                    }
                }
                r
            }
            LegOp::Flush => {
                let r = dev.flush_result();
                if r.is_ok() {
                    dev.flush_done(p.mark);
                }
                r
            }
            _ => Err(IoError::Io),
        };
        self.log(|| {
            format!(
                "done  t{token} log {:?} {}+{} -> {result:?}",
                p.op, p.sector, p.count
            )
        });
        self.calls += 1;
        self.last_delivered = Some(token);
        core.leg_done(self, Token(token), result);
    }

    /// Report a leg I/O the core already had reported (a buggy device completing twice) or one
    /// it never issued: the core must ignore it — no completion, no issue, no event.
    pub fn deliver_stale<C: Core<World>>(&mut self, core: &mut C, forged: u64) {
        let token = match self.last_delivered {
            Some(t) if !self.pending.contains_key(&t) && forged.is_multiple_of(2) => t,
            _ => forged | 1 << 63,
        };
        if self.pending.contains_key(&token) {
            return;
        }
        self.now += 1;
        self.calls += 1;
        self.log(|| format!("done  t{token} (stale or forged) -> Ok(())"));
        let before = self.stats.host_calls;
        core.leg_done(self, Token(token), Ok(()));
        if self.stats.host_calls != before {
            self.fail(format!(
                "a stale/forged completion of t{token} was not ignored: the core made {} host calls",
                self.stats.host_calls - before
            ));
        }
    }

    // ----- checks ------------------------------------------------------------------------------

    /// Poll the core's status after a step: leg states feed the model's notion of trust.
    pub fn observe(&mut self, st: &Status) {
        if usize::from(st.legs) != self.legs.len() {
            self.fail(format!(
                "status reports {} legs, the mirror has {}",
                st.legs,
                self.legs.len()
            ));
            return;
        }
        for i in 0..self.legs.len() {
            let ls = st.leg[i];
            let insync = ls.state == LegState::InSync && ls.regions_out_of_sync == 0;
            let t = &mut self.track[i];
            if insync {
                t.insync_since.get_or_insert(self.now);
            } else {
                t.insync_since = None;
            }
            if insync && !self.legs[i].faults.any() {
                t.trusted_since.get_or_insert(self.now);
            } else {
                t.trusted_since = None;
            }
            if t.fenced && ls.state.is_active() {
                self.fail(format!(
                    "leg {i} left service but status says {:?}",
                    ls.state
                ));
            }
        }
    }

    /// Was some leg trusted for the whole life of a parent accepted at `since`?
    fn trusted_throughout(&self, since: u64) -> Option<usize> {
        (0..self.legs.len()).find(|&i| self.track[i].trusted_since.is_some_and(|t| t <= since))
    }

    /// Legs in sync since before `since` (as far as the status polls saw).
    fn legs_insync(&self, since: u64) -> Vec<usize> {
        (0..self.legs.len())
            .filter(|&i| self.track[i].insync_since.is_some_and(|x| x <= since))
            .collect()
    }

    /// Legs that must have received a parent accepted at `since`: in sync since before it, and
    /// not out of service since.
    fn legs_bound(&self, since: u64) -> Vec<usize> {
        self.legs_insync(since)
            .into_iter()
            .filter(|&i| self.track[i].left_at.is_none_or(|l| l < since))
            .collect()
    }

    /// Once nothing is in flight: in-sync legs identical, each sector holding a possible value;
    /// legs that had write errors are out of service.
    pub fn check_quiet(&mut self, st: &Status, full: bool) {
        let in_flight = self.parents_in_flight();
        if !self.pending.is_empty() && full {
            self.fail(format!(
                "quiet check with {} leg I/Os still pending",
                self.pending.len()
            ));
            return;
        }
        if in_flight != 0 || !self.fifo.is_empty() {
            self.fail(format!(
                "quiet check with {in_flight} parents in flight and {} queued",
                self.fifo.len()
            ));
            return;
        }
        for i in 0..self.legs.len() {
            if self.track[i].must_be_out && st.leg[i].state.is_active() {
                self.fail(format!(
                    "leg {i} had a write/flush error or vanished, but is still {:?}",
                    st.leg[i].state
                ));
                return;
            }
        }
        let insync: Vec<usize> = (0..self.legs.len())
            .filter(|&i| st.leg[i].state == LegState::InSync && st.leg[i].regions_out_of_sync == 0)
            .collect();
        for s in 0..self.cfg.data_sectors {
            let poss = self.model.possible_ids(s as usize);
            if poss.contains(&ANY) {
                continue;
            }
            let Some((&f, rest)) = insync.split_first() else {
                break;
            };
            let bytes = self.legs[f].sector(s);
            let ok = pattern::decode(bytes).is_some_and(|(id, at)| at == s && poss.contains(&id));
            if !ok {
                let d = pattern::describe(bytes);
                self.fail(format!(
                    "quiet: leg {f} sector {s} holds {d}, possible {poss:?}"
                ));
                return;
            }
            for &l in rest {
                if self.legs[l].sector(s) != bytes {
                    let (a, b) = (
                        pattern::describe(bytes),
                        pattern::describe(self.legs[l].sector(s)),
                    );
                    self.fail(format!(
                        "quiet: in-sync legs {f} and {l} differ at sector {s}: {a} vs {b}"
                    ));
                    return;
                }
            }
        }
        if full {
            let c = st.counters;
            let got = Expect {
                reads: c.parent_reads,
                writes: c.parent_writes,
                flushes: c.parent_flushes,
                discards: c.parent_discards,
                busy: c.busy,
            };
            if got != self.expect {
                self.fail(format!("counters {got:?}, expected {:?}", self.expect));
            }
            if st.inflight_parents != 0 || st.inflight_leg_ios != 0 {
                self.fail(format!(
                    "quiet but status shows {} parents, {} leg I/Os in flight",
                    st.inflight_parents, st.inflight_leg_ios
                ));
            }
        }
    }

    fn check_read(&mut self, h: u64, result: IoResult) {
        let Some(p) = self.parents.get(&h) else {
            return;
        };
        let (io, since) = (p.io, p.accepted_at);
        match result {
            Ok(()) => {
                for i in 0..io.count as usize {
                    let s = io.sector + i as u64;
                    let bytes = &p.data[i * self.ss..(i + 1) * self.ss];
                    let allowed = &p.allowed[i];
                    if allowed.contains(&ANY) {
                        continue;
                    }
                    let ok = pattern::decode(bytes)
                        .is_some_and(|(id, at)| at == s && allowed.contains(&id));
                    if !ok {
                        let msg = format!(
                            "read h{h} ({}+{}) sector {s} returned {}, allowed {allowed:?}",
                            io.sector,
                            io.count,
                            pattern::describe(bytes)
                        );
                        self.fail(msg);
                        return;
                    }
                }
            }
            Err(e) => {
                if let Some(l) = self.trusted_throughout(since) {
                    self.fail(format!(
                        "read h{h} failed with {e:?} though leg {l} was in sync and healthy"
                    ));
                }
            }
        }
    }

    fn check_write(&mut self, h: u64, result: IoResult) {
        let Some(p) = self.parents.get(&h) else {
            return;
        };
        let (io, since) = (p.io, p.accepted_at);
        let discard = io.op == ParentOp::Discard;
        match result {
            Ok(()) | Err(IoError::NotSupported) if discard => {}
            Ok(()) => {
                for l in self.legs_insync(since) {
                    if p.failed_legs.contains(&(l as u8)) {
                        if !self.track[l].fenced {
                            self.fail(format!(
                                "write h{h} completed before the failure of leg {l} was reported"
                            ));
                            return;
                        }
                        continue;
                    }
                    if self.track[l].left_at.is_some_and(|t| t >= since) {
                        continue;
                    }
                    if let Some(i) = p.covered[l].iter().position(|&c| !c) {
                        self.fail(format!(
                            "write h{h} ({}+{}) completed but in-sync leg {l} never got sector {}",
                            io.sector,
                            io.count,
                            io.sector + i as u64
                        ));
                        return;
                    }
                }
                if io.fua {
                    for &(l, t) in &p.leg_writes {
                        if self.legs[usize::from(l)].is_cached(t) {
                            self.fail(format!(
                                "FUA write h{h} completed but leg {l} only cached it (t{t})"
                            ));
                            return;
                        }
                    }
                }
            }
            // The disk log failed: a write that depends on a leg-state change it could not record
            // fails (docs: devlog.rs), whatever the legs' health.
            Err(_) if self.log_failed => {}
            Err(e) => {
                if let Some(l) = self.trusted_throughout(since) {
                    self.fail(format!(
                        "{:?} h{h} failed with {e:?} though leg {l} was in sync and healthy",
                        io.op
                    ));
                }
            }
        }
        let ok = result.is_ok() || discard;
        self.model.write_completed(h, ok, self.now);
        if ok && io.fua && !discard {
            self.model.fua_durable(io.sector, io.count, self.now);
        }
    }

    fn check_flush(&mut self, h: u64, result: IoResult) {
        let Some(p) = self.parents.get_mut(&h) else {
            return;
        };
        let since = p.accepted_at;
        let snap = p.snap.take();
        match result {
            Ok(()) => {
                for l in self.legs_bound(since) {
                    if let Some(t) = self.legs[l].oldest_cached().filter(|&t| t < since) {
                        self.fail(format!("flush h{h} completed but leg {l} still only caches a write completed at t={t}"));
                        return;
                    }
                }
                if let Some(snap) = snap {
                    self.model.flush_durable(&snap, since);
                }
            }
            Err(_) if self.log_failed => {}
            Err(e) => {
                if let Some(l) = self.trusted_throughout(since) {
                    self.fail(format!(
                        "flush h{h} failed with {e:?} though leg {l} was in sync and healthy"
                    ));
                }
            }
        }
    }

    /// Forget everything in flight (the machine lost power).
    pub fn drop_in_flight(&mut self) {
        self.pending.clear();
        self.fifo.clear();
        self.inflight_reads.clear();
        let hs: Vec<u64> = self.parents.keys().copied().collect();
        for h in hs {
            self.done.insert(h);
        }
        self.parents.clear();
        self.retry = false;
        self.expect = Expect::default();
        for t in &mut self.track {
            t.fenced = false;
            t.insync_since = None;
            t.trusted_since = None;
            t.left_at = None;
            t.must_be_out = false;
        }
    }
}

impl Host for World {
    fn issue(&mut self, io: &LegIo<'_>) {
        self.now += 1;
        self.stats.host_calls += 1;
        self.stats.leg_ios += 1;
        let t = io.token.0;
        let ss = self.ss as u64;
        self.log(|| {
            let b = match io.buf {
                BufRef::Meta(m) => {
                    let head: String = m.iter().take(8).map(|b| format!("{b:02x}")).collect();
                    format!("Meta({} B, {head}..)", m.len())
                }
                other => format!("{other:?}"),
            };
            format!(
                "issue t{t} leg{} {:?} {}+{} fua={} {b}",
                io.leg, io.op, io.sector, io.count, io.fua
            )
        });
        if self.pending.contains_key(&t) {
            self.fail(format!("token t{t} reused while in flight"));
            return;
        }
        if io.leg == dmirror::LOG_DEV {
            self.issue_log(io);
            return;
        }
        let leg = usize::from(io.leg);
        if leg >= self.legs.len() {
            self.fail(format!(
                "I/O t{t} to leg {leg}, the mirror has {}",
                self.legs.len()
            ));
            return;
        }
        let data_io =
            matches!(io.op, LegOp::Read | LegOp::Write) && !matches!(io.buf, BufRef::Meta(_));
        if data_io && self.track[leg].fenced {
            self.fail(format!(
                "{:?} t{t} issued to leg {leg}, which left service",
                io.op
            ));
            return;
        }
        let end = io.sector + u64::from(io.count);
        if matches!(io.op, LegOp::Read | LegOp::Write | LegOp::Discard)
            && (io.count == 0 || end > self.leg_sectors)
        {
            self.fail(format!(
                "{:?} t{t} {}+{} outside leg of {} sectors",
                io.op, io.sector, io.count, self.leg_sectors
            ));
            return;
        }
        let len = u64::from(io.count) * ss;
        let mut parent = None;
        let buf = match io.buf {
            BufRef::None => {
                if matches!(io.op, LegOp::Read | LegOp::Write) {
                    self.fail(format!("{:?} t{t} without a buffer", io.op));
                    return;
                }
                Buf::None
            }
            BufRef::Meta(m) => {
                if io.op != LegOp::Write
                    || m.len() as u64 != len
                    || io.sector < self.cfg.data_sectors
                {
                    self.fail(format!(
                        "metadata {:?} t{t} {}+{} with {} bytes (data area ends at {})",
                        io.op,
                        io.sector,
                        io.count,
                        m.len(),
                        self.cfg.data_sectors
                    ));
                    return;
                }
                self.stats.meta_writes += 1;
                let slots = dmirror::format::slot_positions(self.leg_sectors, self.cfg.sector_size);
                if self.meta_check && slots.contains(&io.sector) && m.iter().all(|&b| b == 0) {
                    self.fail(format!(
                        "t{t}: superblock slot at sector {} of leg {leg} written with all zeros (a blank superblock: the encoding failed?)",
                        io.sector
                    ));
                }
                Buf::Meta {
                    ptr: m.as_ptr(),
                    bytes: m.to_vec(),
                }
            }
            BufRef::Parent { buf, offset } => {
                let Some(p) = self.parents.get_mut(&buf) else {
                    let why = if self.done.contains(&buf) {
                        "already completed"
                    } else {
                        "unknown"
                    };
                    self.fail(format!(
                        "{:?} t{t} uses the buffer of parent h{buf}, {why}",
                        io.op
                    ));
                    return;
                };
                let pio = p.io;
                let fits = offset % ss == 0 && offset + len <= p.data.len() as u64;
                let place = io.sector == pio.sector + offset / ss;
                let kind_ok = match io.op {
                    LegOp::Read => pio.op == ParentOp::Read,
                    LegOp::Write => matches!(pio.op, ParentOp::Write | ParentOp::Read),
                    _ => false,
                };
                if p.state != PState::InFlight
                    || !fits
                    || !place
                    || !kind_ok
                    || end > self.cfg.data_sectors
                {
                    let st = p.state;
                    self.fail(format!(
                        "{:?} t{t} leg{leg} {}+{} on parent h{buf} ({:?} {}+{}, {st:?}) at offset {offset}: wrong buffer use",
                        io.op, io.sector, io.count, pio.op, pio.sector, pio.count
                    ));
                    return;
                }
                p.outstanding += 1;
                parent = Some(buf);
                Buf::Parent { buf, offset }
            }
            BufRef::Resync { slot, offset } => {
                let cap = u64::from(self.cfg.resync.chunk_sectors) * ss;
                if slot >= self.cfg.resync.max_inflight
                    || offset % ss != 0
                    || offset + len > cap
                    || !matches!(io.op, LegOp::Read | LegOp::Write)
                    || end > self.cfg.data_sectors
                {
                    self.fail(format!(
                        "{:?} t{t} {}+{} on resync slot {slot} offset {offset}: out of bounds",
                        io.op, io.sector, io.count
                    ));
                    return;
                }
                self.stats.resync_ios += 1;
                Buf::Resync { slot, offset }
            }
        };
        let _ = parent;
        let mark = if io.op == LegOp::Flush {
            self.legs[leg].flush_mark()
        } else {
            0
        };
        self.pending.insert(
            t,
            Pending {
                leg: io.leg,
                op: io.op,
                sector: io.sector,
                count: io.count,
                fua: io.fua,
                buf,
                mark,
                swallowed: false,
                issued_at: self.now,
            },
        );
    }

    fn complete(&mut self, handle: ParentHandle, result: IoResult) {
        self.complete_parent(handle, result)
    }

    fn event(&mut self, event: Event) {
        self.on_event(event)
    }
}

impl World {
    /// An I/O to the disk log device: only metadata writes (within the log device, never a blank
    /// superblock slot) and flushes, and only with a disk log.
    fn issue_log(&mut self, io: &LegIo<'_>) {
        let t = io.token.0;
        let ss = self.ss as u64;
        let Some((dev_sectors, flush_mark)) =
            self.logdev.as_ref().map(|d| (d.sectors, d.flush_mark()))
        else {
            self.fail(format!(
                "I/O t{t} to the log device of a mirror without one"
            ));
            return;
        };
        let buf = match (io.op, io.buf) {
            (LegOp::Flush, BufRef::None) => Buf::None,
            (LegOp::Write, BufRef::Meta(m))
                if m.len() as u64 == u64::from(io.count) * ss
                    && io.count > 0
                    && io.sector + u64::from(io.count) <= dev_sectors =>
            {
                self.stats.meta_writes += 1;
                let slot = dmirror::format::slot_sectors(self.cfg.sector_size);
                if self.meta_check
                    && (io.sector == 0 || io.sector == slot)
                    && m.iter().all(|&b| b == 0)
                {
                    self.fail(format!(
                        "t{t}: log device superblock slot at sector {} written with all zeros",
                        io.sector
                    ));
                }
                Buf::Meta {
                    ptr: m.as_ptr(),
                    bytes: m.to_vec(),
                }
            }
            _ => {
                self.fail(format!(
                    "log device {:?} t{t} {}+{} with {:?}: only metadata writes and flushes belong there",
                    io.op, io.sector, io.count, io.buf
                ));
                return;
            }
        };
        let mark = if io.op == LegOp::Flush { flush_mark } else { 0 };
        self.pending.insert(
            t,
            Pending {
                leg: io.leg,
                op: io.op,
                sector: io.sector,
                count: io.count,
                fua: io.fua,
                buf,
                mark,
                swallowed: false,
                issued_at: self.now,
            },
        );
    }

    fn complete_parent(&mut self, handle: ParentHandle, result: IoResult) {
        self.now += 1;
        self.stats.host_calls += 1;
        self.log(|| format!("complete h{handle} -> {result:?}"));
        let Some(p) = self.parents.get(&handle) else {
            let why = if self.done.contains(&handle) {
                "completed twice"
            } else {
                "unknown parent"
            };
            self.fail(format!("complete(h{handle}): {why}"));
            return;
        };
        if p.state != PState::InFlight {
            self.fail(format!(
                "complete(h{handle}) of a parent that was not accepted"
            ));
            return;
        }
        if p.outstanding != 0 {
            self.fail(format!(
                "h{handle} completed with {} of its leg I/Os still outstanding",
                p.outstanding
            ));
            return;
        }
        match p.io.op {
            ParentOp::Read => {
                self.expect.reads += 1;
                self.check_read(handle, result);
            }
            ParentOp::Write => {
                self.expect.writes += 1;
                self.check_write(handle, result);
            }
            ParentOp::Discard => {
                self.expect.discards += 1;
                self.check_write(handle, result);
            }
            ParentOp::Flush => {
                self.expect.flushes += 1;
                self.check_flush(handle, result);
            }
        }
        self.parents.remove(&handle);
        self.inflight_reads.remove(&handle);
        self.done.insert(handle);
        self.retry = true;
    }

    fn on_event(&mut self, event: Event) {
        self.stats.host_calls += 1;
        self.log(|| format!("event {event:?}"));
        match event {
            Event::LegFailed { leg, .. } => {
                if let Some(t) = self.track.get_mut(usize::from(leg)) {
                    t.fenced = true;
                    t.left_at = Some(self.now);
                    t.insync_since = None;
                    t.trusted_since = None;
                } else {
                    self.fail(format!("event for leg {leg}, which does not exist"));
                }
            }
            Event::Ready => self.retry = true,
            Event::ShutdownDone => self.shutdown_done = true,
            Event::LogFailed { .. } => {
                if self.logdev.is_none() {
                    self.fail("LogFailed from a mirror without a log device".to_string());
                }
                self.log_failed = true;
            }
            _ => {}
        }
    }
}
