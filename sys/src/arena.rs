//! A bump allocator over the memory a host hands to `Mirror::new`: every table of the mirror is
//! carved from it once, so nothing is allocated afterwards and all memory is bounded at creation.
use core::mem::{align_of, size_of};

/// Carves typed slices out of one byte buffer. With no buffer it only measures.
pub(crate) struct Arena<'a> {
    buf: Option<&'a mut [u8]>,
    used: usize,
}

impl<'a> Arena<'a> {
    pub(crate) fn measure() -> Arena<'a> {
        Arena { buf: None, used: 0 }
    }

    pub(crate) fn new(buf: &'a mut [u8]) -> Arena<'a> {
        Arena {
            buf: Some(buf),
            used: 0,
        }
    }

    /// Bytes needed so far, plus slack for aligning the start of the buffer.
    pub(crate) fn needed(&self) -> usize {
        self.used.saturating_add(64)
    }

    /// A slice of `n` copies of `init`, or `None` when the buffer is too small (or when only
    /// measuring: then the space is counted and an empty result returned).
    pub(crate) fn slice<T: Copy>(&mut self, n: usize, init: T) -> Option<&'a mut [T]> {
        let bytes = size_of::<T>().checked_mul(n)?;
        match self.buf.take() {
            None => {
                // Measuring: count worst-case padding.
                self.used = self.used.checked_add(bytes)?.checked_add(align_of::<T>())?;
                None
            }
            Some(buf) => {
                let pad = buf.as_ptr().align_offset(align_of::<T>());
                if pad == usize::MAX || pad.checked_add(bytes)? > buf.len() {
                    self.buf = Some(buf);
                    return None;
                }
                let (_, rest) = buf.split_at_mut_checked(pad)?;
                let (mine, rest) = rest.split_at_mut_checked(bytes)?;
                self.used = self.used.checked_add(pad)?.checked_add(bytes)?;
                self.buf = Some(rest);
                let ptr = mine.as_mut_ptr().cast::<T>();
                // SAFETY: `mine` is `bytes = n * size_of::<T>()` bytes, exclusively borrowed for
                // 'a, and `ptr` is aligned for T (pad computed by align_offset). Every element is
                // written before the slice is formed, and T: Copy has no drop glue.
                unsafe {
                    for i in 0..n {
                        ptr.add(i).write(init);
                    }
                    Some(core::slice::from_raw_parts_mut(ptr, n))
                }
            }
        }
    }

    pub(crate) fn is_measuring(&self) -> bool {
        self.buf.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_aligned_slices_and_refuses_overflow() {
        let mut buf = [0u8; 256];
        let mut a = Arena::new(&mut buf[1..]);
        let x: &mut [u64] = a.slice(4, 7u64).unwrap();
        assert_eq!(x.as_ptr() as usize % 8, 0);
        assert_eq!(x, &[7, 7, 7, 7]);
        let y: &mut [u8] = a.slice(10, 1u8).unwrap();
        assert_eq!(y.len(), 10);
        assert!(a.slice(1000, 0u32).is_none());
        let mut m = Arena::measure();
        assert!(m.slice(4, 0u64).is_none());
        assert!(m.needed() >= 32 + 64);
    }
}
