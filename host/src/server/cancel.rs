//! `POST /v1/messages/{provider-message-id}/cancel`: cancels a scheduled
//! message through the connector that sent it (its optional
//! `message-control` export).

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{AppState, Body, json, text};
use crate::runtime::CallFailure;
use crate::runtime::bindings::SendError;

/// The path's message id, when the path is a cancel route.
pub fn target(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/v1/messages/")?.strip_suffix("/cancel")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// What a cancel answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canceled {
    /// The provider's id of the message.
    pub provider_message_id: String,
    /// Its status now (`canceled`).
    pub status: String,
}

/// Asks the connector to cancel message `id` (sent by the account named by
/// `?account_sid=`, the default one when absent): 200 when canceled, 404 when
/// the provider does not know it, 409 when it can no longer be canceled.
pub async fn cancel(state: &AppState, request: &Request<Incoming>, id: &str) -> Response<Body> {
    let slot = match super::admin::pick(state, request) {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let account = super::query_param(request, "account_sid");
    match slot.current().cancel(account.as_deref(), id).await {
        Ok(accepted) => json(
            StatusCode::OK,
            &Canceled { provider_message_id: accepted.provider_message_id, status: accepted.status },
        ),
        Err(CallFailure::Refused(SendError::Reject(error))) => {
            let status = match error.http_status {
                Some(404) => StatusCode::NOT_FOUND,
                None => StatusCode::BAD_REQUEST,
                Some(_) => StatusCode::CONFLICT,
            };
            text(status, &format!("not canceled: {}", error.message))
        }
        Err(CallFailure::Refused(SendError::Retry(hint))) => {
            text(StatusCode::SERVICE_UNAVAILABLE, &format!("not canceled, try again: {}", hint.reason.message))
        }
        Err(CallFailure::Refused(SendError::Ambiguous(error) | SendError::OptedOut(error))) => {
            text(StatusCode::BAD_GATEWAY, &format!("outcome unknown: {}", error.message))
        }
        Err(e @ CallFailure::NotExported(_)) => text(StatusCode::NOT_IMPLEMENTED, &e.to_string()),
        Err(CallFailure::Broken(e)) => {
            tracing::error!(error = %e, "cancel failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
