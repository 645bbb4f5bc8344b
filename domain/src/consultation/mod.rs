//! VIP consultations (定制咨询): eligible members (tier benefit) request one; operations assign
//! an advisor (staff with role ADVISOR, of a boutique); the appointment books one of the
//! advisor's slots atomically; member and advisor write in a thread (advisors also leave
//! internal notes the member never sees) with read receipts; the advisor records an outcome and
//! the member rates it once. Every change writes a timeline entry and an event in one
//! transaction.
//!
//! Who may do what is decided here ([`Viewer`]), not in the GraphQL layer: the owner member,
//! the assigned advisor (and, read-only, advisors of the member's other consultations — their
//! own clients' history), and operations.

pub mod booking;
pub mod messages;
pub mod state;

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncMysqlConnection, RunQueryDsl};
use serde::Deserialize;

use crate::DomainResult;
use crate::db::Db;
use crate::schema::{boutiques, consultation_events, consultations, members, staff_accounts};
use crate::validation::UserError;

pub use state::{Action, Status};

/// `[consultations]` settings (`RUIZHU_CONSULTATIONS__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsultationSettings {
    /// How often the reminder worker looks for appointments, in milliseconds.
    pub reminder_interval_ms: u64,
}

impl Default for ConsultationSettings {
    fn default() -> Self {
        Self {
            reminder_interval_ms: 60_000,
        }
    }
}

/// What a consultation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A made-to-order piece.
    Bespoke,
    /// Styling advice.
    Styling,
    /// Choosing a gift.
    Gifting,
    /// Care and repair of a piece.
    AfterCare,
    /// Anything else.
    Other,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 5] = [
        Topic::Bespoke,
        Topic::Styling,
        Topic::Gifting,
        Topic::AfterCare,
        Topic::Other,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Bespoke => "BESPOKE",
            Topic::Styling => "STYLING",
            Topic::Gifting => "GIFTING",
            Topic::AfterCare => "AFTER_CARE",
            Topic::Other => "OTHER",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A consultation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = consultations, check_for_backend(diesel::mysql::Mysql))]
pub struct ConsultationRow {
    pub id: u64,
    pub member_id: u64,
    pub topic: String,
    pub message: String,
    pub preferred_slots: String,
    pub product_ids: String,
    pub image_urls: String,
    pub boutique_id: Option<u64>,
    pub advisor_id: Option<u64>,
    pub status: String,
    pub slot_id: Option<u64>,
    pub scheduled_at: Option<chrono::NaiveDateTime>,
    pub outcome_notes: Option<String>,
    pub recommended_ids: Option<String>,
    pub draft_lines: Option<String>,
    pub rating: Option<i8>,
    pub rating_comment: Option<String>,
    pub created_at: chrono::NaiveDateTime,
}

impl ConsultationRow {
    /// The status, parsed.
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Requested)
    }

    /// Preferred start times the member gave.
    pub fn preferred(&self) -> Vec<chrono::DateTime<chrono::Utc>> {
        serde_json::from_str(&self.preferred_slots).unwrap_or_default()
    }

    /// Products of interest.
    pub fn products(&self) -> Vec<u64> {
        serde_json::from_str(&self.product_ids).unwrap_or_default()
    }

    /// Images the member attached.
    pub fn images(&self) -> Vec<String> {
        serde_json::from_str(&self.image_urls).unwrap_or_default()
    }

    /// Products the advisor recommended.
    pub fn recommended(&self) -> Vec<u64> {
        self.recommended_ids
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// Draft order lines (SKU, units) the advisor prepared.
    pub fn draft(&self) -> Vec<(u64, i32)> {
        self.draft_lines
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }
}

/// One entry of a consultation's timeline.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consultation_events, check_for_backend(diesel::mysql::Mysql))]
pub struct ConsultationEventRow {
    pub id: u64,
    pub consultation_id: u64,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor_kind: String,
    pub actor_id: Option<u64>,
    pub note: Option<String>,
    pub created_at: chrono::NaiveDateTime,
}

/// A boutique.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = boutiques, check_for_backend(diesel::mysql::Mysql))]
pub struct Boutique {
    pub id: u64,
    pub code: String,
    pub name_zh: String,
    pub name_en: String,
    pub city: String,
}

/// Who is acting on or reading a consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// A member.
    Member(u64),
    /// A staff account with role ADVISOR.
    Advisor(u64),
    /// Operations or administrators.
    Ops(u64),
}

impl Viewer {
    fn actor(self) -> (&'static str, Option<u64>) {
        match self {
            Viewer::Member(id) => ("member", Some(id)),
            Viewer::Advisor(id) | Viewer::Ops(id) => ("staff", Some(id)),
        }
    }
}

