//! Consultation context (定制咨询): requests, the operations queue and assignment, advisors'
//! slots and appointments, the message thread with internal notes and read receipts, the
//! outcome and rating, and the live message subscription. Who may see or do what is decided by
//! `domain::consultation` from the caller ([`viewer_of`]).

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Subscription};
use domain::consultation::booking::{Outcome, SlotRow};
use domain::consultation::messages::{MessageRow, ReadRow};
use domain::consultation::{
    Access, Action, Boutique, ConsultationError, ConsultationEventRow, ConsultationRow,
    Consultations, NewRequest, QueueFilter, Status as DomainStatus, Topic as DomainTopic, Viewer,
};
use domain::events::Event;
use domain::events::hub::EventHub;
use domain::identity::{Principal, Role};
use futures::Stream;
use tokio::sync::broadcast;

use crate::ErrorCode;
use crate::auth::{MemberGuard, StaffGuard, member_id, session, staff};
use crate::catalog::{ProductNode, SkuNode};
use crate::error::internal;
use crate::id;
use crate::loaders::{Loaders, ProductById, SkuById, StaffById};
use crate::pagination::{decode_cursor, id_page, page_size};
use crate::payload::{UserError, UserErrorCode, user_errors};

fn service<'a>(ctx: &Context<'a>) -> &'a Consultations {
    ctx.data_unchecked::<Consultations>()
}

/// The caller as the consultation rules see them; `UNAUTHENTICATED` when signed out.
pub fn viewer_of(ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
    let s = session(ctx)?;
    Ok(match s.principal {
        Principal::Member { id } => Viewer::Member(id),
        Principal::Staff {
            id,
            role: Role::Advisor,
        } => Viewer::Advisor(id),
        Principal::Staff { id, .. } => Viewer::Ops(id),
    })
}

/// What a consultation is about.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultationTopic {
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

impl ConsultationTopic {
    fn domain(self) -> DomainTopic {
        match self {
            ConsultationTopic::Bespoke => DomainTopic::Bespoke,
            ConsultationTopic::Styling => DomainTopic::Styling,
            ConsultationTopic::Gifting => DomainTopic::Gifting,
            ConsultationTopic::AfterCare => DomainTopic::AfterCare,
            ConsultationTopic::Other => DomainTopic::Other,
        }
    }

    fn of(s: &str) -> Self {
        match DomainTopic::parse(s) {
            Some(DomainTopic::Bespoke) => ConsultationTopic::Bespoke,
            Some(DomainTopic::Styling) => ConsultationTopic::Styling,
            Some(DomainTopic::Gifting) => ConsultationTopic::Gifting,
            Some(DomainTopic::AfterCare) => ConsultationTopic::AfterCare,
            _ => ConsultationTopic::Other,
        }
    }
}

/// Where a consultation is: REQUESTED → ASSIGNED → SCHEDULED → COMPLETED, or CANCELLED.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultationStatus {
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

impl From<DomainStatus> for ConsultationStatus {
    fn from(s: DomainStatus) -> Self {
        match s {
            DomainStatus::Requested => ConsultationStatus::Requested,
            DomainStatus::Assigned => ConsultationStatus::Assigned,
            DomainStatus::Scheduled => ConsultationStatus::Scheduled,
            DomainStatus::Completed => ConsultationStatus::Completed,
            DomainStatus::Cancelled => ConsultationStatus::Cancelled,
        }
    }
}

impl ConsultationStatus {
    fn domain(self) -> DomainStatus {
        DomainStatus::ALL
            .into_iter()
            .find(|d| ConsultationStatus::from(*d) == self)
            .unwrap_or(DomainStatus::Requested)
    }
}

/// Who wrote a message or read up to one.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultationParticipant {
    /// The member.
    Member,
    /// The advisor (or another staff member).
    Advisor,
}

fn participant(kind: &str) -> ConsultationParticipant {
    if kind == "member" {
        ConsultationParticipant::Member
    } else {
        ConsultationParticipant::Advisor
    }
}

/// A boutique.
pub struct BoutiqueNode(pub Boutique);

/// A RUIZHU boutique; advisors belong to one.
#[Object(name = "Boutique")]
impl BoutiqueNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Boutique", self.0.id)
    }
    /// Stable code, e.g. `SH-PLAZA66`.
    async fn code(&self) -> &str {
        &self.0.code
    }
    /// Name in Chinese.
    async fn name(&self) -> &str {
        &self.0.name_zh
    }
    /// Name in English.
    async fn name_en(&self) -> &str {
        &self.0.name_en
    }
    /// City.
    async fn city(&self) -> &str {
        &self.0.city
    }
}

async fn boutique(ctx: &Context<'_>, id: u64) -> async_graphql::Result<Option<BoutiqueNode>> {
    let all = ctx
        .data_unchecked::<Loaders>()
        .consultation
        .load_one(crate::loaders::AllBoutiques)
        .await?
        .unwrap_or_default();
    Ok(all.iter().find(|b| b.id == id).cloned().map(BoutiqueNode))
}

