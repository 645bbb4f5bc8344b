//! `/graphql`'s response cache: hot catalog queries answered with the bytes of an earlier
//! identical answer. The key is the document's SHA-256 (the APQ hash when the request has one:
//! the same thing), the operation name, the variables and the caller's scope (anonymous, or the
//! member's tier rank; staff are never cached). Only successful answers (no `errors`) to queries
//! whose root fields are all catalog reads are stored, under the catalog generation read before
//! they ran: any catalog invalidation after that makes them stale (see
//! `domain::response_cache`). What a hit skips is parsing, validation, the limits and execution;
//! every one of them passed for the same document and variables when the entry was stored. The
//! answer carries `x-ruizhu-cache: hit` (or `miss` when it was just stored).

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::response_cache::{ResponseCache, ResponseKey, response_key};
use resolvers::OperationInfo;
use resolvers::auth::Viewer;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::graphql::{MediaType, Params};
use crate::app::App;

const CACHE_HEADER: HeaderName = HeaderName::from_static("x-ruizhu-cache");

/// What the cache keeps of an answer.
#[derive(Clone)]
pub struct CachedAnswer {
    body: Bytes,
    operation: Option<String>,
}

/// The response cache of `/graphql`.
pub type Responses = ResponseCache<CachedAnswer>;

/// Builds the cache from the `[cache]` settings.
pub fn responses(settings: &domain::cache::CacheSettings) -> Responses {
    ResponseCache::new(settings, |a| {
        u32::try_from(a.body.len()).unwrap_or(u32::MAX)
    })
}

/// The request-derived half of a key, taken before the request is consumed.
pub(super) struct RequestParts {
    document: [u8; 32],
    operation: Option<String>,
    variables: String,
}

/// The parts of a request that decide its answer, when the request may use the cache: a query
/// text (after APQ resolution) and no extensions besides `persistedQuery`.
pub(super) fn request_parts(app: &App, params: &Params) -> Option<RequestParts> {
    if !app.responses.enabled() {
        return None;
    }
    let Some(Value::String(text)) = &params.query else {
        return None;
    };
    match &params.extensions {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.keys().all(|k| k == "persistedQuery") => {}
        Some(_) => return None,
    }
    let operation = match &params.operation_name {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return None,
    };
    let variables = match &params.variables {
        None | Some(Value::Null) => String::new(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return None,
    };
    // the document's SHA-256: an APQ request's hash is it (checked against the text when the
    // text was registered), so it is not computed again
    let apq_hash = params
        .extensions
        .as_ref()
        .and_then(|e| e.get("persistedQuery"))
        .and_then(|p| p.get("sha256Hash"))
        .and_then(Value::as_str);
    let mut document = [0u8; 32];
    if apq_hash.is_none_or(|h| hex::decode_to_slice(h, &mut document).is_err()) {
        document = Sha256::digest(text.as_bytes()).into();
    }
    Some(RequestParts {
        document,
        operation,
        variables,
    })
}

/// A request that may be answered from, or stored in, the cache.
pub(super) struct Candidate {
    key: ResponseKey,
    generation: u64,
    started: Instant,
}

/// The full key once the caller is known; `None` for callers whose answers are not cached.
pub(super) async fn candidate(
    app: &App,
    parts: Option<RequestParts>,
    viewer: &Viewer,
) -> Option<Candidate> {
    let started = Instant::now();
    let parts = parts?;
    // read before the lookup and before execution: a change from here on makes the entry stale
    let generation = app.catalog.generation();
    let scope = resolvers::catalog::response_scope(viewer, &app.identity).await?;
    let key = response_key(&[
        &parts.document,
        parts.operation.as_deref().unwrap_or_default().as_bytes(),
        parts.variables.as_bytes(),
        scope.as_bytes(),
    ]);
    Some(Candidate {
        key,
        generation,
        started,
    })
}

/// The cached answer, when there is a current one.
pub(super) async fn lookup(app: &App, candidate: &Candidate, media: MediaType) -> Option<Response> {
    let answer = app
        .responses
        .get(&candidate.key, candidate.generation)
        .await?;
    resolvers::observe::record_cached_operation(answer.operation.as_deref(), candidate.started);
    let mut response = (StatusCode::OK, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, media.content_type());
    headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
    Some(response)
}

/// Whether an executed request's answer may be stored: a query that ran without errors and
/// whose root fields are all catalog reads.
pub(super) fn storable(info: &OperationInfo, response: &async_graphql::Response) -> bool {
    let state = info.state();
    state.executed
        && !state.mutation_refused
        && state.rate_limited.is_none()
        && state.kind == Some(async_graphql::parser::types::OperationType::Query)
        && response.errors.is_empty()
        && resolvers::catalog::cacheable_root_fields(&state.root_fields)
}

/// Stores a finished 200 answer and hands it on.
pub(super) async fn store(
    app: &App,
    candidate: Candidate,
    operation: Option<String>,
    response: Response,
) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // the body is the serialized answer, already whole in memory
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    app.responses
        .put(
            candidate.key,
            candidate.generation,
            CachedAnswer {
                body: bytes.clone(),
                operation,
            },
        )
        .await;
    parts
        .headers
        .insert(CACHE_HEADER, HeaderValue::from_static("miss"));
    Response::from_parts(parts, Body::from(bytes))
}
