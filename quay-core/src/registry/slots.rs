//! Counted slots: at most `n` holders at once, taken in turn, given back when dropped. The
//! process's upload part buffers and a worker's copies in flight are counted this way.

use futures::channel::mpsc;
use futures::StreamExt;

use crate::error::{Error, Result};

/// A pool of `n` slots (see the [module docs](self)).
pub struct Slots {
    tokens: futures::lock::Mutex<mpsc::Receiver<()>>,
    give_back: mpsc::Sender<()>,
    count: usize,
}

/// Slots taken from [`Slots`] (one, or several at once); given back when dropped.
#[derive(Debug)]
pub struct Slot {
    give_back: mpsc::Sender<()>,
    held: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The channel has room for every slot: this cannot fail while the pool exists.
        for _ in 0..self.held {
            let _ = self.give_back.try_send(());
        }
    }
}

impl Slots {
    /// A pool of `count` slots (at least one).
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        let (mut give_back, tokens) = mpsc::channel(count);
        for _ in 0..count {
            let _ = give_back.try_send(());
        }
        Slots {
            tokens: futures::lock::Mutex::new(tokens),
            give_back,
            count,
        }
    }

    /// How many slots the pool has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Waits for a free slot and takes it.
    pub async fn take(&self) -> Result<Slot> {
        self.take_many(1).await
    }

    /// Waits until `n` slots (at least one, at most the pool's count) are free and takes them
    /// together. Takers are served in turn: one waiting for many is not passed by others.
    pub async fn take_many(&self, n: usize) -> Result<Slot> {
        let n = n.clamp(1, self.count);
        let mut tokens = self.tokens.lock().await;
        // Tokens gathered so far go back if this future is dropped half-way.
        let mut slot = Slot {
            give_back: self.give_back.clone(),
            held: 0,
        };
        while slot.held < n {
            match tokens.next().await {
                Some(()) => slot.held += 1,
                None => return Err(Error::internal("a pool of slots is closed")),
            }
        }
        Ok(slot)
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn at_most_count_holders_and_a_dropped_slot_comes_back() {
        let slots = Slots::new(2);
        let a = slots.take().await.unwrap();
        let _b = slots.take().await.unwrap();
        assert!(
            slots.take().now_or_never().is_none(),
            "a third holder waits"
        );
        drop(a);
        assert!(
            slots.take().now_or_never().is_some(),
            "the dropped slot is free"
        );
        assert_eq!(slots.count(), 2);
    }

    #[tokio::test]
    async fn many_slots_are_taken_together_and_given_back_together() {
        let slots = Slots::new(4);
        let one = slots.take().await.unwrap();
        let three = slots.take_many(3).await.unwrap();
        assert!(slots.take().now_or_never().is_none(), "all four are held");
        drop(three);
        let two = slots.take_many(2).await.unwrap();
        let last = slots.take().await.unwrap();
        // Three wanted, none free: the taker waits, and a dropped wait gives back what it had.
        let mut waiting = Box::pin(slots.take_many(3));
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(one);
        assert!(futures::poll!(&mut waiting).is_pending(), "one of three");
        drop(waiting);
        assert!(
            slots.take().now_or_never().is_some(),
            "the one it held is back"
        );
        drop((two, last));
        // More than the pool's count is the whole pool.
        assert!(slots.take_many(10).now_or_never().is_some());
    }
}
