//! The C entry points of `shim-c/dmirror_dm.h`: the device-mapper `mirror` target's table parser,
//! device check, `dmsetup table` / `dmsetup status` printers and `dmsetup message` parser, on top
//! of [`dmirror::dmtable`].
//!
//! The structures of that header are written out here by hand (bindgen in build.rs only reads
//! `dmirror.h`) and pinned with static assertions to the same sizes and offsets the C test
//! program (`tests/ffi/dm_test.c`) asserts with `_Static_assert`.
//!
//! A table crosses the ABI as pointers into the caller's parameter string; every entry point
//! that takes a table back ([`table_from_c`]) checks it as thoroughly as the parser would have
//! (counts, region size, UTF-8, no whitespace or control characters inside a device string), so
//! a struct the C side filled or changed itself cannot make the printers emit a table that would
//! not parse again.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int};
use core::fmt::Write;
use core::mem::{offset_of, size_of};

use ::dmirror::dmtable::{
    self, BufWriter, LegSpec, LogHealth, LogSpec, MirrorTable, TableError, Word, MAX_ARG_BYTES,
    MAX_REGION_SECTORS, MIN_REGION_SECTORS,
};
use ::dmirror::{Counters, ReadPolicy, Status, MAX_LEGS};
use static_assertions::const_assert_eq;

use crate::abi::{
    dmirror_read_policy, dmirror_status, DMIRROR_EINVAL, DMIRROR_ENOSPC, DMIRROR_READ_LOAD,
    DMIRROR_READ_PREFER, DMIRROR_READ_ROUND_ROBIN, DMIRROR_READ_SPLIT,
};
use crate::convert::leg_state_from_c;

pub const DMIRROR_DM_LOG_CORE: u32 = 0;
pub const DMIRROR_DM_LOG_DISK: u32 = 1;
pub const DMIRROR_DM_LOG_DMIRROR: u32 = 2;
pub const DMIRROR_DM_SYNC_DEFAULT: u32 = 0;
pub const DMIRROR_DM_SYNC_SYNC: u32 = 1;
pub const DMIRROR_DM_SYNC_NOSYNC: u32 = 2;
pub const DMIRROR_DM_FEATURE_HANDLE_ERRORS: u32 = 0x1;
pub const DMIRROR_DM_FEATURE_KEEP_LOG: u32 = 0x2;
pub const DMIRROR_DM_LOG_ALIVE: u32 = 0;
pub const DMIRROR_DM_LOG_FAILED: u32 = 1;
pub const DMIRROR_DM_LOG_FLUSH_FAILED: u32 = 2;
pub const DMIRROR_DM_MSG_FAIL: u32 = 1;
pub const DMIRROR_DM_MSG_REMOVE: u32 = 2;
pub const DMIRROR_DM_MSG_ADD: u32 = 3;
pub const DMIRROR_DM_MSG_POLICY: u32 = 4;

