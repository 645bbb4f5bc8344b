//! Apollo automatic persisted queries on `/graphql`: a hash the server has not seen answers
//! `PERSISTED_QUERY_NOT_FOUND`; hash + text registers (after checking the hash) for every
//! replica; then the hash alone works, over POST and GET.

use serde_json::{Value, json};

use crate::harness::{Options, TestApp};

const QUERY: &str = "query Cats { categories { id name } }";

fn sha(text: &str) -> String {
    domain::apq::sha256_hex(text)
}

fn ext(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_registered_hash_replaces_the_query_on_every_replica() {
    let a = TestApp::spawn_with(Options::default()).await;
    let b = a.replica().await;
    let hash = sha(QUERY);

    let (status, miss) = post(&a, json!({ "extensions": ext(&hash) })).await;
    assert_eq!(status, 200);
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        miss["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    let (status, full) = post(&a, json!({ "query": QUERY, "extensions": ext(&hash) })).await;
    assert_eq!(status, 200, "{full}");
    assert!(
        full["data"]["categories"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{full}"
    );

    // the hash alone, on the other replica (through Redis), over POST and GET
    let (status, hit) = post(&b, json!({ "extensions": ext(&hash) })).await;
    assert_eq!(status, 200);
    assert_eq!(hit["data"], full["data"]);
    let url = format!(
        "{}?extensions={}",
        b.url("/graphql"),
        url::form_urlencoded::byte_serialize(ext(&hash).to_string().as_bytes()).collect::<String>()
    );
    let got: Value = b
        .client
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"], full["data"]);
}

#[tokio::test]
async fn mismatched_hashes_and_versions_are_refused_and_nothing_is_registered() {
    let app = TestApp::spawn_with(Options::default()).await;
    let wrong = sha("{ __typename }");
    let (_, refused) = post(&app, json!({ "query": QUERY, "extensions": ext(&wrong) })).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_HASH_MISMATCH"
    );
    let (_, still_unknown) = post(&app, json!({ "extensions": ext(&wrong) })).await;
    assert_eq!(
        still_unknown["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    let (_, version) = post(
        &app,
        json!({ "query": QUERY,
        "extensions": { "persistedQuery": { "version": 2, "sha256Hash": sha(QUERY) } } }),
    )
    .await;
    assert_eq!(
        version["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_SUPPORTED"
    );
    let (_, malformed) = post(&app, json!({ "extensions": ext("NOT-A-HASH") })).await;
    assert_eq!(malformed["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    // a registered mutation still cannot run over GET
    let mutation = "mutation { logout }";
    post(
        &app,
        json!({ "query": mutation, "extensions": ext(&sha(mutation)) }),
    )
    .await;
    let url = format!(
        "{}?extensions={}",
        app.url("/graphql"),
        url::form_urlencoded::byte_serialize(ext(&sha(mutation)).to_string().as_bytes())
            .collect::<String>()
    );
    let response = app
        .client
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}
