//! The `Observe` extension: records which operation a request ran (name and type) for the HTTP
//! layer, the log span and the per-operation metrics, and refuses mutations on requests that
//! must not change state (GraphQL over HTTP GET).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerError, ServerResult, Variables};
use futures::stream::BoxStream;

use crate::ErrorCode;

/// What happened to one request, shared between the extension and the transport.
#[derive(Debug, Default)]
pub struct OperationInfo {
    /// Set by the transport for GET requests: a mutation is refused before it runs.
    pub forbid_mutations: bool,
    state: Mutex<OperationState>,
}

/// The outcome of a request as the transport needs it.
#[derive(Debug, Default, Clone)]
pub struct OperationState {
    /// The document did not parse.
    pub parse_failed: bool,
    /// Execution started (the document parsed and validated).
    pub executed: bool,
    /// A mutation was refused because `forbid_mutations` was set.
    pub mutation_refused: bool,
    /// Name of the operation that was selected, when it has one.
    pub name: Option<String>,
    /// Type of the selected operation.
    pub kind: Option<OperationType>,
    /// The parsed document (kept so the transport can order the response like it).
    pub document: Option<Arc<ExecutableDocument>>,
    /// Cost of the selected operation, when the limits measured it.
    pub cost: Option<u64>,
    /// Root fields of the selected operation (fragments expanded).
    pub root_fields: Vec<String>,
    /// Refused by a rate limit: retry after this many seconds.
    pub rate_limited: Option<u64>,
    operations: Vec<(Option<String>, OperationType)>,
}

impl OperationInfo {
    /// A fresh record; `forbid_mutations` for requests that must not change state.
    pub fn new(forbid_mutations: bool) -> Arc<Self> {
        Arc::new(Self {
            forbid_mutations,
            state: Mutex::default(),
        })
    }

    /// Records what the limits measured about the selected operation.
    pub fn record_cost(&self, cost: u64, root_fields: Vec<String>) {
        let mut state = self.lock();
        state.cost = Some(cost);
        state.root_fields = root_fields;
    }

    /// Records that a rate limit refused the request.
    pub fn mark_rate_limited(&self, retry_after_secs: u64) {
        self.lock().rate_limited = Some(retry_after_secs);
    }

    /// A snapshot of what happened so far.
    pub fn state(&self) -> OperationState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OperationState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Marks operations that arrive over a WebSocket, whose caller was authenticated once at
/// `connection_init`: mutations are refused there (they go over HTTP, authenticated per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct WebSocketTransport;

/// Extension factory; add once to the schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct Observe;

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ObserveExtension::default())
    }
}

/// One per request. The request hook cannot see request data, so the first hook that can
/// (parse) keeps the record here for it.
#[derive(Default)]
struct ObserveExtension {
    info: OnceLock<Arc<OperationInfo>>,
}

fn kind_label(kind: Option<OperationType>) -> &'static str {
    match kind {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    }
}

