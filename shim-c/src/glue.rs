//! The entry points of `dmirror.h` and the `Host` the core talks to.
//!
//! # Memory and soundness
//! `dmirror_create` asks the shim's `alloc` for one block: a [`Glue`] header (aligned to
//! [`GLUE_ALIGN`]) followed by the core's memory. The core's `Mirror<'static>` borrows that tail
//! as `&'static mut [u8]`. The `'static` is a promise this file keeps by construction: the block
//! is freed in exactly one place, `dmirror_destroy`, which first drops the `Mirror` (ending the
//! borrow) and refuses to run unless the mirror is idle (no leg I/O still references core-owned
//! metadata bytes). No other reference to the tail is ever created.
//!
//! `struct dmirror *` is a `*mut Glue`. The glue never forms a `&mut Glue`: each entry point
//! forms a `&mut` to the `mirror` field only, and reads or writes the other fields through raw
//! pointers. So a shim that wrongly re-enters from a callback hits the `in_core` check (a field
//! disjoint from the borrowed `mirror`) and gets `DMIRROR_EDEADLK`, instead of the glue creating
//! a second `&mut Mirror` (undefined behaviour).
//!
//! # Panics
//! None of these functions can panic: every pointer is checked for NULL and alignment, every
//! length is bounded, arithmetic is checked, and nothing indexes. The crate denies the lints that
//! would let such code in (see lib.rs).
use crate::abi::*;
use crate::convert::*;
use ::dmirror::assemble::{LegRead, Legs};
use ::dmirror::{Config, Event, Host, Init, IoResult, LegIo, Mirror, ParentHandle, Token};
use core::ffi::{c_char, c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr::{self, addr_of, addr_of_mut};

/// Alignment the header promises for `alloc` results, and the alignment of the core's memory.
pub const GLUE_ALIGN: usize = 16;

/// "DMIRGLUE": marks a live handle; cleared by destroy.
const MAGIC: u64 = 0x444d_4952_474c_5545;

/// The callbacks, with the required ones checked present at create.
#[derive(Clone, Copy)]
struct Ops {
    alloc: unsafe extern "C" fn(*mut c_void, usize, c_int) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void, *mut c_void, usize),
    lock: Option<unsafe extern "C" fn(*mut c_void)>,
    unlock: Option<unsafe extern "C" fn(*mut c_void)>,
    issue: unsafe extern "C" fn(*mut c_void, *const dmirror_leg_io),
    complete: unsafe extern "C" fn(*mut c_void, u64, c_int),
    event: Option<unsafe extern "C" fn(*mut c_void, *const dmirror_event)>,
    meta_read: Option<unsafe extern "C" fn(*mut c_void, u32, u64, *mut u8, u64) -> c_int>,
    log: Option<unsafe extern "C" fn(*mut c_void, c_int, *const c_char)>,
}

impl Ops {
    fn from_c(o: &dmirror_host_ops) -> Option<Ops> {
        // lock and unlock come as a pair or not at all.
        if o.lock.is_some() != o.unlock.is_some() {
            return None;
        }
        Some(Ops {
            alloc: o.alloc?,
            free: o.free?,
            lock: o.lock,
            unlock: o.unlock,
            issue: o.issue?,
            complete: o.complete?,
            event: o.event,
            meta_read: o.meta_read,
            log: o.log,
        })
    }
}

/// What `struct dmirror *` points to.
pub struct Glue {
    magic: u64,
    ops: Ops,
    ctx: *mut c_void,
    /// Bytes allocated (what `free` is given back).
    alloc_size: usize,
    /// Set while the core runs inside an entry point (re-entry detection).
    in_core: bool,
    /// Always `Some` in a live handle: `Mirror::new_in` builds the mirror in place here.
    mirror: Option<Mirror<'static>>,
}

static_assertions::const_assert!(align_of::<Glue>() <= GLUE_ALIGN);

/// Offset of the core's memory in the block: the header rounded up to GLUE_ALIGN.
const CORE_OFFSET: usize = size_of::<Glue>().div_ceil(GLUE_ALIGN) * GLUE_ALIGN;

/// The `Host` the core calls: forwards to the shim's callbacks.
pub(crate) struct GlueHost {
    ops: Ops,
    ctx: *mut c_void,
}

impl Host for GlueHost {
    fn issue(&mut self, io: &LegIo<'_>) {
        let c = leg_io_to_c(io);
        // SAFETY: the callback was checked present; `c` lives across the call, as the header
        // promises (valid only during the callback).
        unsafe { (self.ops.issue)(self.ctx, &c) }
    }

    fn complete(&mut self, parent: ParentHandle, result: IoResult) {
        // SAFETY: checked present at create; plain values.
        unsafe { (self.ops.complete)(self.ctx, parent, result_to_c(result)) }
    }

    fn event(&mut self, event: Event) {
        if let Some(f) = self.ops.event {
            let c = event_to_c(event);
            // SAFETY: `c` outlives the call.
            unsafe { f(self.ctx, &c) }
        }
    }
}

/// Log `prefix` followed by `detail` through the shim's log callback, if any. Truncates to fit a
/// small stack buffer; always NUL-terminated.
fn log2(ops: &Ops, ctx: *mut c_void, level: c_int, prefix: &[u8], detail: &[u8]) {
    let Some(f) = ops.log else { return };
    let mut buf = [0u8; 128];
    let mut n = 0usize;
    for (dst, src) in buf
        .iter_mut()
        .take(127)
        .zip(prefix.iter().chain(detail.iter()))
    {
        *dst = *src;
        n = n.saturating_add(1);
    }
    let _ = n;
    // SAFETY: `buf` is NUL-terminated (its last byte is never written) and outlives the call.
    unsafe { f(ctx, level, buf.as_ptr().cast()) }
}

pub(crate) fn set_why(why: *mut dmirror_why, code: u32, leg: u32) {
    set_why_r(why, &Refusal::leg(0, code, leg));
}

pub(crate) fn set_why_r(why: *mut dmirror_why, r: &Refusal) {
    if !why.is_null() && why.is_aligned() {
        let w = dmirror_why {
            code: r.why,
            leg: r.leg,
            value: r.value,
        };
        // SAFETY: non-NULL, aligned; the header makes it a valid out-parameter.
        unsafe { ptr::write(why, w) }
    }
}

/// A readable, aligned `&T` from a C pointer, or `None`.
///
/// # Safety
/// If non-NULL and aligned, `p` must point to a valid `T` for `'a` (the caller's C contract).
pub(crate) unsafe fn c_ref<'a, T>(p: *const T) -> Option<&'a T> {
    if p.is_null() || !p.is_aligned() {
        return None;
    }
    // SAFETY: forwarded contract.
    Some(unsafe { &*p })
}