/// An advisor as members see them.
pub struct AdvisorNode {
    id: u64,
    display_name: String,
}

/// An advisor (staff member with role ADVISOR), as members see them.
#[Object(name = "Advisor")]
impl AdvisorNode {
    /// Opaque id (a staff account id).
    async fn id(&self) -> ID {
        id::encode("Staff", self.id)
    }
    /// Name shown to clients.
    async fn display_name(&self) -> &str {
        &self.display_name
    }
    /// Their boutique; null when not set.
    async fn boutique(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<BoutiqueNode>> {
        let of = service(ctx)
            .advisor_boutiques(&[self.id])
            .await
            .map_err(|e| internal(&e))?;
        match of.get(&self.id) {
            Some(b) => boutique(ctx, *b).await,
            None => Ok(None),
        }
    }
}

async fn advisor(ctx: &Context<'_>, id: u64) -> async_graphql::Result<Option<AdvisorNode>> {
    Ok(ctx
        .data_unchecked::<Loaders>()
        .identity
        .load_one(StaffById(id))
        .await?
        .map(|s| AdvisorNode {
            id: s.id,
            // never the sign-in name
            display_name: if s.display_name.is_empty() {
                "RUIZHU 顾问".to_owned()
            } else {
                s.display_name
            },
        }))
}

/// A bookable time of an advisor.
pub struct SlotNode(pub SlotRow);

/// A bookable time of an advisor.
#[Object(name = "AdvisorSlot")]
impl SlotNode {
    /// Opaque id (for `scheduleConsultation`).
    async fn id(&self) -> ID {
        id::encode("AdvisorSlot", self.0.id)
    }
    /// Start.
    async fn starts_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.starts_at.and_utc()
    }
    /// End.
    async fn ends_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.ends_at.and_utc()
    }
    /// Whether a consultation holds it.
    async fn booked(&self) -> bool {
        self.0.consultation_id.is_some()
    }
    /// Whose.
    async fn advisor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<AdvisorNode>> {
        advisor(ctx, self.0.advisor_id).await
    }
}

/// A message of a consultation thread.
pub struct MessageNode(pub MessageRow);

/// A message of a consultation thread; `body` is exactly what was written (escape it on output).
#[Object(name = "ConsultationMessage")]
impl MessageNode {
    /// Opaque id (for `markConsultationRead`).
    async fn id(&self) -> ID {
        id::encode("ConsultationMessage", self.0.id)
    }
    /// Who wrote it.
    async fn author(&self) -> ConsultationParticipant {
        participant(&self.0.author_kind)
    }
    /// The text, as written.
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// Attached images.
    async fn image_urls(&self) -> Vec<String> {
        self.0.images()
    }
    /// An advisor's internal note (never shown to the member).
    async fn internal(&self) -> bool {
        self.0.internal
    }
    /// When.
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.and_utc()
    }
}

crate::connection!(
    ConsultationMessageConnection,
    ConsultationMessageEdge,
    MessageNode,
    "consultation messages"
);

/// How far a participant has read.
#[derive(SimpleObject)]
pub struct ReadReceipt {
    /// Who.
    pub participant: ConsultationParticipant,
    /// The last message they have read.
    pub last_read_message_id: ID,
    /// When they read it.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl From<&ReadRow> for ReadReceipt {
    fn from(r: &ReadRow) -> Self {
        Self {
            participant: participant(&r.reader_kind),
            last_read_message_id: id::encode("ConsultationMessage", r.last_read_id),
            at: r.updated_at.and_utc(),
        }
    }
}

/// One entry of a consultation's timeline.
pub struct ConsultationEventNode(pub ConsultationEventRow);

/// One entry of a consultation's timeline.
#[Object(name = "ConsultationEvent")]
impl ConsultationEventNode {
    /// Status before; null for the request.
    async fn from_status(&self) -> Option<ConsultationStatus> {
        self.0
            .from_status
            .as_deref()
            .and_then(DomainStatus::parse)
            .map(Into::into)
    }
    /// Status after.
    async fn to_status(&self) -> ConsultationStatus {
        DomainStatus::parse(&self.0.to_status)
            .unwrap_or(DomainStatus::Requested)
            .into()
    }
    /// Who: the member, staff, or the service.
    async fn actor(&self) -> &str {
        &self.0.actor_kind
    }
    /// A note (e.g. why it was cancelled); null when none.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// When.
    async fn at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.and_utc()
    }
}

/// A line an advisor prepared for the member's cart.
pub struct DraftLineNode {
    sku_id: u64,
    quantity: i32,
}