const_assert_eq!(dmtable::MAX_TABLE_BYTES, 4096);
const_assert_eq!(dmtable::MAX_ARG_BYTES, 255);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct dmirror_dm_leg {
    pub dev: *const c_char,
    pub dev_len: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct dmirror_dm_table {
    pub region_sectors: u64,
    pub log_dev: *const c_char,
    pub log_dev_len: u64,
    pub log_type: u32,
    pub sync: u32,
    pub features: u32,
    pub nlegs: u8,
    pub _pad: [u8; 3],
    pub legs: [dmirror_dm_leg; MAX_LEGS],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct dmirror_dm_message {
    pub kind: u32,
    pub leg: u32,
    pub dev: *const c_char,
    pub dev_len: u64,
    pub policy: dmirror_read_policy,
    pub incremental: u8,
    pub _pad: [u8; 7],
}

const_assert_eq!(size_of::<dmirror_dm_leg>(), 24);
const_assert_eq!(offset_of!(dmirror_dm_leg, dev_len), 8);
const_assert_eq!(offset_of!(dmirror_dm_leg, offset), 16);
const_assert_eq!(size_of::<dmirror_dm_table>(), 808);
const_assert_eq!(offset_of!(dmirror_dm_table, log_dev), 8);
const_assert_eq!(offset_of!(dmirror_dm_table, log_dev_len), 16);
const_assert_eq!(offset_of!(dmirror_dm_table, log_type), 24);
const_assert_eq!(offset_of!(dmirror_dm_table, sync), 28);
const_assert_eq!(offset_of!(dmirror_dm_table, features), 32);
const_assert_eq!(offset_of!(dmirror_dm_table, nlegs), 36);
const_assert_eq!(offset_of!(dmirror_dm_table, legs), 40);
const_assert_eq!(size_of::<dmirror_dm_message>(), 40);
const_assert_eq!(offset_of!(dmirror_dm_message, dev), 8);
const_assert_eq!(offset_of!(dmirror_dm_message, dev_len), 16);
const_assert_eq!(offset_of!(dmirror_dm_message, policy), 24);
const_assert_eq!(offset_of!(dmirror_dm_message, incremental), 32);

const LEG_ZERO: dmirror_dm_leg = dmirror_dm_leg {
    dev: core::ptr::null(),
    dev_len: 0,
    offset: 0,
};

const TABLE_ZERO: dmirror_dm_table = dmirror_dm_table {
    region_sectors: 0,
    log_dev: core::ptr::null(),
    log_dev_len: 0,
    log_type: 0,
    sync: 0,
    features: 0,
    nlegs: 0,
    _pad: [0; 3],
    legs: [LEG_ZERO; MAX_LEGS],
};

/// The caller's error buffer as a slice (empty when NULL or 0 bytes).
///
/// # Safety
/// `err` is NULL or valid for writes of `len` bytes.
unsafe fn out_buf<'a>(err: *mut c_char, len: usize) -> &'a mut [u8] {
    if err.is_null() || len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts_mut(err.cast::<u8>(), len) }
}

/// Write a one-line message into the caller's error buffer.
fn say(err: &mut [u8], args: core::fmt::Arguments<'_>) {
    let mut w = BufWriter::new(err);
    let _ = w.write_fmt(args);
}

/// # Safety
/// `p` is valid for reads of `len` bytes when not NULL.
unsafe fn c_str_slice<'a>(p: *const c_char, len: u64) -> Option<&'a str> {
    let len = usize::try_from(len).ok()?;
    if p.is_null() || len == 0 || len > MAX_ARG_BYTES {
        return None;
    }
    // SAFETY: the caller's contract.
    let bytes = unsafe { core::slice::from_raw_parts(p.cast::<u8>(), len) };
    let s = core::str::from_utf8(bytes).ok()?;
    // A device string is one table argument: no separators, no control characters.
    if s.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return None;
    }
    Some(s)
}

/// A NUL-terminated C string of at most MAX_ARG_BYTES bytes, checked as a table argument.
///
/// # Safety
/// `p` is a NUL-terminated string (read only up to MAX_ARG_BYTES + 1 bytes).
unsafe fn c_name<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    let mut n: usize = 0;
    loop {
        // SAFETY: the string is NUL-terminated; we stop at the NUL or at the bound.
        let b = unsafe { *p.add(n) };
        if b == 0 {
            break;
        }
        n = n.checked_add(1)?;
        if n > MAX_ARG_BYTES {
            return None;
        }
    }
    // SAFETY: n bytes before the NUL were just read.
    unsafe { c_str_slice(p, n as u64) }
}