/// The glue of a handle, if it looks like a live one.
///
/// # Safety
/// `m` is NULL or a pointer the shim got from `dmirror_create` and has not destroyed.
unsafe fn glue(m: *mut dmirror) -> Option<*mut Glue> {
    let g = m.cast::<Glue>();
    if g.is_null() || !g.is_aligned() {
        return None;
    }
    // SAFETY: a live handle points to an initialized Glue; `magic` is only written by create and
    // destroy, which the shim does not run concurrently with this.
    if unsafe { ptr::read(addr_of!((*g).magic)) } != MAGIC {
        return None;
    }
    Some(g)
}

/// Run `f` on the mirror behind `m` under the shim's lock, refusing re-entry.
///
/// # Safety
/// `m` as for [`glue`].
pub(crate) unsafe fn with_mirror(
    m: *mut dmirror,
    f: impl FnOnce(&mut Mirror<'static>, &mut GlueHost) -> c_int,
) -> c_int {
    // SAFETY: forwarded.
    let Some(g) = (unsafe { glue(m) }) else {
        return DMIRROR_EINVAL;
    };
    // SAFETY: `ops` and `ctx` are written once at create and only read afterwards.
    let (ops, ctx) = unsafe { (ptr::read(addr_of!((*g).ops)), ptr::read(addr_of!((*g).ctx))) };
    if let Some(lock) = ops.lock {
        // SAFETY: the shim's callback with its own ctx.
        unsafe { lock(ctx) }
    }
    // SAFETY: `g` is a live Glue (checked by `glue`); no reference is formed.
    let in_core = unsafe { addr_of_mut!((*g).in_core) };
    // SAFETY: `in_core` is a field disjoint from `mirror`; access is serialized by the shim (its
    // lock, or its single thread), so this read/write does not race.
    let rc = if unsafe { ptr::read(in_core) } {
        DMIRROR_EDEADLK
    } else {
        // SAFETY: as above.
        unsafe { ptr::write(in_core, true) };
        let mut host = GlueHost { ops, ctx };
        // SAFETY: the only `&mut` to the mirror field; no other exists (in_core was false, and
        // calls are serialized), and it does not outlive this call.
        let rc = match unsafe { &mut *addr_of_mut!((*g).mirror) } {
            Some(mirror) => f(mirror, &mut host),
            None => DMIRROR_EINVAL,
        };
        // SAFETY: as above.
        unsafe { ptr::write(in_core, false) };
        rc
    };
    if let Some(unlock) = ops.unlock {
        // SAFETY: paired with the lock above.
        unsafe { unlock(ctx) }
    }
    rc
}

// ---- configuration helpers ----

/// See dmirror.h.
///
/// # Safety
/// `cfg` is NULL or points to writable memory for a `struct dmirror_config`.
#[no_mangle]
pub unsafe extern "C" fn dmirror_config_default(
    cfg: *mut dmirror_config,
    legs: u8,
    data_sectors: u64,
) -> c_int {
    if cfg.is_null() || !cfg.is_aligned() || legs == 0 || usize::from(legs) > ::dmirror::MAX_LEGS {
        return DMIRROR_EINVAL;
    }
    let c = config_to_c(&::dmirror::Config::new(legs, data_sectors));
    // SAFETY: checked non-NULL and aligned; the caller's contract makes it writable.
    unsafe { ptr::write(cfg, c) };
    0
}

/// Bytes the glue allocates for this configuration (core memory + header).
fn block_size(cfg: &Config) -> Result<usize, Refusal> {
    let core = Mirror::memory_needed(cfg).map_err(config_error)?;
    core.checked_add(CORE_OFFSET)
        .ok_or(Refusal::leg(DMIRROR_ENOMEM, DMIRROR_WHY_MEMORY, 0))
}

/// See dmirror.h.
///
/// # Safety
/// Pointers NULL or valid for their types.
#[no_mangle]
pub unsafe extern "C" fn dmirror_memory_needed(
    cfg: *const dmirror_config,
    bytes: *mut u64,
    why: *mut dmirror_why,
) -> c_int {
    set_why(why, DMIRROR_WHY_NONE, 0);
    // SAFETY: caller's contract.
    let Some(c) = (unsafe { c_ref(cfg) }) else {
        return DMIRROR_EINVAL;
    };
    if bytes.is_null() || !bytes.is_aligned() {
        return DMIRROR_EINVAL;
    }
    match config_from_c(c).and_then(|cfg| block_size(&cfg)) {
        Ok(n) => {
            // SAFETY: checked; usize fits u64 on every supported target.
            unsafe { ptr::write(bytes, n as u64) };
            0
        }
        Err(r) => {
            set_why_r(why, &r);
            r.errno
        }
    }
}

/// See dmirror.h.
///
/// # Safety
/// `init` is NULL or points to writable memory for a `struct dmirror_init`.
#[no_mangle]
pub unsafe extern "C" fn dmirror_init_fresh(
    init: *mut dmirror_init,
    legs: u8,
    leg_sectors: u64,
    assume_clean: c_int,
) -> c_int {
    if init.is_null() || !init.is_aligned() || legs == 0 || usize::from(legs) > ::dmirror::MAX_LEGS
    {
        return DMIRROR_EINVAL;
    }
    let mut fresh = Init::EMPTY;
    fresh.fresh_into(legs, leg_sectors, assume_clean != 0);
    // SAFETY: checked non-NULL and aligned; every field is plain data (pointers set to NULL by
    // init_to_c), so writing a zeroed value first and then filling it is sound.
    let out = unsafe {
        ptr::write_bytes(init, 0, 1);
        &mut *init
    };
    init_to_c(&fresh, out);
    0
}

/// See dmirror.h.
#[no_mangle]
pub extern "C" fn dmirror_why_str(code: u32) -> *const c_char {
    why_bytes(code).as_ptr().cast()
}

fn why_bytes(code: u32) -> &'static [u8] {
    match code {
        DMIRROR_WHY_NONE => b"no error\0",
        DMIRROR_WHY_ABI_VERSION => b"ABI version mismatch between shim and core\0",
        DMIRROR_WHY_LEG_COUNT => b"leg count not in 1..32\0",
        DMIRROR_WHY_SECTOR_SIZE => b"sector size not a power of two in 512..65536\0",
        DMIRROR_WHY_REGION_SIZE => b"bad region size\0",
        DMIRROR_WHY_DATA_SIZE => b"bad data size\0",
        DMIRROR_WHY_READ_POLICY => b"bad read policy\0",
        DMIRROR_WHY_POOL_SIZE => b"bad pool size\0",
        DMIRROR_WHY_RESYNC => b"bad resync parameters\0",
        DMIRROR_WHY_MEMORY => b"memory size overflow\0",
        DMIRROR_WHY_LEG_TOO_SMALL => b"leg device too small for data and metadata\0",
        DMIRROR_WHY_INITIAL_STATE => b"initial state inconsistent with configuration\0",
        DMIRROR_WHY_LOG_KIND => b"unknown region log kind\0",
        DMIRROR_WHY_LEG_STATE => b"unknown leg state\0",
        DMIRROR_WHY_BITMAP => b"bitmap pointer/length inconsistent or too short\0",
        DMIRROR_WHY_NO_METADATA => b"no valid metadata found\0",
        DMIRROR_WHY_CONFLICT => b"legs disagree or belong to other mirrors\0",
        DMIRROR_WHY_READ_SECTOR_SIZE => b"read with another sector size than recorded\0",
        DMIRROR_WHY_WRONG_SIZE => b"device is not the size its metadata records\0",
        DMIRROR_WHY_DUPLICATE => b"the same leg given twice\0",
        DMIRROR_WHY_NOT_MEMBER => b"no longer a leg of this mirror (removed or replaced)\0",
        DMIRROR_WHY_GEOMETRY => b"disagrees with the newest metadata on the geometry\0",
        DMIRROR_WHY_SPLIT_BRAIN => b"split brain: name the leg whose data wins\0",
        DMIRROR_WHY_CHOSEN => b"the leg chosen to win is absent or not in sync\0",
        DMIRROR_WHY_NO_USABLE_LEG => b"no present leg holds a full copy of the data\0",
        DMIRROR_WHY_LOG_TOO_SMALL => b"log device too small for this mirror's log\0",
        DMIRROR_WHY_LOG_UNREADABLE => b"log device holds unusable dmirror metadata\0",
        DMIRROR_WHY_LOG_FOREIGN => b"log device belongs to another mirror\0",
        DMIRROR_WHY_LOG_IS_A_LEG => b"the log device is a dmirror leg\0",
        _ => b"unknown reason\0",
    }
}

