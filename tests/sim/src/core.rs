//! The simulator drives a mirror core through this trait: exactly the public entry points of
//! `dmirror::Mirror`, so the real core plugs in unchanged (and a test double could too).
use dmirror::{Busy, ControlError, Host, IoResult, Mirror, ParentIo, ReadPolicy, Status, Token};

pub trait Core<H: Host> {
    fn submit(&mut self, host: &mut H, io: ParentIo) -> Result<(), Busy>;
    fn leg_done(&mut self, host: &mut H, token: Token, result: IoResult);
    fn tick(&mut self, host: &mut H);
    fn status(&self) -> Status;
    fn is_idle(&self) -> bool;
    fn set_read_policy(&mut self, policy: ReadPolicy) -> bool;
    fn fail_leg(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError>;
    fn remove_leg(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError>;
    fn shutdown(&mut self, host: &mut H);
    fn add_leg(
        &mut self,
        host: &mut H,
        leg: u8,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    ) -> Result<(), ControlError>;
}

impl<H: Host> Core<H> for Mirror<'_> {
    fn submit(&mut self, host: &mut H, io: ParentIo) -> Result<(), Busy> {
        Mirror::submit(self, host, io)
    }
    fn leg_done(&mut self, host: &mut H, token: Token, result: IoResult) {
        Mirror::leg_done(self, host, token, result)
    }
    fn tick(&mut self, host: &mut H) {
        Mirror::tick(self, host)
    }
    fn status(&self) -> Status {
        Mirror::status(self)
    }
    fn is_idle(&self) -> bool {
        Mirror::is_idle(self)
    }
    fn set_read_policy(&mut self, policy: ReadPolicy) -> bool {
        Mirror::set_read_policy(self, policy).is_ok()
    }
    fn fail_leg(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        Mirror::fail_leg(self, host, leg)
    }
    fn remove_leg(&mut self, host: &mut H, leg: u8) -> Result<(), ControlError> {
        Mirror::remove_leg(self, host, leg)
    }
    fn shutdown(&mut self, host: &mut H) {
        Mirror::shutdown(self, host)
    }
    fn add_leg(
        &mut self,
        host: &mut H,
        leg: u8,
        uuid: [u8; 16],
        sectors: u64,
        incremental: bool,
    ) -> Result<(), ControlError> {
        Mirror::add_leg(self, host, leg, uuid, sectors, incremental)
    }
}
