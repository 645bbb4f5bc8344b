//! VIP consultations end to end: eligibility by tier, the status machine, one booking per slot
//! under contention, advisor and member isolation, internal notes, live messages across
//! replicas, read receipts, outcome, rating and reminders.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, kafka_brokers};
use crate::harness_id;
use crate::orders::{Buyer, buyer, decode_id, staff_token};
use crate::websocket::{connect, next, send};

const REQUEST: &str = r#"mutation R($i: ConsultationRequestInput!) {
  requestConsultation(input: $i) { consultation { id status topic message } errors { code field message } } }"#;
const ASSIGN: &str = r#"mutation A($id: ID!, $a: ID!) {
  assignConsultation(id: $id, advisorId: $a) { consultation { status advisor { displayName } } errors { code field } } }"#;
const SCHEDULE: &str = r#"mutation S($id: ID!, $s: ID!) {
  scheduleConsultation(id: $id, slotId: $s) { consultation { status scheduledAt slot { id booked } } errors { code field } } }"#;
const CANCEL: &str = r#"mutation C($id: ID!) {
  cancelConsultation(id: $id, reason: "plans changed") { consultation { status slot { id } } errors { code } } }"#;
const SEND: &str = r#"mutation M($id: ID!, $b: String!, $i: Boolean) {
  sendConsultationMessage(consultationId: $id, body: $b, internal: $i) { message { id body internal author } errors { code field } } }"#;
const VIEW: &str = r#"query V($id: ID!) { consultation(id: $id) { id status
  messages(first: 50) { edges { node { body internal author } } } readReceipts { participant lastReadMessageId }
  events { fromStatus toStatus actor } } }"#;

struct Cast {
    app: TestApp,
    ops: String,
    advisor: (u64, String),
    other_advisor: (u64, String),
}

async fn advisor(app: &TestApp, name: &str) -> (u64, String) {
    let token = staff_token(app, name, domain::identity::Role::Advisor).await;
    let me = app.post_as(&token, "{ staffMe { id } }", json!({})).await.1;
    let id = decode_id(me["data"]["staffMe"]["id"].as_str().unwrap());
    (id, token)
}

async fn cast(options: Options) -> Cast {
    let app = crate::orders::app(options).await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let advisor_a = advisor(&app, "advisor-a").await;
    let advisor_b = advisor(&app, "advisor-b").await;
    Cast {
        app,
        ops,
        advisor: advisor_a,
        other_advisor: advisor_b,
    }
}