// ---- assembly (waits for the core's on-disk format and assemble logic) ----

/// See dmirror.h. `DMIRROR_EINVAL` for an invalid sector size, `DMIRROR_ENOSPC` for a leg too
/// small to hold the two slots.
///
/// # Safety
/// Pointers NULL or valid for their types.
#[no_mangle]
pub unsafe extern "C" fn dmirror_sb_location(
    leg_sectors: u64,
    sector_size: u32,
    slot0_sector: *mut u64,
    slot1_sector: *mut u64,
    slot_bytes: *mut u64,
) -> c_int {
    let ok = |p: *mut u64| !p.is_null() && p.is_aligned();
    if !ok(slot0_sector) || !ok(slot1_sector) || !ok(slot_bytes) {
        return DMIRROR_EINVAL;
    }
    if !::dmirror::format::valid_sector_size(sector_size) {
        return DMIRROR_EINVAL;
    }
    let sectors = ::dmirror::format::slot_sectors(sector_size);
    let [s0, s1] = ::dmirror::format::slot_positions(leg_sectors, sector_size);
    if s0 == 0 && s1 == 0 {
        return DMIRROR_ENOSPC;
    }
    let Some(bytes) = sectors.checked_mul(u64::from(sector_size)) else {
        return DMIRROR_EINVAL;
    };
    // SAFETY: checked non-NULL and aligned; the caller's contract makes them writable.
    unsafe {
        ptr::write(slot0_sector, s0);
        ptr::write(slot1_sector, s1);
        ptr::write(slot_bytes, bytes);
    }
    0
}

/// Names for inputs without one, distinct so that an error's label identifies its input.
const INPUT_NAMES: [&str; ::dmirror::MAX_LEGS] = [
    "input 0", "input 1", "input 2", "input 3", "input 4", "input 5", "input 6", "input 7",
    "input 8", "input 9", "input 10", "input 11", "input 12", "input 13", "input 14", "input 15",
    "input 16", "input 17", "input 18", "input 19", "input 20", "input 21", "input 22", "input 23",
    "input 24", "input 25", "input 26", "input 27", "input 28", "input 29", "input 30", "input 31",
];

/// The longest input name read (a NUL is looked for within this many bytes).
const NAME_MAX: usize = 128;

/// An input's name: the C string if it is one (NUL within NAME_MAX bytes, UTF-8), else a
/// generated "input N".
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string (bytes up to the NUL are read, at most
/// NAME_MAX).
unsafe fn input_name<'a>(p: *const c_char, i: usize) -> &'a str {
    let fallback = INPUT_NAMES.get(i).copied().unwrap_or("input");
    if p.is_null() {
        return fallback;
    }
    let mut len = 0usize;
    while len < NAME_MAX {
        // SAFETY: within the string (the NUL was not found yet), per the contract.
        if unsafe { *p.cast::<u8>().add(len) } == 0 {
            break;
        }
        len = len.saturating_add(1);
    }
    if len == NAME_MAX || len == 0 {
        return fallback;
    }
    // SAFETY: `len` bytes were just read from it.
    let bytes = unsafe { core::slice::from_raw_parts(p.cast::<u8>(), len) };
    core::str::from_utf8(bytes).unwrap_or(fallback)
}

/// A C byte range as a slice (NULL: empty).
///
/// # Safety
/// If non-NULL, `p` points to `len` readable bytes valid for `'a`.
pub(crate) unsafe fn c_bytes<'a>(p: *const u8, len: u64) -> Option<&'a [u8]> {
    if p.is_null() {
        return Some(&[]);
    }
    let len = usize::try_from(len).ok()?;
    if len > isize::MAX as usize {
        return None;
    }
    // SAFETY: caller's contract.
    Some(unsafe { core::slice::from_raw_parts(p, len) })
}

/// The C reads as assembly's [`Legs`]: each is turned into a [`LegRead`] when assembly asks for
/// it, so that no array of them (2 KiB) sits on the kernel stack.
struct CLegs<'a> {
    reads: &'a [dmirror_leg_read],
}

impl<'a> CLegs<'a> {
    /// # Safety
    /// Every read's name is NULL or a NUL-terminated string, and its slot pointers NULL or
    /// `slotN_len` readable bytes, all valid for `'a` (dmirror.h's contract for
    /// `dmirror_assemble`).
    unsafe fn new(reads: &'a [dmirror_leg_read]) -> CLegs<'a> {
        CLegs { reads }
    }

    /// The input whose label is `label` (the same pointer: labels are distinct per input).
    fn input_of(&self, label: &str) -> u32 {
        (0..self.reads.len())
            .find(|&i| {
                self.leg(i)
                    .is_some_and(|l| ptr::eq(l.label.as_ptr(), label.as_ptr()))
            })
            .map_or(0, |i| i as u32)
    }
}

impl<'a> Legs<'a> for CLegs<'a> {
    fn count(&self) -> usize {
        self.reads.len()
    }

