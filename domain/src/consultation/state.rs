//! The consultation status machine and its timeline.
//!
//! ```text
//! REQUESTED ─assign─▶ ASSIGNED ─schedule─▶ SCHEDULED ─complete─▶ COMPLETED
//!     │        (re)assign ↺ │   reschedule ↺ │
//!     └────────────── cancel ────────────────┴──▶ CANCELLED
//! ```

use diesel::prelude::*;
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use super::{ConsultationRow, Viewer};
use crate::schema::consultation_events;

/// Where a consultation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Asked for; waiting for an advisor.
    Requested,
    /// An advisor has it; no appointment yet.
    Assigned,
    /// An appointment is booked.
    Scheduled,
    /// The appointment took place.
    Completed,
    /// Called off.
    Cancelled,
}

/// What can happen to a consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Operations give it to an advisor (again).
    Assign,
    /// An appointment slot is booked.
    Schedule,
    /// The appointment moves to another slot.
    Reschedule,
    /// The advisor records the outcome.
    Complete,
    /// Called off by the member, the advisor or operations.
    Cancel,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 5] = [
        Status::Requested,
        Status::Assigned,
        Status::Scheduled,
        Status::Completed,
        Status::Cancelled,
    ];

    /// The status `action` leads to, or `None` when it is not allowed from here.
    pub fn apply(self, action: Action) -> Option<Status> {
        use Action as A;
        use Status as S;
        match (self, action) {
            (S::Requested | S::Assigned, A::Assign) => Some(S::Assigned),
            (S::Assigned, A::Schedule) => Some(S::Scheduled),
            (S::Scheduled, A::Reschedule) => Some(S::Scheduled),
            (S::Scheduled, A::Complete) => Some(S::Completed),
            (S::Requested | S::Assigned | S::Scheduled, A::Cancel) => Some(S::Cancelled),
            _ => None,
        }
    }

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "REQUESTED",
            Status::Assigned => "ASSIGNED",
            Status::Scheduled => "SCHEDULED",
            Status::Completed => "COMPLETED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Writes a timeline entry and the event of a change, in the caller's transaction.
pub(crate) async fn record(
    conn: &mut AsyncMysqlConnection,
    row: &ConsultationRow,
    from: Option<Status>,
    to: Status,
    viewer: Viewer,
    note: Option<String>,
    event_type: &str,
) -> QueryResult<()> {
    let (kind, id) = viewer.actor();
    diesel::insert_into(consultation_events::table)
        .values((
            consultation_events::consultation_id.eq(row.id),
            consultation_events::from_status.eq(from.map(Status::as_str)),
            consultation_events::to_status.eq(to.as_str()),
            consultation_events::actor_kind.eq(kind),
            consultation_events::actor_id.eq(id),
            consultation_events::note.eq(note),
        ))
        .execute(conn)
        .await?;
    crate::events::record(
        conn,
        event_type,
        "consultation",
        row.id,
        serde_json::json!({
            "consultation_id": row.id, "member_id": row.member_id, "advisor_id": row.advisor_id,
            "from": from.map(Status::as_str), "to": to.as_str(), "actor": kind, "actor_id": id,
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_is_exactly_this() {
        use Action as A;
        use Status as S;
        let allowed = [
            (S::Requested, A::Assign, S::Assigned),
            (S::Assigned, A::Assign, S::Assigned),
            (S::Assigned, A::Schedule, S::Scheduled),
            (S::Scheduled, A::Reschedule, S::Scheduled),
            (S::Scheduled, A::Complete, S::Completed),
            (S::Requested, A::Cancel, S::Cancelled),
            (S::Assigned, A::Cancel, S::Cancelled),
            (S::Scheduled, A::Cancel, S::Cancelled),
        ];
        for from in Status::ALL {
            for action in [
                A::Assign,
                A::Schedule,
                A::Reschedule,
                A::Complete,
                A::Cancel,
            ] {
                let want = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                assert_eq!(from.apply(action), want, "{from:?} {action:?}");
            }
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
