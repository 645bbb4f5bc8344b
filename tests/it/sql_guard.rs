//! Regression guard for the read path (CI, deterministic): the SQL statements one request sends
//! do not grow with `first`, for every connection field of the schema — a nested read that
//! slips out of its DataLoader (N+1) fails here, whatever the timing. Measured with the caches
//! off (so every read reaches MySQL) and a wide batching window (an unoptimised build may take
//! longer than the production window to walk 20 nodes), with `first` = 1 and 20, twice each.
//! `every_connection_field_is_guarded` keeps the list complete as the schema grows.

use serde_json::{Value, json};

use crate::harness::{Options, TestApp};
use crate::harness_id;
use crate::orders::{Buyer, buyer, key, place, set_stock, staff_token};

/// Connection fields (`Type.field`) covered below.
const GUARDED: &[&str] = &[
    "Query.products",
    "Query.orders",
    "Query.claimableCoupons",
    "Query.couponTemplates",
    "Query.consultations",
    "Member.orders",
    "Member.pointsHistory",
    "Member.coupons",
    "Member.consultations",
    "Consultation.messages",
];

const ROWS: usize = 21;

fn later(hours: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::hours(hours)).to_rfc3339()
}

async fn ok(app: &TestApp, token: &str, query: &str, vars: Value) -> Value {
    let (status, body) = app.post_as(token, query, vars).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

/// Runs `query` with `$first` 1, 20, 1, 20; the statement counts must all be equal, and the
/// connection at `path` must hold `first` edges (so the page really grew).
async fn constant_in_first(
    app: &TestApp,
    token: Option<&str>,
    name: &str,
    query: &str,
    path: &[&str],
    vars: Value,
) {
    let mut counts = Vec::new();
    for first in [1_usize, 20, 1, 20] {
        let mut vars = vars.clone();
        vars["first"] = json!(first);
        let before = app.statements();
        let (status, body) = match token {
            Some(t) => app.post_as(t, query, vars).await,
            None => app.post(query, vars).await,
        };
        counts.push(app.statements() - before);
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.get("errors").is_none(), "{name}: {body}");
        let mut connection = &body["data"];
        for p in path {
            connection = &connection[*p];
        }
        assert_eq!(
            connection["edges"].as_array().map(Vec::len),
            Some(first),
            "{name}: {body}"
        );
    }
    eprintln!("sql guard: {name:<24} statements per request {counts:?}");
    if counts.iter().any(|&c| c != counts[0]) {
        GROWING.lock().unwrap().push(format!("{name}: {counts:?}"));
    }
}

/// Fields whose statements grew with `first` (all reported at once).
static GROWING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct World {
    app: TestApp,
    ops: String,
    member: Buyer,
    consultation: String,
}

