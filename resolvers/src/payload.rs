//! Typed errors in mutation payloads (`errors { code field message }`): expected failures the
//! user can fix, as opposed to top-level errors (auth, limits, system).

use async_graphql::{Enum, SimpleObject};
use domain::validation;

/// What kind of user error.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserErrorCode {
    /// A field is missing, too long, malformed or out of range.
    InvalidInput,
    /// A per-member limit is reached (e.g. 20 addresses, 50 cart lines).
    LimitReached,
    /// The thing to change does not exist or belongs to someone else.
    NotFound,
    /// The order has no lines.
    EmptyOrder,
    /// Not enough stock for the SKU in `skuId`.
    OutOfStock,
    /// The member would exceed the purchase limit of the SKU in `skuId`.
    PurchaseLimitExceeded,
    /// The SKU in `skuId` does not exist, is inactive or its product is not on sale.
    SkuUnavailable,
    /// The delivery address is not one of the member's.
    AddressNotFound,
    /// The idempotency key was used before with different input.
    IdempotencyKeyReused,
    /// The coupon does not apply to any item of this order.
    CouponNotApplicable,
    /// The member holds no coupon with this code.
    CouponNotFound,
    /// The coupon is past its validity.
    CouponExpired,
    /// The coupon is not valid yet.
    CouponNotYetValid,
    /// The coupon was already used (or is held by another order).
    CouponUsed,
    /// The items the coupon applies to do not reach its minimum spend.
    CouponMinSpend,
    /// Every coupon of this kind has been given out.
    CouponSoldOut,
    /// The coupon cannot be claimed (switched off, or not open to claims).
    CouponUnavailable,
    /// The member's tier is too low (for the item in `skuId`, or for the coupon).
    TierRequired,
    /// The member has fewer points than asked for.
    PointsInsufficient,
    /// The consultation's status does not allow this.
    InvalidConsultationTransition,
    /// The appointment slot was booked by someone else first.
    SlotTaken,
    /// It was rated already.
    AlreadyRated,
    /// The order's status does not allow this (e.g. shipping an unpaid order).
    InvalidOrderTransition,
    /// The order's payment deadline has passed; it will be cancelled.
    PaymentExpired,
}

/// An expected failure of a mutation, with the input field at fault.
#[derive(SimpleObject, Debug, Clone)]
pub struct UserError {
    /// Machine-readable kind.
    pub code: UserErrorCode,
    /// Path of the input field at fault, e.g. `input.phone`; null when no single field is.
    pub field: Option<String>,
    /// Human-readable explanation.
    pub message: String,
    /// The SKU concerned, for stock, availability and purchase-limit errors; null otherwise.
    pub sku_id: Option<async_graphql::ID>,
}

impl From<validation::UserError> for UserError {
    fn from(e: validation::UserError) -> Self {
        let code = match e.code {
            validation::UserErrorCode::InvalidInput => UserErrorCode::InvalidInput,
            validation::UserErrorCode::LimitReached => UserErrorCode::LimitReached,
            validation::UserErrorCode::NotFound => UserErrorCode::NotFound,
        };
        Self {
            code,
            field: e.field,
            message: e.message,
            sku_id: None,
        }
    }
}

impl UserError {
    /// An error of `code` on `field`.
    pub fn new(code: UserErrorCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.map(str::to_owned),
            message: message.into(),
            sku_id: None,
        }
    }
}

/// Converts domain user errors for a payload.
pub fn user_errors(errors: Vec<validation::UserError>) -> Vec<UserError> {
    errors.into_iter().map(UserError::from).collect()
}