/// A line an advisor prepared for the member's cart.
#[Object(name = "DraftOrderLine")]
impl DraftLineNode {
    /// The SKU; null if it no longer exists.
    async fn sku(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<SkuNode>> {
        Ok(ctx
            .data_unchecked::<Loaders>()
            .catalog
            .load_one(SkuById(self.sku_id))
            .await?
            .map(SkuNode))
    }
    /// Units.
    async fn quantity(&self) -> i32 {
        self.quantity
    }
}

async fn products(ctx: &Context<'_>, ids: &[u64]) -> async_graphql::Result<Vec<ProductNode>> {
    let found = ctx
        .data_unchecked::<Loaders>()
        .catalog
        .load_many(ids.iter().map(|i| ProductById(*i)))
        .await?;
    Ok(ids
        .iter()
        .filter_map(|i| found.get(&ProductById(*i)).cloned())
        .filter(|p| p.is_published())
        .map(ProductNode)
        .collect())
}

/// What the advisor recorded after the appointment.
pub struct OutcomeNode(Arc<ConsultationRow>);

/// What the advisor recorded after the appointment.
#[Object(name = "ConsultationOutcome")]
impl OutcomeNode {
    /// The advisor's notes for the member.
    async fn notes(&self) -> &str {
        self.0.outcome_notes.as_deref().unwrap_or_default()
    }
    /// Products the advisor recommends (published ones).
    async fn recommended_products(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<ProductNode>> {
        products(ctx, &self.0.recommended()).await
    }
    /// Lines the member can put in their cart with `addConsultationDraftToCart`.
    async fn draft_lines(&self) -> Vec<DraftLineNode> {
        self.0
            .draft()
            .into_iter()
            .map(|(sku_id, quantity)| DraftLineNode { sku_id, quantity })
            .collect()
    }
}

/// A consultation, as the caller may see it.
pub struct ConsultationNode {
    row: Arc<ConsultationRow>,
    access: Access,
}

/// A VIP consultation (定制咨询).
#[Object(name = "Consultation")]
impl ConsultationNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Consultation", self.row.id)
    }
    /// About what.
    async fn topic(&self) -> ConsultationTopic {
        ConsultationTopic::of(&self.row.topic)
    }
    /// Where it is.
    async fn status(&self) -> ConsultationStatus {
        self.row.status().into()
    }
    /// What the member wrote with the request, as written.
    async fn message(&self) -> &str {
        &self.row.message
    }
    /// Start times the member prefers.
    async fn preferred_slots(&self) -> Vec<chrono::DateTime<chrono::Utc>> {
        self.row.preferred()
    }
    /// Products the member is interested in (published ones).
    async fn products(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProductNode>> {
        products(ctx, &self.row.products()).await
    }
    /// Images the member attached.
    async fn image_urls(&self) -> Vec<String> {
        self.row.images()
    }
    /// The boutique the member chose; null when none.
    async fn boutique(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<BoutiqueNode>> {
        match self.row.boutique_id {
            Some(b) => boutique(ctx, b).await,
            None => Ok(None),
        }
    }
    /// The assigned advisor; null until assigned.
    async fn advisor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<AdvisorNode>> {
        match self.row.advisor_id {
            Some(a) => advisor(ctx, a).await,
            None => Ok(None),
        }
    }
    /// The member (staff only; null for the member themselves, who have `me`).
    async fn member(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::identity::MemberNode>> {
        if matches!(viewer_of(ctx)?, Viewer::Member(_)) {
            return Ok(None);
        }
        Ok(ctx
            .data_unchecked::<Loaders>()
            .identity
            .load_one(crate::loaders::MemberById(self.row.member_id))
            .await?
            .map(crate::identity::MemberNode))
    }
    /// The booked slot; null when none.
    async fn slot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<SlotNode>> {
        let Some(slot) = self.row.slot_id else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<Loaders>()
            .consultation
            .load_one(crate::loaders::SlotById(slot))
            .await?
            .map(SlotNode))
    }
    /// When the appointment is; null when none is booked.
    async fn scheduled_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.row.scheduled_at.map(|t| t.and_utc())
    }
    /// Free slots of the assigned advisor in the next 30 days, to book or move the
    /// appointment (empty when unassigned, completed or cancelled).
    async fn available_slots(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SlotNode>> {
        let (Some(advisor), true) = (
            self.row.advisor_id,
            matches!(
                self.row.status(),
                DomainStatus::Assigned | DomainStatus::Scheduled
            ),
        ) else {
            return Ok(Vec::new());
        };
        Ok(ctx
            .data_unchecked::<Loaders>()
            .consultation
            .load_one(crate::loaders::FreeSlotsOfAdvisor(advisor))
            .await?
            .map(|slots| slots.iter().cloned().map(SlotNode).collect())
            .unwrap_or_default())
    }
    /// Every status change, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ConsultationEventNode>> {
        Ok(ctx
            .data_unchecked::<Loaders>()
            .consultation
            .load_one(crate::loaders::ConsultationTimeline(self.row.id))
            .await?
            .map(|v| v.iter().cloned().map(ConsultationEventNode).collect())
            .unwrap_or_default())
    }
    /// The thread, oldest first (internal notes only for staff).
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<ConsultationMessageConnection> {
        let limit = page_size(first)?;
        let after_id = after.as_deref().map(decode_cursor::<u64>).transpose()?;
        let rows = if limit == 0 {
            Vec::new()
        } else {
            service(ctx)
                .messages(self.row.id, self.access.internal, after_id, limit + 1)
                .await
                .map_err(|e| internal(&e))?
        };
        let (items, has_next) = id_page(rows, limit, |m| m.id, MessageNode);
        let total = items.len() as i64;
        Ok(ConsultationMessageConnection::new(
            items,
            after_id.is_some(),
            has_next,
            total,
        ))
    }
    /// How far the member and the assigned advisor have read.
    async fn read_receipts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ReadReceipt>> {
        let key = domain::consultation::messages::ReceiptsKey {
            consultation: self.row.id,
            member: self.row.member_id,
            advisor: self.row.advisor_id,
            sees_notes: self.access.internal,
        };
        Ok(ctx
            .data_unchecked::<Loaders>()
            .consultation
            .load_one(crate::loaders::ReadReceiptsOf(key))
            .await?
            .map(|rows| rows.iter().map(ReadReceipt::from).collect())
            .unwrap_or_default())
    }
    /// What the advisor recorded; null until completed.
    async fn outcome(&self) -> Option<OutcomeNode> {
        (self.row.status() == DomainStatus::Completed).then(|| OutcomeNode(self.row.clone()))
    }
    /// The member's rating (1–5); null until rated.
    async fn rating(&self) -> Option<i32> {
        self.row.rating.map(i32::from)
    }
    /// The member's comment with the rating; null when none.
    async fn rating_comment(&self) -> Option<&str> {
        self.row.rating_comment.as_deref()
    }
    /// When it was requested.
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.row.created_at.and_utc()
    }
}

