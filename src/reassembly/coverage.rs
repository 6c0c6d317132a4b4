//! A bit per element of a width x height grid: which pixels (or bytes)
//! fragments have covered, to find overlaps and gaps.

use crate::wire::Rect;

#[derive(Debug, Clone)]
pub struct Coverage {
    bits: Vec<u64>,
    width: usize,
    len: usize,
    marked: usize,
}

impl Coverage {
    pub fn new(width: usize, height: usize) -> Coverage {
        let len = width * height;
        Coverage {
            bits: vec![0; len.div_ceil(64)],
            width,
            len,
            marked: 0,
        }
    }

    pub fn get(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Marks element `i`; false when it was marked already.
    pub fn mark_one(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        self.marked += 1;
        true
    }

    /// Marks every element of `r`; false (and nothing marked) when any
    /// was marked already.
    pub fn mark(&mut self, r: Rect) -> bool {
        for y in r.y as usize..r.bottom() as usize {
            for x in r.x as usize..r.right() as usize {
                if self.get(y * self.width + x) {
                    return false;
                }
            }
        }
        for y in r.y as usize..r.bottom() as usize {
            for x in r.x as usize..r.right() as usize {
                self.mark_one(y * self.width + x);
            }
        }
        true
    }

    pub fn complete(&self) -> bool {
        self.marked == self.len
    }

    pub fn heap_bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_and_gaps() {
        let mut c = Coverage::new(3, 2);
        assert!(c.mark(Rect::new(0, 0, 3, 1)));
        assert!(!c.complete());
        assert!(!c.mark(Rect::new(2, 0, 1, 2)));
        assert!(c.mark(Rect::new(0, 1, 3, 1)));
        assert!(c.complete());
        let mut c = Coverage::new(64, 1);
        assert!(c.mark(Rect::new(0, 0, 64, 1)));
        assert!(c.complete());
        assert!(Coverage::new(0, 1).complete());
    }
}
