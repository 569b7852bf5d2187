//! Conversions between the C structures of `dmirror.h` and the core's types. Everything coming
//! from C is checked here; nothing in this file can panic (no indexing, no unchecked arithmetic).
use crate::abi::*;
use ::dmirror::{
    Config, ConfigError, ControlError, Event, Init, IoError, IoResult, LegInit, LegIo, LegOp,
    LegState, LegStatus, LogKind, ParentIo, ParentOp, ReadPolicy, Rebuild, ResyncConfig, Status,
    MAX_LEGS,
};
use core::ffi::c_int;

/// A refusal: the errno returned and the detail for `struct dmirror_why`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub errno: c_int,
    pub why: u32,
    pub leg: u32,
    /// `struct dmirror_why.value` (a recorded size), else 0.
    pub value: u64,
}

impl Refusal {
    pub const fn inval(why: u32) -> Refusal {
        Refusal {
            errno: DMIRROR_EINVAL,
            why,
            leg: 0,
            value: 0,
        }
    }
    pub const fn leg(errno: c_int, why: u32, leg: u32) -> Refusal {
        Refusal {
            errno,
            why,
            leg,
            value: 0,
        }
    }
}

pub fn config_error(e: ConfigError) -> Refusal {
    match e {
        ConfigError::LegCount => Refusal::inval(DMIRROR_WHY_LEG_COUNT),
        ConfigError::SectorSize => Refusal::inval(DMIRROR_WHY_SECTOR_SIZE),
        ConfigError::RegionSize => Refusal::inval(DMIRROR_WHY_REGION_SIZE),
        ConfigError::DataSize => Refusal::inval(DMIRROR_WHY_DATA_SIZE),
        ConfigError::ReadPolicy => Refusal::inval(DMIRROR_WHY_READ_POLICY),
        ConfigError::PoolSize => Refusal::inval(DMIRROR_WHY_POOL_SIZE),
        ConfigError::Resync => Refusal::inval(DMIRROR_WHY_RESYNC),
        ConfigError::Memory => Refusal::leg(DMIRROR_ENOMEM, DMIRROR_WHY_MEMORY, 0),
        ConfigError::LegTooSmall { leg } => {
            Refusal::leg(DMIRROR_ENOSPC, DMIRROR_WHY_LEG_TOO_SMALL, u32::from(leg))
        }
        ConfigError::InitialState => Refusal::inval(DMIRROR_WHY_INITIAL_STATE),
    }
}

pub fn control_error(e: ControlError) -> c_int {
    match e {
        ControlError::NoSuchLeg => DMIRROR_ENOENT,
        ControlError::WrongState => DMIRROR_EBUSY,
        ControlError::LastLeg => DMIRROR_EPERM,
        ControlError::TooSmall => DMIRROR_ENOSPC,
        ControlError::ShuttingDown => DMIRROR_ESHUTDOWN,
    }
}

pub fn read_policy_from_c(p: &dmirror_read_policy) -> Result<ReadPolicy, Refusal> {
    let bad = Refusal::inval(DMIRROR_WHY_READ_POLICY);
    match p.kind {
        DMIRROR_READ_ROUND_ROBIN => Ok(ReadPolicy::RoundRobin { batch: p.arg }),
        DMIRROR_READ_LOAD => Ok(ReadPolicy::Load),
        DMIRROR_READ_PREFER => u8::try_from(p.arg)
            .map(|leg| ReadPolicy::Prefer { leg })
            .map_err(|_| bad),
        DMIRROR_READ_SPLIT => Ok(ReadPolicy::Split { min_sectors: p.arg }),
        _ => Err(bad),
    }
}