crate::connection!(
    ConsultationConnection,
    ConsultationEdge,
    ConsultationNode,
    "consultations"
);

/// Which consultations (staff queue).
#[derive(InputObject, Debug, Default)]
pub struct ConsultationFilterInput {
    /// Only these statuses.
    pub status: Option<Vec<ConsultationStatus>>,
    /// Only those of this advisor.
    pub advisor_id: Option<ID>,
    /// Only those for this boutique.
    pub boutique_id: Option<ID>,
}

/// A page of consultations `viewer` may list.
pub(crate) async fn consultation_page(
    ctx: &Context<'_>,
    viewer: Viewer,
    filter: QueueFilter,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<ConsultationConnection> {
    let limit = page_size(first)?;
    let before = after.as_deref().map(decode_cursor::<u64>).transpose()?;
    let rows = if limit == 0 {
        Vec::new()
    } else {
        service(ctx)
            .list(viewer, &filter, before, limit + 1)
            .await
            .map_err(|e| internal(&e))?
    };
    let access = match viewer {
        Viewer::Member(_) => Access {
            read: true,
            act: true,
            internal: false,
        },
        _ => Access {
            read: true,
            act: true,
            internal: true,
        },
    };
    let (items, has_next) = id_page(
        rows,
        limit,
        |r| r.id,
        |r| ConsultationNode {
            row: Arc::new(r),
            access,
        },
    );
    let total = items.len() as i64;
    Ok(ConsultationConnection::new(
        items,
        before.is_some(),
        has_next,
        total,
    ))
}

/// Consultation reads.
#[derive(Default)]
pub struct ConsultationQuery;

/// Consultation reads.
#[Object]
impl ConsultationQuery {
    /// The consultation queue, newest first (staff): operations see all, an advisor those
    /// assigned to them. `totalCount` counts this page only.
    #[graphql(guard = "StaffGuard::ANY")]
    async fn consultations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
        #[graphql(desc = "Narrow the queue.")] filter: Option<ConsultationFilterInput>,
    ) -> async_graphql::Result<ConsultationConnection> {
        let viewer = viewer_of(ctx)?;
        let f = filter.unwrap_or_default();
        let queue = QueueFilter {
            statuses: f
                .status
                .unwrap_or_default()
                .into_iter()
                .map(ConsultationStatus::domain)
                .collect(),
            advisor_id: f
                .advisor_id
                .as_ref()
                .map(|a| id::decode("Staff", "filter.advisorId", a))
                .transpose()?,
            boutique_id: f
                .boutique_id
                .as_ref()
                .map(|b| id::decode("Boutique", "filter.boutiqueId", b))
                .transpose()?,
            member_id: None,
        };
        consultation_page(ctx, viewer, queue, first, after).await
    }

    /// One consultation, for its member, its advisor (and advisors of the member's other
    /// consultations, read-only) or operations; null otherwise.
    async fn consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<ConsultationNode>> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        Ok(service(ctx)
            .get(id, viewer)
            .await
            .map_err(|e| internal(&e))?
            .map(|(row, access)| ConsultationNode {
                row: Arc::new(row),
                access,
            }))
    }

    /// Every boutique.
    async fn boutiques(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<BoutiqueNode>> {
        Ok(service(ctx)
            .boutiques()
            .await
            .map_err(|e| internal(&e))?
            .into_iter()
            .map(BoutiqueNode)
            .collect())
    }

    /// An advisor's slots in a time range (at most 31 days; staff: the advisor themselves or
    /// operations).
    #[graphql(guard = "StaffGuard::ANY")]
    async fn advisor_slots(
        &self,
        ctx: &Context<'_>,
        advisor_id: ID,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> async_graphql::Result<Vec<SlotNode>> {
        let advisor = id::decode("Staff", "advisorId", &advisor_id)?;
        if let Viewer::Advisor(me) = viewer_of(ctx)?
            && me != advisor
        {
            return Err(ErrorCode::Forbidden.error("advisors see their own slots"));
        }
        if to <= from || to - from > chrono::TimeDelta::days(31) {
            return Err(crate::error::bad_input(
                "to",
                "after `from`, at most 31 days later",
            ));
        }
        Ok(service(ctx)
            .slots(advisor, from.naive_utc(), to.naive_utc(), false)
            .await
            .map_err(|e| internal(&e))?
            .into_iter()
            .map(SlotNode)
            .collect())
    }
}

/// A consultation request.
#[derive(InputObject, Debug)]
pub struct ConsultationRequestInput {
    /// About what.
    pub topic: ConsultationTopic,
    /// What the member would like (1–2000 characters, stored as written).
    pub message: String,
    /// Preferred start times (at most 10, in the future).
    pub preferred_slots: Option<Vec<chrono::DateTime<chrono::Utc>>>,
    /// Products of interest (at most 10).
    pub product_ids: Option<Vec<ID>>,
    /// Images (https URLs, at most 10).
    pub image_urls: Option<Vec<String>>,
    /// Preferred boutique.
    pub boutique_id: Option<ID>,
}

/// A bookable time an advisor publishes.
#[derive(InputObject, Debug)]
pub struct SlotInput {
    /// Start (in the future).
    pub starts_at: chrono::DateTime<chrono::Utc>,
    /// End (15 minutes to 4 hours after the start).
    pub ends_at: chrono::DateTime<chrono::Utc>,
}

/// A draft order line.
#[derive(InputObject, Debug)]
pub struct DraftLineInput {
    /// The SKU.
    pub sku_id: ID,
    /// Units, 1–99.
    pub quantity: i32,
}

/// What the advisor records after the appointment.
#[derive(InputObject, Debug)]
pub struct OutcomeInput {
    /// Notes for the member (1–2000 characters).
    pub notes: String,
    /// Recommended products (at most 10).
    pub recommended_product_ids: Option<Vec<ID>>,
    /// Draft order lines the member can put in their cart (at most 20).
    pub draft_lines: Option<Vec<DraftLineInput>>,
}

/// Result of a consultation change.
#[derive(SimpleObject)]
pub struct ConsultationPayload {
    /// The consultation after the change; null when `errors` is not empty.
    pub consultation: Option<ConsultationNode>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of `sendConsultationMessage`.
#[derive(SimpleObject)]
pub struct ConsultationMessagePayload {
    /// The message; null when `errors` is not empty.
    pub message: Option<MessageNode>,
    /// Why nothing was sent; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of `publishSlots`.
#[derive(SimpleObject)]
pub struct PublishSlotsPayload {
    /// The slots published (times published before are not repeated).
    pub slots: Vec<SlotNode>,
    /// Why nothing was published; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of `createBoutique`.
#[derive(SimpleObject)]
pub struct BoutiquePayload {
    /// The boutique; null when `errors` is not empty.
    pub boutique: Option<BoutiqueNode>,
    /// Why nothing changed; empty on success.
    pub errors: Vec<UserError>,
}

fn error_of(e: ConsultationError) -> Result<Vec<UserError>, async_graphql::Error> {
    let one =
        |code, field: Option<&str>, message: &str| Ok(vec![UserError::new(code, field, message)]);
    match e {
        // not the caller's to see: as if it did not exist
        ConsultationError::NotFound => Err(ErrorCode::NotFound.error("no such consultation")),
        ConsultationError::NotAllowed => {
            Err(ErrorCode::Forbidden.error("you may not do this with this consultation"))
        }
        ConsultationError::Invalid { from, action } => one(
            UserErrorCode::InvalidConsultationTransition,
            None,
            &format!(
                "cannot {} a consultation that is {}",
                match action {
                    Action::Assign => "assign",
                    Action::Schedule => "schedule",
                    Action::Reschedule => "reschedule",
                    Action::Complete => "complete or rate",
                    Action::Cancel => "cancel or write in",
                },
                from.as_str()
            ),
        ),
        ConsultationError::TierRequired { code, name } => one(
            UserErrorCode::TierRequired,
            None,
            &format!("VIP consultations are for {name} ({code}) members and above"),
        ),
        ConsultationError::Input(errors) => Ok(user_errors(errors)),
        ConsultationError::SlotTaken => one(
            UserErrorCode::SlotTaken,
            Some("slotId"),
            "this time was just booked; pick another",
        ),
        ConsultationError::SlotNotFound => one(
            UserErrorCode::NotFound,
            Some("slotId"),
            "no such open time of the assigned advisor",
        ),
        ConsultationError::AdvisorNotFound => one(
            UserErrorCode::NotFound,
            Some("advisorId"),
            "no such active advisor (of the requested boutique)",
        ),
        ConsultationError::AlreadyRated => one(
            UserErrorCode::AlreadyRated,
            Some("rating"),
            "this consultation was rated already",
        ),
    }
}

fn payload(
    result: Result<ConsultationRow, ConsultationError>,
    viewer: Viewer,
) -> async_graphql::Result<ConsultationPayload> {
    Ok(match result {
        Ok(row) => ConsultationPayload {
            consultation: Some(ConsultationNode {
                row: Arc::new(row),
                access: Access {
                    read: true,
                    act: true,
                    internal: !matches!(viewer, Viewer::Member(_)),
                },
            }),
            errors: Vec::new(),
        },
        Err(e) => ConsultationPayload {
            consultation: None,
            errors: error_of(e)?,
        },
    })
}

/// Consultation changes.
#[derive(Default)]
pub struct ConsultationMutation;

/// Consultation changes.
#[Object]
impl ConsultationMutation {
    /// A member asks for a VIP consultation (their tier must include it: `TIER_REQUIRED` says
    /// which tier does).
    #[graphql(guard = "MemberGuard")]
    async fn request_consultation(
        &self,
        ctx: &Context<'_>,
        input: ConsultationRequestInput,
    ) -> async_graphql::Result<ConsultationPayload> {
        let member = member_id(ctx)?;
        let product_ids = input
            .product_ids
            .unwrap_or_default()
            .iter()
            .map(|p| id::decode("Product", "input.productIds", p))
            .collect::<async_graphql::Result<Vec<u64>>>()?;
        let req = NewRequest {
            topic: input.topic.domain(),
            message: input.message,
            preferred_slots: input.preferred_slots.unwrap_or_default(),
            product_ids,
            image_urls: input.image_urls.unwrap_or_default(),
            boutique_id: input
                .boutique_id
                .as_ref()
                .map(|b| id::decode("Boutique", "input.boutiqueId", b))
                .transpose()?,
        };
        let result = service(ctx)
            .request(member, &req)
            .await
            .map_err(|e| internal(&e))?;
        payload(result, Viewer::Member(member))
    }

    /// Operations give a consultation to an advisor (again, while no appointment is booked).
    #[graphql(guard = "StaffGuard::OPS")]
    async fn assign_consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        advisor_id: ID,
    ) -> async_graphql::Result<ConsultationPayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        let advisor = id::decode("Staff", "advisorId", &advisor_id)?;
        let result = service(ctx)
            .assign(id, advisor, viewer)
            .await
            .map_err(|e| internal(&e))?;
        payload(result, viewer)
    }

    /// An advisor publishes bookable times (at most 50 at once).
    #[graphql(guard = "StaffGuard(&[Role::Advisor])")]
    async fn publish_slots(
        &self,
        ctx: &Context<'_>,
        slots: Vec<SlotInput>,
    ) -> async_graphql::Result<PublishSlotsPayload> {
        let (advisor, _) = staff(ctx, &[Role::Advisor])?;
        let times: Vec<_> = slots.iter().map(|s| (s.starts_at, s.ends_at)).collect();
        let result = service(ctx)
            .publish_slots(advisor, &times)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match result {
            Ok(rows) => PublishSlotsPayload {
                slots: rows.into_iter().map(SlotNode).collect(),
                errors: Vec::new(),
            },
            Err(e) => PublishSlotsPayload {
                slots: Vec::new(),
                errors: error_of(e)?,
            },
        })
    }

    /// Books one of the assigned advisor's free slots (the member, the advisor or operations);
    /// of two bookings of one slot exactly one succeeds (`SLOT_TAKEN`).
    async fn schedule_consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        slot_id: ID,
    ) -> async_graphql::Result<ConsultationPayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        let slot = id::decode("AdvisorSlot", "slotId", &slot_id)?;
        let result = service(ctx)
            .schedule(id, slot, viewer)
            .await
            .map_err(|e| internal(&e))?;
        payload(result, viewer)
    }

    /// Moves the appointment to another free slot; the old one is free again.
    async fn reschedule_consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        slot_id: ID,
    ) -> async_graphql::Result<ConsultationPayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        let slot = id::decode("AdvisorSlot", "slotId", &slot_id)?;
        let result = service(ctx)
            .reschedule(id, slot, viewer)
            .await
            .map_err(|e| internal(&e))?;
        payload(result, viewer)
    }

    /// Calls a consultation off (the member, the advisor or operations); its slot is free again.
    async fn cancel_consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "Why, at most 200 characters.")] reason: Option<String>,
    ) -> async_graphql::Result<ConsultationPayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        let result = service(ctx)
            .cancel(id, viewer, reason.as_deref())
            .await
            .map_err(|e| internal(&e))?;
        payload(result, viewer)
    }

    /// The advisor (or operations) records the outcome of the appointment.
    #[graphql(guard = "StaffGuard::ANY")]
    async fn complete_consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: OutcomeInput,
    ) -> async_graphql::Result<ConsultationPayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        let recommended = input
            .recommended_product_ids
            .unwrap_or_default()
            .iter()
            .map(|p| id::decode("Product", "input.recommendedProductIds", p))
            .collect::<async_graphql::Result<Vec<u64>>>()?;
        let draft = input
            .draft_lines
            .unwrap_or_default()
            .iter()
            .map(|l| {
                Ok((
                    id::decode("Sku", "input.draftLines.skuId", &l.sku_id)?,
                    l.quantity,
                ))
            })
            .collect::<async_graphql::Result<Vec<(u64, i32)>>>()?;
        let outcome = Outcome {
            notes: input.notes,
            recommended_product_ids: recommended,
            draft_lines: draft,
        };
        let result = service(ctx)
            .complete(id, viewer, &outcome)
            .await
            .map_err(|e| internal(&e))?;
        payload(result, viewer)
    }

    /// The member rates a completed consultation, once (1–5).
    #[graphql(guard = "MemberGuard")]
    async fn rate_consultation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        rating: i32,
        #[graphql(desc = "At most 500 characters.")] comment: Option<String>,
    ) -> async_graphql::Result<ConsultationPayload> {
        let member = member_id(ctx)?;
        let id = id::decode("Consultation", "id", &id)?;
        let result = service(ctx)
            .rate(id, member, rating, comment.as_deref())
            .await
            .map_err(|e| internal(&e))?;
        payload(result, Viewer::Member(member))
    }

    /// Puts the advisor's draft lines of a completed consultation into the member's cart.
    #[graphql(guard = "MemberGuard")]
    async fn add_consultation_draft_to_cart(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<crate::cart::CartPayload> {
        let member = member_id(ctx)?;
        let cid = id::decode("Consultation", "id", &id)?;
        let found = service(ctx)
            .get(cid, Viewer::Member(member))
            .await
            .map_err(|e| internal(&e))?;
        let Some((row, _)) = found else {
            return Err(ErrorCode::NotFound.error("no such consultation"));
        };
        let mut errors = Vec::new();
        let carts = ctx.data_unchecked::<domain::cart::Carts>();
        for (sku, quantity) in row.draft() {
            if let Err(e) = carts
                .add(member, sku, quantity)
                .await
                .map_err(|e| internal(&e))?
            {
                errors.extend(user_errors(e));
            }
        }
        Ok(crate::cart::CartPayload {
            cart: crate::cart::CartNode::new(member),
            errors,
        })
    }

    /// Writes in a consultation's thread: the member, or the assigned advisor (who can also
    /// write an `internal` note the member never sees). The body is stored exactly as given.
    async fn send_consultation_message(
        &self,
        ctx: &Context<'_>,
        consultation_id: ID,
        #[graphql(desc = "1–2000 characters.")] body: String,
        #[graphql(desc = "https URLs, at most 10.")] image_urls: Option<Vec<String>>,
        #[graphql(desc = "An advisor's internal note (advisors only).")] internal: Option<bool>,
    ) -> async_graphql::Result<ConsultationMessagePayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "consultationId", &consultation_id)?;
        let result = service(ctx)
            .send_message(
                id,
                viewer,
                &body,
                &image_urls.unwrap_or_default(),
                internal.unwrap_or(false),
            )
            .await
            .map_err(|e| crate::error::internal(&e))?;
        Ok(match result {
            Ok(m) => ConsultationMessagePayload {
                message: Some(MessageNode(m)),
                errors: Vec::new(),
            },
            Err(e) => ConsultationMessagePayload {
                message: None,
                errors: error_of(e)?,
            },
        })
    }

    /// Marks the thread read up to a message (read receipts never move backwards).
    async fn mark_consultation_read(
        &self,
        ctx: &Context<'_>,
        consultation_id: ID,
        message_id: ID,
    ) -> async_graphql::Result<ConsultationPayload> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "consultationId", &consultation_id)?;
        let message = id::decode("ConsultationMessage", "messageId", &message_id)?;
        let s = service(ctx);
        if let Err(e) = s
            .mark_read(id, viewer, message)
            .await
            .map_err(|e| internal(&e))?
        {
            return Ok(ConsultationPayload {
                consultation: None,
                errors: error_of(e)?,
            });
        }
        let found = s.get(id, viewer).await.map_err(|e| internal(&e))?;
        Ok(ConsultationPayload {
            consultation: found.map(|(row, access)| ConsultationNode {
                row: Arc::new(row),
                access,
            }),
            errors: Vec::new(),
        })
    }

    /// Creates a boutique (administrators).
    #[graphql(guard = "StaffGuard::ADMIN")]
    async fn create_boutique(
        &self,
        ctx: &Context<'_>,
        code: String,
        name: String,
        name_en: String,
        city: String,
    ) -> async_graphql::Result<BoutiquePayload> {
        let result = service(ctx)
            .create_boutique(&code, &name, &name_en, &city)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match result {
            Ok(b) => BoutiquePayload {
                boutique: Some(BoutiqueNode(b)),
                errors: Vec::new(),
            },
            Err(e) => BoutiquePayload {
                boutique: None,
                errors: user_errors(e),
            },
        })
    }

    /// Puts an advisor in a boutique (administrators); false when the account is not an
    /// advisor or there is no such boutique.
    #[graphql(guard = "StaffGuard::ADMIN")]
    async fn set_advisor_boutique(
        &self,
        ctx: &Context<'_>,
        advisor_id: ID,
        boutique_id: ID,
    ) -> async_graphql::Result<bool> {
        let advisor = id::decode("Staff", "advisorId", &advisor_id)?;
        let boutique = id::decode("Boutique", "boutiqueId", &boutique_id)?;
        service(ctx)
            .set_advisor_boutique(advisor, boutique)
            .await
            .map_err(|e| internal(&e))
    }
}

