//! RUIZHU's GraphQL surface: one module per context (same names as in `domain`), plus the shared
//! pieces every context uses — ids, pagination, error codes, DataLoaders and the observability
//! extension. No HTTP here: `src/http` carries requests in and responses out.

pub mod auth;
pub mod batch;
pub mod cart;
pub mod catalog;
pub mod consultation;
pub mod error;
pub mod id;
pub mod identity;
pub mod limits;
pub mod live;
pub mod loaders;
pub mod membership;
pub mod money;
pub mod observe;
pub mod order;
pub mod order_fields;
pub mod pagination;
pub mod partner;
pub mod payload;
pub mod payment;
pub mod system;

use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

pub use error::ErrorCode;
pub use loaders::Loaders;
pub use observe::{Observe, OperationInfo};

/// Every query root field, merged from the contexts.
#[derive(MergedObject, Default)]
pub struct Query(
    catalog::CatalogQuery,
    identity::IdentityQuery,
    order::OrderQuery,
    membership::MembershipQuery,
    consultation::ConsultationQuery,
);

/// Every mutation root field, merged from the contexts.
#[derive(MergedObject, Default)]
pub struct Mutation(
    identity::IdentityMutation,
    cart::CartMutation,
    order::OrderMutation,
    payment::PaymentMutation,
    catalog::CatalogMutation,
    live::LiveMutation,
    membership::MembershipMutation,
    consultation::ConsultationMutation,
);

/// Every subscription root field, merged from the contexts.
#[derive(MergedSubscription, Default)]
pub struct Subscription(
    live::LiveSubscription,
    consultation::ConsultationSubscription,
    system::SystemSubscription,
);

/// The API schema type.
pub type ApiSchema = Schema<Query, Mutation, Subscription>;

/// The schema with its types but no runtime data: the server adds data and extensions, the SDL
/// export and the tests use it as is.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
}

/// The schema without runtime data, e.g. to print its SDL.
pub fn schema() -> ApiSchema {
    schema_builder().finish()
}

/// The SDL committed as `schema.graphql`.
pub fn sdl() -> String {
    schema().sdl()
}