/// Rebuild a [`MirrorTable`] from the C struct, refusing anything the parser would not produce.
///
/// # Safety
/// Every non-NULL string pointer of `t` is valid for its length.
pub unsafe fn table_from_c<'t>(t: &dmirror_dm_table) -> Option<MirrorTable<'t>> {
    let sync = match t.sync {
        DMIRROR_DM_SYNC_DEFAULT => dmtable::Sync::Default,
        DMIRROR_DM_SYNC_SYNC => dmtable::Sync::Sync,
        DMIRROR_DM_SYNC_NOSYNC => dmtable::Sync::NoSync,
        _ => return None,
    };
    let r = t.region_sectors;
    let region_ok = r.is_power_of_two() && (MIN_REGION_SECTORS..=MAX_REGION_SECTORS).contains(&r);
    let log = match t.log_type {
        DMIRROR_DM_LOG_CORE if region_ok => LogSpec::Core {
            region_sectors: r,
            sync,
        },
        DMIRROR_DM_LOG_DMIRROR if region_ok || r == 0 => LogSpec::Dmirror {
            region_sectors: r,
            sync,
        },
        DMIRROR_DM_LOG_DISK if region_ok => LogSpec::Disk {
            // SAFETY: the caller's contract.
            dev: unsafe { c_str_slice(t.log_dev, t.log_dev_len) }?,
            region_sectors: r,
            sync,
        },
        _ => return None,
    };
    let n = usize::from(t.nlegs);
    if n == 0 || n > MAX_LEGS {
        return None;
    }
    let mut legs = [LegSpec::UNUSED; MAX_LEGS];
    for (slot, c) in legs.iter_mut().zip(t.legs.iter()).take(n) {
        *slot = LegSpec {
            // SAFETY: the caller's contract.
            dev: unsafe { c_str_slice(c.dev, c.dev_len) }?,
            offset: c.offset,
        };
    }
    // The parser refuses a device named twice (two legs, or a leg and the log).
    let used = legs.get(..n)?;
    for (i, a) in used.iter().enumerate() {
        let dup_leg = used
            .iter()
            .skip(i.saturating_add(1))
            .any(|b| b.dev == a.dev);
        let dup_log = matches!(log, LogSpec::Disk { dev, .. } if dev == a.dev);
        if dup_leg || dup_log {
            return None;
        }
    }
    let features = t.features;
    if features & !(DMIRROR_DM_FEATURE_HANDLE_ERRORS | DMIRROR_DM_FEATURE_KEEP_LOG) != 0 {
        return None;
    }
    let handle_errors = features & DMIRROR_DM_FEATURE_HANDLE_ERRORS != 0;
    let keep_log = features & DMIRROR_DM_FEATURE_KEEP_LOG != 0;
    if keep_log && !handle_errors {
        return None;
    }
    Some(MirrorTable {
        log,
        nlegs: t.nlegs,
        legs,
        handle_errors,
        keep_log,
    })
}

fn table_to_c(t: &MirrorTable<'_>, out: &mut dmirror_dm_table) {
    *out = TABLE_ZERO;
    out.region_sectors = t.log.region_sectors();
    out.log_type = match t.log {
        LogSpec::Core { .. } => DMIRROR_DM_LOG_CORE,
        LogSpec::Disk { dev, .. } => {
            out.log_dev = dev.as_ptr().cast();
            out.log_dev_len = dev.len() as u64;
            DMIRROR_DM_LOG_DISK
        }
        LogSpec::Dmirror { .. } => DMIRROR_DM_LOG_DMIRROR,
    };
    out.sync = match t.log.sync() {
        dmtable::Sync::Default => DMIRROR_DM_SYNC_DEFAULT,
        dmtable::Sync::Sync => DMIRROR_DM_SYNC_SYNC,
        dmtable::Sync::NoSync => DMIRROR_DM_SYNC_NOSYNC,
    };
    out.features = if t.handle_errors {
        DMIRROR_DM_FEATURE_HANDLE_ERRORS
    } else {
        0
    } | if t.keep_log {
        DMIRROR_DM_FEATURE_KEEP_LOG
    } else {
        0
    };
    out.nlegs = t.nlegs;
    for (c, l) in out.legs.iter_mut().zip(t.used_legs()) {
        c.dev = l.dev.as_ptr().cast();
        c.dev_len = l.dev.len() as u64;
        c.offset = l.offset;
    }
}

/// See `dmirror_dm_parse` in dmirror_dm.h.
///
/// # Safety
/// `params` valid for `len` bytes (may be NULL only with len 0); `out` valid for writes;
/// `err` NULL or valid for `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn dmirror_dm_parse(
    params: *const c_char,
    len: usize,
    out: *mut dmirror_dm_table,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    let err = unsafe { out_buf(err, errlen) };
    // SAFETY: NULL or valid for writes.
    let Some(out) = (unsafe { out.as_mut() }) else {
        say(err, format_args!("no table structure to fill (NULL)"));
        return DMIRROR_EINVAL;
    };
    *out = TABLE_ZERO;
    let bytes: &[u8] = if len == 0 {
        &[]
    } else if params.is_null() {
        say(err, format_args!("no parameter string (NULL)"));
        return DMIRROR_EINVAL;
    } else {
        // SAFETY: the caller's contract.
        unsafe { core::slice::from_raw_parts(params.cast::<u8>(), len) }
    };
    match dmtable::parse_bytes(bytes) {
        Ok(t) => {
            table_to_c(&t, out);
            0
        }
        Err(e) => {
            dmtable::write_message(&e, err);
            DMIRROR_EINVAL
        }
    }
}

