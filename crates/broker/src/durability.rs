//! What a publisher confirm or a `tx.commit-ok` waits for, as a token a queue returns, and
//! the handle that says when a token is satisfied.
//!
//! A queue that logs a message (or an ack) returns a [`Durable`] token: today the message
//! store's generation that holds the change, fsynced by the group commit; a replicated commit
//! index later. Tokens of one operation combine with [`Durable::and`]. A front end never reads
//! the store: it asks a [`Durability`] for [`Progress`] and for a wake-up after the next
//! commit.

use std::sync::Arc;

use lepus_store::store::Store;
/// What a commit wakes (a front end's connection waiting for durability).
pub use lepus_store::store::Waker as CommitWaker;

/// What makes a change durable. [`Durable::NOW`]: nothing to wait for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Durable(u64);

impl Durable {
    pub const NOW: Durable = Durable(0);

    /// Durable once the store's generation `generation` is on disk.
    pub fn after_generation(generation: u64) -> Durable {
        Durable(generation)
    }

    /// Durable when both are.
    #[must_use]
    pub fn and(self, other: Durable) -> Durable {
        self.max(other)
    }

    /// Whether anything must be waited for.
    pub fn is_pending(self) -> bool {
        self.0 > 0
    }
}

/// Where durability stands at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The store is failing (its last commit failed): nack tokens not yet durable. It
    /// retries, so later tokens may be acked again.
    pub failed: bool,
    durable_through: u64,
}

impl Progress {
    /// Everything is durable (no storage, or nothing waits).
    pub const ALL: Progress = Progress { failed: false, durable_through: u64::MAX };

    pub fn covers(&self, token: Durable) -> bool {
        token.0 <= self.durable_through
    }
}

/// The broker's durability: the message store when there is a data directory.
#[derive(Debug, Clone, Default)]
pub struct Durability {
    store: Option<Store>,
}

impl Durability {
    pub fn new(store: Option<Store>) -> Durability {
        Durability { store }
    }

    /// A token covered by this snapshot really is durable: the durable generation only
    /// moves when a commit succeeded. `failed` is read first, so a recovery between the two
    /// reads can only turn a nack into an ack that is true.
    pub fn progress(&self) -> Progress {
        match &self.store {
            Some(store) => Progress { failed: store.failed(), durable_through: store.durable() },
            None => Progress::ALL,
        }
    }

    pub fn is_durable(&self, token: Durable) -> bool {
        self.progress().covers(token)
    }

    /// Whether the store is failing now (confirms of logged messages become nacks until a
    /// retry succeeds).
    pub fn failed(&self) -> bool {
        self.store.as_ref().is_some_and(Store::failed)
    }

    /// Asks a failing store to retry now rather than after its pause.
    pub fn retry_now(&self) {
        if let Some(store) = &self.store {
            store.retry_now();
        }
    }

    /// Wakes `waker` once after the next commit; false (and no wake) without storage.
    pub fn wake_after_commit(&self, waker: Arc<dyn CommitWaker>) -> bool {
        match &self.store {
            Some(store) => {
                store.wake_after_commit(waker);
                true
            }
            None => false,
        }
    }
}
