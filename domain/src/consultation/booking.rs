//! Advisors, slots and appointments: assignment, booking a slot (one consultation per slot and
//! one slot per consultation, both unique in MySQL; the booking itself is a conditional update of
//! a free slot, so concurrent bookings of one slot have exactly one winner), rescheduling and
//! cancelling (which free the slot in the same transaction), the outcome and the rating, and the
//! reminders before an appointment.

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncMysqlConnection, RunQueryDsl};

use super::state::{self, Action, Status};
use super::{ConsultationError, ConsultationRow, Consultations, Viewer, lock};
use crate::DomainResult;
use crate::schema::{advisor_slots, consultations, staff_accounts};
use crate::validation::UserError;

/// An advisor's bookable time.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = advisor_slots, check_for_backend(diesel::mysql::Mysql))]
pub struct SlotRow {
    pub id: u64,
    pub advisor_id: u64,
    pub starts_at: chrono::NaiveDateTime,
    pub ends_at: chrono::NaiveDateTime,
    pub consultation_id: Option<u64>,
}

/// What an advisor records after the appointment.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Notes for the member (1–2000 characters).
    pub notes: String,
    /// Recommended products (at most 10).
    pub recommended_product_ids: Vec<u64>,
    /// Draft order lines (SKU, units 1–99; at most 20) the member can put in their cart.
    pub draft_lines: Vec<(u64, i32)>,
}

