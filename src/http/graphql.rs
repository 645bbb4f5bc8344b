//! `POST /graphql` and `GET /graphql` following GraphQL over HTTP: the response media type is
//! negotiated from `Accept` (`application/graphql-response+json` or `application/json`), request
//! errors are 400 under the former and 200 under the latter, JSON that does not parse is 400,
//! unsupported request media types are 415, mutations over GET are 405, requests refused by a
//! rate limit are 429 with `Retry-After`. The request reading and response shaping here are
//! shared with `/partner/graphql`.

use std::sync::Arc;

use async_graphql::{ServerError, Variables};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use resolvers::OperationInfo;
use resolvers::auth::{ClientInfo, Viewer};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::app::App;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The two response media types of GraphQL over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    pub(super) fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }

    /// Status of a response that carries only request errors (nothing executed).
    pub(super) fn request_error_status(self) -> StatusCode {
        match self {
            MediaType::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            MediaType::Json => StatusCode::OK,
        }
    }
}

/// Picks the response media type from `Accept`; `None` when the client accepts neither.
///
/// A missing or empty header and a bare wildcard mean `application/json` (what clients that
/// predate the spec expect); a type the client names outranks a wildcard at equal weight, and
/// between the two named types the spec's own `application/graphql-response+json` wins a tie.
pub(super) fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Some(MediaType::Json);
    };
    let Ok(accept) = accept.to_str() else {
        return Some(MediaType::Json);
    };
    if accept.trim().is_empty() {
        return Some(MediaType::Json);
    }
    // (weight, explicitly named) for each of the two types
    let mut gql: Option<(f32, bool)> = None;
    let mut json: Option<(f32, bool)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut q = 1.0_f32;
        let mut charset_ok = true;
        for param in parts {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0)
                }
                "charset" => charset_ok = v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8"),
                _ => {}
            }
        }
        if !charset_ok {
            continue;
        }
        let offer = |slot: &mut Option<(f32, bool)>, explicit: bool| {
            let better = match *slot {
                None => true,
                Some((w, e)) => (q, explicit) > (w, e) && (explicit || !e),
            };
            if better {
                *slot = Some((q, explicit));
            }
        };
        match media.as_str() {
            GRAPHQL_RESPONSE_JSON => offer(&mut gql, true),
            JSON => offer(&mut json, true),
            "*/*" | "application/*" => {
                offer(&mut gql, false);
                offer(&mut json, false);
            }
            _ => {}
        }
    }
    let gql = gql.filter(|(q, _)| *q > 0.0);
    let json = json.filter(|(q, _)| *q > 0.0);
    match (gql, json) {
        (None, None) => None,
        (Some(_), None) => Some(MediaType::GraphqlResponseJson),
        (None, Some(_)) => Some(MediaType::Json),
        (Some((gq, ge)), Some((jq, je))) => {
            if gq > jq || (gq == jq && ge) {
                if ge || je {
                    Some(MediaType::GraphqlResponseJson)
                } else {
                    Some(MediaType::Json)
                }
            } else {
                Some(MediaType::Json)
            }
        }
    }
}

/// The body of a GraphQL response: `data` is absent when the request never executed.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

fn respond(status: StatusCode, media: MediaType, body: &Body<'_>) -> Response {
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|_| br#"{"errors":[{"message":"internal error"}]}"#.to_vec());
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

/// A response carrying one error and no data (counted by code: nothing ran).
pub(super) fn error_response(
    status: StatusCode,
    media: MediaType,
    code: &str,
    message: &str,
) -> Response {
    count_rejection(code);
    let mut error = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code);
    error.extensions = Some(ext);
    respond(
        status,
        media,
        &Body {
            data: None,
            errors: &[error],
            extensions: &Default::default(),
        },
    )
}

/// Requests refused before anything executed, by code (`ruizhu_graphql_rejections_total`).
pub(super) fn count_rejection(code: &str) {
    // codes are ours (a closed set), never client text
    metrics::counter!("ruizhu_graphql_rejections_total", "code" => code.to_owned()).increment(1);
}

/// A GraphQL request as received, before it is checked.
pub(super) struct Params {
    pub(super) query: Option<Value>,
    pub(super) operation_name: Option<Value>,
    pub(super) variables: Option<Value>,
    pub(super) extensions: Option<Value>,
    /// GraphQL-over-HTTP persisted documents (`sha256:<hex>`), on `/partner/graphql`.
    pub(super) document_id: Option<Value>,
}

