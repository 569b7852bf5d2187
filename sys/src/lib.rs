//! dmirror: the portable, sans-IO core of a RAID1 (mirror) block driver.
//!
//! The core never performs I/O. A host feeds it events — a parent I/O ([`Mirror::submit`]), a leg
//! I/O completed ([`Mirror::leg_done`]), a clock tick ([`Mirror::tick`]) — and the core answers
//! through the [`Host`] trait: issue this leg I/O, complete this parent, report this event.
//! The kernel shims (GEOM, dm), the userland NBD server and the deterministic simulator all drive
//! this same code. See `docs/ARCHITECTURE.md` for which file owns which behaviour.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
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
        clippy::float_arithmetic
    )
)]

#[cfg(test)]
extern crate std;

pub mod assemble;
pub mod format;
mod types;

pub use types::*;
mod host;
mod init;
mod mirror;

pub use host::Host;
pub use init::{Init, LegInit, Rebuild};
pub use mirror::{ControlError, Mirror};