pub fn read_policy_to_c(p: ReadPolicy) -> dmirror_read_policy {
    match p {
        ReadPolicy::RoundRobin { batch } => dmirror_read_policy {
            kind: DMIRROR_READ_ROUND_ROBIN,
            arg: batch,
        },
        ReadPolicy::Load => dmirror_read_policy {
            kind: DMIRROR_READ_LOAD,
            arg: 0,
        },
        ReadPolicy::Prefer { leg } => dmirror_read_policy {
            kind: DMIRROR_READ_PREFER,
            arg: u32::from(leg),
        },
        ReadPolicy::Split { min_sectors } => dmirror_read_policy {
            kind: DMIRROR_READ_SPLIT,
            arg: min_sectors,
        },
    }
}

pub fn config_from_c(c: &dmirror_config) -> Result<Config, Refusal> {
    if c.abi_version != DMIRROR_ABI_VERSION {
        return Err(Refusal::inval(DMIRROR_WHY_ABI_VERSION));
    }
    if c.legs == 0 || usize::from(c.legs) > MAX_LEGS {
        return Err(Refusal::inval(DMIRROR_WHY_LEG_COUNT));
    }
    let log = match u32::from(c.log) {
        DMIRROR_REGION_LOG_CORE => LogKind::Core,
        DMIRROR_REGION_LOG_ON_LEGS => LogKind::OnLegs,
        DMIRROR_REGION_LOG_DEVICE => LogKind::Device,
        _ => return Err(Refusal::inval(DMIRROR_WHY_LOG_KIND)),
    };
    Ok(Config {
        legs: c.legs,
        data_sectors: c.data_sectors,
        sector_size: c.sector_size,
        region_sectors: c.region_sectors,
        read_policy: read_policy_from_c(&c.read_policy)?,
        max_parents: c.max_parents,
        max_leg_ios: c.max_leg_ios,
        clear_delay_ticks: c.clear_delay_ticks,
        resync: ResyncConfig {
            max_inflight: c.resync_max_inflight,
            chunk_sectors: c.resync_chunk_sectors,
            sectors_per_tick: c.resync_sectors_per_tick,
            checkpoint_regions: c.resync_checkpoint_regions,
        },
        log,
    })
}

pub fn config_to_c(c: &Config) -> dmirror_config {
    dmirror_config {
        abi_version: DMIRROR_ABI_VERSION,
        sector_size: c.sector_size,
        data_sectors: c.data_sectors,
        region_sectors: c.region_sectors,
        resync_sectors_per_tick: c.resync.sectors_per_tick,
        max_parents: c.max_parents,
        max_leg_ios: c.max_leg_ios,
        clear_delay_ticks: c.clear_delay_ticks,
        resync_max_inflight: c.resync.max_inflight,
        resync_chunk_sectors: c.resync.chunk_sectors,
        resync_checkpoint_regions: c.resync.checkpoint_regions,
        read_policy: read_policy_to_c(c.read_policy),
        legs: c.legs,
        log: match c.log {
            LogKind::Core => DMIRROR_REGION_LOG_CORE as u8,
            LogKind::OnLegs => DMIRROR_REGION_LOG_ON_LEGS as u8,
            LogKind::Device => DMIRROR_REGION_LOG_DEVICE as u8,
        },
        _pad: [0; 6],
    }
}

pub fn leg_state_from_c(s: u32) -> Option<LegState> {
    match s {
        DMIRROR_LEG_EMPTY => Some(LegState::Empty),
        DMIRROR_LEG_IN_SYNC => Some(LegState::InSync),
        DMIRROR_LEG_REBUILDING => Some(LegState::Rebuilding),
        DMIRROR_LEG_FAILED => Some(LegState::Failed),
        DMIRROR_LEG_MISSING => Some(LegState::Missing),
        _ => None,
    }
}

pub fn leg_state_to_c(s: LegState) -> u32 {
    match s {
        LegState::Empty => DMIRROR_LEG_EMPTY,
        LegState::InSync => DMIRROR_LEG_IN_SYNC,
        LegState::Rebuilding => DMIRROR_LEG_REBUILDING,
        LegState::Failed => DMIRROR_LEG_FAILED,
        LegState::Missing => DMIRROR_LEG_MISSING,
    }
}