/// See `dmirror_dm_region_sectors` in dmirror_dm.h.
///
/// # Safety
/// `t` a table from `dmirror_dm_parse` whose parameter string is still alive; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn dmirror_dm_region_sectors(
    t: *const dmirror_dm_table,
    target_sectors: u64,
    out: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract.
    let (Some(t), Some(out)) = (unsafe { t.as_ref() }, unsafe { out.as_mut() }) else {
        return DMIRROR_EINVAL;
    };
    // SAFETY: the caller's contract.
    let Some(table) = (unsafe { table_from_c(t) }) else {
        return DMIRROR_EINVAL;
    };
    *out = table.effective_region_sectors(target_sectors);
    0
}

/// See `dmirror_dm_check_devices` in dmirror_dm.h.
///
/// # Safety
/// `t` as for `dmirror_dm_region_sectors`; `dev_sectors` valid for `ndev` u64s; `err` NULL or
/// valid for `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn dmirror_dm_check_devices(
    t: *const dmirror_dm_table,
    target_sectors: u64,
    dev_sectors: *const u64,
    ndev: u32,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    let err = unsafe { out_buf(err, errlen) };
    // SAFETY: the caller's contract.
    let Some(table) = (unsafe { t.as_ref() }).and_then(|t| unsafe { table_from_c(t) }) else {
        say(err, format_args!("invalid table structure"));
        return DMIRROR_EINVAL;
    };
    let sizes: &[u64] = if ndev == 0 {
        &[]
    } else if dev_sectors.is_null() {
        say(err, format_args!("no device sizes (NULL)"));
        return DMIRROR_EINVAL;
    } else {
        // SAFETY: the caller's contract.
        unsafe { core::slice::from_raw_parts(dev_sectors, ndev as usize) }
    };
    // Counts, offsets and data sizes first (metadata 0): their messages are the clearest.
    if let Err(e) = dmtable::check_devices(&table, target_sectors, sizes, 0) {
        dmtable::write_message(&e, err);
        return DMIRROR_EINVAL;
    }
    // The dmirror log keeps superblocks and bitmaps after the data, at the end of each leg;
    // where exactly depends on the leg's size (the slots are aligned at its end), so the check is
    // the metadata layout itself, leg by leg.
    if let LogSpec::Dmirror { .. } = table.log {
        let region = table.effective_region_sectors(target_sectors);
        for (i, (leg, &size)) in table.used_legs().iter().zip(sizes).enumerate() {
            let leg_sectors = size.saturating_sub(leg.offset);
            if let Err(e) = ::dmirror::format::layout(leg_sectors, 512, region, target_sectors) {
                let need = match e {
                    ::dmirror::format::FormatError::LegTooSmall { needed, .. } => {
                        needed.saturating_add(leg.offset)
                    }
                    _ => u64::MAX,
                };
                let te = TableError::DeviceTooSmall {
                    leg: i as u8,
                    dev: Word::new(leg.dev),
                    need,
                    dev_sectors: size,
                };
                dmtable::write_message(&te, err);
                return DMIRROR_EINVAL;
            }
        }
    }
    0
}

/// Read the caller's name array: `names[i]` (checked) or None to keep the table's string.
///
/// # Safety
/// `names` NULL or valid for `n` pointers, each NULL or a NUL-terminated string.
unsafe fn names_from_c(
    names: *const *const c_char,
    n: u32,
    out: &mut [&str; MAX_LEGS + 1],
) -> Result<usize, ()> {
    if names.is_null() || n == 0 {
        return Ok(0);
    }
    let n = (n as usize).min(MAX_LEGS + 1);
    let mut used = 0;
    for (i, slot) in out.iter_mut().enumerate().take(n) {
        // SAFETY: the caller's contract (i < n).
        let p = unsafe { *names.add(i) };
        if p.is_null() {
            // Keep the table's string: an empty name means "not given" to the printers below.
            *slot = "";
        } else {
            // SAFETY: the caller's contract.
            *slot = unsafe { c_name(p) }.ok_or(())?;
        }
        used = i.saturating_add(1);
    }
    Ok(used)
}

