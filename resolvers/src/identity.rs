//! Identity context: logins, sessions, the member profile and address book, staff accounts.

use async_graphql::{Context, ErrorExtensions as _, ID, InputObject, Object, SimpleObject};
use domain::identity::addresses::{Address, AddressInput as DomainAddressInput};
use domain::identity::members::Member;
use domain::identity::sessions::RevokeReason;
use domain::identity::staff::StaffAccount;
use domain::identity::{AuthError, Identity, IssuedTokens, Principal};
use secrecy::SecretString;

use crate::ErrorCode;
use crate::auth::{ClientInfo, MemberGuard, StaffGuard, member_id, session, staff};
use crate::error::internal;
use crate::id;
use crate::loaders::{AddressesByMember, Loaders, MemberById, StaffById};
use crate::payload::{UserError, user_errors};

fn identity<'a>(ctx: &Context<'a>) -> &'a Identity {
    ctx.data_unchecked::<Identity>()
}

/// Maps refused logins to top-level errors with a stable `code` and, where useful, a `reason`.
fn auth_error(err: AuthError) -> async_graphql::Error {
    let with_reason = |code: ErrorCode, message: &str, reason: &'static str| {
        code.error(message)
            .extend_with(|_, e| e.set("reason", reason))
    };
    match err {
        AuthError::InvalidCredentials => ErrorCode::Unauthenticated.error("invalid credentials"),
        AuthError::InvalidWechatCode => with_reason(
            ErrorCode::Unauthenticated,
            "the WeChat login code is invalid, expired or already used; call wx.login again",
            "WECHAT_CODE_INVALID",
        ),
        AuthError::WechatBlocked => with_reason(
            ErrorCode::Forbidden,
            "WeChat has restricted this account",
            "WECHAT_USER_BLOCKED",
        ),
        AuthError::TooManyAttempts { retry_after_secs } => ErrorCode::RateLimited
            .error("too many attempts; try again later")
            .extend_with(|_, e| e.set("retryAfterSeconds", retry_after_secs)),
        AuthError::Unavailable(reason) => {
            tracing::warn!(%reason, "login dependency unavailable");
            ErrorCode::ServiceUnavailable.error("sign-in is briefly unavailable; retry shortly")
        }
        AuthError::Domain(e) => internal(&e),
    }
}

/// Tokens of a new or refreshed session.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// JWT to send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Opaque, single-use token for `refreshSession`; keep it secret.
    pub refresh_token: String,
    /// Seconds until `accessToken` expires.
    pub expires_in: i64,
    /// The signed-in member; null for a staff session.
    pub member: Option<MemberNode>,
    /// The signed-in staff account; null for a member session.
    pub staff: Option<StaffNode>,
}

impl AuthPayload {
    fn new(tokens: IssuedTokens, member: Option<Member>, staff: Option<StaffAccount>) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_in: i64::try_from(tokens.expires_in).unwrap_or(i64::MAX),
            member: member.map(MemberNode),
            staff: staff.map(StaffNode),
        }
    }
}

/// A member (customer), as they see themselves (and as operations see them).
pub struct MemberNode(pub Member);

