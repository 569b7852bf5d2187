//! Unit tests of the glue itself: conversions, argument checks, and the error paths of create
//! that the C scenario (tests/ffi/ffi_test.c) does not reach (allocation failure, misaligned
//! memory, re-entry without a lock).
use crate::abi::{
    dmirror, dmirror_bitmap, dmirror_config, dmirror_host_ops, dmirror_init, dmirror_leg_io,
    dmirror_parent_io, dmirror_read_policy, dmirror_why, *,
};
use crate::convert::*;
use crate::glue::{
    dmirror_add_leg, dmirror_config_default, dmirror_create, dmirror_destroy, dmirror_init_fresh,
    dmirror_is_idle, dmirror_leg_done, dmirror_memory_needed, dmirror_status, dmirror_submit,
    dmirror_tick, dmirror_why_str,
};
use ::dmirror::{BufRef, Config, Event, IoError, LegIo, LegOp, LegState, ParentOp, Token};
use core::ffi::{c_char, c_int, c_void};
use core::ptr;
use std::vec::Vec;

fn cfg_c(legs: u8) -> dmirror_config {
    let mut c = dmirror_config::default();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { dmirror_config_default(&mut c, legs, 4096) }, 0);
    c.region_sectors = 64;
    c.resync_chunk_sectors = 64;
    c
}

#[test]
fn config_round_trips() {
    let core = Config::new(3, 1 << 20);
    let back = config_from_c(&config_to_c(&core)).unwrap();
    assert_eq!(back, core);
}

#[test]
fn config_from_c_names_what_is_wrong() {
    let good = cfg_c(2);
    let mut c = good;
    c.abi_version = 2;
    assert_eq!(config_from_c(&c).unwrap_err().why, DMIRROR_WHY_ABI_VERSION);
    let mut c = good;
    c.legs = 0;
    assert_eq!(config_from_c(&c).unwrap_err().why, DMIRROR_WHY_LEG_COUNT);
    c.legs = 33;
    assert_eq!(config_from_c(&c).unwrap_err().why, DMIRROR_WHY_LEG_COUNT);
    let mut c = good;
    c.log = 7;
    assert_eq!(config_from_c(&c).unwrap_err().why, DMIRROR_WHY_LOG_KIND);
    let mut c = good;
    c.read_policy = dmirror_read_policy {
        kind: DMIRROR_READ_PREFER,
        arg: 256,
    };
    assert_eq!(config_from_c(&c).unwrap_err().why, DMIRROR_WHY_READ_POLICY);
    c.read_policy = dmirror_read_policy { kind: 9, arg: 0 };
    assert_eq!(config_from_c(&c).unwrap_err().why, DMIRROR_WHY_READ_POLICY);
}

#[test]
fn leg_results_map_as_documented() {
    assert_eq!(leg_result_from_c(0), Ok(()));
    assert_eq!(leg_result_from_c(DMIRROR_ENXIO), Err(IoError::Gone));
    assert_eq!(leg_result_from_c(DMIRROR_ENODEV), Err(IoError::Gone));
    assert_eq!(
        leg_result_from_c(DMIRROR_EOPNOTSUPP),
        Err(IoError::NotSupported)
    );
    assert_eq!(leg_result_from_c(DMIRROR_EIO), Err(IoError::Io));
    assert_eq!(leg_result_from_c(-1), Err(IoError::Io));
    assert_eq!(leg_result_from_c(12345), Err(IoError::Io));
}

#[test]
fn parent_io_checks() {
    let mut p = dmirror_parent_io {
        op: DMIRROR_OP_READ,
        count: 8,
        ..Default::default()
    };
    assert_eq!(parent_from_c(&p).unwrap().op, ParentOp::Read);
    p.count = u64::from(u32::MAX) + 1;
    assert!(parent_from_c(&p).is_none(), "count beyond u32 refused");
    p.op = DMIRROR_OP_FLUSH;
    assert_eq!(
        parent_from_c(&p).unwrap().count,
        0,
        "a flush ignores its count"
    );
    p.op = 0;
    assert!(parent_from_c(&p).is_none());
    p.op = 5;
    assert!(parent_from_c(&p).is_none());
    p = dmirror_parent_io {
        op: DMIRROR_OP_WRITE,
        count: 1,
        fua: 7,
        ..Default::default()
    };
    assert!(parent_from_c(&p).unwrap().fua);
}

/// `init_from_c` into a fresh `Init`.
///
/// # Safety
/// As for `init_from_c`.
unsafe fn init_of<'i>(cfg: &Config, c: &dmirror_init) -> Result<::dmirror::Init<'i>, Refusal> {
    let mut init = ::dmirror::Init::EMPTY;
    // SAFETY: forwarded.
    unsafe { init_from_c(cfg, c, &mut init) }.map(|()| init)
}

