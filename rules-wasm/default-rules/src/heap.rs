//! The component's heap: power-of-two size classes carved from bump-allocated chunks.
//!
//! The host runs every invocation in a fresh instance and throws it away afterwards, so this
//! heap never gives memory back and never has to fight fragmentation over a long life. What it
//! must be is cheap: lowering a batch calls the allocator once per string and list, and the
//! planning itself allocates the written values, so the general-purpose allocator of wasi-libc
//! was a large share of each record's instructions. Here a small block (up to
//! [`LARGEST_CLASS`] bytes) is rounded up to a power of two and comes from that class's free
//! list or from the current chunk; a larger or over-aligned block, and every chunk after the
//! first, comes from the system allocator. Freed small blocks go back to their class's list, so
//! memory use stays within twice the live bytes plus one chunk.
//!
//! The first chunk is part of the heap itself: the component's heap is a zero-initialised
//! static, so that chunk lies in the module's initial linear memory (`.bss`), and an invocation
//! whose small blocks fit in it never calls `memory.grow`. Growing is what makes the host change
//! the protection of the slot's pages (once when the guest grows, once more to take the pages
//! back when the slot's next instance starts); that `mprotect` and its TLB shootdown were a
//! large share of a small invocation's wall-clock time.
//!
//! The component registers [`SizeClassHeap`] as its global allocator (wasm32 only; natively the
//! crate keeps the system allocator). This module must never hand one block to two owners and
//! never return a block smaller or less aligned than the layout asks for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class: 8 bytes (room for the free-list link on any target).
const SMALLEST_SHIFT: u32 = 3;
/// The largest class, in bytes; larger blocks go to the system allocator.
pub const LARGEST_CLASS: usize = 4096;
const LARGEST_SHIFT: u32 = LARGEST_CLASS.trailing_zeros();
const CLASSES: usize = (LARGEST_SHIFT - SMALLEST_SHIFT + 1) as usize;
/// Small blocks are aligned to their size, up to this; larger alignments go to the system.
const MAX_ALIGN: usize = 16;
/// The size of a chunk that small blocks are carved from.
const CHUNK: usize = 64 << 10;

struct Heap {
    /// Per class, the first free block; each free block holds the address of the next.
    free: [*mut u8; CLASSES],
    /// The unused part of the current chunk.
    next: *mut u8,
    end: *mut u8,
    /// Whether the heap's own first chunk has been taken.
    first_used: bool,
}

/// The chunk that comes with the heap, aligned as the chunks of the system allocator are.
#[repr(C, align(16))]
struct FirstChunk([u8; CHUNK]);

/// A size-class allocator for a short-lived, single-threaded instance.
pub struct SizeClassHeap {
    heap: UnsafeCell<Heap>,
    /// The first chunk small blocks are carved from (the system allocator gives the others).
    first: UnsafeCell<FirstChunk>,
}

// SAFETY: a wasm32 component runs on one thread (no threads proposal), and native code
// uses its own instances only from one thread (see the tests); the heap is never shared across
// threads.
unsafe impl Sync for SizeClassHeap {}

impl SizeClassHeap {
    /// An empty heap with its first chunk unused. All zeroes, so a static one costs no data.
    pub const fn new() -> Self {
        SizeClassHeap {
            heap: UnsafeCell::new(Heap {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
                first_used: false,
            }),
            first: UnsafeCell::new(FirstChunk([0; CHUNK])),
        }
    }
}

impl Default for SizeClassHeap {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a layout, or none when the system allocator serves it.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST_CLASS || layout.align() > MAX_ALIGN {
        return None;
    }
    let size = layout.size().max(1 << SMALLEST_SHIFT);
    // ceil(log2(size)) - SMALLEST_SHIFT
    Some((usize::BITS - (size - 1).leading_zeros() - SMALLEST_SHIFT) as usize)
}

#[inline]
fn class_size(class: usize) -> usize {
    1 << (class as u32 + SMALLEST_SHIFT)
}

