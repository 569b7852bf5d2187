//! The disk log's C entry points (`dmirror.h`, "Disk log" block): the log device's size, the
//! activation decision (`dmirror::logdev::assemble_log`) in `struct dmirror_assembly` form for
//! `dmirror_create_assembled`, and the log's health.
use crate::abi::*;
use crate::convert::{config_from_c, config_to_c, leg_init_to_c, Refusal};
use crate::glue::{c_bytes, c_ref, set_why, set_why_r, with_mirror, CBuf};
use ::dmirror::format::Superblock;
use ::dmirror::logdev::{assemble_log_into, LogAssembly, LogError, LogRead, LogSync, LogTable};
use core::ffi::{c_char, c_int};
use core::ptr;

/// See dmirror.h.
///
/// # Safety
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmirror_log_device_sectors(
    sector_size: u32,
    region_sectors: u64,
    data_sectors: u64,
    legs: u32,
    out: *mut u64,
) -> c_int {
    if out.is_null() || !out.is_aligned() {
        return DMIRROR_EINVAL;
    }
    let Ok(legs) = u8::try_from(legs) else {
        return DMIRROR_EINVAL;
    };
    match ::dmirror::format::log_device_sectors(sector_size, region_sectors, data_sectors, legs) {
        Ok(n) => {
            // SAFETY: checked non-NULL and aligned; the caller's contract makes it writable.
            unsafe { ptr::write(out, n) };
            0
        }
        Err(_) => DMIRROR_EINVAL,
    }
}

fn log_error(e: &LogError) -> Refusal {
    let r = |why| Refusal::inval(why);
    match *e {
        LogError::Table(_) => r(DMIRROR_WHY_DATA_SIZE),
        LogError::TooSmall { needed, .. } => Refusal {
            errno: DMIRROR_ENOSPC,
            value: needed,
            ..r(DMIRROR_WHY_LOG_TOO_SMALL)
        },
        LogError::Unreadable(_) => r(DMIRROR_WHY_LOG_UNREADABLE),
        LogError::SectorSize { recorded, .. } => Refusal {
            value: u64::from(recorded),
            ..r(DMIRROR_WHY_READ_SECTOR_SIZE)
        },
        LogError::Foreign { recorded, .. } => Refusal {
            value: recorded,
            ..r(DMIRROR_WHY_LOG_FOREIGN)
        },
        LogError::WrongSize { leg, recorded, .. } => Refusal {
            leg: u32::from(leg),
            value: recorded,
            ..r(DMIRROR_WHY_WRONG_SIZE)
        },
        LogError::NoUsableLeg => Refusal::leg(DMIRROR_ENXIO, DMIRROR_WHY_NO_USABLE_LEG, 0),
        LogError::IsALeg => r(DMIRROR_WHY_LOG_IS_A_LEG),
    }
}

