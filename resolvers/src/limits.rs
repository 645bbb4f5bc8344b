//! Operation limits and rate limits, enforced by the `Limits` extension before any resolver
//! runs, on every transport (HTTP, partner endpoint, WebSocket).
//!
//! Order of the checks, cheapest first, so hostile documents cost little:
//! 1. a token count and bracket-nesting scan of the raw text (no allocation) — a 5,000-fragment
//!    chain or a 100-deep nesting never reaches the parser, whose recursion is unbounded;
//! 2. parsing (cached by text, so a persisted or repeated document skips it);
//! 3. one pass over the document: aliases and directives as written, then per operation the
//!    depth, root fields and cost with every fragment expanded once (memoised, so a fragment
//!    "bomb" that doubles at each level is costed, not walked);
//! 4. async-graphql's own validation;
//! 5. rate limits, just before execution.
//!
//! Cost: every field costs 1 plus its children times a multiplier: the `first`/`last` argument
//! of a paginated field (the connection's own lists then count once), or `list_size` for other
//! list fields.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest,
};
use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, TypeKind,
    TypeSystemDefinition, VariableDefinition,
};
use async_graphql::parser::{Positioned, parse_query, parse_schema};
use async_graphql::{
    ErrorExtensionValues, Name, Request, Response, ServerError, ServerResult, Value, Variables,
};
use async_graphql_value::Value as InputValue;
use domain::ratelimit::{Bucket, Decision, RateLimitSettings, RateLimiter};

use crate::auth::{ClientInfo, Viewer};
use crate::observe::OperationInfo;
use crate::partner::PartnerCaller;
use crate::{ErrorCode, pagination};

/// Bounds on one GraphQL document (`[graphql]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationLimits {
    /// Deepest field nesting (`{ a { b } }` is 2). Fragments and inline fragments may add
    /// as many levels again of selection-set nesting.
    pub max_depth: usize,
    /// Largest cost (see the module docs).
    pub max_complexity: u64,
    /// Most aliases in a document.
    pub max_aliases: usize,
    /// Most root fields in an operation (fragments expanded).
    pub max_root_fields: usize,
    /// Most directives on one field, fragment or operation.
    pub max_directives_per_field: usize,
    /// Most directives in a document.
    pub max_directives: usize,
    /// Most lexical tokens in a document.
    pub max_tokens: usize,
    /// Multiplier of a list field without `first`/`last`.
    pub list_size: u64,
}

impl Default for OperationLimits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_complexity: 10_000,
            max_aliases: 30,
            max_root_fields: 20,
            max_directives_per_field: 4,
            max_directives: 50,
            max_tokens: 5_000,
            list_size: 10,
        }
    }
}

impl OperationLimits {
    /// Selection sets (fields, fragments, inline fragments) may nest this deep.
    pub fn max_nesting(&self) -> usize {
        self.max_depth * 2
    }

    /// Brackets (`{`, `[`, `(`) may nest this deep in the raw text: the selection sets plus
    /// room for arguments and nested input objects.
    fn max_brackets(&self) -> usize {
        self.max_nesting() + 8
    }
}

/// Stable `extensions.code`s of documents refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitCode {
    /// More tokens than `max_tokens`.
    TokenLimitExceeded,
    /// Nested deeper than `max_depth`.
    DepthLimitExceeded,
    /// Costs more than `max_complexity`.
    ComplexityLimitExceeded,
    /// More aliases than `max_aliases`.
    AliasLimitExceeded,
    /// More root fields than `max_root_fields`.
    RootFieldLimitExceeded,
    /// More directives than allowed on one field or in the document.
    DirectiveLimitExceeded,
    /// `__schema` or `__type` where introspection is off.
    IntrospectionDisabled,
}

impl LimitCode {
    /// The `extensions.code` string.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitCode::TokenLimitExceeded => "TOKEN_LIMIT_EXCEEDED",
            LimitCode::DepthLimitExceeded => "DEPTH_LIMIT_EXCEEDED",
            LimitCode::ComplexityLimitExceeded => "COMPLEXITY_LIMIT_EXCEEDED",
            LimitCode::AliasLimitExceeded => "ALIAS_LIMIT_EXCEEDED",
            LimitCode::RootFieldLimitExceeded => "ROOT_FIELD_LIMIT_EXCEEDED",
            LimitCode::DirectiveLimitExceeded => "DIRECTIVE_LIMIT_EXCEEDED",
            LimitCode::IntrospectionDisabled => "INTROSPECTION_DISABLED",
        }
    }
}

