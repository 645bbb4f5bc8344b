//! RUIZHU domain: business rules and persistence, one module per bounded context, plus the
//! infrastructure adapters (database pool, cache) they share. Nothing here knows about GraphQL or
//! HTTP; the GraphQL layer (`resolvers`), webhooks and workers all call into these functions.

pub mod apq;
pub mod cache;
pub mod cart;
pub mod catalog;
pub mod consultation;
pub mod crypto;
pub mod db;
pub mod error;
pub mod events;
pub mod identity;
pub mod membership;
pub mod money;
pub mod order;
pub mod partner;
pub mod payment;
pub mod ratelimit;
pub mod redis;
pub mod response_cache;
pub mod schema;
pub mod validation;
pub mod wechat;
pub mod wechatpay;

pub use error::{DomainError, DomainResult};
