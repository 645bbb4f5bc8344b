//! The ops console's saved operations (`assets/graphiql/recipes.json`): every recipe validates
//! against the schema, and runs as an OPS staff member against a live server.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{ServerError, ValidationResult};
use serde_json::{Value, json};

use crate::harness::TestApp;

/// Where execution would start: the request was parsed and validated.
const VALIDATED: &str = "validated; not executed";

/// Runs parsing and validation (including the server's depth and complexity limits) and stops
/// there, so no resolver (and no runtime data) is needed.
struct ValidateOnly;

impl ExtensionFactory for ValidateOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ValidateOnlyExtension)
    }
}

struct ValidateOnlyExtension;

#[async_graphql::async_trait::async_trait]
impl Extension for ValidateOnlyExtension {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await?;
        Err(vec![ServerError::new(VALIDATED, None)])
    }
}

struct Recipe {
    id: String,
    query: String,
    variables: Value,
}

fn recipes() -> (Vec<Recipe>, Value) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/graphiql/recipes.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let list = doc["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            // what the page does with `@today`: local midnight as RFC 3339
            let mut variables = r["variables"].clone();
            for value in variables.as_object_mut().unwrap().values_mut() {
                if value == "@today" {
                    *value = json!(chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string());
                }
            }
            Recipe {
                id: r["id"].as_str().unwrap().to_owned(),
                query: r["query"].as_str().unwrap().to_owned(),
                variables,
            }
        })
        .collect();
    (list, doc)
}

#[tokio::test]
async fn every_recipe_validates_against_the_schema() {
    let schema = resolvers::schema_builder()
        .extension(ValidateOnly)
        // the same coarse limits as the server (src/app.rs)
        .limit_depth(16)
        .limit_complexity(5_000)
        .finish();
    let (recipes, doc) = recipes();
    assert!(recipes.len() >= 7, "the daily work needs its recipes");
    let mut ids = std::collections::HashSet::new();
    for r in &doc["recipes"].as_array().unwrap()[..] {
        assert!(
            ids.insert(r["id"].as_str().unwrap()),
            "duplicate id {}",
            r["id"]
        );
        assert!(
            !r["title"].as_str().unwrap().is_empty()
                && !r["description"].as_str().unwrap().is_empty()
        );
    }
    for recipe in &recipes {
        let request = async_graphql::Request::new(&recipe.query).variables(
            async_graphql::Variables::from_json(recipe.variables.clone()),
        );
        let response = schema.execute(request).await;
        let messages: Vec<&str> = response.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [VALIDATED],
            "recipe {} does not validate",
            recipe.id
        );
        let named = recipe.query.lines().any(|l| {
            ["query ", "mutation ", "subscription "]
                .iter()
                .any(|k| l.starts_with(k) && l.as_bytes()[k.len()].is_ascii_uppercase())
        });
        assert!(
            named,
            "recipe {} names its operation (metrics and history show it)",
            recipe.id
        );
    }
    for wanted in [
        "todays-orders",
        "awaiting-shipment",
        "ship-order",
        "refund",
        "low-stock",
        "adjust-stock",
        "open-consultations",
        "assign-consultation",
    ] {
        assert!(
            recipes.iter().any(|r| r.id == wanted),
            "missing recipe {wanted}"
        );
    }
}

#[tokio::test]
async fn recipes_run_for_operations_staff() {
    let app = TestApp::spawn().await;
    let token = crate::orders::staff_token(&app, "ops-recipes", domain::identity::Role::Ops).await;
    let (recipes, _) = recipes();
    for recipe in recipes
        .iter()
        .filter(|r| !r.query.contains("subscription "))
    {
        let (status, body) = app
            .post_as(&token, &recipe.query, recipe.variables.clone())
            .await;
        if recipe.query.contains("\nmutation ") || recipe.query.starts_with("mutation ") {
            // their placeholders (empty ids) are refused by the resolvers, after validation
            // and the staff guard let the operation through
            let codes: Vec<&str> = body["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|e| e["extensions"]["code"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                !codes.iter().any(|c| c.starts_with("GRAPHQL_")
                    || *c == "FORBIDDEN"
                    || *c == "UNAUTHENTICATED"),
                "recipe {}: {body}",
                recipe.id
            );
        } else {
            assert_eq!(status, 200, "recipe {}: {body}", recipe.id);
            assert!(body.get("errors").is_none(), "recipe {}: {body}", recipe.id);
            assert!(body["data"].is_object(), "recipe {}: {body}", recipe.id);
        }
    }
}
