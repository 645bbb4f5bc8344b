//! Operation limits: the attack corpus is refused quickly, with its code, before any resolver
//! runs (the SQL statement counter does not move; caching is off so every resolver here would
//! reach MySQL); and introspection and suggestions are for staff only when switched off.

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::{Options, TestApp};
use crate::partner::GQL;

/// An expensive field: every evaluation is a MySQL count.
const COUNT: &str = "products(first: 1) { totalCount }";

async fn app(tweak: Option<fn(&mut ruizhu::config::Settings)>) -> TestApp {
    TestApp::spawn_with(Options {
        seed: false,
        cache: false,
        tweak,
        ..Options::default()
    })
    .await
}

/// Sends a raw body; returns status, `extensions.code` of the first error, and the time taken.
async fn send(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, String, Duration) {
    let started = Instant::now();
    let res = app
        .client
        .post(app.url("/graphql"))
        .header(ACCEPT, GQL)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let elapsed = started.elapsed();
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, elapsed)
}

fn query(text: &str) -> String {
    json!({ "query": text }).to_string()
}

/// Runs one attack: refused with `status` and `code`, quickly, with no SQL sent.
async fn refused(app: &TestApp, name: &str, body: String, status: u16, code: &str) {
    let size = body.len();
    let statements = app.statements();
    let (got, got_code, elapsed) = send(app, body).await;
    assert_eq!((got, got_code.as_str()), (status, code), "{name}");
    assert_eq!(app.statements(), statements, "{name}: a resolver ran");
    eprintln!("attack {name:<28} {size:>9} bytes → {status} {code:<28} in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{name} took {elapsed:?}");
}

