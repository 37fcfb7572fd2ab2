//! Updates handed over in selection order. The engine folds plain updates into the aggregate in
//! the order sites were selected (so the result does not depend on who finished first). A
//! site reached over a network waits for its [`Turn`] before it takes its update in, so the
//! coordinator holds one update at a time however many sites finish together; the rest wait
//! on their nodes.

use std::sync::{Arc, Condvar, Mutex};

/// The position in the round's selection whose update the engine takes next.
#[derive(Debug, Default)]
pub struct FoldGate {
    next: Mutex<usize>,
    moved: Condvar,
}

impl FoldGate {
    /// A gate at position 0.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lets the next position through (the engine has used or dropped the current one).
    pub(crate) fn advance(&self) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        self.moved.notify_all();
    }
}

/// One site's place in the order of a round's updates.
#[derive(Debug, Clone)]
pub struct Turn {
    gate: Arc<FoldGate>,
    position: usize,
}

impl Turn {
    /// The place `position` of `gate`.
    pub fn new(gate: Arc<FoldGate>, position: usize) -> Self {
        Self { gate, position }
    }

    /// How many positions the engine takes before this one (0 when it is ready for it), so
    /// that a caller that polls can poll less often the further back it is.
    pub fn ahead(&self) -> usize {
        let next = *self.gate.next.lock().unwrap_or_else(|e| e.into_inner());
        self.position.saturating_sub(next)
    }

    /// Blocks until the engine is ready for this update: every site selected before this one
    /// has been folded in or left out.
    pub fn wait(&self) {
        let mut next = self.gate.next.lock().unwrap_or_else(|e| e.into_inner());
        while *next < self.position {
            next = self
                .gate
                .moved
                .wait(next)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    #[test]
    fn turns_pass_in_order() {
        let gate = FoldGate::new();
        let (tx, rx) = channel();
        let waiters: Vec<_> = (0..4)
            .rev()
            .map(|p| {
                let (turn, tx) = (Turn::new(Arc::clone(&gate), p), tx.clone());
                std::thread::spawn(move || {
                    turn.wait();
                    tx.send(p).unwrap();
                })
            })
            .collect();
        // Only position 0 may pass before the gate moves.
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        for expected in 1..4 {
            gate.advance();
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), expected);
        }
        for w in waiters {
            w.join().unwrap();
        }
    }
}
