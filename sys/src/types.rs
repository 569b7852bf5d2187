//! The public vocabulary of the core: configuration, the events a host feeds in, the requests the
//! core makes of its host, and the status it reports. Everything here is plain data (`Copy`), so
//! every host (kernel shims through the C ABI, the userland server, the simulator) can hold it.

/// Most legs a mirror can have.
pub const MAX_LEGS: usize = 32;

/// Opaque identifier the host gives a parent I/O (a `struct bio *`, a request id...).
pub type ParentHandle = u64;

/// Opaque identifier of a leg I/O the core asked for; the host hands it back on completion.
/// Tokens are never reused while in flight, and a stale or forged token is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// How reads are spread over the legs that are in sync for the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// `batch` reads go to one leg, then the next leg takes over.
    RoundRobin { batch: u32 },
    /// The leg with the fewest outstanding leg I/Os.
    Load,
    /// Always this leg while it is a candidate; the others otherwise.
    Prefer { leg: u8 },
    /// A read of at least `min_sectors` is cut into one piece per candidate leg.
    Split { min_sectors: u32 },
}

impl Default for ReadPolicy {
    fn default() -> Self {
        ReadPolicy::RoundRobin { batch: 8 }
    }
}

/// Which region log backs the journal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// In memory only ("core" log): nothing is persisted; a restart resyncs everything.
    Core,
    /// Self-describing legs: superblocks and bitmaps at the end of every leg (docs/FORMAT.md).
    OnLegs,
    /// A separate log device (dm-mirror's `disk` log): the legs carry only data; the superblock
    /// (leg table, states) and every bitmap live on the log device, which the core addresses as
    /// leg [`LOG_DEV`] (docs/FORMAT.md, section 9). One log-device round makes a mark durable for
    /// every leg at once.
    Device,
}

/// The `LegIo::leg` of I/O to the disk log device (`LogKind::Device`); never a leg index.
pub const LOG_DEV: u8 = 0xFF;

/// Resync engine tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncConfig {
    /// Copies in flight at once (each needs one host resync buffer of `chunk_sectors`).
    pub max_inflight: u32,
    /// Sectors one copy moves (a resync buffer's size); at most a region.
    pub chunk_sectors: u32,
    /// Sectors of copying allowed per tick (0 = unlimited).
    pub sectors_per_tick: u64,
    /// Persist the rebuild checkpoint every this many regions.
    pub checkpoint_regions: u32,
}

impl Default for ResyncConfig {
    fn default() -> Self {
        ResyncConfig {
            max_inflight: 4,
            chunk_sectors: 256,
            sectors_per_tick: 0,
            checkpoint_regions: 64,
        }
    }
}

/// Everything needed to create a mirror. Checked by [`crate::Mirror::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of leg slots, 1..=32. A slot may be empty (missing) at creation.
    pub legs: u8,
    /// Size of the mirrored data in sectors (what the parent device exposes).
    pub data_sectors: u64,
    /// Logical sector size in bytes: a power of two, 512..=65536.
    pub sector_size: u32,
    /// Region size in sectors: a power of two; the unit of write intent and resync.
    pub region_sectors: u64,
    /// Read balancing.
    pub read_policy: ReadPolicy,
    /// Parent I/Os in flight at once (pool size). Beyond it `submit` answers `Busy`.
    pub max_parents: u32,
    /// Leg I/Os in flight at once (pool size). Parents wait in order when it is short.
    pub max_leg_ios: u32,
    /// Ticks a dirty region must stay idle before its write-intent bit is cleared.
    pub clear_delay_ticks: u32,
    pub resync: ResyncConfig,
    pub log: LogKind,
}

impl Config {
    /// A reasonable configuration for `legs` legs over `data_sectors` 512-byte sectors.
    pub fn new(legs: u8, data_sectors: u64) -> Config {
        Config {
            legs,
            data_sectors,
            sector_size: 512,
            region_sectors: crate::format::default_region_sectors(data_sectors, 512),
            read_policy: ReadPolicy::default(),
            max_parents: 256,
            max_leg_ios: 1024,
            clear_delay_ticks: 5,
            resync: ResyncConfig::default(),
            log: LogKind::Core,
        }
    }
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    LegCount,
    SectorSize,
    RegionSize,
    DataSize,
    ReadPolicy,
    PoolSize,
    Resync,
    /// The memory handed to `Mirror::new` is smaller than `Mirror::memory_needed`.
    Memory,
    /// A leg's size cannot hold the data plus the metadata area.
    LegTooSmall {
        leg: u8,
    },
    /// The initial state is inconsistent with the configuration (e.g. no leg usable).
    InitialState,
}

/// What a parent I/O asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentOp {
    Read,
    Write,
    Flush,
    Discard,
}

/// A parent I/O: what the upper layer asked of the mirror device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentIo {
    pub handle: ParentHandle,
    pub op: ParentOp,
    /// First sector (in `sector_size` units). Ignored for flush.
    pub sector: u64,
    /// Length in sectors. Ignored for flush.
    pub count: u32,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
    /// Opaque reference to the parent's data buffer (a pointer, an index...).
    pub buf: u64,
}

/// An operation on one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegOp {
    Read,
    Write,
    Flush,
    Discard,
}

/// Where the bytes of a leg I/O live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufRef<'m> {
    /// No data (flush, discard).
    None,
    /// The parent's buffer, `offset` bytes in.
    Parent { buf: u64, offset: u64 },
    /// One of the host's resync buffers (`ResyncConfig::max_inflight` of them, each
    /// `chunk_sectors` long), `offset` bytes in.
    Resync { slot: u32, offset: u64 },
    /// Metadata the core owns (a superblock or bitmap sectors). The slice stays valid and
    /// unchanged until the I/O completes; a host may keep its address.
    Meta(&'m [u8]),
}

