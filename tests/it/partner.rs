//! `/partner/graphql`: partners run only their registered operations, addressed by id, with
//! their own key; manifests are checked before anything is stored; the committed example
//! manifests stay valid against the schema.

use std::sync::Arc;
use std::time::Duration;

use domain::partner::RegisteredOperation;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::harness::{Options, TestApp};

pub(crate) const GQL: &str = "application/graphql-response+json";
pub(crate) const JSON: &str = "application/json";

pub(crate) fn sample_manifest() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("partners/boutique-sample.manifest.json");
    std::fs::read_to_string(path).unwrap()
}

/// The id of the sample manifest's operation `name`.
pub(crate) fn sample_id(name: &str) -> String {
    let manifest: Value = serde_json::from_str(&sample_manifest()).unwrap();
    manifest["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A manifest of the given (name, body) queries.
pub(crate) fn manifest_of(ops: &[(&str, &str)]) -> String {
    let operations: Vec<Value> = ops
        .iter()
        .map(|(name, body)| {
            json!({ "id": domain::apq::sha256_hex(body), "name": name, "type": "query", "body": body })
        })
        .collect();
    json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": operations })
        .to_string()
}

/// Creates a partner holding `catalog:read`; returns its key.
pub(crate) async fn partner(app: &TestApp, name: &str) -> String {
    partner_with(app, name, None, None).await
}

pub(crate) async fn partner_with(
    app: &TestApp,
    name: &str,
    per_minute: Option<u32>,
    burst: Option<u32>,
) -> String {
    let (_, key) = ruizhu::partners::create(&app.app, name, "catalog:read", per_minute, burst)
        .await
        .unwrap();
    key.expose_secret().to_owned()
}

fn persisted(id: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": id } })
}

/// POSTs `body` to `/partner/graphql` with `key` (if any); returns status, headers and body.
pub(crate) async fn call(
    app: &TestApp,
    key: Option<&str>,
    accept: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .client
        .post(app.url("/partner/graphql"))
        .header(ACCEPT, accept)
        .json(&body);
    if let Some(key) = key {
        req = req.header("X-Partner-Key", key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {body}"))
}

#[tokio::test]
async fn registered_operations_run_by_id_over_post_and_get() {
    let app = TestApp::spawn().await;
    let key = partner(&app, "boutique-sample").await;
    let registered = ruizhu::partners::register(&app.app, "boutique-sample", &sample_manifest())
        .await
        .unwrap();
    assert_eq!(registered.operations.len(), 3);
    assert!(registered.operations.iter().all(|o| o.cost > 0));

    // Apollo's persistedQuery extension, both response media types
    let list = sample_id("BoutiqueProducts");
    for accept in [GQL, JSON] {
        let (status, headers, body) = call(
            &app,
            Some(&key),
            accept,
            json!({ "extensions": persisted(&list), "variables": { "first": 2 } }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(headers[CONTENT_TYPE].to_str().unwrap().starts_with(accept));
        let edges = body["data"]["products"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 2, "{body}");
    }
    let first = {
        let (_, _, body) = call(
            &app,
            Some(&key),
            GQL,
            json!({ "documentId": format!("sha256:{list}"), "variables": { "first": 1 } }),
        )
        .await;
        body["data"]["products"]["edges"][0]["node"]["id"].clone()
    };
    assert!(first.is_string());

    // GraphQL-over-HTTP persisted documents over GET (cacheable)
    let detail = sample_id("BoutiqueProduct");
    let res = app
        .client
        .get(app.url("/partner/graphql"))
        .header("X-Partner-Key", &key)
        .header(ACCEPT, GQL)
        .query(&[
            ("documentId", format!("sha256:{detail}")),
            ("variables", json!({ "id": first }).to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["vary"], "X-Partner-Key");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["product"]["id"], first, "{body}");
    assert!(body["data"]["product"]["skus"][0]["price"]["amount"].is_number());
}

#[tokio::test]
async fn free_form_unknown_and_foreign_operations_are_refused() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let key = partner(&app, "boutique-a").await;
    let other = partner(&app, "marketplace-b").await;
    ruizhu::partners::register(&app.app, "boutique-a", &sample_manifest())
        .await
        .unwrap();
    let theirs = "query Theirs { categories { id } }";
    ruizhu::partners::register(
        &app.app,
        "marketplace-b",
        &manifest_of(&[("Theirs", theirs)]),
    )
    .await
    .unwrap();
    let cats = sample_id("BoutiqueCategories");

    let cases = [
        (
            json!({ "query": "{ categories { id } }" }),
            "PERSISTED_QUERY_ID_REQUIRED",
        ),
        // text with a matching hash is still text: nothing registers at run time
        (
            json!({ "query": theirs, "extensions": persisted(&domain::apq::sha256_hex(theirs)) }),
            "PERSISTED_QUERY_ID_REQUIRED",
        ),
        (json!({}), "PERSISTED_QUERY_ID_REQUIRED"),
        (
            json!({ "extensions": persisted(&domain::apq::sha256_hex("{ me { id } }")) }),
            "PERSISTED_QUERY_NOT_IN_LIST",
        ),
        // registered, but for the other partner
        (
            json!({ "documentId": format!("sha256:{}", domain::apq::sha256_hex(theirs)) }),
            "PERSISTED_QUERY_NOT_IN_LIST",
        ),
        (json!({ "documentId": "md5:abc" }), "BAD_REQUEST"),
        (
            json!({ "documentId": format!("sha256:{cats}"),
                    "extensions": persisted(&domain::apq::sha256_hex(theirs)) }),
            "BAD_REQUEST",
        ),
    ];
    for (body, expected) in cases {
        for (accept, status) in [(GQL, 400), (JSON, 200)] {
            let (got, _, res) = call(&app, Some(&key), accept, body.clone()).await;
            assert_eq!(got, status, "{body} → {res}");
            assert_eq!(code(&res), expected, "{body} → {res}");
            assert!(res.get("data").is_none(), "{res}");
        }
    }
    // the other partner runs its own operation, and not ours
    let (status, _, res) = call(
        &app,
        Some(&other),
        GQL,
        json!({ "documentId": format!("sha256:{}", domain::apq::sha256_hex(theirs)) }),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert!(res["data"]["categories"].is_array());
    let (_, _, res) = call(
        &app,
        Some(&other),
        GQL,
        json!({ "documentId": format!("sha256:{cats}") }),
    )
    .await;
    assert_eq!(code(&res), "PERSISTED_QUERY_NOT_IN_LIST");
}

#[tokio::test]
async fn missing_bad_and_revoked_keys_are_401_on_every_replica() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        tweak: Some(|s| s.partners.cache_ttl_ms = 300),
        ..Options::default()
    })
    .await;
    let replica = app.replica().await;
    let key = partner(&app, "boutique-sample").await;
    ruizhu::partners::register(&app.app, "boutique-sample", &sample_manifest())
        .await
        .unwrap();
    let body = json!({ "documentId": format!("sha256:{}", sample_id("BoutiqueCategories")) });

    let forged = format!("rzp_{}", "A".repeat(43));
    for bad in [None, Some(""), Some("not-a-key"), Some(forged.as_str())] {
        let (status, headers, res) = call(&app, bad, GQL, body.clone()).await;
        assert_eq!(status, 401, "{bad:?}");
        assert_eq!(code(&res), "UNAUTHENTICATED");
        assert!(headers.contains_key("www-authenticate"));
    }
    for server in [&app, &replica] {
        let (status, _, res) = call(server, Some(&key), GQL, body.clone()).await;
        assert_eq!(status, 200, "{res}");
    }

    ruizhu::partners::revoke(&app.app, "boutique-sample")
        .await
        .unwrap();
    assert!(
        ruizhu::partners::revoke(&app.app, "boutique-sample")
            .await
            .is_err(),
        "revoking twice says so"
    );
    // at once where it was revoked, within the cache time on the other replica
    let (status, _, _) = call(&app, Some(&key), GQL, body.clone()).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, res) = call(&replica, Some(&key), GQL, body.clone()).await;
    assert_eq!(status, 401, "{res}");

    // the key never reaches the logs
    assert!(!crate::harness::captured_logs().contains(&key));
}

#[tokio::test]
async fn manifests_with_forged_hashes_or_invalid_operations_are_refused_whole() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    partner(&app, "boutique-sample").await;
    let good = ("Cats", "query Cats { categories { id } }");
    ruizhu::partners::register(&app.app, "boutique-sample", &manifest_of(&[good]))
        .await
        .unwrap();
    let id_of_good = domain::apq::sha256_hex(good.1);

    let forged = manifest_of(&[good]).replace(&id_of_good, &domain::apq::sha256_hex("{ x }"));
    let refusals = [
        (forged, "does not match"),
        (
            manifest_of(&[good, ("Typo", "query Typo { productz { id } }")]),
            "productz",
        ),
        (
            manifest_of(&[("Me", "query Me { me { id } }")]),
            "`me` is not available to partners",
        ),
        (
            manifest_of(&[("Wrong", "query Right { categories { id } }")]),
            "Unknown operation named \"Wrong\"",
        ),
        (
            manifest_of(&[(
                "Greedy",
                "query Greedy { products(first: 100000) { edges { node { id } } } }",
            )]),
            "COMPLEXITY_LIMIT_EXCEEDED",
        ),
        (
            manifest_of(&[("Peek", "query Peek { __schema { types { name } } }")]),
            "INTROSPECTION_DISABLED",
        ),
        (
            json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": [
                { "id": domain::apq::sha256_hex("mutation Out { logout }"), "name": "Out",
                  "type": "mutation", "body": "mutation Out { logout }" } ] })
            .to_string(),
            "mutation `logout` is not available to partners",
        ),
        (
            json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": [
                { "id": domain::apq::sha256_hex("subscription S { heartbeat }"), "name": "S",
                  "type": "subscription", "body": "subscription S { heartbeat }" } ] })
            .to_string(),
            "subscriptions are not served",
        ),
        (
            "{\"format\":\"something-else\"}".to_owned(),
            "not a manifest",
        ),
    ];
    for (manifest, expected) in refusals {
        let err = ruizhu::partners::register(&app.app, "boutique-sample", &manifest)
            .await
            .expect_err(expected)
            .to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // nothing of the refused manifests was stored; the registered set is intact
    let partner = app
        .app
        .partners
        .find("boutique-sample")
        .await
        .unwrap()
        .unwrap();
    let ops = app.app.partners.operations(partner.id).await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].id, id_of_good);
    assert!(
        ruizhu::partners::register(&app.app, "nobody", &manifest_of(&[good]))
            .await
            .is_err()
    );

    // a new manifest replaces the set
    let next = (
        "Products",
        "query Products { products(first: 5) { totalCount } }",
    );
    let registered = ruizhu::partners::register(&app.app, "boutique-sample", &manifest_of(&[next]))
        .await
        .unwrap();
    assert_eq!(registered.removed, 1);
    assert_eq!(registered.operations[0].cost, 6);
}