impl Heap {
    /// A block of `class`; `first` is the heap's own first chunk, taken before any other.
    #[inline]
    unsafe fn take(&mut self, class: usize, first: *mut u8) -> *mut u8 {
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a free block of this class holds the next free block's address.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = class_size(class);
        let align = size.min(MAX_ALIGN);
        let room = self.end.addr() - self.next.addr();
        let pad = self.next.addr().wrapping_neg() & (align - 1);
        if pad + size <= room {
            // SAFETY: `pad + size` bytes fit between `next` and `end`, inside one chunk.
            unsafe {
                let block = self.next.add(pad);
                self.next = block.add(size);
                return block;
            }
        }
        let chunk = if self.first_used {
            // SAFETY: a non-zero size and a valid power-of-two alignment.
            unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, MAX_ALIGN)) }
        } else {
            self.first_used = true;
            first
        };
        if chunk.is_null() {
            return chunk;
        }
        // SAFETY: a class is at most `LARGEST_CLASS` bytes, far less than a chunk, and the chunk
        // is aligned to `MAX_ALIGN`, at least the block's alignment.
        unsafe {
            self.next = chunk.add(size);
            self.end = chunk.add(CHUNK);
        }
        chunk
    }

    #[inline]
    unsafe fn give(&mut self, block: *mut u8, class: usize) {
        // SAFETY: the block was handed out for this class, so it is at least 8 bytes and aligned
        // for a pointer, and it is no longer used by its owner.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }
}

