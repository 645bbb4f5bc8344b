//! GraphQL over HTTP: media types, status codes and request validation, as the spec and its
//! audit suite (graphql-http) define them.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::harness::{Options, TestApp};

const GQL: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await
}

async fn post(
    app: &TestApp,
    accept: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, String, Value) {
    let mut req = app.client.post(app.url("/graphql")).body(body);
    if let Some(a) = accept {
        req = req.header(ACCEPT, a);
    }
    if let Some(c) = content_type {
        req = req.header(CONTENT_TYPE, c);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, ct, body)
}

async fn get(
    app: &TestApp,
    accept: Option<&str>,
    query: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app.client.get(app.url("/graphql")).query(query);
    if let Some(a) = accept {
        req = req.header(ACCEPT, a);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

const TYPENAME: &str = r#"{"query":"{ __typename }"}"#;

#[tokio::test]
async fn negotiates_the_response_media_type() {
    let app = app().await;
    for (accept, expected) in [
        (None, JSON),
        (Some("*/*"), JSON),
        (Some(JSON), JSON),
        (Some(GQL), GQL),
        (
            Some("application/json, application/graphql-response+json"),
            GQL,
        ),
        (
            Some("application/graphql-response+json;q=0.5, application/json"),
            JSON,
        ),
    ] {
        let (status, ct, body) = post(&app, accept, Some(JSON), TYPENAME).await;
        assert_eq!(status, 200, "{accept:?}");
        assert!(
            ct.starts_with(expected) && ct.contains("charset=utf-8"),
            "{accept:?} → {ct}"
        );
        assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
    }
    let (status, _, body) = post(&app, Some("text/html"), Some(JSON), TYPENAME).await;
    assert_eq!(status, 406);
    assert!(body["errors"][0]["message"].is_string());
}

#[tokio::test]
async fn request_errors_are_400_with_graphql_response_json_and_200_with_json() {
    let app = app().await;
    let cases: Vec<(&str, Value)> = vec![
        ("missing query", json!({})),
        ("query not a string", json!({ "query": { "x": 1 } })),
        ("query a number", json!({ "query": 1 })),
        (
            "variables not an object",
            json!({ "query": "{ __typename }", "variables": "x" }),
        ),
        (
            "operationName not a string",
            json!({ "query": "{ __typename }", "operationName": 1 }),
        ),
        (
            "extensions not an object",
            json!({ "query": "{ __typename }", "extensions": "x" }),
        ),
        ("document does not parse", json!({ "query": "{" })),
        (
            "document does not validate",
            json!({ "query": "{ noSuchField }" }),
        ),
        (
            "unknown operation name",
            json!({ "query": "query A { __typename }", "operationName": "B" }),
        ),
    ];
    for (name, body) in cases {
        let (status, ct, res) = post(&app, Some(GQL), Some(JSON), body.to_string()).await;
        assert_eq!(status, 400, "{name}: {res}");
        assert!(ct.starts_with(GQL), "{name}");
        assert!(
            res.get("data").is_none(),
            "{name}: no data entry on a request error"
        );
        assert!(res["errors"][0]["message"].is_string(), "{name}");
        let (status, ct, res) = post(&app, Some(JSON), Some(JSON), body.to_string()).await;
        assert_eq!(status, 200, "{name}: {res}");
        assert!(ct.starts_with(JSON), "{name}");
        assert!(res["errors"][0]["message"].is_string(), "{name}");
    }
    let (_, _, res) = post(
        &app,
        Some(GQL),
        Some(JSON),
        json!({ "query": "{" }).to_string(),
    )
    .await;
    assert_eq!(
        res["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    let (_, _, res) = post(
        &app,
        Some(GQL),
        Some(JSON),
        json!({ "query": "{ nope }" }).to_string(),
    )
    .await;
    assert_eq!(
        res["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
}

#[tokio::test]
async fn nulls_are_allowed_for_optional_parameters() {
    let app = app().await;
    let body = json!({ "query": "{ __typename }", "variables": null, "operationName": null, "extensions": null });
    let (status, _, res) = post(&app, Some(GQL), Some(JSON), body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(res["data"]["__typename"], "Query");
}

#[tokio::test]
async fn malformed_bodies_get_4xx_with_a_graphql_error_body() {
    let app = app().await;
    for accept in [GQL, JSON] {
        let (status, _, res) = post(&app, Some(accept), Some(JSON), "{ not json").await;
        assert_eq!(status, 400);
        assert!(res.get("data").is_none());
        assert!(
            res["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("JSON")
        );
        let (status, _, res) = post(
            &app,
            Some(accept),
            Some(JSON),
            "[{\"query\":\"{ __typename }\"}]",
        )
        .await;
        assert_eq!(status, 400, "batches are refused");
        assert!(
            res["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("batch")
        );
        let (status, _, _) = post(&app, Some(accept), Some(JSON), "").await;
        assert_eq!(status, 400, "a POST needs a body");
    }
}

#[tokio::test]
async fn only_json_request_bodies_are_accepted() {
    let app = app().await;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
    ] {
        let (status, _, res) = post(&app, Some(GQL), ct, TYPENAME).await;
        assert_eq!(status, 415, "{ct:?}");
        assert_eq!(
            res["errors"][0]["extensions"]["code"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
    }
    let (status, _, _) = post(
        &app,
        Some(GQL),
        Some("application/json; charset=utf-8"),
        TYPENAME,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = app().await;
    let big =
        json!({ "query": format!("{{ __typename }} #{}", "x".repeat(70 * 1024)) }).to_string();
    let (status, _, res) = post(&app, Some(GQL), Some(JSON), big).await;
    assert_eq!(status, 413);
    assert_eq!(res["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    // just under the limit still works
    let fits =
        json!({ "query": format!("{{ __typename }} #{}", "x".repeat(60 * 1024)) }).to_string();
    let (status, _, _) = post(&app, Some(GQL), Some(JSON), fits).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn get_executes_queries_with_url_encoded_json_variables() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = get(
        &app,
        Some(GQL),
        &[
            (
                "query",
                "query Q($n: Int) { products(first: $n) { edges { node { id } } } }",
            ),
            ("variables", r#"{"n": 2}"#),
            ("operationName", "Q"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers[CONTENT_TYPE].to_str().unwrap().starts_with(GQL));
    assert_eq!(
        body["data"]["products"]["edges"].as_array().unwrap().len(),
        2
    );

    let (status, _, body) = get(
        &app,
        Some(GQL),
        &[("query", "{ __typename }"), ("variables", "{nope")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(&app, Some(GQL), &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(&app, Some(JSON), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_array());
}

#[tokio::test]
async fn field_errors_keep_data_and_status_200() {
    let app = app().await;
    let body = json!({ "query": r#"{ product(id: "garbage") { id } }"# });
    let (status, _, res) = post(&app, Some(GQL), Some(JSON), body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(res["data"]["product"], Value::Null);
    assert_eq!(res["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(res["errors"][0]["path"], json!(["product"]));
}

#[tokio::test]
async fn mutations_over_get_are_405_with_allow_post() {
    let app = app().await;
    for accept in [GQL, JSON] {
        let (status, headers, body) =
            get(&app, Some(accept), &[("query", "mutation { logout }")]).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(headers["allow"], "POST");
        assert!(body.get("data").is_none());
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("POST")
        );
    }
    // a document with a query and a mutation: GET may run the query, not the mutation
    let doc = "query Q { __typename } mutation M { logout }";
    let (status, _, body) = get(&app, Some(GQL), &[("query", doc), ("operationName", "Q")]).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get(&app, Some(GQL), &[("query", doc), ("operationName", "M")]).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn response_fields_follow_the_document_order() {
    let app = TestApp::spawn().await;
    // fields that wait on DataLoaders (skus, images) are selected before instant ones
    let query = "{ products(first: 2) { totalCount edges { node { skus { code } images { url } name id } } pageInfo { hasNextPage } } }";
    let res = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |needle: &str| {
        res.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing in {res}"))
    };
    assert!(
        at("\"totalCount\"") < at("\"edges\"") && at("\"edges\"") < at("\"pageInfo\""),
        "{res}"
    );
    assert!(
        at("\"skus\"") < at("\"images\"") && at("\"images\"") < at("\"name\""),
        "{res}"
    );
    assert!(at("\"name\"") < at("\"id\""), "{res}");
}