async fn gold(app: &TestApp, name: &str) -> Buyer {
    let b = buyer(app, name).await;
    let mut conn = app.app.db.conn().await.unwrap();
    use diesel_async::RunQueryDsl as _;
    diesel::sql_query(format!(
        "UPDATE members SET tier_rank = 2 WHERE id = {}",
        b.member_id
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    b
}

fn later(hours: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::hours(hours)).to_rfc3339()
}

async fn request(app: &TestApp, b: &Buyer) -> Value {
    let input = json!({ "topic": "BESPOKE", "message": "想定制一枚 <b>订婚戒指</b> & 刻字",
                        "preferredSlots": [later(48)] });
    app.post_as(&b.token, REQUEST, json!({ "i": input }))
        .await
        .1["data"]["requestConsultation"]
        .clone()
}

/// A requested and assigned consultation of `b`; returns its id.
async fn assigned(c: &Cast, b: &Buyer, advisor: u64) -> String {
    let r = request(&c.app, b).await;
    let id = r["consultation"]["id"].as_str().unwrap().to_owned();
    let a = c
        .app
        .post_as(
            &c.ops,
            ASSIGN,
            json!({ "id": id, "a": harness_id("Staff", advisor) }),
        )
        .await
        .1;
    assert_eq!(
        a["data"]["assignConsultation"]["consultation"]["status"], "ASSIGNED",
        "{a}"
    );
    id
}

async fn publish(app: &TestApp, token: &str, hours_from_now: &[i64]) -> Vec<String> {
    let q = r#"mutation P($s: [SlotInput!]!) { publishSlots(slots: $s) { slots { id } errors { code field } } }"#;
    let slots: Vec<Value> = hours_from_now
        .iter()
        .map(|h| json!({ "startsAt": later(*h), "endsAt": later(*h + 1) }))
        .collect();
    let body = app.post_as(token, q, json!({ "s": slots })).await.1;
    body["data"]["publishSlots"]["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn only_eligible_tiers_may_ask_and_the_status_machine_holds() {
    let c = cast(Options::default()).await;
    let app = &c.app;
    let plain = buyer(app, "plain").await;
    let refused = request(app, &plain).await;
    assert!(refused["consultation"].is_null());
    assert_eq!(refused["errors"][0]["code"], "TIER_REQUIRED");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("GOLD") && message.contains("金卡"),
        "{message}"
    );

    let vip = gold(app, "vip").await;
    let bad = app
        .post_as(
            &vip.token,
            REQUEST,
            json!({ "i": { "topic": "STYLING", "message": "", "preferredSlots": ["2001-01-01T00:00:00Z"],
                "imageUrls": ["http://insecure.example/a.png"] } }),
        )
        .await
        .1;
    let fields: Vec<String> = bad["data"]["requestConsultation"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        ["input.message", "input.preferredSlots", "input.imageUrls"],
        "{bad}"
    );

    let made = request(app, &vip).await;
    assert_eq!(made["consultation"]["status"], "REQUESTED", "{made}");
    assert_eq!(
        made["consultation"]["message"], "想定制一枚 <b>订婚戒指</b> & 刻字",
        "stored as written"
    );
    let id = made["consultation"]["id"].as_str().unwrap().to_owned();
    // no slot can be booked before an advisor has it
    let slots = publish(app, &c.advisor.1, &[30]).await;
    let early = app
        .post_as(&vip.token, SCHEDULE, json!({ "id": id, "s": slots[0] }))
        .await
        .1;
    assert_eq!(
        early["data"]["scheduleConsultation"]["errors"][0]["code"],
        "INVALID_CONSULTATION_TRANSITION",
        "{early}"
    );
    let complete = r#"mutation F($id: ID!) { completeConsultation(id: $id, input: { notes: "done" }) { errors { code } } }"#;
    let early_done = app.post_as(&c.ops, complete, json!({ "id": id })).await.1;
    assert_eq!(
        early_done["data"]["completeConsultation"]["errors"][0]["code"],
        "INVALID_CONSULTATION_TRANSITION"
    );
    // a member may not assign; an advisor may not either
    for token in [&vip.token, &c.advisor.1] {
        let body = app
            .post_as(
                token,
                ASSIGN,
                json!({ "id": id, "a": harness_id("Staff", c.advisor.0) }),
            )
            .await
            .1;
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    // assigning to someone who is not an advisor is refused
    let not_advisor = app
        .post_as(
            &c.ops,
            ASSIGN,
            json!({ "id": id, "a": harness_id("Staff", 999_999) }),
        )
        .await
        .1;
    assert_eq!(
        not_advisor["data"]["assignConsultation"]["errors"][0]["field"],
        "advisorId"
    );
    let cancelled = app.post_as(&vip.token, CANCEL, json!({ "id": id })).await.1;
    assert_eq!(
        cancelled["data"]["cancelConsultation"]["consultation"]["status"],
        "CANCELLED"
    );
    let again = app.post_as(&vip.token, CANCEL, json!({ "id": id })).await.1;
    assert_eq!(
        again["data"]["cancelConsultation"]["errors"][0]["code"],
        "INVALID_CONSULTATION_TRANSITION"
    );
    let late = app
        .post_as(&vip.token, SEND, json!({ "id": id, "b": "hello?" }))
        .await
        .1;
    assert_eq!(
        late["data"]["sendConsultationMessage"]["errors"][0]["code"],
        "INVALID_CONSULTATION_TRANSITION"
    );
}

#[tokio::test]
async fn twenty_bookings_of_one_slot_make_one_appointment() {
    let c = cast(Options::default()).await;
    let app = &c.app;
    let members = futures::stream::iter(0..20)
        .map(|i| async move { gold(app, &format!("vip{i}")).await })
        .buffer_unordered(10)
        .collect::<Vec<_>>()
        .await;
    let mut ids = Vec::new();
    for m in &members {
        ids.push(assigned(&c, m, c.advisor.0).await);
    }
    let slots = publish(app, &c.advisor.1, &[50, 60]).await;
    let slot = slots[0].clone();

    let outcomes: Vec<Value> = futures::stream::iter(members.iter().zip(&ids))
        .map(|(m, id)| {
            let slot = slot.clone();
            async move {
                app.post_as(&m.token, SCHEDULE, json!({ "id": id, "s": slot }))
                    .await
                    .1["data"]["scheduleConsultation"]
                    .clone()
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let won: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o["consultation"]["status"] == "SCHEDULED")
        .map(|(i, _)| i)
        .collect();
    let taken = outcomes
        .iter()
        .filter(|o| o["errors"][0]["code"] == "SLOT_TAKEN")
        .count();
    assert_eq!((won.len(), taken), (1, 19), "{outcomes:?}");

    // which one won: cancel it, and the slot is free for the next member
    let winner = {
        use diesel::prelude::QueryDsl as _;
        use diesel_async::RunQueryDsl as _;
        use domain::schema::advisor_slots;
        let mut conn = app.app.db.conn().await.unwrap();
        advisor_slots::table
            .find(decode_id(&slot))
            .select(advisor_slots::consultation_id)
            .first::<Option<u64>>(&mut conn)
            .await
            .unwrap()
            .unwrap()
    };
    let w = ids.iter().position(|i| decode_id(i) == winner).unwrap();
    let cancelled = app
        .post_as(&members[w].token, CANCEL, json!({ "id": ids[w] }))
        .await
        .1;
    assert_eq!(
        cancelled["data"]["cancelConsultation"]["consultation"]["slot"],
        Value::Null
    );
    let next_one = (w + 1) % members.len();
    let booked = app
        .post_as(
            &members[next_one].token,
            SCHEDULE,
            json!({ "id": ids[next_one], "s": slot }),
        )
        .await
        .1;
    assert_eq!(
        booked["data"]["scheduleConsultation"]["consultation"]["status"], "SCHEDULED",
        "{booked}"
    );
    // moving it frees the old slot
    let reschedule = r#"mutation S($id: ID!, $s: ID!) { rescheduleConsultation(id: $id, slotId: $s) { consultation { slot { id } } errors { code } } }"#;
    let moved = app
        .post_as(
            &members[next_one].token,
            reschedule,
            json!({ "id": ids[next_one], "s": slots[1] }),
        )
        .await
        .1;
    assert_eq!(
        moved["data"]["rescheduleConsultation"]["consultation"]["slot"]["id"],
        slots[1]
    );
    let third = (w + 2) % members.len();
    let freed = app
        .post_as(
            &members[third].token,
            SCHEDULE,
            json!({ "id": ids[third], "s": slot }),
        )
        .await
        .1;
    assert_eq!(
        freed["data"]["scheduleConsultation"]["consultation"]["status"],
        "SCHEDULED"
    );
}

#[tokio::test]
async fn advisors_and_members_see_only_their_own() {
    let c = cast(Options::default()).await;
    let app = &c.app;
    let vip = gold(app, "vip").await;
    let stranger = gold(app, "stranger").await;
    let id = assigned(&c, &vip, c.advisor.0).await;
    let slots = publish(app, &c.advisor.1, &[40]).await;

    app.post_as(&vip.token, SEND, json!({ "id": id, "b": "您好" }))
        .await;
    let note = app
        .post_as(
            &c.advisor.1,
            SEND,
            json!({ "id": id, "b": "VIP，偏好铂金", "i": true }),
        )
        .await
        .1;
    assert_eq!(
        note["data"]["sendConsultationMessage"]["message"]["internal"],
        true
    );
    let reply = app
        .post_as(
            &c.advisor.1,
            SEND,
            json!({ "id": id, "b": "您好，我是您的顾问" }),
        )
        .await
        .1;
    let reply_id = reply["data"]["sendConsultationMessage"]["message"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // the member: their thread without the internal note; cannot write internal notes
    let seen = app.post_as(&vip.token, VIEW, json!({ "id": id })).await.1;
    let bodies: Vec<&str> = seen["data"]["consultation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["您好", "您好，我是您的顾问"], "{seen}");
    let sneaky = app
        .post_as(&vip.token, SEND, json!({ "id": id, "b": "x", "i": true }))
        .await
        .1;
    assert_eq!(sneaky["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // the advisor sees everything
    let advisor_view = app.post_as(&c.advisor.1, VIEW, json!({ "id": id })).await.1;
    assert_eq!(
        advisor_view["data"]["consultation"]["messages"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // another advisor: cannot read, write, schedule or cancel it; their queue is empty
    let other = &c.other_advisor.1;
    let read = app.post_as(other, VIEW, json!({ "id": id })).await.1;
    assert!(read["data"]["consultation"].is_null(), "{read}");
    for (q, vars) in [
        (SEND, json!({ "id": id, "b": "hi" })),
        (SCHEDULE, json!({ "id": id, "s": slots[0] })),
        (CANCEL, json!({ "id": id })),
    ] {
        let body = app.post_as(other, q, vars).await.1;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{body}"
        );
    }
    let queue = r#"{ consultations { edges { node { id } } } }"#;
    let theirs = app.post_as(other, queue, json!({})).await.1;
    assert_eq!(theirs["data"]["consultations"]["edges"], json!([]));
    let mine = app.post_as(&c.advisor.1, queue, json!({})).await.1;
    assert_eq!(
        mine["data"]["consultations"]["edges"][0]["node"]["id"],
        id.as_str()
    );
    // another member: nothing at all
    let nosy = app
        .post_as(&stranger.token, VIEW, json!({ "id": id }))
        .await
        .1;
    assert!(nosy["data"]["consultation"].is_null());
    let poke = app
        .post_as(&stranger.token, SEND, json!({ "id": id, "b": "hi" }))
        .await
        .1;
    assert_eq!(poke["errors"][0]["extensions"]["code"], "NOT_FOUND");
    // members do not list the queue
    let member_queue = app.post_as(&vip.token, queue, json!({})).await.1;
    assert_eq!(member_queue["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let own = app
        .post_as(
            &vip.token,
            "{ me { consultations { edges { node { id } } } } }",
            json!({}),
        )
        .await
        .1;
    assert_eq!(
        own["data"]["me"]["consultations"]["edges"][0]["node"]["id"],
        id.as_str()
    );

    // read receipts: the member reads the advisor's reply
    let mark = r#"mutation K($id: ID!, $m: ID!) { markConsultationRead(consultationId: $id, messageId: $m) { consultation { readReceipts { participant lastReadMessageId } } errors { code } } }"#;
    let marked = app
        .post_as(&vip.token, mark, json!({ "id": id, "m": reply_id }))
        .await
        .1;
    let receipts = marked["data"]["markConsultationRead"]["consultation"]["readReceipts"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        receipts
            .iter()
            .any(|r| r["participant"] == "MEMBER" && r["lastReadMessageId"] == reply_id.as_str()),
        "{marked}"
    );
}

#[tokio::test]
async fn messages_arrive_live_on_the_other_side_across_replicas_in_order() {
    let c = cast(Options {
        kafka: Some(kafka_brokers()),
        events: true,
        ..Options::default()
    })
    .await;
    let b = c.app.replica().await;
    let vip = gold(&c.app, "vip").await;
    let id = assigned(&c, &vip, c.advisor.0).await;

    let watch = r#"subscription W($id: ID!) { consultationMessageAdded(consultationId: $id) { body author internal } }"#;
    let mut member = connect(&c.app, "graphql-transport-ws").await;
    send(&mut member, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", vip.token) } })).await;
    assert_eq!(next(&mut member).await["type"], "connection_ack");
    send(&mut member, json!({ "id": "m", "type": "subscribe", "payload": { "query": watch, "variables": { "id": id } } })).await;
    let mut advisor = connect(&c.app, "graphql-ws").await;
    send(&mut advisor, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", c.advisor.1) } })).await;
    assert_eq!(next(&mut advisor).await["type"], "connection_ack");
    send(&mut advisor, json!({ "id": "a", "type": "start", "payload": { "query": watch, "variables": { "id": id } } })).await;
    // someone else may not listen in
    let stranger = gold(&c.app, "stranger").await;
    let mut nosy = connect(&c.app, "graphql-transport-ws").await;
    send(&mut nosy, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", stranger.token) } })).await;
    assert_eq!(next(&mut nosy).await["type"], "connection_ack");
    send(&mut nosy, json!({ "id": "n", "type": "subscribe", "payload": { "query": watch, "variables": { "id": id } } })).await;
    let refused = next(&mut nosy).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    // the fan-out consumers join their groups
    tokio::time::sleep(Duration::from_secs(3)).await;

    // the advisor writes through the other replica: three messages and one internal note
    let mut sent_at = Vec::new();
    for (body, internal) in [
        ("第一条", false),
        ("内部备注", true),
        ("第二条", false),
        ("第三条", false),
    ] {
        sent_at.push(std::time::Instant::now());
        let r = b
            .post_as(
                &c.advisor.1,
                SEND,
                json!({ "id": id, "b": body, "i": internal }),
            )
            .await
            .1;
        assert_eq!(
            r["data"]["sendConsultationMessage"]["errors"],
            json!([]),
            "{r}"
        );
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next(&mut member).await;
        assert_eq!(m["type"], "next", "{m}");
        let body = m["payload"]["data"]["consultationMessageAdded"]["body"]
            .as_str()
            .unwrap()
            .to_owned();
        got.push(body);
    }
    assert!(
        sent_at[3].elapsed() < Duration::from_secs(1),
        "the last message arrived within 1 s"
    );
    assert_eq!(
        got,
        ["第一条", "第二条", "第三条"],
        "in order, without the note"
    );
    // the advisor's socket (legacy protocol) has all four, the internal note included
    let mut advisor_got = Vec::new();
    for _ in 0..4 {
        let m = next(&mut advisor).await;
        assert_eq!(m["type"], "data", "{m}");
        advisor_got.push(m["payload"]["data"]["consultationMessageAdded"]["internal"].clone());
    }
    assert_eq!(advisor_got, [false, true, false, false]);

    // and the member's reply reaches the advisor
    let started = std::time::Instant::now();
    c.app
        .post_as(&vip.token, SEND, json!({ "id": id, "b": "谢谢" }))
        .await;
    let m = next(&mut advisor).await;
    assert_eq!(
        m["payload"]["data"]["consultationMessageAdded"]["author"],
        "MEMBER"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn outcome_rating_draft_cart_and_reminders() {
    let c = cast(Options::default()).await;
    let app = &c.app;
    let vip = gold(app, "vip").await;
    let id = assigned(&c, &vip, c.advisor.0).await;
    // in 23 hours: the 24 h reminder is due
    let slots = publish(app, &c.advisor.1, &[23]).await;
    let s = app
        .post_as(&c.advisor.1, SCHEDULE, json!({ "id": id, "s": slots[0] }))
        .await
        .1;
    assert_eq!(
        s["data"]["scheduleConsultation"]["consultation"]["status"],
        "SCHEDULED"
    );
    let consultations = &app.app.consultations;
    assert_eq!(consultations.send_due_reminders().await.unwrap(), 1);
    assert_eq!(consultations.send_due_reminders().await.unwrap(), 0, "once");
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::sql_query(format!(
            "UPDATE consultations SET scheduled_at = NOW(6) + INTERVAL 30 MINUTE WHERE id = {}",
            decode_id(&id)
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    assert_eq!(consultations.send_due_reminders().await.unwrap(), 1, "1 h");
    assert_eq!(consultations.send_due_reminders().await.unwrap(), 0);
    let reminders: i64 = {
        use diesel::prelude::{ExpressionMethods as _, QueryDsl as _};
        use diesel_async::RunQueryDsl as _;
        use domain::schema::outbox_events;
        let mut conn = app.app.db.conn().await.unwrap();
        outbox_events::table
            .filter(outbox_events::event_type.eq("consultation.reminder"))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(reminders, 2);

    // the appointment takes place
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::sql_query(format!(
            "UPDATE consultations SET scheduled_at = NOW(6) - INTERVAL 1 MINUTE WHERE id = {}",
            decode_id(&id)
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // the member cannot record the outcome; the advisor does
    let sku = crate::orders::skus(app, 1).await[0].0;
    let complete = r#"mutation F($id: ID!, $i: OutcomeInput!) { completeConsultation(id: $id, input: $i) {
      consultation { status outcome { notes draftLines { quantity sku { id } } } } errors { code } } }"#;
    let input = json!({ "notes": "推荐定制款", "draftLines": [{ "skuId": harness_id("Sku", sku), "quantity": 1 }] });
    let by_member = app
        .post_as(&vip.token, complete, json!({ "id": id, "i": input }))
        .await
        .1;
    assert_eq!(by_member["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let done = app
        .post_as(&c.advisor.1, complete, json!({ "id": id, "i": input }))
        .await
        .1;
    let out = &done["data"]["completeConsultation"]["consultation"];
    assert_eq!(out["status"], "COMPLETED", "{done}");
    assert_eq!(out["outcome"]["draftLines"][0]["quantity"], 1);

    let rate = r#"mutation T($id: ID!, $r: Int!) { rateConsultation(id: $id, rating: $r) { consultation { rating } errors { code field } } }"#;
    let out_of_range = app
        .post_as(&vip.token, rate, json!({ "id": id, "r": 6 }))
        .await
        .1;
    assert_eq!(
        out_of_range["data"]["rateConsultation"]["errors"][0]["field"],
        "rating"
    );
    let rated = app
        .post_as(&vip.token, rate, json!({ "id": id, "r": 5 }))
        .await
        .1;
    assert_eq!(
        rated["data"]["rateConsultation"]["consultation"]["rating"],
        5
    );
    let twice = app
        .post_as(&vip.token, rate, json!({ "id": id, "r": 1 }))
        .await
        .1;
    assert_eq!(
        twice["data"]["rateConsultation"]["errors"][0]["code"],
        "ALREADY_RATED"
    );

    let to_cart = r#"mutation D($id: ID!) { addConsultationDraftToCart(id: $id) { cart { lines { quantity sku { id } } } errors { code } } }"#;
    let cart = app
        .post_as(&vip.token, to_cart, json!({ "id": id }))
        .await
        .1;
    assert_eq!(
        cart["data"]["addConsultationDraftToCart"]["cart"]["lines"][0]["sku"]["id"],
        harness_id("Sku", sku),
        "{cart}"
    );
    let timeline = app.post_as(&vip.token, VIEW, json!({ "id": id })).await.1;
    let to: Vec<&str> = timeline["data"]["consultation"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["toStatus"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["REQUESTED", "ASSIGNED", "SCHEDULED", "COMPLETED"]);
}

#[tokio::test]
async fn history_is_read_only_and_notes_stay_with_their_advisor() {
    let c = cast(Options::default()).await;
    let app = &c.app;
    let vip = gold(app, "vip").await;
    // A had an earlier consultation with this member; B has the current one
    let earlier = assigned(&c, &vip, c.advisor.0).await;
    let current = assigned(&c, &vip, c.other_advisor.0).await;
    app.post_as(
        &c.other_advisor.1,
        SEND,
        json!({ "id": current, "b": "B 的内部备注：预算有限", "i": true }),
    )
    .await;
    // while it is open, A sees nothing of B's consultation
    let open = app
        .post_as(&c.advisor.1, VIEW, json!({ "id": current }))
        .await
        .1;
    assert!(open["data"]["consultation"].is_null(), "{open}");
    app.post_as(&vip.token, CANCEL, json!({ "id": current }))
        .await;
    // finished: A may read it as their client's history, without B's notes, and not act on it
    let history = app
        .post_as(&c.advisor.1, VIEW, json!({ "id": current }))
        .await
        .1;
    let messages = history["data"]["consultation"]["messages"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .clone();
    assert!(
        messages.iter().all(|m| m["node"]["internal"] == false),
        "{history}"
    );
    let note_id = {
        use diesel::prelude::{ExpressionMethods as _, QueryDsl as _};
        use diesel_async::RunQueryDsl as _;
        use domain::schema::consultation_messages;
        let mut conn = app.app.db.conn().await.unwrap();
        consultation_messages::table
            .filter(consultation_messages::internal.eq(true))
            .select(consultation_messages::id)
            .first::<u64>(&mut conn)
            .await
            .unwrap()
    };
    let mark = r#"mutation K($id: ID!, $m: ID!) { markConsultationRead(consultationId: $id, messageId: $m) { errors { code } } }"#;
    let by_a = app
        .post_as(
            &c.advisor.1,
            mark,
            json!({ "id": current, "m": harness_id("ConsultationMessage", note_id) }),
        )
        .await
        .1;
    assert_eq!(
        by_a["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{by_a}"
    );
    // the member cannot mark (or detect) a note either, and their receipts never point at one
    let by_member = app
        .post_as(
            &vip.token,
            mark,
            json!({ "id": current, "m": harness_id("ConsultationMessage", note_id) }),
        )
        .await
        .1;
    assert_eq!(
        by_member["data"]["markConsultationRead"]["errors"][0]["code"], "NOT_FOUND",
        "a note is like no message at all: {by_member}"
    );
    let receipts = app
        .post_as(&vip.token, VIEW, json!({ "id": current }))
        .await
        .1;
    let note_gid = harness_id("ConsultationMessage", note_id);
    assert!(
        !receipts.to_string().contains(&note_gid),
        "no receipt reveals the note: {receipts}"
    );
    // A's own earlier consultation is untouched by all this
    let own = app
        .post_as(&c.advisor.1, VIEW, json!({ "id": earlier }))
        .await
        .1;
    assert_eq!(own["data"]["consultation"]["status"], "ASSIGNED");
}

#[tokio::test]
async fn slots_must_not_overlap_and_appointments_complete_only_once_started() {
    let c = cast(Options::default()).await;
    let app = &c.app;
    let q = r#"mutation P($s: [SlotInput!]!) { publishSlots(slots: $s) { slots { id } errors { code field message } } }"#;
    let at = |h: i64, m: i64| {
        (chrono::Utc::now() + chrono::TimeDelta::hours(h) + chrono::TimeDelta::minutes(m))
            .to_rfc3339()
    };
    let both = app
        .post_as(
            &c.advisor.1,
            q,
            json!({ "s": [{ "startsAt": at(30, 0), "endsAt": at(31, 0) }, { "startsAt": at(30, 30), "endsAt": at(31, 30) }] }),
        )
        .await
        .1;
    assert_eq!(both["data"]["publishSlots"]["errors"][0]["field"], "slots");
    publish(app, &c.advisor.1, &[40]).await;
    let later_overlap = app
        .post_as(
            &c.advisor.1,
            q,
            json!({ "s": [{ "startsAt": at(40, 30), "endsAt": at(41, 30) }] }),
        )
        .await
        .1;
    assert_eq!(
        later_overlap["data"]["publishSlots"]["errors"][0]["message"],
        "overlaps a slot published before"
    );
    let far = app
        .post_as(
            &c.advisor.1,
            q,
            json!({ "s": [{ "startsAt": "9999-12-31T18:00:00-05:00", "endsAt": "9999-12-31T19:00:00-05:00" }] }),
        )
        .await
        .1;
    assert_eq!(
        far["data"]["publishSlots"]["errors"][0]["field"], "slots",
        "{far}"
    );
    // a member's preferred times are bounded too
    let vip = gold(app, "vip").await;
    let odd = app
        .post_as(
            &vip.token,
            REQUEST,
            json!({ "i": { "topic": "OTHER", "message": "hi", "preferredSlots": ["9999-12-31T23:00:00-05:00"] } }),
        )
        .await
        .1;
    assert_eq!(
        odd["data"]["requestConsultation"]["errors"][0]["field"],
        "input.preferredSlots"
    );

    // an appointment within the hour: only the 1 h reminder; cancelled ones get none
    let id = assigned(&c, &vip, c.advisor.0).await;
    let soon = publish(app, &c.advisor.1, &[5]).await;
    app.post_as(&vip.token, SCHEDULE, json!({ "id": id, "s": soon[0] }))
        .await;
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::sql_query(format!(
            "UPDATE consultations SET scheduled_at = NOW(6) + INTERVAL 20 MINUTE WHERE id = {}",
            decode_id(&id)
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    assert_eq!(app.app.consultations.send_due_reminders().await.unwrap(), 1);
    assert_eq!(app.app.consultations.send_due_reminders().await.unwrap(), 0);
    // not finished before it started
    let complete = r#"mutation F($id: ID!) { completeConsultation(id: $id, input: { notes: "done" }) { errors { code field } } }"#;
    let early = app
        .post_as(&c.advisor.1, complete, json!({ "id": id }))
        .await
        .1;
    assert_eq!(
        early["data"]["completeConsultation"]["errors"][0]["field"], "id",
        "{early}"
    );
    let other = gold(app, "other").await;
    let id2 = assigned(&c, &other, c.advisor.0).await;
    let slot2 = publish(app, &c.advisor.1, &[10]).await;
    app.post_as(&other.token, SCHEDULE, json!({ "id": id2, "s": slot2[0] }))
        .await;
    app.post_as(&other.token, CANCEL, json!({ "id": id2 }))
        .await;
    assert_eq!(
        app.app.consultations.send_due_reminders().await.unwrap(),
        0,
        "cancelled: no reminder"
    );
}

#[tokio::test]
async fn a_watcher_taken_off_a_consultation_stops_hearing_it_and_concurrent_messages_arrive_in_order()
 {
    let c = cast(Options {
        events: true,
        ..Options::default()
    })
    .await;
    let app = &c.app;
    let vip = gold(app, "vip").await;
    let id = assigned(&c, &vip, c.advisor.0).await;
    let watch = r#"subscription W($id: ID!) { consultationMessageAdded(consultationId: $id) { id body internal } }"#;
    let subscribe = |token: String| {
        let id = id.clone();
        async move {
            let mut s = connect(app, "graphql-transport-ws").await;
            send(&mut s, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
            assert_eq!(next(&mut s).await["type"], "connection_ack");
            send(&mut s, json!({ "id": "w", "type": "subscribe", "payload": { "query": watch, "variables": { "id": id } } })).await;
            s
        }
    };
    let mut advisor_a = subscribe(c.advisor.1.clone()).await;
    let mut member = subscribe(vip.token.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // member and advisor write at the same time, many times: both sockets see id order
    let writes: Vec<(String, String)> = (0..12)
        .map(|i| {
            if i % 2 == 0 {
                (vip.token.clone(), format!("m{i}"))
            } else {
                (c.advisor.1.clone(), format!("a{i}"))
            }
        })
        .collect();
    futures::stream::iter(writes)
        .map(|(token, body)| {
            let id = id.clone();
            async move {
                app.post_as(&token, SEND, json!({ "id": id, "b": body }))
                    .await
            }
        })
        .buffer_unordered(6)
        .collect::<Vec<_>>()
        .await;
    for socket in [&mut advisor_a, &mut member] {
        let mut ids = Vec::new();
        for _ in 0..12 {
            let m = next(socket).await;
            assert_eq!(m["type"], "next", "{m}");
            ids.push(decode_id(
                m["payload"]["data"]["consultationMessageAdded"]["id"]
                    .as_str()
                    .unwrap(),
            ));
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "delivered in the thread's order");
    }

    // ops hand it to advisor B: A's subscription ends, and B's notes never reach A
    let reassigned = app
        .post_as(
            &c.ops,
            ASSIGN,
            json!({ "id": id, "a": harness_id("Staff", c.other_advisor.0) }),
        )
        .await
        .1;
    assert_eq!(
        reassigned["data"]["assignConsultation"]["consultation"]["status"],
        "ASSIGNED"
    );
    let ended = next(&mut advisor_a).await;
    assert_eq!(ended["type"], "next", "{ended}");
    assert_eq!(
        ended["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{ended}"
    );
    app.post_as(
        &c.other_advisor.1,
        SEND,
        json!({ "id": id, "b": "新顾问的内部备注", "i": true }),
    )
    .await;
    let after = tokio::time::timeout(Duration::from_millis(800), async {
        loop {
            let m = next(&mut advisor_a).await;
            if m["type"] == "complete" {
                continue;
            }
            return m;
        }
    })
    .await;
    if let Ok(m) = after {
        assert!(
            !m.to_string().contains("新顾问的内部备注"),
            "the note reached the old advisor: {m}"
        );
    }
}
