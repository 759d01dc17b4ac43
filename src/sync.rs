//! The atomics of the lock-free parts (a function's phase word and its handshake with
//! scale-down, the settlement of held places): the standard library's, or loom's when the
//! crate's unit tests are built with `--cfg sfz_loom` to model-check every interleaving of
//! them (`.ci/run` does).

#[cfg(not(all(test, sfz_loom)))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(all(test, sfz_loom))]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

/// Adds `n` to `counter` if the sum stays within `limit`; whether it did. A loop of
/// compare-and-swap rather than `fetch_update`, so that it reads the same under loom.
pub(crate) fn add_within(counter: &AtomicUsize, n: usize, limit: usize) -> bool {
    let mut current = counter.load(Ordering::Acquire);
    loop {
        let Some(next) = current.checked_add(n).filter(|&next| next <= limit) else {
            return false;
        };
        match counter.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}
