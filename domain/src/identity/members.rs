//! Members: created or updated by WeChat login, their profile and their bound phone.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{AuthError, Identity, IssuedTokens, Principal, mask_phone};
use crate::DomainResult;
use crate::crypto::random_token;
use crate::schema::members;
use crate::validation::{UserError, text};
use crate::wechat::WechatSession;

/// A member as stored (personal data still encrypted).
#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = members, check_for_backend(diesel::mysql::Mysql))]
pub struct Member {
    pub id: u64,
    pub nickname: String,
    pub avatar_url: String,
    pub unionid: Option<String>,
    pub phone_enc: Option<String>,
    pub created_at: chrono::NaiveDateTime,
    pub tier_rank: i32,
    pub points_balance: i64,
    pub birthday: Option<chrono::NaiveDate>,
}

fn phone_aad(member_id: u64) -> String {
    format!("member:{member_id}:phone")
}

/// Blind-index domain of phone numbers.
const PHONE_INDEX: &str = "phone";

impl Identity {
    /// Logs a member in with a `wx.login` code: `code2Session`, then the member is created or
    /// updated and a session started. With development login on, `dev:<name>` skips WeChat.
    pub async fn login_with_wechat(&self, code: &str) -> Result<(IssuedTokens, Member), AuthError> {
        if code.is_empty() || code.len() > 128 || code.chars().any(char::is_control) {
            return Err(AuthError::InvalidWechatCode);
        }
        let session = match code.strip_prefix("dev:") {
            Some(name) if self.settings.dev_login => {
                if name.is_empty() || name.len() > 40 {
                    return Err(AuthError::InvalidWechatCode);
                }
                WechatSession {
                    openid: format!("dev-{name}"),
                    unionid: None,
                    session_key: SecretString::from(random_token()),
                }
            }
            _ => self.wechat.code2session(code).await?,
        };
        let app_id = self.wechat.app_id().to_owned();
        let session_key_enc = self.cipher.encrypt(
            session.session_key.expose_secret().as_bytes(),
            &format!("member-openid:{app_id}:{}:session_key", session.openid),
        );
        let now = chrono::Utc::now().naive_utc();
        let mut conn = self.db.conn().await?;
        diesel::insert_or_ignore_into(members::table)
            .values((
                members::app_id.eq(&app_id),
                members::openid.eq(&session.openid),
            ))
            .execute(&mut conn)
            .await?;
        let target = members::table
            .filter(members::app_id.eq(&app_id))
            .filter(members::openid.eq(&session.openid));
        match &session.unionid {
            // a unionid, once known, is kept: WeChat leaves it out when the app is not bound
            Some(unionid) => {
                diesel::update(target)
                    .set((
                        members::unionid.eq(unionid),
                        members::session_key_enc.eq(&session_key_enc),
                        members::last_login_at.eq(now),
                    ))
                    .execute(&mut conn)
                    .await?
            }
            None => {
                diesel::update(target)
                    .set((
                        members::session_key_enc.eq(&session_key_enc),
                        members::last_login_at.eq(now),
                    ))
                    .execute(&mut conn)
                    .await?
            }
        };
        let member: Member = target.select(Member::as_select()).first(&mut conn).await?;
        let tokens = self
            .start_session(&mut conn, Principal::Member { id: member.id })
            .await?;
        Ok((tokens, member))
    }

