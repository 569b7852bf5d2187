//! The userland host: one thread owns the `Mirror` and feeds it parent I/Os, leg completions,
//! control requests and ticks; leg I/O runs on a small pool of worker threads per leg, so the legs
//! work in parallel and a slow leg never blocks the other.
use crate::dev::{uuid_str, Dev};
use dmirror::{
    BufRef, Busy, ControlError, Event, Host, IoError, IoResult, LegIo, LegOp, LegState, Mirror,
    ParentHandle, ParentIo, ParentOp, Status, Token,
};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A parent I/O from a client (an NBD connection).
pub struct ParentReq {
    pub op: ParentOp,
    pub sector: u64,
    pub count: u32,
    pub fua: bool,
    /// The data of a write.
    pub data: Option<Arc<Vec<u8>>>,
    pub reply: ReplyTo,
    pub cookie: u64,
}

/// Where the answer to a parent I/O goes (an NBD connection's output).
pub trait ReplySink: Send + Sync {
    fn send(&self, r: Reply);
}

pub type ReplyTo = Arc<dyn ReplySink>;

/// The answer to a parent I/O.
pub struct Reply {
    pub cookie: u64,
    pub result: IoResult,
    /// The data of a successful read.
    pub data: Option<Vec<u8>>,
}

/// Requests of the control socket.
pub enum Ctl {
    Status,
    Fail(u8),
    Remove(u8),
    Add {
        slot: u8,
        dev: Box<Dev>,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    },
}

pub enum Msg {
    Parent(ParentReq),
    Done(LegDone),
    Control(Ctl, Sender<Value>),
    Shutdown,
}

#[derive(Clone, Copy)]
enum Target {
    None,
    Parent { buf: u64, offset: u64 },
    Resync { slot: u32, offset: u64 },
}

pub struct LegDone {
    token: Token,
    result: IoResult,
    data: Option<Vec<u8>>,
    target: Target,
}

enum JobData {
    None,
    Shared(Arc<Vec<u8>>, usize),
    Owned(Vec<u8>),
}

struct Job {
    token: Token,
    op: LegOp,
    off: u64,
    len: usize,
    fua: bool,
    data: JobData,
    target: Target,
}

struct Leg {
    tx: Option<Sender<Job>>,
    dev: Arc<Dev>,
    threads: Vec<JoinHandle<()>>,
}

impl Leg {
    fn start(dev: Dev, threads: usize, done: Sender<Msg>) -> Leg {
        let dev = Arc::new(dev);
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for _ in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let dev = Arc::clone(&dev);
            let done = done.clone();
            handles.push(std::thread::spawn(move || worker(&dev, &rx, &done)));
        }
        Leg {
            tx: Some(tx),
            dev,
            threads: handles,
        }
    }

    fn stop(mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(dev: &Dev, rx: &Mutex<Receiver<Job>>, done: &Sender<Msg>) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let mut data = None;
        let result = match job.op {
            LegOp::Read => {
                let mut b = vec![0u8; job.len];
                let r = dev.io_read(&mut b, job.off);
                if r.is_ok() {
                    data = Some(b);
                }
                r
            }
            LegOp::Write => {
                let bytes: &[u8] = match &job.data {
                    JobData::None => &[],
                    JobData::Shared(a, start) => a.get(*start..*start + job.len).unwrap_or(&[]),
                    JobData::Owned(v) => v,
                };
                if bytes.len() != job.len {
                    Err(IoError::Invalid)
                } else {
                    dev.io_write(bytes, job.off, job.fua)
                }
            }
            LegOp::Flush => dev.io_flush(),
            LegOp::Discard => dev.io_discard(job.off, job.len as u64),
        };
        let msg = Msg::Done(LegDone {
            token: job.token,
            result,
            data,
            target: job.target,
        });
        if done.send(msg).is_err() {
            return;
        }
    }
}

/// Default of `UHost::inline_max`.
const INLINE_MAX: usize = 64 << 10;

struct PSlot {
    cookie: u64,
    reply: ReplyTo,
    write: Option<Arc<Vec<u8>>>,
    read: Option<Vec<u8>>,
    read_len: usize,
}

/// Per-leg facts the host keeps for status.
#[derive(Clone, Default)]
struct LegInfo {
    name: String,
    uuid: [u8; 16],
    resync_done: u64,
    resync_total: u64,
}