/// Event ids a subscription remembers, to drop redeliveries.
const SEEN: usize = 256;

/// What a subscriber's stream does next.
enum Next {
    /// Deliver this message.
    Message(u64),
    /// End with this error (access lost, or events missed).
    Stop(async_graphql::Error),
}

struct Watch {
    rx: broadcast::Receiver<Arc<Event>>,
    seen: std::collections::VecDeque<String>,
    service: Consultations,
    viewer: Viewer,
    consultation: u64,
    access: Access,
    stopped: bool,
}

/// The messages of one consultation as they are written, each once. Access is checked again
/// whenever the consultation changes hands or status (an advisor taken off it, a cancellation):
/// a viewer who may no longer read it gets an error and the stream ends; internal notes go only
/// to viewers who may see them at that moment. Missed events (a subscriber too slow) also end
/// the stream with an error, so the client refetches instead of silently skipping messages.
fn messages_of(watch: Watch) -> impl Stream<Item = Next> {
    futures::stream::unfold(watch, |mut w| async move {
        if w.stopped {
            return None;
        }
        loop {
            let event = match w.rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("ruizhu_subscription_events_dropped_total").increment(n);
                    w.stopped = true;
                    let e = ErrorCode::ServiceUnavailable
                        .error("messages were missed; read the thread again and resubscribe");
                    return Some((Next::Stop(e), w));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if event.payload["consultation_id"].as_u64() != Some(w.consultation)
                || w.seen.contains(&event.event_id)
            {
                continue;
            }
            if w.seen.len() == SEEN {
                w.seen.pop_front();
            }
            w.seen.push_back(event.event_id.clone());
            if event.event_type != "consultation.message_added" {
                // a change of hands or status: may this viewer still read it, and how much?
                match w.service.get(w.consultation, w.viewer).await {
                    Ok(Some((_, access))) => {
                        w.access = access;
                        continue;
                    }
                    Ok(None) => {
                        w.stopped = true;
                        let e =
                            ErrorCode::Forbidden.error("you no longer follow this consultation");
                        return Some((Next::Stop(e), w));
                    }
                    Err(e) => {
                        w.stopped = true;
                        return Some((Next::Stop(internal(&e)), w));
                    }
                }
            }
            if !w.access.internal && event.payload["internal"].as_bool() != Some(false) {
                continue;
            }
            if let Some(id) = event.payload["message_id"].as_u64() {
                return Some((Next::Message(id), w));
            }
        }
    })
}