    fn leg(&self, i: usize) -> Option<LegRead<'a>> {
        let r = self.reads.get(i)?;
        // SAFETY: the contract of `CLegs::new`.
        let (slot0, slot1) = unsafe {
            (
                c_bytes(r.slot0, r.slot0_len)?,
                c_bytes(r.slot1, r.slot1_len)?,
            )
        };
        Some(LegRead {
            // SAFETY: as above.
            label: unsafe { input_name(r.name, i) },
            sectors: r.sectors,
            sector_size: r.sector_size,
            slot0,
            slot1,
        })
    }
}

fn assemble_error(e: &::dmirror::assemble::AssembleError<'_>, legs: &CLegs<'_>) -> Refusal {
    use ::dmirror::assemble::AssembleError as E;
    let input = |label: &str| legs.input_of(label);
    let r = |errno, why, leg| Refusal::leg(errno, why, leg);
    match *e {
        E::NoLegs | E::TooManyLegs { .. } => Refusal::inval(DMIRROR_WHY_LEG_COUNT),
        E::Unreadable { leg, .. } => r(DMIRROR_EINVAL, DMIRROR_WHY_NO_METADATA, input(leg)),
        E::SectorSize { leg, recorded, .. } => Refusal {
            value: u64::from(recorded),
            ..r(DMIRROR_EINVAL, DMIRROR_WHY_READ_SECTOR_SIZE, input(leg))
        },
        E::WrongSize { leg, recorded, .. } => Refusal {
            value: recorded,
            ..r(DMIRROR_EINVAL, DMIRROR_WHY_WRONG_SIZE, input(leg))
        },
        E::ForeignMirror { leg, .. } => r(DMIRROR_EINVAL, DMIRROR_WHY_CONFLICT, input(leg)),
        E::Duplicate { leg, .. } => r(DMIRROR_EINVAL, DMIRROR_WHY_DUPLICATE, input(leg)),
        E::NotMember { leg } => r(DMIRROR_EINVAL, DMIRROR_WHY_NOT_MEMBER, input(leg)),
        E::Geometry { leg, .. } => r(DMIRROR_EINVAL, DMIRROR_WHY_GEOMETRY, input(leg)),
        E::SplitBrain { a, .. } => r(DMIRROR_EINVAL, DMIRROR_WHY_SPLIT_BRAIN, input(a)),
        E::ChosenAbsent { .. } => Refusal::inval(DMIRROR_WHY_CHOSEN),
        E::ChosenNotInSync { leg } => r(DMIRROR_EINVAL, DMIRROR_WHY_CHOSEN, input(leg)),
        E::NoUsableLeg => r(DMIRROR_ENXIO, DMIRROR_WHY_NO_USABLE_LEG, 0),
    }
}

/// Writes formatted text into a C buffer, truncating, always NUL-terminated.
pub(crate) struct CBuf<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) n: usize,
}

impl CBuf<'_> {
    /// The C buffer `msg` of `msg_len` bytes (NULL or 0: text is dropped), emptied ("").
    ///
    /// # Safety
    /// `msg` is NULL or valid for `msg_len` writable bytes for the returned lifetime.
    pub(crate) unsafe fn from_c<'b>(msg: *mut c_char, msg_len: u64) -> CBuf<'b> {
        let mut text = CBuf { buf: &mut [], n: 0 };
        if !msg.is_null() && msg_len > 0 {
            let len = usize::try_from(msg_len)
                .unwrap_or(usize::MAX)
                .min(isize::MAX as usize);
            // SAFETY: as the caller promised.
            text.buf = unsafe { core::slice::from_raw_parts_mut(msg.cast::<u8>(), len) };
            let _ = core::fmt::Write::write_str(&mut text, "");
        }
        text
    }
}

impl core::fmt::Write for CBuf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(1);
        for (dst, src) in self.buf.iter_mut().take(room).skip(self.n).zip(s.bytes()) {
            *dst = src;
            self.n = self.n.saturating_add(1);
        }
        if let Some(z) = self.buf.get_mut(self.n) {
            *z = 0;
        }
        Ok(())
    }
}

/// The configuration an assembled mirror runs with: geometry and read policy from the newest
/// superblock, metadata on the legs, the rest the core's defaults.
fn assembled_config(sb: &::dmirror::format::Superblock) -> Config {
    let mut cfg = Config::new(sb.nlegs, sb.data_sectors);
    cfg.sector_size = sb.sector_size;
    cfg.region_sectors = sb.region_sectors;
    cfg.read_policy = sb.read_policy().unwrap_or_default();
    cfg.log = ::dmirror::LogKind::OnLegs;
    let region = u32::try_from(sb.region_sectors).unwrap_or(u32::MAX);
    cfg.resync.chunk_sectors = cfg.resync.chunk_sectors.min(region);
    cfg
}

/// See dmirror.h.
///
/// # Safety
/// Pointers NULL or valid for their types, as dmirror.h describes.
#[no_mangle]
pub unsafe extern "C" fn dmirror_assemble(
    reads: *const dmirror_leg_read,
    nreads: u32,
    choose: *const u8,
    out: *mut dmirror_assembly,
    why: *mut dmirror_why,
    msg: *mut c_char,
    msg_len: u64,
) -> c_int {
    set_why(why, DMIRROR_WHY_NONE, 0);
    // SAFETY: the caller gives `msg_len` writable bytes at `msg` (or NULL).
    let mut text = unsafe { CBuf::from_c(msg, msg_len) };
    let n = nreads as usize;
    if reads.is_null() || !reads.is_aligned() || out.is_null() || !out.is_aligned() {
        return DMIRROR_EINVAL;
    }
    if n == 0 || n > ::dmirror::MAX_LEGS {
        set_why(why, DMIRROR_WHY_LEG_COUNT, 0);
        return DMIRROR_EINVAL;
    }
    // SAFETY: the caller gives `nreads` structures.
    let c_reads = unsafe { core::slice::from_raw_parts(reads, n) };
    for (i, r) in c_reads.iter().enumerate() {
        // SAFETY: the caller's contract for the slot buffers.
        let ok = unsafe { c_bytes(r.slot0, r.slot0_len).and(c_bytes(r.slot1, r.slot1_len)) };
        if ok.is_none() {
            set_why(why, DMIRROR_WHY_NO_METADATA, i as u32);
            return DMIRROR_EINVAL;
        }
    }
    // SAFETY: the caller's contract for the names and slot buffers (dmirror.h).
    let legs = unsafe { CLegs::new(c_reads) };
    let chosen = if choose.is_null() {
        None
    } else {
        // SAFETY: the caller gives 16 readable bytes; u8 needs no alignment.
        Some(unsafe { ptr::read_unaligned(choose.cast::<[u8; 16]>()) })
    };
    // Kernel stack: the answer (~4.3 KiB) is the one large local; the work (a summary of every
    // leg, ~2.3 KiB) lives in the caller's `out` until the answer is written there.
    let mut asm = ::dmirror::assemble::Assembly::EMPTY;
    // SAFETY: `out` is non-NULL, aligned, and the caller's writable dmirror_assembly, at least as
    // large and as aligned as a Workspace (asserted below); nothing else refers to it during this
    // call. A valid Workspace is written before the reference is formed, and `out` is
    // overwritten (zeroed, then filled) below, after the last use of `work`.
    let work = unsafe {
        let w = out.cast::<::dmirror::assemble::Workspace>();
        w.write(::dmirror::assemble::Workspace::NEW);
        &mut *w
    };
    let res = ::dmirror::assemble::assemble_into(&legs, chosen, work, &mut asm);
    // SAFETY: checked non-NULL and aligned; every field is plain data: zero, then fill.
    let o = unsafe {
        ptr::write_bytes(out, 0, 1);
        &mut *out
    };
    if let Err(e) = res {
        let _ = core::fmt::Write::write_fmt(&mut text, format_args!("{e}"));
        let r = assemble_error(&e, &legs);
        set_why_r(why, &r);
        return r.errno;
    }
    assembly_to_c(&asm, c_reads, o);
    0
}

