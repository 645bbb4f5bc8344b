//! `load`: an HTTP/1.1 load generator for the read-path suite (`bench/run.sh`), written for one
//! core: keep-alive connections, requests prepared once as bytes, responses read by
//! `Content-Length`, and **every** response checked (status 200, a `"data"` member, no
//! `"errors"` member) — a run with any failed check exits non-zero.
//!
//! Closed loop (`--rate 0`): each connection sends its next request when the last one answered;
//! gives the maximum throughput. Open loop (`--rate R`): request *i* is due at `start + i/R`
//! whatever happened before, and its latency counts from when it was due (so a stalled server
//! is not hidden by the generator waiting for it: no coordinated omission), with enough
//! connections that one is free when a request falls due.
//!
//! Requests come from `--request` files, each `METHOD PATH` on the first line, then header
//! lines, a blank line and the body; `--weights` picks among them per request (deterministically
//! by request number). `{nonce}` in a body is replaced by the request number (a request no
//! cache has seen).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "HTTP/1.1 load generator that checks every response")]
struct Args {
    /// Server address, `host:port`.
    #[arg(long)]
    addr: String,
    /// Request files (see the module docs); at least one.
    #[arg(long = "request", required = true)]
    requests: Vec<String>,
    /// Relative weights of the request files (default: equal).
    #[arg(long, value_delimiter = ',')]
    weights: Vec<u32>,
    /// Connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured warm-up first.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Requests per second (open loop); 0 for closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Check GraphQL answers (`data`, no `errors`); off for non-GraphQL routes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    check: bool,
}

/// One request, split around `{nonce}` so it can be assembled per request cheaply.
struct Template {
    head: Vec<u8>,
    body_parts: Vec<Vec<u8>>,
}

impl Template {
    fn parse(text: &str, host: &str) -> anyhow::Result<Self> {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let start = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("empty request file"))?;
        let mut out = format!("{start} HTTP/1.1\r\nhost: {host}\r\n");
        for line in lines.filter(|l| !l.trim().is_empty()) {
            out.push_str(line.trim());
            out.push_str("\r\n");
        }
        let body = body.trim_end_matches('\n');
        Ok(Self {
            head: out.into_bytes(),
            body_parts: body
                .split("{nonce}")
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        })
    }

    fn render(&self, nonce: u64, out: &mut Vec<u8>) {
        out.clear();
        let nonce = nonce.to_string();
        let len: usize = self.body_parts.iter().map(Vec::len).sum::<usize>()
            + nonce.len() * (self.body_parts.len() - 1);
        out.extend_from_slice(&self.head);
        if len > 0 || self.head.starts_with(b"POST") {
            out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for (i, part) in self.body_parts.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(nonce.as_bytes());
            }
            out.extend_from_slice(part);
        }
    }
}

/// A keep-alive connection reading responses by `Content-Length`.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `request`; returns (status, body).
    async fn roundtrip(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0_u8; 16 * 1024];
        let header_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..header_end])?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
        while self.buf.len() < header_end + length {
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed mid-body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        anyhow::ensure!(
            self.buf.len() == header_end + length,
            "pipelined bytes after the response"
        );
        Ok((status, self.buf[header_end..].to_vec()))
    }
}

fn check(status: u16, body: &[u8], graphql: bool) -> bool {
    if status != 200 {
        return false;
    }
    if !graphql {
        return !body.is_empty();
    }
    // answers start with `{"data":` (the serializer's field order); a top-level `errors`
    // member is the only place `"errors":` can appear at the top level in our answers, but
    // search the whole body: a false alarm only fails the run, never passes a bad one
    body.starts_with(b"{\"data\":") && find(body, b"\"errors\":").is_none()
}

struct Shared {
    templates: Vec<Template>,
    /// Request number → template index, by weight.
    wheel: Vec<usize>,
    next: AtomicU64,
    failures: AtomicU64,
    stop: AtomicBool,
    first_failure: std::sync::Mutex<Option<String>>,
}

/// Keeps the first failure's description for the final report.
fn note(shared: &Shared, what: String) {
    shared
        .first_failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert(what);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut templates = Vec::new();
    for path in &args.requests {
        templates.push(Template::parse(
            &std::fs::read_to_string(path)?,
            &args.addr,
        )?);
    }
    let weights = if args.weights.is_empty() {
        vec![1; templates.len()]
    } else {
        args.weights.clone()
    };
    anyhow::ensure!(weights.len() == templates.len(), "one weight per request");
    let wheel: Vec<usize> = weights
        .iter()
        .enumerate()
        .flat_map(|(i, w)| std::iter::repeat_n(i, *w as usize))
        .collect();
    let shared = Arc::new(Shared {
        templates,
        wheel,
        next: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_failure: std::sync::Mutex::new(None),
    });
    let warmup = Duration::from_secs(args.warmup);
    let measure = Duration::from_secs(args.duration);
    let start = Instant::now();
    let measure_from = start + warmup;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let shared = shared.clone();
        let addr = args.addr.clone();
        let rate = args.rate;
        let graphql = args.check;
        tasks.push(tokio::spawn(async move {
            let Ok(mut hist) = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3) else {
                return None;
            };
            let mut done = 0_u64;
            let mut conn = match Conn::open(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    note(&shared, format!("connect: {e}"));
                    return Some((hist, done));
                }
            };
            let mut request = Vec::with_capacity(4096);
            while !shared.stop.load(Ordering::Relaxed) {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                let due = if rate > 0.0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    due
                } else {
                    Instant::now()
                };
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let template = &shared.templates[shared.wheel[(i as usize) % shared.wheel.len()]];
                template.render(i, &mut request);
                let result = conn.roundtrip(&request).await;
                let finished = Instant::now();
                let ok = match &result {
                    Ok((status, body)) => {
                        let ok = check(*status, body, graphql);
                        if !ok {
                            note(
                                &shared,
                                format!(
                                    "status {status}: {}",
                                    String::from_utf8_lossy(&body[..body.len().min(300)])
                                ),
                            );
                        }
                        ok
                    }
                    Err(e) => {
                        note(&shared, format!("{e}"));
                        false
                    }
                };
                if !ok {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    if result.is_err() {
                        match Conn::open(&addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
                if due >= measure_from && ok {
                    let micros = finished.duration_since(due).as_micros() as u64;
                    hist.record(micros.max(1)).ok();
                    done += 1;
                }
            }
            Some((hist, done))
        }));
    }
    tokio::time::sleep_until((measure_from + measure).into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut done = 0;
    for t in tasks {
        // an open-loop task may be sleeping until a due time past the end: do not wait for it
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Some((h, n)))) => {
                hist.add(h)?;
                done += n;
            }
            _ => continue,
        }
    }
    let failures = shared.failures.load(Ordering::Relaxed);
    let seconds = measure.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "requests": done,
        "failures": failures,
        "rps": done as f64 / seconds,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": hist.max() as f64 / 1000.0,
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{out}")?;
    if failures > 0 {
        let first = shared
            .first_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        anyhow::bail!("{failures} responses failed the check; first: {first:?}");
    }
    anyhow::ensure!(done > 0, "no request completed");
    Ok(())
}
