//! A GraphQL call that ends in one of four outcomes, the way a careful client (and a fault
//! drill's history) must see it: an answer with data, a definite failure, a request that never
//! left (connection refused: safe to send elsewhere), or an unknown outcome (sent, but no
//! answer: it may or may not have happened).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How a call ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 200 with `data` and no `errors`.
    Ok(Value),
    /// An answer that says it failed: the first error's `extensions.code` (or `HTTP <status>`).
    Fail(String),
    /// Nothing was sent (connection refused).
    Refused,
    /// Sent, but no answer (timeout, connection reset): it may have happened.
    Unknown(String),
}

/// A finished call.
#[derive(Debug, Clone)]
pub struct Call {
    /// How it ended.
    pub outcome: Outcome,
    /// From send to the end of the answer.
    pub latency: Duration,
}

/// Classifies a transport error.
pub fn transport_outcome(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        Outcome::Refused
    } else {
        Outcome::Unknown(if e.is_timeout() {
            "timeout".to_owned()
        } else {
            "connection lost".to_owned()
        })
    }
}

/// Posts `query` with `vars` to `url` (a `/graphql` endpoint), as `token` when given.
pub async fn graphql(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> Call {
    let started = Instant::now();
    let mut req = client
        .post(url)
        .header("Accept", "application/graphql-response+json")
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let outcome = match req.send().await {
        Err(e) => transport_outcome(&e),
        Ok(response) => {
            let status = response.status().as_u16();
            match response.json::<Value>().await {
                Err(e) if e.is_decode() => Outcome::Fail(format!("HTTP {status}")),
                Err(e) => transport_outcome(&e),
                Ok(body) => match body["errors"].as_array() {
                    Some(errors) if !errors.is_empty() => Outcome::Fail(
                        errors[0]["extensions"]["code"]
                            .as_str()
                            .map_or_else(|| format!("HTTP {status}"), str::to_owned),
                    ),
                    _ if status == 200 && body["data"].is_object() => {
                        Outcome::Ok(body["data"].clone())
                    }
                    _ => Outcome::Fail(format!("HTTP {status}")),
                },
            }
        }
    };
    Call {
        outcome,
        latency: started.elapsed(),
    }
}