/// The `dmirror::Host` of the userland tool.
pub struct UHost {
    legs: Vec<Option<Leg>>,
    info: Vec<LegInfo>,
    parents: HashMap<u64, PSlot>,
    resync_bufs: Vec<Vec<u8>>,
    sector_size: u64,
    tx: Sender<Msg>,
    immediate: Vec<LegDone>,
    events: Vec<Event>,
    io_threads: usize,
    /// Leg reads and writes up to this many bytes are done on the mirror's thread when the leg
    /// can do them without waiting for a device (`Dev::try_read_inline`, `try_write_inline`):
    /// a memory copy costs less than the two thread hand-offs of a worker. They cannot stall
    /// the other leg for longer than that copy; anything that might wait (a device read, a
    /// write, FUA or flush to a disk file or a block device, discard, large I/O) still goes to
    /// the leg's workers. DMIRROR_INLINE_IO=BYTES overrides it (0: never).
    pub inline_max: usize,
    pub shutdown_done: bool,
    pub quiet: bool,
    /// Print every leg I/O and completion on stderr (DMIRROR_TRACE=1), for debugging.
    trace: bool,
    /// Sectors copied by resync, as counted from the completions (for reports).
    pub stalled: bool,
}

impl UHost {
    /// `devs[slot]`: the device of each leg slot (None for missing/empty slots).
    pub fn new(
        cfg: &dmirror::Config,
        devs: Vec<Option<Dev>>,
        uuids: &[[u8; 16]],
        io_threads: usize,
        tx: Sender<Msg>,
    ) -> UHost {
        let mut legs = Vec::new();
        let mut info = Vec::new();
        for (i, d) in devs.into_iter().enumerate() {
            let mut li = LegInfo {
                uuid: uuids.get(i).copied().unwrap_or([0; 16]),
                ..Default::default()
            };
            match d {
                Some(d) => {
                    li.name = d.name.clone();
                    legs.push(Some(Leg::start(d, io_threads, tx.clone())));
                }
                None => legs.push(None),
            }
            info.push(li);
        }
        let ss = u64::from(cfg.sector_size);
        let chunk = (u64::from(cfg.resync.chunk_sectors) * ss) as usize;
        UHost {
            legs,
            info,
            parents: HashMap::new(),
            resync_bufs: (0..cfg.resync.max_inflight)
                .map(|_| vec![0u8; chunk])
                .collect(),
            sector_size: ss,
            tx,
            immediate: Vec::new(),
            events: Vec::new(),
            io_threads,
            inline_max: std::env::var("DMIRROR_INLINE_IO")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(INLINE_MAX),
            shutdown_done: false,
            quiet: false,
            trace: std::env::var_os("DMIRROR_TRACE").is_some_and(|v| v == "1"),
            stalled: false,
        }
    }

    fn fail_now(&mut self, token: Token, e: IoError) {
        self.immediate.push(LegDone {
            token,
            result: Err(e),
            data: None,
            target: Target::None,
        });
    }

    /// Stop every worker thread (after the mirror is idle).
    pub fn stop(&mut self) {
        for l in self.legs.iter_mut() {
            if let Some(l) = l.take() {
                l.stop();
            }
        }
    }

    fn store_read(&mut self, target: Target, data: Vec<u8>) {
        match target {
            Target::None => {}
            Target::Parent { buf, offset } => {
                let Some(p) = self.parents.get_mut(&buf) else {
                    return;
                };
                let off = offset as usize;
                if p.read.is_none() && off == 0 && data.len() == p.read_len {
                    p.read = Some(data);
                    return;
                }
                let len = p.read_len;
                let r = p.read.get_or_insert_with(|| vec![0u8; len]);
                if let Some(dst) = r.get_mut(off..off + data.len()) {
                    dst.copy_from_slice(&data);
                }
            }
            Target::Resync { slot, offset } => {
                let Some(b) = self.resync_bufs.get_mut(slot as usize) else {
                    return;
                };
                let off = offset as usize;
                if let Some(dst) = b.get_mut(off..off + data.len()) {
                    dst.copy_from_slice(&data);
                }
            }
        }
    }
}