enum TxError {
    Refused(ConsultationError),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

type TxResult<T> = Result<T, TxError>;

fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Locks the consultation, checks the viewer may act on it and that `action` is allowed;
/// returns it and the status it moves to.
async fn begin(
    conn: &mut AsyncMysqlConnection,
    id: u64,
    viewer: Viewer,
    action: Action,
) -> TxResult<(ConsultationRow, Status)> {
    let Some(row) = lock(conn, id).await? else {
        return Err(TxError::Refused(ConsultationError::NotFound));
    };
    let access = Consultations::access(conn, &row, viewer).await?;
    if !access.read {
        return Err(TxError::Refused(ConsultationError::NotFound));
    }
    if !access.act {
        return Err(TxError::Refused(ConsultationError::NotAllowed));
    }
    let from = row.status();
    let to = from
        .apply(action)
        .ok_or(TxError::Refused(ConsultationError::Invalid {
            from,
            action,
        }))?;
    Ok((row, to))
}

/// Books `slot_id` (of the consultation's advisor, in the future, free) for `c`.
async fn book(
    conn: &mut AsyncMysqlConnection,
    c: &ConsultationRow,
    slot_id: u64,
) -> TxResult<SlotRow> {
    let Some(advisor) = c.advisor_id else {
        return Err(TxError::Refused(ConsultationError::SlotNotFound));
    };
    let taken = diesel::update(
        advisor_slots::table
            .filter(advisor_slots::id.eq(slot_id))
            .filter(advisor_slots::advisor_id.eq(advisor))
            .filter(advisor_slots::starts_at.gt(now()))
            .filter(advisor_slots::consultation_id.is_null()),
    )
    .set(advisor_slots::consultation_id.eq(Some(c.id)))
    .execute(conn)
    .await?;
    let slot: Option<SlotRow> = advisor_slots::table
        .find(slot_id)
        .select(SlotRow::as_select())
        .first(conn)
        .await
        .optional()?;
    match slot {
        Some(s) if taken == 1 => Ok(s),
        Some(s)
            if s.advisor_id == advisor && s.starts_at > now() && s.consultation_id.is_some() =>
        {
            Err(TxError::Refused(ConsultationError::SlotTaken))
        }
        _ => Err(TxError::Refused(ConsultationError::SlotNotFound)),
    }
}

async fn free_slot(conn: &mut AsyncMysqlConnection, consultation_id: u64) -> QueryResult<()> {
    diesel::update(advisor_slots::table.filter(advisor_slots::consultation_id.eq(consultation_id)))
        .set(advisor_slots::consultation_id.eq(None::<u64>))
        .execute(conn)
        .await?;
    Ok(())
}

fn finish<T>(outcome: TxResult<T>) -> DomainResult<Result<T, ConsultationError>> {
    match outcome {
        Ok(v) => Ok(Ok(v)),
        Err(TxError::Refused(e)) => Ok(Err(e)),
        Err(TxError::Db(e)) => Err(e.into()),
    }
}

/// Runs `$body` in a transaction on a pooled connection bound to `$conn`, mapping refusals.
macro_rules! in_tx {
    ($self:ident, $conn:ident => $body:block) => {{
        let mut pooled = $self.db.conn().await?;
        finish(
            pooled
                .transaction::<_, TxError, _>(async |$conn| $body)
                .await,
        )
    }};
}

impl Consultations {
    /// An advisor publishes bookable times (each 15 minutes to 4 hours, in the future, at most
    /// 50 at once); times they already published are skipped. Returns the new slots.
    pub async fn publish_slots(
        &self,
        advisor_id: u64,
        times: &[(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)],
    ) -> DomainResult<Result<Vec<SlotRow>, ConsultationError>> {
        let now = chrono::Utc::now();
        if times.is_empty() || times.len() > 50 {
            return Ok(Err(ConsultationError::Input(vec![UserError::invalid(
                "slots",
                "1–50 slots",
            )])));
        }
        if times.iter().any(|(s, e)| {
            *s <= now
                || *s > now + chrono::TimeDelta::days(365)
                || *e <= *s
                || *e - *s < chrono::TimeDelta::minutes(15)
                || *e - *s > chrono::TimeDelta::hours(4)
        }) {
            return Ok(Err(ConsultationError::Input(vec![UserError::invalid(
                "slots",
                "each within the coming year, 15 minutes to 4 hours long",
            )])));
        }
        let mut wanted: Vec<(chrono::NaiveDateTime, chrono::NaiveDateTime)> = times
            .iter()
            .map(|(s, e)| (s.naive_utc(), e.naive_utc()))
            .collect();
        wanted.sort_unstable();
        let overlapping =
            |a: &(chrono::NaiveDateTime, chrono::NaiveDateTime),
             b: &(chrono::NaiveDateTime, chrono::NaiveDateTime)| {
                a.0 < b.1 && b.0 < a.1
            };
        if wanted.windows(2).any(|w| overlapping(&w[0], &w[1])) {
            return Ok(Err(ConsultationError::Input(vec![UserError::invalid(
                "slots",
                "slots must not overlap each other",
            )])));
        }
        let (first, last) = (wanted[0].0, wanted[wanted.len() - 1].1);
        in_tx!(self, conn => {
            // one advisor publishes at a time, so overlaps are seen by the check below
            crate::schema::staff_accounts::table
                .find(advisor_id)
                .select(crate::schema::staff_accounts::id)
                .for_update()
                .first::<u64>(conn)
                .await?;
            let existing: Vec<(chrono::NaiveDateTime, chrono::NaiveDateTime)> = advisor_slots::table
                .filter(advisor_slots::advisor_id.eq(advisor_id))
                .filter(advisor_slots::starts_at.lt(last))
                .filter(advisor_slots::ends_at.gt(first))
                .select((advisor_slots::starts_at, advisor_slots::ends_at))
                .load(conn)
                .await?;
            if wanted
                .iter()
                .any(|w| existing.iter().any(|e| overlapping(w, e)))
            {
                return Err(TxError::Refused(ConsultationError::Input(vec![
                    UserError::invalid("slots", "overlaps a slot published before"),
                ])));
            }
            let rows: Vec<_> = wanted
                .iter()
                .map(|(s, e)| {
                    (
                        advisor_slots::advisor_id.eq(advisor_id),
                        advisor_slots::starts_at.eq(*s),
                        advisor_slots::ends_at.eq(*e),
                    )
                })
                .collect();
            diesel::insert_into(advisor_slots::table)
                .values(&rows)
                .execute(conn)
                .await?;
            let starts: Vec<chrono::NaiveDateTime> = wanted.iter().map(|w| w.0).collect();
            Ok(advisor_slots::table
                .filter(advisor_slots::advisor_id.eq(advisor_id))
                .filter(advisor_slots::starts_at.eq_any(&starts))
                .order(advisor_slots::starts_at)
                .select(SlotRow::as_select())
                .load(conn)
                .await?)
        })
    }

