//! Payment context: WeChat Pay parameters for the mini-program, refunds for operations, and the
//! payment and refunds of an order. Notifications arrive over HTTP (`src/http/webhooks.rs`).

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use domain::payment::{PaymentError, PaymentRow, Payments, Recorded, RefundError, RefundRow};
use domain::wechatpay::PayParams;

use crate::ErrorCode;
use crate::auth::{MemberGuard, StaffGuard, member_id, staff};
use crate::error::internal;
use crate::id;
use crate::loaders::{Loaders, OrderById};
use crate::money::Money;
use crate::order::OrderNode;
use crate::payload::{UserError, UserErrorCode};

fn payments<'a>(ctx: &Context<'a>) -> &'a Payments {
    ctx.data_unchecked::<Payments>()
}

/// Whether development payments are on (hides `devConfirmPayment` from introspection otherwise).
fn development_payments(ctx: &Context<'_>) -> bool {
    ctx.data_opt::<Payments>()
        .is_some_and(Payments::is_development)
}

/// The arguments of `wx.requestPayment`, ready to pass as they are.
#[derive(SimpleObject, Debug, Clone)]
pub struct WeChatPayParams {
    /// The mini-program's AppID (covered by `paySign`; not an argument of `wx.requestPayment`).
    pub app_id: String,
    /// Seconds since the epoch, as a string.
    pub time_stamp: String,
    /// Random string of at most 32 characters.
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// Always `RSA`.
    pub sign_type: String,
    /// RSA-SHA256 signature over `appId\ntimeStamp\nnonceStr\npackage\n`, base64.
    pub pay_sign: String,
}

impl From<PayParams> for WeChatPayParams {
    fn from(p: PayParams) -> Self {
        Self {
            app_id: p.app_id,
            time_stamp: p.time_stamp,
            nonce_str: p.nonce_str,
            package: p.package,
            sign_type: p.sign_type,
            pay_sign: p.pay_sign,
        }
    }
}

/// Result of `createWeChatPayment`.
#[derive(SimpleObject, Debug, Default)]
pub struct CreateWeChatPaymentPayload {
    /// Pass to `wx.requestPayment`; null when `errors` is not empty. Its success callback is
    /// not proof of payment: watch the order's status.
    pub params: Option<WeChatPayParams>,
    /// True when these are development parameters (no merchant configured): they cannot pay
    /// anything; use `devConfirmPayment` instead.
    pub development: bool,
    /// Why no parameters were returned.
    pub errors: Vec<UserError>,
}

/// Result of `devConfirmPayment`.
#[derive(SimpleObject, Default)]
pub struct DevConfirmPaymentPayload {
    /// The order after the payment was recorded.
    pub order: Option<OrderNode>,
    /// Why nothing was recorded.
    pub errors: Vec<UserError>,
}

/// Where a payment is.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// A prepay exists; waiting for the payer.
    Prepay,
    /// Paid.
    Paid,
    /// Closed unpaid (the order expired).
    Closed,
}

/// The WeChat Pay payment of an order.
pub struct PaymentNode(pub std::sync::Arc<PaymentRow>);

/// The WeChat Pay payment of an order.
#[Object(name = "Payment")]
impl PaymentNode {
    /// Where the payment is.
    async fn status(&self) -> PaymentStatus {
        match self.0.status.as_str() {
            domain::payment::PAYMENT_PAID => PaymentStatus::Paid,
            domain::payment::PAYMENT_CLOSED => PaymentStatus::Closed,
            _ => PaymentStatus::Prepay,
        }
    }
    /// The amount asked for.
    async fn amount(&self) -> Money {
        Money::cny(self.0.amount_fen)
    }
    /// WeChat Pay's transaction id, once paid (also on the payer's WeChat receipt).
    async fn transaction_id(&self) -> Option<&str> {
        self.0.transaction_id.as_deref()
    }
    /// When it was paid.
    async fn paid_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.paid_at.map(|t| t.and_utc())
    }
}

/// Where a refund is.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Recorded; being sent to WeChat Pay.
    Pending,
    /// Accepted by WeChat Pay; the money is on its way.
    Processing,
    /// Refunded.
    Success,
    /// Closed by WeChat Pay without paying out.
    Closed,
    /// Failed or refused; needs operations.
    Abnormal,
}