fn fresh_init(legs: u8) -> std::boxed::Box<dmirror_init> {
    let mut i = std::boxed::Box::new(dmirror_init::default());
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { dmirror_init_fresh(&mut *i, legs, 8192, 1) }, 0);
    i
}

#[test]
fn init_from_c_checks_slots_and_bitmaps() {
    let cfg = config_from_c(&cfg_c(2)).unwrap();
    let good = fresh_init(2);
    // SAFETY: no bitmaps.
    let init = unsafe { init_of(&cfg, &good) }.unwrap();
    assert_eq!(init.legs[1].state, LegState::InSync);
    assert_eq!(init.legs[2].state, LegState::Empty);

    let mut bad = fresh_init(2);
    bad.legs[5].sectors = 1;
    // SAFETY: no bitmaps.
    let e = unsafe { init_of(&cfg, &bad) }.unwrap_err();
    assert_eq!(
        (e.why, e.leg),
        (DMIRROR_WHY_INITIAL_STATE, 5),
        "garbage in an unused slot"
    );

    let mut bad = fresh_init(2);
    bad.legs[1].state = 9;
    // SAFETY: no bitmaps.
    let e = unsafe { init_of(&cfg, &bad) }.unwrap_err();
    assert_eq!((e.why, e.leg), (DMIRROR_WHY_LEG_STATE, 1));

    let mut bad = fresh_init(2);
    bad.dirty = dmirror_bitmap {
        bits: ptr::null(),
        len: 8,
    };
    // SAFETY: the bitmap is NULL.
    assert_eq!(
        unsafe { init_of(&cfg, &bad) }.unwrap_err().why,
        DMIRROR_WHY_BITMAP
    );

    // 4096 sectors / 64 = 64 regions: 8 bytes needed.
    let short = [0u8; 7];
    let mut bad = fresh_init(2);
    bad.tracking[1] = dmirror_bitmap {
        bits: short.as_ptr(),
        len: 7,
    };
    // SAFETY: `short` outlives the call.
    let e = unsafe { init_of(&cfg, &bad) }.unwrap_err();
    assert_eq!((e.why, e.leg), (DMIRROR_WHY_BITMAP, 1));

    let enough = [0xffu8; 8];
    let mut ok = fresh_init(2);
    ok.dirty = dmirror_bitmap {
        bits: enough.as_ptr(),
        len: 8,
    };
    // SAFETY: `enough` outlives the call and `init`.
    let init = unsafe { init_of(&cfg, &ok) }.unwrap();
    assert_eq!(init.dirty, Some(&enough[..]));
}

#[test]
fn leg_io_and_events_convert() {
    let meta = [1u8, 2, 3];
    let mk = |buf| LegIo {
        token: Token(7),
        leg: 1,
        op: LegOp::Write,
        sector: 9,
        count: 2,
        fua: true,
        buf,
    };
    let c = leg_io_to_c(&mk(BufRef::Parent {
        buf: 0xabc,
        offset: 1024,
    }));
    assert_eq!(
        (
            c.token,
            c.leg,
            c.op,
            c.sector,
            c.count,
            c.fua,
            c.buf_kind,
            c.parent_buf,
            c.offset
        ),
        (
            7,
            1,
            DMIRROR_OP_WRITE as u8,
            9,
            2,
            1,
            DMIRROR_BUF_PARENT as u8,
            0xabc,
            1024
        )
    );
    let c = leg_io_to_c(&mk(BufRef::Resync {
        slot: 3,
        offset: 512,
    }));
    assert_eq!(
        (c.buf_kind, c.resync_slot, c.offset),
        (DMIRROR_BUF_RESYNC as u8, 3, 512)
    );
    let c = leg_io_to_c(&mk(BufRef::Meta(&meta)));
    assert_eq!(
        (c.buf_kind, c.meta, c.meta_len),
        (DMIRROR_BUF_META as u8, meta.as_ptr(), 3)
    );
    let c = leg_io_to_c(&mk(BufRef::None));
    assert_eq!((c.buf_kind, c.meta), (DMIRROR_BUF_NONE as u8, ptr::null()));

    let e = event_to_c(Event::LegFailed {
        leg: 2,
        state: LegState::Missing,
        error: IoError::Gone,
    });
    assert_eq!(
        (e.kind, e.leg, e.state, e.error),
        (DMIRROR_EV_LEG_FAILED, 2, DMIRROR_LEG_MISSING, DMIRROR_ENXIO)
    );
    let e = event_to_c(Event::LogFailed { error: IoError::Io });
    assert_eq!(
        (e.kind, e.leg, e.error),
        (DMIRROR_EV_LOG_FAILED, DMIRROR_LOGDEV_LEG, DMIRROR_EIO)
    );
    // The disk log's leg I/O keeps its reserved leg number.
    let c = leg_io_to_c(&LegIo {
        leg: ::dmirror::LOG_DEV,
        ..mk(BufRef::None)
    });
    assert_eq!(u32::from(c.leg), DMIRROR_LOGDEV_LEG);
    let e = event_to_c(Event::ResyncProgress {
        leg: 1,
        done: 5,
        total: 10,
    });
    assert_eq!(
        (e.kind, e.done, e.total),
        (DMIRROR_EV_RESYNC_PROGRESS, 5, 10)
    );
    let e = event_to_c(Event::Repaired {
        leg: 0,
        sector: 77,
        count: 3,
    });
    assert_eq!((e.kind, e.sector, e.count), (DMIRROR_EV_REPAIRED, 77, 3));
}