/// A refused document: the code, a message, and the measured value with its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which limit.
    pub code: LimitCode,
    /// For people.
    pub message: String,
    /// (measured, limit), when there is a number to report.
    pub measured: Option<(u64, u64)>,
}

impl Rejection {
    fn new(code: LimitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            measured: None,
        }
    }

    fn over(code: LimitCode, what: &str, measured: u64, limit: u64) -> Self {
        Self {
            code,
            message: format!("the document exceeds the {what} limit ({measured} > {limit})"),
            measured: Some((measured, limit)),
        }
    }

    /// As a GraphQL error with `extensions.code` (and `measured`/`limit`).
    pub fn into_server_error(self) -> ServerError {
        let mut error = ServerError::new(self.message, None);
        let mut ext = ErrorExtensionValues::default();
        ext.set("code", self.code.as_str());
        if let Some((measured, limit)) = self.measured {
            ext.set("measured", measured);
            ext.set("limit", limit);
        }
        error.extensions = Some(ext);
        error
    }
}

/// Counts tokens and bracket nesting of a document without parsing it, stopping at the first
/// limit passed. Strings, block strings and comments are skipped as the lexer would.
pub fn scan(text: &str, limits: &OperationLimits) -> Result<usize, Rejection> {
    let bytes = text.as_bytes();
    let max_brackets = limits.max_brackets();
    let (mut i, mut tokens, mut nesting) = (0_usize, 0_usize, 0_usize);
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b'{' | b'[' | b'(' => {
                nesting += 1;
                if nesting > max_brackets {
                    return Err(Rejection::new(
                        LimitCode::DepthLimitExceeded,
                        format!(
                            "the document nests deeper than the depth limit allows ({} levels of brackets)",
                            max_brackets
                        ),
                    ));
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                nesting = nesting.saturating_sub(1);
                i += 1;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
            }
            b'0'..=b'9' | b'-' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > limits.max_tokens {
            return Err(Rejection::over(
                LimitCode::TokenLimitExceeded,
                "token",
                tokens as u64,
                limits.max_tokens as u64,
            ));
        }
    }
    Ok(tokens)
}

/// Field types of the schema: for each object or interface, each field's named type and
/// whether it is a list. Built from the SDL, so only public API is needed.
#[derive(Debug, Default)]
pub struct TypeIndex {
    fields: HashMap<String, HashMap<String, (String, bool)>>,
    roots: [String; 3],
}

impl TypeIndex {
    /// The index of `sdl`.
    pub fn from_sdl(sdl: &str) -> Self {
        let mut index = TypeIndex {
            fields: HashMap::new(),
            roots: ["Query".into(), "Mutation".into(), "Subscription".into()],
        };
        let Ok(doc) = parse_schema(sdl) else {
            return index;
        };
        for definition in doc.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let s = schema.node;
                    for (slot, name) in index.roots.iter_mut().zip([
                        s.query.map(|n| n.node),
                        s.mutation.map(|n| n.node),
                        s.subscription.map(|n| n.node),
                    ]) {
                        if let Some(name) = name {
                            *slot = name.to_string();
                        }
                    }
                }
                TypeSystemDefinition::Type(ty) => {
                    let fields = match ty.node.kind {
                        TypeKind::Object(o) => o.fields,
                        TypeKind::Interface(i) => i.fields,
                        _ => continue,
                    };
                    let map = fields
                        .into_iter()
                        .map(|f| {
                            let f = f.node;
                            let mut ty = &f.ty.node;
                            let mut list = false;
                            while let BaseType::List(inner) = &ty.base {
                                list = true;
                                ty = inner;
                            }
                            let named = match &ty.base {
                                BaseType::Named(n) => n.to_string(),
                                BaseType::List(_) => String::new(),
                            };
                            (f.name.node.to_string(), (named, list))
                        })
                        .collect();
                    index.fields.insert(ty.node.name.node.to_string(), map);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        index
    }

