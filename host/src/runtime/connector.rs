//! A loaded connector component and the calls the host makes into it.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::bindings::{
    Accepted, AccessToken, ConnectorWorld, ConnectorWorldPre, Descriptor, EgressMessage, SendError, SimulatedRequest,
    TokenError, TokenRequest,
};
use super::pool::{InstancePool, Warm};
use super::{EPOCH_TICK, Grants, InstanceState, Runtime};
use crate::config::Limits;
use crate::telemetry::metrics;

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("does not link: {0}")]
    Link(String),
    #[error("does not answer describe(): {0}")]
    Describe(String),
}

/// A compiled, linked and described connector, ready for calls.
pub struct Connector {
    pre: ConnectorWorldPre<InstanceState>,
    pool: Arc<InstancePool>,
    grants: Arc<Grants>,
    limits: Limits,
    descriptor: Descriptor,
    content_hash: String,
    from_cache: bool,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.descriptor.name)
            .field("version", &self.descriptor.version)
            .field("content_hash", &self.content_hash)
            .finish_non_exhaustive()
    }
}

/// A failed call into the guest: it trapped, ran out of time, or the host failed it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(String);

impl Connector {
    pub(super) async fn load(runtime: &Runtime, bytes: Vec<u8>, grants: Arc<Grants>) -> Result<Self, LoadError> {
        let content_hash = content_hash(&bytes);
        // Compiling takes a core for a while: never on a request worker.
        let (engine, cache, hash) = (runtime.engine.clone(), runtime.cache.clone(), content_hash.clone());
        let compiled = tokio::task::spawn_blocking(move || cache.load_or_compile(&engine, &bytes, &hash))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))?
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let component = compiled.component;
        let instance_pre = runtime.linker.instantiate_pre(&component).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = ConnectorWorldPre::new(instance_pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let limits = &runtime.limits;
        let mut connector = Self {
            pre,
            pool: Arc::new(InstancePool::new(limits.max_concurrent_instances as usize, limits.instance_reuse)),
            grants,
            limits: runtime.limits.clone(),
            descriptor: Descriptor { name: String::new(), version: String::new() },
            content_hash,
            from_cache: compiled.from_cache,
        };
        connector.descriptor = connector.call_describe().await.map_err(|e| LoadError::Describe(e.to_string()))?;
        Ok(connector)
    }

    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    pub fn version(&self) -> &str {
        &self.descriptor.version
    }

    /// SHA-256 of the component file, hex.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// Whether the compiled code came from the compile cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn grants(&self) -> &Arc<Grants> {
        &self.grants
    }

    fn new_store(&self) -> Store<InstanceState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let state = InstanceState::new(self.grants.clone(), limits, self.limits.call_timeout);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        // Instantiation runs guest code too: it gets the same deadline as a call.
        store.set_epoch_deadline(self.deadline_ticks());
        store
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A warm instance with a fresh deadline for one call.
    async fn take_instance(&self) -> wasmtime::Result<Warm> {
        let mut warm = self.pool.take(&self.pre, || self.new_store()).await?;
        warm.store.set_epoch_deadline(self.deadline_ticks());
        Ok(warm)
    }

    /// Runs `call` on a warm instance, bounded by the call timeout. The
    /// instance goes back to the pool only if the call ended normally.
    async fn with_instance<T>(
        &self,
        what: &'static str,
        call: impl AsyncFnOnce(&mut Store<InstanceState>, &ConnectorWorld) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let timeout = self.limits.call_timeout;
        let result = tokio::time::timeout(timeout, async {
            let mut warm = self.take_instance().await?;
            let value = call(&mut warm.store, &warm.instance).await?;
            Ok::<_, wasmtime::Error>((value, warm))
        })
        .await;
        let outcome = match result {
            Ok(Ok((value, warm))) => {
                self.pool.give_back(warm);
                Ok(value)
            }
            Ok(Err(trap)) => Err(CallError(format!("{what} failed in the connector: {trap:#}"))),
            Err(_) => Err(CallError(format!("{what} took longer than {timeout:?}"))),
        };
        metrics::component_call(&self.descriptor.name, what, started.elapsed(), outcome.is_ok());
        outcome
    }

    async fn call_describe(&self) -> Result<Descriptor, CallError> {
        self.with_instance("describe", async |store, instance| {
            instance.platform_connector_connector().call_describe(store).await
        })
        .await
    }

    pub async fn describe(&self) -> Result<Descriptor, CallError> {
        self.call_describe().await
    }

    pub async fn send(&self, message: EgressMessage) -> Result<Result<Accepted, SendError>, CallError> {
        self.with_instance("send", async |store, instance| {
            instance.platform_connector_connector().call_send(store, &message).await
        })
        .await
    }

    pub async fn issue_token(&self, request: TokenRequest) -> Result<Result<AccessToken, TokenError>, CallError> {
        self.with_instance("issue-token", async |store, instance| {
            instance.platform_connector_connector().call_issue_token(store, &request).await
        })
        .await
    }

    pub async fn simulate_webhook(
        &self,
        kind: String,
        options: Vec<(String, String)>,
        base_url: String,
    ) -> Result<Result<SimulatedRequest, String>, CallError> {
        self.with_instance("simulate-webhook", async |store, instance| {
            instance.platform_connector_connector().call_simulate_webhook(store, &kind, &options, &base_url).await
        })
        .await
    }

    fn failed_call(&self, started: Instant, reason: String) -> CallError {
        metrics::component_call(&self.descriptor.name, "http", started.elapsed(), false);
        CallError(reason)
    }

    /// Serves one HTTP request with the component's `wasi:http/incoming-handler`.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> Result<hyper::Response<HyperOutgoingBody>, CallError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = Instant::now();
        let timeout = self.limits.call_timeout;
        let mut warm = match tokio::time::timeout(timeout, self.take_instance()).await {
            Ok(Ok(warm)) => warm,
            Ok(Err(e)) => return Err(CallError(format!("cannot instantiate the connector: {e:#}"))),
            Err(_) => return Err(CallError(format!("instantiating took longer than {timeout:?}"))),
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let cannot_pass = |e: wasmtime::Error| CallError(format!("cannot pass the request in: {e:#}"));
        let req = warm.store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(cannot_pass)?;
        let out = warm.store.data_mut().http().new_response_outparam(sender).map_err(cannot_pass)?;
        let pool_owner = self.pool.clone();
        let guest = async move {
            let run = warm.instance.wasi_http_incoming_handler().call_handle(&mut warm.store, req, out);
            match tokio::time::timeout(timeout, run).await {
                Ok(Ok(())) => {
                    pool_owner.give_back(warm);
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("took longer than {timeout:?}")),
            }
        };
        // The guest usually finishes (body written) before anyone looks at the
        // response: run it right here. Should it hand over the response head and
        // keep writing a body, it goes on as its own task while the body streams.
        let mut guest = Box::pin(guest);
        let mut receiver = receiver;
        let answered = tokio::select! {
            biased;
            finished = &mut guest => Err(finished),
            response = &mut receiver => Ok(response),
        };
        let why = |finished: Result<(), String>| match finished {
            Err(reason) => format!("the connector failed: {reason}"),
            Ok(()) => "the connector returned without answering".to_owned(),
        };
        let response = match answered {
            Ok(Ok(response)) => {
                tokio::spawn(guest);
                response
            }
            // The guest dropped its response without answering: it is ending; say why.
            Ok(Err(_)) => return Err(self.failed_call(started, why(guest.await))),
            // Finished: the response, if it set one, is waiting in the channel.
            Err(finished) => match receiver.await {
                Ok(response) => response,
                Err(_) => return Err(self.failed_call(started, why(finished))),
            },
        };
        let response = response.map_err(|code| CallError(format!("the connector answered with an error: {code:?}")));
        metrics::component_call(&self.descriptor.name, "http", started.elapsed(), response.is_ok());
        response
    }
}

/// SHA-256 of a component file, hex: how versions are told apart.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
