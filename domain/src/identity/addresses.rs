//! The member address book: at most 20 addresses, one default, recipient phone encrypted.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::{Identity, mask_phone};
use crate::DomainResult;
use crate::schema::member_addresses;
use crate::validation::{UserError, UserErrorCode, is_mainland_mobile, text};

/// Most addresses one member may keep.
pub const MAX_ADDRESSES: i64 = 20;

/// An address as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = member_addresses, check_for_backend(diesel::mysql::Mysql))]
pub struct AddressRow {
    pub id: u64,
    pub member_id: u64,
    pub recipient: String,
    pub phone_enc: String,
    pub province: String,
    pub city: String,
    pub district: String,
    pub detail: String,
    pub postal_code: Option<String>,
    pub is_default: bool,
}

/// An address for its owner: the phone decrypted and masked.
#[derive(Debug, Clone)]
pub struct Address {
    pub id: u64,
    pub member_id: u64,
    pub recipient: String,
    /// `138****5678`
    pub phone_masked: String,
    pub province: String,
    pub city: String,
    pub district: String,
    pub detail: String,
    pub postal_code: Option<String>,
    pub is_default: bool,
}

/// What a member types in.
#[derive(Debug, Clone, Default)]
pub struct AddressInput {
    pub recipient: String,
    /// Mainland mobile number (11 digits).
    pub phone: String,
    pub province: String,
    pub city: String,
    pub district: String,
    pub detail: String,
    pub postal_code: Option<String>,
    pub is_default: bool,
}

struct Checked {
    recipient: String,
    phone: String,
    province: String,
    city: String,
    district: String,
    detail: String,
    postal_code: Option<String>,
}

fn check(input: &AddressInput) -> Result<Checked, Vec<UserError>> {
    let mut errors = Vec::new();
    let recipient = text("input.recipient", &input.recipient, 1, 32, &mut errors);
    let phone = input.phone.trim().to_owned();
    if !is_mainland_mobile(&phone) {
        errors.push(UserError::invalid(
            "input.phone",
            "must be an 11-digit mainland mobile number",
        ));
    }
    let province = text("input.province", &input.province, 1, 32, &mut errors);
    let city = text("input.city", &input.city, 1, 32, &mut errors);
    let district = text("input.district", &input.district, 1, 32, &mut errors);
    let detail = text("input.detail", &input.detail, 2, 120, &mut errors);
    let postal_code = input
        .postal_code
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    if let Some(code) = &postal_code
        && (code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()))
    {
        errors.push(UserError::invalid("input.postalCode", "must be 6 digits"));
    }
    if errors.is_empty() {
        Ok(Checked {
            recipient,
            phone,
            province,
            city,
            district,
            detail,
            postal_code,
        })
    } else {
        Err(errors)
    }
}

/// Locks one of the member's addresses; `Some(is_default)` when it exists.
async fn lock_address(
    conn: &mut diesel_async::AsyncMysqlConnection,
    member_id: u64,
    id: u64,
) -> diesel::QueryResult<Option<bool>> {
    member_addresses::table
        .filter(member_addresses::id.eq(id))
        .filter(member_addresses::member_id.eq(member_id))
        .select(member_addresses::is_default)
        .for_update()
        .first(conn)
        .await
        .optional()
}

fn phone_aad(member_id: u64) -> String {
    format!("member:{member_id}:address-phone")
}

fn not_found() -> Vec<UserError> {
    vec![UserError::not_found("id", "no such address")]
}

impl Identity {
    fn open(&self, row: AddressRow) -> Address {
        let phone = self
            .cipher
            .decrypt(&row.phone_enc, &phone_aad(row.member_id))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        Address {
            id: row.id,
            member_id: row.member_id,
            recipient: row.recipient,
            phone_masked: mask_phone(&phone),
            province: row.province,
            city: row.city,
            district: row.district,
            detail: row.detail,
            postal_code: row.postal_code,
            is_default: row.is_default,
        }
    }

