//! A loaded connector component and the calls the host makes into it.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::InstancePre;
use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::bindings::message_controller::MessageControllerIndices;
use super::bindings::provisioner::ProvisionerIndices;
use super::bindings::token_issuer::TokenIssuerIndices;
use super::bindings::webhook_handler::{WebhookHandlerIndices, WebhookRequest, WebhookResponse};
use super::bindings::webhook_simulator::WebhookSimulatorIndices;
use super::bindings::{
    Accepted, AccessToken, ConnectorWorldIndices, Descriptor, EgressMessage, EgressPlan, SendError, SimulatedRequest,
    TokenError, TokenRequest, WiringReport,
};
use super::cache::Origin;
use super::pool::{InstancePool, Warm};
use super::{Grants, InstanceState, Runtime};
use crate::config::Limits;
use crate::telemetry::metrics;

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a valid component, or not for this engine.
    #[error("does not compile: {0}")]
    Compile(String),
    /// It imports something the host does not give, or lacks a required export.
    #[error("does not link: {0}")]
    Link(String),
    /// It loaded but its `describe()` trapped or timed out.
    #[error("does not answer describe(): {0}")]
    Describe(String),
}

/// A failed call into the guest: it trapped, ran out of time, or the host failed it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(String);

/// No instance could be had: every slot of the pool is in use. The call may
/// succeed a moment later, so the caller is told to come back (503).
#[derive(Debug, thiserror::Error)]
#[error("every connector instance is busy")]
pub struct PoolExhausted;

