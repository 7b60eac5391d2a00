//! Following a topic: new messages as they arrive, after a cursor. What
//! `tail` prints and what the admin listener streams as Server-Sent Events.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;

use super::{Bus, BusError, Stored};

/// How often an idle topic is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// Messages read at once.
const BATCH: usize = 256;

/// The messages of `topic` after sequence `after`, in batches, oldest first;
/// it waits (polling) for more and never ends by itself. A failed read is
/// yielded once; the caller decides whether to go on.
pub fn follow(
    bus: Arc<dyn Bus>,
    topic: String,
    after: i64,
) -> impl Stream<Item = Result<Vec<Stored>, BusError>> + Send {
    futures_util::stream::unfold((bus, topic, after), |(bus, topic, mut cursor)| async move {
        loop {
            match bus.read(&topic, cursor, BATCH).await {
                Ok(batch) if batch.is_empty() => tokio::time::sleep(POLL).await,
                Ok(batch) => {
                    cursor = batch.last().map_or(cursor, |message| message.seq);
                    return Some((Ok(batch), (bus, topic, cursor)));
                }
                Err(error) => return Some((Err(error), (bus, topic, cursor))),
            }
        }
    })
}