impl Host for UHost {
    fn issue(&mut self, io: &LegIo<'_>) {
        if self.trace {
            let kind = match io.buf {
                BufRef::Meta(_) => "meta",
                BufRef::Resync { .. } => "resync",
                BufRef::Parent { .. } => "parent",
                BufRef::None => "-",
            };
            eprintln!(
                "trace: issue {:?} leg {} {:?} sector {} count {} fua {} {kind}",
                io.token, io.leg, io.op, io.sector, io.count, io.fua
            );
        }
        let len = (u64::from(io.count) * self.sector_size) as usize;
        let off = io.sector * self.sector_size;
        let Some(Some(leg)) = self.legs.get(usize::from(io.leg)) else {
            self.fail_now(io.token, IoError::Gone);
            return;
        };
        let Some(tx) = leg.tx.as_ref() else {
            self.fail_now(io.token, IoError::Gone);
            return;
        };
        if len <= self.inline_max {
            let dev = &leg.dev;
            let done = match (io.op, io.buf) {
                (LegOp::Read, BufRef::Parent { buf, offset }) => {
                    self.parents.get_mut(&buf).and_then(|p| {
                        let n = p.read_len;
                        let r = p.read.get_or_insert_with(|| vec![0u8; n]);
                        let o = offset as usize;
                        r.get_mut(o..o + len)
                            .and_then(|b| dev.try_read_inline(b, off))
                    })
                }
                (LegOp::Read, BufRef::Resync { slot, offset }) => {
                    let o = offset as usize;
                    self.resync_bufs
                        .get_mut(slot as usize)
                        .and_then(|b| b.get_mut(o..o + len))
                        .and_then(|b| dev.try_read_inline(b, off))
                }
                (LegOp::Write, BufRef::Parent { buf, offset }) => {
                    let o = offset as usize;
                    self.parents
                        .get(&buf)
                        .and_then(|p| p.write.as_ref())
                        .and_then(|w| w.get(o..o + len))
                        .and_then(|b| dev.try_write_inline(b, off, io.fua))
                }
                (LegOp::Write, BufRef::Resync { slot, offset }) => {
                    let o = offset as usize;
                    self.resync_bufs
                        .get(slot as usize)
                        .and_then(|b| b.get(o..o + len))
                        .and_then(|b| dev.try_write_inline(b, off, io.fua))
                }
                (LegOp::Write, BufRef::Meta(m)) => m
                    .get(..len)
                    .and_then(|b| dev.try_write_inline(b, off, io.fua)),
                (LegOp::Flush, _) => dev.try_flush_inline(),
                _ => None,
            };
            if let Some(result) = done {
                // Done on this thread: the completion is queued, never delivered from inside
                // the core's call; `Engine::settle` hands it to `Mirror::leg_done` afterwards.
                self.immediate.push(LegDone {
                    token: io.token,
                    result,
                    data: None,
                    target: Target::None,
                });
                return;
            }
        }
        let mut target = Target::None;
        let mut data = JobData::None;
        match io.op {
            LegOp::Read => {
                target = match io.buf {
                    BufRef::Parent { buf, offset } => Target::Parent { buf, offset },
                    BufRef::Resync { slot, offset } => Target::Resync { slot, offset },
                    _ => Target::None,
                };
            }
            LegOp::Write => {
                let d = match io.buf {
                    BufRef::Parent { buf, offset } => self
                        .parents
                        .get(&buf)
                        .and_then(|p| p.write.clone())
                        .map(|a| JobData::Shared(a, offset as usize)),
                    BufRef::Resync { slot, offset } => self
                        .resync_bufs
                        .get(slot as usize)
                        .and_then(|b| b.get(offset as usize..offset as usize + len))
                        .map(|s| JobData::Owned(s.to_vec())),
                    BufRef::Meta(m) => m.get(..len).map(|s| JobData::Owned(s.to_vec())),
                    BufRef::None => None,
                };
                match d {
                    Some(d) => data = d,
                    None => {
                        self.fail_now(io.token, IoError::Invalid);
                        return;
                    }
                }
            }
            LegOp::Flush | LegOp::Discard => {}
        }
        let job = Job {
            token: io.token,
            op: io.op,
            off,
            len,
            fua: io.fua,
            data,
            target,
        };
        if tx.send(job).is_err() {
            self.fail_now(io.token, IoError::Gone);
        }
    }

    fn complete(&mut self, parent: ParentHandle, result: IoResult) {
        if self.trace {
            eprintln!("trace: complete parent {parent} {result:?}");
        }
        let Some(p) = self.parents.remove(&parent) else {
            return;
        };
        let data = if result.is_ok() && p.read_len > 0 {
            Some(p.read.unwrap_or_else(|| vec![0u8; p.read_len]))
        } else {
            None
        };
        p.reply.send(Reply {
            cookie: p.cookie,
            result,
            data,
        });
    }