/// Why an HTTP request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Every instance is busy: come back shortly.
    #[error(transparent)]
    Busy(#[from] PoolExhausted),
    /// The call failed.
    #[error(transparent)]
    Failed(#[from] CallError),
}

/// What can come of calling an export that returns its own error.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure<E: std::fmt::Debug> {
    /// The connector answered with its own error.
    #[error("the connector refused: {0:?}")]
    Refused(E),
    /// The connector does not export this optional interface.
    #[error("the connector does not export `{0}`")]
    NotExported(&'static str),
    /// The call itself failed (trap, timeout, host error).
    #[error(transparent)]
    Broken(#[from] CallError),
}

impl<E: std::fmt::Debug> CallFailure<E> {
    fn flatten<T>(result: Result<Result<T, E>, CallError>) -> Result<T, Self> {
        result?.map_err(Self::Refused)
    }
}

/// The optional exports a component has.
struct OptionalExports {
    tokens: Option<TokenIssuerIndices>,
    simulator: Option<WebhookSimulatorIndices>,
    control: Option<MessageControllerIndices>,
    provisioning: Option<ProvisionerIndices>,
    webhooks: Option<WebhookHandlerIndices>,
}

/// A compiled, linked and described connector, ready for calls.
pub struct Connector {
    pre: InstancePre<InstanceState>,
    indices: ConnectorWorldIndices,
    optional: OptionalExports,
    pool: Arc<InstancePool>,
    grants: Arc<Grants>,
    limits: Limits,
    descriptor: Descriptor,
    content_hash: String,
    origin: Origin,
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

impl Connector {
    pub(super) async fn load(runtime: &Runtime, bytes: Vec<u8>, grants: Arc<Grants>) -> Result<Self, LoadError> {
        let content_hash = content_hash(&bytes);
        // Compiling takes a core for a while: never on a request worker.
        let (engine, cache, hash) = (runtime.engine.clone(), runtime.cache.clone(), content_hash.clone());
        let compiled = tokio::task::spawn_blocking(move || cache.load_or_compile(&engine, &bytes, &hash))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))?
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let link_error = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let pre = runtime.linker.instantiate_pre(&compiled.component).map_err(link_error)?;
        let indices = ConnectorWorldIndices::new(&pre).map_err(link_error)?;
        let optional = OptionalExports {
            tokens: TokenIssuerIndices::new(&pre).ok(),
            simulator: WebhookSimulatorIndices::new(&pre).ok(),
            control: MessageControllerIndices::new(&pre).ok(),
            provisioning: ProvisionerIndices::new(&pre).ok(),
            webhooks: WebhookHandlerIndices::new(&pre).ok(),
        };
        let limits = &runtime.limits;
        let mut connector = Self {
            pre,
            indices,
            optional,
            pool: Arc::new(InstancePool::new(limits.max_concurrent_instances as usize, limits.instance_reuse)),
            grants,
            limits: limits.clone(),
            descriptor: Descriptor { name: String::new(), version: String::new() },
            content_hash,
            origin: compiled.origin,
        };
        connector.descriptor = connector.describe().await.map_err(|e| LoadError::Describe(e.to_string()))?;
        Ok(connector)
    }

    /// The name the component gives itself.
    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// The version the component gives itself.
    pub fn version(&self) -> &str {
        &self.descriptor.version
    }

    /// SHA-256 of the component file, hex.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// Where the compiled code came from: the build, the compile cache, or a compile at load.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// What this connector was granted.
    pub fn grants(&self) -> &Arc<Grants> {
        &self.grants
    }

    /// Whether it exports the optional `tokens` interface.
    pub fn issues_tokens(&self) -> bool {
        self.optional.tokens.is_some()
    }

    /// Whether it exports the optional `simulator` interface.
    pub fn simulates_webhooks(&self) -> bool {
        self.optional.simulator.is_some()
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
        // At every epoch tick guest code gives its thread back to the runtime,
        // so a guest in a loop costs its own call and holds no worker thread;
        // once the call's deadline has passed, the tick traps instead.
        // Instantiation runs guest code too: it gets the same deadline as a call.
        store.epoch_deadline_callback(|context| {
            Ok(if Instant::now() >= context.data().call_deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        store
    }

    /// A warm instance with a fresh deadline for one call.
    async fn take_instance(&self) -> wasmtime::Result<Warm> {
        let mut warm = self.pool.take(&self.pre, &self.indices, || self.new_store()).await?;
        warm.store.data_mut().begin_call(self.limits.call_timeout);
        warm.store.set_epoch_deadline(1);
        Ok(warm)
    }

    /// Runs `call` on a warm instance, bounded by the call timeout. The
    /// instance goes back to the pool only if the call ended normally.
    async fn with_instance<T>(
        &self,
        what: &'static str,
        call: impl AsyncFnOnce(&mut Warm) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let timeout = self.limits.call_timeout;
        let result = tokio::time::timeout(timeout, async {
            let mut warm = self.take_instance().await?;
            let value = call(&mut warm).await?;
            Ok::<_, wasmtime::Error>((value, warm))
        })
        .await;
        let outcome = self.settle(what, result);
        metrics::component_call(&self.descriptor.name, what, started.elapsed(), outcome.is_ok());
        outcome
    }

    /// How a bounded call on a warm instance ended: its value, with the
    /// instance back in the pool; or why it failed (the instance, mid-call,
    /// is dropped).
    fn settle<T>(
        &self,
        what: &'static str,
        result: Result<wasmtime::Result<(T, Warm)>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        match result {
            Ok(Ok((value, mut warm))) => {
                warm.store.data_mut().end_call();
                self.pool.give_back(warm);
                Ok(value)
            }
            Ok(Err(trap)) => Err(CallError(format!("{what} failed in the connector: {trap:#}"))),
            Err(_) => Err(CallError(format!("{what} took longer than {:?}", self.limits.call_timeout))),
        }
    }

    /// Asks the component who it is.
    pub async fn describe(&self) -> Result<Descriptor, CallError> {
        self.with_instance("describe", async |warm| {
            warm.world.platform_connector_connector().call_describe(&mut warm.store).await
        })
        .await
    }

    /// Checks an egress message without sending it; the plan says how to rate it.
    pub async fn check(&self, message: &EgressMessage) -> Result<EgressPlan, CallFailure<String>> {
        let result = self
            .with_instance("check", async |warm| {
                warm.world.platform_connector_connector().call_check(&mut warm.store, message).await
            })
            .await;
        CallFailure::flatten(result)
    }

    /// Sends one egress message through the provider, its `attempt`-th time (1 first).
    pub async fn send(&self, message: &EgressMessage, attempt: u32) -> Result<Accepted, CallFailure<SendError>> {
        let result = self
            .with_instance("send", async |warm| {
                warm.world.platform_connector_connector().call_send(&mut warm.store, message, attempt).await
            })
            .await;
        CallFailure::flatten(result)
    }

    /// Issues an access token, when the component exports `tokens`.
    pub async fn issue_token(&self, request: &TokenRequest) -> Result<AccessToken, CallFailure<TokenError>> {
        let indices = self.optional.tokens.as_ref().ok_or(CallFailure::NotExported("tokens"))?;
        let result = self
            .with_instance("issue-token", async |warm| {
                let tokens = indices.load(&mut warm.store, &warm.instance)?;
                tokens.platform_connector_tokens().call_issue_token(&mut warm.store, request).await
            })
            .await;
        CallFailure::flatten(result)
    }

    /// Cancels a scheduled message by the provider's id (sent by `account`,
    /// the default one when none), when the component exports `message-control`.
    pub async fn cancel(
        &self,
        account: Option<&str>,
        provider_message_id: &str,
    ) -> Result<Accepted, CallFailure<SendError>> {
        let indices = self.optional.control.as_ref().ok_or(CallFailure::NotExported("message-control"))?;
        let result = self
            .with_instance("cancel", async |warm| {
                let control = indices.load(&mut warm.store, &warm.instance)?;
                control
                    .platform_connector_message_control()
                    .call_cancel(&mut warm.store, account, provider_message_id)
                    .await
            })
            .await;
        CallFailure::flatten(result)
    }

    /// What `account`'s webhooks (the default account's when none) point at
    /// now, compared with `public_url`, when the component exports
    /// `provisioning`; `parts` names optional parts of the wiring.
    pub async fn inspect_wiring(
        &self,
        account: Option<&str>,
        public_url: Option<&str>,
        parts: &[String],
    ) -> Result<WiringReport, CallFailure<String>> {
        let indices = self.optional.provisioning.as_ref().ok_or(CallFailure::NotExported("provisioning"))?;
        let result = self
            .with_instance("inspect-wiring", async |warm| {
                let provisioning = indices.load(&mut warm.store, &warm.instance)?;
                provisioning
                    .platform_connector_provisioning()
                    .call_inspect(&mut warm.store, account, public_url, parts)
                    .await
            })
            .await;
        CallFailure::flatten(result)
    }

    /// Points `account`'s webhooks (the default account's when none) at
    /// `public_url` (with `dry_run`, only says what would change), when the
    /// component exports `provisioning`.
    pub async fn wire(
        &self,
        account: Option<&str>,
        public_url: &str,
        dry_run: bool,
        parts: &[String],
    ) -> Result<WiringReport, CallFailure<String>> {
        let indices = self.optional.provisioning.as_ref().ok_or(CallFailure::NotExported("provisioning"))?;
        let result = self
            .with_instance("wire", async |warm| {
                let provisioning = indices.load(&mut warm.store, &warm.instance)?;
                provisioning
                    .platform_connector_provisioning()
                    .call_wire(&mut warm.store, account, public_url, dry_run, parts)
                    .await
            })
            .await;
        CallFailure::flatten(result)
    }

    /// Builds a signed example webhook, when the component exports `simulator`.
    pub async fn simulate_webhook(
        &self,
        kind: &str,
        options: &[(String, String)],
        base_url: &str,
    ) -> Result<SimulatedRequest, CallFailure<String>> {
        let indices = self.optional.simulator.as_ref().ok_or(CallFailure::NotExported("simulator"))?;
        let result = self
            .with_instance("simulate-webhook", async |warm| {
                let simulator = indices.load(&mut warm.store, &warm.instance)?;
                simulator
                    .platform_connector_simulator()
                    .call_simulate_webhook(&mut warm.store, kind, options, base_url)
                    .await
            })
            .await;
        CallFailure::flatten(result)
    }

    fn failed_call(&self, started: Instant, reason: String) -> CallError {
        metrics::component_call(&self.descriptor.name, "http", started.elapsed(), false);
        CallError(reason)
    }

    /// Whether it takes webhooks in one call (the optional `webhooks`
    /// export, [`Self::handle_whole`]) rather than through `wasi:http`.
    pub fn answers_whole(&self) -> bool {
        self.optional.webhooks.is_some()
    }

    /// Serves one webhook, read whole, with the component's `webhooks`
    /// export: one call in, one answer out.
    pub async fn handle_whole(
        &self,
        parts: http::request::Parts,
        body: bytes::Bytes,
    ) -> Result<hyper::Response<bytes::Bytes>, HandleError> {
        let started = Instant::now();
        let timeout = self.limits.call_timeout;
        let indices = self.optional.webhooks.as_ref().ok_or_else(|| CallError("no `webhooks` export".into()))?;
        let mut warm = self.instance_for_request().await?;
        let request = whole_request(parts, &body);
        let answered = tokio::time::timeout(timeout, async move {
            let webhooks = indices.load(&mut warm.store, &warm.instance)?;
            let answer = webhooks.platform_connector_webhooks().call_handle(&mut warm.store, &request).await?;
            Ok((answer, warm))
        })
        .await;
        let response = self.settle("http", answered).and_then(|answer| whole_response(answer).map_err(CallError));
        metrics::component_call(&self.descriptor.name, "http", started.elapsed(), response.is_ok());
        Ok(response?)
    }

    /// A warm instance for a request: busy (503, retry) when the pool has
    /// none to give.
    async fn instance_for_request(&self) -> Result<Warm, HandleError> {
        let timeout = self.limits.call_timeout;
        match tokio::time::timeout(timeout, self.take_instance()).await {
            Ok(Ok(warm)) => Ok(warm),
            Ok(Err(e)) if e.chain().any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>()) => {
                Err(HandleError::Busy(PoolExhausted))
            }
            Ok(Err(e)) => Err(CallError(format!("cannot instantiate the connector: {e:#}")).into()),
            Err(_) => Err(CallError(format!("instantiating took longer than {timeout:?}")).into()),
        }
    }

    /// Serves one HTTP request with the component's `wasi:http/incoming-handler`.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> Result<hyper::Response<HyperOutgoingBody>, HandleError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = Instant::now();
        let timeout = self.limits.call_timeout;
        let mut warm = self.instance_for_request().await?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let cannot_pass = |e: wasmtime::Error| CallError(format!("cannot pass the request in: {e:#}"));
        let req = warm.store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(cannot_pass)?;
        let out = warm.store.data_mut().http().new_response_outparam(sender).map_err(cannot_pass)?;
        let pool_owner = self.pool.clone();
        let guest = async move {
            let run = warm.world.wasi_http_incoming_handler().call_handle(&mut warm.store, req, out);
            match tokio::time::timeout(timeout, run).await {
                Ok(Ok(())) => {
                    warm.store.data_mut().end_call();
                    pool_owner.give_back(warm);
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("took longer than {timeout:?}")),
            }
        };
        let response = self.await_response(started, Box::pin(guest), receiver).await;
        metrics::component_call(&self.descriptor.name, "http", started.elapsed(), response.is_ok());
        Ok(response?)
    }

    /// The guest usually finishes (body written) before anyone looks at the
    /// response: it runs right here. Should it hand over the response head and
    /// keep writing a body, it goes on as its own task while the body streams.
    async fn await_response(
        &self,
        started: Instant,
        mut guest: std::pin::Pin<Box<impl Future<Output = Result<(), String>> + Send + 'static>>,
        mut receiver: tokio::sync::oneshot::Receiver<
            Result<hyper::Response<HyperOutgoingBody>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>,
        >,
    ) -> Result<hyper::Response<HyperOutgoingBody>, CallError> {
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
                tokio::spawn(tracing::Instrument::in_current_span(guest));
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
        response.map_err(|code| CallError(format!("the connector answered with an error: {code:?}")))
    }
}

/// A request as the `webhooks` export takes it.
fn whole_request(parts: http::request::Parts, body: &[u8]) -> WebhookRequest {
    let headers = parts.headers.iter().map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()));
    WebhookRequest {
        method: parts.method.as_str().to_owned(),
        scheme: parts.uri.scheme_str().unwrap_or("http").to_owned(),
        // As `wasi:http` gives it: the URI's, else the Host header.
        authority: parts
            .uri
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .or_else(|| parts.headers.get(hyper::header::HOST).and_then(|host| host.to_str().ok()).map(str::to_owned)),
        path_with_query: parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers: headers.collect(),
        body: body.to_vec(),
    }
}

/// The export's answer as an HTTP response; a status or header HTTP cannot
/// carry fails the call, as a malformed `wasi:http` response does.
fn whole_response(answer: WebhookResponse) -> Result<hyper::Response<bytes::Bytes>, String> {
    let mut response = hyper::Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        response = response.header(name.as_str(), value.as_slice());
    }
    response.body(answer.body.into()).map_err(|e| format!("the connector answered what HTTP cannot carry: {e}"))
}

/// SHA-256 of a component file, hex: how versions are told apart.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
