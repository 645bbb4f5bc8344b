//! Who is calling, and the guards built on it.
//!
//! The transport (HTTP handler or WebSocket `connection_init`) verifies the token before
//! anything executes and puts a [`Viewer`] into the request data: a token that is present but
//! invalid, expired or revoked never reaches a resolver (the request fails `UNAUTHENTICATED`).
//! Guards then answer `UNAUTHENTICATED` to anonymous callers and `FORBIDDEN` to callers of the
//! wrong kind or role.

use std::net::IpAddr;

use async_graphql::{Context, Guard};
use domain::identity::{Principal, Role, TokenSubject};

use crate::ErrorCode;

/// The caller of one request or WebSocket connection.
#[derive(Debug, Clone, Default)]
pub enum Viewer {
    /// No credentials presented.
    #[default]
    Anonymous,
    /// A verified access token of a live session.
    Authenticated(TokenSubject),
}

/// Where the request came from (for per-IP throttling).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientInfo {
    /// The client address as the server sees it.
    pub ip: Option<IpAddr>,
}

/// The caller of this request.
pub fn viewer<'a>(ctx: &Context<'a>) -> &'a Viewer {
    static ANONYMOUS: Viewer = Viewer::Anonymous;
    ctx.data_opt::<Viewer>().unwrap_or(&ANONYMOUS)
}

/// The calling member's id; `UNAUTHENTICATED` when anonymous, `FORBIDDEN` for staff.
pub fn member_id(ctx: &Context<'_>) -> async_graphql::Result<u64> {
    match viewer(ctx) {
        Viewer::Anonymous => Err(ErrorCode::Unauthenticated.error("sign in to do this")),
        Viewer::Authenticated(s) => match s.principal {
            Principal::Member { id } => Ok(id),
            Principal::Staff { .. } => Err(ErrorCode::Forbidden.error("only members can do this")),
        },
    }
}

/// The calling staff account and role when it is one of `roles`.
pub fn staff(ctx: &Context<'_>, roles: &[Role]) -> async_graphql::Result<(u64, Role)> {
    match viewer(ctx) {
        Viewer::Anonymous => Err(ErrorCode::Unauthenticated.error("sign in to do this")),
        Viewer::Authenticated(s) => match s.principal {
            Principal::Staff { id, role } if roles.contains(&role) => Ok((id, role)),
            _ => Err(ErrorCode::Forbidden.error("your role may not do this")),
        },
    }
}

/// The session of an authenticated caller.
pub fn session<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a TokenSubject> {
    match viewer(ctx) {
        Viewer::Anonymous => Err(ErrorCode::Unauthenticated.error("sign in to do this")),
        Viewer::Authenticated(s) => Ok(s),
    }
}

/// Guard: a signed-in member.
#[derive(Debug, Clone, Copy)]
pub struct MemberGuard;

impl Guard for MemberGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        member_id(ctx).map(|_| ())
    }
}

/// Guard: a signed-in staff account with one of these roles.
#[derive(Debug, Clone, Copy)]
pub struct StaffGuard(pub &'static [Role]);

impl StaffGuard {
    /// Any staff role.
    pub const ANY: StaffGuard = StaffGuard(&[Role::Advisor, Role::Ops, Role::Admin]);
    /// Operations and administrators.
    pub const OPS: StaffGuard = StaffGuard(&[Role::Ops, Role::Admin]);
    /// Administrators only.
    pub const ADMIN: StaffGuard = StaffGuard(&[Role::Admin]);
}

impl Guard for StaffGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        staff(ctx, self.0).map(|_| ())
    }
}