/// What a viewer may do with one consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// See it (and its non-internal messages).
    pub read: bool,
    /// Write messages and book or cancel its appointment.
    pub act: bool,
    /// See and write internal notes.
    pub internal: bool,
}

/// Why a consultation change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsultationError {
    /// No such consultation, or not the viewer's to see.
    NotFound,
    /// The viewer may see it but not do this.
    NotAllowed,
    /// The status machine does not allow it.
    Invalid {
        /// Status it was in.
        from: Status,
        /// What was attempted.
        action: Action,
    },
    /// The member's tier does not include consultations; the lowest one that does.
    TierRequired {
        /// Its code.
        code: String,
        /// Its name.
        name: String,
    },
    /// Bad input.
    Input(Vec<UserError>),
    /// The slot is booked already.
    SlotTaken,
    /// No such open slot of the assigned advisor in the future.
    SlotNotFound,
    /// No such active advisor (or not of the requested boutique).
    AdvisorNotFound,
    /// Rated already.
    AlreadyRated,
}

/// Most preferred times, products and images on a request.
pub const MAX_LIST: usize = 10;
/// Longest request message, note or message body (characters).
pub const MAX_BODY_CHARS: usize = 2_000;

/// A consultation request.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// About what.
    pub topic: Topic,
    /// What the member writes (1–2000 characters).
    pub message: String,
    /// Preferred start times (at most 10, in the future).
    pub preferred_slots: Vec<chrono::DateTime<chrono::Utc>>,
    /// Products of interest (at most 10).
    pub product_ids: Vec<u64>,
    /// Images (https, at most 10).
    pub image_urls: Vec<String>,
    /// Preferred boutique.
    pub boutique_id: Option<u64>,
}

pub(crate) fn valid_images(urls: &[String], field: &str, errors: &mut Vec<UserError>) {
    if urls.len() > MAX_LIST {
        errors.push(UserError::invalid(field, "at most 10 images"));
    }
    if urls.iter().any(|u| {
        !u.starts_with("https://")
            || u.len() > 512
            || u.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        errors.push(UserError::invalid(
            field,
            "https URLs of at most 512 characters",
        ));
    }
}

pub(crate) fn valid_body(body: &str, field: &str, errors: &mut Vec<UserError>) {
    let n = body.chars().count();
    if body.trim().is_empty() || n > MAX_BODY_CHARS {
        errors.push(UserError::invalid(field, "1–2000 characters"));
    }
    if body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        errors.push(UserError::invalid(field, "no control characters"));
    }
}

/// Consultations over one database.
#[derive(Debug, Clone)]
pub struct Consultations {
    pub(crate) db: Db,
    pub(crate) settings: ConsultationSettings,
}

/// Filter of the operations queue.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    /// Only these statuses.
    pub statuses: Vec<Status>,
    /// Only those assigned to this advisor.
    pub advisor_id: Option<u64>,
    /// Only those for this boutique.
    pub boutique_id: Option<u64>,
    /// Only this member's.
    pub member_id: Option<u64>,
}

