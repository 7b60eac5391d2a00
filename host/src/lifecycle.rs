//! The one shape every long-running part of the service shares, below the
//! bus, the metrics, egress and the listeners that use it: a [`Capability`]
//! starts its tasks on one tracker and ends them when one token is
//! cancelled, so shutdown is cancel, then wait for the tracker within a bound.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A part of the service that runs until shutdown: the listeners, the egress
/// workers, the component and credential-set watchers, the spool drainer,
/// the metrics upkeep.
pub trait Capability: Send {
    /// For logs.
    fn name(&self) -> &'static str;

    /// Spawns the capability's tasks on `tasks`. They end on their own once
    /// `stop` is cancelled, finishing (within their own bounds) what is under way.
    fn start(self: Box<Self>, tasks: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()>;
}

/// Sleeps for `period` unless `stop` comes first; false once stopped. The
/// shape of every periodic capability's loop.
pub async fn tick(period: Duration, stop: &CancellationToken) -> bool {
    stop.run_until_cancelled(tokio::time::sleep(period)).await.is_some()
}
