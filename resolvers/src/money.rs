//! The `Money` type of the API contract.

use async_graphql::SimpleObject;

/// An amount of money. `amount` is in the currency's smallest unit (fen for CNY): ¥1,280.00 is
/// `{ amount: 128000, currency: "CNY" }`. Never a floating-point number.
#[derive(SimpleObject, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    /// Amount in the smallest unit of the currency (fen).
    pub amount: i64,
    /// ISO 4217 code; always `CNY` today.
    pub currency: &'static str,
}

impl Money {
    /// CNY amount in fen.
    pub fn cny(fen: i64) -> Self {
        Self {
            amount: fen,
            currency: domain::money::CNY,
        }
    }
}