    fn event(&mut self, event: Event) {
        if self.trace {
            eprintln!("trace: event {event:?}");
        }
        self.events.push(event);
    }
}

pub fn state_name(s: LegState) -> &'static str {
    match s {
        LegState::InSync => "in-sync",
        LegState::Rebuilding => "rebuilding",
        LegState::Failed => "failed",
        LegState::Missing => "missing",
        LegState::Empty => "empty",
    }
}

fn ctl_err(e: ControlError) -> &'static str {
    match e {
        ControlError::NoSuchLeg => "no such leg",
        ControlError::WrongState => "the leg is in the wrong state for that",
        ControlError::LastLeg => "it would leave no in-sync leg",
        ControlError::TooSmall => "the device is too small",
        ControlError::ShuttingDown => "the mirror is shutting down",
    }
}

fn io_err_name(e: IoError) -> &'static str {
    match e {
        IoError::Io => "I/O error",
        IoError::Gone => "device gone",
        IoError::NotSupported => "not supported",
        IoError::Invalid => "invalid request",
        IoError::NoLegs => "no usable leg",
    }
}

/// Called after every tick with the mirror's status.
pub type TickFn<'m> = Box<dyn FnMut(&Status) + 'm>;

/// What the engine loop is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve until told to shut down.
    Serve,
    /// Offline resync: shut down once nothing needs copying.
    Resync,
}

/// What the engine needs of the core: `dmirror::Mirror`'s entry points. A trait only so the
/// host's own tests can drive the engine with a trivial test double.
pub trait Core {
    fn submit(&mut self, host: &mut UHost, io: ParentIo) -> Result<(), Busy>;
    fn leg_done(&mut self, host: &mut UHost, token: Token, result: IoResult);
    fn tick(&mut self, host: &mut UHost);
    fn status(&self) -> Status;
    fn config(&self) -> &dmirror::Config;
    fn fail_leg(&mut self, host: &mut UHost, leg: u8) -> Result<(), ControlError>;
    fn remove_leg(&mut self, host: &mut UHost, leg: u8) -> Result<(), ControlError>;
    fn add_leg(
        &mut self,
        host: &mut UHost,
        leg: u8,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    ) -> Result<(), ControlError>;
    fn shutdown(&mut self, host: &mut UHost);
    fn is_idle(&self) -> bool;
}

impl Core for Mirror<'_> {
    fn submit(&mut self, host: &mut UHost, io: ParentIo) -> Result<(), Busy> {
        Mirror::submit(self, host, io)
    }
    fn leg_done(&mut self, host: &mut UHost, token: Token, result: IoResult) {
        Mirror::leg_done(self, host, token, result)
    }
    fn tick(&mut self, host: &mut UHost) {
        Mirror::tick(self, host)
    }
    fn status(&self) -> Status {
        Mirror::status(self)
    }
    fn config(&self) -> &dmirror::Config {
        Mirror::config(self)
    }
    fn fail_leg(&mut self, host: &mut UHost, leg: u8) -> Result<(), ControlError> {
        Mirror::fail_leg(self, host, leg)
    }
    fn remove_leg(&mut self, host: &mut UHost, leg: u8) -> Result<(), ControlError> {
        Mirror::remove_leg(self, host, leg)
    }
    fn add_leg(
        &mut self,
        host: &mut UHost,
        leg: u8,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    ) -> Result<(), ControlError> {
        Mirror::add_leg(self, host, leg, uuid, sectors, incremental)
    }
    fn shutdown(&mut self, host: &mut UHost) {
        Mirror::shutdown(self, host)
    }
    fn is_idle(&self) -> bool {
        Mirror::is_idle(self)
    }
}

pub struct Engine<'m, C: Core> {
    pub mirror: &'m mut C,
    pub host: UHost,
    rx: Receiver<Msg>,
    waiting: VecDeque<ParentIo>,
    next_handle: u64,
    shutting_down: bool,
    shutdown_started: Option<Instant>,
    pub tick: Duration,
    /// Called after every tick with the status (progress display).
    pub on_tick: Option<TickFn<'m>>,
}

impl<'m, C: Core> Engine<'m, C> {
    pub fn new(mirror: &'m mut C, host: UHost, rx: Receiver<Msg>) -> Self {
        Engine {
            mirror,
            host,
            rx,
            waiting: VecDeque::new(),
            next_handle: 1,
            shutting_down: false,
            shutdown_started: None,
            tick: Duration::from_millis(100),
            on_tick: None,
        }
    }