/// Regions of a configuration (ceil(data / region)); `None` if the region size is 0.
pub fn regions(cfg: &Config) -> Option<u64> {
    if cfg.region_sectors == 0 {
        return None;
    }
    Some(cfg.data_sectors.div_ceil(cfg.region_sectors))
}

/// A C bitmap as a slice, checked: NULL means none (and then len must be 0); otherwise it must
/// cover every region.
///
/// # Safety
/// When `b.bits` is not NULL it must point to `b.len` readable bytes that stay valid and
/// unmodified for `'i`.
pub unsafe fn bitmap_from_c<'i>(
    b: &dmirror_bitmap,
    regions: u64,
    leg: u32,
) -> Result<Option<&'i [u8]>, Refusal> {
    let bad = Refusal::leg(DMIRROR_EINVAL, DMIRROR_WHY_BITMAP, leg);
    if b.bits.is_null() {
        return if b.len == 0 { Ok(None) } else { Err(bad) };
    }
    let need = regions.div_ceil(8);
    if b.len < need {
        return Err(bad);
    }
    let len = usize::try_from(b.len).map_err(|_| bad)?;
    if len > isize::MAX as usize {
        return Err(bad);
    }
    // SAFETY: non-NULL, length checked against isize::MAX; validity is the caller's contract.
    Ok(Some(unsafe { core::slice::from_raw_parts(b.bits, len) }))
}

/// The core's starting state from the C one.
///
/// # Safety
/// The bitmaps `init` points to must be valid for `'i` (see [`bitmap_from_c`]).
pub unsafe fn init_from_c<'i>(
    cfg: &Config,
    init: &dmirror_init,
    out: &mut Init<'i>,
) -> Result<(), Refusal> {
    let regions = regions(cfg).ok_or(Refusal::inval(DMIRROR_WHY_REGION_SIZE))?;
    // Field by field into the caller's `Init` (2.4 KiB): no temporary of that size.
    out.mirror_uuid = init.mirror_uuid;
    out.name = init.name;
    out.generation = init.generation;
    out.seq = init.seq;
    out.authoritative = init.authoritative;
    out.legs = [LegInit::EMPTY; MAX_LEGS];
    out.tracking = [None; MAX_LEGS];
    // SAFETY: forwarded contract.
    out.dirty = unsafe { bitmap_from_c(&init.dirty, regions, 0)? };
    let legs = usize::from(cfg.legs);
    let slots = init
        .legs
        .iter()
        .zip(init.tracking.iter())
        .zip(out.legs.iter_mut())
        .zip(out.tracking.iter_mut())
        .enumerate();
    for (i, (((c, bm), leg), track)) in slots {
        // i < MAX_LEGS = 32: the conversion is lossless.
        let idx = i as u32;
        let state = leg_state_from_c(c.state).ok_or(Refusal::leg(
            DMIRROR_EINVAL,
            DMIRROR_WHY_LEG_STATE,
            idx,
        ))?;
        if i >= legs {
            // Slots beyond config.legs must be untouched (zero): anything else is a shim bug.
            if state != LegState::Empty || c.sectors != 0 || !bm.bits.is_null() || bm.len != 0 {
                return Err(Refusal::leg(DMIRROR_EINVAL, DMIRROR_WHY_INITIAL_STATE, idx));
            }
            continue;
        }
        *leg = LegInit {
            state,
            uuid: c.uuid,
            sectors: c.sectors,
            rebuild: Rebuild {
                checkpoint: c.rebuild_checkpoint,
                full: c.rebuild_full != 0,
            },
            // Not part of the C description of a leg: a shim creating a mirror from explicit
            // states has no history to record (assembled mirrors come through
            // dmirror_create_assembled, which carries it).
            since: 0,
        };
        // SAFETY: forwarded contract.
        *track = unsafe { bitmap_from_c(bm, regions, idx)? };
    }
    Ok(())
}