#[test]
fn why_strings_are_nul_terminated() {
    // The last code is the disk log's (the "Disk log" block of dmirror.h).
    for code in 0..=DMIRROR_WHY_LOG_IS_A_LEG + 1 {
        let p = dmirror_why_str(code);
        // SAFETY: the glue returns static NUL-terminated strings.
        let s = unsafe { core::ffi::CStr::from_ptr(p) };
        assert!(!s.to_bytes().is_empty());
        // Every defined code has its own description.
        let unknown = s.to_bytes() == b"unknown reason";
        assert_eq!(unknown, code > DMIRROR_WHY_LOG_IS_A_LEG, "code {code}");
    }
}

// ---- the entry points, driven from Rust through the C ABI ----

#[derive(Default)]
struct TestHost {
    fail_alloc: bool,
    misalign: bool,
    live: Vec<(usize, usize)>,
    frees: usize,
    issued: Vec<u64>,
    completed: Vec<(u64, c_int)>,
    reenter: Option<*mut dmirror>,
    reenter_rc: Option<c_int>,
    logs: usize,
}

fn host(ctx: *mut c_void) -> &'static mut TestHost {
    // SAFETY: tests pass a live &mut TestHost as ctx and do not hold another reference to it
    // while a callback runs.
    unsafe { &mut *ctx.cast::<TestHost>() }
}

unsafe extern "C" fn t_alloc(ctx: *mut c_void, size: usize, _may_sleep: c_int) -> *mut c_void {
    let h = host(ctx);
    if h.fail_alloc {
        return ptr::null_mut();
    }
    let layout = std::alloc::Layout::from_size_align(size + 16, 16).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    let p = if h.misalign { p.wrapping_add(8) } else { p };
    h.live.push((p as usize, size));
    p.cast()
}

unsafe extern "C" fn t_free(ctx: *mut c_void, p: *mut c_void, size: usize) {
    let h = host(ctx);
    let pos = h
        .live
        .iter()
        .position(|&(a, s)| a == p as usize && s == size);
    let (a, s) = h
        .live
        .remove(pos.expect("free of something not allocated, or wrong size"));
    let base = if h.misalign { a - 8 } else { a };
    let layout = std::alloc::Layout::from_size_align(s + 16, 16).unwrap();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(base as *mut u8, layout) };
    h.frees += 1;
}

unsafe extern "C" fn t_issue(ctx: *mut c_void, io: *const dmirror_leg_io) {
    let h = host(ctx);
    if let Some(m) = h.reenter.take() {
        // SAFETY: m is the live mirror (the call must be refused, not run).
        h.reenter_rc = Some(unsafe { dmirror_tick(m) });
    }
    // SAFETY: valid during the callback.
    h.issued.push(unsafe { (*io).token });
}

unsafe extern "C" fn t_complete(ctx: *mut c_void, handle: u64, error: c_int) {
    host(ctx).completed.push((handle, error));
}

unsafe extern "C" fn t_log(ctx: *mut c_void, _level: c_int, _msg: *const c_char) {
    host(ctx).logs += 1;
}

fn ops() -> dmirror_host_ops {
    dmirror_host_ops {
        alloc: Some(t_alloc),
        free: Some(t_free),
        issue: Some(t_issue),
        complete: Some(t_complete),
        log: Some(t_log),
        ..Default::default()
    }
}

fn create(h: &mut TestHost) -> (c_int, *mut dmirror, dmirror_why) {
    let cfg = cfg_c(2);
    let init = fresh_init(2);
    let ops = ops();
    let mut m: *mut dmirror = ptr::dangling_mut();
    let mut why = dmirror_why::default();
    // SAFETY: all pointers valid; ctx is `h`, which outlives the mirror in these tests.
    let rc = unsafe {
        dmirror_create(
            &cfg,
            &*init,
            &ops,
            (h as *mut TestHost).cast(),
            0,
            &mut m,
            &mut why,
        )
    };
    (rc, m, why)
}

