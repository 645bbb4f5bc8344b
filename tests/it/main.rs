//! End-to-end tests over real HTTP and WebSocket against servers spawned on ephemeral ports,
//! with a real MySQL and a real Redis. One binary, one module per area.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod fake_wechat;
mod fake_wechatpay;
mod harness;

mod apq;
mod catalog;
mod consultation;
mod events;
mod faults;
mod http_spec;
mod identity;
mod limits;
mod membership;
mod ops;
mod ops_console;
mod orders;
mod partner;
mod payments;
mod ratelimit;
mod response_cache;
mod roles;
mod schema;
mod sql_guard;
mod websocket;

/// The opaque id the API shows for `kind` number `id`.
pub fn harness_id(kind: &str, id: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}
