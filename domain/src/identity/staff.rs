//! Staff accounts: argon2id passwords, roles, and logins throttled per username and per IP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{AuthError, Identity, IssuedTokens, Principal, Role};
use crate::schema::staff_accounts;
use crate::{DomainError, DomainResult};

/// A staff account (without its password hash).
#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = staff_accounts, check_for_backend(diesel::mysql::Mysql))]
pub struct StaffAccount {
    pub id: u64,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub active: bool,
}

/// Shortest accepted staff password.
pub const MIN_PASSWORD_CHARS: usize = 12;

fn hash_password(password: &str) -> Result<String, DomainError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("hashing a password: {e}")))
}

/// A hash to verify against when the username does not exist, so both cases take as long.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches nothing").unwrap_or_default())
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Identity {
    /// Creates a staff account (from the `ruizhu staff create` command).
    pub async fn create_staff(
        &self,
        username: &str,
        password: &SecretString,
        role: Role,
        display_name: &str,
    ) -> anyhow::Result<u64> {
        anyhow::ensure!(
            role != Role::Customer,
            "staff accounts are ADVISOR, OPS or ADMIN"
        );
        anyhow::ensure!(
            (3..=64).contains(&username.len())
                && username
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "usernames are 3–64 characters of [A-Za-z0-9._-]"
        );
        anyhow::ensure!(
            password.expose_secret().chars().count() >= MIN_PASSWORD_CHARS,
            "passwords have at least {MIN_PASSWORD_CHARS} characters"
        );
        let pw = password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(pw.expose_secret())).await??;
        let mut conn = self.db.conn().await?;
        diesel::insert_into(staff_accounts::table)
            .values((
                staff_accounts::username.eq(username),
                staff_accounts::display_name.eq(display_name),
                staff_accounts::password_hash.eq(hash),
                staff_accounts::role.eq(role.as_str()),
            ))
            .execute(&mut conn)
            .await?;
        let id = staff_accounts::table
            .filter(staff_accounts::username.eq(username))
            .select(staff_accounts::id)
            .first(&mut conn)
            .await?;
        Ok(id)
    }

    /// Staff password login. After too many failures for the username or the client IP within
    /// the window, refuses further attempts (correct or not) with `TooManyAttempts`.
    pub async fn staff_login(
        &self,
        username: &str,
        password: &SecretString,
        client_ip: Option<IpAddr>,
    ) -> Result<(IssuedTokens, StaffAccount), AuthError> {
        let user_key = format!("user:{}", username.to_lowercase());
        let ip_key = client_ip.map(|ip| format!("ip:{ip}"));
        let (user_failures, user_reset) = self.failures.get(&user_key).await;
        if user_failures >= u64::from(self.settings.max_failed_logins_per_username) {
            return Err(AuthError::TooManyAttempts {
                retry_after_secs: user_reset.max(1),
            });
        }
        if let Some(ip_key) = &ip_key {
            let (ip_failures, ip_reset) = self.failures.get(ip_key).await;
            if ip_failures >= u64::from(self.settings.max_failed_logins_per_ip) {
                return Err(AuthError::TooManyAttempts {
                    retry_after_secs: ip_reset.max(1),
                });
            }
        }
        let row: Option<(StaffAccount, String)> = {
            // not held across the (deliberately slow) password check
            let mut conn = self.db.conn().await?;
            staff_accounts::table
                .filter(staff_accounts::username.eq(username))
                .select((StaffAccount::as_select(), staff_accounts::password_hash))
                .first(&mut conn)
                .await
                .optional()?
        };
        let (account, phc) = match row {
            Some((account, phc)) => (Some(account), phc),
            None => (None, decoy_hash().to_owned()),
        };
        let pw = password.clone();
        let matches =
            tokio::task::spawn_blocking(move || verify_password(pw.expose_secret(), &phc))
                .await
                .map_err(|e| DomainError::Internal(e.to_string()))?;
        let account = match account {
            Some(a) if matches && a.active => a,
            _ => {
                self.failures.hit(&user_key).await;
                if let Some(ip_key) = &ip_key {
                    self.failures.hit(ip_key).await;
                }
                metrics::counter!("ruizhu_security_events_total", "kind" => "staff_login_failed")
                    .increment(1);
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.failures.reset(&user_key).await;
        let role = Role::parse(&account.role).ok_or(AuthError::InvalidCredentials)?;
        let mut conn = self.db.conn().await?;
        let tokens = self
            .start_session(
                &mut conn,
                Principal::Staff {
                    id: account.id,
                    role,
                },
            )
            .await?;
        Ok((tokens, account))
    }

    /// Staff accounts by id.
    pub async fn staff(&self, ids: &[u64]) -> DomainResult<HashMap<u64, StaffAccount>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<StaffAccount> = staff_accounts::table
            .filter(staff_accounts::id.eq_any(ids))
            .select(StaffAccount::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|s| (s.id, s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("anything", "not a hash"));
    }
}
