//! WeChat Pay callbacks (`wechat.md` §3.4–3.5). The handlers only move bytes: verification,
//! decryption and the business rules are `domain::payment`. Success is `204` with no body; a
//! failure is 4xx (bad notification: WeChat's retry will not help, but it is harmless) or 5xx
//! (we could not process a good one: WeChat retries) with `{"code":"FAIL","message":…}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::payment::NotifyRefusal;
use domain::wechatpay::SignedHeaders;

use crate::app::App;

fn answer<T>(result: Result<T, NotifyRefusal>, kind: &'static str) -> Response {
    match result {
        Ok(_) => {
            metrics::counter!("ruizhu_wechatpay_notifications_total", "kind" => kind, "outcome" => "ok")
                .increment(1);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => {
            let outcome = if refusal.status >= 500 {
                "error"
            } else {
                "refused"
            };
            metrics::counter!("ruizhu_wechatpay_notifications_total", "kind" => kind, "outcome" => outcome)
                .increment(1);
            let status =
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                Json(serde_json::json!({ "code": "FAIL", "message": refusal.message })),
            )
                .into_response()
        }
    }
}

/// `POST /webhooks/wechatpay/notify`: a payment notification.
pub async fn payment(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let signed = SignedHeaders::from_headers(&headers);
    let result = app
        .payments
        .handle_payment_notification(&signed, &body)
        .await;
    answer(result, "payment")
}

/// `POST /webhooks/wechatpay/refund-notify`: a refund notification.
pub async fn refund(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let signed = SignedHeaders::from_headers(&headers);
    let result = app
        .payments
        .handle_refund_notification(&signed, &body)
        .await;
    answer(result, "refund")
}