static_assertions::const_assert!(
    size_of::<::dmirror::assemble::Workspace>() <= size_of::<dmirror_assembly>()
);
static_assertions::const_assert!(
    align_of::<::dmirror::assemble::Workspace>() <= align_of::<dmirror_assembly>()
);

/// Fill `o` (zeroed) from the answer of assembly (no intermediate `Init`: it would be 2.4 KiB
/// more of stack).
fn assembly_to_c(
    asm: &::dmirror::assemble::Assembly,
    c_reads: &[dmirror_leg_read],
    o: &mut dmirror_assembly,
) {
    o.config = config_to_c(&assembled_config(&asm.winner));
    // What Assembly::init(None, no tracking) gives, field by field; the bitmaps stay NULL.
    o.init.mirror_uuid = asm.winner.mirror_uuid;
    o.init.name = asm.winner.name;
    o.init.generation = asm.generation;
    o.init.seq = asm.seq;
    o.init.authoritative = asm.authoritative;
    for (c, l) in o.init.legs.iter_mut().zip(asm.legs.iter()) {
        *c = leg_init_to_c(l);
    }
    let slots = o
        .label
        .iter_mut()
        .zip(o.present.iter_mut())
        .zip(asm.input_of_slot.iter());
    for ((label, present), input) in slots {
        if let Some(r) = input.and_then(|i| c_reads.get(i)) {
            *label = r.label;
            *present = 1;
        }
    }
    o.bitmap_bytes = asm.bitmap_bytes();
    o.clean = u8::from(asm.clean);
    o.split_brain_resolved = u8::from(asm.split_brain_resolved);
    let plan = |b: Option<::dmirror::assemble::BitmapRead>| match b {
        Some(b) => dmirror_bitmap_read {
            sector: b.sector,
            sectors: b.sectors,
            leg: asm
                .slot_of_input
                .get(b.input)
                .map_or(u32::MAX, |&s| u32::from(s)),
            needed: 1,
        },
        None => dmirror_bitmap_read::default(),
    };
    for (k, (d, t)) in o.dirty.iter_mut().zip(o.tracking.iter_mut()).enumerate() {
        // k < MAX_LEGS = 32.
        *d = plan(asm.dirty_read(k as u8));
        *t = plan(asm.tracking_read(k as u8));
    }
}

/// See dmirror.h.
///
/// # Safety
/// `r` NULL or a valid `dmirror_leg_read` (its name and slot buffers as for `dmirror_assemble`);
/// `out` NULL or writable; `why` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmirror_identify(
    r: *const dmirror_leg_read,
    out: *mut dmirror_identity,
    why: *mut dmirror_why,
) -> c_int {
    set_why(why, DMIRROR_WHY_NONE, 0);
    if r.is_null() || !r.is_aligned() || out.is_null() || !out.is_aligned() {
        return DMIRROR_EINVAL;
    }
    // SAFETY: checked non-NULL and aligned; plain data: zero it (the answer on failure).
    let o = unsafe {
        ptr::write_bytes(out, 0, 1);
        &mut *out
    };
    // SAFETY: the caller's contract: one valid structure.
    let c_reads = unsafe { core::slice::from_raw_parts(r, 1) };
    // SAFETY: the caller's contract for the name and the slot buffers.
    let legs = unsafe { CLegs::new(c_reads) };
    let Some(leg) = legs.leg(0) else {
        // A slot pointer with an impossible length.
        set_why(why, DMIRROR_WHY_NO_METADATA, 0);
        return DMIRROR_EINVAL;
    };
    match ::dmirror::assemble::identify(&leg) {
        Ok(id) => {
            identity_to_c(&id, o);
            0
        }
        Err(e) => {
            let r = assemble_error(&e, &legs);
            set_why_r(why, &r);
            r.errno
        }
    }
}

fn identity_to_c(id: &::dmirror::assemble::Identity, o: &mut dmirror_identity) {
    o.mirror_uuid = id.mirror_uuid;
    o.name = id.name;
    o.leg_uuid = id.leg_uuid;
    o.generation = id.generation;
    o.seq = id.seq;
    o.data_sectors = id.data_sectors;
    o.region_sectors = id.region_sectors;
    o.leg_sectors = id.leg_sectors;
    o.rebuild_checkpoint = id.rebuild_checkpoint;
    o.sector_size = id.sector_size;
    o.state = leg_state_to_c(id.state.into());
    o.leg = id.leg_index;
    o.nlegs = id.nlegs;
    o.clean = u8::from(id.clean);
    o.rebuild_full = u8::from(id.rebuild_full);
    o.members = id.members;
}

/// See dmirror.h.
///
/// # Safety
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmirror_max_data_sectors(
    leg_sectors: u64,
    sector_size: u32,
    region_sectors: u64,
    out: *mut u64,
) -> c_int {
    if out.is_null()
        || !out.is_aligned()
        || !::dmirror::format::valid_sector_size(sector_size)
        || !region_sectors.is_power_of_two()
    {
        return DMIRROR_EINVAL;
    }
    let n = ::dmirror::format::max_data_sectors(leg_sectors, sector_size, region_sectors);
    // SAFETY: checked non-NULL and aligned; the caller's contract makes it writable.
    unsafe { ptr::write(out, n) };
    0
}

