//! The mirror: write groups, reads with fallback, failure handling, resync — the state machine.
//! API skeleton; the implementation lands in the following commits.
use crate::host::Host;
use crate::init::Init;
use crate::types::*;

/// Why a control operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// No such leg slot.
    NoSuchLeg,
    /// The slot is in the wrong state for this operation (e.g. adding to a leg in use).
    WrongState,
    /// It would leave no in-sync leg.
    LastLeg,
    /// The new leg's device is too small.
    TooSmall,
    /// A shutdown is in progress.
    ShuttingDown,
}

/// One mirror. All memory comes from the buffer given to [`Mirror::new`].
pub struct Mirror<'a> {
    cfg: Config,
    _mem: &'a mut [u8],
}

impl<'a> Mirror<'a> {
    /// Bytes of memory [`Mirror::new`] needs for this configuration.
    pub fn memory_needed(cfg: &Config) -> Result<usize, ConfigError> {
        let _ = cfg;
        Ok(0)
    }

    /// Create a mirror from a configuration, its starting state, and memory.
    pub fn new(cfg: &Config, init: &Init<'_>, mem: &'a mut [u8]) -> Result<Mirror<'a>, ConfigError> {
        let _ = init;
        Ok(Mirror { cfg: *cfg, _mem: mem })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A new parent I/O. Invalid ones are completed at once with `IoError::Invalid`.
    /// `Err(Busy)` when the parent pool is full: the host keeps it, in order, and submits again
    /// after `Event::Ready` (or any parent completion).
    pub fn submit<H: Host>(&mut self, host: &mut H, io: ParentIo) -> Result<(), Busy> {
        let _ = (host, io);
        Err(Busy)
    }

    /// A leg I/O the host issued has finished.
    pub fn leg_done<H: Host>(&mut self, host: &mut H, token: Token, result: IoResult) {
        let _ = (host, token, result);
    }

    /// Time passes (the host decides the period; `clear_delay_ticks` and the resync rate count
    /// in ticks).
    pub fn tick<H: Host>(&mut self, host: &mut H) {
        let _ = host;
    }

    pub fn status(&self) -> Status {
        Status {
            legs: self.cfg.legs,
            leg: [LegStatus::EMPTY; MAX_LEGS],
            authoritative: 0,
            generation: 0,
            regions: 0,
            regions_in_sync: 0,
            dirty_regions: 0,
            inflight_parents: 0,
            inflight_leg_ios: 0,
            counters: Counters::default(),
            read_policy: self.cfg.read_policy,
        }
    }

    pub fn set_read_policy(&mut self, policy: ReadPolicy) -> Result<(), ConfigError> {
        self.cfg.read_policy = policy;
        Ok(())
    }

    /// Administratively fail a leg (it will need a full resync).
    pub fn fail_leg<H: Host>(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        let _ = (host, leg);
        Err(ControlError::NoSuchLeg)
    }

    /// Take a leg out of the mirror for good (its slot becomes empty).
    pub fn remove_leg<H: Host>(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        let _ = (host, leg);
        Err(ControlError::NoSuchLeg)
    }

    /// Put a device in an empty, failed or missing slot. A missing leg that comes back with
    /// `incremental` resyncs only what was written while it was away; otherwise everything.
    pub fn add_leg<H: Host>(
        &mut self,
        host: &mut H,
        leg: u8,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    ) -> Result<(), ControlError> {
        let _ = (host, leg, uuid, sectors, incremental);
        Err(ControlError::NoSuchLeg)
    }

    /// Begin a clean shutdown: new parents are refused with `Busy`, in-flight ones finish, legs
    /// are flushed, dirty bits cleared, the clean flag set; then `Event::ShutdownDone`.
    pub fn shutdown<H: Host>(&mut self, host: &mut H) {
        let _ = host;
    }

    /// Nothing in flight: no parent, no leg I/O, no metadata update.
    pub fn is_idle(&self) -> bool {
        true
    }
}