    /// An advisor's slots starting in `[from, to)`, optionally only the free ones.
    pub async fn slots(
        &self,
        advisor_id: u64,
        from: chrono::NaiveDateTime,
        to: chrono::NaiveDateTime,
        only_free: bool,
    ) -> DomainResult<Vec<SlotRow>> {
        let mut conn = self.db.conn().await?;
        let mut q = advisor_slots::table
            .filter(advisor_slots::advisor_id.eq(advisor_id))
            .filter(advisor_slots::starts_at.ge(from))
            .filter(advisor_slots::starts_at.lt(to))
            .into_boxed();
        if only_free {
            q = q.filter(advisor_slots::consultation_id.is_null());
        }
        Ok(q.order(advisor_slots::starts_at)
            .limit(200)
            .select(SlotRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Free slots of each advisor starting in `[from, to)`, earliest first, at most 200 each:
    /// [`Self::slots`] of several advisors in one statement.
    pub async fn free_slots_of(
        &self,
        advisor_ids: &[u64],
        from: chrono::NaiveDateTime,
        to: chrono::NaiveDateTime,
    ) -> DomainResult<std::collections::HashMap<u64, Vec<SlotRow>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<SlotRow> = advisor_slots::table
            .filter(advisor_slots::advisor_id.eq_any(advisor_ids))
            .filter(advisor_slots::starts_at.ge(from))
            .filter(advisor_slots::starts_at.lt(to))
            .filter(advisor_slots::consultation_id.is_null())
            .order(advisor_slots::starts_at)
            .select(SlotRow::as_select())
            .load(&mut conn)
            .await?;
        let mut out: std::collections::HashMap<u64, Vec<SlotRow>> =
            std::collections::HashMap::new();
        for slot in rows {
            let list = out.entry(slot.advisor_id).or_default();
            if list.len() < 200 {
                list.push(slot);
            }
        }
        Ok(out)
    }

    /// Slots by id.
    pub async fn slots_by_id(
        &self,
        ids: &[u64],
    ) -> DomainResult<std::collections::HashMap<u64, SlotRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<SlotRow> = advisor_slots::table
            .filter(advisor_slots::id.eq_any(ids))
            .select(SlotRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|s| (s.id, s)).collect())
    }

    /// Operations give the consultation to an advisor (an active ADVISOR, of the requested
    /// boutique when the member chose one).
    pub async fn assign(
        &self,
        id: u64,
        advisor_id: u64,
        ops: Viewer,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        in_tx!(self, conn => {
            let (row, to) = begin(conn, id, ops, Action::Assign).await?;
            let advisor: Option<(String, bool, Option<u64>)> = staff_accounts::table
                .find(advisor_id)
                .select((
                    staff_accounts::role,
                    staff_accounts::active,
                    staff_accounts::boutique_id,
                ))
                .first(conn)
                .await
                .optional()?;
            let fits = advisor.is_some_and(|(role, active, boutique)| {
                role == "ADVISOR"
                    && active
                    && row.boutique_id.is_none_or(|b| boutique == Some(b))
            });
            if !fits {
                return Err(TxError::Refused(ConsultationError::AdvisorNotFound));
            }
            diesel::update(consultations::table.find(id))
                .set((
                    consultations::advisor_id.eq(Some(advisor_id)),
                    consultations::status.eq(to.as_str()),
                ))
                .execute(conn)
                .await?;
            let after = super::load(conn, id).await?;
            state::record(
                conn,
                &after,
                Some(row.status()),
                to,
                ops,
                None,
                "consultation.assigned",
            )
            .await?;
            Ok(after)
        })
    }

    /// Books a slot of the assigned advisor (member, advisor or operations).
    pub async fn schedule(
        &self,
        id: u64,
        slot_id: u64,
        viewer: Viewer,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        let outcome = in_tx!(self, conn => {
            let (row, to) = begin(conn, id, viewer, Action::Schedule).await?;
            let slot = book(conn, &row, slot_id).await?;
            set_appointment(conn, id, to, Some(&slot)).await?;
            let after = super::load(conn, id).await?;
            state::record(
                conn,
                &after,
                Some(row.status()),
                to,
                viewer,
                None,
                "consultation.scheduled",
            )
            .await?;
            Ok(after)
        })?;
        if outcome.is_ok() {
            metrics::counter!("ruizhu_consultations_total", "event" => "scheduled").increment(1);
        }
        Ok(outcome)
    }