/// A leg I/O the core asks the host to issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegIo<'m> {
    pub token: Token,
    /// Leg index, 0..legs; [`LOG_DEV`] for the disk log device.
    pub leg: u8,
    pub op: LegOp,
    /// Absolute sector on the leg (data at 0.., metadata at the end).
    pub sector: u64,
    /// Length in sectors (0 for flush).
    pub count: u32,
    /// Write through to stable storage.
    pub fua: bool,
    pub buf: BufRef<'m>,
}

/// How a leg I/O or a parent I/O failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// The medium or transport failed (EIO).
    Io,
    /// The device is gone (ENXIO): the leg is missing, not broken.
    Gone,
    /// The device does not support the operation (EOPNOTSUPP). Not a failure for discard.
    NotSupported,
    /// The parent I/O itself is invalid (beyond the end, zero length): EINVAL.
    Invalid,
    /// No usable leg is left.
    NoLegs,
}

pub type IoResult = Result<(), IoError>;

/// Answer of `submit` when the parent pool is full; the host keeps the parent (in order) and
/// submits it again after a parent completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

/// State of a leg slot as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegState {
    /// Holds a full copy (regions in its `needs_sync` set excepted, after a crash).
    InSync,
    /// Being brought in sync; reads go to it only for regions already copied.
    Rebuilding,
    /// Had an I/O error: not trusted again without a full resync.
    Failed,
    /// Vanished: writes while it is away are tracked for an incremental resync.
    Missing,
    /// Never had a device.
    Empty,
}

impl LegState {
    /// Gets writes.
    pub fn is_active(self) -> bool {
        matches!(self, LegState::InSync | LegState::Rebuilding)
    }
}

/// What the core reports to the host as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A leg left service; `state` is Failed or Missing.
    LegFailed {
        leg: u8,
        state: LegState,
        error: IoError,
    },
    /// A resync made progress: `done` of `total` sectors to copy for this leg.
    ResyncProgress { leg: u8, done: u64, total: u64 },
    /// A leg became fully in sync.
    LegInSync { leg: u8 },
    /// A resync copy could not read any source for this range; the leg stays out of sync there.
    ResyncStalled { leg: u8, sector: u64 },
    /// A read error was repaired by rewriting `count` sectors at `sector` on `leg`.
    Repaired { leg: u8, sector: u64, count: u32 },
    /// A parent slot became free after `submit` answered `Busy`.
    Ready,
    /// The clean shutdown asked for with `shutdown` is complete (metadata durable, clean).
    ShutdownDone,
    /// The authoritative leg changed.
    AuthoritativeChanged { leg: u8 },
    /// The disk log device (`LogKind::Device`) failed a write or flush: nothing more is written
    /// to it. Writes go on while every leg takes them; a write that depends on a leg-state change
    /// the log could not record fails (`IoError::Io`). Reload with a new log (full resync).
    LogFailed { error: IoError },
}

/// Per-leg status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegStatus {
    pub state: LegState,
    /// Regions this leg may differ in (0 when in sync).
    pub regions_out_of_sync: u64,
    /// Sectors copied by the current resync and sectors it has in all.
    pub resync_done: u64,
    pub resync_total: u64,
    pub inflight: u32,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    pub repairs: u64,
}

impl LegStatus {
    pub const EMPTY: LegStatus = LegStatus {
        state: LegState::Empty,
        regions_out_of_sync: 0,
        resync_done: 0,
        resync_total: 0,
        inflight: 0,
        reads: 0,
        writes: 0,
        errors: 0,
        repairs: 0,
    };
}

/// Mirror-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub parent_reads: u64,
    pub parent_writes: u64,
    pub parent_flushes: u64,
    pub parent_discards: u64,
    pub parent_errors: u64,
    pub read_retries: u64,
    pub repairs: u64,
    pub resync_sectors: u64,
    pub meta_writes: u64,
    pub meta_flushes: u64,
    /// Superblocks that could not be encoded (an internal error: never expected).
    pub meta_errors: u64,
    pub busy: u64,
}

impl Counters {
    pub const ZERO: Counters = Counters {
        parent_reads: 0,
        parent_writes: 0,
        parent_flushes: 0,
        parent_discards: 0,
        parent_errors: 0,
        read_retries: 0,
        repairs: 0,
        resync_sectors: 0,
        meta_writes: 0,
        meta_flushes: 0,
        meta_errors: 0,
        busy: 0,
    };
}

/// A snapshot of the whole mirror, for hosts to format (dm status, GEOM XML, the CLI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub legs: u8,
    pub leg: [LegStatus; MAX_LEGS],
    pub authoritative: u8,
    pub generation: u64,
    pub regions: u64,
    /// Regions in sync on every active leg.
    pub regions_in_sync: u64,
    /// Regions whose write-intent bit is set, in memory or still on disk (a cleared bit counts
    /// until the bitmap that clears it is durable): what a crash now would resync.
    pub dirty_regions: u64,
    pub inflight_parents: u32,
    pub inflight_leg_ios: u32,
    pub counters: Counters,
    pub read_policy: ReadPolicy,
}

impl Status {
    /// A snapshot of nothing: the starting value of memory given to `Mirror::status_into`.
    pub const EMPTY: Status = Status {
        legs: 0,
        leg: [LegStatus::EMPTY; MAX_LEGS],
        authoritative: 0,
        generation: 0,
        regions: 0,
        regions_in_sync: 0,
        dirty_regions: 0,
        inflight_parents: 0,
        inflight_leg_ios: 0,
        counters: Counters::ZERO,
        read_policy: ReadPolicy::Load,
    };
}
