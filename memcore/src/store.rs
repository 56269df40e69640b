// SPDX-License-Identifier: GPL-2.0-only
//! Caller-provided storage for the crate's sorted tables (memslots, attribute ranges, bindings).
//!
//! The crate allocates nothing. A table asks its store for room with [`Store::spare`] before it
//! changes anything, so a full store is `ENOMEM` with the table untouched; the kernel module
//! backs a store with a `KVec` it grows outside its locks, the host tests with [`ArrayStore`].

use crate::Errno;

/// A vector-like sequence of `T` with a capacity fixed between calls.
pub trait Store<T> {
    /// The elements, in order.
    fn as_slice(&self) -> &[T];
    /// The elements, in order, for in-place updates.
    fn as_mut_slice(&mut self) -> &mut [T];
    /// How many more elements fit without allocating.
    fn spare(&self) -> usize;
    /// Inserts `value` at `index` (`index <= len`), shifting the rest up.
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`] when [`Store::spare`] is 0; nothing changed then.
    fn insert(&mut self, index: usize, value: T) -> Result<(), Errno>;
    /// Removes and returns the element at `index` (`index < len`), shifting the rest down.
    fn remove(&mut self, index: usize) -> T;

    /// The number of elements.
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    /// Whether there is no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fixed-capacity store in an array (no heap).
#[derive(Clone, Debug)]
pub struct ArrayStore<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Default for ArrayStore<T, N> {
    fn default() -> Self {
        ArrayStore {
            items: [T::default(); N],
            len: 0,
        }
    }
}

impl<T: Copy + Default, const N: usize> Store<T> for ArrayStore<T, N> {
    fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }

    fn spare(&self) -> usize {
        N - self.len
    }

    fn insert(&mut self, index: usize, value: T) -> Result<(), Errno> {
        if self.len == N || index > self.len {
            return Err(Errno::ENOMEM);
        }
        self.items.copy_within(index..self.len, index + 1);
        self.items[index] = value;
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, index: usize) -> T {
        let v = self.items[index];
        self.items.copy_within(index + 1..self.len, index);
        self.len -= 1;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_store_inserts_removes_and_refuses_when_full() {
        let mut s = ArrayStore::<u32, 3>::default();
        s.insert(0, 2).unwrap();
        s.insert(0, 1).unwrap();
        s.insert(2, 3).unwrap();
        assert_eq!(s.as_slice(), &[1, 2, 3]);
        assert_eq!(s.insert(1, 9), Err(Errno::ENOMEM));
        assert_eq!(s.as_slice(), &[1, 2, 3]);
        assert_eq!(s.remove(1), 2);
        assert_eq!(s.as_slice(), &[1, 3]);
        assert_eq!(s.spare(), 1);
    }
}
