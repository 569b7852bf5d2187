//! Fixed-size bitmaps over carved words. Bit `r` lives in word `r / 64`, bit `r % 64`; written
//! little-endian, that is byte `r / 8`, bit `r % 8` — the on-disk order (docs/FORMAT.md).

pub(crate) struct Bits<'a> {
    words: &'a mut [u64],
    len: u64,
}

impl<'a> Bits<'a> {
    pub(crate) fn words_for(len: u64) -> usize {
        usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX)
    }

    pub(crate) fn new(words: &'a mut [u64], len: u64) -> Bits<'a> {
        Bits { words, len }
    }

    pub(crate) fn get(&self, i: u64) -> bool {
        match self.words.get((i / 64) as usize) {
            Some(w) => i < self.len && (w >> (i % 64)) & 1 == 1,
            None => false,
        }
    }

    /// Sets bit `i`; true if it was clear.
    pub(crate) fn set(&mut self, i: u64) -> bool {
        if i >= self.len {
            return false;
        }
        match self.words.get_mut((i / 64) as usize) {
            Some(w) => {
                let m = 1u64 << (i % 64);
                let was = *w & m != 0;
                *w |= m;
                !was
            }
            None => false,
        }
    }

    /// Clears bit `i`; true if it was set.
    pub(crate) fn clear(&mut self, i: u64) -> bool {
        match self.words.get_mut((i / 64) as usize) {
            Some(w) => {
                let m = 1u64 << (i % 64);
                let was = *w & m != 0;
                *w &= !m;
                was
            }
            None => false,
        }
    }

    pub(crate) fn fill(&mut self, value: bool) {
        for w in self.words.iter_mut() {
            *w = if value { u64::MAX } else { 0 };
        }
        if value {
            self.trim();
        }
    }

    /// Zero every bit past `len` (the words may be longer than `len` bits: whole sectors).
    fn trim(&mut self) {
        let full = (self.len / 64) as usize;
        let rem = self.len % 64;
        for (i, w) in self.words.iter_mut().enumerate() {
            if i > full || (i == full && rem == 0) {
                *w = 0;
            } else if i == full {
                *w &= (1u64 << rem) - 1;
            }
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// OR in a byte bitmap in disk order (extra bits ignored).
    pub(crate) fn or_bytes(&mut self, bytes: &[u8]) {
        for (wi, w) in self.words.iter_mut().enumerate() {
            let mut le = [0u8; 8];
            for (j, b) in le.iter_mut().enumerate() {
                if let Some(v) = bytes.get(wi * 8 + j) {
                    *b = *v;
                }
            }
            *w |= u64::from_le_bytes(le);
        }
        self.trim();
    }

    /// Set every bit in `[from, to)`.
    pub(crate) fn set_range(&mut self, from: u64, to: u64) {
        let mut i = from;
        while i < to.min(self.len) {
            if i.is_multiple_of(64) && i + 64 <= to.min(self.len) {
                if let Some(w) = self.words.get_mut((i / 64) as usize) {
                    *w = u64::MAX;
                }
                i += 64;
            } else {
                self.set(i);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_count_next() {
        let mut w = [0u64; 3];
        let mut b = Bits::new(&mut w, 130);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(129));
        assert!(!b.set(130));
        assert_eq!(b.count(), 2);
        assert!(b.clear(129));
        assert!(!b.get(129));
        b.fill(true);
        assert_eq!(b.count(), 130);
        // Words past the length (padding to a whole sector) stay clear.
        let mut w = [0u64; 4];
        let mut b2 = Bits::new(&mut w, 70);
        b2.fill(true);
        assert_eq!(b2.count(), 70);
        b2.or_bytes(&[0xff; 32]);
        assert_eq!(b2.count(), 70);
        b.fill(false);
        b.set_range(3, 100);
        assert_eq!(b.count(), 97);
        assert!(!b.get(2) && b.get(3) && b.get(99) && !b.get(100));
    }

    #[test]
    fn disk_order_round_trip() {
        let mut w = [0u64; 2];
        let mut b = Bits::new(&mut w, 100);
        b.or_bytes(&[0b0000_0010, 0, 0, 0, 0, 0, 0, 0, 0b1000_0000]);
        assert!(b.get(1));
        assert!(b.get(71));
        assert_eq!(b.count(), 2);
    }
}
