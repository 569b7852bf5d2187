//! A simulated leg: an array of sectors with a volatile write cache and injectable faults.
//!
//! `current` is what reads see. A completed write goes into `current` and, unless it was FUA, into
//! the cache; a completed flush makes every cache entry that completed before the flush was
//! *issued* durable. A crash keeps the durable image plus any subset of the cached (and of the
//! in-flight) writes, torn at sector boundaries, newest-wins per sector.
use crate::rng::Rng;
use dmirror::{IoError, IoResult};

struct CacheEntry {
    seq: u64,
    sector: u64,
    data: Vec<u8>,
    /// Who wrote it (a token, or 0) and when it completed (simulation time).
    tag: u64,
    at: u64,
}

/// Faults currently injected into one leg.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Sectors whose reads fail (a latent sector error; a successful write over it heals it).
    pub read_err: Vec<bool>,
    /// Sectors whose writes fail.
    pub write_err: Vec<bool>,
    /// Every I/O answers `Gone`.
    pub gone: bool,
    /// The next flush fails with `Io`.
    pub flush_fail: bool,
    /// Some sector error was injected since the last `clear` (kept even if a write healed it).
    pub sectors: bool,
}

impl Faults {
    pub fn any(&self) -> bool {
        self.gone || self.flush_fail || self.sectors
    }
    pub fn clear(&mut self) {
        self.sectors = false;
        self.gone = false;
        self.flush_fail = false;
        self.read_err.iter_mut().for_each(|b| *b = false);
        self.write_err.iter_mut().for_each(|b| *b = false);
    }
}

pub struct Leg {
    pub ss: usize,
    pub sectors: u64,
    pub current: Vec<u8>,
    durable: Vec<u8>,
    durable_seq: Vec<u64>,
    cache: Vec<CacheEntry>,
    next_seq: u64,
    pub faults: Faults,
    pub discard_supported: bool,
    /// Mutant: the next flush "forgets" one cached write (it is neither durable nor kept).
    pub lose_flushed_write: bool,
}

impl Leg {
    /// A leg of `sectors` sectors whose sector `s` holds pattern `fill(s)` (or zeros for `None`).
    pub fn new(sectors: u64, ss: usize, fill: impl Fn(u64) -> Option<u64>) -> Leg {
        let mut current = vec![0u8; sectors as usize * ss];
        for s in 0..sectors {
            if let Some(id) = fill(s) {
                let o = s as usize * ss;
                crate::pattern::encode(&mut current[o..o + ss], id, s);
            }
        }
        Leg {
            ss,
            sectors,
            durable: current.clone(),
            current,
            durable_seq: vec![0; sectors as usize],
            cache: Vec::new(),
            next_seq: 1,
            faults: Faults {
                read_err: vec![false; sectors as usize],
                write_err: vec![false; sectors as usize],
                gone: false,
                flush_fail: false,
                sectors: false,
            },
            discard_supported: true,
            lose_flushed_write: false,
        }
    }

    pub fn sector(&self, s: u64) -> &[u8] {
        let o = s as usize * self.ss;
        &self.current[o..o + self.ss]
    }

    fn range(&self, sector: u64, count: u32) -> std::ops::Range<usize> {
        sector as usize..sector as usize + count as usize
    }

    /// The result the device gives for a read, at completion time.
    pub fn read_result(&self, sector: u64, count: u32) -> IoResult {
        if self.faults.gone {
            Err(IoError::Gone)
        } else if self.faults.read_err[self.range(sector, count)]
            .iter()
            .any(|&b| b)
        {
            Err(IoError::Io)
        } else {
            Ok(())
        }
    }

    pub fn write_result(&self, sector: u64, count: u32) -> IoResult {
        if self.faults.gone {
            Err(IoError::Gone)
        } else if self.faults.write_err[self.range(sector, count)]
            .iter()
            .any(|&b| b)
        {
            Err(IoError::Io)
        } else {
            Ok(())
        }
    }

    pub fn read(&self, sector: u64, out: &mut [u8]) {
        let o = sector as usize * self.ss;
        out.copy_from_slice(&self.current[o..o + out.len()]);
    }

    /// A write completed successfully: into the cache (or straight to stable storage with FUA).
    pub fn write(&mut self, sector: u64, data: &[u8], fua: bool, tag: u64, at: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let o = sector as usize * self.ss;
        self.current[o..o + data.len()].copy_from_slice(data);
        let n = data.len() / self.ss;
        for r in &mut self.faults.read_err[sector as usize..sector as usize + n] {
            *r = false;
        }
        if fua {
            self.durable[o..o + data.len()].copy_from_slice(data);
            for d in &mut self.durable_seq[sector as usize..sector as usize + n] {
                *d = seq;
            }
        } else {
            self.cache.push(CacheEntry {
                seq,
                sector,
                data: data.to_vec(),
                tag,
                at,
            });
        }
    }

