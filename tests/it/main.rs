//! End-to-end tests over real HTTP and WebSocket against servers spawned on ephemeral ports,
//! with a real MySQL and a real Redis. One binary, one module per area.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod harness;

mod catalog;
mod http_spec;
mod ops;
mod schema;
mod websocket;