impl Consultations {
    /// The service.
    pub fn new(db: Db, settings: ConsultationSettings) -> Self {
        Self { db, settings }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ConsultationSettings {
        &self.settings
    }

    /// What `viewer` may do with `c`.
    pub(crate) async fn access(
        conn: &mut AsyncMysqlConnection,
        c: &ConsultationRow,
        viewer: Viewer,
    ) -> QueryResult<Access> {
        Ok(match viewer {
            Viewer::Member(id) if id == c.member_id => Access {
                read: true,
                act: true,
                internal: false,
            },
            Viewer::Member(_) => Access::default(),
            Viewer::Advisor(id) if c.advisor_id == Some(id) => Access {
                read: true,
                act: true,
                internal: true,
            },
            Viewer::Advisor(id) => {
                // their own client's past consultations (finished ones): readable, for the
                // history — not the other advisors' internal notes, and nothing to act on
                let finished = matches!(c.status(), Status::Completed | Status::Cancelled);
                let client = finished
                    && diesel::select(diesel::dsl::exists(
                        consultations::table
                            .filter(consultations::member_id.eq(c.member_id))
                            .filter(consultations::advisor_id.eq(id)),
                    ))
                    .get_result::<bool>(conn)
                    .await?;
                Access {
                    read: client,
                    act: false,
                    internal: false,
                }
            }
            Viewer::Ops(_) => Access {
                read: true,
                act: true,
                internal: true,
            },
        })
    }

    /// A member asks for a consultation (if their tier includes it).
    pub async fn request(
        &self,
        member_id: u64,
        req: &NewRequest,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        let mut errors = Vec::new();
        valid_body(&req.message, "input.message", &mut errors);
        if req.preferred_slots.len() > MAX_LIST {
            errors.push(UserError::invalid("input.preferredSlots", "at most 10"));
        }
        let now = chrono::Utc::now();
        if req
            .preferred_slots
            .iter()
            .any(|t| *t <= now || *t > now + chrono::TimeDelta::days(365))
        {
            errors.push(UserError::invalid(
                "input.preferredSlots",
                "times in the coming year",
            ));
        }
        if req.product_ids.len() > MAX_LIST {
            errors.push(UserError::invalid("input.productIds", "at most 10"));
        }
        valid_images(&req.image_urls, "input.imageUrls", &mut errors);
        if !errors.is_empty() {
            return Ok(Err(ConsultationError::Input(errors)));
        }
        let mut conn = self.db.conn().await?;
        let rank: Option<i32> = members::table
            .find(member_id)
            .select(members::tier_rank)
            .first(&mut conn)
            .await
            .optional()?;
        let tiers = crate::membership::tiers::load_tiers(&mut conn).await?;
        let eligible = rank
            .and_then(|r| crate::membership::tier_at(&tiers, r))
            .is_some_and(|t| t.vip_consultation);
        if !eligible {
            let needed = tiers.iter().find(|t| t.vip_consultation);
            return Ok(Err(ConsultationError::TierRequired {
                code: needed.map(|t| t.code.clone()).unwrap_or_default(),
                name: needed.map(|t| t.name_zh.clone()).unwrap_or_default(),
            }));
        }
        if let Some(b) = req.boutique_id {
            let exists: i64 = boutiques::table
                .find(b)
                .count()
                .get_result(&mut conn)
                .await?;
            if exists == 0 {
                return Ok(Err(ConsultationError::Input(vec![UserError::not_found(
                    "input.boutiqueId",
                    "no such boutique",
                )])));
            }
        }
        let json = |v: serde_json::Value| v.to_string();
        let row = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::insert_into(consultations::table)
                    .values((
                        consultations::member_id.eq(member_id),
                        consultations::topic.eq(req.topic.as_str()),
                        consultations::message.eq(&req.message),
                        consultations::preferred_slots.eq(json(serde_json::json!(
                            req.preferred_slots
                                .iter()
                                .map(|t| t.to_rfc3339())
                                .collect::<Vec<_>>()
                        ))),
                        consultations::product_ids.eq(json(serde_json::json!(req.product_ids))),
                        consultations::image_urls.eq(json(serde_json::json!(req.image_urls))),
                        consultations::boutique_id.eq(req.boutique_id),
                        consultations::status.eq(Status::Requested.as_str()),
                    ))
                    .execute(conn)
                    .await?;
                let id: u64 = diesel::select(diesel::dsl::sql::<
                    diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
                >("LAST_INSERT_ID()"))
                .get_result(conn)
                .await?;
                let row = load(conn, id).await?;
                state::record(
                    conn,
                    &row,
                    None,
                    Status::Requested,
                    Viewer::Member(member_id),
                    None,
                    "consultation.requested",
                )
                .await?;
                Ok(row)
            })
            .await?;
        metrics::counter!("ruizhu_consultations_total", "event" => "requested").increment(1);
        Ok(Ok(row))
    }

    /// One consultation, if `viewer` may see it.
    pub async fn get(
        &self,
        id: u64,
        viewer: Viewer,
    ) -> DomainResult<Option<(ConsultationRow, Access)>> {
        let mut conn = self.db.conn().await?;
        let Some(row) = load(&mut conn, id).await.optional()? else {
            return Ok(None);
        };
        let access = Self::access(&mut conn, &row, viewer).await?;
        Ok(access.read.then_some((row, access)))
    }

    /// Consultations by id (no access check: for nodes reached through one already checked).
    pub async fn by_ids(&self, ids: &[u64]) -> DomainResult<HashMap<u64, ConsultationRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<ConsultationRow> = consultations::table
            .filter(consultations::id.eq_any(ids))
            .select(ConsultationRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|r| (r.id, r)).collect())
    }

    /// A page of consultations, newest first, after id `before`: `viewer` sees their own
    /// (member), those assigned to them (advisor) or all (operations), narrowed by `filter`.
    pub async fn list(
        &self,
        viewer: Viewer,
        filter: &QueueFilter,
        before: Option<u64>,
        limit: i64,
    ) -> DomainResult<Vec<ConsultationRow>> {
        let mut conn = self.db.conn().await?;
        let mut q = consultations::table.into_boxed();
        match viewer {
            Viewer::Member(id) => q = q.filter(consultations::member_id.eq(id)),
            Viewer::Advisor(id) => q = q.filter(consultations::advisor_id.eq(id)),
            Viewer::Ops(_) => {}
        }
        if !filter.statuses.is_empty() {
            let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            q = q.filter(consultations::status.eq_any(names));
        }
        if let Some(a) = filter.advisor_id {
            q = q.filter(consultations::advisor_id.eq(a));
        }
        if let Some(b) = filter.boutique_id {
            q = q.filter(consultations::boutique_id.eq(b));
        }
        if let Some(m) = filter.member_id {
            q = q.filter(consultations::member_id.eq(m));
        }
        if let Some(before) = before {
            q = q.filter(consultations::id.lt(before));
        }
        Ok(q.order(consultations::id.desc())
            .limit(limit)
            .select(ConsultationRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Timelines of consultations, oldest entry first.
    pub async fn timelines(
        &self,
        ids: &[u64],
    ) -> DomainResult<HashMap<u64, Vec<ConsultationEventRow>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<ConsultationEventRow> = consultation_events::table
            .filter(consultation_events::consultation_id.eq_any(ids))
            .order(consultation_events::id)
            .select(ConsultationEventRow::as_select())
            .load(&mut conn)
            .await?;
        let mut out: HashMap<u64, Vec<ConsultationEventRow>> = HashMap::new();
        for r in rows {
            out.entry(r.consultation_id).or_default().push(r);
        }
        Ok(out)
    }

    /// Every boutique.
    pub async fn boutiques(&self) -> DomainResult<Vec<Boutique>> {
        let mut conn = self.db.conn().await?;
        Ok(boutiques::table
            .order(boutiques::id)
            .select(Boutique::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Creates a boutique (administrators).
    pub async fn create_boutique(
        &self,
        code: &str,
        name_zh: &str,
        name_en: &str,
        city: &str,
    ) -> DomainResult<Result<Boutique, Vec<UserError>>> {
        let mut errors = Vec::new();
        if !(2..=32).contains(&code.len())
            || !code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            errors.push(UserError::invalid("code", "2–32 of A–Z, 0–9, _ and -"));
        }
        for (field, v) in [("name", name_zh), ("nameEn", name_en), ("city", city)] {
            if v.trim().is_empty() || v.chars().count() > 32 {
                errors.push(UserError::invalid(field, "1–32 characters"));
            }
        }
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let mut conn = self.db.conn().await?;
        let inserted = diesel::insert_into(boutiques::table)
            .values((
                boutiques::code.eq(code),
                boutiques::name_zh.eq(name_zh.trim()),
                boutiques::name_en.eq(name_en.trim()),
                boutiques::city.eq(city.trim()),
            ))
            .execute(&mut conn)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if crate::order::is_duplicate_key(&e) => {
                return Ok(Err(vec![UserError::invalid("code", "already taken")]));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Ok(boutiques::table
            .filter(boutiques::code.eq(code))
            .select(Boutique::as_select())
            .first(&mut conn)
            .await?))
    }

    /// Puts an advisor in a boutique (administrators). False when the account is not an
    /// advisor or the boutique does not exist.
    pub async fn set_advisor_boutique(
        &self,
        staff_id: u64,
        boutique_id: u64,
    ) -> DomainResult<bool> {
        let mut conn = self.db.conn().await?;
        let exists: i64 = boutiques::table
            .find(boutique_id)
            .count()
            .get_result(&mut conn)
            .await?;
        if exists == 0 {
            return Ok(false);
        }
        Ok(diesel::update(
            staff_accounts::table
                .filter(staff_accounts::id.eq(staff_id))
                .filter(staff_accounts::role.eq("ADVISOR")),
        )
        .set(staff_accounts::boutique_id.eq(Some(boutique_id)))
        .execute(&mut conn)
        .await?
            == 1)
    }

    /// The boutique of each advisor.
    pub async fn advisor_boutiques(&self, staff_ids: &[u64]) -> DomainResult<HashMap<u64, u64>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<(u64, Option<u64>)> = staff_accounts::table
            .filter(staff_accounts::id.eq_any(staff_ids))
            .select((staff_accounts::id, staff_accounts::boutique_id))
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, b)| b.map(|b| (id, b)))
            .collect())
    }
}

/// Loads one consultation.
pub(crate) async fn load(conn: &mut AsyncMysqlConnection, id: u64) -> QueryResult<ConsultationRow> {
    consultations::table
        .find(id)
        .select(ConsultationRow::as_select())
        .first(conn)
        .await
}

/// Loads and locks one consultation.
pub(crate) async fn lock(
    conn: &mut AsyncMysqlConnection,
    id: u64,
) -> QueryResult<Option<ConsultationRow>> {
    consultations::table
        .find(id)
        .select(ConsultationRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}