// SAFETY: small blocks are at least `layout.size()` bytes (rounded up to the class) and aligned
// to `min(class size, 16)`, which is at least `layout.align()` since a layout's size is a
// multiple of its alignment; a block is on a free list only after its owner freed it; other
// layouts are the system allocator's.
unsafe impl GlobalAlloc for SizeClassHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: one thread (see `Sync`), and no reference to the heap outlives this call.
            Some(class) => unsafe { (*self.heap.get()).take(class, self.first.get().cast()) },
            None => unsafe { System.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            // SAFETY: as in `alloc`; the caller frees a block it got with this layout.
            Some(class) => unsafe { (*self.heap.get()).give(block, class) },
            None => unsafe { System.dealloc(block, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a valid new size for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            (Some(old), Some(new)) if old == new => block,
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: as for `alloc` and `dealloc`; the two blocks do not overlap.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

impl SizeClassHeap {
    /// The canonical ABI's `realloc(old_ptr, old_len, align, new_len)` over this heap, as the
    /// component exports it: `(_, 0, align, 0)` is the dangling `align` (nothing allocated), a
    /// zero old size allocates, a non-zero one reallocates. Out of memory, it returns what
    /// `out_of_memory` gives (the component traps there; the dangling pointer skips the check).
    ///
    /// # Safety
    /// `align` is a power of two and the sizes fit it; a non-zero `old_len` comes only with a
    /// block this heap gave out with that size and alignment.
    #[inline(always)]
    pub unsafe fn canonical_realloc(
        &self,
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
        out_of_memory: impl FnOnce() -> *mut u8,
    ) -> *mut u8 {
        // SAFETY: the caller's contract, above.
        let block = unsafe {
            if old_len == 0 {
                if new_len == 0 {
                    return ptr::without_provenance_mut(align);
                }
                self.alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                self.realloc(
                    old_ptr,
                    Layout::from_size_align_unchecked(old_len, align),
                    new_len,
                )
            }
        };
        if block.is_null() {
            return out_of_memory();
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_realloc_allocates_reallocates_and_hands_out_nothing_for_nothing() {
        let heap = SizeClassHeap::new();
        unsafe {
            // Nothing for nothing: the dangling, aligned pointer, and no block taken.
            assert_eq!(
                heap.canonical_realloc(ptr::null_mut(), 0, 8, 0, ptr::null_mut)
                    .addr(),
                8
            );
            let first = heap.canonical_realloc(ptr::null_mut(), 0, 4, 12, ptr::null_mut);
            assert_eq!(first.addr() % 4, 0);
            first.copy_from_nonoverlapping(b"abcdefghijkl".as_ptr(), 12);
            // A second block does not overlap the first.
            let second = heap.canonical_realloc(ptr::null_mut(), 0, 1, 3, ptr::null_mut);
            assert!(second.addr() >= first.addr() + 12 || second.addr() + 3 <= first.addr());
            // Growing past the class moves the block and keeps its bytes.
            let grown = heap.canonical_realloc(first, 12, 4, 200, ptr::null_mut);
            assert_ne!(grown, first);
            assert_eq!(grown.addr() % 4, 0);
            assert_eq!(std::slice::from_raw_parts(grown, 12), b"abcdefghijkl");
            // Shrinking keeps the prefix.
            let shrunk = heap.canonical_realloc(grown, 200, 4, 5, ptr::null_mut);
            assert_eq!(std::slice::from_raw_parts(shrunk, 5), b"abcde");
            heap.dealloc(shrunk, layout(5, 4));
            heap.dealloc(second, layout(3, 1));
            // Out of memory: what the caller's handler gives (the component's traps).
            let handled = ptr::without_provenance_mut::<u8>(0x5eed);
            let too_large = isize::MAX as usize - 7;
            assert_eq!(
                heap.canonical_realloc(ptr::null_mut(), 0, 8, too_large, || handled),
                handled
            );
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_round_up_to_powers_of_two() {
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(8, 8)), Some(0));
        assert_eq!(class_of(layout(9, 1)), Some(1));
        assert_eq!(class_of(layout(16, 16)), Some(1));
        assert_eq!(class_of(layout(17, 1)), Some(2));
        assert_eq!(class_of(layout(LARGEST_CLASS, 1)), Some(CLASSES - 1));
        assert_eq!(class_of(layout(LARGEST_CLASS + 1, 1)), None);
        assert_eq!(class_of(layout(64, 32)), None);
        for size in 1..=LARGEST_CLASS {
            let c = class_of(layout(size, 1)).unwrap();
            assert!(class_size(c) >= size && (c == 0 || class_size(c - 1) < size));
        }
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused_after_free() {
        let heap = SizeClassHeap::new();
        unsafe {
            let mut blocks = Vec::new();
            // Enough small blocks to need more than one chunk.
            for i in 0..5_000usize {
                let align = [1, 2, 4, 8, 16][i % 5];
                let l = layout((1 + i % 200).next_multiple_of(align), align);
                let p = heap.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p.addr() % l.align(), 0);
                p.write_bytes((i % 251) as u8, l.size());
                blocks.push((p, l, (i % 251) as u8));
            }
            for &(p, l, byte) in &blocks {
                assert!(
                    std::slice::from_raw_parts(p, l.size())
                        .iter()
                        .all(|&b| b == byte)
                );
            }
            let (p, l, _) = blocks[10];
            heap.dealloc(p, l);
            assert_eq!(heap.alloc(l), p, "a freed block is reused by its class");
            for (p, l, _) in blocks {
                heap.dealloc(p, l);
            }
        }
    }

    #[test]
    fn the_first_chunk_is_the_heaps_own() {
        let heap = SizeClassHeap::new();
        let own = heap.first.get().addr()..heap.first.get().addr() + CHUNK;
        unsafe {
            let mut taken = 0;
            while taken + LARGEST_CLASS <= CHUNK {
                let p = heap.alloc(layout(LARGEST_CLASS, 8));
                assert!(
                    own.contains(&p.addr()),
                    "small blocks come from the own chunk first"
                );
                taken += LARGEST_CLASS;
            }
            let next = heap.alloc(layout(LARGEST_CLASS, 8));
            assert!(
                !next.is_null() && !own.contains(&next.addr()),
                "then from the system"
            );
        }
    }

    #[test]
    fn realloc_keeps_the_contents_within_and_across_classes() {
        let heap = SizeClassHeap::new();
        unsafe {
            let l = layout(10, 1);
            let p = heap.alloc(l);
            p.copy_from_nonoverlapping(b"0123456789".as_ptr(), 10);
            let same = heap.realloc(p, l, 16);
            assert_eq!(same, p, "growing within the class stays in place");
            let grown = heap.realloc(same, layout(16, 1), 3000);
            assert_eq!(std::slice::from_raw_parts(grown, 10), b"0123456789");
            let large = heap.realloc(grown, layout(3000, 1), 100_000);
            assert_eq!(std::slice::from_raw_parts(large, 10), b"0123456789");
            let back = heap.realloc(large, layout(100_000, 1), 5);
            assert_eq!(std::slice::from_raw_parts(back, 5), b"01234");
            heap.dealloc(back, layout(5, 1));
        }
    }

    #[test]
    fn large_and_over_aligned_blocks_come_from_the_system() {
        let heap = SizeClassHeap::new();
        unsafe {
            for l in [layout(LARGEST_CLASS + 1, 8), layout(64, 64)] {
                let p = heap.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p.addr() % l.align(), 0);
                p.write_bytes(7, l.size());
                heap.dealloc(p, l);
            }
        }
    }
}
