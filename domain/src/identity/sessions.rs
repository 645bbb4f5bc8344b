//! Sessions: one per login, each with a family of single-use refresh tokens.
//!
//! - `refresh` exchanges a refresh token for a new pair inside a transaction that locks the
//!   token row, so two concurrent refreshes with one token cannot both succeed; presenting a
//!   token that was already exchanged is treated as theft and revokes the whole session.
//! - `revoke` writes MySQL (the source of truth), then marks the session in Redis; every replica
//!   re-checks a session at least once a second, so a revocation is visible everywhere within 1 s.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use super::{AuthError, Identity, IssuedTokens, Principal, Role};
use crate::DomainResult;
use crate::crypto::{random_token, sha256};
use crate::schema::{auth_sessions, refresh_tokens, staff_accounts};

fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

fn kind_of(principal: &Principal) -> (&'static str, u64) {
    match principal {
        Principal::Member { id } => ("member", *id),
        Principal::Staff { id, .. } => ("staff", *id),
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy)]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// A refresh token was presented twice.
    Reuse,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Reuse => "reuse",
        }
    }
}

impl Identity {
    fn session_key(&self, session_id: &str) -> String {
        self.redis.key(&format!("auth:session:{session_id}"))
    }

    fn refresh_expiry(&self) -> chrono::NaiveDateTime {
        now()
            + chrono::Duration::seconds(
                i64::try_from(self.keys.refresh_ttl_secs()).unwrap_or(i64::MAX / 2),
            )
    }