impl Params {
    fn from_map(mut map: Map<String, Value>) -> Self {
        Params {
            query: map.remove("query"),
            operation_name: map.remove("operationName"),
            variables: map.remove("variables"),
            extensions: map.remove("extensions"),
            document_id: map.remove("documentId"),
        }
    }
}

/// Checks the request parameters; `Err` carries the message of a request error.
fn check_params(params: &Params) -> Result<(), String> {
    match &params.query {
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => return Err("the request has no `query` string".into()),
        Some(_) => return Err("`query` must be a string".into()),
    }
    if !matches!(
        &params.operation_name,
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err("`operationName` must be a string or null".into());
    }
    if !matches!(
        &params.variables,
        None | Some(Value::Null | Value::Object(_))
    ) {
        return Err("`variables` must be an object or null".into());
    }
    if !matches!(
        &params.extensions,
        None | Some(Value::Null | Value::Object(_))
    ) {
        return Err("`extensions` must be an object or null".into());
    }
    Ok(())
}

/// Builds the GraphQL request from checked parameters; `Err` carries the message of a request
/// error.
pub(super) fn to_request(
    params: Params,
    info: &Arc<OperationInfo>,
) -> Result<async_graphql::Request, String> {
    check_params(&params)?;
    let Some(Value::String(query)) = params.query else {
        return Err("the request has no `query` string".into());
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(Value::String(name)) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(v @ Value::Object(_)) = params.variables {
        request = request.variables(Variables::from_json(v));
    }
    if let Some(Value::Object(map)) = params.extensions {
        for (k, v) in map {
            request
                .extensions
                .insert(k, async_graphql::Value::from_json(v).unwrap_or_default());
        }
    }
    Ok(request.data(info.clone()))
}

/// Who the request is from. A present but invalid, expired or revoked token fails the whole
/// request with 401 `UNAUTHENTICATED`: it is never treated as anonymous.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    media: MediaType,
) -> Result<Viewer, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Viewer::Anonymous);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty());
    let unauthenticated = |message: &str| {
        let mut r = error_response(StatusCode::UNAUTHORIZED, media, "UNAUTHENTICATED", message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
        r
    };
    let Some(token) = token else {
        return Err(unauthenticated(
            "the Authorization header must be `Bearer <access token>`",
        ));
    };
    match app.identity.authenticate(token).await {
        Ok(subject) => Ok(Viewer::Authenticated(subject)),
        Err(domain::identity::AuthError::Domain(e)) => {
            tracing::warn!(error = %e, "could not check a session");
            Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                media,
                "SERVICE_UNAVAILABLE",
                "could not verify the session; retry shortly",
            ))
        }
        Err(_) => Err(unauthenticated(
            "the access token is invalid, expired or revoked; refresh or sign in again",
        )),
    }
}

async fn execute(
    app: &App,
    media: MediaType,
    params: Params,
    is_get: bool,
    headers: &HeaderMap,
    client: ClientInfo,
) -> Response {
    let mut params = params;
    if let Err(response) = persisted_query(app, media, &mut params).await {
        return response;
    }
    let cache_parts = super::response_cache::request_parts(app, &params);
    // parameters the cache accepts are well-formed (`to_request` would take them), so a hit is
    // answered before the request is built without changing which error a bad request gets
    if cache_parts.is_none()
        && let Err(message) = check_params(&params)
    {
        return error_response(media.request_error_status(), media, "BAD_REQUEST", &message);
    }
    let viewer = match authenticate(app, headers, media).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let cached = super::response_cache::candidate(app, cache_parts, &viewer).await;
    if let Some(candidate) = &cached
        && let Some(response) = super::response_cache::lookup(app, candidate, media).await
    {
        return response;
    }
    let info = OperationInfo::new(is_get);
    let request = match to_request(params, &info) {
        Ok(r) => r,
        Err(message) => {
            return error_response(media.request_error_status(), media, "BAD_REQUEST", &message);
        }
    };
    // staff (the ops console, GraphiQL) may always introspect and get suggestions
    let staff = matches!(&viewer, Viewer::Authenticated(s)
        if matches!(s.principal, domain::identity::Principal::Staff { .. }));
    let schema = if staff {
        &app.staff_schema
    } else {
        &app.schema
    };
    let request = request.data(viewer).data(client);
    let response = schema.execute(request).await;
    match cached {
        Some(candidate) if super::response_cache::storable(&info, &response) => {
            let operation = info.state().name;
            let response = finish(media, &info, response);
            super::response_cache::store(app, candidate, operation, response).await
        }
        _ => finish(media, &info, response),
    }
}