#[tokio::test]
async fn the_attack_corpus_is_refused_quickly_before_any_resolver() {
    let app = app(None).await;
    // control: the same field does reach MySQL when it is allowed
    let statements = app.statements();
    let (status, code, _) = send(&app, query(&format!("{{ {COUNT} }}"))).await;
    assert_eq!((status, code.as_str()), (200, ""));
    assert!(app.statements() > statements, "the control query ran SQL");

    let deep = format!(
        "{{ categories {{ {}id {}}} }}",
        "children { ".repeat(99),
        "} ".repeat(99)
    );
    refused(
        &app,
        "nesting depth 100",
        query(&deep),
        400,
        "DEPTH_LIMIT_EXCEEDED",
    )
    .await;

    let chain: String = (0..5000)
        .map(|i| format!("fragment F{i} on Query {{ ...F{} }} ", i + 1))
        .collect();
    let chain = query(&format!(
        "{{ ...F0 }} {chain} fragment F5000 on Query {{ {COUNT} }}"
    ));
    refused(
        &app,
        "5,000-fragment chain",
        chain.clone(),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;

    let aliases: String = (0..1000).map(|i| format!("a{i}: __typename ")).collect();
    refused(
        &app,
        "1,000 aliases",
        query(&format!("{{ {aliases} {COUNT} }}")),
        400,
        "ALIAS_LIMIT_EXCEEDED",
    )
    .await;
    let expensive: String = (0..1000).map(|i| format!("a{i}: {COUNT} ")).collect();
    refused(
        &app,
        "1,000 aliases of a count",
        query(&format!("{{ {expensive} }}")),
        400,
        "TOKEN_LIMIT_EXCEEDED",
    )
    .await;

    let directives = " @include(if: true)".repeat(500);
    refused(
        &app,
        "500 directives on a field",
        query(&format!(
            "{{ products(first: 1){directives} {{ totalCount }} }}"
        )),
        400,
        "DIRECTIVE_LIMIT_EXCEEDED",
    )
    .await;
    let spread: String = (0..26)
        .map(|i| {
            format!(
                "c{i}: products(first: 1) @include(if: true) @skip(if: false) {{ totalCount }} "
            )
        })
        .collect();
    refused(
        &app,
        "52 directives in a document",
        query(&format!("{{ {spread} }}")),
        400,
        "DIRECTIVE_LIMIT_EXCEEDED",
    )
    .await;

    let ten_mb = query(&format!("{{ {COUNT} }} #{}", "x".repeat(10 * 1024 * 1024)));
    refused(&app, "10 MB body", ten_mb, 413, "PAYLOAD_TOO_LARGE").await;

    let batch =
        serde_json::to_string(&vec![json!({ "query": format!("{{ {COUNT} }}") }); 1000]).unwrap();
    refused(&app, "batch of 1,000", batch, 400, "BATCH_NOT_SUPPORTED").await;

    refused(
        &app,
        "first: 100000",
        query("{ products(first: 100000) { edges { node { id name } } } }"),
        400,
        "COMPLEXITY_LIMIT_EXCEEDED",
    )
    .await;
    let wide =
        json!({ "query": "query W($n: Int) { products(first: $n) { edges { node { id } } } }",
                       "variables": { "n": 100000 } })
        .to_string();
    refused(
        &app,
        "first: $n = 100000",
        wide,
        400,
        "COMPLEXITY_LIMIT_EXCEEDED",
    )
    .await;

    let roots: String = (0..21).map(|i| format!("r{i}: {COUNT} ")).collect();
    refused(
        &app,
        "21 root fields",
        query(&format!("{{ {roots} }}")),
        400,
        "ROOT_FIELD_LIMIT_EXCEEDED",
    )
    .await;

    // with room for it in the body, the fragment chain meets the token count instead
    let roomy = self::app(Some(|s| s.http.body_limit_bytes = 1024 * 1024)).await;
    refused(
        &roomy,
        "5,000-fragment chain (1 MB)",
        chain,
        400,
        "TOKEN_LIMIT_EXCEEDED",
    )
    .await;
    // and a chain short enough for the token count meets the nesting bound
    let short: String = (0..100)
        .map(|i| format!("fragment F{i} on Query {{ ...F{} }} ", i + 1))
        .collect();
    refused(
        &roomy,
        "100-fragment chain",
        query(&format!(
            "{{ ...F0 }} {short} fragment F100 on Query {{ {COUNT} }}"
        )),
        400,
        "DEPTH_LIMIT_EXCEEDED",
    )
    .await;
    // a fragment bomb (doubling 16 times) is costed, not expanded
    let bomb: String = (0..16)
        .map(|i| format!("fragment B{i} on Query {{ ...B{} ...B{} }} ", i + 1, i + 1))
        .collect();
    refused(
        &roomy,
        "fragment bomb 2^16",
        query(&format!(
            "{{ ...B0 }} {bomb} fragment B16 on Query {{ {COUNT} }}"
        )),
        400,
        "ROOT_FIELD_LIMIT_EXCEEDED",
    )
    .await;
}

#[tokio::test]
async fn limits_are_configurable_and_the_defaults_leave_real_queries_alone() {
    let app = app(Some(|s| {
        s.graphql.max_depth = 3;
        s.graphql.max_aliases = 1;
    }))
    .await;
    let (status, code, _) = send(
        &app,
        query("{ categories { children { children { id } } } }"),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "DEPTH_LIMIT_EXCEEDED"));
    let (status, code, _) = send(&app, query("{ categories { children { id } } }")).await;
    assert_eq!((status, code.as_str()), (200, ""));
    let (status, code, _) = send(&app, query("{ a: __typename b: __typename }")).await;
    assert_eq!((status, code.as_str()), (400, "ALIAS_LIMIT_EXCEEDED"));

    // the sample partner's operations and a full page of products fit the defaults
    let app = self::app(None).await;
    let page = "{ products(first: 50) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id name nameEn priceRange { min { amount } max { amount } } images { url alt } skus { id code color size price { amount currency } available stockStatus } } } } }";
    let (status, code, _) = send(&app, query(page)).await;
    assert_eq!((status, code.as_str()), (200, ""));
    // a request error's body follows GraphQL over HTTP: no data
    let res: Value = app
        .client
        .post(app.url("/graphql"))
        .json(
            &json!({ "query": "{ products(first: 100000) { totalCount edges { node { id } } } }" }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(res.get("data").is_none(), "{res}");
    assert_eq!(res["errors"][0]["extensions"]["limit"], 10_000);
}

const INTROSPECT: &str = "{ __schema { queryType { name } } }";
const TYPO: &str = "{ categorys { id } }";

#[tokio::test]
async fn introspection_and_suggestions_are_for_staff_when_switched_off() {
    let app = app(Some(|s| {
        // what production does by default
        s.graphql.introspection = Some(false);
        s.graphql.suggestions = Some(false);
    }))
    .await;
    let (status, code, _) = send(&app, query(INTROSPECT)).await;
    assert_eq!((status, code.as_str()), (400, "INTROSPECTION_DISABLED"));
    let (_, body) = app.post(TYPO, json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("Did you mean"), "{message}");
    assert!(app.post("{ __typename }", json!({})).await.1["data"]["__typename"] == "Query");

    app.app
        .identity
        .create_staff(
            "olivia",
            &SecretString::from("ops-password-123".to_owned()),
            domain::identity::Role::Ops,
            "Olivia",
        )
        .await
        .unwrap();
    let login = app
        .data(
            "mutation { staffLogin(username: \"olivia\", password: \"ops-password-123\") { accessToken } }",
            json!({}),
        )
        .await;
    let token = login["staffLogin"]["accessToken"].as_str().unwrap();
    let (status, body) = app.post_as(token, INTROSPECT, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    let (_, body) = app.post_as(token, TYPO, json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("Did you mean"), "{message}");

    // outside production both stay on for everyone (GraphiQL, codegen)
    let dev = self::app(None).await;
    let (status, body) = dev.post(INTROSPECT, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = dev.post(TYPO, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean")
    );
}