    /// What a flush issued now will make durable when it completes.
    pub fn flush_mark(&self) -> u64 {
        self.next_seq
    }

    pub fn flush_result(&mut self) -> IoResult {
        if self.faults.gone {
            Err(IoError::Gone)
        } else if self.faults.flush_fail {
            self.faults.flush_fail = false;
            Err(IoError::Io)
        } else {
            Ok(())
        }
    }

    /// A flush issued at `mark` completed: everything cached before it is durable.
    pub fn flush_done(&mut self, mark: u64) {
        let mut keep = Vec::new();
        let entries = std::mem::take(&mut self.cache);
        let mut lose = self.lose_flushed_write;
        for e in entries {
            if e.seq >= mark {
                keep.push(e);
                continue;
            }
            if lose && e.tag != 0 {
                // Mutant: the device acknowledges the flush but this write never reaches media.
                lose = false;
                self.lose_flushed_write = false;
                continue;
            }
            self.persist(&e, None);
        }
        self.cache = keep;
    }

    fn persist(&mut self, e: &CacheEntry, only: Option<&[bool]>) {
        let n = e.data.len() / self.ss;
        for i in 0..n {
            let s = e.sector as usize + i;
            if only.is_some_and(|m| !m[i]) || self.durable_seq[s] > e.seq {
                continue;
            }
            self.durable[s * self.ss..(s + 1) * self.ss]
                .copy_from_slice(&e.data[i * self.ss..(i + 1) * self.ss]);
            self.durable_seq[s] = e.seq;
        }
    }

    /// Writes still only in the volatile cache.
    pub fn cached_writes(&self) -> usize {
        self.cache.len()
    }

    /// Completion time of the oldest write still only in the cache.
    pub fn oldest_cached(&self) -> Option<u64> {
        self.cache.iter().map(|e| e.at).min()
    }

    /// Is the write tagged `tag` still only in the cache?
    pub fn is_cached(&self, tag: u64) -> bool {
        self.cache.iter().any(|e| e.tag == tag)
    }

    /// What would survive a crash that keeps none of the cached writes.
    pub fn durable_image(&self) -> &[u8] {
        &self.durable
    }

    /// Power loss. Keeps the durable image plus a random subset of the cached writes and of the
    /// `inflight` writes (sector, bytes), each kept whole, lost, or torn at sector boundaries;
    /// per sector the newest surviving write wins. Afterwards the leg holds exactly that image.
    pub fn crash(&mut self, rng: &mut Rng, inflight: &[(u64, Vec<u8>)]) {
        let mut entries = std::mem::take(&mut self.cache);
        for (sector, data) in inflight {
            entries.push(CacheEntry {
                seq: self.next_seq,
                sector: *sector,
                data: data.clone(),
                tag: 0,
                at: 0,
            });
            self.next_seq += 1;
        }
        for e in &entries {
            let n = e.data.len() / self.ss;
            match rng.below(3) {
                0 => {}
                1 => self.persist(e, None),
                _ => {
                    let mask: Vec<bool> = (0..n).map(|_| rng.chance(1, 2)).collect();
                    self.persist(e, Some(&mask));
                }
            }
        }
        self.current = self.durable.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_flush_and_crash() {
        let mut leg = Leg::new(8, 512, |_| None);
        let a = vec![1u8; 1024];
        leg.write(0, &a, false, 1, 1);
        let mark = leg.flush_mark();
        let b = vec![2u8; 512];
        leg.write(1, &b, false, 2, 2); // after the flush was issued: not covered by it
        leg.flush_done(mark);
        assert_eq!(leg.cached_writes(), 1);
        // Crash with nothing else surviving: sector 0..2 hold `a`, whatever happens to `b`.
        let mut rng = Rng::new(1);
        leg.crash(&mut rng, &[]);
        assert!(leg.sector(0).iter().all(|&x| x == 1));
        assert!(leg.sector(1).iter().all(|&x| x == 1 || x == 2));
        // FUA is durable at once and not overridden by an older cached write.
        let mut leg = Leg::new(4, 512, |_| None);
        leg.write(0, &[3u8; 512], false, 1, 1);
        leg.write(0, &[4u8; 512], true, 2, 2);
        for seed in 0..20 {
            let mut l2 = Leg::new(4, 512, |_| None);
            l2.write(0, &[3u8; 512], false, 1, 1);
            l2.write(0, &[4u8; 512], true, 2, 2);
            l2.crash(&mut Rng::new(seed), &[]);
            assert!(l2.sector(0).iter().all(|&x| x == 4));
        }
    }
}
