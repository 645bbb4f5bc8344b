//! The message thread of a consultation: the member and the assigned advisor write (bodies are
//! stored exactly as given and never interpreted); advisors also write internal notes the member
//! never sees; each message is an event, so the other side's subscription gets it on whatever
//! replica it is connected to; read receipts keep the last message each participant has read.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};

use super::{ConsultationError, Consultations, Status, Viewer};
use crate::DomainResult;
use crate::schema::{consultation_messages, consultation_reads};
use crate::validation::UserError;

/// A message.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = consultation_messages, check_for_backend(diesel::mysql::Mysql))]
pub struct MessageRow {
    pub id: u64,
    pub consultation_id: u64,
    pub author_kind: String,
    pub author_id: u64,
    pub body: String,
    pub image_urls: String,
    pub internal: bool,
    pub created_at: chrono::NaiveDateTime,
}

impl MessageRow {
    /// Attached images.
    pub fn images(&self) -> Vec<String> {
        serde_json::from_str(&self.image_urls).unwrap_or_default()
    }
}

/// A participant's read position.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = consultation_reads, check_for_backend(diesel::mysql::Mysql))]
pub struct ReadRow {
    pub consultation_id: u64,
    pub reader_kind: String,
    pub reader_id: u64,
    pub last_read_id: u64,
    pub updated_at: chrono::NaiveDateTime,
}

/// Whose receipts, as whom: see [`Consultations::receipts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiptsKey {
    /// The consultation.
    pub consultation: u64,
    /// Its member.
    pub member: u64,
    /// Its assigned advisor.
    pub advisor: Option<u64>,
    /// Whether the viewer sees internal notes (staff).
    pub sees_notes: bool,
}

fn kind(viewer: Viewer) -> (&'static str, u64) {
    match viewer {
        Viewer::Member(id) => ("member", id),
        Viewer::Advisor(id) | Viewer::Ops(id) => ("staff", id),
    }
}

