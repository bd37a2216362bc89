//! A global allocator that records the largest single request made on the current thread,
//! for the tests that hold loaders to an allocation cap (`tests/bad_inputs.rs`,
//! `tests/fuzz_corpus.rs`). Included by path, not through `common`, so that only those test
//! binaries get it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f` on this thread, catching a panic, and return its outcome with the largest single
/// allocation it requested.
pub fn largest_during<T>(f: impl FnOnce() -> T) -> (std::thread::Result<T>, usize) {
    LARGEST.with(|l| l.set(0));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    (outcome, LARGEST.with(|l| l.get()))
}
