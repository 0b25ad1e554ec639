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

/// A slot taken from [`Slots`]; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    give_back: mpsc::Sender<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The channel has room for every slot: this cannot fail while the pool exists.
        let _ = self.give_back.try_send(());
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
        let mut tokens = self.tokens.lock().await;
        match tokens.next().await {
            Some(()) => Ok(Slot {
                give_back: self.give_back.clone(),
            }),
            None => Err(Error::internal("a pool of slots is closed")),
        }
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
}
