//! The aggregation thread: packets from the ingest queue in, flushes out on request.

use crossbeam_channel::{Receiver, select};

use super::Aggregator;
use crate::model::Flush;
use crate::telemetry::PointDrop;

impl AsRef<[u8]> for crate::ingest::Packet {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

/// A request to the aggregation thread.
#[derive(Debug)]
pub enum Control {
    /// Flush closed buckets (every bucket when `final_flush`) and send the result back.
    Flush {
        /// Also flush the open bucket (shutdown, or an explicit request).
        final_flush: bool,
        /// Where the [`Flush`] goes; if the receiver is gone, its points are counted as
        /// [`PointDrop::ShutdownDeadline`].
        reply: tokio::sync::oneshot::Sender<Flush>,
    },
}

/// Run `agg` on a new thread: insert every packet from `packets` at `clock()` (unix seconds) and answer
/// [`Control`] messages.
///
/// Before a flush the thread first inserts the packets already queued at that moment, so a final flush sent
/// after the listeners stopped covers everything they read. The thread keeps serving `control` after
/// `packets` disconnects, and returns when `control` disconnects. `P` is the ingest queue's
/// [`Packet`](crate::ingest::Packet) (returned to its pool once inserted), or any byte buffer in tests.
pub fn spawn_worker<P>(
    mut agg: Aggregator,
    packets: Receiver<P>,
    control: Receiver<Control>,
    clock: fn() -> i64,
) -> std::thread::JoinHandle<()>
where
    P: AsRef<[u8]> + Send + 'static,
{
    std::thread::spawn(move || {
        let mut packets = Some(packets);
        loop {
            let never = crossbeam_channel::never();
            let queue = packets.as_ref().unwrap_or(&never);
            select! {
                recv(queue) -> packet => match packet {
                    Ok(p) => agg.insert_packet(p.as_ref(), clock()),
                    Err(_) => packets = None,
                },
                recv(control) -> msg => match msg {
                    Ok(Control::Flush { final_flush, reply }) => {
                        if let Some(queue) = &packets {
                            for p in queue.try_iter().take(queue.len()) {
                                agg.insert_packet(p.as_ref(), clock());
                            }
                        }
                        let flush = agg.flush(clock(), final_flush);
                        if let Err(lost) = reply.send(flush) {
                            agg.count_lost(lost.samples(), PointDrop::ShutdownDeadline);
                        }
                    }
                    Err(_) => return,
                },
            }
        }
    })
}
