//! Paced receiving (`OFFPATH_RECEIVE_PACE`): a UDP receive thread that found little in its socket sleeps
//! for the pace instead of blocking in the socket, so a sender's datagram wakes nobody; a flush first asks
//! every paced thread to empty its socket ([`Pacer::sync`]). UDP only: a UDP sender never waits for its
//! reader, while a Unix datagram client blocks on a full socket, so a sleeping reader would make it wait.
//!
//! Blocking in the socket costs a wake-up and two context switches per datagram when datagrams trickle in
//! (a Lambda function's client sends one per sample): in Lambda that is most of the extension's CPU per
//! invocation. A paced thread empties its socket, sleeps, empties it again, and goes back to blocking only
//! when it found the socket empty. It does not sleep after finding the socket a quarter full (a burst:
//! see the datagram loop), so a sleep never lets the socket overflow at a rate blocking would have kept up
//! with.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The paced threads of one set of listeners, and the flushes waiting for them.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// How long a thread sleeps between drains while traffic is light.
    interval: Duration,
    state: Mutex<State>,
    /// Signalled when a drain is asked for, answered, or the threads stop.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Drains asked for by [`Pacer::sync`] so far.
    asked: u64,
    /// Per paced thread, by the index [`Pacer::join`] gave it.
    threads: Vec<Paced>,
    stopping: bool,
}

#[derive(Debug)]
struct Paced {
    /// The last request this thread's socket was emptied after.
    answered: u64,
    /// Waiting in the socket for a first datagram after finding it empty.
    idle: bool,
    /// The thread's socket (a duplicate descriptor): an idle thread holds nothing to hand over unless a
    /// datagram arrived that it has not woken for yet, which only the socket can tell.
    socket: OwnedFd,
}

impl Paced {
    /// Whether a sync asking for request `want` must wait for this thread.
    fn pending(&self, want: u64) -> bool {
        self.answered < want && (!self.idle || readable(&self.socket))
    }
}

/// Whether `socket` holds a datagram now (a poll that does not wait).
fn readable(socket: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call, and its count; the descriptor is owned.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

impl Pacer {
    pub(crate) fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did: every update is one assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register one paced thread reading `socket` (a duplicate of its descriptor), idle until it first
    /// reads; returns its index.
    pub(crate) fn join(&self, socket: OwnedFd) -> usize {
        let mut s = self.lock();
        s.threads.push(Paced {
            answered: 0,
            idle: true,
            socket,
        });
        s.threads.len() - 1
    }

    /// The request a drain starting now answers.
    pub(crate) fn asked(&self) -> u64 {
        self.lock().asked
    }

    /// Thread `me` emptied its socket after request `asked` was made; `idle`: it found nothing and now
    /// waits in the socket for a first datagram.
    pub(crate) fn answered(&self, me: usize, asked: u64, idle: bool) {
        let mut s = self.lock();
        let waited_for = s.asked > 0;
        if let Some(t) = s.threads.get_mut(me) {
            t.answered = t.answered.max(asked);
            t.idle = idle;
        }
        drop(s);
        if waited_for {
            self.changed.notify_all();
        }
    }

    /// Thread `me` has datagrams to read again.
    pub(crate) fn busy(&self, me: usize) {
        if let Some(t) = self.lock().threads.get_mut(me) {
            t.idle = false;
        }
    }

    /// Sleep for the interval, or less when a drain is asked for after request `seen` or the threads stop.
    pub(crate) fn sleep(&self, seen: u64) {
        let s = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(s, self.interval, |s| s.asked == seen && !s.stopping);
    }

    /// Wake every sleeping thread for good: the listeners stop.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    /// Ask every paced thread to empty its socket into the queues now, and wait until each has (or holds
    /// nothing: it found its socket empty since and no datagram arrived), at most `wait`. Returns whether
    /// all did in time.
    ///
    /// An idle thread whose socket holds a datagram is about to wake for it: the sync waits for that
    /// thread's drain too, so every datagram the socket took before the sync is handed over.
    pub(crate) fn sync(&self, wait: Duration) -> bool {
        let mut s = self.lock();
        s.asked += 1;
        let want = s.asked;
        self.changed.notify_all();
        let pending = |s: &mut State| !s.stopping && s.threads.iter().any(|t| t.pending(want));
        let (_s, timeout) = self
            .changed
            .wait_timeout_while(s, wait, pending)
            .unwrap_or_else(PoisonError::into_inner);
        !timeout.timed_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::time::Instant;

    /// A bound UDP socket, and a duplicate of its descriptor for [`Pacer::join`].
    fn socket() -> (UdpSocket, OwnedFd) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dup = s.try_clone().unwrap().into();
        (s, dup)
    }

    /// A pacer with an hour's pace and one thread that has read (so a sync waits for it).
    fn one_busy_thread() -> (Arc<Pacer>, usize) {
        let p = Arc::new(Pacer::new(Duration::from_secs(3600)));
        let me = p.join(socket().1);
        p.busy(me);
        (p, me)
    }

    #[test]
    fn sync_returns_at_once_when_every_thread_is_idle() {
        let p = Pacer::new(Duration::from_secs(3600));
        p.join(socket().1);
        p.join(socket().1);
        assert!(p.sync(Duration::ZERO));
    }

    #[test]
    fn sync_waits_for_an_idle_thread_whose_socket_took_a_datagram() {
        let p = Pacer::new(Duration::from_secs(3600));
        let (s, dup) = socket();
        let me = p.join(dup);
        // Sent before the sync; the thread has not woken for it yet.
        s.send_to(b"a:1|c", s.local_addr().unwrap()).unwrap();
        assert!(!p.sync(Duration::from_millis(1)));
        // The thread wakes, empties its socket, finds it empty on the next drain and waits in it again.
        p.busy(me);
        let mut buf = [0u8; 64];
        assert_eq!(s.recv(&mut buf).unwrap(), 5);
        p.answered(me, p.asked(), true);
        assert!(p.sync(Duration::ZERO));
    }

    #[test]
    fn sync_waits_for_a_busy_thread_to_answer_and_wakes_it_from_its_sleep() {
        let (p, me) = one_busy_thread();
        let seen = p.asked();
        p.answered(me, seen, false);
        let thread = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                // An hour-long sleep that only a request can cut short.
                p.sleep(seen);
                let asked = p.asked();
                assert!(asked > seen);
                p.answered(me, asked, false);
            })
        };
        let start = Instant::now();
        assert!(p.sync(Duration::from_secs(60)));
        assert!(start.elapsed() < Duration::from_secs(60));
        thread.join().unwrap();
    }

    #[test]
    fn sync_gives_up_after_its_wait_when_a_busy_thread_never_answers() {
        let (p, me) = one_busy_thread();
        assert!(!p.sync(Duration::from_millis(1)));
        // Once the thread found its socket empty, nothing is pending.
        p.answered(me, 0, true);
        assert!(p.sync(Duration::ZERO));
    }

    #[test]
    fn stop_ends_sleeps_and_pending_syncs() {
        let (p, _me) = one_busy_thread();
        let sleeper = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.sleep(p.asked()))
        };
        p.stop();
        sleeper.join().unwrap();
        assert!(p.sync(Duration::from_secs(60)));
    }
}
