//! The RUIZHU backend-for-frontend: the composition root. Configuration, telemetry, the HTTP
//! server and (later) the workers are wired here; GraphQL lives in `resolvers`, business rules
//! and persistence in `domain`.

pub mod app;
pub mod config;
pub mod http;
pub mod partners;
pub mod telemetry;
pub mod workers;