/// Substitute the given names into a copy of the table (for format_table).
/// Substitute the caller's device names into the table, in place (a copy of the table would be
/// another ~0.8 KiB of kernel stack).
fn rename<'a>(t: &mut MirrorTable<'a>, names: &[&'a str]) {
    let n = usize::from(t.nlegs);
    for (leg, name) in t.legs.iter_mut().zip(names.iter()).take(n) {
        if !name.is_empty() {
            leg.dev = name;
        }
    }
    if let (LogSpec::Disk { dev, .. }, Some(name)) = (&mut t.log, names.get(n)) {
        if !name.is_empty() {
            *dev = name;
        }
    }
}

fn finish(w: &BufWriter<'_>, r: core::fmt::Result) -> c_int {
    if w.truncated() || r.is_err() {
        DMIRROR_ENOSPC
    } else {
        0
    }
}

/// See `dmirror_dm_format_table` in dmirror_dm.h.
///
/// # Safety
/// `t` as for `dmirror_dm_region_sectors`; `dev_names` as for [`names_from_c`]; `buf` NULL or
/// valid for `buflen` bytes.
#[no_mangle]
pub unsafe extern "C" fn dmirror_dm_format_table(
    t: *const dmirror_dm_table,
    dev_names: *const *const c_char,
    nnames: u32,
    buf: *mut c_char,
    buflen: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    let out = unsafe { out_buf(buf, buflen) };
    let mut w = BufWriter::new(out);
    // SAFETY: the caller's contract.
    let Some(mut table) = (unsafe { t.as_ref() }).and_then(|t| unsafe { table_from_c(t) }) else {
        return DMIRROR_EINVAL;
    };
    let mut names = [""; MAX_LEGS + 1];
    // SAFETY: the caller's contract.
    let Ok(n) = (unsafe { names_from_c(dev_names, nnames, &mut names) }) else {
        return DMIRROR_EINVAL;
    };
    rename(&mut table, names.get(..n).unwrap_or(&[]));
    // Two names may now be the same string (a path and its major:minor are the caller's to
    // compare); the printer does not care, and the output is what the caller asked for.
    let r = dmtable::format_table(&table, &mut w);
    finish(&w, r)
}

/// The core's view of a C status, into `out` (a `Status` is ~2.2 KiB: no temporary of it).
/// `None` for an unknown leg state.
fn status_from_c(st: &dmirror_status, out: &mut Status) -> Option<()> {
    for (l, c) in out.leg.iter_mut().zip(st.leg.iter()) {
        l.state = leg_state_from_c(c.state)?;
        l.inflight = c.inflight;
        l.regions_out_of_sync = c.regions_out_of_sync;
        l.resync_done = c.resync_done;
        l.resync_total = c.resync_total;
        l.reads = c.reads;
        l.writes = c.writes;
        l.errors = c.errors;
        l.repairs = c.repairs;
    }
    out.legs = st.legs;
    out.authoritative = st.authoritative;
    out.generation = st.generation;
    out.regions = st.regions;
    out.regions_in_sync = st.regions_in_sync;
    out.dirty_regions = st.dirty_regions;
    out.inflight_parents = st.inflight_parents;
    out.inflight_leg_ios = st.inflight_leg_ios;
    // Not printed: dm-mirror's status line has no counters or policy.
    out.counters = Counters::default();
    out.read_policy = ReadPolicy::default();
    Some(())
}

