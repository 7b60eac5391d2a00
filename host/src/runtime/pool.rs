//! Warm instances: an instance serves a bounded number of calls before it is
//! replaced, and is thrown away after any trap or timeout.
//!
//! A fresh instance per request costs ~100 µs of instantiation and first
//! touches of memory; a warm one ~8 µs (measured in `../shared/WASMTIME.md`).
//! The queue is lock-free, so taking an instance never waits on a lock.

use crossbeam_queue::ArrayQueue;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::InstanceState;
use super::bindings::{ConnectorWorld, ConnectorWorldIndices};

/// An instantiated connector with its store.
pub struct Warm {
    pub store: Store<InstanceState>,
    /// The instance itself, for the optional exports looked up on it.
    pub instance: Instance,
    /// The exports every connector has.
    pub world: ConnectorWorld,
    uses: u32,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm").field("uses", &self.uses).finish_non_exhaustive()
    }
}

/// Idle warm instances of one component.
pub struct InstancePool {
    idle: ArrayQueue<Warm>,
    reuse: u32,
}

impl std::fmt::Debug for InstancePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePool").field("idle", &self.idle.len()).field("reuse", &self.reuse).finish()
    }
}

impl InstancePool {
    /// Keeps at most `capacity` idle instances, each for at most `reuse` calls.
    pub fn new(capacity: usize, reuse: u32) -> Self {
        Self { idle: ArrayQueue::new(capacity.max(1)), reuse: reuse.max(1) }
    }

    /// An idle instance, or a new one made from `pre` in the store `store` makes.
    pub async fn take(
        &self,
        pre: &InstancePre<InstanceState>,
        indices: &ConnectorWorldIndices,
        store: impl FnOnce() -> Store<InstanceState>,
    ) -> wasmtime::Result<Warm> {
        if let Some(warm) = self.idle.pop() {
            return Ok(warm);
        }
        let mut store = store();
        let instance = pre.instantiate_async(&mut store).await?;
        let world = indices.load(&mut store, &instance)?;
        Ok(Warm { store, instance, world, uses: 0 })
    }

    /// Returns an instance after a call that ended normally; it is dropped
    /// once it has served its share, or when the pool is full.
    pub fn give_back(&self, mut warm: Warm) {
        warm.uses += 1;
        if warm.uses < self.reuse {
            let _ = self.idle.push(warm);
        }
    }
}