    fn root(&self, kind: OperationType) -> &str {
        match kind {
            OperationType::Query => &self.roots[0],
            OperationType::Mutation => &self.roots[1],
            OperationType::Subscription => &self.roots[2],
        }
    }

    fn field(&self, ty: &str, field: &str) -> Option<&(String, bool)> {
        self.fields.get(ty)?.get(field)
    }
}

/// What the analysis found about one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationReport {
    /// Query, mutation or subscription.
    pub kind: OperationType,
    /// Cost (see the module docs).
    pub cost: u64,
    /// Field depth.
    pub depth: usize,
    /// Root fields by name, fragments expanded, once per occurrence (aliases count).
    pub root_fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SetStats {
    cost: u64,
    depth: usize,
    nesting: usize,
    fields: usize,
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    index: &'a TypeIndex,
    limits: &'a OperationLimits,
    variables: &'a Variables,
    definitions: &'a [Positioned<VariableDefinition>],
    unknown_page: u64,
    introspection: bool,
    memo: HashMap<(&'a str, bool), SetStats>,
    active: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    /// The page size a `first`/`last` argument asks for.
    fn page(&self, value: &InputValue) -> u64 {
        let number = |v: &async_graphql::Value| match v {
            async_graphql::Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_i64().map(|_| 0))
                .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            _ => None,
        };
        match value {
            InputValue::Number(_) => value.clone().into_const().as_ref().and_then(number),
            InputValue::Variable(name) => match self.variables.get(name) {
                Some(v) => number(v),
                None => self
                    .definitions
                    .iter()
                    .find(|d| d.node.name.node == *name)
                    .and_then(|d| d.node.default_value.as_ref())
                    .and_then(|d| number(&d.node)),
            },
            _ => None,
        }
        .unwrap_or(self.unknown_page)
    }

    fn set(
        &mut self,
        set: &'a SelectionSet,
        ty: Option<&'a str>,
        paged: bool,
        level: usize,
    ) -> Result<SetStats, Rejection> {
        if level > self.limits.max_nesting() {
            return Err(self.too_deep());
        }
        let mut stats = SetStats::default();
        for item in &set.items {
            let (cost, depth, nesting, fields) = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    if (name == "__schema" || name == "__type") && !self.introspection {
                        return Err(Rejection::new(
                            LimitCode::IntrospectionDisabled,
                            "introspection is disabled here",
                        ));
                    }
                    let info = ty.and_then(|t| self.index.field(t, name));
                    let page = field
                        .arguments
                        .iter()
                        .find(|(n, _)| n.node == "first" || n.node == "last")
                        .map(|(_, v)| self.page(&v.node));
                    let multiplier = match (page, info) {
                        (Some(n), _) => n,
                        (None, Some((_, true))) if !paged => self.limits.list_size,
                        _ => 1,
                    };
                    let child = if field.selection_set.node.items.is_empty() {
                        None
                    } else {
                        let child_ty = info.map(|(t, _)| t.as_str());
                        Some(self.set(
                            &field.selection_set.node,
                            child_ty,
                            page.is_some(),
                            level + 1,
                        )?)
                    };
                    let child = child.unwrap_or_default();
                    (
                        1_u64.saturating_add(multiplier.saturating_mul(child.cost)),
                        1 + child.depth,
                        if field.selection_set.node.items.is_empty() {
                            0
                        } else {
                            1 + child.nesting
                        },
                        1,
                    )
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some(fragment) = self.doc.fragments.get(name) else {
                        continue; // validation reports it
                    };
                    let stats = match self.memo.get(&(name, paged)) {
                        Some(s) => *s,
                        None => {
                            if !self.active.insert(name) {
                                return Err(Rejection::new(
                                    LimitCode::DepthLimitExceeded,
                                    format!("fragment {name} spreads itself"),
                                ));
                            }
                            let cond = fragment.node.type_condition.node.on.node.as_str();
                            let s = self.set(
                                &fragment.node.selection_set.node,
                                Some(cond),
                                paged,
                                level + 1,
                            )?;
                            self.active.remove(name);
                            self.memo.insert((name, paged), s);
                            s
                        }
                    };
                    if level + 1 + stats.nesting > self.limits.max_nesting() {
                        return Err(self.too_deep());
                    }
                    (stats.cost, stats.depth, 1 + stats.nesting, stats.fields)
                }
                Selection::InlineFragment(inline) => {
                    let cond = inline
                        .node
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.as_str())
                        .or(ty);
                    let s = self.set(&inline.node.selection_set.node, cond, paged, level + 1)?;
                    (s.cost, s.depth, 1 + s.nesting, s.fields)
                }
            };
            stats.cost = stats.cost.saturating_add(cost);
            stats.depth = stats.depth.max(depth);
            stats.nesting = stats.nesting.max(nesting);
            stats.fields = stats.fields.saturating_add(fields);
        }
        Ok(stats)
    }

    fn too_deep(&self) -> Rejection {
        Rejection::new(
            LimitCode::DepthLimitExceeded,
            format!(
                "the document nests deeper than the depth limit allows (selection sets, fragments included, at most {} deep)",
                self.limits.max_nesting()
            ),
        )
    }

    /// Root field names, expanding fragments (called once the count is known to be small).
    fn root_names(&self, set: &'a SelectionSet, out: &mut Vec<String>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => out.push(f.node.name.node.to_string()),
                Selection::FragmentSpread(s) => {
                    if let Some(f) = self.doc.fragments.get(&s.node.fragment_name.node)
                        && out.len() <= self.limits.max_root_fields
                    {
                        self.root_names(&f.node.selection_set.node, out);
                    }
                }
                Selection::InlineFragment(i) => self.root_names(&i.node.selection_set.node, out),
            }
        }
    }
}

