//! Access tokens: HS256 JWTs with `iss`, `aud`, `sub`, `exp`, `iat`, `jti` all required, the
//! algorithm pinned, and at most 30 s of clock leeway. The session id (`sid`) ties a token to
//! its login so logout and refresh-token reuse can revoke it before it expires.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Principal, Role};

/// `[jwt]` settings (`RUIZHU_JWT__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// HMAC key for HS256, at least 32 bytes. Production refuses the development default.
    pub secret: SecretString,
    /// A second key whose tokens are accepted but never issued (at least 32 bytes), for
    /// rotating `secret` without signing anyone out (docs/operations.md, "Key rotation").
    pub secondary_secret: Option<SecretString>,
    /// `iss` of issued tokens, and the only issuer accepted.
    pub issuer: String,
    /// `aud` of issued tokens, and the only audience accepted.
    pub audience: String,
    /// Access token lifetime in seconds (default 2 h).
    pub access_ttl_secs: u64,
    /// Refresh token (and session) lifetime in seconds (default 30 days).
    pub refresh_ttl_secs: u64,
    /// Clock skew tolerated on `exp`, in seconds (at most 30).
    pub leeway_secs: u64,
}

/// Development signing key, refused in production.
pub const DEV_JWT_SECRET: &str = "development-only-jwt-secret-change-me-0123456789";

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            secret: SecretString::from(DEV_JWT_SECRET),
            secondary_secret: None,
            issuer: "ruizhu".to_owned(),
            audience: "ruizhu-api".to_owned(),
            access_ttl_secs: 2 * 3600,
            refresh_ttl_secs: 30 * 24 * 3600,
            leeway_secs: 30,
        }
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// `member:<id>` or `staff:<id>`
    sub: String,
    exp: u64,
    iat: u64,
    jti: String,
    /// session id
    sid: String,
    /// CUSTOMER | ADVISOR | OPS | ADMIN
    role: String,
}

/// What a valid access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    /// Who.
    pub principal: Principal,
    /// Which login.
    pub session_id: String,
    /// When the token expires (seconds since the epoch).
    pub expires_at: u64,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    /// `secret`, then `secondary_secret`.
    decoding: Vec<DecodingKey>,
    validation: Validation,
    settings: JwtSettings,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.settings.issuer)
            .finish()
    }
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