/// Shapes an executed (or refused) request into its HTTP response: 405 for a mutation over
/// GET, 429 for a rate limit, request errors when nothing ran, else 200 with the data in the
/// document's field order.
pub(super) fn finish(
    media: MediaType,
    info: &OperationInfo,
    response: async_graphql::Response,
) -> Response {
    let mut response = response;
    let state = info.state();
    if state.mutation_refused {
        count_rejection("METHOD_NOT_ALLOWED");
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            &Body {
                data: None,
                errors: &response.errors,
                extensions: &response.extensions,
            },
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if let Some(retry_after) = state.rate_limited {
        count_rejection("RATE_LIMITED");
        let mut r = respond(
            StatusCode::TOO_MANY_REQUESTS,
            media,
            &Body {
                data: None,
                errors: &response.errors,
                extensions: &response.extensions,
            },
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return r;
    }
    if !state.executed {
        let code = if state.parse_failed {
            "GRAPHQL_PARSE_FAILED"
        } else {
            "GRAPHQL_VALIDATION_FAILED"
        };
        for error in &mut response.errors {
            let ext = error.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                ext.set("code", code);
            }
        }
        let first = response
            .errors
            .first()
            .and_then(|e| e.extensions.as_ref())
            .and_then(|e| match e.get("code") {
                Some(async_graphql::Value::String(c)) => Some(c.clone()),
                _ => None,
            });
        count_rejection(first.as_deref().unwrap_or(code));
        return respond(
            media.request_error_status(),
            media,
            &Body {
                data: None,
                errors: &response.errors,
                extensions: &response.extensions,
            },
        );
    }
    if let Some(doc) = &state.document {
        resolvers::order_fields::order_like_document(
            &mut response.data,
            doc,
            state.name.as_deref(),
        );
    }
    respond(
        StatusCode::OK,
        media,
        &Body {
            data: Some(&response.data),
            errors: &response.errors,
            extensions: &response.extensions,
        },
    )
}

/// Apollo automatic persisted queries: `extensions.persistedQuery { version: 1, sha256Hash }`.
/// With the hash alone, the registered text is used, or the answer is `PersistedQueryNotFound`
/// (`extensions.code` `PERSISTED_QUERY_NOT_FOUND`, HTTP 200, so the client sends the text);
/// with hash and text, the text is checked against the hash and registered for every replica.
async fn persisted_query(app: &App, media: MediaType, params: &mut Params) -> Result<(), Response> {
    let Some(persisted) = params
        .extensions
        .as_ref()
        .and_then(|e| e.get("persistedQuery"))
        .filter(|p| !p.is_null())
    else {
        return Ok(());
    };
    let bad = |code: &str, message: &str| {
        error_response(media.request_error_status(), media, code, message)
    };
    if persisted.get("version").and_then(Value::as_i64) != Some(1) {
        return Err(bad(
            "PERSISTED_QUERY_NOT_SUPPORTED",
            "only persistedQuery version 1 is supported",
        ));
    }
    let Some(hash) = persisted
        .get("sha256Hash")
        .and_then(Value::as_str)
        .filter(|h| domain::apq::is_sha256_hex(h))
    else {
        return Err(bad(
            "BAD_REQUEST",
            "persistedQuery.sha256Hash must be a lowercase hex SHA-256",
        ));
    };
    match &params.query {
        None | Some(Value::Null) => match app.apq.get(hash).await {
            Some(text) => {
                params.query = Some(Value::String(text.to_string()));
                Ok(())
            }
            None => Err(error_response(
                StatusCode::OK,
                media,
                "PERSISTED_QUERY_NOT_FOUND",
                "PersistedQueryNotFound",
            )),
        },
        Some(Value::String(text)) => {
            if domain::apq::sha256_hex(text) != hash {
                return Err(bad(
                    "PERSISTED_QUERY_HASH_MISMATCH",
                    "provided sha does not match query",
                ));
            }
            app.apq.put(hash, text).await;
            Ok(())
        }
        Some(_) => Ok(()), // `to_request` reports the malformed query
    }
}

pub(super) fn not_acceptable() -> Response {
    error_response(
        StatusCode::NOT_ACCEPTABLE,
        MediaType::Json,
        "NOT_ACCEPTABLE",
        "accept application/graphql-response+json or application/json",
    )
}

/// Reads a POST body. Only JSON: form, multipart and text/plain are refused (415), which also
/// keeps cross-site form posts (CSRF, which browsers send without a preflight) from ever
/// reaching a resolver. A batch (a JSON array) is refused before it is parsed.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
pub(super) fn read_post(
    media: MediaType,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Params, Response> {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "PAYLOAD_TOO_LARGE"
            } else {
                "BAD_REQUEST"
            };
            return Err(error_response(status, media, code, &rejection.body_text()));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(content_type) = content_type else {
        return Err(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the request with Content-Type: application/json",
        ));
    };
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    if essence != JSON || !charset_ok {
        return Err(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            "UNSUPPORTED_MEDIA_TYPE",
            "only application/json (UTF-8) request bodies are accepted",
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            media,
            "BATCH_NOT_SUPPORTED",
            "batched requests are not supported; send one operation per request",
        ));
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                media,
                "BAD_REQUEST",
                &format!("the body is not valid JSON: {e}"),
            ));
        }
    };
    let Value::Object(map) = parsed else {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            media,
            "BAD_REQUEST",
            "the body must be a JSON object",
        ));
    };
    Ok(Params::from_map(map))
}

