//! A zero-latency host: every leg I/O completes as soon as the entry point that issued it
//! returns, with no data movement and no allocation. Shared by the benchmark and the
//! hot-path allocation test.
#![allow(dead_code)]
use dmirror::*;

pub const QUEUE: usize = 4096;

pub struct ZeroLat {
    tokens: [Token; QUEUE],
    n: usize,
    pub completed: u64,
    pub failed: u64,
}

impl Default for ZeroLat {
    fn default() -> Self {
        Self::new()
    }
}

impl ZeroLat {
    pub fn new() -> ZeroLat {
        ZeroLat {
            tokens: [Token(0); QUEUE],
            n: 0,
            completed: 0,
            failed: 0,
        }
    }

    /// Complete everything issued so far (and what that issues in turn).
    pub fn drain(&mut self, m: &mut Mirror<'_>) {
        while self.n > 0 {
            self.n -= 1;
            let t = self.tokens[self.n];
            m.leg_done(self, t, Ok(()));
        }
    }
}

impl Host for ZeroLat {
    fn issue(&mut self, io: &LegIo<'_>) {
        if self.n < QUEUE {
            self.tokens[self.n] = io.token;
            self.n += 1;
        }
    }
    fn complete(&mut self, _parent: ParentHandle, result: IoResult) {
        self.completed += 1;
        if result.is_err() {
            self.failed += 1;
        }
    }
}

pub fn config(log: LogKind) -> Config {
    let mut c = Config::new(2, 1 << 21); // 1 GiB of 512-byte sectors
    c.log = log;
    c
}

pub fn leg_sectors(c: &Config) -> u64 {
    // Room for the metadata at the end of each leg.
    c.data_sectors + 16384
}

pub fn io(handle: u64, op: ParentOp, sector: u64) -> ParentIo {
    ParentIo {
        handle,
        op,
        sector,
        count: 8,
        fua: false,
        buf: handle,
    }
}