/// Aliases and directives as written (each fragment once).
fn count_syntax(doc: &ExecutableDocument, limits: &OperationLimits) -> Result<(), Rejection> {
    let mut aliases = 0_usize;
    let mut directives = 0_usize;
    let check = |n: usize, directives: &mut usize| {
        *directives += n;
        if n > limits.max_directives_per_field {
            return Err(Rejection::over(
                LimitCode::DirectiveLimitExceeded,
                "directives-per-field",
                n as u64,
                limits.max_directives_per_field as u64,
            ));
        }
        Ok(())
    };
    let mut stack: Vec<&SelectionSet> = Vec::new();
    for (_, op) in doc.operations.iter() {
        check(op.node.directives.len(), &mut directives)?;
        for v in &op.node.variable_definitions {
            check(v.node.directives.len(), &mut directives)?;
        }
        stack.push(&op.node.selection_set.node);
    }
    for fragment in doc.fragments.values() {
        check(fragment.node.directives.len(), &mut directives)?;
        stack.push(&fragment.node.selection_set.node);
    }
    while let Some(set) = stack.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    aliases += usize::from(f.node.alias.is_some());
                    check(f.node.directives.len(), &mut directives)?;
                    stack.push(&f.node.selection_set.node);
                }
                Selection::FragmentSpread(s) => check(s.node.directives.len(), &mut directives)?,
                Selection::InlineFragment(i) => {
                    check(i.node.directives.len(), &mut directives)?;
                    stack.push(&i.node.selection_set.node);
                }
            }
        }
    }
    if aliases > limits.max_aliases {
        return Err(Rejection::over(
            LimitCode::AliasLimitExceeded,
            "alias",
            aliases as u64,
            limits.max_aliases as u64,
        ));
    }
    if directives > limits.max_directives {
        return Err(Rejection::over(
            LimitCode::DirectiveLimitExceeded,
            "directive",
            directives as u64,
            limits.max_directives as u64,
        ));
    }
    Ok(())
}

