//! Partners of `/partner/graphql`: accounts with a hashed key, scopes and a budget, and the
//! operations each may run (an Apollo persisted-query manifest, registered ahead of time).
//!
//! Keys are 256-bit random strings, so a plain SHA-256 is the right way to store them (nothing
//! to brute-force, and a lookup by hash cannot leak timing about the key). Every replica keeps
//! partners and operations in process for `cache_ttl`: a revocation or a new manifest reaches
//! all of them within that time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::apq::{is_sha256_hex, sha256_hex};
use crate::crypto::{random_token, sha256};
use crate::db::Db;
use crate::schema::{partner_operations, partners};
use crate::{DomainError, DomainResult};

/// Prefix of every partner key (recognisable in leaked-secret scanners and support tickets).
pub const KEY_PREFIX: &str = "rzp_";

/// A partner as the endpoint needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// Row id.
    pub id: u64,
    /// Unique name (`boutique-sample`).
    pub name: String,
    /// What its operations may touch (e.g. `catalog:read`).
    pub scopes: Vec<String>,
    /// Whether its key is accepted.
    pub active: bool,
    /// Its own budget, tokens per minute; `None` = the configured default.
    pub cost_per_minute: Option<u32>,
    /// Its own bucket capacity; `None` = the configured default.
    pub burst: Option<u32>,
}

/// One registered operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredOperation {
    /// SHA-256 (lowercase hex) of `body`.
    pub id: String,
    /// The operation name from the manifest.
    pub name: String,
    /// `query` or `mutation`.
    pub kind: String,
    /// The document.
    pub body: Arc<str>,
    /// Its cost with variables at their worst case.
    pub cost: u32,
}

/// An Apollo persisted-query manifest
/// (`{"format":"apollo-persisted-query-manifest","version":1,"operations":[…]}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `apollo-persisted-query-manifest`.
    pub format: String,
    /// Always 1.
    pub version: u32,
    /// The operations.
    pub operations: Vec<ManifestOperation>,
}

/// One entry of a manifest (other keys, such as a client name, are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestOperation {
    /// SHA-256 (lowercase hex) of `body`.
    pub id: String,
    /// The operation's name.
    pub name: String,
    /// `query`, `mutation` or `subscription`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The full document (the operation and the fragments it uses).
    pub body: String,
}

impl Manifest {
    /// Parses a manifest and checks its shape and that every id is the SHA-256 of its body.
    /// Every problem is reported, not only the first.
    pub fn parse(json: &str) -> Result<Self, Vec<String>> {
        let manifest: Manifest =
            serde_json::from_str(json).map_err(|e| vec![format!("not a manifest: {e}")])?;
        let mut problems = Vec::new();
        if manifest.format != "apollo-persisted-query-manifest" {
            problems.push(format!(
                "format is {:?}; expected \"apollo-persisted-query-manifest\"",
                manifest.format
            ));
        }
        if manifest.version != 1 {
            problems.push(format!(
                "version is {}; only version 1 is supported",
                manifest.version
            ));
        }
        let mut seen = HashSet::new();
        for op in &manifest.operations {
            let label = format!("operation {:?} ({})", op.name, op.id);
            if !is_sha256_hex(&op.id) {
                problems.push(format!("{label}: id is not a lowercase hex SHA-256"));
            } else if sha256_hex(&op.body) != op.id {
                problems.push(format!(
                    "{label}: id does not match the SHA-256 of its body ({})",
                    sha256_hex(&op.body)
                ));
            }
            if !seen.insert(op.id.as_str()) {
                problems.push(format!("{label}: listed twice"));
            }
            if op.name.is_empty() || op.name.len() > 128 {
                problems.push(format!("{label}: name must be 1–128 characters"));
            }
            if !["query", "mutation", "subscription"].contains(&op.kind.as_str()) {
                problems.push(format!(
                    "{label}: type {:?} is not query, mutation or subscription",
                    op.kind
                ));
            }
        }
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }
}

#[derive(Queryable)]
struct PartnerRow {
    id: u64,
    name: String,
    scopes: String,
    active: bool,
    cost_per_minute: Option<u32>,
    burst: Option<u32>,
}

impl From<PartnerRow> for Partner {
    fn from(row: PartnerRow) -> Self {
        Partner {
            id: row.id,
            name: row.name,
            scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
            active: row.active,
            cost_per_minute: row.cost_per_minute,
            burst: row.burst,
        }
    }
}

type PartnerColumns = (
    partners::id,
    partners::name,
    partners::scopes,
    partners::active,
    partners::cost_per_minute,
    partners::burst,
);