/// Reads the parameters of a GET request (`variables` and `extensions` as URL-encoded JSON).
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
pub(super) fn read_get(media: MediaType, raw: Option<String>) -> Result<Params, Response> {
    let mut map: Map<String, Value> = Map::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        map.insert(key.into_owned(), Value::String(value.into_owned()));
    }
    for name in ["variables", "extensions"] {
        if let Some(Value::String(text)) = map.get(name) {
            match serde_json::from_str(text) {
                Ok(value) => {
                    map.insert(name.to_owned(), value);
                }
                Err(_) => {
                    let message = format!("`{name}` must be URL-encoded JSON");
                    return Err(error_response(
                        media.request_error_status(),
                        media,
                        "BAD_REQUEST",
                        &message,
                    ));
                }
            }
        }
    }
    Ok(Params::from_map(map))
}

/// `POST /graphql` with an `application/json` body.
pub async fn post_handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let params = match read_post(media, &headers, body) {
        Ok(p) => p,
        Err(response) => return response,
    };
    execute(
        &app,
        media,
        params,
        false,
        &headers,
        ClientInfo {
            ip: Some(super::client_ip::client_ip(
                app.settings.http.trusted_proxy_hops,
                peer.ip(),
                &headers,
            )),
        },
    )
    .await
}

/// `GET /graphql?query=…&variables=…` (queries only).
pub async fn get_handler(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let params = match read_get(media, raw) {
        Ok(p) => p,
        Err(response) => return response,
    };
    execute(
        &app,
        media,
        params,
        true,
        &headers,
        ClientInfo {
            ip: Some(super::client_ip::client_ip(
                app.settings.http.trusted_proxy_hops,
                peer.ip(),
                &headers,
            )),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<MediaType> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn negotiation_table() {
        use MediaType::{GraphqlResponseJson as G, Json as J};
        assert_eq!(negotiate(&HeaderMap::new()), Some(J));
        assert_eq!(accept(""), Some(J));
        assert_eq!(accept("*/*"), Some(J));
        assert_eq!(accept("application/*"), Some(J));
        assert_eq!(accept("application/json"), Some(J));
        assert_eq!(accept("application/graphql-response+json"), Some(G));
        assert_eq!(accept("*/*, application/graphql-response+json"), Some(G));
        assert_eq!(accept("application/graphql-response+json, */*"), Some(G));
        assert_eq!(
            accept("application/json, application/graphql-response+json"),
            Some(G)
        );
        assert_eq!(
            accept("application/graphql-response+json;q=0.5, application/json"),
            Some(J)
        );
        assert_eq!(
            accept("application/json;q=0, application/graphql-response+json"),
            Some(G)
        );
        assert_eq!(accept("application/json; charset=utf-8"), Some(J));
        assert_eq!(accept("application/json; charset=iso-8859-1"), None);
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("text/html, */*;q=0.1"), Some(J));
    }
}