impl TokenKeys {
    /// Keys from settings; refuses short secrets and more than 30 s of leeway.
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Self> {
        let secret = settings.secret.expose_secret().as_bytes();
        anyhow::ensure!(secret.len() >= 32, "jwt.secret must be at least 32 bytes");
        let mut decoding = vec![DecodingKey::from_secret(secret)];
        if let Some(secondary) = &settings.secondary_secret {
            let secondary = secondary.expose_secret().as_bytes();
            anyhow::ensure!(
                secondary.len() >= 32,
                "jwt.secondary_secret must be at least 32 bytes"
            );
            decoding.push(DecodingKey::from_secret(secondary));
        }
        anyhow::ensure!(
            settings.leeway_secs <= 30,
            "jwt.leeway_secs must be at most 30"
        );
        anyhow::ensure!(
            settings.access_ttl_secs >= 60,
            "jwt.access_ttl_secs must be at least 60"
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = settings.leeway_secs;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding,
            validation,
            settings: settings.clone(),
        })
    }

    /// Access token lifetime in seconds.
    pub fn access_ttl_secs(&self) -> u64 {
        self.settings.access_ttl_secs
    }

    /// Refresh token lifetime in seconds.
    pub fn refresh_ttl_secs(&self) -> u64 {
        self.settings.refresh_ttl_secs
    }

    /// A new access token for `principal` in session `session_id`.
    pub fn issue(&self, principal: Principal, session_id: &str) -> String {
        let iat = now();
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: principal.subject(),
            exp: iat + self.settings.access_ttl_secs,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session_id.to_owned(),
            role: principal.role().as_str().to_owned(),
        };
        // HS256 over a serialisable struct cannot fail
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// Verifies signature (by either key), algorithm, issuer, audience and expiry; `None` for
    /// anything else.
    pub fn verify(&self, token: &str) -> Option<TokenSubject> {
        let data = self
            .decoding
            .iter()
            .find_map(|key| jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok())?;
        let claims = data.claims;
        if claims.jti.is_empty() || claims.iat > now() + self.settings.leeway_secs {
            return None;
        }
        let principal = Principal::from_subject(&claims.sub, &claims.role)?;
        Some(TokenSubject {
            principal,
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }
}

impl Principal {
    fn subject(&self) -> String {
        match self {
            Principal::Member { id } => format!("member:{id}"),
            Principal::Staff { id, .. } => format!("staff:{id}"),
        }
    }

    fn from_subject(sub: &str, role: &str) -> Option<Self> {
        let (kind, id) = sub.split_once(':')?;
        let id = id.parse().ok()?;
        let role = Role::parse(role)?;
        match (kind, role) {
            ("member", Role::Customer) => Some(Principal::Member { id }),
            ("staff", Role::Advisor | Role::Ops | Role::Admin) => {
                Some(Principal::Staff { id, role })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_round_trip() {
        let keys = TokenKeys::new(&JwtSettings::default()).unwrap();
        let token = keys.issue(
            Principal::Staff {
                id: 7,
                role: Role::Ops,
            },
            "sid-1",
        );
        let subject = keys.verify(&token).unwrap();
        assert_eq!(
            subject.principal,
            Principal::Staff {
                id: 7,
                role: Role::Ops
            }
        );
        assert_eq!(subject.session_id, "sid-1");
        assert!(keys.verify(&format!("{token}x")).is_none());
    }

    #[test]
    fn a_secondary_key_is_accepted_but_never_issued() {
        let old = JwtSettings {
            secret: SecretString::from("old-key-old-key-old-key-old-key-old-key"),
            ..JwtSettings::default()
        };
        let new = JwtSettings {
            secret: SecretString::from("new-key-new-key-new-key-new-key-new-key"),
            ..JwtSettings::default()
        };
        let staff = Principal::Staff {
            id: 7,
            role: Role::Ops,
        };
        let by_old = TokenKeys::new(&old).unwrap().issue(staff, "sid");
        let by_new = TokenKeys::new(&new).unwrap().issue(staff, "sid");
        // phase 1: issue with the old key, accept the new one too
        let phase1 = TokenKeys::new(&JwtSettings {
            secondary_secret: Some(new.secret.clone()),
            ..old.clone()
        })
        .unwrap();
        assert!(phase1.verify(&by_old).is_some() && phase1.verify(&by_new).is_some());
        // phase 2: issue with the new key, still accept the old one
        let phase2 = TokenKeys::new(&JwtSettings {
            secondary_secret: Some(old.secret.clone()),
            ..new.clone()
        })
        .unwrap();
        assert!(phase2.verify(&by_old).is_some());
        assert!(
            TokenKeys::new(&new)
                .unwrap()
                .verify(&phase2.issue(staff, "s"))
                .is_some()
        );
        // phase 3: the old key alone is refused
        assert!(TokenKeys::new(&new).unwrap().verify(&by_old).is_none());
        let short = JwtSettings {
            secondary_secret: Some(SecretString::from("short")),
            ..JwtSettings::default()
        };
        assert!(TokenKeys::new(&short).is_err());
    }

    #[test]
    fn settings_are_checked() {
        let short = JwtSettings {
            secret: SecretString::from("short"),
            ..JwtSettings::default()
        };
        assert!(TokenKeys::new(&short).is_err());
        let lax = JwtSettings {
            leeway_secs: 31,
            ..JwtSettings::default()
        };
        assert!(TokenKeys::new(&lax).is_err());
    }
}