// ---- one mirror ----

fn refuse(ops: &Ops, ctx: *mut c_void, why: *mut dmirror_why, r: Refusal) -> c_int {
    set_why_r(why, &r);
    log2(
        ops,
        ctx,
        DMIRROR_LOG_ERR,
        b"dmirror_create: ",
        why_bytes(r.why),
    );
    r.errno
}

/// Allocate the block, build the mirror in it, and return the handle. On error nothing is left
/// allocated.
fn build(ops: Ops, ctx: *mut c_void, cfg: &Config, init: &Init<'_>) -> Result<*mut Glue, Refusal> {
    let size = block_size(cfg)?;
    // SAFETY: the shim's allocator.
    let base = unsafe { (ops.alloc)(ctx, size, 1) }.cast::<u8>();
    if base.is_null() {
        log2(
            &ops,
            ctx,
            DMIRROR_LOG_ERR,
            b"dmirror_create: ",
            b"out of memory",
        );
        return Err(Refusal::leg(DMIRROR_ENOMEM, DMIRROR_WHY_NONE, 0));
    }
    if (base as usize) % GLUE_ALIGN != 0 {
        // SAFETY: giving back what alloc returned, with its size.
        unsafe { (ops.free)(ctx, base.cast(), size) };
        log2(
            &ops,
            ctx,
            DMIRROR_LOG_ERR,
            b"dmirror_create: ",
            b"alloc returned misaligned memory",
        );
        return Err(Refusal::leg(DMIRROR_EINVAL, DMIRROR_WHY_NONE, 0));
    }
    // SAFETY: `base` is `size` writable bytes from alloc. Zeroed so that the core's slice is
    // initialized memory. CORE_OFFSET <= size by construction of block_size.
    let mem: &'static mut [u8] = unsafe {
        ptr::write_bytes(base, 0, size);
        core::slice::from_raw_parts_mut(base.add(CORE_OFFSET), size.saturating_sub(CORE_OFFSET))
    };
    let g = base.cast::<Glue>();
    // SAFETY: `base` is aligned to GLUE_ALIGN >= align_of::<Glue>() and the header fits before
    // CORE_OFFSET; `mirror` is written (None) before the only reference to it is formed.
    let place = unsafe {
        let p = addr_of_mut!((*g).mirror);
        p.write(None);
        &mut *p
    };
    // The Mirror is built straight into its place in the block: moving it through temporaries
    // would copy it on the kernel stack.
    if let Err(e) = Mirror::new_in(cfg, init, mem, place) {
        // SAFETY: `mem` was moved into the failed `new_in` and `place` is None again; nothing
        // refers to the block: free it.
        unsafe { (ops.free)(ctx, base.cast(), size) };
        return Err(config_error(e));
    }
    // SAFETY: as above, the remaining fields.
    unsafe {
        addr_of_mut!((*g).ops).write(ops);
        addr_of_mut!((*g).ctx).write(ctx);
        addr_of_mut!((*g).alloc_size).write(size);
        addr_of_mut!((*g).in_core).write(false);
        addr_of_mut!((*g).magic).write(MAGIC);
    }
    Ok(g)
}

/// See dmirror.h.
///
/// # Safety
/// Pointers NULL or valid for their types, as dmirror.h describes; `ops` and `ctx` must be
/// usable until `dmirror_destroy` returns.
#[no_mangle]
pub unsafe extern "C" fn dmirror_create(
    cfg: *const dmirror_config,
    init: *const dmirror_init,
    ops: *const dmirror_host_ops,
    ctx: *mut c_void,
    flags: u32,
    out: *mut *mut dmirror,
    why: *mut dmirror_why,
) -> c_int {
    set_why(why, DMIRROR_WHY_NONE, 0);
    if out.is_null() || !out.is_aligned() {
        return DMIRROR_EINVAL;
    }
    // SAFETY: checked non-NULL and aligned.
    unsafe { ptr::write(out, ptr::null_mut()) };
    // SAFETY: caller's contract for the three pointers.
    let (Some(c_cfg), Some(c_init), Some(c_ops)) =
        (unsafe { (c_ref(cfg), c_ref(init), c_ref(ops)) })
    else {
        return DMIRROR_EINVAL;
    };
    let Some(ops) = Ops::from_c(c_ops) else {
        return DMIRROR_EINVAL;
    };
    if flags != 0 {
        return DMIRROR_EINVAL;
    }
    let cfg = match config_from_c(c_cfg) {
        Ok(c) => c,
        Err(r) => return refuse(&ops, ctx, why, r),
    };
    let mut core_init = Init::EMPTY;
    // SAFETY: the bitmaps are valid for the duration of this call (caller's contract); `init`
    // does not outlive it.
    if let Err(r) = unsafe { init_from_c(&cfg, c_init, &mut core_init) } {
        return refuse(&ops, ctx, why, r);
    }
    match build(ops, ctx, &cfg, &core_init) {
        Ok(g) => {
            // SAFETY: checked non-NULL and aligned above.
            unsafe { ptr::write(out, g.cast()) };
            0
        }
        Err(r) => refuse(&ops, ctx, why, r),
    }
}

/// Buffers allocated through the shim's `alloc` for the duration of one call; all of them are
/// given back when it goes out of scope, on every path.
struct Scratch {
    ops: Ops,
    ctx: *mut c_void,
    bufs: [(*mut u8, usize); MAX_SCRATCH],
    n: usize,
}

/// One OR accumulator, one read buffer, and one tracking bitmap per slot.
const MAX_SCRATCH: usize = ::dmirror::MAX_LEGS + 2;

impl Scratch {
    /// `len` zeroed bytes that live until `self` is dropped.
    fn alloc(&mut self, len: usize) -> Result<&'static mut [u8], Refusal> {
        let nomem = Refusal::leg(DMIRROR_ENOMEM, DMIRROR_WHY_NONE, 0);
        let slot = self.bufs.get_mut(self.n).ok_or(nomem)?;
        // SAFETY: the shim's allocator, from a sleepable context (dmirror_create_assembled).
        let p = unsafe { (self.ops.alloc)(self.ctx, len.max(1), 1) }.cast::<u8>();
        if p.is_null() {
            return Err(nomem);
        }
        *slot = (p, len.max(1));
        self.n = self.n.saturating_add(1);
        // SAFETY: `len` writable bytes (at least 1 allocated); zeroed so the slice is
        // initialized. The 'static is bounded in practice by `self`: the slices are only used
        // while it lives (they are handed to Mirror::new, which copies them).
        unsafe {
            ptr::write_bytes(p, 0, len);
            Ok(core::slice::from_raw_parts_mut(p, len))
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for &(p, len) in self.bufs.iter().take(self.n) {
            // SAFETY: allocated by `alloc` above with this size, freed once.
            unsafe { (self.ops.free)(self.ctx, p.cast(), len) };
        }
    }
}

