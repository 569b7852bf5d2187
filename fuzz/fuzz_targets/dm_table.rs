//! Fuzzes the device-mapper mirror table parser (`dmirror::dmtable`), which reads text straight
//! from `dmsetup`/lvm2 in the kernel.
//!
//! Input: the raw parameter bytes. On success the table is printed in canonical form, and that
//! text must parse back to an equal table (and print identically). On error the message must be
//! non-empty and one line. Then the status line is printed for the table (all legs in sync) and
//! must be one line, and the device check must accept devices exactly as large as each leg needs
//! and name a device one sector too small.
#![no_main]

use dmirror::dmtable::{
    check_devices, format_status, format_table, parse_bytes, write_message, BufWriter, LogHealth,
    MirrorTable, TableError,
};
use dmirror::{Counters, LegState, LegStatus, ReadPolicy, Status, MAX_LEGS};
use libfuzzer_sys::fuzz_target;

fn print(t: &MirrorTable<'_>, buf: &mut [u8]) -> usize {
    let mut w = BufWriter::new(buf);
    format_table(t, &mut w).expect("an 8 KiB buffer holds every table");
    assert!(!w.truncated());
    w.len()
}

fn one_line(msg: &[u8]) {
    assert!(!msg.is_empty(), "empty error message");
    assert!(
        !msg.contains(&b'\n'),
        "multi-line message: {:?}",
        String::from_utf8_lossy(msg)
    );
}

fn check_error(e: &TableError) {
    let mut buf = [0u8; 512];
    let n = write_message(e, &mut buf);
    one_line(&buf[..n]);
}

fuzz_target!(|data: &[u8]| {
    let table = match parse_bytes(data) {
        Ok(t) => t,
        Err(e) => return check_error(&e),
    };
    assert!(table.nlegs >= 1 && usize::from(table.nlegs) <= MAX_LEGS);

    // Canonical form round-trips.
    let mut out = [0u8; 8192];
    let n = print(&table, &mut out);
    let again = match parse_bytes(&out[..n]) {
        Ok(t) => t,
        Err(e) => panic!(
            "canonical form {:?} does not parse: {e}",
            String::from_utf8_lossy(&out[..n])
        ),
    };
    assert_eq!(again, table, "round trip changed the table");
    let mut out2 = [0u8; 8192];
    let n2 = print(&again, &mut out2);
    assert_eq!(
        &out[..n],
        &out2[..n2],
        "canonical form is not a fixed point"
    );

    // The status line for a healthy mirror.
    let mut leg = [LegStatus::EMPTY; MAX_LEGS];
    for l in leg.iter_mut().take(usize::from(table.nlegs)) {
        l.state = LegState::InSync;
    }
    let status = Status {
        legs: table.nlegs,
        leg,
        authoritative: 0,
        generation: 1,
        regions: 64,
        regions_in_sync: 64,
        dirty_regions: 0,
        inflight_parents: 0,
        inflight_leg_ios: 0,
        counters: Counters::default(),
        read_policy: ReadPolicy::default(),
    };
    let mut w = BufWriter::new(&mut out);
    format_status(&status, &table, &[], LogHealth::Alive, &mut w).expect("status fits");
    one_line(w.as_bytes());

    // Devices exactly large enough pass; one sector less is refused and named.
    let target = 1u64 << 20;
    let mut sizes = [0u64; MAX_LEGS];
    let legs = table.used_legs();
    let mut fits = true;
    for (s, l) in sizes.iter_mut().zip(legs) {
        match l.offset.checked_add(target) {
            Some(n) => *s = n,
            None => fits = false,
        }
    }
    let sizes = &mut sizes[..legs.len()];
    if fits {
        assert_eq!(check_devices(&table, target, sizes, 0), Ok(()));
        sizes[legs.len() - 1] -= 1;
        match check_devices(&table, target, sizes, 0) {
            Err(e) => check_error(&e),
            Ok(()) => panic!("a device one sector too small was accepted"),
        }
    } else {
        match check_devices(&table, target, sizes, 0) {
            Err(e) => check_error(&e),
            Ok(()) => panic!("an offset + length overflowing u64 was accepted"),
        }
    }
});