/// A member (customer), as they see themselves (and as operations see them).
#[Object(name = "Member")]
impl MemberNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Member", self.0.id)
    }

    /// Display name chosen by the member (empty until set).
    async fn nickname(&self) -> &str {
        &self.0.nickname
    }

    /// Avatar image URL (empty until set).
    async fn avatar_url(&self) -> &str {
        &self.0.avatar_url
    }

    /// The bound phone number, masked (`138****5678`); null when none is bound.
    async fn phone_masked(&self, ctx: &Context<'_>) -> Option<String> {
        identity(ctx).phone_masked(&self.0)
    }

    /// When the member first signed in.
    async fn member_since(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.and_utc()
    }

    /// The cart, priced at today's prices.
    async fn cart(&self) -> crate::cart::CartNode {
        crate::cart::CartNode::new(self.0.id)
    }

    /// Birthday (set once, in `updateProfile`); null until given. Brings a yearly birthday
    /// coupon in tiers that have one.
    async fn birthday(&self) -> Option<chrono::NaiveDate> {
        self.0.birthday
    }

    /// VIP consultations, newest first (`totalCount` counts this page only).
    async fn consultations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<crate::consultation::ConsultationConnection> {
        // the member themselves, or operations looking at this member
        let viewer = crate::consultation::viewer_of(ctx)?;
        let filter = domain::consultation::QueueFilter {
            member_id: Some(self.0.id),
            ..Default::default()
        };
        crate::consultation::consultation_page(ctx, viewer, filter, first, after).await
    }

    /// Tier, qualifying spend and progress to the next tier.
    async fn tier(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<crate::membership::MemberTierNode> {
        crate::membership::standing(ctx, self.0.id).await
    }

    /// Points balance.
    async fn points(&self) -> i64 {
        self.0.points_balance
    }

    /// The points ledger, newest first.
    async fn points_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<crate::membership::PointsEntryConnection> {
        crate::membership::points_history(ctx, self.0.id, first, after).await
    }

    /// Coupons held, newest first (`totalCount` counts this page only).
    async fn coupons(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only coupons in this state; all when omitted.")] status: Option<
            crate::membership::CouponStatus,
        >,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<crate::membership::CouponConnection> {
        crate::membership::member_coupons(ctx, self.0.id, status, first, after).await
    }

    /// The member's orders, newest first.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0–50; 20 when omitted.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor.")] after: Option<String>,
        #[graphql(desc = "Only orders in this status.")] status: Option<crate::order::OrderStatus>,
    ) -> async_graphql::Result<crate::order::OrderConnection> {
        let filter = domain::order::query::OrderFilter {
            member_id: Some(self.0.id),
            statuses: status.map(|s| vec![s.domain()]).unwrap_or_default(),
            ..Default::default()
        };
        crate::order::order_connection(ctx, filter, first, after).await
    }

    /// Address book, default first.
    async fn addresses(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AddressNode>> {
        let loaded = ctx
            .data_unchecked::<Loaders>()
            .identity
            .load_one(AddressesByMember(self.0.id))
            .await?;
        Ok(loaded
            .map(|list| list.iter().cloned().map(AddressNode).collect())
            .unwrap_or_default())
    }
}

/// A delivery address.
pub struct AddressNode(pub Address);

/// A delivery address in the member's address book.
#[Object(name = "Address")]
impl AddressNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Address", self.0.id)
    }
    /// Who receives the parcel.
    async fn recipient(&self) -> &str {
        &self.0.recipient
    }
    /// Recipient's phone, masked (`138****5678`).
    async fn phone_masked(&self) -> &str {
        &self.0.phone_masked
    }
    /// Province (省).
    async fn province(&self) -> &str {
        &self.0.province
    }
    /// City (市).
    async fn city(&self) -> &str {
        &self.0.city
    }
    /// District (区/县).
    async fn district(&self) -> &str {
        &self.0.district
    }
    /// Street, building, room.
    async fn detail(&self) -> &str {
        &self.0.detail
    }
    /// Six-digit postal code; null when not given.
    async fn postal_code(&self) -> Option<&str> {
        self.0.postal_code.as_deref()
    }
    /// Whether checkout picks this address by default.
    async fn is_default(&self) -> bool {
        self.0.is_default
    }
}

/// A staff account.
pub struct StaffNode(pub StaffAccount);

/// A staff account (advisor, operations or administrator).
#[Object(name = "StaffAccount")]
impl StaffNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Staff", self.0.id)
    }
    /// Sign-in name.
    async fn username(&self) -> &str {
        &self.0.username
    }
    /// Name shown to colleagues and clients.
    async fn display_name(&self) -> &str {
        &self.0.display_name
    }
    /// `ADVISOR`, `OPS` or `ADMIN`.
    async fn role(&self) -> &str {
        &self.0.role
    }
}

/// Profile fields to change; omitted fields stay as they are.
#[derive(InputObject, Debug)]
pub struct UpdateProfileInput {
    /// 1–32 characters.
    pub nickname: Option<String>,
    /// An https URL of at most 512 characters.
    pub avatar_url: Option<String>,
    /// Birthday, between 1900 and today; can be set once (customer service corrects it).
    pub birthday: Option<chrono::NaiveDate>,
}