/// Checks a parsed document against `limits`; returns a report per operation (by name).
/// `unknown_page` is the page size assumed for a `first`/`last` whose value is not known (a
/// missing variable); `introspection` whether `__schema`/`__type` are allowed.
pub fn analyze(
    doc: &ExecutableDocument,
    index: &TypeIndex,
    limits: &OperationLimits,
    variables: &Variables,
    unknown_page: u64,
    introspection: bool,
) -> Result<HashMap<Option<Name>, OperationReport>, Rejection> {
    count_syntax(doc, limits)?;
    let mut reports = HashMap::new();
    for (name, op) in doc.operations.iter() {
        let op = &op.node;
        let mut walk = Walk {
            doc,
            index,
            limits,
            variables,
            definitions: &op.variable_definitions,
            unknown_page,
            introspection,
            memo: HashMap::new(),
            active: HashSet::new(),
        };
        let root = index.root(op.ty);
        let stats = walk.set(&op.selection_set.node, Some(root), false, 1)?;
        if stats.depth > limits.max_depth {
            return Err(Rejection::over(
                LimitCode::DepthLimitExceeded,
                "depth",
                stats.depth as u64,
                limits.max_depth as u64,
            ));
        }
        if stats.fields > limits.max_root_fields {
            return Err(Rejection::over(
                LimitCode::RootFieldLimitExceeded,
                "root field",
                stats.fields as u64,
                limits.max_root_fields as u64,
            ));
        }
        if stats.cost > limits.max_complexity {
            return Err(Rejection::over(
                LimitCode::ComplexityLimitExceeded,
                "complexity",
                stats.cost,
                limits.max_complexity,
            ));
        }
        let mut root_fields = Vec::new();
        walk.root_names(&op.selection_set.node, &mut root_fields);
        reports.insert(
            name.cloned(),
            OperationReport {
                kind: op.ty,
                cost: stats.cost,
                depth: stats.depth,
                root_fields,
            },
        );
    }
    Ok(reports)
}

/// Estimated memory of a parsed document per byte of its text (positions, names, maps).
const PARSED_BYTES_PER_TEXT_BYTE: usize = 70;
/// Memory budget of the parse cache: about 1,900 documents of 250 bytes.
const PARSE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The extension factory; one per schema.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<LimitsInner>,
    introspection: bool,
}

struct LimitsInner {
    limits: OperationLimits,
    index: TypeIndex,
    unknown_page: u64,
    rate_limits: Option<RateLimitSettings>,
    parsed: moka::future::Cache<Arc<str>, Arc<ExecutableDocument>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Enforces `limits` on requests to a schema with this SDL, and `rate_limits` (with the
    /// schema's [`RateLimiter`] data) just before execution; `None` = no rate limits (checks
    /// of manifests).
    pub fn new(limits: OperationLimits, sdl: &str, rate_limits: Option<RateLimitSettings>) -> Self {
        Self {
            inner: Arc::new(LimitsInner {
                limits,
                index: TypeIndex::from_sdl(sdl),
                unknown_page: pagination::DEFAULT_PAGE_SIZE as u64,
                rate_limits,
                // weighed by an estimate of the parsed document's memory: about 70 bytes per
                // byte of text (88,000 distinct 250-byte documents grew the process by 560 MB
                // when this weighed the text alone under an 8 MB budget, and every request was
                // 25 % slower afterwards; docs/performance.md)
                parsed: moka::future::Cache::builder()
                    .weigher(|k: &Arc<str>, _| {
                        u32::try_from(k.len().saturating_mul(PARSED_BYTES_PER_TEXT_BYTE))
                            .unwrap_or(u32::MAX)
                    })
                    .max_capacity(PARSE_CACHE_BYTES)
                    .build(),
            }),
            introspection: true,
        }
    }

    /// The same limits (and parse cache) for a schema where `__schema` and `__type` are
    /// refused with `INTROSPECTION_DISABLED` unless `allowed`.
    pub fn introspection(&self, allowed: bool) -> Self {
        Self {
            inner: self.inner.clone(),
            introspection: allowed,
        }
    }

    /// Assumes the largest page for a `first` whose value is unknown (registration, where
    /// variables are not known yet).
    pub fn worst_case(mut self) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.unknown_page = pagination::MAX_PAGE_SIZE as u64;
        }
        self
    }
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExtension {
            inner: self.inner.clone(),
            introspection: self.introspection,
            reports: Mutex::default(),
        })
    }
}

struct LimitsExtension {
    inner: Arc<LimitsInner>,
    introspection: bool,
    reports: Mutex<HashMap<Option<Name>, OperationReport>>,
}