/// Read one bitmap the assembly lists into `buf` and check it.
fn read_bitmap(
    ops: &Ops,
    ctx: *mut c_void,
    r: &dmirror_bitmap_read,
    cfg: &Config,
    regions: u64,
    buf: &mut [u8],
) -> Result<(), Refusal> {
    let bad = Refusal::leg(DMIRROR_EINVAL, DMIRROR_WHY_BITMAP, r.leg);
    // A disk log's bitmaps are on the log device (DMIRROR_LOGDEV_LEG), never on a leg.
    let log_dev = cfg.log == ::dmirror::LogKind::Device;
    if (log_dev && r.leg != DMIRROR_LOGDEV_LEG) || (!log_dev && r.leg >= u32::from(cfg.legs)) {
        return Err(bad);
    }
    let bytes = r
        .sectors
        .checked_mul(u64::from(cfg.sector_size))
        .ok_or(bad)?;
    if bytes != buf.len() as u64 {
        return Err(bad);
    }
    let Some(read) = ops.meta_read else {
        return Err(bad);
    };
    // SAFETY: `buf` is `bytes` writable bytes that outlive the synchronous call.
    let rc = unsafe { read(ctx, r.leg, r.sector, buf.as_mut_ptr(), bytes) };
    if rc != 0 {
        log2(
            ops,
            ctx,
            DMIRROR_LOG_ERR,
            b"dmirror_create_assembled: ",
            b"bitmap read failed",
        );
        return Err(Refusal::leg(DMIRROR_EIO, DMIRROR_WHY_BITMAP, r.leg));
    }
    ::dmirror::format::check_bitmap(buf, regions).map_err(|_| bad)
}

/// See dmirror.h.
///
/// # Safety
/// Pointers NULL or valid for their types, as dmirror.h describes; `ops` and `ctx` must be
/// usable until `dmirror_destroy` returns.
#[no_mangle]
pub unsafe extern "C" fn dmirror_create_assembled(
    a: *const dmirror_assembly,
    cfg: *const dmirror_config,
    ops: *const dmirror_host_ops,
    ctx: *mut c_void,
    out: *mut *mut dmirror,
    why: *mut dmirror_why,
) -> c_int {
    set_why(why, DMIRROR_WHY_NONE, 0);
    if out.is_null() || !out.is_aligned() {
        return DMIRROR_EINVAL;
    }
    // SAFETY: checked non-NULL and aligned.
    unsafe { ptr::write(out, ptr::null_mut()) };
    // SAFETY: caller's contract.
    let (Some(a), Some(c_ops)) = (unsafe { (c_ref(a), c_ref(ops)) }) else {
        return DMIRROR_EINVAL;
    };
    let c_cfg = if cfg.is_null() {
        &a.config
    } else {
        // SAFETY: caller's contract.
        match unsafe { c_ref(cfg) } {
            Some(c) => c,
            None => return DMIRROR_EINVAL,
        }
    };
    let Some(ops) = Ops::from_c(c_ops) else {
        return DMIRROR_EINVAL;
    };
    match create_assembled(a, c_cfg, ops, ctx) {
        Ok(g) => {
            // SAFETY: checked non-NULL and aligned above.
            unsafe { ptr::write(out, g.cast()) };
            0
        }
        Err(r) => refuse(&ops, ctx, why, r),
    }
}

fn create_assembled(
    a: &dmirror_assembly,
    c_cfg: &dmirror_config,
    ops: Ops,
    ctx: *mut c_void,
) -> Result<*mut Glue, Refusal> {
    let cfg = config_from_c(c_cfg)?;
    if cfg.log == ::dmirror::LogKind::Core {
        return Err(Refusal::inval(DMIRROR_WHY_LOG_KIND));
    }
    let regions = regions(&cfg).ok_or(Refusal::inval(DMIRROR_WHY_REGION_SIZE))?;
    let bitmap = Refusal::inval(DMIRROR_WHY_BITMAP);
    let bm_bytes = usize::try_from(a.bitmap_bytes).map_err(|_| bitmap)?;
    // Declared before `init` so that it outlives it: `init` borrows its buffers.
    let mut scratch = Scratch {
        ops,
        ctx,
        bufs: [(ptr::null_mut(), 0); MAX_SCRATCH],
        n: 0,
    };
    // The assembly's own bitmap pointers must be NULL: this function supplies the bitmaps.
    if !a.init.dirty.bits.is_null() || a.init.tracking.iter().any(|t| !t.bits.is_null()) {
        return Err(bitmap);
    }
    let mut init = Init::EMPTY;
    // SAFETY: no bitmap pointer (checked just above).
    unsafe { init_from_c(&cfg, &a.init, &mut init) }?;
    if a.clean == 0 && a.dirty.iter().any(|d| d.needed != 0) {
        let acc = scratch.alloc(bm_bytes)?;
        let buf = scratch.alloc(bm_bytes)?;
        for d in a.dirty.iter().filter(|d| d.needed != 0) {
            read_bitmap(&ops, ctx, d, &cfg, regions, buf)?;
            ::dmirror::format::or_into(acc, buf);
        }
        init.dirty = Some(acc);
    }
    for (t, dst) in a.tracking.iter().zip(init.tracking.iter_mut()) {
        if t.needed == 0 {
            continue;
        }
        let buf = scratch.alloc(bm_bytes)?;
        read_bitmap(&ops, ctx, t, &cfg, regions, buf)?;
        *dst = Some(buf);
    }
    // Mirror::new copies the bitmaps; `scratch` frees them when this returns.
    build(ops, ctx, &cfg, &init)
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed; `io` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn dmirror_submit(m: *mut dmirror, io: *const dmirror_parent_io) -> c_int {
    // SAFETY: caller's contract.
    let Some(io) = (unsafe { c_ref(io) }) else {
        return DMIRROR_EINVAL;
    };
    let Some(pio) = parent_from_c(io) else {
        return DMIRROR_EINVAL;
    };
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, host| match mir.submit(host, pio) {
            Ok(()) => 0,
            Err(::dmirror::Busy) => DMIRROR_EBUSY,
        })
    }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_leg_done(m: *mut dmirror, token: u64, error: c_int) -> c_int {
    let r = leg_result_from_c(error);
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, host| {
            mir.leg_done(host, Token(token), r);
            0
        })
    }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_tick(m: *mut dmirror) -> c_int {
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, host| {
            mir.tick(host);
            0
        })
    }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmirror_status(m: *mut dmirror, out: *mut dmirror_status) -> c_int {
    if out.is_null() || !out.is_aligned() {
        return DMIRROR_EINVAL;
    }
    let fill = |mir: &mut Mirror<'static>, _: &mut GlueHost| {
        let mut s = ::dmirror::Status::EMPTY;
        mir.status_into(&mut s);
        // SAFETY: checked non-NULL and aligned; all fields are plain data, so zero, then fill.
        let o = unsafe {
            ptr::write_bytes(out, 0, 1);
            &mut *out
        };
        status_to_c(&s, o);
        0
    };
    // SAFETY: caller's contract.
    unsafe { with_mirror(m, fill) }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_is_idle(m: *mut dmirror) -> c_int {
    // SAFETY: caller's contract.
    unsafe { with_mirror(m, |mir, _| if mir.is_idle() { 0 } else { DMIRROR_EBUSY }) }
}