    /// Moves the appointment to another slot of the advisor; the old one is free again.
    pub async fn reschedule(
        &self,
        id: u64,
        slot_id: u64,
        viewer: Viewer,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        in_tx!(self, conn => {
            let (row, to) = begin(conn, id, viewer, Action::Reschedule).await?;
            free_slot(conn, id).await?;
            let slot = book(conn, &row, slot_id).await?;
            set_appointment(conn, id, to, Some(&slot)).await?;
            let after = super::load(conn, id).await?;
            state::record(
                conn,
                &after,
                Some(row.status()),
                to,
                viewer,
                Some("rescheduled".to_owned()),
                "consultation.rescheduled",
            )
            .await?;
            Ok(after)
        })
    }

    /// Calls it off (member, advisor or operations); a booked slot is free again.
    pub async fn cancel(
        &self,
        id: u64,
        viewer: Viewer,
        reason: Option<&str>,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        if reason.is_some_and(|r| r.chars().count() > 200 || r.chars().any(char::is_control)) {
            return Ok(Err(ConsultationError::Input(vec![UserError::invalid(
                "reason",
                "at most 200 characters",
            )])));
        }
        in_tx!(self, conn => {
            let (row, to) = begin(conn, id, viewer, Action::Cancel).await?;
            free_slot(conn, id).await?;
            set_appointment(conn, id, to, None).await?;
            let after = super::load(conn, id).await?;
            state::record(
                conn,
                &after,
                Some(row.status()),
                to,
                viewer,
                reason.map(str::to_owned),
                "consultation.cancelled",
            )
            .await?;
            Ok(after)
        })
    }

    /// The advisor (or operations) records how the appointment went.
    pub async fn complete(
        &self,
        id: u64,
        viewer: Viewer,
        outcome: &Outcome,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        let mut errors = Vec::new();
        super::valid_body(&outcome.notes, "input.notes", &mut errors);
        if outcome.recommended_product_ids.len() > super::MAX_LIST {
            errors.push(UserError::invalid(
                "input.recommendedProductIds",
                "at most 10",
            ));
        }
        if outcome.draft_lines.len() > 20
            || outcome
                .draft_lines
                .iter()
                .any(|(_, q)| !(1..=99).contains(q))
        {
            errors.push(UserError::invalid(
                "input.draftLines",
                "at most 20 lines of 1–99 units",
            ));
        }
        if !errors.is_empty() {
            return Ok(Err(ConsultationError::Input(errors)));
        }
        if matches!(viewer, Viewer::Member(_)) {
            return Ok(Err(ConsultationError::NotAllowed));
        }
        in_tx!(self, conn => {
            let (row, to) = begin(conn, id, viewer, Action::Complete).await?;
            if row.scheduled_at.is_some_and(|t| t > now()) {
                return Err(TxError::Refused(ConsultationError::Input(vec![
                    UserError::invalid("id", "the appointment has not started yet"),
                ])));
            }
            diesel::update(consultations::table.find(id))
                .set((
                    consultations::status.eq(to.as_str()),
                    consultations::outcome_notes.eq(Some(&outcome.notes)),
                    consultations::recommended_ids.eq(Some(
                        serde_json::json!(outcome.recommended_product_ids).to_string(),
                    )),
                    consultations::draft_lines
                        .eq(Some(serde_json::json!(outcome.draft_lines).to_string())),
                ))
                .execute(conn)
                .await?;
            let after = super::load(conn, id).await?;
            state::record(
                conn,
                &after,
                Some(row.status()),
                to,
                viewer,
                None,
                "consultation.completed",
            )
            .await?;
            Ok(after)
        })
    }

    /// The member rates a completed consultation, once (1–5, optional comment).
    pub async fn rate(
        &self,
        id: u64,
        member_id: u64,
        rating: i32,
        comment: Option<&str>,
    ) -> DomainResult<Result<ConsultationRow, ConsultationError>> {
        let mut errors = Vec::new();
        if !(1..=5).contains(&rating) {
            errors.push(UserError::invalid("rating", "1–5"));
        }
        if comment.is_some_and(|c| {
            c.chars().count() > 500
                || c.chars()
                    .any(|ch| ch.is_control() && !matches!(ch, '\n' | '\r'))
        }) {
            errors.push(UserError::invalid("comment", "at most 500 characters"));
        }
        if !errors.is_empty() {
            return Ok(Err(ConsultationError::Input(errors)));
        }
        let rating = i8::try_from(rating).unwrap_or(5);
        in_tx!(self, conn => {
            let Some(row) = lock(conn, id).await? else {
                return Err(TxError::Refused(ConsultationError::NotFound));
            };
            if row.member_id != member_id {
                return Err(TxError::Refused(ConsultationError::NotFound));
            }
            if row.status() != Status::Completed {
                return Err(TxError::Refused(ConsultationError::Invalid {
                    from: row.status(),
                    action: Action::Complete,
                }));
            }
            let rated = diesel::update(
                consultations::table
                    .filter(consultations::id.eq(id))
                    .filter(consultations::rating.is_null()),
            )
            .set((
                consultations::rating.eq(Some(rating)),
                consultations::rating_comment.eq(comment),
            ))
            .execute(conn)
            .await?;
            if rated == 0 {
                return Err(TxError::Refused(ConsultationError::AlreadyRated));
            }
            Ok(super::load(conn, id).await?)
        })
    }