/// A refund of an order.
pub struct RefundNode(pub RefundRow);

/// A refund of an order.
#[Object(name = "Refund")]
impl RefundNode {
    /// Opaque id.
    async fn id(&self) -> ID {
        id::encode("Refund", self.0.id)
    }
    /// Our refund number at WeChat Pay (deterministic, so a retry is the same refund).
    async fn out_refund_no(&self) -> &str {
        &self.0.out_refund_no
    }
    /// How much.
    async fn amount(&self) -> Money {
        Money::cny(self.0.amount_fen)
    }
    /// Why (shown to the payer).
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// Where it is.
    async fn status(&self) -> RefundStatus {
        match self.0.status.as_str() {
            "PROCESSING" => RefundStatus::Processing,
            "SUCCESS" => RefundStatus::Success,
            "CLOSED" => RefundStatus::Closed,
            "ABNORMAL" => RefundStatus::Abnormal,
            _ => RefundStatus::Pending,
        }
    }
    /// True for the automatic refund of a payment that arrived after the order was cancelled.
    async fn automatic(&self) -> bool {
        self.0.kind == "auto"
    }
    /// When it was requested.
    async fn requested_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.and_utc()
    }
    /// When it reached its final status.
    async fn finished_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.finished_at.map(|t| t.and_utc())
    }
}

/// Result of `refundOrder`.
#[derive(SimpleObject, Default)]
pub struct RefundOrderPayload {
    /// The refund (PENDING or PROCESSING until WeChat Pay confirms it).
    pub refund: Option<RefundNode>,
    /// The order, REFUNDING while the refund is in flight.
    pub order: Option<OrderNode>,
    /// Why nothing was refunded.
    pub errors: Vec<UserError>,
}

fn payment_error(e: &PaymentError) -> async_graphql::Result<UserError> {
    Ok(match e {
        PaymentError::NotFound => {
            UserError::new(UserErrorCode::NotFound, Some("orderId"), "no such order")
        }
        PaymentError::NotPayable(status) => UserError::new(
            UserErrorCode::InvalidOrderTransition,
            Some("orderId"),
            format!("the order is {status}, not waiting for payment"),
        ),
        PaymentError::Expired => UserError::new(
            UserErrorCode::PaymentExpired,
            Some("orderId"),
            "the payment deadline has passed",
        ),
        PaymentError::Unavailable(_) => {
            return Err(ErrorCode::ServiceUnavailable
                .error("WeChat Pay is briefly unavailable; retry shortly"));
        }
        PaymentError::Disabled => {
            return Err(ErrorCode::ServiceUnavailable.error("payments are not configured here"));
        }
    })
}

async fn order_node(ctx: &Context<'_>, order_id: u64) -> async_graphql::Result<Option<OrderNode>> {
    // the loaders keep nothing between batches: this reads the order as the mutation left it
    let loaders = ctx.data_unchecked::<Loaders>();
    Ok(loaders
        .order
        .load_one(OrderById(order_id))
        .await?
        .map(OrderNode))
}

/// Payment mutations.
#[derive(Default)]
pub struct PaymentMutation;