/// See `dmirror_dm_format_status` in dmirror_dm.h.
///
/// # Safety
/// `st` valid; others as for [`dmirror_dm_format_table`].
#[no_mangle]
pub unsafe extern "C" fn dmirror_dm_format_status(
    st: *const dmirror_status,
    t: *const dmirror_dm_table,
    dev_names: *const *const c_char,
    nnames: u32,
    log_health: u32,
    buf: *mut c_char,
    buflen: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    let out = unsafe { out_buf(buf, buflen) };
    let mut w = BufWriter::new(out);
    // SAFETY: the caller's contract.
    let Some(mut table) = (unsafe { t.as_ref() }).and_then(|t| unsafe { table_from_c(t) }) else {
        return DMIRROR_EINVAL;
    };
    let mut status = Status::EMPTY;
    // SAFETY: the caller's contract.
    let Some(st) = (unsafe { st.as_ref() }) else {
        return DMIRROR_EINVAL;
    };
    if status_from_c(st, &mut status).is_none() {
        return DMIRROR_EINVAL;
    }
    let health = match log_health {
        DMIRROR_DM_LOG_ALIVE => LogHealth::Alive,
        DMIRROR_DM_LOG_FAILED => LogHealth::Failed,
        DMIRROR_DM_LOG_FLUSH_FAILED => LogHealth::FlushFailed,
        _ => return DMIRROR_EINVAL,
    };
    let mut names = [""; MAX_LEGS + 1];
    // SAFETY: the caller's contract.
    let Ok(n) = (unsafe { names_from_c(dev_names, nnames, &mut names) }) else {
        return DMIRROR_EINVAL;
    };
    // format_status takes names by position; substitute into the table so that a NULL entry
    // keeps the table's string.
    rename(&mut table, names.get(..n).unwrap_or(&[]));
    let r = dmtable::format_status(&status, &table, &[], health, &mut w);
    finish(&w, r)
}

/// Resolve `<leg>`: an index below nlegs, or a device string exactly as the table has it.
fn resolve_leg(table: &MirrorTable<'_>, word: &str) -> Option<u32> {
    if let Some(i) = parse_u32(word) {
        return (i < u32::from(table.nlegs)).then_some(i);
    }
    table
        .used_legs()
        .iter()
        .position(|l| l.dev == word)
        .and_then(|i| u32::try_from(i).ok())
}

fn parse_u32(word: &str) -> Option<u32> {
    if word.is_empty() || word.len() > 10 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

/// See `dmirror_dm_parse_message` in dmirror_dm.h.
///
/// # Safety
/// `t` as for `dmirror_dm_region_sectors`; `msg` valid for `len` bytes; `out` valid for writes;
/// `err` NULL or valid for `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn dmirror_dm_parse_message(
    t: *const dmirror_dm_table,
    msg: *const c_char,
    len: usize,
    out: *mut dmirror_dm_message,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    let err = unsafe { out_buf(err, errlen) };
    // SAFETY: the caller's contract.
    let Some(table) = (unsafe { t.as_ref() }).and_then(|t| unsafe { table_from_c(t) }) else {
        say(err, format_args!("invalid table structure"));
        return DMIRROR_EINVAL;
    };
    // SAFETY: NULL or valid for writes.
    let Some(out) = (unsafe { out.as_mut() }) else {
        say(err, format_args!("no message structure to fill (NULL)"));
        return DMIRROR_EINVAL;
    };
    *out = dmirror_dm_message {
        kind: 0,
        leg: 0,
        dev: core::ptr::null(),
        dev_len: 0,
        policy: dmirror_read_policy { kind: 0, arg: 0 },
        incremental: 0,
        _pad: [0; 7],
    };
    if len > MAX_ARG_BYTES.saturating_mul(4) || (msg.is_null() && len != 0) {
        say(err, format_args!("message too long ({len} bytes)"));
        return DMIRROR_EINVAL;
    }
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { core::slice::from_raw_parts(msg.cast::<u8>(), len) }
    };
    let Ok(text) = core::str::from_utf8(bytes) else {
        say(err, format_args!("message is not UTF-8 text"));
        return DMIRROR_EINVAL;
    };
    match parse_message(&table, text, out) {
        Ok(()) => 0,
        Err(m) => {
            say(err, format_args!("{m}"));
            DMIRROR_EINVAL
        }
    }
}