const PARTNER_COLUMNS: PartnerColumns = (
    partners::id,
    partners::name,
    partners::scopes,
    partners::active,
    partners::cost_per_minute,
    partners::burst,
);

/// Partner accounts and their operations.
#[derive(Clone)]
pub struct Partners {
    db: Db,
    /// Active partners by key hash (`None` remembers unknown or revoked keys, briefly).
    by_key: moka::future::Cache<Vec<u8>, Option<Arc<Partner>>>,
    /// Registered operations by (partner, id); `None` remembers misses.
    operations: moka::future::Cache<(u64, String), Option<Arc<RegisteredOperation>>>,
}

impl std::fmt::Debug for Partners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partners").finish_non_exhaustive()
    }
}

/// A loader's error as every waiter on it sees it, keeping whether a retry may succeed.
fn shared_error(e: Arc<DomainError>) -> DomainError {
    if e.is_retryable() {
        DomainError::Pool(e.to_string())
    } else {
        DomainError::Internal(e.to_string())
    }
}

/// Whether `name` is a valid partner name: 3–64 of `[a-z0-9-]`.
pub fn valid_name(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Partners {
    /// Partners in `db`, cached in process for `cache_ttl`.
    pub fn new(db: Db, cache_ttl: Duration) -> Self {
        Self {
            db,
            by_key: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cache_ttl)
                .build(),
            operations: moka::future::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(cache_ttl)
                .build(),
        }
    }

    /// Creates a partner and returns it with its key, which is shown this once and never
    /// stored.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[String],
        cost_per_minute: Option<u32>,
        burst: Option<u32>,
    ) -> anyhow::Result<(Partner, SecretString)> {
        anyhow::ensure!(
            valid_name(name),
            "partner names are 3–64 characters of [a-z0-9-]"
        );
        anyhow::ensure!(
            cost_per_minute != Some(0) && burst != Some(0),
            "a budget of 0 would refuse every request; revoke the partner instead"
        );
        let key = format!("{KEY_PREFIX}{}", random_token());
        let mut conn = self.db.conn().await?;
        let exists: i64 = partners::table
            .filter(partners::name.eq(name))
            .count()
            .get_result(&mut conn)
            .await?;
        anyhow::ensure!(exists == 0, "a partner named {name} already exists");
        diesel::insert_into(partners::table)
            .values((
                partners::name.eq(name),
                partners::key_hash.eq(sha256(key.as_bytes())),
                partners::scopes.eq(scopes.join(" ")),
                partners::cost_per_minute.eq(cost_per_minute),
                partners::burst.eq(burst),
            ))
            .execute(&mut conn)
            .await?;
        let partner = self
            .find(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the partner vanished after its creation"))?;
        Ok((partner, SecretString::from(key)))
    }

    /// The partner named `name`, active or not.
    pub async fn find(&self, name: &str) -> DomainResult<Option<Partner>> {
        let mut conn = self.db.conn().await?;
        let row: Option<PartnerRow> = partners::table
            .filter(partners::name.eq(name))
            .select(PARTNER_COLUMNS)
            .first(&mut conn)
            .await
            .optional()?;
        Ok(row.map(Partner::from))
    }

    /// Stops accepting the partner's key (on every replica within the cache time). Returns
    /// whether an active partner was revoked.
    pub async fn revoke(&self, name: &str) -> DomainResult<bool> {
        let mut conn = self.db.conn().await?;
        let changed = diesel::update(
            partners::table
                .filter(partners::name.eq(name))
                .filter(partners::active.eq(true)),
        )
        .set((
            partners::active.eq(false),
            partners::revoked_at.eq(Some(chrono::Utc::now().naive_utc())),
        ))
        .execute(&mut conn)
        .await?;
        self.by_key.invalidate_all();
        Ok(changed > 0)
    }

    /// The active partner holding `key`, if any.
    pub async fn authenticate(&self, key: &SecretString) -> DomainResult<Option<Arc<Partner>>> {
        let key = key.expose_secret();
        if !key.starts_with(KEY_PREFIX) || key.len() > 128 {
            return Ok(None);
        }
        let hash = sha256(key.as_bytes());
        let db = self.db.clone();
        let found = self
            .by_key
            .try_get_with(hash.clone(), async move {
                let mut conn = db.conn().await?;
                let row: Option<PartnerRow> = partners::table
                    .filter(partners::key_hash.eq(&hash))
                    .filter(partners::active.eq(true))
                    .select(PARTNER_COLUMNS)
                    .first(&mut conn)
                    .await
                    .optional()?;
                Ok::<_, DomainError>(row.map(|r| Arc::new(Partner::from(r))))
            })
            .await
            .map_err(shared_error)?;
        Ok(found)
    }

    /// The operation `id` registered for `partner`, if any (another partner's never counts).
    pub async fn operation(
        &self,
        partner: u64,
        id: &str,
    ) -> DomainResult<Option<Arc<RegisteredOperation>>> {
        if !is_sha256_hex(id) {
            return Ok(None);
        }
        let db = self.db.clone();
        let key = id.to_owned();
        self.operations
            .try_get_with((partner, id.to_owned()), async move {
                let mut conn = db.conn().await?;
                let row: Option<(String, String, String, String, u32)> = partner_operations::table
                    .filter(partner_operations::partner_id.eq(partner))
                    .filter(partner_operations::operation_id.eq(&key))
                    .select((
                        partner_operations::operation_id,
                        partner_operations::name,
                        partner_operations::kind,
                        partner_operations::body,
                        partner_operations::cost,
                    ))
                    .first(&mut conn)
                    .await
                    .optional()?;
                Ok::<_, DomainError>(row.map(|(id, name, kind, body, cost)| {
                    Arc::new(RegisteredOperation {
                        id,
                        name,
                        kind,
                        body: body.into(),
                        cost,
                    })
                }))
            })
            .await
            .map_err(shared_error)
    }

    /// The operations registered for `partner`, by id.
    pub async fn operations(&self, partner: u64) -> DomainResult<Vec<RegisteredOperation>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<(String, String, String, String, u32)> = partner_operations::table
            .filter(partner_operations::partner_id.eq(partner))
            .select((
                partner_operations::operation_id,
                partner_operations::name,
                partner_operations::kind,
                partner_operations::body,
                partner_operations::cost,
            ))
            .order(partner_operations::operation_id)
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, kind, body, cost)| RegisteredOperation {
                id,
                name,
                kind,
                body: body.into(),
                cost,
            })
            .collect())
    }

    /// Makes `operations` the partner's whole set, in one transaction (a manifest is the
    /// complete list of what the partner's client sends). Returns (kept or added, removed).
    pub async fn replace_operations(
        &self,
        partner: u64,
        operations: &[RegisteredOperation],
    ) -> DomainResult<(usize, usize)> {
        let mut conn = self.db.conn().await?;
        let ids: Vec<&str> = operations.iter().map(|o| o.id.as_str()).collect();
        let removed = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                // the partner row lock serialises concurrent registrations for one partner
                partners::table
                    .find(partner)
                    .select(partners::id)
                    .for_update()
                    .first::<u64>(conn)
                    .await?;
                let removed = diesel::delete(
                    partner_operations::table
                        .filter(partner_operations::partner_id.eq(partner))
                        .filter(partner_operations::operation_id.ne_all(&ids)),
                )
                .execute(conn)
                .await?;
                for op in operations {
                    diesel::replace_into(partner_operations::table)
                        .values((
                            partner_operations::partner_id.eq(partner),
                            partner_operations::operation_id.eq(&op.id),
                            partner_operations::name.eq(&op.name),
                            partner_operations::kind.eq(&op.kind),
                            partner_operations::body.eq(op.body.as_ref()),
                            partner_operations::cost.eq(op.cost),
                        ))
                        .execute(conn)
                        .await?;
                }
                Ok(removed)
            })
            .await?;
        self.operations.invalidate_all();
        Ok((operations.len(), removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(ops: &str) -> String {
        format!(
            r#"{{"format":"apollo-persisted-query-manifest","version":1,"operations":[{ops}]}}"#
        )
    }

    #[test]
    fn manifests_are_checked_entry_by_entry() {
        let body = "query Cats { categories { id } }";
        let good = format!(
            r#"{{"id":"{}","name":"Cats","type":"query","body":"{body}"}}"#,
            sha256_hex(body)
        );
        let parsed = Manifest::parse(&manifest(&good)).unwrap();
        assert_eq!(parsed.operations.len(), 1);

        let forged = format!(
            r#"{{"id":"{}","name":"Cats","type":"query","body":"{body} "}}"#,
            sha256_hex(body)
        );
        let problems = Manifest::parse(&manifest(&forged)).unwrap_err();
        assert!(problems[0].contains("does not match"), "{problems:?}");

        let twice = format!("{good},{good}");
        let problems = Manifest::parse(&manifest(&twice)).unwrap_err();
        assert!(problems[0].contains("twice"), "{problems:?}");

        let problems =
            Manifest::parse(r#"{"format":"x","version":2,"operations":[]}"#).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(Manifest::parse("[]").is_err());
    }

    #[test]
    fn names_are_plain() {
        assert!(valid_name("boutique-sample"));
        assert!(!valid_name("Boutique"));
        assert!(!valid_name("ab"));
        assert!(!valid_name("a b c"));
    }
}