/// An address as typed by the member.
#[derive(InputObject, Debug)]
pub struct AddressInput {
    /// Who receives the parcel (1–32 characters).
    pub recipient: String,
    /// Recipient's mainland mobile number (11 digits); stored encrypted, shown masked.
    pub phone: String,
    /// Province (1–32 characters).
    pub province: String,
    /// City (1–32 characters).
    pub city: String,
    /// District (1–32 characters).
    pub district: String,
    /// Street, building, room (2–120 characters).
    pub detail: String,
    /// Six-digit postal code.
    pub postal_code: Option<String>,
    /// Make this the default address.
    #[graphql(default)]
    pub is_default: bool,
}

impl From<AddressInput> for DomainAddressInput {
    fn from(i: AddressInput) -> Self {
        Self {
            recipient: i.recipient,
            phone: i.phone,
            province: i.province,
            city: i.city,
            district: i.district,
            detail: i.detail,
            postal_code: i.postal_code,
            is_default: i.is_default,
        }
    }
}

/// Result of `updateProfile`.
#[derive(SimpleObject)]
pub struct ProfilePayload {
    /// The member after the change; null when `errors` is not empty.
    pub member: Option<MemberNode>,
    /// What was wrong with the input; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of an address change.
#[derive(SimpleObject)]
pub struct AddressPayload {
    /// The address after the change; null when `errors` is not empty.
    pub address: Option<AddressNode>,
    /// What was wrong; empty on success.
    pub errors: Vec<UserError>,
}

/// Result of `removeAddress`.
#[derive(SimpleObject)]
pub struct RemoveAddressPayload {
    /// Id of the removed address; null when `errors` is not empty.
    pub removed_id: Option<ID>,
    /// What was wrong; empty on success.
    pub errors: Vec<UserError>,
}

fn address_payload(result: Result<Address, Vec<domain::validation::UserError>>) -> AddressPayload {
    match result {
        Ok(a) => AddressPayload {
            address: Some(AddressNode(a)),
            errors: Vec::new(),
        },
        Err(e) => AddressPayload {
            address: None,
            errors: user_errors(e),
        },
    }
}

/// Identity reads.
#[derive(Default)]
pub struct IdentityQuery;

/// Identity reads.
#[Object]
impl IdentityQuery {
    /// The signed-in member. `UNAUTHENTICATED` when signed out, `FORBIDDEN` for staff.
    #[graphql(guard = "MemberGuard")]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<MemberNode> {
        let id = member_id(ctx)?;
        let loaded = ctx
            .data_unchecked::<Loaders>()
            .identity
            .load_one(MemberById(id))
            .await?;
        loaded
            .map(MemberNode)
            .ok_or_else(|| ErrorCode::Unauthenticated.error("member no longer exists"))
    }

    /// The signed-in staff account. `UNAUTHENTICATED` when signed out, `FORBIDDEN` for members.
    #[graphql(guard = "StaffGuard::ANY")]
    async fn staff_me(&self, ctx: &Context<'_>) -> async_graphql::Result<StaffNode> {
        let (id, _) = staff(ctx, StaffGuard::ANY.0)?;
        let loaded = ctx
            .data_unchecked::<Loaders>()
            .identity
            .load_one(StaffById(id))
            .await?;
        loaded
            .map(StaffNode)
            .ok_or_else(|| ErrorCode::Unauthenticated.error("account no longer exists"))
    }
}

/// Identity changes.
#[derive(Default)]
pub struct IdentityMutation;

/// Identity changes.
#[Object]
impl IdentityMutation {
    /// Signs a member in with the code from `wx.login()`. Errors: `UNAUTHENTICATED` with
    /// `reason: WECHAT_CODE_INVALID` (invalid, expired or used code), `FORBIDDEN` with
    /// `reason: WECHAT_USER_BLOCKED`, `RATE_LIMITED`, `SERVICE_UNAVAILABLE` (retry).
    async fn login_with_we_chat(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<AuthPayload> {
        let (tokens, member) = identity(ctx)
            .login_with_wechat(&code)
            .await
            .map_err(auth_error)?;
        Ok(AuthPayload::new(tokens, Some(member), None))
    }

    /// Exchanges a refresh token for new tokens. Each refresh token works once: presenting a
    /// used one signs the whole session out (`UNAUTHENTICATED`).
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let ident = identity(ctx);
        let tokens = ident.refresh(&refresh_token).await.map_err(auth_error)?;
        let (member, staff_account) = match tokens.principal {
            Principal::Member { id } => (
                ident
                    .members(&[id])
                    .await
                    .map_err(|e| internal(&e))?
                    .remove(&id),
                None,
            ),
            Principal::Staff { id, .. } => (
                None,
                ident
                    .staff(&[id])
                    .await
                    .map_err(|e| internal(&e))?
                    .remove(&id),
            ),
        };
        Ok(AuthPayload::new(tokens, member, staff_account))
    }

