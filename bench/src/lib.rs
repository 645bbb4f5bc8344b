//! Pieces the load generators share: WeChat Pay notifications signed and encrypted the way
//! WeChat Pay builds them (`wechat.md` §3.4), and a GraphQL call that tells a definite answer
//! from an unknown one.

pub mod client;
pub mod wxpay;
