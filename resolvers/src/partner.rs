//! Partners on `/partner/graphql`: the caller the endpoint puts into the request data, the
//! scopes a partner's operations may use, and the check every manifest operation passes
//! before it is registered (the real parser, limits and validation, stopped before anything
//! executes).

use async_graphql::Request;
use async_graphql::parser::types::OperationType;
use domain::partner::ManifestOperation;
use domain::ratelimit::Bucket;

use crate::limits::{DryRun, Limits, OperationLimits};
use crate::observe::OperationInfo;
use crate::{ApiSchema, Observe};

/// The partner of a `/partner/graphql` request.
#[derive(Debug, Clone)]
pub struct PartnerCaller {
    /// Partner id.
    pub id: u64,
    /// Partner name (metrics, logs).
    pub name: String,
    /// Its cost-weighted token bucket.
    pub bucket: Bucket,
}

/// What a scope lets a partner's operations do.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// `area:access`.
    pub name: &'static str,
    /// For people.
    pub description: &'static str,
    /// Operation type the fields belong to.
    pub kind: OperationType,
    /// Root fields it grants.
    pub root_fields: &'static [&'static str],
}

/// Every scope a partner can hold. Partners call as nobody in particular (no member, no
/// staff), so only public fields are worth granting; no scope grants a mutation yet, so a
/// manifest with one is refused until such a scope exists.
pub const SCOPES: &[Scope] = &[Scope {
    name: "catalog:read",
    description: "published products, their SKUs and images, and categories",
    kind: OperationType::Query,
    root_fields: &["products", "product", "categories", "category"],
}];

/// Parses a comma- or space-separated scope list; every name must be in [`SCOPES`].
pub fn parse_scopes(list: &str) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for name in list.split([',', ' ']).filter(|s| !s.is_empty()) {
        if !SCOPES.iter().any(|s| s.name == name) {
            let known: Vec<&str> = SCOPES.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown scope {name:?}; known: {}",
                known.join(", ")
            ));
        }
        if !scopes.iter().any(|s| s == name) {
            scopes.push(name.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err("give at least one scope".into());
    }
    Ok(scopes)
}

fn kind_name(kind: OperationType) -> &'static str {
    match kind {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// Checks manifest operations against the schema as it is now.
#[derive(Clone)]
pub struct ManifestChecker {
    schema: ApiSchema,
}

impl std::fmt::Debug for ManifestChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestChecker").finish_non_exhaustive()
    }
}

impl ManifestChecker {
    /// A checker applying `limits` with every unknown page size at its largest.
    pub fn new(limits: OperationLimits) -> Self {
        let sdl = crate::sdl();
        let schema = crate::schema_builder()
            .extension(Observe)
            .extension(Limits::new(limits, &sdl, None).worst_case())
            .extension(DryRun)
            .disable_introspection()
            .finish();
        Self { schema }
    }

    /// Checks one operation for a partner holding `scopes`; returns its worst-case cost, or
    /// every reason it cannot be registered.
    pub async fn check(
        &self,
        op: &ManifestOperation,
        scopes: &[String],
    ) -> Result<u64, Vec<String>> {
        if op.kind == "subscription" {
            return Err(vec![
                "subscriptions are not served on /partner/graphql".into(),
            ]);
        }
        let info = OperationInfo::new(false);
        let request = Request::new(op.body.clone())
            .operation_name(op.name.clone())
            .data(info.clone())
            .disable_introspection();
        let response = self.schema.execute(request).await;
        if !response.errors.is_empty() {
            return Err(response
                .errors
                .iter()
                .map(|e| {
                    let code = e
                        .extensions
                        .as_ref()
                        .and_then(|x| x.get("code"))
                        .map(|c| format!("{c}: ").replace('"', ""))
                        .unwrap_or_default();
                    format!("{code}{}", e.message)
                })
                .collect());
        }
        let state = info.state();
        let Some(kind) = state.kind.filter(|_| state.executed) else {
            return Err(vec!["the operation could not be checked".into()]);
        };
        let mut problems = Vec::new();
        if kind_name(kind) != op.kind {
            problems.push(format!(
                "the manifest says {} but the body is a {}",
                op.kind,
                kind_name(kind)
            ));
        }
        for field in state.root_fields.iter().filter(|f| *f != "__typename") {
            let granted = SCOPES.iter().any(|s| {
                s.kind == kind
                    && s.root_fields.contains(&field.as_str())
                    && scopes.iter().any(|held| held == s.name)
            });
            if !granted {
                let needed: Vec<&str> = SCOPES
                    .iter()
                    .filter(|s| s.kind == kind && s.root_fields.contains(&field.as_str()))
                    .map(|s| s.name)
                    .collect();
                problems.push(if needed.is_empty() {
                    format!("{} `{field}` is not available to partners", kind_name(kind))
                } else {
                    format!(
                        "{} `{field}` needs the scope {}",
                        kind_name(kind),
                        needed.join(" or ")
                    )
                });
            }
        }
        if problems.is_empty() {
            Ok(state.cost.unwrap_or(0))
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_grants_real_root_fields() {
        let sdl = crate::sdl();
        for scope in SCOPES {
            let root = match scope.kind {
                OperationType::Query => "type Query",
                OperationType::Mutation => "type Mutation",
                OperationType::Subscription => "type Subscription",
            };
            let body = sdl
                .split(root)
                .nth(1)
                .and_then(|rest| rest.split("\n}").next())
                .unwrap_or_default();
            for field in scope.root_fields {
                assert!(
                    body.lines().any(|l| {
                        let l = l.trim_start();
                        l.starts_with(&format!("{field}(")) || l.starts_with(&format!("{field}:"))
                    }),
                    "{} grants {field}, which the schema does not have",
                    scope.name
                );
            }
        }
        assert_eq!(parse_scopes("catalog:read, catalog:read").unwrap().len(), 1);
        assert!(parse_scopes("orders:write").is_err());
        assert!(parse_scopes("").is_err());
    }
}
