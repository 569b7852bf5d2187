//! dmirror-ffi: the C ABI of the dmirror core (`shim-c/dmirror.h`), for the kernel shims.
//!
//! Built as a staticlib the shims link (and as an rlib for Rust tests). The types of the contract
//! are generated from the header by bindgen ([`abi`]); [`glue`] implements the entry points on
//! top of [`dmirror::Mirror`]; [`convert`] translates between the two vocabularies.
//!
//! No unwinding anywhere: the entry points cannot panic (checked pointers and lengths, checked
//! arithmetic, the lints below), the kernel profile builds with `panic = "abort"`, and an
//! `extern "C"` function aborts rather than unwind should a panic happen anyway.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::float_arithmetic,
        clippy::arithmetic_side_effects
    )
)]

// Hosted builds (the C test program, userland) take the panic machinery from std; the code itself
// only uses `core`. Kernel builds (target_os = "none") bring their own handler below.
#[cfg(all(not(test), not(target_os = "none")))]
extern crate std;

pub mod abi;
pub mod convert;
pub mod dm;
pub mod glue;
pub mod logdev;

#[cfg(test)]
mod tests;

/// The kernel build's panic handler.
///
/// The entry points are written so that no panic is reachable; this exists because `core` needs
/// one and because a compiler-inserted check could still fire. A panic handler has no context,
/// so it cannot reach any mirror's `log` callback soundly (a global "last mirror" pointer could
/// be dangling or belong to another mirror). It formats `file:line: message` into a stack buffer
/// and calls `dmirror_host_panic`, which the kernel shim defines (FreeBSD: `panic("%s", msg)`),
/// so the machine stops with a message instead of continuing with a mirror in an unknown state.
/// If that returns, spin: returning from a panic handler is impossible, and unwinding is not
/// available (panic = abort).
#[cfg(all(not(test), target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    struct Buf {
        b: [u8; 160],
        n: usize,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for (dst, src) in self
                .b
                .iter_mut()
                .skip(self.n)
                .take(159usize.saturating_sub(self.n))
                .zip(s.bytes())
            {
                *dst = src;
                self.n = self.n.saturating_add(1);
            }
            Ok(())
        }
    }
    let mut buf = Buf { b: [0; 160], n: 0 };
    let _ = write!(buf, "dmirror: {}", info);
    // SAFETY: the buffer is NUL-terminated (byte 159 is never written) and outlives the call.
    unsafe { abi::dmirror_host_panic(buf.b.as_ptr().cast()) };
    loop {
        core::hint::spin_loop();
    }
}
