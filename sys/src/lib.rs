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
pub mod dmtable;
pub mod format;
pub mod logdev;
mod types;

pub use types::*;
mod arena;
mod arith;
mod bitmap;
mod control;
mod devlog;
mod host;
mod init;
mod io;
mod log;
mod meta;
mod mirror;
mod resync;

pub use host::Host;
pub use init::{Init, LegInit, Rebuild};
pub use log::RegionLog;
pub use mirror::{ControlError, Mirror};

/// Deliberate bugs that can be planted in a mirror (`Mirror::set_mutant`, with the `mutants`
/// feature) to prove the simulator's checks catch them. Inert unless set.
#[cfg(any(test, feature = "mutants"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    None,
    /// Complete a write group as soon as one leg reported.
    CompleteEarly,
    /// Let overlapping writes start without waiting for each other.
    NoWriteOrdering,
    /// Skip the write-intent journal (data before its bitmap bit is durable).
    SkipJournal,
    /// Clear write-intent bits without the data flush first.
    ClearBeforeFlush,
    /// Disk log: count a bitmap round on the log device durable as soon as it is issued, without
    /// its flush (a mark still in flight or in the log device's cache lets data go to the legs).
    LogNoFlush,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_devlog;