/// Bounds the `operation` label: client-chosen names are kept only while fewer than
/// `MAX_OPERATION_LABELS` distinct ones have been seen, so metrics cannot be flooded.
fn operation_label(name: Option<&str>) -> String {
    const MAX_OPERATION_LABELS: usize = 500;
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Some(name) = name else {
        return "anonymous".to_owned();
    };
    if name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return "invalid".to_owned();
    }
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(name) || seen.len() < MAX_OPERATION_LABELS {
        seen.insert(name.to_owned());
        name.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Records a query answered from the response cache like one that ran (`outcome` `ok`), so the
/// per-operation metrics and the log span count it the same way.
pub fn record_cached_operation(name: Option<&str>, started: Instant) {
    if let Some(name) = name {
        tracing::Span::current().record("graphql.operation", name);
    }
    let operation = operation_label(name);
    let kind = kind_label(Some(OperationType::Query));
    metrics::counter!("ruizhu_graphql_operations_total",
        "operation" => operation.clone(), "type" => kind, "outcome" => "ok")
    .increment(1);
    metrics::histogram!("ruizhu_graphql_operation_duration_seconds",
        "operation" => operation, "type" => kind)
    .record(started.elapsed().as_secs_f64());
}

impl ObserveExtension {
    /// The request's record: the transport's (HTTP), or one made here (WebSocket operations,
    /// which refuse mutations).
    fn record(&self, ctx: &ExtensionContext<'_>) -> &Arc<OperationInfo> {
        self.info
            .get_or_init(|| match ctx.data_opt::<Arc<OperationInfo>>() {
                Some(info) => info.clone(),
                None => OperationInfo::new(ctx.data_opt::<WebSocketTransport>().is_some()),
            })
    }
}

#[async_trait::async_trait]
impl Extension for ObserveExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let state = self.info.get().map(|i| i.state()).unwrap_or_default();
        let outcome = if !state.executed {
            "invalid"
        } else if response.errors.is_empty() {
            "ok"
        } else {
            "error"
        };
        let operation = operation_label(state.name.as_deref());
        let kind = kind_label(state.kind);
        metrics::counter!("ruizhu_graphql_operations_total",
            "operation" => operation.clone(), "type" => kind, "outcome" => outcome)
        .increment(1);
        metrics::histogram!("ruizhu_graphql_operation_duration_seconds",
            "operation" => operation, "type" => kind)
        .record(started.elapsed().as_secs_f64());
        for error in &response.errors {
            let code = error
                .extensions
                .as_ref()
                .and_then(|e| e.get("code"))
                .and_then(|v| match v {
                    async_graphql::Value::String(s) => Some(s.clone()),
                    async_graphql::Value::Enum(n) => Some(n.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| {
                    if state.executed {
                        "UNCODED"
                    } else {
                        "INVALID_REQUEST"
                    }
                    .into()
                });
            metrics::counter!("ruizhu_graphql_errors_total", "code" => code).increment(1);
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let parsed = next.run(ctx, query, variables).await;
        {
            let info = self.record(ctx);
            let mut state = info.lock();
            match &parsed {
                Err(_) => state.parse_failed = true,
                Ok(doc) => {
                    state.document = Some(Arc::new(doc.clone()));
                    state.operations = match &doc.operations {
                        DocumentOperations::Single(op) => vec![(None, op.node.ty)],
                        DocumentOperations::Multiple(ops) => ops
                            .iter()
                            .map(|(name, op)| (Some(name.to_string()), op.node.ty))
                            .collect(),
                    };
                }
            }
        }
        parsed
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        {
            let info = self.record(ctx);
            let refuse = {
                let mut state = info.lock();
                let selected = match (operation_name, state.operations.as_slice()) {
                    (_, [only]) => Some(only.clone()),
                    (Some(wanted), ops) => ops
                        .iter()
                        .find(|(n, _)| n.as_deref() == Some(wanted))
                        .cloned(),
                    _ => None,
                };
                let kind = selected.as_ref().map(|(_, k)| *k);
                state.kind = kind;
                state.name = selected
                    .and_then(|(n, _)| n)
                    .or(operation_name.map(str::to_owned));
                let refuse = info.forbid_mutations && kind == Some(OperationType::Mutation);
                state.mutation_refused = refuse;
                state.executed = !refuse;
                refuse
            };
            if let Some(name) = info.state().name {
                tracing::Span::current().record("graphql.operation", name.as_str());
            }
            if refuse {
                let mut error =
                    ServerError::new("mutations are only accepted over HTTP POST", None);
                let mut ext = async_graphql::ErrorExtensionValues::default();
                ext.set("code", ErrorCode::BadUserInput.as_str());
                error.extensions = Some(ext);
                return Response::from_errors(vec![error]);
            }
        }
        // DataLoader batches go out at the end of each poll of the execution (crate::batch)
        crate::batch::flush_scope(next.run(ctx, operation_name)).await
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // as for `execute`: each event's batches go out when the poll that resolved it ends
        Box::pin(crate::batch::flush_scope_stream(next.run(ctx, stream)))
    }
}