    /// Addresses of each member, default first, then newest.
    pub async fn addresses(&self, member_ids: &[u64]) -> DomainResult<HashMap<u64, Vec<Address>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<AddressRow> = member_addresses::table
            .filter(member_addresses::member_id.eq_any(member_ids))
            .order((
                member_addresses::member_id,
                member_addresses::is_default.desc(),
                member_addresses::id.desc(),
            ))
            .select(AddressRow::as_select())
            .load(&mut conn)
            .await?;
        let mut out: HashMap<u64, Vec<Address>> =
            member_ids.iter().map(|&id| (id, Vec::new())).collect();
        for row in rows {
            out.entry(row.member_id).or_default().push(self.open(row));
        }
        Ok(out)
    }

    /// One address of the member, on a connection the caller already holds (taking a second
    /// one while holding the first could exhaust the pool under load).
    async fn address_on(
        &self,
        conn: &mut diesel_async::AsyncMysqlConnection,
        member_id: u64,
        id: u64,
    ) -> DomainResult<Option<Address>> {
        let row = member_addresses::table
            .filter(member_addresses::id.eq(id))
            .filter(member_addresses::member_id.eq(member_id))
            .select(AddressRow::as_select())
            .first(conn)
            .await
            .optional()?;
        Ok(row.map(|r| self.open(r)))
    }

    /// The validated input with the recipient phone encrypted for this member.
    fn checked_and_sealed(
        &self,
        member_id: u64,
        input: &AddressInput,
    ) -> Result<(Checked, String), Vec<UserError>> {
        let checked = check(input)?;
        let phone_enc = self
            .cipher
            .encrypt(checked.phone.as_bytes(), &phone_aad(member_id));
        Ok((checked, phone_enc))
    }

    /// Adds an address; the first one, or one marked default, becomes the default.
    pub async fn add_address(
        &self,
        member_id: u64,
        input: &AddressInput,
    ) -> DomainResult<Result<Address, Vec<UserError>>> {
        let (checked, phone_enc) = match self.checked_and_sealed(member_id, input) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let mut conn = self.db.conn().await?;
        let inserted = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                // lock the member (not the address range: gap locks on an empty range deadlock
                // concurrent inserts) so two concurrent adds cannot pass the limit together
                super::lock_member(conn, member_id).await?;
                let ids: Vec<u64> = member_addresses::table
                    .filter(member_addresses::member_id.eq(member_id))
                    .select(member_addresses::id)
                    .load(conn)
                    .await?;
                if i64::try_from(ids.len()).unwrap_or(i64::MAX) >= MAX_ADDRESSES {
                    return Ok(None);
                }
                let make_default = input.is_default || ids.is_empty();
                if make_default && !ids.is_empty() {
                    // by primary key: locks exactly these rows
                    diesel::update(
                        member_addresses::table.filter(member_addresses::id.eq_any(&ids)),
                    )
                    .set(member_addresses::is_default.eq(false))
                    .execute(conn)
                    .await?;
                }
                diesel::insert_into(member_addresses::table)
                    .values((
                        member_addresses::member_id.eq(member_id),
                        member_addresses::recipient.eq(&checked.recipient),
                        member_addresses::phone_enc.eq(&phone_enc),
                        member_addresses::province.eq(&checked.province),
                        member_addresses::city.eq(&checked.city),
                        member_addresses::district.eq(&checked.district),
                        member_addresses::detail.eq(&checked.detail),
                        member_addresses::postal_code.eq(&checked.postal_code),
                        member_addresses::is_default.eq(make_default),
                    ))
                    .execute(conn)
                    .await?;
                let id: u64 = diesel::select(diesel::dsl::sql::<
                    diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
                >("LAST_INSERT_ID()"))
                .get_result(conn)
                .await?;
                Ok(Some(id))
            })
            .await?;
        match inserted {
            None => Ok(Err(vec![UserError {
                code: UserErrorCode::LimitReached,
                field: None,
                message: format!("at most {MAX_ADDRESSES} addresses"),
            }])),
            Some(id) => Ok(self
                .address_on(&mut conn, member_id, id)
                .await?
                .ok_or_else(not_found)),
        }
    }

    /// Replaces an address's fields.
    pub async fn update_address(
        &self,
        member_id: u64,
        id: u64,
        input: &AddressInput,
    ) -> DomainResult<Result<Address, Vec<UserError>>> {
        let (checked, phone_enc) = match self.checked_and_sealed(member_id, input) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let mut conn = self.db.conn().await?;
        let changed = diesel::update(
            member_addresses::table
                .filter(member_addresses::id.eq(id))
                .filter(member_addresses::member_id.eq(member_id)),
        )
        .set((
            member_addresses::recipient.eq(&checked.recipient),
            member_addresses::phone_enc.eq(&phone_enc),
            member_addresses::province.eq(&checked.province),
            member_addresses::city.eq(&checked.city),
            member_addresses::district.eq(&checked.district),
            member_addresses::detail.eq(&checked.detail),
            member_addresses::postal_code.eq(&checked.postal_code),
        ))
        .execute(&mut conn)
        .await?;
        if changed == 0 {
            return Ok(Err(not_found()));
        }
        if input.is_default {
            drop(conn);
            return self.set_default_address(member_id, id).await;
        }
        Ok(self
            .address_on(&mut conn, member_id, id)
            .await?
            .ok_or_else(not_found))
    }

    /// Removes an address; when it was the default, the newest remaining one becomes default.
    pub async fn remove_address(
        &self,
        member_id: u64,
        id: u64,
    ) -> DomainResult<Result<u64, Vec<UserError>>> {
        let mut conn = self.db.conn().await?;
        let removed = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                super::lock_member(conn, member_id).await?;
                let Some(was_default) = lock_address(conn, member_id, id).await? else {
                    return Ok(false);
                };
                diesel::delete(member_addresses::table.find(id))
                    .execute(conn)
                    .await?;
                if was_default {
                    let next: Option<u64> = member_addresses::table
                        .filter(member_addresses::member_id.eq(member_id))
                        .order(member_addresses::id.desc())
                        .select(member_addresses::id)
                        .first(conn)
                        .await
                        .optional()?;
                    if let Some(next) = next {
                        diesel::update(member_addresses::table.find(next))
                            .set(member_addresses::is_default.eq(true))
                            .execute(conn)
                            .await?;
                    }
                }
                Ok(true)
            })
            .await?;
        Ok(if removed { Ok(id) } else { Err(not_found()) })
    }

    /// Makes an address the default (and no other).
    pub async fn set_default_address(
        &self,
        member_id: u64,
        id: u64,
    ) -> DomainResult<Result<Address, Vec<UserError>>> {
        let mut conn = self.db.conn().await?;
        let found = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                super::lock_member(conn, member_id).await?;
                if lock_address(conn, member_id, id).await?.is_none() {
                    return Ok(false);
                }
                diesel::update(
                    member_addresses::table.filter(member_addresses::member_id.eq(member_id)),
                )
                .set(member_addresses::is_default.eq(member_addresses::id.eq(id)))
                .execute(conn)
                .await?;
                Ok(true)
            })
            .await?;
        if !found {
            return Ok(Err(not_found()));
        }
        Ok(self
            .address_on(&mut conn, member_id, id)
            .await?
            .ok_or_else(not_found))
    }
}
