//! Identity context: who is calling. WeChat login for members, password login for staff,
//! sessions with access JWTs and rotating refresh tokens, the member profile, phone binding
//! and the address book.

pub mod addresses;
pub mod members;
pub mod sessions;
pub mod staff;
pub mod tokens;

use serde::Deserialize;

use crate::DomainError;
use crate::crypto::{BlindIndex, FieldCipher};
use crate::db::Db;
use crate::redis::{Redis, WindowCounter};
use crate::wechat::{WechatClient, WechatError};

pub use tokens::{JwtSettings, TokenKeys, TokenSubject};

/// Roles. Members are `Customer`; staff accounts are one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shopper signed in through WeChat.
    Customer,
    /// A boutique advisor (VIP consultations).
    Advisor,
    /// Operations: catalog, stock, orders, refunds.
    Ops,
    /// Everything, including staff management.
    Admin,
}

impl Role {
    /// Stable name, as stored and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "CUSTOMER",
            Role::Advisor => "ADVISOR",
            Role::Ops => "OPS",
            Role::Admin => "ADMIN",
        }
    }

    /// The role with this stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CUSTOMER" => Some(Role::Customer),
            "ADVISOR" => Some(Role::Advisor),
            "OPS" => Some(Role::Ops),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A member (customer).
    Member {
        /// Member id.
        id: u64,
    },
    /// A staff account.
    Staff {
        /// Staff account id.
        id: u64,
        /// Its role.
        role: Role,
    },
}

impl Principal {
    /// The caller's role.
    pub fn role(&self) -> Role {
        match self {
            Principal::Member { .. } => Role::Customer,
            Principal::Staff { role, .. } => *role,
        }
    }
}

/// `[auth]` settings (`RUIZHU_AUTH__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Accept `loginWithWeChat(code: "dev:<name>")` without calling WeChat. Development only:
    /// refused at start-up in production.
    pub dev_login: bool,
    /// Failed staff logins per username within the window before further attempts are refused.
    pub max_failed_logins_per_username: u32,
    /// Failed staff logins per client IP within the window before further attempts are refused.
    pub max_failed_logins_per_ip: u32,
    /// Window of the failed-login counters, in seconds.
    pub failed_login_window_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            dev_login: false,
            max_failed_logins_per_username: 5,
            max_failed_logins_per_ip: 20,
            failed_login_window_secs: 900,
        }
    }
}

/// Why an identity operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong, expired, revoked or reused credentials.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The WeChat login code is invalid, expired or already used.
    #[error("invalid WeChat code")]
    InvalidWechatCode,
    /// WeChat refuses the user (high risk).
    #[error("blocked by WeChat")]
    WechatBlocked,
    /// Too many attempts; retry after this many seconds.
    #[error("too many attempts")]
    TooManyAttempts {
        /// Seconds until the next attempt may succeed.
        retry_after_secs: u64,
    },
    /// WeChat (or another dependency) is briefly unavailable.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Infrastructure failure.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<diesel::result::Error> for AuthError {
    fn from(e: diesel::result::Error) -> Self {
        AuthError::Domain(DomainError::from(e))
    }
}

impl From<WechatError> for AuthError {
    fn from(e: WechatError) -> Self {
        match e {
            WechatError::InvalidCode => AuthError::InvalidWechatCode,
            WechatError::RateLimited => AuthError::TooManyAttempts {
                retry_after_secs: 60,
            },
            WechatError::Blocked => AuthError::WechatBlocked,
            WechatError::Unavailable(reason) => AuthError::Unavailable(reason),
            WechatError::Other(code) => AuthError::Unavailable(format!("WeChat error {code}")),
        }
    }
}

/// Tokens handed to a client after a login or a refresh.
#[derive(Clone)]
pub struct IssuedTokens {
    /// The JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// The opaque token for `refreshSession` (single use).
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Who the tokens are for.
    pub principal: Principal,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// The identity service: everything above, over one database and Redis.
#[derive(Clone, Debug)]
pub struct Identity {
    pub(crate) db: Db,
    pub(crate) redis: Redis,
    pub(crate) keys: TokenKeys,
    pub(crate) cipher: FieldCipher,
    pub(crate) index: BlindIndex,
    pub(crate) wechat: WechatClient,
    pub(crate) settings: AuthSettings,
    pub(crate) session_status: moka::future::Cache<String, bool>,
    pub(crate) failures: WindowCounter,
}

impl Identity {
    /// Builds the service.
    pub fn new(
        db: Db,
        redis: Redis,
        keys: TokenKeys,
        cipher: FieldCipher,
        index: BlindIndex,
        wechat: WechatClient,
        settings: AuthSettings,
    ) -> Self {
        let window = std::time::Duration::from_secs(settings.failed_login_window_secs);
        Self {
            db,
            failures: WindowCounter::new(redis.clone(), "auth:failed-logins", window),
            redis,
            keys,
            cipher,
            index,
            wechat,
            settings,
            // every replica sees a revocation within this TTL
            session_status: moka::future::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(std::time::Duration::from_secs(1))
                .build(),
        }
    }

    /// The token keys (to verify access tokens).
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The field cipher (personal data).
    pub fn cipher(&self) -> &FieldCipher {
        &self.cipher
    }

    /// The blind index.
    pub fn blind_index(&self) -> &BlindIndex {
        &self.index
    }
}

/// Locks a member's row for the rest of the transaction: serialises that member's changes
/// (address book, cart, purchase limits) without gap locks on the child tables.
pub async fn lock_member(
    conn: &mut diesel_async::AsyncMysqlConnection,
    member_id: u64,
) -> diesel::QueryResult<()> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    crate::schema::members::table
        .find(member_id)
        .select(crate::schema::members::id)
        .for_update()
        .first::<u64>(conn)
        .await
        .map(|_| ())
}

/// `138****5678` for a mainland number; other numbers keep their first 3 and last 2 digits.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        11 => format!(
            "{}****{}",
            digits[..3].iter().collect::<String>(),
            digits[7..].iter().collect::<String>()
        ),
        n if n > 5 => format!(
            "{}****{}",
            digits[..3].iter().collect::<String>(),
            digits[n - 2..].iter().collect::<String>()
        ),
        _ => "****".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+44 20 7946 09"), "442****09");
        assert_eq!(mask_phone("123"), "****");
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Customer, Role::Advisor, Role::Ops, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("ROOT"), None);
    }
}
