//! The reference model of the mirror's data: for every data sector, which contents are allowed
//! now, and which would be allowed after a crash.
//!
//! Values are write ids (`pattern::INITIAL` for the initial content, `pattern::ANY` after a
//! discard). `possible[s]` holds the values a sector may hold once every write in flight over it
//! finished: the newest completed write plus any write that was concurrent with it (two writes in
//! flight together may be ordered either way by the core, as long as every leg sees the same order,
//! which the leg comparison checks). A read may return any value possible when it was submitted,
//! or of any write submitted over the sector while it was in flight.
use crate::pattern::{ANY, INITIAL};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct WriteRec {
    pub sector: u64,
    pub count: u32,
    pub discard: bool,
    pub submitted: u64,
    pub completed: Option<u64>,
}

pub struct Model {
    /// Per sector: (value, completion time).
    pub possible: Vec<Vec<(u64, u64)>>,
    /// Per sector: writes/discards accepted and not completed.
    pub inflight: Vec<Vec<u64>>,
    /// Crash model, per sector: the values one of which is guaranteed durable, and since when.
    pub durable: Vec<Vec<u64>>,
    pub durable_at: Vec<u64>,
    /// Per sector, every write ever accepted over it (for "old or new" after a crash).
    pub history: Vec<Vec<u64>>,
    pub writes: BTreeMap<u64, WriteRec>,
}

impl Model {
    pub fn new(sectors: u64) -> Model {
        let n = sectors as usize;
        Model {
            possible: vec![vec![(INITIAL, 0)]; n],
            inflight: vec![Vec::new(); n],
            durable: vec![vec![INITIAL]; n],
            durable_at: vec![0; n],
            history: vec![Vec::new(); n],
            writes: BTreeMap::new(),
        }
    }

    fn range(sector: u64, count: u32) -> std::ops::Range<usize> {
        sector as usize..sector as usize + count as usize
    }

    /// What a read of sector `s` submitted now may return (before later writes are added).
    pub fn read_allowed(&self, s: usize) -> Vec<u64> {
        let mut v: Vec<u64> = self.possible[s].iter().map(|p| p.0).collect();
        v.extend(self.inflight[s].iter().map(|&id| self.value_of(id)));
        v
    }

    /// The value a write id leaves in a sector (`ANY` for a discard).
    pub fn value_of(&self, id: u64) -> u64 {
        if self.writes.get(&id).is_some_and(|w| w.discard) {
            ANY
        } else {
            id
        }
    }

    pub fn possible_ids(&self, s: usize) -> Vec<u64> {
        self.possible[s].iter().map(|p| p.0).collect()
    }

    /// A write (or discard) was accepted by the core.
    pub fn write_accepted(&mut self, id: u64, sector: u64, count: u32, discard: bool, now: u64) {
        for s in Self::range(sector, count) {
            self.inflight[s].push(id);
            self.history[s].push(id);
        }
        self.writes.insert(
            id,
            WriteRec {
                sector,
                count,
                discard,
                submitted: now,
                completed: None,
            },
        );
    }

    /// The core answered Busy after all: forget the acceptance.
    pub fn write_unaccepted(&mut self, id: u64) {
        if let Some(w) = self.writes.remove(&id) {
            for s in Self::range(w.sector, w.count) {
                self.inflight[s].retain(|&x| x != id);
                if let Some(p) = self.history[s].iter().rposition(|&x| x == id) {
                    self.history[s].remove(p);
                }
            }
        }
    }

    /// A write completed. `ok == false`: it may or may not have reached the media.
    pub fn write_completed(&mut self, id: u64, ok: bool, now: u64) {
        let Some(w) = self.writes.get_mut(&id) else {
            return;
        };
        w.completed = Some(now);
        let w = w.clone();
        let v = if w.discard { ANY } else { id };
        for s in Self::range(w.sector, w.count) {
            self.inflight[s].retain(|&x| x != id);
            if ok {
                self.possible[s].retain(|&(_, done)| done > w.submitted);
            }
            self.possible[s].push((v, now));
        }
    }