impl Consultations {
    /// Writes a message (the member, or the assigned advisor; `internal` only for the advisor).
    pub async fn send_message(
        &self,
        id: u64,
        viewer: Viewer,
        body: &str,
        image_urls: &[String],
        internal: bool,
    ) -> DomainResult<Result<MessageRow, ConsultationError>> {
        let mut errors = Vec::new();
        super::valid_body(body, "body", &mut errors);
        super::valid_images(image_urls, "imageUrls", &mut errors);
        if !errors.is_empty() {
            return Ok(Err(ConsultationError::Input(errors)));
        }
        let (author_kind, author_id) = kind(viewer);
        let images = serde_json::json!(image_urls).to_string();
        let mut conn = self.db.conn().await?;
        // the consultation row is locked for the whole write: one thread's messages get their
        // ids, outbox rows and commits in the same order (so subscribers see them in the order
        // `messages` lists them), and a cancellation or reassignment cannot slip in between the
        // checks and the insert
        let outcome = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let Some(row) = super::lock(conn, id).await? else {
                    return Ok(Err(ConsultationError::NotFound));
                };
                let access = Self::access(conn, &row, viewer).await?;
                if !access.read {
                    return Ok(Err(ConsultationError::NotFound));
                }
                // the thread is the member's and their advisor's; operations read it
                let writer = match viewer {
                    Viewer::Member(_) => access.act,
                    Viewer::Advisor(a) => row.advisor_id == Some(a),
                    Viewer::Ops(_) => false,
                };
                if !writer || (internal && !matches!(viewer, Viewer::Advisor(_))) {
                    return Ok(Err(ConsultationError::NotAllowed));
                }
                if row.status() == Status::Cancelled {
                    return Ok(Err(ConsultationError::Invalid {
                        from: Status::Cancelled,
                        action: super::Action::Cancel,
                    }));
                }
                diesel::insert_into(consultation_messages::table)
                    .values((
                        consultation_messages::consultation_id.eq(id),
                        consultation_messages::author_kind.eq(author_kind),
                        consultation_messages::author_id.eq(author_id),
                        consultation_messages::body.eq(body),
                        consultation_messages::image_urls.eq(&images),
                        consultation_messages::internal.eq(internal),
                    ))
                    .execute(conn)
                    .await?;
                let message_id: u64 = diesel::select(diesel::dsl::sql::<
                    diesel::sql_types::Unsigned<diesel::sql_types::BigInt>,
                >("LAST_INSERT_ID()"))
                .get_result(conn)
                .await?;
                // the author has read their own message (not a note: a member's receipts
                // must not reveal that notes exist)
                if !internal {
                    mark(conn, id, author_kind, author_id, message_id).await?;
                }
                // ids only: the body stays in MySQL, subscribers load it
                crate::events::record(
                    conn,
                    "consultation.message_added",
                    "consultation",
                    id,
                    serde_json::json!({
                        "consultation_id": id, "message_id": message_id, "internal": internal,
                        "author_kind": author_kind, "member_id": row.member_id,
                        "advisor_id": row.advisor_id,
                    }),
                )
                .await?;
                Ok(Ok(consultation_messages::table
                    .find(message_id)
                    .select(MessageRow::as_select())
                    .first(conn)
                    .await?))
            })
            .await?;
        let message = match outcome {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        metrics::counter!("ruizhu_consultation_messages_total", "internal" => if internal { "true" } else { "false" })
            .increment(1);
        Ok(Ok(message))
    }

    /// Messages of a consultation, oldest first, after message id `after` (internal notes only
    /// when `with_internal`).
    pub async fn messages(
        &self,
        id: u64,
        with_internal: bool,
        after: Option<u64>,
        limit: i64,
    ) -> DomainResult<Vec<MessageRow>> {
        let mut conn = self.db.conn().await?;
        let mut q = consultation_messages::table
            .filter(consultation_messages::consultation_id.eq(id))
            .into_boxed();
        if !with_internal {
            q = q.filter(consultation_messages::internal.eq(false));
        }
        if let Some(after) = after {
            q = q.filter(consultation_messages::id.gt(after));
        }
        Ok(q.order(consultation_messages::id)
            .limit(limit)
            .select(MessageRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Messages by id.
    pub async fn messages_by_id(&self, ids: &[u64]) -> DomainResult<HashMap<u64, MessageRow>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<MessageRow> = consultation_messages::table
            .filter(consultation_messages::id.eq_any(ids))
            .select(MessageRow::as_select())
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|m| (m.id, m)).collect())
    }

    /// Marks messages up to `message_id` read by `viewer` (never moves backwards).
    pub async fn mark_read(
        &self,
        id: u64,
        viewer: Viewer,
        message_id: u64,
    ) -> DomainResult<Result<(), ConsultationError>> {
        let mut conn = self.db.conn().await?;
        let Some(row) = super::load(&mut conn, id).await.optional()? else {
            return Ok(Err(ConsultationError::NotFound));
        };
        let access = Self::access(&mut conn, &row, viewer).await?;
        if !access.read {
            return Ok(Err(ConsultationError::NotFound));
        }
        if !access.act {
            return Ok(Err(ConsultationError::NotAllowed));
        }
        let mut q = consultation_messages::table
            .filter(consultation_messages::id.eq(message_id))
            .filter(consultation_messages::consultation_id.eq(id))
            .into_boxed();
        if !access.internal {
            // a member's notes do not exist: marking one is like marking nothing
            q = q.filter(consultation_messages::internal.eq(false));
        }
        let belongs: i64 = q.count().get_result(&mut conn).await?;
        if belongs == 0 {
            return Ok(Err(ConsultationError::Input(vec![UserError::not_found(
                "messageId",
                "no such message in this consultation",
            )])));
        }
        let (reader_kind, reader_id) = kind(viewer);
        mark(&mut conn, id, reader_kind, reader_id, message_id).await?;
        Ok(Ok(()))
    }

    /// Read positions of a consultation's member and assigned advisor, as `viewer_sees_notes`
    /// may see them: for a member, a position on an internal note is shown as the last message
    /// they can see before it.
    pub async fn receipts(
        &self,
        c: &super::ConsultationRow,
        viewer_sees_notes: bool,
    ) -> DomainResult<Vec<ReadRow>> {
        let key = ReceiptsKey {
            consultation: c.id,
            member: c.member_id,
            advisor: c.advisor_id,
            sees_notes: viewer_sees_notes,
        };
        Ok(self
            .receipts_many(&[key])
            .await?
            .remove(&key)
            .unwrap_or_default())
    }

    /// [`Self::receipts`] of several consultations in two statements (the read positions, and
    /// the visible message ids of those whose viewer does not see notes).
    pub async fn receipts_many(
        &self,
        keys: &[ReceiptsKey],
    ) -> DomainResult<HashMap<ReceiptsKey, Vec<ReadRow>>> {
        let ids: Vec<u64> = keys.iter().map(|k| k.consultation).collect();
        let reads = self.reads(&ids).await?;
        let hidden_notes: Vec<u64> = keys
            .iter()
            .filter(|k| !k.sees_notes && reads.contains_key(&k.consultation))
            .map(|k| k.consultation)
            .collect();
        // visible (not internal) message ids per consultation, ascending
        let mut visible: HashMap<u64, Vec<u64>> = HashMap::new();
        if !hidden_notes.is_empty() {
            let mut conn = self.db.conn().await?;
            let rows: Vec<(u64, u64)> = consultation_messages::table
                .filter(consultation_messages::consultation_id.eq_any(&hidden_notes))
                .filter(consultation_messages::internal.eq(false))
                .order(consultation_messages::id)
                .select((
                    consultation_messages::consultation_id,
                    consultation_messages::id,
                ))
                .load(&mut conn)
                .await?;
            for (c, m) in rows {
                visible.entry(c).or_default().push(m);
            }
        }
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            let rows = reads.get(&key.consultation).cloned().unwrap_or_default();
            let mut kept = Vec::new();
            for mut r in rows {
                let participant = (r.reader_kind == "member" && r.reader_id == key.member)
                    || (r.reader_kind == "staff" && Some(r.reader_id) == key.advisor);
                if !participant {
                    continue;
                }
                if !key.sees_notes {
                    let seen = visible
                        .get(&key.consultation)
                        .and_then(|ids| ids.iter().rev().find(|id| **id <= r.last_read_id));
                    match seen {
                        Some(v) => r.last_read_id = *v,
                        None => continue,
                    }
                }
                kept.push(r);
            }
            out.insert(*key, kept);
        }
        Ok(out)
    }

    /// Read positions of each consultation's participants.
    pub async fn reads(&self, ids: &[u64]) -> DomainResult<HashMap<u64, Vec<ReadRow>>> {
        let mut conn = self.db.conn().await?;
        let rows: Vec<ReadRow> = consultation_reads::table
            .filter(consultation_reads::consultation_id.eq_any(ids))
            .select(ReadRow::as_select())
            .load(&mut conn)
            .await?;
        let mut out: HashMap<u64, Vec<ReadRow>> = HashMap::new();
        for r in rows {
            out.entry(r.consultation_id).or_default().push(r);
        }
        Ok(out)
    }
}

async fn mark(
    conn: &mut diesel_async::AsyncMysqlConnection,
    id: u64,
    reader_kind: &str,
    reader_id: u64,
    message_id: u64,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO consultation_reads (consultation_id, reader_kind, reader_id, last_read_id) \
         VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE last_read_id = GREATEST(last_read_id, VALUES(last_read_id))",
    )
    .bind::<diesel::sql_types::Unsigned<diesel::sql_types::BigInt>, _>(id)
    .bind::<diesel::sql_types::Varchar, _>(reader_kind)
    .bind::<diesel::sql_types::Unsigned<diesel::sql_types::BigInt>, _>(reader_id)
    .bind::<diesel::sql_types::Unsigned<diesel::sql_types::BigInt>, _>(message_id)
    .execute(conn)
    .await?;
    Ok(())
}