/// Live consultation threads.
#[derive(Default)]
pub struct ConsultationSubscription;

/// Live consultation threads.
#[Subscription]
impl ConsultationSubscription {
    /// New messages of a consultation, in order, for its member (without internal notes), its
    /// advisor and operations.
    async fn consultation_message_added(
        &self,
        ctx: &Context<'_>,
        consultation_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<MessageNode>> + use<>> {
        let viewer = viewer_of(ctx)?;
        let id = id::decode("Consultation", "consultationId", &consultation_id)?;
        // subscribe before the access check, so nothing between the two is missed
        let rx = ctx.data_unchecked::<EventHub>().subscribe_consultation(id);
        let service = service(ctx).clone();
        let Some((_, access)) = service.get(id, viewer).await.map_err(|e| internal(&e))? else {
            return Err(ErrorCode::NotFound.error("no such consultation"));
        };
        let next = messages_of(Watch {
            rx,
            seen: std::collections::VecDeque::with_capacity(SEEN),
            service: service.clone(),
            viewer,
            consultation: id,
            access,
            stopped: false,
        });
        Ok(futures::StreamExt::filter_map(next, move |next| {
            let service = service.clone();
            async move {
                match next {
                    Next::Stop(e) => Some(Err(e)),
                    Next::Message(message) => match service.messages_by_id(&[message]).await {
                        Ok(mut found) => found.remove(&message).map(|m| Ok(MessageNode(m))),
                        Err(e) => Some(Err(internal(&e))),
                    },
                }
            }
        }))
    }
}