fn leg_index(leg: u32) -> Option<u8> {
    u8::try_from(leg).ok()
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed; `uuid` NULL or 16 readable bytes.
#[no_mangle]
pub unsafe extern "C" fn dmirror_add_leg(
    m: *mut dmirror,
    leg: u32,
    uuid: *const u8,
    sectors: u64,
    incremental: c_int,
) -> c_int {
    if uuid.is_null() {
        return DMIRROR_EINVAL;
    }
    // SAFETY: caller's contract: 16 readable bytes; u8 has no alignment requirement.
    let id: [u8; 16] = unsafe { ptr::read_unaligned(uuid.cast::<[u8; 16]>()) };
    let Some(leg) = leg_index(leg) else {
        return DMIRROR_ENOENT;
    };
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, host| {
            match mir.add_leg(host, leg, id, sectors, incremental != 0) {
                Ok(()) => 0,
                Err(e) => control_error(e),
            }
        })
    }
}

/// A control operation on one leg slot: ENOENT for a slot number out of range, else the
/// operation's answer as an errno.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
/// Generic, not a function pointer: each entry point calls its operation directly (the kernel
/// stack report follows direct calls only).
unsafe fn leg_control(
    m: *mut dmirror,
    leg: u32,
    op: impl FnOnce(&mut Mirror<'static>, &mut GlueHost, u8) -> Result<(), ::dmirror::ControlError>,
) -> c_int {
    let Some(leg) = leg_index(leg) else {
        return DMIRROR_ENOENT;
    };
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, host| match op(mir, host, leg) {
            Ok(()) => 0,
            Err(e) => control_error(e),
        })
    }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_leg_gone(m: *mut dmirror, leg: u32) -> c_int {
    // SAFETY: forwarded.
    unsafe { leg_control(m, leg, Mirror::leg_gone) }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_fail_leg(m: *mut dmirror, leg: u32) -> c_int {
    // SAFETY: forwarded.
    unsafe { leg_control(m, leg, Mirror::fail_leg) }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_remove_leg(m: *mut dmirror, leg: u32) -> c_int {
    // SAFETY: forwarded.
    unsafe { leg_control(m, leg, Mirror::remove_leg) }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed; `policy` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn dmirror_set_read_policy(
    m: *mut dmirror,
    policy: *const dmirror_read_policy,
) -> c_int {
    // SAFETY: caller's contract.
    let Some(p) = (unsafe { c_ref(policy) }) else {
        return DMIRROR_EINVAL;
    };
    let Ok(p) = read_policy_from_c(p) else {
        return DMIRROR_EINVAL;
    };
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, _| match mir.set_read_policy(p) {
            Ok(()) => 0,
            Err(_) => DMIRROR_EINVAL,
        })
    }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed.
#[no_mangle]
pub unsafe extern "C" fn dmirror_shutdown(m: *mut dmirror) -> c_int {
    // SAFETY: caller's contract.
    unsafe {
        with_mirror(m, |mir, host| {
            mir.shutdown(host);
            0
        })
    }
}

/// See dmirror.h.
///
/// # Safety
/// `m` from `dmirror_create`, not destroyed, and no other call on it running or to come.
#[no_mangle]
pub unsafe extern "C" fn dmirror_destroy(m: *mut dmirror) -> c_int {
    // SAFETY: caller's contract.
    let rc = unsafe { with_mirror(m, |mir, _| if mir.is_idle() { 0 } else { DMIRROR_EBUSY }) };
    if rc != 0 {
        return rc;
    }
    // SAFETY: with_mirror succeeded, so `m` is a live Glue. The shim guarantees nothing else
    // runs on it now. Drop the Mirror (ending its borrow of the block) before freeing the block.
    unsafe {
        let g = m.cast::<Glue>();
        // Field by field: reading the whole Glue would copy the Mirror and drop the copy.
        let ops = ptr::read(addr_of!((*g).ops));
        let ctx = ptr::read(addr_of!((*g).ctx));
        let alloc_size = ptr::read(addr_of!((*g).alloc_size));
        ptr::write(addr_of_mut!((*g).magic), 0);
        ptr::drop_in_place(addr_of_mut!((*g).mirror));
        (ops.free)(ctx, g.cast(), alloc_size);
    }
    0
}

/// Every exported function must have exactly the signature dmirror.h declares. bindgen turns the
/// header's prototypes into `extern "C"` declarations in [`crate::abi`]; assigning each exported
/// function to a pointer of the declared type fails to compile if a parameter or the return type
/// differs.
macro_rules! same_signature {
    ($($name:ident($($arg:tt)*);)*) => {
        $(
            const _: () = {
                let _ = [crate::abi::$name as unsafe extern "C" fn($($arg)*) -> _, $name];
            };
        )*
    };
}

same_signature! {
    dmirror_config_default(_, _, _);
    dmirror_memory_needed(_, _, _);
    dmirror_init_fresh(_, _, _, _);
    dmirror_why_str(_);
    dmirror_sb_location(_, _, _, _, _);
    dmirror_max_data_sectors(_, _, _, _);
    dmirror_assemble(_, _, _, _, _, _, _);
    dmirror_identify(_, _, _);
    dmirror_create(_, _, _, _, _, _, _);
    dmirror_create_assembled(_, _, _, _, _, _);
    dmirror_submit(_, _);
    dmirror_leg_done(_, _, _);
    dmirror_tick(_);
    dmirror_status(_, _);
    dmirror_is_idle(_);
    dmirror_add_leg(_, _, _, _, _);
    dmirror_fail_leg(_, _);
    dmirror_leg_gone(_, _);
    dmirror_remove_leg(_, _);
    dmirror_set_read_policy(_, _);
    dmirror_shutdown(_);
    dmirror_destroy(_);
}
