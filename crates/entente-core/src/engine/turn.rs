//! Updates handed over in selection order. The engine folds plain updates into the aggregate in
//! the order sites were selected (so the result does not depend on who finished first). A
//! site reached over a network waits for its [`Turn`] before it takes its update in, so the
//! coordinator holds one update at a time however many sites finish together; the rest wait
//! on their nodes (a transport may take in the next few early: [`Turn::within`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

/// The position in the round's selection whose update the engine takes next, and the tasks
/// waiting for it to move.
#[derive(Debug, Default)]
pub struct FoldGate {
    state: Mutex<GateState>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    next: usize,
    /// Async waiters ([`Turn::within`]), woken at every move.
    wakers: Vec<Waker>,
}

impl FoldGate {
    /// A gate at position 0.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lets the next position through (the engine has used or dropped the current one).
    pub(crate) fn advance(&self) {
        let wakers = {
            let mut state = self.state();
            state.next += 1;
            std::mem::take(&mut state.wakers)
        };
        self.moved.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Blocks until the engine is ready for this update: every site selected before this one
    /// has been folded in or left out.
    pub fn wait(&self) {
        let mut state = self.gate.state();
        while state.next < self.position {
            state = self
                .gate
                .moved
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Resolves once at most `ahead` positions are left before this one (`within(0)`: the
    /// engine is ready for it), without holding a thread while it waits: a transport can then
    /// take in the next few updates while the engine folds the current one.
    pub fn within(&self, ahead: usize) -> Within<'_> {
        Within { turn: self, ahead }
    }
}

/// The future of [`Turn::within`].
#[derive(Debug)]
pub struct Within<'a> {
    turn: &'a Turn,
    ahead: usize,
}

impl Future for Within<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.turn.gate.state();
        if self.turn.position.saturating_sub(state.next) <= self.ahead {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
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

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn within_resolves_when_few_enough_are_ahead_and_is_woken_by_the_gate() {
        let gate = FoldGate::new();
        let turn = Turn::new(Arc::clone(&gate), 3);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut near = std::pin::pin!(turn.within(1));
        assert!(near.as_mut().poll(&mut cx).is_pending());
        gate.advance(); // 2 ahead: still waiting, and woken to look again
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(near.as_mut().poll(&mut cx).is_pending());
        gate.advance(); // 1 ahead
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(near.as_mut().poll(&mut cx).is_ready());
        assert!(std::pin::pin!(turn.within(0)).poll(&mut cx).is_pending());
        gate.advance();
        assert!(std::pin::pin!(turn.within(0)).poll(&mut cx).is_ready());
    }
}