/// One member with ROWS of everything (orders, points entries, coupons, consultations, and
/// messages in one of them), and ROWS coupon templates.
async fn world() -> World {
    let app = crate::orders::app(Options {
        cache: false,
        loader_delay_us: Some(20_000),
        ..Options::default()
    })
    .await;
    let ops = staff_token(&app, "guard-ops", domain::identity::Role::Ops).await;
    let member = buyer(&app, "guard").await;
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::sql_query(format!(
            "UPDATE members SET tier_rank = 2 WHERE id = {}",
            member.member_id
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let skus = crate::orders::skus(&app, 2).await;
    for (sku, _) in &skus {
        set_stock(&app, *sku, 1_000).await;
    }
    let template = r#"mutation T($i: CouponTemplateInput!) {
      createCouponTemplate(input: $i) { template { id } errors { code field message } } }"#;
    let issue = r#"mutation I($t: ID!, $m: [ID!]) { issueCoupons(templateId: $t, memberIds: $m) { issued errors { code } } }"#;
    let adjust = r#"mutation A($m: ID!) { adjustPoints(memberId: $m, delta: 10, reason: "guard") { errors { code } } }"#;
    let request = r#"mutation R($i: ConsultationRequestInput!) {
      requestConsultation(input: $i) { consultation { id } errors { code field message } } }"#;
    let mut consultations = Vec::new();
    for i in 0..ROWS {
        let lines: Vec<(u64, i32)> = skus.iter().map(|(s, _)| (*s, 1)).collect();
        let placed = place(&app, &member, &key(), &lines).await;
        assert!(placed["order"].is_object(), "{placed}");
        let t = ok(
            &app,
            &ops,
            template,
            json!({ "i": { "name": format!("券 {i}"), "amountOffFen": 100, "claimable": true,
                           "validFrom": "2020-01-01T00:00:00Z", "validUntil": "2099-01-01T00:00:00Z" } }),
        )
        .await;
        let t = t["createCouponTemplate"]["template"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let m = harness_id("Member", member.member_id);
        ok(&app, &ops, issue, json!({ "t": t, "m": [m] })).await;
        ok(&app, &ops, adjust, json!({ "m": m })).await;
        let c = ok(
            &app,
            &member.token,
            request,
            json!({ "i": { "topic": "STYLING", "message": format!("第 {i} 次"), "preferredSlots": [later(48)] } }),
        )
        .await;
        let payload = &c["requestConsultation"];
        assert_eq!(payload["errors"], json!([]), "{c}");
        consultations.push(payload["consultation"]["id"].as_str().unwrap().to_owned());
    }
    // an advisor with free slots, assigned to every consultation (so `availableSlots` and the
    // read receipts of both sides have something to show)
    let advisor = staff_token(&app, "guard-advisor", domain::identity::Role::Advisor).await;
    let advisor_id = ok(&app, &advisor, "{ staffMe { id } }", json!({})).await["staffMe"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let publish =
        r#"mutation P($s: [SlotInput!]!) { publishSlots(slots: $s) { errors { code field } } }"#;
    let slots: Vec<Value> = [24, 48, 72]
        .iter()
        .map(|h| json!({ "startsAt": later(*h), "endsAt": later(*h + 1) }))
        .collect();
    let r = ok(&app, &advisor, publish, json!({ "s": slots })).await;
    assert_eq!(r["publishSlots"]["errors"], json!([]), "{r}");
    let assign = r#"mutation A($id: ID!, $a: ID!) { assignConsultation(id: $id, advisorId: $a) { errors { code field } } }"#;
    for c in &consultations {
        let r = ok(&app, &ops, assign, json!({ "id": c, "a": advisor_id })).await;
        assert_eq!(r["assignConsultation"]["errors"], json!([]), "{r}");
    }
    let consultation = consultations[0].clone();
    let send = r#"mutation M($id: ID!, $b: String!) { sendConsultationMessage(consultationId: $id, body: $b) { errors { code } } }"#;
    for i in 0..ROWS {
        let body = format!("消息 {i}");
        let r = ok(
            &app,
            &member.token,
            send,
            json!({ "id": consultation, "b": body }),
        )
        .await;
        assert_eq!(r["sendConsultationMessage"]["errors"], json!([]), "{r}");
    }
    World {
        app,
        ops,
        member,
        consultation,
    }
}

#[tokio::test]
async fn sql_statements_per_request_are_constant_in_first_for_every_connection() {
    let w = world().await;
    let (app, ops, me) = (&w.app, w.ops.as_str(), w.member.token.as_str());
    // a first request per token: session lookups are not part of what is measured
    ok(app, ops, "{ staffMe { id } }", json!({})).await;
    ok(app, me, "{ me { id } }", json!({})).await;

    const ORDER: &str = "id orderNo status lines { skuCode quantity sku { code product { id name } } } events { toStatus } payment { status } refunds { status } coupon { code template { name } }";
    const CONSULTATION: &str = "id status topic products { id } boutique { name } advisor { displayName } member { id } slot { id } availableSlots { id startsAt } events { toStatus } readReceipts { participant lastReadMessageId }";
    const TEMPLATE: &str =
        "id name kind amountOff { amount } requiredTier { code } remaining productIds categoryIds";

    constant_in_first(
        app,
        None,
        "Query.products",
        r#"query Q($first: Int) { products(first: $first) { totalCount edges { node { id name locked requiredTier { code }
            skus { id code price { amount } memberPrice { amount } available stockStatus product { id } }
            images { url } categories { id name parent { id } children { id } } tags available } } } }"#,
        &["products"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Query.products (member)",
        r#"query Q($first: Int) { products(first: $first) { edges { node { id locked skus { memberPrice { amount } } } } } }"#,
        &["products"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(ops),
        "Query.orders",
        &format!(
            "query Q($first: Int) {{ orders(first: $first) {{ edges {{ node {{ {ORDER} }} }} }} }}"
        ),
        &["orders"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Query.claimableCoupons",
        &format!("query Q($first: Int) {{ claimableCoupons(first: $first) {{ edges {{ node {{ {TEMPLATE} }} }} }} }}"),
        &["claimableCoupons"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(ops),
        "Query.couponTemplates",
        &format!("query Q($first: Int) {{ couponTemplates(first: $first) {{ edges {{ node {{ {TEMPLATE} }} }} }} }}"),
        &["couponTemplates"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(ops),
        "Query.consultations",
        &format!("query Q($first: Int) {{ consultations(first: $first) {{ edges {{ node {{ {CONSULTATION} }} }} }} }}"),
        &["consultations"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Member.orders",
        &format!("query Q($first: Int) {{ me {{ orders(first: $first) {{ edges {{ node {{ {ORDER} }} }} }} }} }}"),
        &["me", "orders"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Member.pointsHistory",
        "query Q($first: Int) { me { pointsHistory(first: $first) { edges { node { id kind delta balanceAfter reason order { orderNo } expiresAt } } } } }",
        &["me", "pointsHistory"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Member.coupons",
        &format!("query Q($first: Int) {{ me {{ coupons(first: $first) {{ edges {{ node {{ id code status order {{ orderNo }} template {{ {TEMPLATE} }} }} }} }} }} }}"),
        &["me", "coupons"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Member.consultations",
        &format!("query Q($first: Int) {{ me {{ consultations(first: $first) {{ edges {{ node {{ {CONSULTATION} }} }} }} }} }}"),
        &["me", "consultations"],
        json!({}),
    )
    .await;
    constant_in_first(
        app,
        Some(me),
        "Consultation.messages",
        "query Q($id: ID!, $first: Int) { consultation(id: $id) { messages(first: $first) { edges { node { id author body imageUrls internal createdAt } } } } }",
        &["consultation", "messages"],
        json!({ "id": w.consultation }),
    )
    .await;
    let growing = GROWING.lock().unwrap().clone();
    assert!(
        growing.is_empty(),
        "statements per request grow with `first` (first = 1, 20, 1, 20): {growing:?}"
    );
}

#[test]
fn every_connection_field_is_guarded() {
    // every field of an object type that takes `first`, read from the committed SDL
    let sdl =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    let mut field: Option<String> = None;
    let mut in_description = false;
    for line in sdl.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("\"\"\"") {
            let closes_here = trimmed.len() > 3 && trimmed.ends_with("\"\"\"");
            if !closes_here {
                in_description = !in_description;
            }
            continue;
        }
        if in_description {
            continue;
        }
        if let Some(rest) = line.strip_prefix("type ") {
            current = rest.split_whitespace().next().map(str::to_owned);
            continue;
        }
        if line.starts_with('}') {
            current = None;
            continue;
        }
        let Some(ty) = &current else { continue };
        if let Some(name) = line.strip_prefix('\t').filter(|l| !l.starts_with('\t')) {
            field = Some(
                name.split(['(', ':'])
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            );
        }
        let mentions_first = trimmed.starts_with("first:")
            || trimmed.contains("(first:")
            || trimmed.contains(" first:");
        if mentions_first && let Some(f) = &field {
            let name = format!("{ty}.{f}");
            if !found.contains(&name) {
                found.push(name);
            }
        }
    }
    let mut missing: Vec<&String> = found
        .iter()
        .filter(|f| !GUARDED.contains(&f.as_str()))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "connection fields without an SQL-statement guard in tests/it/sql_guard.rs: {missing:?}"
    );
    assert!(found.len() >= GUARDED.len(), "{found:?}");
}
