//! Panic-free arithmetic for the I/O paths. Divisors here are validated non-zero at creation,
//! but the compiler cannot know that, and a kernel must not carry a reachable panic: these
//! answer 0 for a zero divisor instead.

#[inline]
pub(crate) fn div(a: u64, b: u64) -> u64 {
    a.checked_div(b).unwrap_or(0)
}

#[inline]
pub(crate) fn rem(a: u64, b: u64) -> u64 {
    a.checked_rem(b).unwrap_or(0)
}

#[inline]
pub(crate) fn div_ceil(a: u64, b: u64) -> u64 {
    match (a.checked_div(b), a.checked_rem(b)) {
        (Some(q), Some(r)) => q + u64::from(r != 0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_divisor_is_zero_not_a_panic() {
        assert_eq!(super::div(7, 0), 0);
        assert_eq!(super::rem(7, 0), 0);
        assert_eq!(super::div_ceil(7, 0), 0);
        assert_eq!(super::div_ceil(7, 2), 4);
        assert_eq!(super::div_ceil(8, 2), 4);
        assert_eq!(super::div(9, 4), 2);
        assert_eq!(super::rem(9, 4), 1);
    }
}