    fn submit(&mut self, r: ParentReq) {
        if self.shutting_down {
            r.reply.send(Reply {
                cookie: r.cookie,
                result: Err(IoError::Gone),
                data: None,
            });
            return;
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        let read_len = if r.op == ParentOp::Read {
            (u64::from(r.count) * self.host.sector_size) as usize
        } else {
            0
        };
        self.host.parents.insert(
            handle,
            PSlot {
                cookie: r.cookie,
                reply: r.reply,
                write: r.data,
                read: None,
                read_len,
            },
        );
        let io = ParentIo {
            handle,
            op: r.op,
            sector: r.sector,
            count: r.count,
            fua: r.fua,
            buf: handle,
        };
        if !self.waiting.is_empty() {
            self.waiting.push_back(io);
            return;
        }
        if let Err(Busy) = self.mirror.submit(&mut self.host, io) {
            self.waiting.push_back(io);
        }
    }

    fn retry_waiting(&mut self) {
        while let Some(io) = self.waiting.front().copied() {
            match self.mirror.submit(&mut self.host, io) {
                Ok(()) => {
                    self.waiting.pop_front();
                }
                Err(Busy) => break,
            }
        }
    }

    fn fail_waiting(&mut self) {
        while let Some(io) = self.waiting.pop_front() {
            self.host.complete(io.handle, Err(IoError::Gone));
        }
    }

    fn leg_done(&mut self, d: LegDone) {
        if self.host.trace {
            eprintln!("trace: done {:?} {:?}", d.token, d.result);
        }
        if let (Ok(()), Some(data)) = (d.result, d.data) {
            self.host.store_read(d.target, data);
        }
        self.mirror.leg_done(&mut self.host, d.token, d.result);
    }

    /// Deliver synchronous completions and act on events until nothing is left.
    fn settle(&mut self) {
        loop {
            let imm = std::mem::take(&mut self.host.immediate);
            let evs = std::mem::take(&mut self.host.events);
            if imm.is_empty() && evs.is_empty() {
                break;
            }
            for d in imm {
                self.leg_done(d);
            }
            for e in evs {
                self.on_event(e);
            }
        }
        if !self.waiting.is_empty() {
            if self.shutting_down {
                self.fail_waiting();
            } else {
                self.retry_waiting();
            }
        }
    }

    fn leg_name(&self, leg: u8) -> String {
        match self.host.info.get(usize::from(leg)) {
            Some(i) if !i.name.is_empty() => format!("leg {leg} ({})", i.name),
            _ => format!("leg {leg}"),
        }
    }

    fn on_event(&mut self, e: Event) {
        let quiet = self.host.quiet;
        match e {
            Event::LegFailed { leg, state, error } => {
                eprintln!(
                    "dmirror: {} is now {}: {}",
                    self.leg_name(leg),
                    state_name(state),
                    io_err_name(error)
                );
            }
            Event::ResyncProgress { leg, done, total } => {
                if let Some(i) = self.host.info.get_mut(usize::from(leg)) {
                    i.resync_done = done;
                    i.resync_total = total;
                }
            }
            Event::LegInSync { leg } => {
                if !quiet {
                    eprintln!("dmirror: {} is in sync", self.leg_name(leg));
                }
            }
            Event::ResyncStalled { leg, sector } => {
                self.host.stalled = true;
                eprintln!(
                    "dmirror: resync of {} stalled at sector {sector}: no leg could be read there",
                    self.leg_name(leg)
                );
            }
            Event::Repaired { leg, sector, count } => {
                if !quiet {
                    eprintln!(
                        "dmirror: repaired {count} sectors at {sector} on {}",
                        self.leg_name(leg)
                    );
                }
            }
            Event::Ready => {}
            Event::ShutdownDone => self.host.shutdown_done = true,
            Event::AuthoritativeChanged { leg } => {
                if !quiet {
                    eprintln!("dmirror: {} is now authoritative", self.leg_name(leg));
                }
            }
            // The CLI runs mirrors with metadata on the legs, never a disk log.
            Event::LogFailed { error } => eprintln!("dmirror: log device failed: {error:?}"),
        }
    }

    pub fn status_json(&self) -> Value {
        let s = self.mirror.status();
        let legs: Vec<Value> = (0..usize::from(s.legs))
            .map(|i| {
                let l = &s.leg[i];
                let info = self.host.info.get(i).cloned().unwrap_or_default();
                json!({
                    "index": i,
                    "device": info.name,
                    "uuid": uuid_str(&info.uuid),
                    "state": state_name(l.state),
                    "regions_out_of_sync": l.regions_out_of_sync,
                    "resync_done_sectors": l.resync_done,
                    "resync_total_sectors": l.resync_total,
                    "inflight": l.inflight,
                    "reads": l.reads,
                    "writes": l.writes,
                    "errors": l.errors,
                    "repairs": l.repairs,
                })
            })
            .collect();
        let c = &s.counters;
        json!({
            "legs": legs,
            "authoritative": s.authoritative,
            "generation": s.generation,
            "regions": s.regions,
            "regions_in_sync": s.regions_in_sync,
            "dirty_regions": s.dirty_regions,
            "sector_size": self.host.sector_size,
            "region_sectors": self.mirror.config().region_sectors,
            "data_sectors": self.mirror.config().data_sectors,
            "inflight_parents": s.inflight_parents,
            "counters": {
                "parent_reads": c.parent_reads,
                "parent_writes": c.parent_writes,
                "parent_flushes": c.parent_flushes,
                "parent_discards": c.parent_discards,
                "parent_errors": c.parent_errors,
                "read_retries": c.read_retries,
                "repairs": c.repairs,
                "resync_sectors": c.resync_sectors,
                "meta_writes": c.meta_writes,
                "meta_flushes": c.meta_flushes,
                "busy": c.busy,
            },
            "shutting_down": self.shutting_down,
            "read_policy": match s.read_policy {
                dmirror::ReadPolicy::RoundRobin { batch } => format!("round-robin:{batch}"),
                dmirror::ReadPolicy::Load => "load".to_string(),
                dmirror::ReadPolicy::Prefer { leg } => format!("prefer:{leg}"),
                dmirror::ReadPolicy::Split { min_sectors } => format!("split:{min_sectors}"),
            },
            "resync_sectors_per_tick": self.mirror.config().resync.sectors_per_tick,
        })
    }

    fn control(&mut self, c: Ctl) -> Value {
        let r = match c {
            Ctl::Status => return json!({"ok": true, "status": self.status_json()}),
            Ctl::Fail(leg) => self.mirror.fail_leg(&mut self.host, leg),
            Ctl::Remove(leg) => {
                let r = self.mirror.remove_leg(&mut self.host, leg);
                if r.is_ok() {
                    if let Some(i) = self.host.info.get_mut(usize::from(leg)) {
                        *i = LegInfo::default();
                    }
                    // The workers drain what is queued and stop; later I/O to the slot fails.
                    if let Some(slot) = self.host.legs.get_mut(usize::from(leg)) {
                        if let Some(mut l) = slot.take() {
                            l.tx = None;
                            drop(l.dev);
                        }
                    }
                }
                r
            }
            Ctl::Add {
                slot,
                dev,
                uuid,
                sectors,
                incremental,
            } => {
                let i = usize::from(slot);
                if i >= self.host.legs.len() {
                    return json!({"ok": false, "error": format!("no leg slot {slot}")});
                }
                let name = dev.name.clone();
                let old = self.host.legs[i].take();
                self.host.legs[i] =
                    Some(Leg::start(*dev, self.host.io_threads, self.host.tx.clone()));
                let r = self
                    .mirror
                    .add_leg(&mut self.host, slot, uuid, sectors, incremental);
                match r {
                    Ok(()) => {
                        if let Some(o) = old {
                            o.stop();
                        }
                        self.host.info[i] = LegInfo {
                            name,
                            uuid,
                            ..Default::default()
                        };
                    }
                    Err(_) => {
                        if let Some(n) = self.host.legs[i].take() {
                            n.stop();
                        }
                        self.host.legs[i] = old;
                    }
                }
                r
            }
        };
        match r {
            Ok(()) => json!({"ok": true}),
            Err(e) => json!({"ok": false, "error": ctl_err(e)}),
        }
    }

    fn resync_finished(&self) -> bool {
        let s = self.mirror.status();
        s.leg[..usize::from(s.legs)].iter().all(|l| {
            l.state != LegState::Rebuilding && (!l.state.is_active() || l.regions_out_of_sync == 0)
        })
    }

    pub fn begin_shutdown(&mut self) {
        if !self.shutting_down {
            self.shutting_down = true;
            self.shutdown_started = Some(Instant::now());
            self.fail_waiting();
            self.mirror.shutdown(&mut self.host);
        }
    }

    /// Run until a clean shutdown completed. Returns an error message if the mirror could not
    /// shut down cleanly.
    pub fn run(&mut self, mode: Mode) -> Result<(), String> {
        let mut next_tick = Instant::now() + self.tick;
        let started = Instant::now();
        loop {
            let now = Instant::now();
            let wait = next_tick.saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(m) => {
                    self.handle(m);
                    // Take whatever else is already queued before ticking.
                    while let Ok(m) = self.rx.try_recv() {
                        self.handle(m);
                        self.settle();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.begin_shutdown(),
            }
            self.settle();
            if Instant::now() >= next_tick {
                self.mirror.tick(&mut self.host);
                self.settle();
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
                let st = self.mirror.status();
                if let Some(f) = self.on_tick.as_mut() {
                    f(&st);
                }
                if mode == Mode::Resync
                    && !self.shutting_down
                    && started.elapsed() > self.tick * 2
                    && (self.resync_finished() || self.host.stalled)
                {
                    self.begin_shutdown();
                }
            }
            if self.shutting_down && self.host.shutdown_done && self.mirror.is_idle() {
                break;
            }
            if let Some(t) = self.shutdown_started {
                if t.elapsed() > Duration::from_secs(60) {
                    return Err("clean shutdown did not complete within 60 s; the legs will be resynced where dirty at the next start".into());
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Parent(r) => self.submit(r),
            Msg::Done(d) => self.leg_done(d),
            Msg::Control(c, reply) => {
                let v = self.control(c);
                self.settle();
                let _ = reply.send(v);
            }
            Msg::Shutdown => self.begin_shutdown(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The host (workers, buffers, NBD) driven by a trivial test double of the core: writes go
    //! to every leg, reads to leg 0. It checks the plumbing, not mirroring.
    use super::*;
    use crate::dev::Fault;
    use std::process::Command;

    struct Passthrough {
        cfg: dmirror::Config,
        next: u64,
        pending: HashMap<u64, (u64, u32, bool)>,
        shutting: bool,
    }

    impl Passthrough {
        fn issue_all(&mut self, host: &mut UHost, io: &ParentIo, op: LegOp, legs: &[u8]) {
            for &leg in legs {
                let token = Token(self.next);
                self.next += 1;
                let e = self
                    .pending
                    .entry(io.handle)
                    .or_insert((io.handle, 0, false));
                e.1 += 1;
                self.pending
                    .insert(token.0 | 1 << 63, (io.handle, 0, false));
                let buf = match op {
                    LegOp::Read | LegOp::Write => BufRef::Parent {
                        buf: io.buf,
                        offset: 0,
                    },
                    _ => BufRef::None,
                };
                host.issue(&LegIo {
                    token,
                    leg,
                    op,
                    sector: io.sector,
                    count: io.count,
                    fua: io.fua,
                    buf,
                });
            }
        }
    }

    impl Core for Passthrough {
        fn submit(&mut self, host: &mut UHost, io: ParentIo) -> Result<(), Busy> {
            let op = match io.op {
                ParentOp::Read => LegOp::Read,
                ParentOp::Write => LegOp::Write,
                ParentOp::Flush => LegOp::Flush,
                ParentOp::Discard => LegOp::Discard,
            };
            let legs: Vec<u8> = if op == LegOp::Read {
                vec![0]
            } else {
                (0..self.cfg.legs).collect()
            };
            self.issue_all(host, &io, op, &legs);
            Ok(())
        }
        fn leg_done(&mut self, host: &mut UHost, token: Token, result: IoResult) {
            let Some((parent, _, _)) = self.pending.remove(&(token.0 | 1 << 63)) else {
                return;
            };
            let Some(p) = self.pending.get_mut(&parent) else {
                return;
            };
            p.1 -= 1;
            p.2 |= result.is_ok();
            if p.1 == 0 {
                let ok = p.2;
                self.pending.remove(&parent);
                host.complete(parent, if ok { Ok(()) } else { Err(IoError::Io) });
            }
        }
        fn tick(&mut self, host: &mut UHost) {
            if self.shutting && self.pending.is_empty() {
                host.event(Event::ShutdownDone);
            }
        }
        fn status(&self) -> Status {
            Status {
                legs: self.cfg.legs,
                leg: [dmirror::LegStatus::EMPTY; dmirror::MAX_LEGS],
                authoritative: 0,
                generation: 0,
                regions: 0,
                regions_in_sync: 0,
                dirty_regions: 0,
                inflight_parents: 0,
                inflight_leg_ios: 0,
                counters: dmirror::Counters::default(),
                read_policy: self.cfg.read_policy,
            }
        }
        fn config(&self) -> &dmirror::Config {
            &self.cfg
        }
        fn fail_leg(&mut self, _: &mut UHost, _: u8) -> Result<(), ControlError> {
            Err(ControlError::NoSuchLeg)
        }
        fn remove_leg(&mut self, _: &mut UHost, _: u8) -> Result<(), ControlError> {
            Err(ControlError::NoSuchLeg)
        }
        fn add_leg(
            &mut self,
            _: &mut UHost,
            _: u8,
            _: [u8; 16],
            _: u64,
            _: bool,
        ) -> Result<(), ControlError> {
            Err(ControlError::NoSuchLeg)
        }
        fn shutdown(&mut self, _: &mut UHost) {
            self.shutting = true;
        }
        fn is_idle(&self) -> bool {
            self.pending.is_empty()
        }
    }

    fn have(cmd: &str) -> bool {
        Command::new(cmd).arg("--version").output().is_ok()
    }

    #[test]
    fn nbd_and_workers_with_qemu_io() {
        if !have("qemu-io") {
            eprintln!("\n*** SKIPPED: qemu-io not installed (apt-get install qemu-utils) ***\n");
            return;
        }
        let dir = std::env::temp_dir().join(format!("dmirror-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let size: u64 = 8 << 20;
        let mut devs = Vec::new();
        for i in 0..2 {
            let p = dir.join(format!("leg{i}"));
            let f = std::fs::File::create(&p).unwrap();
            f.set_len(size).unwrap();
            devs.push(Some(
                Dev::open_path(&p, Fault::None, true, &format!("leg{i}")).unwrap(),
            ));
        }
        let cfg = dmirror::Config::new(2, size / 512);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = channel();
        let host = UHost::new(&cfg, devs, &[[0; 16], [1; 16]], 2, tx.clone());
        let export = crate::nbd::Export {
            name: "t".into(),
            size,
            sector_size: 512,
        };
        let t2 = tx.clone();
        std::thread::spawn(move || {
            crate::nbd::accept_loop(crate::nbd::Listener::Tcp(l), export, t2)
        });
        let eng = std::thread::spawn(move || {
            let mut core = Passthrough {
                cfg,
                next: 1,
                pending: HashMap::new(),
                shutting: false,
            };
            let mut e = Engine::new(&mut core, host, rx);
            e.run(Mode::Serve).unwrap();
            e.host.stop();
        });
        let url = format!("nbd://127.0.0.1:{port}");
        let out = Command::new("qemu-io")
            .args(["-f", "raw", &url])
            .args([
                "-c",
                "write -P 0xab 0 64k",
                "-c",
                "write -P 0xcd 1M 1M",
                "-c",
                "flush",
            ])
            .args([
                "-c",
                "read -P 0xab 0 64k",
                "-c",
                "read -P 0xcd 1M 1M",
                "-c",
                "read -P 0 64k 64k",
            ])
            .args([
                "-c",
                "aio_write -P 0x11 2M 4k",
                "-c",
                "aio_write -P 0x22 3M 4k",
                "-c",
                "aio_flush",
            ])
            .args(["-c", "read -P 0x22 3M 4k"])
            .output()
            .unwrap();
        let so = String::from_utf8_lossy(&out.stdout);
        let se = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !so.contains("Pattern verification failed"),
            "{so}\n{se}"
        );
        assert!(!so.contains("error"), "{so}\n{se}");
        tx.send(Msg::Shutdown).unwrap();
        eng.join().unwrap();
        for i in 0..2 {
            let d = std::fs::read(dir.join(format!("leg{i}"))).unwrap();
            assert!(
                d[..65536].iter().all(|b| *b == 0xab),
                "leg{i} lacks the first write"
            );
            assert!(
                d[1 << 20..2 << 20].iter().all(|b| *b == 0xcd),
                "leg{i} lacks the second write"
            );
            assert!(d[2 << 20..(2 << 20) + 4096].iter().all(|b| *b == 0x11));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