    /// Ends the current session everywhere (within a second on every server).
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let session = session(ctx)?;
        identity(ctx)
            .revoke(&session.session_id, RevokeReason::Logout)
            .await
            .map_err(|e| internal(&e))?;
        Ok(true)
    }

    /// Signs a staff member in. After repeated failures for a username or from an address,
    /// further attempts are refused with `RATE_LIMITED` for a while.
    async fn staff_login(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let ip = ctx.data_opt::<ClientInfo>().and_then(|c| c.ip);
        let password = SecretString::from(password);
        let (tokens, account) = identity(ctx)
            .staff_login(&username, &password, ip)
            .await
            .map_err(auth_error)?;
        Ok(AuthPayload::new(tokens, None, Some(account)))
    }

    /// Changes the member's nickname or avatar.
    #[graphql(guard = "MemberGuard")]
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateProfileInput,
    ) -> async_graphql::Result<ProfilePayload> {
        let id = member_id(ctx)?;
        let result = identity(ctx)
            .update_profile(
                id,
                input.nickname.as_deref(),
                input.avatar_url.as_deref(),
                input.birthday,
            )
            .await
            .map_err(|e| internal(&e))?;
        Ok(match result {
            Ok(m) => ProfilePayload {
                member: Some(MemberNode(m)),
                errors: Vec::new(),
            },
            Err(e) => ProfilePayload {
                member: None,
                errors: user_errors(e),
            },
        })
    }

    /// Binds the phone number behind a `getPhoneNumber` button code (not the login code).
    #[graphql(guard = "MemberGuard")]
    async fn bind_phone(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<MemberNode> {
        let id = member_id(ctx)?;
        identity(ctx)
            .bind_phone(id, &code)
            .await
            .map(MemberNode)
            .map_err(auth_error)
    }

    /// Adds an address (at most 20); the first one becomes the default.
    #[graphql(guard = "MemberGuard")]
    async fn add_address(
        &self,
        ctx: &Context<'_>,
        input: AddressInput,
    ) -> async_graphql::Result<AddressPayload> {
        let id = member_id(ctx)?;
        let result = identity(ctx)
            .add_address(id, &input.into())
            .await
            .map_err(|e| internal(&e))?;
        Ok(address_payload(result))
    }

    /// Replaces the fields of one of the member's addresses.
    #[graphql(guard = "MemberGuard")]
    async fn update_address(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: AddressInput,
    ) -> async_graphql::Result<AddressPayload> {
        let member = member_id(ctx)?;
        let address = id::decode("Address", "id", &id)?;
        let result = identity(ctx)
            .update_address(member, address, &input.into())
            .await
            .map_err(|e| internal(&e))?;
        Ok(address_payload(result))
    }

    /// Removes one of the member's addresses.
    #[graphql(guard = "MemberGuard")]
    async fn remove_address(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<RemoveAddressPayload> {
        let member = member_id(ctx)?;
        let address = id::decode("Address", "id", &id)?;
        let result = identity(ctx)
            .remove_address(member, address)
            .await
            .map_err(|e| internal(&e))?;
        Ok(match result {
            Ok(removed) => RemoveAddressPayload {
                removed_id: Some(id::encode("Address", removed)),
                errors: Vec::new(),
            },
            Err(e) => RemoveAddressPayload {
                removed_id: None,
                errors: user_errors(e),
            },
        })
    }

    /// Makes one of the member's addresses the default.
    #[graphql(guard = "MemberGuard")]
    async fn set_default_address(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<AddressPayload> {
        let member = member_id(ctx)?;
        let address = id::decode("Address", "id", &id)?;
        let result = identity(ctx)
            .set_default_address(member, address)
            .await
            .map_err(|e| internal(&e))?;
        Ok(address_payload(result))
    }
}