fn rate_limited(retry_after: u64, who: &str) -> Response {
    let mut error = ServerError::new(
        format!("too many requests for this {who}; retry after {retry_after} s"),
        None,
    );
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", ErrorCode::RateLimited.as_str());
    ext.set("retryAfterSeconds", retry_after);
    error.extensions = Some(ext);
    Response::from_errors(vec![error])
}

impl LimitsExtension {
    /// Takes the operation's share of every bucket that applies; the first bucket that is
    /// short refuses the request (with the wait it reports).
    async fn charge(
        &self,
        ctx: &ExtensionContext<'_>,
        report: &OperationReport,
    ) -> Option<(u64, &'static str)> {
        let settings = self.inner.rate_limits.as_ref()?;
        if !settings.enabled {
            return None;
        }
        let limiter = ctx.data_opt::<RateLimiter>()?;
        if let Some(partner) = ctx.data_opt::<PartnerCaller>() {
            // an operation costing more than the whole bucket empties it rather than never
            // running (registration already bounds costs by `max_complexity`)
            let cost = u32::try_from(report.cost)
                .unwrap_or(u32::MAX)
                .min(partner.bucket.burst);
            let decision = limiter
                .take(&format!("partner:{}", partner.id), partner.bucket, cost)
                .await;
            if let Some(secs) = decision.retry_after_secs() {
                return Some((secs, "partner"));
            }
        }
        if report.kind != OperationType::Mutation {
            return None;
        }
        let mut counted: Vec<(&str, u32)> = Vec::new();
        for field in &report.root_fields {
            if settings.mutations.iter().any(|m| m == field) {
                match counted.iter_mut().find(|(f, _)| f == field) {
                    Some((_, n)) => *n += 1,
                    None => counted.push((field.as_str(), 1)),
                }
            }
        }
        let member = match ctx.data_opt::<Viewer>() {
            Some(Viewer::Authenticated(s)) => match s.principal {
                domain::identity::Principal::Member { id } => Some(id),
                domain::identity::Principal::Staff { .. } => None,
            },
            _ => None,
        };
        let ip = ctx.data_opt::<ClientInfo>().and_then(|c| c.ip);
        for (field, n) in counted {
            let mut buckets: Vec<(String, Bucket, &'static str)> = Vec::new();
            if let Some(id) = member {
                buckets.push((format!("member:{field}:{id}"), settings.member(), "member"));
            }
            if let Some(ip) = ip {
                buckets.push((format!("ip:{field}:{ip}"), settings.ip(), "client address"));
            }
            for (key, bucket, who) in buckets {
                if let d @ Decision::Limited { .. } = limiter.take(&key, bucket, n).await {
                    return Some((d.retry_after_secs().unwrap_or(1), who));
                }
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl Extension for LimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let mut request = request;
        let inner = &self.inner;
        scan(&request.query, &inner.limits).map_err(Rejection::into_server_error)?;
        let text: Arc<str> = request.query.as_str().into();
        let doc = match inner.parsed.get(&text).await {
            Some(doc) => Some(doc),
            None => match parse_query(&*text) {
                Ok(doc) => {
                    let doc = Arc::new(doc);
                    inner.parsed.insert(text, doc.clone()).await;
                    Some(doc)
                }
                // left to async-graphql, which reports it as usual
                Err(_) => None,
            },
        };
        if let Some(doc) = doc {
            let introspection = self.introspection
                && request.introspection_mode != async_graphql::IntrospectionMode::Disabled;
            let reports = analyze(
                &doc,
                &inner.index,
                &inner.limits,
                &request.variables,
                inner.unknown_page,
                introspection,
            )
            .map_err(Rejection::into_server_error)?;
            *self
                .reports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = reports;
            request.set_parsed_query((*doc).clone());
        }
        next.run(ctx, request).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let report = {
            let reports = self
                .reports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match operation_name {
                Some(name) => reports
                    .iter()
                    .find(|(n, _)| n.as_ref().is_some_and(|n| n.as_str() == name))
                    .map(|(_, r)| r.clone()),
                None if reports.len() == 1 => reports.values().next().cloned(),
                None => None,
            }
        };
        if let Some(report) = report {
            if let Some(info) = ctx.data_opt::<Arc<OperationInfo>>() {
                info.record_cost(report.cost, report.root_fields.clone());
            }
            if let Some((secs, who)) = self.charge(ctx, &report).await {
                if let Some(info) = ctx.data_opt::<Arc<OperationInfo>>() {
                    info.mark_rate_limited(secs);
                }
                return rate_limited(secs, who);
            }
        }
        next.run(ctx, operation_name).await
    }
}

/// An extension that stops every request after validation (nothing executes): checks of
/// documents, such as partner manifests, run through the real pipeline this way.
#[derive(Debug, Clone, Copy, Default)]
pub struct DryRun;

impl ExtensionFactory for DryRun {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DryRun)
    }
}

#[async_trait::async_trait]
impl Extension for DryRun {
    async fn execute(
        &self,
        _ctx: &ExtensionContext<'_>,
        _operation_name: Option<&str>,
        _next: NextExecute<'_>,
    ) -> Response {
        Response::new(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> Result<HashMap<Option<Name>, OperationReport>, Rejection> {
        let limits = OperationLimits::default();
        scan(query, &limits)?;
        let doc = parse_query(query).expect("parses");
        let index = TypeIndex::from_sdl(&crate::sdl());
        analyze(&doc, &index, &limits, &Variables::default(), 20, false)
    }

    fn code(query: &str) -> &'static str {
        check(query).expect_err("refused").code.as_str()
    }

    fn cost(query: &str) -> u64 {
        check(query)
            .expect("accepted")
            .values()
            .next()
            .expect("one operation")
            .cost
    }

    #[test]
    fn cost_weighs_pages_and_lists() {
        assert_eq!(cost("{ __typename }"), 1);
        // products 1 + 10 × (edges 1 + 1 × (node 1 + id 1))
        assert_eq!(
            cost("{ products(first: 10) { edges { node { id } } } }"),
            31
        );
        // a list without `first` counts list_size (10) times
        assert_eq!(cost("{ categories { id name } }"), 21);
        // first: 100000 is refused before anything runs
        assert_eq!(
            code("{ products(first: 100000) { edges { node { id } } } }"),
            "COMPLEXITY_LIMIT_EXCEEDED"
        );
        // variables count with their value, or the default page when absent
        let doc = parse_query("query P($n: Int) { products(first: $n) { totalCount } }").unwrap();
        let index = TypeIndex::from_sdl(&crate::sdl());
        let limits = OperationLimits::default();
        let vars = Variables::from_json(serde_json::json!({ "n": 3 }));
        let with = analyze(&doc, &index, &limits, &vars, 20, false).unwrap();
        assert_eq!(with.values().next().unwrap().cost, 4);
        let without = analyze(&doc, &index, &limits, &Variables::default(), 50, false).unwrap();
        assert_eq!(without.values().next().unwrap().cost, 51);
    }

    #[test]
    fn attacks_are_refused_with_their_code() {
        let deep = format!("{}{}", "{ categories ".repeat(100), "}".repeat(100));
        assert_eq!(code(&deep), "DEPTH_LIMIT_EXCEEDED");
        let aliases: String = (0..1000).map(|i| format!("a{i}: __typename ")).collect();
        assert_eq!(code(&format!("{{ {aliases} }}")), "ALIAS_LIMIT_EXCEEDED");
        let directives = " @include(if: true)".repeat(500);
        assert_eq!(
            code(&format!("{{ __typename{directives} }}")),
            "DIRECTIVE_LIMIT_EXCEEDED"
        );
        let spread: String = (0..60)
            .map(|i| format!("b{i}: __typename @skip(if: false) "))
            .collect();
        assert_eq!(
            code(&format!("{{ {spread} }}")),
            "ALIAS_LIMIT_EXCEEDED",
            "60 aliases are over 30 before the 60 directives are counted"
        );
        let chain: String = (0..5000)
            .map(|i| format!("fragment F{i} on Query {{ ...F{} }} ", i + 1))
            .collect();
        assert_eq!(
            code(&format!(
                "{{ ...F0 }} {chain} fragment F5000 on Query {{ __typename }}"
            )),
            "TOKEN_LIMIT_EXCEEDED"
        );
        // a short chain passes the token count but not the nesting bound
        let chain: String = (0..40)
            .map(|i| format!("fragment F{i} on Query {{ ...F{} }} ", i + 1))
            .collect();
        assert_eq!(
            code(&format!(
                "{{ ...F0 }} {chain} fragment F40 on Query {{ __typename }}"
            )),
            "DEPTH_LIMIT_EXCEEDED"
        );
        // a fragment "bomb" doubling at each level is costed, not walked
        let bomb: String = (0..14)
            .map(|i| {
                format!(
                    "fragment B{i} on Category {{ ...B{} ...B{} }} ",
                    i + 1,
                    i + 1
                )
            })
            .collect();
        assert_eq!(
            code(&format!(
                "{{ categories {{ ...B0 }} }} {bomb} fragment B14 on Category {{ id }}"
            )),
            "COMPLEXITY_LIMIT_EXCEEDED"
        );
        let bomb: String = (0..30)
            .map(|i| format!("fragment B{i} on Query {{ ...B{} ...B{} }} ", i + 1, i + 1))
            .collect();
        assert!(
            check(&format!(
                "{{ ...B0 }} {bomb} fragment B30 on Query {{ __typename }}"
            ))
            .is_err()
        );
        let roots: String = (0..25).map(|i| format!("c{i}: __typename ")).collect();
        let doc = format!("{{ {roots} }}");
        let limits = OperationLimits {
            max_aliases: 100,
            ..OperationLimits::default()
        };
        let parsed = parse_query(&doc).unwrap();
        let refused = analyze(
            &parsed,
            &TypeIndex::default(),
            &limits,
            &Variables::default(),
            20,
            false,
        )
        .unwrap_err();
        assert_eq!(refused.code, LimitCode::RootFieldLimitExceeded);
        assert_eq!(
            code("{ __schema { types { name } } }"),
            "INTROSPECTION_DISABLED"
        );
    }

    #[test]
    fn fragment_cycles_are_refused_before_validation_walks_them() {
        // async-graphql's own depth check would walk every path of a cycle that fans out
        assert_eq!(
            code("{ ...A } fragment A on Query { ...A ...A }"),
            "DEPTH_LIMIT_EXCEEDED"
        );
        assert_eq!(
            code("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A __typename }"),
            "DEPTH_LIMIT_EXCEEDED"
        );
    }

    /// GraphiQL's introspection query (graphql-js 16 with every option, as the vendored
    /// GraphiQL sends it) fits the default limits when introspection is allowed.
    #[test]
    fn graphiql_introspection_fits_the_defaults() {
        const TYPE_REF: &str = "kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }";
        let query = format!(
            "query IntrospectionQuery {{ __schema {{ description queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }} types {{ ...FullType }} directives {{ name description isRepeatable locations args(includeDeprecated: true) {{ ...InputValue }} }} }} }}
             fragment FullType on __Type {{ kind name description specifiedByURL isOneOf fields(includeDeprecated: true) {{ name description args(includeDeprecated: true) {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }} inputFields(includeDeprecated: true) {{ ...InputValue }} interfaces {{ ...TypeRef }} enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} possibleTypes {{ ...TypeRef }} }}
             fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue isDeprecated deprecationReason }}
             fragment TypeRef on __Type {{ {TYPE_REF} }}"
        );
        let limits = OperationLimits::default();
        scan(&query, &limits).unwrap();
        let doc = parse_query(&query).unwrap();
        let index = TypeIndex::from_sdl(&crate::sdl());
        let reports = analyze(&doc, &index, &limits, &Variables::default(), 20, true).unwrap();
        assert_eq!(reports.values().next().unwrap().depth, 15);
    }

    #[test]
    fn the_scanner_counts_tokens_like_the_lexer() {
        let limits = OperationLimits::default();
        assert_eq!(scan("{ a }", &limits).unwrap(), 3);
        assert_eq!(
            scan(
                r#"query Q($x: Int = 1.5e+3) { a(s: "x { y", b: """ { """) ...F } # { ["#,
                &limits
            )
            .unwrap(),
            23
        );
    }
}