    /// Starts a session for `principal` and issues its first tokens.
    pub async fn start_session(
        &self,
        conn: &mut AsyncMysqlConnection,
        principal: Principal,
    ) -> DomainResult<IssuedTokens> {
        let session_id = uuid::Uuid::now_v7().to_string();
        let refresh = random_token();
        let expires_at = self.refresh_expiry();
        let (kind, subject) = kind_of(&principal);
        let sid = session_id.clone();
        let hash = sha256(refresh.as_bytes());
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::insert_into(auth_sessions::table)
                .values((
                    auth_sessions::id.eq(&sid),
                    auth_sessions::subject_kind.eq(kind),
                    auth_sessions::subject_id.eq(subject),
                    auth_sessions::expires_at.eq(expires_at),
                ))
                .execute(conn)
                .await?;
            diesel::insert_into(refresh_tokens::table)
                .values((
                    refresh_tokens::session_id.eq(&sid),
                    refresh_tokens::token_hash.eq(&hash),
                    refresh_tokens::expires_at.eq(expires_at),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .await?;
        Ok(IssuedTokens {
            access_token: self.keys.issue(principal, &session_id),
            refresh_token: refresh,
            expires_in: self.keys.access_ttl_secs(),
            principal,
        })
    }

    /// Exchanges a refresh token for a new access and refresh token (rotation).
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens, AuthError> {
        let hash = sha256(refresh_token.as_bytes());
        let mut conn = self.db.conn().await?;
        enum Outcome {
            Rotated(IssuedTokens),
            Reused(String),
            Invalid,
        }
        let outcome = conn
            .transaction::<_, AuthError, _>(async |conn| {
                let row: Option<(
                    u64,
                    String,
                    chrono::NaiveDateTime,
                    Option<chrono::NaiveDateTime>,
                )> = refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(&hash))
                    .select((
                        refresh_tokens::id,
                        refresh_tokens::session_id,
                        refresh_tokens::expires_at,
                        refresh_tokens::rotated_at,
                    ))
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?;
                let Some((token_id, session_id, expires_at, rotated_at)) = row else {
                    return Ok(Outcome::Invalid);
                };
                if rotated_at.is_some() {
                    return Ok(Outcome::Reused(session_id));
                }
                let session: (
                    String,
                    u64,
                    Option<chrono::NaiveDateTime>,
                    chrono::NaiveDateTime,
                ) = auth_sessions::table
                    .find(&session_id)
                    .select((
                        auth_sessions::subject_kind,
                        auth_sessions::subject_id,
                        auth_sessions::revoked_at,
                        auth_sessions::expires_at,
                    ))
                    .first(conn)
                    .await?;
                let (kind, subject, revoked_at, session_expires) = session;
                if revoked_at.is_some() || expires_at < now() || session_expires < now() {
                    return Ok(Outcome::Invalid);
                }
                let principal = match kind.as_str() {
                    "member" => Principal::Member { id: subject },
                    _ => {
                        // staff roles can change (or the account be disabled) between refreshes
                        let staff: Option<(String, bool)> = staff_accounts::table
                            .find(subject)
                            .select((staff_accounts::role, staff_accounts::active))
                            .first(conn)
                            .await
                            .optional()?;
                        match staff {
                            Some((role, true)) => match Role::parse(&role) {
                                Some(role) => Principal::Staff { id: subject, role },
                                None => return Ok(Outcome::Invalid),
                            },
                            _ => return Ok(Outcome::Invalid),
                        }
                    }
                };
                diesel::update(refresh_tokens::table.find(token_id))
                    .set(refresh_tokens::rotated_at.eq(now()))
                    .execute(conn)
                    .await?;
                let next = random_token();
                diesel::insert_into(refresh_tokens::table)
                    .values((
                        refresh_tokens::session_id.eq(&session_id),
                        refresh_tokens::token_hash.eq(sha256(next.as_bytes())),
                        refresh_tokens::expires_at.eq(session_expires.min(self.refresh_expiry())),
                    ))
                    .execute(conn)
                    .await?;
                Ok(Outcome::Rotated(IssuedTokens {
                    access_token: self.keys.issue(principal, &session_id),
                    refresh_token: next,
                    expires_in: self.keys.access_ttl_secs(),
                    principal,
                }))
            })
            .await?;
        match outcome {
            Outcome::Rotated(tokens) => Ok(tokens),
            Outcome::Invalid => Err(AuthError::InvalidCredentials),
            Outcome::Reused(session_id) => {
                // revoke takes its own connection: never hold two from the pool at once
                drop(conn);
                tracing::warn!(target: "ruizhu::security", "refresh token reused; session revoked");
                metrics::counter!("ruizhu_security_events_total", "kind" => "refresh_token_reuse")
                    .increment(1);
                self.revoke(&session_id, RevokeReason::Reuse).await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Ends a session: its access tokens stop working everywhere within a second, its refresh
    /// tokens at once.
    pub async fn revoke(&self, session_id: &str, reason: RevokeReason) -> DomainResult<()> {
        let mut conn = self.db.conn().await?;
        diesel::update(
            auth_sessions::table
                .find(session_id)
                .filter(auth_sessions::revoked_at.is_null()),
        )
        .set((
            auth_sessions::revoked_at.eq(now()),
            auth_sessions::revoked_reason.eq(reason.as_str()),
        ))
        .execute(&mut conn)
        .await?;
        let key = self.session_key(session_id);
        let ttl = self.keys.access_ttl_secs() + 60;
        self.redis
            .call("set", |mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg("0")
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        self.session_status
            .insert(session_id.to_owned(), false)
            .await;
        Ok(())
    }

    /// Whether the session behind an access token is still live: this process's view (at most
    /// 1 s old), else Redis, else MySQL.
    pub async fn session_active(&self, session_id: &str) -> DomainResult<bool> {
        if let Some(active) = self.session_status.get(session_id).await {
            return Ok(active);
        }
        let key = self.session_key(session_id);
        let k = key.clone();
        let shared: Option<Option<String>> = self
            .redis
            .call("get", |mut c| async move {
                redis::cmd("GET").arg(&k).query_async(&mut c).await
            })
            .await;
        let active = match shared {
            Some(Some(flag)) => flag == "1",
            _ => {
                let mut conn = self.db.conn().await?;
                let row: Option<(Option<chrono::NaiveDateTime>, chrono::NaiveDateTime)> =
                    auth_sessions::table
                        .find(session_id)
                        .select((auth_sessions::revoked_at, auth_sessions::expires_at))
                        .first(&mut conn)
                        .await
                        .optional()?;
                let active = matches!(row, Some((None, expires)) if expires > now());
                // a short TTL for "live" bounds how long a revocation whose Redis write failed
                // can go unseen once Redis is back
                let ttl: u64 = if active {
                    30
                } else {
                    self.keys.access_ttl_secs() + 60
                };
                let flag = if active { "1" } else { "0" };
                // NX: a revocation written meanwhile ("0") must win over this older read
                self.redis
                    .call("set", |mut c| async move {
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(flag)
                            .arg("EX")
                            .arg(ttl)
                            .arg("NX")
                            .query_async::<Option<String>>(&mut c)
                            .await
                    })
                    .await;
                active
            }
        };
        self.session_status
            .insert(session_id.to_owned(), active)
            .await;
        Ok(active)
    }
}

impl Identity {
    /// Verifies an access token and that its session is still live.
    pub async fn authenticate(&self, access_token: &str) -> Result<super::TokenSubject, AuthError> {
        let subject = self
            .keys
            .verify(access_token)
            .ok_or(AuthError::InvalidCredentials)?;
        if self.session_active(&subject.session_id).await? {
            Ok(subject)
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }
}