    /// Members by id.
    pub async fn members(&self, ids: &[u64]) -> DomainResult<HashMap<u64, Member>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<Member> = members::table
            .filter(members::id.eq_any(ids))
            .select(Member::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|m| (m.id, m)).collect())
    }

    /// Changes nickname and/or avatar, and sets the birthday (once: it brings a yearly
    /// birthday coupon, so changing it afterwards goes through customer service).
    pub async fn update_profile(
        &self,
        member_id: u64,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
        birthday: Option<chrono::NaiveDate>,
    ) -> DomainResult<Result<Member, Vec<UserError>>> {
        let mut errors = Vec::new();
        let nickname = nickname.map(|n| text("input.nickname", n, 1, 32, &mut errors));
        if let Some(url) = avatar_url
            && (!url.starts_with("https://")
                || url.len() > 512
                || url.chars().any(char::is_whitespace))
        {
            errors.push(UserError::invalid(
                "input.avatarUrl",
                "must be an https URL of at most 512 characters",
            ));
        }
        if let Some(day) = birthday {
            use chrono::Datelike as _;
            let today = chrono::Utc::now().date_naive();
            if day > today || day.year() < 1900 {
                errors.push(UserError::invalid(
                    "input.birthday",
                    "a date between 1900 and today",
                ));
            }
        }
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let mut conn = self.db.conn().await?;
        if let Some(day) = birthday {
            let set = diesel::update(
                members::table
                    .filter(members::id.eq(member_id))
                    .filter(members::birthday.is_null().or(members::birthday.eq(day))),
            )
            .set(members::birthday.eq(Some(day)))
            .execute(&mut conn)
            .await?;
            if set == 0 {
                return Ok(Err(vec![UserError::invalid(
                    "input.birthday",
                    "the birthday is already set; customer service can correct it",
                )]));
            }
        }
        if let Some(nickname) = nickname {
            diesel::update(members::table.find(member_id))
                .set(members::nickname.eq(nickname))
                .execute(&mut conn)
                .await?;
        }
        if let Some(url) = avatar_url {
            diesel::update(members::table.find(member_id))
                .set(members::avatar_url.eq(url))
                .execute(&mut conn)
                .await?;
        }
        Ok(Ok(members::table
            .find(member_id)
            .select(Member::as_select())
            .first(&mut conn)
            .await?))
    }

    /// Binds the phone number behind a phone-button code to the member (encrypted, with a blind
    /// index for lookups).
    pub async fn bind_phone(&self, member_id: u64, code: &str) -> Result<Member, AuthError> {
        if code.is_empty() || code.len() > 128 || code.chars().any(char::is_control) {
            return Err(AuthError::InvalidWechatCode);
        }
        let phone = self.wechat.phone_number(code).await?;
        let mut conn = self.db.conn().await?;
        diesel::update(members::table.find(member_id))
            .set((
                members::phone_enc.eq(self.cipher.encrypt(phone.as_bytes(), &phone_aad(member_id))),
                members::phone_bidx.eq(self.index.compute(PHONE_INDEX, &phone)),
            ))
            .execute(&mut conn)
            .await?;
        Ok(members::table
            .find(member_id)
            .select(Member::as_select())
            .first(&mut conn)
            .await?)
    }

    /// The member's phone number, decrypted (server-side use only).
    pub fn phone_of(&self, member: &Member) -> Option<String> {
        let envelope = member.phone_enc.as_deref()?;
        match self.cipher.decrypt(envelope, &phone_aad(member.id)) {
            Ok(bytes) => String::from_utf8(bytes).ok(),
            Err(e) => {
                tracing::error!(target: "ruizhu::security", member_id = member.id, error = %e, "phone does not decrypt");
                None
            }
        }
    }

    /// `138****5678`, or `None` when no phone is bound.
    pub fn phone_masked(&self, member: &Member) -> Option<String> {
        self.phone_of(member).map(|p| mask_phone(&p))
    }

    /// The member with this phone number, found through the blind index.
    pub async fn member_by_phone(&self, phone: &str) -> DomainResult<Option<Member>> {
        let mut conn = self.db.conn().await?;
        let candidates: Vec<Member> = members::table
            .filter(members::phone_bidx.eq(self.index.compute(PHONE_INDEX, phone)))
            .select(Member::as_select())
            .load(&mut conn)
            .await?;
        // the index could in principle collide: confirm on the decrypted value
        Ok(candidates
            .into_iter()
            .find(|m| self.phone_of(m).as_deref() == Some(phone)))
    }
}
