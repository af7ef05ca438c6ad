//! Host memory a backend call makes the host allocate, counted against a per-call budget.
//!
//! The guest's linear memory is capped by the store's limiter, but a guest can also make
//! the host allocate on its behalf: resource-table handles, `wasi:http` fields and bodies,
//! exec output, log lines. Every call runs on a thread of its own, so a global allocator
//! that keeps a live-bytes counter per thread measures exactly that: what the call's thread
//! holds now, less what it held when the call began. The counter is a const-initialised
//! thread-local without a destructor, so counting never allocates and works at any point
//! of a thread's life.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting live bytes per thread.
pub struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with` so a thread that is being torn down never panics inside the allocator.
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_add(delta)));
}

fn live() -> isize {
    LIVE.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every method forwards to `System` unchanged; counting touches only a Cell.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on to `System`.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// One call's host memory: what its thread allocated since the call began.
pub struct HostMeter {
    baseline: isize,
    budget: usize,
    exceeded: bool,
}

/// A call went over its host memory budget.
#[derive(Debug, thiserror::Error)]
#[error("host memory budget of {} MiB exhausted", .0 >> 20)]
pub struct OverBudget(usize);

impl HostMeter {
    /// Starts counting on the current thread, which must be the one that runs the call.
    pub fn start(budget: usize) -> HostMeter {
        HostMeter { baseline: live(), budget, exceeded: false }
    }

    /// Bytes the call's thread allocated since `start` and still holds.
    pub fn used(&self) -> usize {
        live().saturating_sub(self.baseline).max(0) as usize
    }

    /// Fails (and remembers it) once the call holds more than its budget.
    pub fn check(&mut self) -> Result<(), OverBudget> {
        if self.exceeded || self.used() > self.budget {
            self.exceeded = true;
            return Err(OverBudget(self.budget));
        }
        Ok(())
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_this_thread_holds() {
        let mut meter = HostMeter::start(1 << 20);
        let held = vec![0u8; 512 << 10];
        assert!(meter.used() >= 512 << 10, "{}", meter.used());
        assert!(meter.check().is_ok());
        let more = vec![0u8; 1 << 20];
        assert!(meter.check().is_err());
        drop((held, more));
        assert!(meter.used() < 64 << 10, "freed memory is no longer counted: {}", meter.used());
        // Once over, the call stays failed: it is being torn down.
        assert!(meter.exceeded() && meter.check().is_err());
    }

    #[test]
    fn other_threads_do_not_count() {
        let meter = HostMeter::start(1 << 20);
        let elsewhere = std::thread::spawn(|| vec![0u8; 8 << 20]).join().unwrap();
        assert!(meter.used() < 64 << 10, "{}", meter.used());
        drop(elsewhere);
    }
}