/// Why a message was refused.
enum MsgError<'m> {
    Empty,
    Unknown(&'m str),
    Usage(&'static str),
    NoSuchLeg(&'m str),
    BadDevice(&'m str),
    BadNumber(&'m str),
    UnknownPolicy(&'m str),
}

impl core::fmt::Display for MsgError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MsgError::Empty => f.write_str("empty message"),
            MsgError::Unknown(w) => write!(
                f,
                "unknown message '{}' (expected fail, remove, add or policy)",
                Word::new(w)
            ),
            MsgError::Usage(u) => write!(f, "usage: {u}"),
            MsgError::NoSuchLeg(w) => write!(
                f,
                "no leg '{}' (give an index or the device as in the table)",
                Word::new(w)
            ),
            MsgError::BadDevice(w) => write!(f, "invalid device '{}'", Word::new(w)),
            MsgError::BadNumber(w) => write!(f, "invalid number '{}'", Word::new(w)),
            MsgError::UnknownPolicy(w) => write!(
                f,
                "unknown read policy '{}' (expected round_robin, load, prefer or split)",
                Word::new(w)
            ),
        }
    }
}

fn parse_message<'m>(
    table: &MirrorTable<'_>,
    text: &'m str,
    out: &mut dmirror_dm_message,
) -> Result<(), MsgError<'m>> {
    let mut words = text.split_ascii_whitespace();
    let cmd = words.next().ok_or(MsgError::Empty)?;
    let w: [Option<&str>; 3] = [words.next(), words.next(), words.next()];
    let extra = words.next().is_some();
    let leg = |word: Option<&'m str>, usage| -> Result<u32, MsgError<'m>> {
        let word = word.ok_or(MsgError::Usage(usage))?;
        resolve_leg(table, word).ok_or(MsgError::NoSuchLeg(word))
    };
    match cmd {
        "fail" | "remove" => {
            let usage = if cmd == "fail" {
                "fail <leg>"
            } else {
                "remove <leg>"
            };
            if w[1].is_some() || extra {
                return Err(MsgError::Usage(usage));
            }
            out.kind = if cmd == "fail" {
                DMIRROR_DM_MSG_FAIL
            } else {
                DMIRROR_DM_MSG_REMOVE
            };
            out.leg = leg(w[0], usage)?;
        }
        "add" => {
            const USAGE: &str = "add <leg> <dev> [full]";
            if extra {
                return Err(MsgError::Usage(USAGE));
            }
            out.kind = DMIRROR_DM_MSG_ADD;
            out.leg = leg(w[0], USAGE)?;
            let dev = w[1].ok_or(MsgError::Usage(USAGE))?;
            // SAFETY: dev is a live str.
            if unsafe { c_str_slice(dev.as_ptr().cast(), dev.len() as u64) }.is_none() {
                return Err(MsgError::BadDevice(dev));
            }
            out.dev = dev.as_ptr().cast();
            out.dev_len = dev.len() as u64;
            out.incremental = match w[2] {
                None => 1,
                Some("full") => 0,
                Some(_) => return Err(MsgError::Usage(USAGE)),
            };
        }
        "policy" => {
            const USAGE: &str = "policy round_robin [batch] | load | prefer <leg> | split [min]";
            if extra || w[2].is_some() {
                return Err(MsgError::Usage(USAGE));
            }
            let name = w[0].ok_or(MsgError::Usage(USAGE))?;
            let num = |d: u32| -> Result<u32, MsgError<'m>> {
                match w[1] {
                    None => Ok(d),
                    Some(s) => match parse_u32(s) {
                        Some(v) if v > 0 => Ok(v),
                        _ => Err(MsgError::BadNumber(s)),
                    },
                }
            };
            out.kind = DMIRROR_DM_MSG_POLICY;
            out.policy = match name {
                "round_robin" => dmirror_read_policy {
                    kind: DMIRROR_READ_ROUND_ROBIN,
                    arg: num(8)?,
                },
                "load" if w[1].is_none() => dmirror_read_policy {
                    kind: DMIRROR_READ_LOAD,
                    arg: 0,
                },
                "load" => return Err(MsgError::Usage(USAGE)),
                "prefer" => dmirror_read_policy {
                    kind: DMIRROR_READ_PREFER,
                    arg: leg(w[1], USAGE)?,
                },
                "split" => dmirror_read_policy {
                    kind: DMIRROR_READ_SPLIT,
                    arg: num(256)?,
                },
                other => return Err(MsgError::UnknownPolicy(other)),
            };
        }
        other => return Err(MsgError::Unknown(other)),
    }
    Ok(())
}
