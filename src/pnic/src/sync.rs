//! Poison-tolerant locking for the crate's mutexes.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, taking over a poisoned lock: every mutex here guards plain
/// state that a panicking holder cannot leave half-updated in a way the
/// next user could not handle, and a panic elsewhere must not take the NIC
/// (or its model) down with it.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
