//! A bus that can be taken away and brought back: a real bus behind a switch.
//! While it is away every operation fails at once, as a dead disk or an
//! unreachable server does.

use ingress_egress::telemetry::TraceContext;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ingress_egress::bus::{BoxFuture, Bus, BusError, Delivery, Published, StateEntry, StateWrite, Stored};

/// `inner`, unless switched off.
#[derive(Debug)]
pub struct OutageBus {
    inner: Arc<dyn Bus>,
    away: AtomicBool,
}

impl OutageBus {
    /// `inner`, available.
    pub fn new(inner: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self { inner, away: AtomicBool::new(false) })
    }

    /// Takes the bus away (`true`) or brings it back.
    pub fn set_away(&self, away: bool) {
        self.away.store(away, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), BusError> {
        if self.away.load(Ordering::SeqCst) { Err(BusError::Unavailable("disk I/O error".into())) } else { Ok(()) }
    }
}

impl Bus for OutageBus {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a str>,
        payload: Bytes,
        trace: Option<&'a TraceContext>,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.publish(topic, key, payload, trace).await
        })
    }

    fn system(&self) -> &'static str {
        self.inner.system()
    }

    fn take<'a>(&'a self, topic: &'a str, visibility: Duration) -> BoxFuture<'a, Result<Option<Delivery>, BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.take(topic, visibility).await
        })
    }

    fn ack(&self, seq: i64) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.ack(seq).await
        })
    }

    fn retry_later(&self, seq: i64, delay: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.retry_later(seq, delay).await
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.read(topic, after_seq, limit).await
        })
    }

    fn last_seq<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.last_seq(topic).await
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.ping().await
        })
    }

    fn state_get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<StateEntry>, BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.state_get(bucket, key).await
        })
    }

    fn state_put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: String,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StateWrite, BusError>> {
        Box::pin(async move {
            self.check()?;
            self.inner.state_put(bucket, key, value, expected).await
        })
    }
}