/// Payment mutations.
#[Object]
impl PaymentMutation {
    /// Starts (or resumes) paying for the caller's unpaid order with WeChat Pay: returns the
    /// `wx.requestPayment` parameters. Calling it again reuses the same prepay while it is valid.
    #[graphql(name = "createWeChatPayment", guard = "MemberGuard")]
    async fn create_wechat_payment(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<CreateWeChatPaymentPayload> {
        let member = member_id(ctx)?;
        let id = id::decode("Order", "orderId", &order_id)?;
        let service = payments(ctx);
        match service
            .create_payment(id, member)
            .await
            .map_err(|e| internal(&e))?
        {
            Ok(params) => Ok(CreateWeChatPaymentPayload {
                params: Some(params.into()),
                development: service.is_development(),
                errors: vec![],
            }),
            Err(e) => Ok(CreateWeChatPaymentPayload {
                errors: vec![payment_error(&e)?],
                ..Default::default()
            }),
        }
    }

    /// Development only (no merchant configured, never in production): records a payment for
    /// the caller's order through the same path as a verified WeChat Pay notification.
    #[graphql(guard = "MemberGuard", visible = "development_payments")]
    async fn dev_confirm_payment(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<DevConfirmPaymentPayload> {
        let member = member_id(ctx)?;
        let id = id::decode("Order", "orderId", &order_id)?;
        let service = payments(ctx);
        if !service.is_development() {
            return Err(ErrorCode::Forbidden
                .error("devConfirmPayment exists only with development payments"));
        }
        match service
            .dev_confirm(id, member)
            .await
            .map_err(|e| internal(&e))?
        {
            Ok(Recorded::Conflict) => Ok(DevConfirmPaymentPayload {
                order: order_node(ctx, id).await?,
                errors: vec![UserError::new(
                    UserErrorCode::InvalidOrderTransition,
                    Some("orderId"),
                    "the order cannot take a payment now",
                )],
            }),
            Ok(_) => Ok(DevConfirmPaymentPayload {
                order: order_node(ctx, id).await?,
                errors: vec![],
            }),
            Err(e) => Ok(DevConfirmPaymentPayload {
                order: None,
                errors: vec![payment_error(&e)?],
            }),
        }
    }

    /// Operations refund part or all of a paid order (`amount` in fen; all refunds together at
    /// most what was paid). The order is REFUNDING until WeChat Pay confirms, then REFUNDED
    /// (full) or back to its previous status (partial, or the refund failed).
    #[graphql(guard = "StaffGuard::OPS")]
    async fn refund_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        #[graphql(desc = "Fen to refund, at least 1.")] amount: i64,
        #[graphql(desc = "Shown to the payer; 1–80 characters.")] reason: String,
    ) -> async_graphql::Result<RefundOrderPayload> {
        let (staff_id, _) = staff(ctx, StaffGuard::OPS.0)?;
        let id = id::decode("Order", "orderId", &order_id)?;
        let result = payments(ctx)
            .refund_order(id, staff_id, amount, &reason)
            .await
            .map_err(|e| internal(&e))?;
        let error = match result {
            Ok(refund) => {
                return Ok(RefundOrderPayload {
                    order: order_node(ctx, refund.order_id).await?,
                    refund: Some(RefundNode(refund)),
                    errors: vec![],
                });
            }
            Err(RefundError::NotFound) => {
                UserError::new(UserErrorCode::NotFound, Some("orderId"), "no such order")
            }
            Err(RefundError::InvalidTransition(status)) => UserError::new(
                UserErrorCode::InvalidOrderTransition,
                Some("orderId"),
                format!("an order that is {status} cannot be refunded"),
            ),
            Err(RefundError::RefundInProgress) => UserError::new(
                UserErrorCode::InvalidOrderTransition,
                Some("orderId"),
                "a refund of this order is still on its way",
            ),
            Err(RefundError::NotPaid) => UserError::new(
                UserErrorCode::InvalidOrderTransition,
                Some("orderId"),
                "the order has no recorded payment",
            ),
            Err(RefundError::InvalidAmount { refundable_fen }) => UserError::new(
                UserErrorCode::InvalidInput,
                Some("amount"),
                format!("between 1 and {refundable_fen} fen"),
            ),
            Err(RefundError::InvalidReason) => UserError::new(
                UserErrorCode::InvalidInput,
                Some("reason"),
                "1–80 characters",
            ),
        };
        Ok(RefundOrderPayload {
            errors: vec![error],
            ..Default::default()
        })
    }
}

/// `Order.payment` and `Order.refunds`, batched.
pub(crate) async fn payment_of(
    ctx: &Context<'_>,
    order_id: u64,
) -> async_graphql::Result<Option<PaymentNode>> {
    let loaders = ctx.data_unchecked::<Loaders>();
    Ok(loaders
        .payment
        .load_one(crate::loaders::PaymentByOrder(order_id))
        .await?
        .map(PaymentNode))
}

/// The refunds of an order, oldest first.
pub(crate) async fn refunds_of(
    ctx: &Context<'_>,
    order_id: u64,
) -> async_graphql::Result<Vec<RefundNode>> {
    let loaders = ctx.data_unchecked::<Loaders>();
    Ok(loaders
        .payment
        .load_one(crate::loaders::RefundsByOrder(order_id))
        .await?
        .map(|r| r.iter().cloned().map(RefundNode).collect())
        .unwrap_or_default())
}
