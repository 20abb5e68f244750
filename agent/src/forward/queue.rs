//! The retry queue: payloads waiting for the intake, capped in bytes, oldest out first.

use std::collections::VecDeque;

use crate::encode::Payload;

/// Payloads that could not be delivered yet, bounded by the sum of their compressed sizes
/// (`DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`).
#[derive(Debug)]
pub struct RetryQueue {
    items: VecDeque<Payload>,
    bytes: usize,
    max_bytes: usize,
}

impl RetryQueue {
    /// An empty queue holding at most `max_bytes` of payload bodies.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes held (compressed bodies).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The cap (`DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    #[cfg(test)]
    /// Payloads held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Append a payload; returns what no longer fits, oldest first (the new payload itself when it is
    /// larger than the whole cap).
    #[must_use]
    pub fn push(&mut self, p: Payload) -> Vec<Payload> {
        let mut evicted = Vec::new();
        if p.body.len() > self.max_bytes {
            evicted.push(p);
            return evicted;
        }
        self.bytes += p.body.len();
        self.items.push_back(p);
        while self.bytes > self.max_bytes {
            match self.items.pop_front() {
                Some(old) => {
                    self.bytes -= old.body.len();
                    evicted.push(old);
                }
                None => break,
            }
        }
        evicted
    }

    /// Take out the first payload `which` matches.
    pub fn take(&mut self, which: impl Fn(&Payload) -> bool) -> Option<Payload> {
        let i = self.items.iter().position(which)?;
        let p = self.items.remove(i)?;
        self.bytes -= p.body.len();
        Some(p)
    }

    /// Take everything, oldest first.
    pub fn drain(&mut self) -> Vec<Payload> {
        self.bytes = 0;
        self.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::PayloadKind;
    use bytes::Bytes;

    fn payload(id: u64, len: usize) -> Payload {
        Payload {
            kind: PayloadKind::Series,
            body: Bytes::from(vec![0; len]),
            raw_len: len,
            items: 1,
            samples: id,
            destination: crate::forward::DestinationId::MAIN,
        }
    }

    fn ids(ps: &[Payload]) -> Vec<u64> {
        ps.iter().map(|p| p.samples).collect()
    }

    #[test]
    fn the_queue_evicts_oldest_first_to_stay_under_its_byte_cap() {
        let mut q = RetryQueue::new(100);
        assert!(q.push(payload(1, 40)).is_empty());
        assert!(q.push(payload(2, 40)).is_empty());
        assert_eq!(q.bytes(), 80);
        assert_eq!(ids(&q.push(payload(3, 50))), [1]);
        assert_eq!(q.bytes(), 90);
        assert_eq!(ids(&q.push(payload(4, 100))), [2, 3]);
        assert_eq!(ids(&q.drain()), [4]);
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn a_payload_larger_than_the_cap_is_evicted_at_once() {
        let mut q = RetryQueue::new(10);
        assert!(q.push(payload(1, 5)).is_empty());
        assert_eq!(ids(&q.push(payload(2, 11))), [2]);
        assert_eq!(q.len(), 1);
    }
}