/// The C form of one leg slot's starting state.
pub fn leg_init_to_c(l: &LegInit) -> dmirror_leg_init {
    dmirror_leg_init {
        sectors: l.sectors,
        rebuild_checkpoint: l.rebuild.checkpoint,
        uuid: l.uuid,
        state: leg_state_to_c(l.state),
        rebuild_full: u8::from(l.rebuild.full),
        _pad: [0; 3],
    }
}

/// The C form of a starting state without bitmaps (used by `dmirror_init_fresh`).
pub fn init_to_c(init: &Init<'_>, out: &mut dmirror_init) {
    out.mirror_uuid = init.mirror_uuid;
    out.name = init.name;
    out.generation = init.generation;
    out.seq = init.seq;
    out.authoritative = init.authoritative;
    out._pad = [0; 7];
    out.dirty = dmirror_bitmap {
        bits: core::ptr::null(),
        len: 0,
    };
    for (c, l) in out.legs.iter_mut().zip(init.legs.iter()) {
        *c = leg_init_to_c(l);
    }
    for t in out.tracking.iter_mut() {
        *t = dmirror_bitmap {
            bits: core::ptr::null(),
            len: 0,
        };
    }
}

/// A parent I/O from C. `None`: the arguments themselves are malformed.
pub fn parent_from_c(p: &dmirror_parent_io) -> Option<ParentIo> {
    let op = match p.op {
        DMIRROR_OP_READ => ParentOp::Read,
        DMIRROR_OP_WRITE => ParentOp::Write,
        DMIRROR_OP_FLUSH => ParentOp::Flush,
        DMIRROR_OP_DISCARD => ParentOp::Discard,
        _ => return None,
    };
    let count = match op {
        // The count of a flush is ignored: don't refuse a flush for garbage in it.
        ParentOp::Flush => 0,
        _ => u32::try_from(p.count).ok()?,
    };
    Some(ParentIo {
        handle: p.handle,
        op,
        sector: p.sector,
        count,
        fua: p.fua != 0,
        buf: p.buf,
    })
}

/// A leg completion's errno as the core's result (see `dmirror_leg_done` in dmirror.h).
pub fn leg_result_from_c(error: c_int) -> IoResult {
    match error {
        0 => Ok(()),
        DMIRROR_ENXIO | DMIRROR_ENODEV => Err(IoError::Gone),
        DMIRROR_EOPNOTSUPP => Err(IoError::NotSupported),
        _ => Err(IoError::Io),
    }
}

pub fn io_error_to_c(e: IoError) -> c_int {
    match e {
        IoError::Io => DMIRROR_EIO,
        IoError::Gone => DMIRROR_ENXIO,
        IoError::NotSupported => DMIRROR_EOPNOTSUPP,
        IoError::Invalid => DMIRROR_EINVAL,
        IoError::NoLegs => DMIRROR_ENXIO,
    }
}

pub fn result_to_c(r: IoResult) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => io_error_to_c(e),
    }
}

fn leg_op_to_c(op: LegOp) -> u8 {
    (match op {
        LegOp::Read => DMIRROR_OP_READ,
        LegOp::Write => DMIRROR_OP_WRITE,
        LegOp::Flush => DMIRROR_OP_FLUSH,
        LegOp::Discard => DMIRROR_OP_DISCARD,
    }) as u8
}

pub fn leg_io_to_c(io: &LegIo<'_>) -> dmirror_leg_io {
    let mut c = dmirror_leg_io {
        token: io.token.0,
        sector: io.sector,
        count: u64::from(io.count),
        parent_buf: 0,
        offset: 0,
        meta: core::ptr::null(),
        meta_len: 0,
        resync_slot: 0,
        leg: io.leg,
        op: leg_op_to_c(io.op),
        fua: u8::from(io.fua),
        buf_kind: DMIRROR_BUF_NONE as u8,
    };
    match io.buf {
        ::dmirror::BufRef::None => {}
        ::dmirror::BufRef::Parent { buf, offset } => {
            c.buf_kind = DMIRROR_BUF_PARENT as u8;
            c.parent_buf = buf;
            c.offset = offset;
        }
        ::dmirror::BufRef::Resync { slot, offset } => {
            c.buf_kind = DMIRROR_BUF_RESYNC as u8;
            c.resync_slot = slot;
            c.offset = offset;
        }
        ::dmirror::BufRef::Meta(bytes) => {
            c.buf_kind = DMIRROR_BUF_META as u8;
            c.meta = bytes.as_ptr();
            c.meta_len = bytes.len() as u64;
        }
    }
    c
}