    /// Reminders 24 hours and 1 hour before appointments: each is claimed once (a conditional
    /// update) and becomes a `consultation.reminder` event in the same transaction, which the
    /// notifications consumer turns into a WeChat subscription message. Returns how many.
    pub async fn send_due_reminders(&self) -> DomainResult<usize> {
        let mut conn = self.db.conn().await?;
        let at = now();
        let mut sent = 0;
        // the 1 h reminder first: an appointment within the hour gets only that one
        for (hours, label) in [(1_i64, "1h"), (24, "24h")] {
            let horizon = at + chrono::TimeDelta::hours(hours);
            let earliest = if hours == 24 {
                at + chrono::TimeDelta::hours(1)
            } else {
                at
            };
            let due: Vec<ConsultationRow> = {
                let q = consultations::table
                    .filter(consultations::status.eq(Status::Scheduled.as_str()))
                    .filter(consultations::scheduled_at.gt(earliest))
                    .filter(consultations::scheduled_at.le(horizon))
                    .into_boxed();
                let q = if hours == 24 {
                    q.filter(consultations::reminded_24h_at.is_null())
                } else {
                    q.filter(consultations::reminded_1h_at.is_null())
                };
                q.limit(500)
                    .select(super::ConsultationRow::as_select())
                    .load(&mut conn)
                    .await?
            };
            for row in due {
                let claimed = conn
                    .transaction::<_, diesel::result::Error, _>(async |conn| {
                        // the appointment read above, not one it was moved to since
                        let target = consultations::table
                            .filter(consultations::id.eq(row.id))
                            .filter(consultations::status.eq(Status::Scheduled.as_str()))
                            .filter(consultations::scheduled_at.eq(row.scheduled_at));
                        let n = if hours == 24 {
                            diesel::update(target.filter(consultations::reminded_24h_at.is_null()))
                                .set(consultations::reminded_24h_at.eq(Some(at)))
                                .execute(conn)
                                .await?
                        } else {
                            // the 24 h reminder is pointless once the 1 h one goes
                            diesel::update(target.filter(consultations::reminded_1h_at.is_null()))
                                .set((
                                    consultations::reminded_1h_at.eq(Some(at)),
                                    consultations::reminded_24h_at.eq(Some(at)),
                                ))
                                .execute(conn)
                                .await?
                        };
                        if n == 1 {
                            crate::events::record(
                                conn,
                                "consultation.reminder",
                                "consultation",
                                row.id,
                                serde_json::json!({
                                    "consultation_id": row.id, "member_id": row.member_id,
                                    "advisor_id": row.advisor_id, "before": label,
                                    "scheduled_at": row.scheduled_at.map(|t| t.and_utc().to_rfc3339()),
                                }),
                            )
                            .await?;
                        }
                        Ok(n == 1)
                    })
                    .await?;
                if claimed {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }
}

/// Sets the status and the appointment (slot and time; cleared with `None`), and re-arms the
/// reminders for a new time.
async fn set_appointment(
    conn: &mut AsyncMysqlConnection,
    id: u64,
    to: Status,
    slot: Option<&SlotRow>,
) -> QueryResult<()> {
    diesel::update(consultations::table.find(id))
        .set((
            consultations::status.eq(to.as_str()),
            consultations::slot_id.eq(slot.map(|s| s.id)),
            consultations::scheduled_at.eq(slot.map(|s| s.starts_at)),
            consultations::reminded_24h_at.eq(None::<chrono::NaiveDateTime>),
            consultations::reminded_1h_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
