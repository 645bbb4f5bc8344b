//! The `ruizhu partner` commands: create a partner (its key is shown once), revoke it, and
//! register its Apollo persisted-query manifest after checking every operation against the
//! schema, the operation limits and the partner's scopes. Nothing is stored unless the whole
//! manifest passes.

use std::sync::Arc;

use anyhow::Context as _;
use domain::partner::{Manifest, Partner, RegisteredOperation};
use resolvers::limits::OperationLimits;
use resolvers::partner::{ManifestChecker, parse_scopes};
use secrecy::SecretString;

use crate::app::App;

/// Creates a partner with `scopes` (comma-separated) and returns it with its key.
pub async fn create(
    app: &App,
    name: &str,
    scopes: &str,
    cost_per_minute: Option<u32>,
    burst: Option<u32>,
) -> anyhow::Result<(Partner, SecretString)> {
    let scopes = parse_scopes(scopes).map_err(anyhow::Error::msg)?;
    app.partners
        .create(name, &scopes, cost_per_minute, burst)
        .await
}

/// Revokes the partner named `name`.
pub async fn revoke(app: &App, name: &str) -> anyhow::Result<()> {
    let revoked = app.partners.revoke(name).await?;
    anyhow::ensure!(revoked, "no active partner is named {name}");
    Ok(())
}

/// Checks every operation of a manifest (given as JSON text) for a partner holding `scopes`;
/// returns the operations ready to store, or every problem found.
pub async fn check_manifest(
    limits: OperationLimits,
    json: &str,
    scopes: &[String],
) -> Result<Vec<RegisteredOperation>, Vec<String>> {
    let manifest = Manifest::parse(json)?;
    let checker = ManifestChecker::new(limits);
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for op in &manifest.operations {
        match checker.check(op, scopes).await {
            Ok(cost) => checked.push(RegisteredOperation {
                id: op.id.clone(),
                name: op.name.clone(),
                kind: op.kind.clone(),
                body: Arc::from(op.body.as_str()),
                cost: u32::try_from(cost).unwrap_or(u32::MAX),
            }),
            Err(reasons) => problems.extend(
                reasons
                    .into_iter()
                    .map(|r| format!("operation {:?} ({}): {r}", op.name, op.id)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

/// What a registration stored.
#[derive(Debug)]
pub struct Registration {
    /// The partner's operations now.
    pub operations: Vec<RegisteredOperation>,
    /// Operations of the previous manifest that are gone.
    pub removed: usize,
}

/// Registers the manifest (JSON text) as the whole operation set of the partner `name`.
pub async fn register(app: &App, name: &str, json: &str) -> anyhow::Result<Registration> {
    let partner = app
        .partners
        .find(name)
        .await?
        .filter(|p| p.active)
        .with_context(|| format!("no active partner is named {name}"))?;
    let operations = check_manifest(app.settings.graphql.limits(), json, &partner.scopes)
        .await
        .map_err(|problems| {
            anyhow::anyhow!(
                "the manifest was not registered:\n  {}",
                problems.join("\n  ")
            )
        })?;
    let (_, removed) = app
        .partners
        .replace_operations(partner.id, &operations)
        .await?;
    Ok(Registration {
        operations,
        removed,
    })
}