pub fn event_to_c(e: Event) -> dmirror_event {
    let mut c = dmirror_event::default();
    match e {
        Event::LegFailed { leg, state, error } => {
            c.kind = DMIRROR_EV_LEG_FAILED;
            c.leg = u32::from(leg);
            c.state = leg_state_to_c(state);
            c.error = io_error_to_c(error);
        }
        Event::ResyncProgress { leg, done, total } => {
            c.kind = DMIRROR_EV_RESYNC_PROGRESS;
            c.leg = u32::from(leg);
            c.done = done;
            c.total = total;
        }
        Event::LegInSync { leg } => {
            c.kind = DMIRROR_EV_LEG_IN_SYNC;
            c.leg = u32::from(leg);
        }
        Event::ResyncStalled { leg, sector } => {
            c.kind = DMIRROR_EV_RESYNC_STALLED;
            c.leg = u32::from(leg);
            c.sector = sector;
        }
        Event::Repaired { leg, sector, count } => {
            c.kind = DMIRROR_EV_REPAIRED;
            c.leg = u32::from(leg);
            c.sector = sector;
            c.count = u64::from(count);
        }
        Event::Ready => c.kind = DMIRROR_EV_READY,
        Event::ShutdownDone => c.kind = DMIRROR_EV_SHUTDOWN_DONE,
        Event::AuthoritativeChanged { leg } => {
            c.kind = DMIRROR_EV_AUTHORITATIVE;
            c.leg = u32::from(leg);
        }
        Event::LogFailed { error } => {
            c.kind = DMIRROR_EV_LOG_FAILED;
            c.leg = DMIRROR_LOGDEV_LEG;
            c.error = io_error_to_c(error);
        }
    }
    c
}

fn leg_status_to_c(l: &LegStatus) -> dmirror_leg_status {
    dmirror_leg_status {
        state: leg_state_to_c(l.state),
        inflight: l.inflight,
        regions_out_of_sync: l.regions_out_of_sync,
        resync_done: l.resync_done,
        resync_total: l.resync_total,
        reads: l.reads,
        writes: l.writes,
        errors: l.errors,
        repairs: l.repairs,
    }
}

pub fn status_to_c(s: &Status, out: &mut dmirror_status) {
    out.generation = s.generation;
    out.regions = s.regions;
    out.regions_in_sync = s.regions_in_sync;
    out.dirty_regions = s.dirty_regions;
    out.inflight_parents = s.inflight_parents;
    out.inflight_leg_ios = s.inflight_leg_ios;
    out.legs = s.legs;
    out.authoritative = s.authoritative;
    out._pad = [0; 6];
    out.read_policy = read_policy_to_c(s.read_policy);
    let k = &s.counters;
    out.counters = dmirror_counters {
        parent_reads: k.parent_reads,
        parent_writes: k.parent_writes,
        parent_flushes: k.parent_flushes,
        parent_discards: k.parent_discards,
        parent_errors: k.parent_errors,
        read_retries: k.read_retries,
        repairs: k.repairs,
        resync_sectors: k.resync_sectors,
        meta_writes: k.meta_writes,
        meta_flushes: k.meta_flushes,
        busy: k.busy,
    };
    for (c, l) in out.leg.iter_mut().zip(s.leg.iter()) {
        *c = leg_status_to_c(l);
    }
}