/// See dmirror.h.
///
/// # Safety
/// Pointers NULL or valid for their types, as dmirror.h describes (`leg_sectors`: `cfg->legs`
/// values; `uuid`: 16 bytes; `msg`: `msg_len` writable bytes).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dmirror_assemble_log(
    log: *const dmirror_leg_read,
    tail: *const dmirror_leg_read,
    cfg: *const dmirror_config,
    leg_sectors: *const u64,
    sync: u32,
    uuid: *const u8,
    out: *mut dmirror_assembly,
    fresh: *mut u8,
    why: *mut dmirror_why,
    msg: *mut c_char,
    msg_len: u64,
) -> c_int {
    set_why(why, DMIRROR_WHY_NONE, 0);
    // SAFETY: the caller gives `msg_len` writable bytes at `msg` (or NULL).
    let mut text = unsafe { CBuf::from_c(msg, msg_len) };
    if out.is_null() || !out.is_aligned() || uuid.is_null() {
        return DMIRROR_EINVAL;
    }
    // SAFETY: caller's contract.
    let (Some(log), Some(c_cfg)) = (unsafe { (c_ref(log), c_ref(cfg)) }) else {
        return DMIRROR_EINVAL;
    };
    let mut c = *c_cfg;
    c.log = DMIRROR_REGION_LOG_DEVICE as u8;
    let cfg = match config_from_c(&c) {
        Ok(cfg) => cfg,
        Err(r) => {
            set_why_r(why, &r);
            return r.errno;
        }
    };
    let n = usize::from(cfg.legs);
    if leg_sectors.is_null() || !leg_sectors.is_aligned() || n == 0 || n > ::dmirror::MAX_LEGS {
        set_why(why, DMIRROR_WHY_LEG_COUNT, 0);
        return DMIRROR_EINVAL;
    }
    // SAFETY: the caller gives cfg->legs sizes.
    let sizes = unsafe { core::slice::from_raw_parts(leg_sectors, n) };
    let sync = match sync {
        DMIRROR_LOGDEV_SYNC_DEFAULT => LogSync::Default,
        DMIRROR_LOGDEV_SYNC_FORCE => LogSync::Force,
        DMIRROR_LOGDEV_NOSYNC => LogSync::Skip,
        _ => return DMIRROR_EINVAL,
    };
    // SAFETY: the caller's contract for the slot buffers.
    let (s0, s1) = unsafe {
        (
            c_bytes(log.slot0, log.slot0_len),
            c_bytes(log.slot1, log.slot1_len),
        )
    };
    let (Some(slot0), Some(slot1)) = (s0, s1) else {
        set_why(why, DMIRROR_WHY_LOG_UNREADABLE, 0);
        return DMIRROR_EINVAL;
    };
    // SAFETY: caller's contract (NULL or a valid struct with valid slot buffers).
    let tail = match unsafe { c_ref(tail) } {
        None => None,
        // SAFETY: as above.
        Some(t) => {
            match unsafe { (c_bytes(t.slot0, t.slot0_len), c_bytes(t.slot1, t.slot1_len)) } {
                (Some(a), Some(b)) => Some((a, b)),
                _ => return DMIRROR_EINVAL,
            }
        }
    };
    // SAFETY: the caller gives 16 readable bytes; u8 needs no alignment.
    let uuid = unsafe { ptr::read_unaligned(uuid.cast::<[u8; 16]>()) };
    let table = LogTable {
        leg_sectors: sizes,
        data_sectors: cfg.data_sectors,
        region_sectors: cfg.region_sectors,
        sector_size: cfg.sector_size,
        sync,
        uuid,
    };
    let read = LogRead {
        sectors: log.sectors,
        sector_size: log.sector_size,
        slot0,
        slot1,
        tail,
    };
    // Kernel stack: the answer (~2 KiB) is the one large local; the superblock being decoded
    // (~1.6 KiB) lives in the caller's `out` until the answer is written there.
    let mut a = LogAssembly::EMPTY;
    // SAFETY: `out` is non-NULL, aligned, and the caller's writable dmirror_assembly, at least as
    // large and as aligned as a Superblock (asserted below); nothing else refers to it during
    // this call. A valid Superblock is written before the reference is formed, and `out` is
    // overwritten (zeroed, then filled) below, after the last use of `scratch`.
    let scratch = unsafe {
        let w = out.cast::<Superblock>();
        w.write(Superblock::ZEROED);
        &mut *w
    };
    let res = assemble_log_into(&read, &table, scratch, &mut a);
    // SAFETY: checked non-NULL and aligned; every field is plain data: zero, then fill.
    let o = unsafe {
        ptr::write_bytes(out, 0, 1);
        &mut *out
    };
    if let Err(e) = res {
        let _ = core::fmt::Write::write_fmt(&mut text, format_args!("{e}"));
        let r = log_error(&e);
        set_why_r(why, &r);
        return r.errno;
    }
    // The table's pools and tuning, the log's read policy (a valid log) and the disk log kind.
    let mut run = cfg;
    if !a.fresh {
        run.read_policy = a.read_policy;
    }
    o.config = config_to_c(&run);
    // What LogAssembly::init(None, no tracking) gives, field by field (no intermediate Init: it
    // would be 2.4 KiB more of stack); the bitmaps stay NULL.
    o.init.mirror_uuid = a.mirror_uuid;
    o.init.name = a.name;
    o.init.generation = a.generation;
    o.init.seq = a.seq;
    o.init.authoritative = a.authoritative;
    for (c, l) in o.init.legs.iter_mut().zip(a.legs.iter()) {
        *c = leg_init_to_c(l);
    }
    for (i, (label, present)) in o
        .label
        .iter_mut()
        .zip(o.present.iter_mut())
        .enumerate()
        .take(n)
    {
        *label = i as u64;
        *present = 1;
    }
    o.bitmap_bytes = a.bitmap_bytes();
    // Always 0: dmirror_create_assembled() then reads the write-intent bitmap listed below (a
    // clean log's bitmap still holds the regions a shutdown kept for resync).
    o.clean = 0;
    if let Some(b) = a.dirty_read() {
        if let Some(d) = o.dirty.get_mut(0) {
            *d = dmirror_bitmap_read {
                sector: b.sector,
                sectors: b.sectors,
                leg: DMIRROR_LOGDEV_LEG,
                needed: 1,
            };
        }
    }
    for (k, t) in o.tracking.iter_mut().enumerate().take(n) {
        if let Some(b) = a.tracking_read(k as u8) {
            *t = dmirror_bitmap_read {
                sector: b.sector,
                sectors: b.sectors,
                leg: DMIRROR_LOGDEV_LEG,
                needed: 1,
            };
        }
    }
    if !fresh.is_null() {
        // SAFETY: the caller's optional out-parameter (u8: no alignment).
        unsafe { ptr::write(fresh, u8::from(a.fresh)) };
    }
    0
}

static_assertions::const_assert!(size_of::<Superblock>() <= size_of::<dmirror_assembly>());
static_assertions::const_assert!(align_of::<Superblock>() <= align_of::<dmirror_assembly>());

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_log_failed(m: *mut dmirror) -> c_int {
    // SAFETY: caller's contract.
    unsafe { with_mirror(m, |mir, _| c_int::from(mir.log_failed())) }
}
