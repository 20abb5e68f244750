//! Fair use of the Unix stream listener's connection slots, as pure state (time is a parameter).
//!
//! The socket file is writable by every local user (as the Agent's), so a user must not be able to
//! lock the others out by holding every slot, idle or sending frames byte by byte:
//!
//! - **Per-user share.** Each connection is tagged with its peer's uid (`SO_PEERCRED`). When every slot
//!   is taken, a new connection from a uid that holds fewer connections than the uid holding the most
//!   takes the slot of one of that uid's connections (the one idle longest, preferring one without a
//!   partial frame); otherwise it is refused. One uid can use every slot while nobody else needs one,
//!   and any other uid can always get its fair share.
//! - **Slow frames.** A frame must arrive whole within [`FRAME_TIMEOUT`] of its first byte (clients
//!   write a frame at once); a connection that trickles one is closed.
//! - **Idle connections.** While more than half of the slots are taken, a connection that sent nothing
//!   for [`IDLE_TIMEOUT`] is closed (the DogStatsD clients reconnect on their next write). With slots to
//!   spare, idle connections are left alone.

use std::time::{Duration, Instant};

/// A frame must be complete this long after its first byte arrived.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// With more than half of the slots taken, a connection silent this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The uid of a peer whose credentials could not be read: all such peers share one share.
pub(crate) const UNKNOWN_UID: u32 = u32::MAX;

/// What the listener knows about one connection to be fair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The peer's uid (`SO_PEERCRED`), or [`UNKNOWN_UID`].
    pub(crate) uid: u32,
    /// When bytes last arrived (or when it was accepted).
    pub(crate) last_data: Instant,
    /// When the first byte of the frame still incomplete arrived; `None` between frames.
    pub(crate) frame_since: Option<Instant>,
}

impl Meta {
    /// A connection accepted at `now`.
    pub(crate) fn new(uid: u32, now: Instant) -> Meta {
        Meta {
            uid,
            last_data: now,
            frame_since: None,
        }
    }

    /// Bytes arrived at `now`; `completed` frames were taken, and `partial` says whether bytes of an
    /// incomplete frame remain.
    pub(crate) fn data(&mut self, now: Instant, completed: bool, partial: bool) {
        self.last_data = now;
        if completed || self.frame_since.is_none() {
            self.frame_since = partial.then_some(now);
        } else if !partial {
            self.frame_since = None;
        }
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A slot is free.
    Accept,
    /// Every slot is taken: close the connection at this index and give its slot to the new one.
    Evict(usize),
    /// Every slot is taken and the new peer's uid already holds its share: close the new one.
    Refuse,
}

/// Admit a connection from `uid` among `conns` (at most `max` slots).
pub(crate) fn admit(conns: &[Meta], uid: u32, max: usize) -> Admit {
    if conns.len() < max {
        return Admit::Accept;
    }
    let held = |u: u32| conns.iter().filter(|c| c.uid == u).count();
    let Some(top) = conns.iter().map(|c| c.uid).max_by_key(|&u| held(u)) else {
        return Admit::Refuse;
    };
    // After the swap the newcomer's uid must still hold fewer than the top one did.
    if held(uid) + 1 >= held(top) {
        return Admit::Refuse;
    }
    conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.uid == top)
        .min_by_key(|(_, c)| (c.frame_since.is_some(), c.last_data))
        .map_or(Admit::Refuse, |(i, _)| Admit::Evict(i))
}

/// Why a connection is closed by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A frame did not arrive whole within [`FRAME_TIMEOUT`].
    SlowFrame,
    /// Silent for [`IDLE_TIMEOUT`] while slots are short.
    Idle,
}

/// Whether `conn` must be closed at `now`; `crowded` when more than half of the slots are taken.
pub(crate) fn expired(conn: &Meta, now: Instant, crowded: bool) -> Option<Expiry> {
    let since = |t: Instant| now.saturating_duration_since(t);
    if conn.frame_since.is_some_and(|t| since(t) >= FRAME_TIMEOUT) {
        return Some(Expiry::SlowFrame);
    }
    if crowded && since(conn.last_data) >= IDLE_TIMEOUT {
        return Some(Expiry::Idle);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn with_a_free_slot_everyone_is_accepted() {
        let t0 = Instant::now();
        let conns = vec![Meta::new(65534, t0); 3];
        assert_eq!(admit(&conns, 65534, 4), Admit::Accept);
        assert_eq!(admit(&conns, 0, 4), Admit::Accept);
    }

    #[test]
    fn one_uid_holding_every_slot_gives_the_longest_idle_one_to_another_uid() {
        let t0 = Instant::now();
        let mut conns: Vec<Meta> = (0..4).map(|i| Meta::new(65534, at(t0, i))).collect();
        conns[0].frame_since = Some(t0);
        // The oldest without a partial frame goes first.
        assert_eq!(admit(&conns, 1000, 4), Admit::Evict(1));
        // The same uid gets nothing more.
        assert_eq!(admit(&conns, 65534, 4), Admit::Refuse);
    }

    #[test]
    fn shares_even_out_and_then_newcomers_are_refused() {
        let t0 = Instant::now();
        let mut conns: Vec<Meta> = (0..8).map(|_| Meta::new(65534, t0)).collect();
        let mut evicted = 0;
        while let Admit::Evict(i) = admit(&conns, 1000, 8) {
            conns[i] = Meta::new(1000, t0);
            evicted += 1;
        }
        assert_eq!(evicted, 4, "{conns:?}");
        assert_eq!(admit(&conns, 1000, 8), Admit::Refuse);
        assert_eq!(admit(&conns, 65534, 8), Admit::Refuse);
        // A third user still gets a slot, from one of the two holding the most.
        assert!(matches!(admit(&conns, 7, 8), Admit::Evict(_)));
    }

    #[test]
    fn a_trickled_frame_times_out_whatever_the_crowd() {
        let t0 = Instant::now();
        let mut m = Meta::new(1, t0);
        m.data(t0, false, true);
        for s in 1..10 {
            m.data(at(t0, s), false, true);
            assert_eq!(expired(&m, at(t0, s), false), None);
        }
        assert_eq!(expired(&m, at(t0, 10), false), Some(Expiry::SlowFrame));
        // A completed frame followed by a new partial one restarts the clock.
        m.data(at(t0, 10), true, true);
        assert_eq!(expired(&m, at(t0, 19), false), None);
        m.data(at(t0, 19), true, false);
        assert_eq!(m.frame_since, None);
        assert_eq!(expired(&m, at(t0, 1000), false), None);
    }

    #[test]
    fn idle_connections_are_closed_only_when_slots_are_short() {
        let t0 = Instant::now();
        let m = Meta::new(1, t0);
        assert_eq!(expired(&m, at(t0, 59), true), None);
        assert_eq!(expired(&m, at(t0, 60), true), Some(Expiry::Idle));
        assert_eq!(expired(&m, at(t0, 3600), false), None);
    }
}
