//! How the engine runs its calls to sites. A site in the same process computes, so its calls
//! share the rayon pool of one thread per core. A site reached over a network mostly waits on
//! its node, so every selected site's call should be in flight at once; a work-stealing pool of
//! one thread per site does that at a cost that grows with the square of the sites (every idle
//! worker scans every other one's queue: with 1,000 sites that scan took most of a round's CPU),
//! so such calls get a plain thread each instead, which costs nothing while it waits.

use std::collections::BTreeMap;
use std::sync::mpsc::channel;

use rayon::prelude::*;

use super::FoldGate;

/// The stack of a thread that waits on a remote site's call: its frames are small, and a
/// thousand of them should not reserve the two megabytes a thread gets by default.
const WAITING_STACK: usize = 256 * 1024;

/// Where the engine runs its calls to sites.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dispatch {
    /// On the current rayon pool: for sites that train in this process (simulation).
    #[default]
    Pool,
    /// One thread of its own per call, with a small stack (256 KiB): for sites that wait on a
    /// remote node, so that every call is in flight at once however many sites a round
    /// selects. Not for sites that train in this process: their work needs the pool, and more
    /// stack. Where the system runs out of threads, calls wait for earlier ones to finish.
    ThreadPerCall,
}

impl Dispatch {
    /// `call(position, item)` for every item, results in the items' order.
    pub(crate) fn map<I, T>(self, items: &[I], call: impl Fn(usize, &I) -> T + Sync) -> Vec<T>
    where
        I: Sync,
        T: Send,
    {
        match self {
            Self::Pool => items
                .par_iter()
                .enumerate()
                .map(|(position, item)| call(position, item))
                .collect(),
            Self::ThreadPerCall => std::thread::scope(|scope| {
                let call = &call;
                let mut done: Vec<Option<T>> = items.iter().map(|_| None).collect();
                // Started calls, oldest first.
                let mut running = std::collections::VecDeque::new();
                let mut warned = false;
                for (position, item) in items.iter().enumerate() {
                    loop {
                        let started = std::thread::Builder::new()
                            .name("entente-site-call".into())
                            .stack_size(WAITING_STACK)
                            .spawn_scoped(scope, move || call(position, item));
                        match started {
                            Ok(thread) => {
                                running.push_back((position, thread));
                                break;
                            }
                            // Out of threads: wait for the oldest call, which depends on no
                            // later one, then try again; with none left running, call here.
                            Err(error) => {
                                if !warned {
                                    tracing::warn!(%error, running = running.len(), "could not start a thread for a site call; calls wait for earlier ones to finish");
                                    warned = true;
                                }
                                match running.pop_front() {
                                    Some((earlier, thread)) => done[earlier] = Some(joined(thread)),
                                    None => {
                                        done[position] = Some(call(position, item));
                                        break;
                                    }
                                }
                            }
                        }
                    }
                }
                for (position, thread) in running {
                    done[position] = Some(joined(thread));
                }
                done.into_iter().flatten().collect()
            }),
        }
    }
}

impl Dispatch {
    /// `call(position, item)` for every item at once, each result handed to `fold` in the
    /// items' order as soon as it and every one before it are in; after each, `gate` lets the
    /// next position through. The caller thus holds only results that came in ahead of their
    /// turn, and a transport that waits on its [`Turn`](super::Turn) holds back the rest, so
    /// the outcome depends neither on which call finished first nor on the number of threads.
    pub(crate) fn fold_in_order<I, T>(
        self,
        items: &[I],
        gate: &FoldGate,
        call: impl Fn(usize, &I) -> T + Sync,
        mut fold: impl FnMut(usize, T) + Send,
    ) where
        I: Sync,
        T: Send,
    {
        let (tx, rx) = channel();
        std::thread::scope(|scope| {
            let folder = scope.spawn(move || {
                let mut waiting = BTreeMap::new();
                let mut next = 0;
                // A panic in `fold` is carried on once every call has ended; the gate keeps
                // moving meanwhile, or the calls waiting for their turn would wait forever.
                let mut panicked = None;
                for (position, result) in rx {
                    waiting.insert(position, result);
                    while let Some(result) = waiting.remove(&next) {
                        if panicked.is_none() {
                            let folded =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    fold(next, result)
                                }));
                            panicked = folded.err();
                        }
                        next += 1;
                        gate.advance();
                    }
                }
                if let Some(panic) = panicked {
                    std::panic::resume_unwind(panic);
                }
            });
            self.map(items, |position, item| {
                let result = call(position, item);
                // The folder stops reading only once the sender is gone (below).
                let _ = tx.send((position, result));
            });
            drop(tx);
            joined(folder)
        });
    }
}

/// The result of a finished call; its panic, carried on.
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u32> = (0..50).collect();
        for dispatch in [Dispatch::Pool, Dispatch::ThreadPerCall] {
            let out = dispatch.map(&items, |position, item| (position, item * 2));
            let expected: Vec<_> = (0..50).map(|i| (i as usize, i * 2)).collect();
            assert_eq!(out, expected, "{dispatch:?}");
        }
    }

    /// Every call is in flight at once: 64 calls that each wait for all the others finish only
    /// if none waits for a thread (a pool of one thread per core would deadlock here).
    #[test]
    fn a_panic_in_the_fold_reaches_the_caller_and_the_calls_waiting_their_turn_end() {
        let gate = FoldGate::new();
        let items = [0usize, 1, 2, 3];
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Dispatch::ThreadPerCall.fold_in_order(
                &items,
                &gate,
                |position, _| {
                    // As a transport does: a result is handed over only in its turn.
                    super::super::Turn::new(Arc::clone(&gate), position).wait();
                    position
                },
                |position, _| assert_ne!(position, 0, "the fold failed"),
            );
        }));
        assert!(outcome.is_err(), "the fold's panic was lost");
    }

    #[test]
    fn thread_per_call_runs_every_call_at_once() {
        let items = vec![(); 64];
        let all = Arc::new(Barrier::new(items.len()));
        let out = Dispatch::ThreadPerCall.map(&items, |position, ()| {
            all.wait();
            position
        });
        assert_eq!(out, (0..64).collect::<Vec<_>>());
    }
}
