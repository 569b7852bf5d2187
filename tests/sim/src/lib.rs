//! dmirror-sim: a deterministic simulator that drives the dmirror core through its public API and
//! tries to make it lose data. One `u64` seed fixes everything: configuration, workload, device
//! latencies (completion order), faults, leg adds and crashes.
//!
//! - [`rng`]: the PRNG.
//! - [`pattern`]: what every written sector contains (write id, sector), so reads check exactly.
//! - [`leg`]: a simulated device with a volatile write cache and injectable faults.
//! - [`model`]: which contents each sector may hold, now and after a crash.
//! - [`world`]: the simulated host and the checks made at every call the core makes.
//! - [`runner`]: one seed's run: workload, faults, control operations, settling, final checks.
//! - [`crash`]: power loss and reassembly.
//! - [`refcore`]: a tiny reference core that exists only to test the simulator (false alarms,
//!   planted core bugs).
pub mod core;
pub mod crash;
pub mod leg;
pub mod model;
pub mod pattern;
pub mod refcore;
pub mod rng;
pub mod runner;
pub mod world;

pub use refcore::RefBug;
pub use runner::{run, Backend, CoreMutant, Opts, Outcome};
pub use world::Mutant;
