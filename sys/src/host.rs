//! The host interface: how the core asks for work to be done.
use crate::types::{Event, IoResult, LegIo, ParentHandle};

/// Implemented by every host (kernel shim glue, userland server, simulator).
///
/// Calls are made from inside the core's entry points. A host must not call back into the same
/// mirror from them: completions of the leg I/Os it is asked to issue are delivered later through
/// [`crate::Mirror::leg_done`] (a host whose device completes synchronously queues the completion
/// and delivers it after the entry point returns).
pub trait Host {
    /// Issue this leg I/O. Its buffer reference stays valid until it is completed.
    fn issue(&mut self, io: &LegIo<'_>);
    /// The parent I/O is finished; its buffer belongs to the host again.
    fn complete(&mut self, parent: ParentHandle, result: IoResult);
    /// Something the administrator or the host may want to know.
    fn event(&mut self, _event: Event) {}
}
