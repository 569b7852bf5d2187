//! `dmirror_max_data_sectors` (used by the GEOM class's `label` to size a mirror) agrees with the
//! core's layout rules: the size it returns fits the leg, one sector more does not, and bad
//! arguments are refused without writing the out-parameter.
use dmirror::format::layout;
use dmirror_ffi::abi::DMIRROR_EINVAL;
use dmirror_ffi::glue::dmirror_max_data_sectors;

fn max(leg: u64, ss: u32, region: u64) -> (i32, u64) {
    let mut out = u64::MAX;
    // SAFETY: `out` is a valid, writable u64.
    let rc = unsafe { dmirror_max_data_sectors(leg, ss, region, &mut out) };
    (rc, out)
}

#[test]
fn largest_size_fits_and_one_more_does_not() {
    for &(leg, ss, region) in &[
        (1u64 << 21, 512u32, 1024u64), // 1 GiB of 512-byte sectors
        (1 << 18, 4096, 1024),         // 1 GiB of 4 KiB sectors
        (100_000, 512, 64),
        (12_345_677, 512, 2048), // odd size: slot alignment matters
    ] {
        let (rc, d) = max(leg, ss, region);
        assert_eq!(rc, 0);
        assert!(d > 0 && d < leg, "leg {leg}: {d}");
        assert!(
            layout(leg, ss, region, d).is_ok(),
            "leg {leg}: {d} must fit"
        );
        assert!(
            layout(leg, ss, region, d + 1).is_err(),
            "leg {leg}: {} must not",
            d + 1
        );
    }
}

#[test]
fn a_leg_too_small_for_any_data_gives_zero() {
    assert_eq!(max(8, 512, 1024), (0, 0));
}

#[test]
fn bad_arguments_are_refused() {
    assert_eq!(max(1 << 20, 500, 1024), (DMIRROR_EINVAL, u64::MAX));
    assert_eq!(max(1 << 20, 512, 1000), (DMIRROR_EINVAL, u64::MAX));
    // SAFETY: NULL out is the case under test; the function must not write through it.
    let rc = unsafe { dmirror_max_data_sectors(1 << 20, 512, 1024, std::ptr::null_mut()) };
    assert_eq!(rc, DMIRROR_EINVAL);
}