#[tokio::test]
async fn an_operation_the_schema_no_longer_accepts_fails_without_suggestions_and_get_refuses_mutations()
 {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let key = partner(&app, "boutique-sample").await;
    let partner = app
        .app
        .partners
        .find("boutique-sample")
        .await
        .unwrap()
        .unwrap();
    // stored directly, as if registered before a schema change (or by a future write scope)
    let stale = "query Stale { categorie { id } }";
    let write = "mutation Out { logout }";
    let op = |name: &str, kind: &str, body: &str| RegisteredOperation {
        id: domain::apq::sha256_hex(body),
        name: name.to_owned(),
        kind: kind.to_owned(),
        body: Arc::from(body),
        cost: 1,
    };
    app.app
        .partners
        .replace_operations(
            partner.id,
            &[op("Stale", "query", stale), op("Out", "mutation", write)],
        )
        .await
        .unwrap();
    let (status, _, res) = call(
        &app,
        Some(&key),
        GQL,
        json!({ "documentId": format!("sha256:{}", domain::apq::sha256_hex(stale)) }),
    )
    .await;
    assert_eq!(status, 400, "{res}");
    assert_eq!(code(&res), "GRAPHQL_VALIDATION_FAILED");
    let message = res["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("Did you mean"), "{message}");

    let res = app
        .client
        .get(app.url("/partner/graphql"))
        .header("X-Partner-Key", &key)
        .query(&[(
            "documentId",
            format!("sha256:{}", domain::apq::sha256_hex(write)),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
}

#[tokio::test]
async fn form_text_and_multipart_posts_are_refused_before_anything_runs() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let key = partner(&app, "boutique-sample").await;
    ruizhu::partners::register(&app.app, "boutique-sample", &sample_manifest())
        .await
        .unwrap();
    let body =
        json!({ "documentId": format!("sha256:{}", sample_id("BoutiqueCategories")) }).to_string();
    for path in ["/graphql", "/partner/graphql"] {
        for ct in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let statements = app.statements();
            let res = app
                .client
                .post(app.url(path))
                .header("X-Partner-Key", &key)
                .header(CONTENT_TYPE, ct)
                .body(if path == "/graphql" {
                    json!({ "query": "mutation { logout }" }).to_string()
                } else {
                    body.clone()
                })
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 415, "{path} {ct}");
            let res: Value = res.json().await.unwrap();
            assert_eq!(code(&res), "UNSUPPORTED_MEDIA_TYPE");
            if path == "/graphql" {
                assert_eq!(app.statements(), statements, "nothing ran");
            }
        }
    }
    let (status, _, res) = call(&app, Some(&key), GQL, json!([{ "documentId": "x" }])).await;
    assert_eq!(status, 400);
    assert_eq!(code(&res), "BATCH_NOT_SUPPORTED");
}

#[tokio::test]
async fn the_cli_creates_registers_and_revokes() {
    let app = TestApp::spawn().await;
    let s = &app.app.settings;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ruizhu"))
            .args(args)
            .env("RUIZHU_ENV", "test")
            .env("RUIZHU_DATABASE__URL", s.database.url.expose_secret())
            .env("RUIZHU_REDIS__URL", s.redis.url.expose_secret())
            .env("RUIZHU_REDIS__KEY_PREFIX", &s.redis.key_prefix)
            .env("RUIZHU_LOG__LEVEL", "warn")
            .output()
            .expect("the ruizhu binary runs");
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, key, err) = run(&[
        "partner",
        "create",
        "--name",
        "boutique-sample",
        "--scopes",
        "catalog:read",
    ]);
    assert!(
        !err.contains("unrecognized subcommand"),
        "{} is not this checkout's binary: another checkout sharing CARGO_TARGET_DIR rebuilt it",
        env!("CARGO_BIN_EXE_ruizhu")
    );
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(
        key.starts_with("rzp_") && key.len() > 40,
        "only the key: {key}"
    );
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("partners/boutique-sample.manifest.json");
    let (ok, out, err) = run(&[
        "partner",
        "register",
        "--partner",
        "boutique-sample",
        manifest.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");

    let body = json!({ "documentId": format!("sha256:{}", sample_id("BoutiqueCategories")) });
    let (status, _, res) = call(&app, Some(&key), GQL, body.clone()).await;
    assert_eq!(status, 200, "{res}");

    let (ok, _, err) = run(&[
        "partner",
        "create",
        "--name",
        "x",
        "--scopes",
        "catalog:read",
    ]);
    assert!(!ok && err.contains("3–64"), "{err}");
    let (ok, _, err) = run(&[
        "partner",
        "create",
        "--name",
        "other",
        "--scopes",
        "orders:write",
    ]);
    assert!(!ok && err.contains("unknown scope"), "{err}");

    let (ok, _, err) = run(&["partner", "revoke", "--name", "boutique-sample"]);
    assert!(ok, "{err}");
    // another process revoked it: this server notices within the cache time (5 s default)
    let mut status = 200;
    for _ in 0..70 {
        status = call(&app, Some(&key), GQL, body.clone()).await.0;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
}

/// CI guard: every committed manifest still validates against the schema and the default
/// limits, so a breaking schema change fails here before it breaks a partner.
#[tokio::test]
async fn committed_manifests_validate_against_the_schema() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("partners");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".manifest.json") {
            continue;
        }
        let json = std::fs::read_to_string(&path).unwrap();
        let scopes: Vec<String> = resolvers::partner::SCOPES
            .iter()
            .map(|s| s.name.to_owned())
            .collect();
        let ops = ruizhu::partners::check_manifest(
            ruizhu::config::GraphqlSettings::default().limits(),
            &json,
            &scopes,
        )
        .await
        .unwrap_or_else(|problems| panic!("{}:\n{}", path.display(), problems.join("\n")));
        assert!(!ops.is_empty(), "{} is empty", path.display());
        checked += 1;
    }
    assert!(checked >= 1, "no manifest under partners/");
}