    /// A FUA write completed: its data is durable now.
    pub fn fua_durable(&mut self, sector: u64, count: u32, now: u64) {
        for s in Self::range(sector, count) {
            self.durable[s] = self.possible_ids(s);
            self.durable_at[s] = now;
        }
    }

    pub fn snapshot(&self) -> Vec<Vec<u64>> {
        (0..self.possible.len())
            .map(|s| self.possible_ids(s))
            .collect()
    }

    /// A flush submitted at `submitted` (when `possible` was `snap`) completed.
    pub fn flush_durable(&mut self, snap: &[Vec<u64>], submitted: u64) {
        for (s, ids) in snap.iter().enumerate() {
            if submitted > self.durable_at[s] {
                self.durable[s] = ids.clone();
                self.durable_at[s] = submitted;
            }
        }
    }

    /// Values sector `s` may hold after a crash now: one of the durable values, or any write over
    /// it that had not completed before the durable point (completed later, in flight, or failed).
    pub fn crash_allowed(&self, s: usize) -> Vec<u64> {
        let mut v = self.durable[s].clone();
        for &id in &self.history[s] {
            let w = self.writes.get(&id);
            let late = w.is_none_or(|w| w.completed.is_none_or(|c| c > self.durable_at[s]));
            if late {
                v.push(if w.is_some_and(|w| w.discard) {
                    ANY
                } else {
                    id
                });
            }
        }
        v
    }

    /// After reassembly: sector `s` holds `v` (read from the authoritative leg), and only `v`.
    pub fn set_after_crash(&mut self, s: usize, v: u64, now: u64) {
        self.possible[s] = vec![(v, now)];
        self.durable[s] = vec![v];
        self.durable_at[s] = now;
    }

    /// After a crash: every sector holds one of its crash-allowed values; that set becomes both
    /// what is possible and what is durable, and nothing is in flight any more.
    pub fn crashed(&mut self, now: u64) {
        let n = self.possible.len();
        let allowed: Vec<Vec<u64>> = (0..n).map(|s| self.crash_allowed(s)).collect();
        for (s, a) in allowed.into_iter().enumerate() {
            self.possible[s] = a.iter().map(|&v| (v, now)).collect();
            self.durable[s] = a;
            self.durable_at[s] = now;
            self.inflight[s].clear();
            self.history[s].clear();
        }
        for w in self.writes.values_mut() {
            if w.completed.is_none() {
                w.completed = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_completed_wins_unless_concurrent() {
        let mut m = Model::new(4);
        m.write_accepted(1, 0, 2, false, 1);
        m.write_completed(1, true, 2);
        assert_eq!(m.possible_ids(0), vec![1]);
        // 2 and 3 overlap in time: both stay possible.
        m.write_accepted(2, 0, 1, false, 3);
        m.write_accepted(3, 0, 1, false, 4);
        assert_eq!(m.read_allowed(0), vec![1, 2, 3]);
        m.write_completed(3, true, 5);
        m.write_completed(2, true, 6);
        assert_eq!(m.possible_ids(0), vec![3, 2]);
        // A later write supersedes both.
        m.write_accepted(4, 0, 1, false, 7);
        m.write_completed(4, true, 8);
        assert_eq!(m.possible_ids(0), vec![4]);
        assert_eq!(m.possible_ids(1), vec![1]);
    }

    #[test]
    fn crash_allows_durable_or_later() {
        let mut m = Model::new(2);
        m.write_accepted(1, 0, 1, false, 1);
        m.write_completed(1, true, 2);
        let snap = m.snapshot();
        m.flush_durable(&snap, 3);
        m.write_accepted(2, 0, 1, false, 4); // never completes
        assert_eq!(m.crash_allowed(0), vec![1, 2]);
        assert_eq!(m.crash_allowed(1), vec![INITIAL]);
    }
}