#[test]
fn create_reports_allocation_failure_and_leaks_nothing() {
    let mut h = TestHost {
        fail_alloc: true,
        ..Default::default()
    };
    let (rc, m, _) = create(&mut h);
    assert_eq!(rc, DMIRROR_ENOMEM);
    assert!(m.is_null());
    assert!(h.live.is_empty());
    assert!(h.logs > 0, "the failure was logged");
}

#[test]
fn create_refuses_misaligned_memory_and_frees_it() {
    let mut h = TestHost {
        misalign: true,
        ..Default::default()
    };
    let (rc, m, _) = create(&mut h);
    assert_eq!(rc, DMIRROR_EINVAL);
    assert!(m.is_null());
    assert!(h.live.is_empty(), "the misaligned block was given back");
    assert_eq!(h.frees, 1);
}

#[test]
fn create_requires_lock_and_unlock_as_a_pair() {
    unsafe extern "C" fn lk(_: *mut c_void) {}
    let mut h = TestHost::default();
    let cfg = cfg_c(2);
    let init = fresh_init(2);
    let mut o = ops();
    o.lock = Some(lk);
    let mut m: *mut dmirror = ptr::null_mut();
    // SAFETY: valid pointers.
    let rc = unsafe {
        dmirror_create(
            &cfg,
            &*init,
            &o,
            (&mut h as *mut TestHost).cast(),
            0,
            &mut m,
            ptr::null_mut(),
        )
    };
    assert_eq!(rc, DMIRROR_EINVAL);
    assert!(h.live.is_empty());
}

#[test]
fn reentry_without_a_lock_is_refused_and_destroy_waits_for_idle() {
    let mut h = TestHost::default();
    let (rc, m, _) = create(&mut h);
    assert_eq!(rc, 0);
    assert_eq!(h.live.len(), 1);
    h.reenter = Some(m);
    let mut buf = [0u8; 4096];
    let io = dmirror_parent_io {
        handle: 42,
        op: DMIRROR_OP_WRITE,
        sector: 0,
        count: 8,
        buf: buf.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: live mirror, valid io.
    assert_eq!(unsafe { dmirror_submit(m, &io) }, 0);
    assert_eq!(h.reenter_rc, Some(DMIRROR_EDEADLK));
    assert!(!h.issued.is_empty());
    // SAFETY: live mirror.
    assert_eq!(
        unsafe { dmirror_destroy(m) },
        DMIRROR_EBUSY,
        "leg I/O in flight"
    );
    // Complete everything the core asked for (including follow-ups) until the parent is done.
    let mut rounds = 0;
    while let Some(t) = h.issued.pop() {
        // SAFETY: live mirror.
        assert_eq!(unsafe { dmirror_leg_done(m, t, 0) }, 0);
        rounds += 1;
        assert!(rounds < 1000);
    }
    assert_eq!(h.completed, [(42, 0)]);
    // SAFETY: live mirror, nothing in flight.
    assert_eq!(unsafe { dmirror_is_idle(m) }, 0);
    assert_eq!(unsafe { dmirror_destroy(m) }, 0);
    assert!(h.live.is_empty(), "destroy freed the block with its size");
}

#[test]
fn entry_points_refuse_null_and_forged_handles() {
    // As large as a real handle: the glue reads the magic through a `Glue` place, which must
    // lie within the allocation (a smaller buffer is undefined behaviour, and release builds
    // do exploit it).
    let mut fake = std::vec![0u64; core::mem::size_of::<crate::glue::Glue>() / 8 + 8];
    let forged = fake.as_mut_ptr().cast::<dmirror>();
    // SAFETY: the glue reads only the magic of a pointer that is not a live handle; `fake` is
    // readable, so that read is defined.
    unsafe {
        assert_eq!(dmirror_tick(ptr::null_mut()), DMIRROR_EINVAL);
        assert_eq!(dmirror_tick(forged), DMIRROR_EINVAL);
        assert_eq!(dmirror_leg_done(forged, 1, 0), DMIRROR_EINVAL);
        assert_eq!(dmirror_destroy(forged), DMIRROR_EINVAL);
        assert_eq!(dmirror_status(forged, ptr::null_mut()), DMIRROR_EINVAL);
        assert_eq!(
            dmirror_add_leg(forged, 0, ptr::null(), 0, 0),
            DMIRROR_EINVAL
        );
        let mut cfg = dmirror_config::default();
        assert_eq!(dmirror_config_default(&mut cfg, 0, 1), DMIRROR_EINVAL);
        let mut n = 0u64;
        assert_eq!(
            dmirror_memory_needed(&cfg, &mut n, ptr::null_mut()),
            DMIRROR_EINVAL,
            "zeroed config: ABI version 0"
        );
    }
}
