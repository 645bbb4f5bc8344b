//! The order state machine: which transitions exist, and nothing else.
//!
//! ```text
//! PENDING_PAYMENT ─pay─▶ PAID ─ship─▶ SHIPPED ─deliver─▶ DELIVERED ─complete─▶ COMPLETED
//!        │                 ▲ │                 │                   │
//!      cancel  paid after  │ └──────── start refund (partial or full) ────┘
//!        ▼     cancel      │                   ▼
//!    CANCELLED ────────────┘               REFUNDING ─full refund done─▶ REFUNDED
//!                          back to PAID / SHIPPED / DELIVERED ◀─┘ (partial done, or failed)
//! ```

use std::fmt;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Placed, stock reserved, waiting for payment until the deadline.
    PendingPayment,
    /// Paid; waiting to be shipped.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer.
    Delivered,
    /// Closed for good (after delivery and the return window).
    Completed,
    /// Cancelled before payment; its stock went back.
    Cancelled,
    /// A refund is in progress.
    Refunding,
    /// Refunded in full.
    Refunded,
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderAction {
    /// A verified payment arrived.
    Pay,
    /// A verified payment arrived after the order was cancelled, and its stock could be
    /// reserved again.
    PayAfterCancel,
    /// Cancelled by the customer, by operations, or by the payment deadline passing.
    Cancel,
    /// Shipped by operations.
    Ship,
    /// Receipt confirmed by the customer.
    Deliver,
    /// Closed after delivery.
    Complete,
    /// A refund was requested.
    StartRefund,
    /// The refund went through and the order is now refunded in full.
    FinishRefund,
    /// A partial refund went through, or the refund failed: the order returns to where it
    /// was before the refund started (which must be a status a refund can start from).
    ResumeAfterRefund(OrderStatus),
}

/// The action is not allowed in the current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action:?} an order that is {from}")]
pub struct InvalidTransition {
    /// Status the order was in.
    pub from: OrderStatus,
    /// What was attempted.
    pub action: OrderAction,
}

impl OrderStatus {
    /// Every status.
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::PendingPayment,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Refunding,
        OrderStatus::Refunded,
    ];

    /// The status `action` leads to from here, or why it cannot happen.
    pub fn apply(self, action: OrderAction) -> Result<OrderStatus, InvalidTransition> {
        use OrderAction as A;
        use OrderStatus as S;
        let to = match (self, action) {
            (S::PendingPayment, A::Pay) => S::Paid,
            (S::PendingPayment, A::Cancel) => S::Cancelled,
            (S::Cancelled, A::PayAfterCancel) => S::Paid,
            (S::Paid, A::Ship) => S::Shipped,
            (S::Shipped, A::Deliver) => S::Delivered,
            (S::Delivered, A::Complete) => S::Completed,
            (from, A::StartRefund) if from.refundable() => S::Refunding,
            (S::Refunding, A::FinishRefund) => S::Refunded,
            (S::Refunding, A::ResumeAfterRefund(back)) if back.refundable() => back,
            (from, action) => return Err(InvalidTransition { from, action }),
        };
        Ok(to)
    }

    /// Whether a refund can start from here: paid and not yet closed for good.
    pub fn refundable(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Delivered
        )
    }

    /// Stable name, as stored and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "PENDING_PAYMENT",
            OrderStatus::Paid => "PAID",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Refunding => "REFUNDING",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    /// The status with this stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderAction as A;
    use OrderStatus as S;

    const ACTIONS: [OrderAction; 16] = [
        A::Pay,
        A::PayAfterCancel,
        A::Cancel,
        A::Ship,
        A::Deliver,
        A::Complete,
        A::StartRefund,
        A::FinishRefund,
        A::ResumeAfterRefund(S::PendingPayment),
        A::ResumeAfterRefund(S::Paid),
        A::ResumeAfterRefund(S::Shipped),
        A::ResumeAfterRefund(S::Delivered),
        A::ResumeAfterRefund(S::Completed),
        A::ResumeAfterRefund(S::Cancelled),
        A::ResumeAfterRefund(S::Refunding),
        A::ResumeAfterRefund(S::Refunded),
    ];

    /// The whole table: every (status, action) pair, allowed ones listed with their target.
    #[test]
    fn transition_table_is_exactly_this() {
        let allowed = [
            (S::PendingPayment, A::Pay, S::Paid),
            (S::PendingPayment, A::Cancel, S::Cancelled),
            (S::Cancelled, A::PayAfterCancel, S::Paid),
            (S::Paid, A::Ship, S::Shipped),
            (S::Shipped, A::Deliver, S::Delivered),
            (S::Delivered, A::Complete, S::Completed),
            (S::Paid, A::StartRefund, S::Refunding),
            (S::Shipped, A::StartRefund, S::Refunding),
            (S::Delivered, A::StartRefund, S::Refunding),
            (S::Refunding, A::FinishRefund, S::Refunded),
            (S::Refunding, A::ResumeAfterRefund(S::Paid), S::Paid),
            (S::Refunding, A::ResumeAfterRefund(S::Shipped), S::Shipped),
            (
                S::Refunding,
                A::ResumeAfterRefund(S::Delivered),
                S::Delivered,
            ),
        ];
        let mut checked = 0;
        for from in S::ALL {
            for action in ACTIONS {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|t| t.2);
                match (from.apply(action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} {action:?}"),
                    (Err(e), None) => assert_eq!(e, InvalidTransition { from, action }),
                    (got, want) => panic!("{from} {action:?}: got {got:?}, want {want:?}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * ACTIONS.len());
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for terminal in [S::Completed, S::Refunded] {
            assert!(
                ACTIONS.iter().all(|a| terminal.apply(*a).is_err()),
                "{terminal}"
            );
        }
        // a cancelled order only comes back when its late payment could be honoured
        let revive: Vec<_> = ACTIONS
            .iter()
            .filter(|a| S::Cancelled.apply(**a).is_ok())
            .collect();
        assert_eq!(revive, [&A::PayAfterCancel]);
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("LOST"), None);
    }
}
