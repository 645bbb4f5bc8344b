//! `POST /partner/graphql` and `GET /partner/graphql`: partners authenticate with
//! `X-Partner-Key` and run only operations registered for them (their persisted-query
//! manifest), addressed by `extensions.persistedQuery.sha256Hash` (Apollo) or
//! `documentId: "sha256:<hex>"` (GraphQL over HTTP). No free-form documents, no introspection,
//! no field suggestions; the same media types, status codes and CSRF rules as `/graphql`, and
//! every call is charged its cost against the partner's token bucket.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use domain::partner::Partner;
use resolvers::OperationInfo;
use resolvers::auth::{ClientInfo, Viewer};
use resolvers::partner::PartnerCaller;
use secrecy::SecretString;
use serde_json::Value;

use super::graphql::{
    MediaType, Params, error_response, finish, negotiate, not_acceptable, read_get, read_post,
    to_request,
};
use crate::app::App;

const PARTNER_KEY: &str = "x-partner-key";

/// The partner holding the request's key; 401 without a valid, active key.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    media: MediaType,
) -> Result<Arc<Partner>, Response> {
    let unauthenticated = |message: &str| {
        let mut r = error_response(StatusCode::UNAUTHORIZED, media, "UNAUTHENTICATED", message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"ApiKey header="X-Partner-Key""#),
        );
        r
    };
    let Some(key) = headers
        .get(PARTNER_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(unauthenticated("send your partner key in X-Partner-Key"));
    };
    match app
        .partners
        .authenticate(&SecretString::from(key.to_owned()))
        .await
    {
        Ok(Some(partner)) => Ok(partner),
        Ok(None) => Err(unauthenticated("the partner key is invalid or revoked")),
        Err(e) => {
            tracing::warn!(error = %e, "could not check a partner key");
            Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                media,
                "SERVICE_UNAVAILABLE",
                "could not verify the partner key; retry shortly",
            ))
        }
    }
}

/// The operation id the request names: `documentId` (`sha256:<hex>`) or the Apollo
/// `persistedQuery` extension. A document in `query` is refused, with or without an id.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn operation_id(params: &mut Params, media: MediaType) -> Result<String, Response> {
    let bad = |code: &str, message: &str| {
        error_response(media.request_error_status(), media, code, message)
    };
    if !matches!(params.query, None | Some(Value::Null)) {
        return Err(bad(
            "PERSISTED_QUERY_ID_REQUIRED",
            "this endpoint runs registered operations only: send `documentId` or `extensions.persistedQuery.sha256Hash` instead of `query`",
        ));
    }
    let from_document = match params.document_id.take() {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => match id.strip_prefix("sha256:") {
            Some(hex) if domain::apq::is_sha256_hex(hex) => Some(hex.to_owned()),
            _ => {
                return Err(bad(
                    "BAD_REQUEST",
                    "`documentId` must be `sha256:` and a lowercase hex SHA-256",
                ));
            }
        },
        Some(_) => return Err(bad("BAD_REQUEST", "`documentId` must be a string")),
    };
    let persisted = match &mut params.extensions {
        Some(Value::Object(map)) => map.remove("persistedQuery"),
        _ => None,
    };
    let from_extension = match persisted {
        None | Some(Value::Null) => None,
        Some(p) => {
            if p.get("version").and_then(Value::as_i64) != Some(1) {
                return Err(bad(
                    "PERSISTED_QUERY_NOT_SUPPORTED",
                    "only persistedQuery version 1 is supported",
                ));
            }
            match p.get("sha256Hash").and_then(Value::as_str) {
                Some(h) if domain::apq::is_sha256_hex(h) => Some(h.to_owned()),
                _ => {
                    return Err(bad(
                        "BAD_REQUEST",
                        "persistedQuery.sha256Hash must be a lowercase hex SHA-256",
                    ));
                }
            }
        }
    };
    match (from_document, from_extension) {
        (Some(a), Some(b)) if a != b => Err(bad(
            "BAD_REQUEST",
            "`documentId` and `persistedQuery.sha256Hash` name different operations",
        )),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Err(bad(
            "PERSISTED_QUERY_ID_REQUIRED",
            "send `documentId` or `extensions.persistedQuery.sha256Hash` of a registered operation",
        )),
    }
}

async fn execute(
    app: &App,
    media: MediaType,
    partner: &Partner,
    params: Params,
    is_get: bool,
    client: ClientInfo,
) -> Response {
    let mut params = params;
    let id = match operation_id(&mut params, media) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let operation = match app.partners.operation(partner.id, &id).await {
        Ok(Some(op)) => op,
        // unknown, or registered for another partner: the same answer
        Ok(None) => {
            return error_response(
                media.request_error_status(),
                media,
                "PERSISTED_QUERY_NOT_IN_LIST",
                "this operation is not in your registered manifest",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not load a partner operation");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                media,
                "SERVICE_UNAVAILABLE",
                "could not load the operation; retry shortly",
            );
        }
    };
    params.query = Some(Value::String(operation.body.to_string()));
    let info = OperationInfo::new(is_get);
    let request = match to_request(params, &info) {
        Ok(r) => r,
        Err(message) => {
            return error_response(media.request_error_status(), media, "BAD_REQUEST", &message);
        }
    };
    let caller = PartnerCaller {
        id: partner.id,
        name: partner.name.clone(),
        bucket: app
            .settings
            .rate_limits
            .partner(partner.cost_per_minute, partner.burst),
    };
    let request = request
        .data(Viewer::Anonymous)
        .data(client)
        .data(caller)
        .disable_introspection();
    let response = app.partner_schema.execute(request).await;
    let mut response = finish(media, &info, response);
    // GET answers are cacheable, but only for the partner that asked
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("X-Partner-Key"));
    metrics::counter!("ruizhu_partner_requests_total",
        "partner" => partner.name.clone(), "status" => response.status().as_u16().to_string())
    .increment(1);
    response
}

/// `POST /partner/graphql` with an `application/json` body.
pub async fn post_handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let partner = match authenticate(&app, &headers, media).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let params = match read_post(media, &headers, body) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let client = ClientInfo {
        ip: Some(peer.ip()),
    };
    execute(&app, media, &partner, params, false, client).await
}

/// `GET /partner/graphql?documentId=sha256:…&variables=…` (queries only).
pub async fn get_handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let partner = match authenticate(&app, &headers, media).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let params = match read_get(media, raw) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let client = ClientInfo {
        ip: Some(peer.ip()),
    };
    execute(&app, media, &partner, params, true, client).await
}
