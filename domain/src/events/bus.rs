//! Where published events go: Kafka (idempotent producer, `acks=all`, keyed by aggregate id so
//! per-aggregate order is kept), or, with no brokers configured, an in-process broadcast bus
//! with the same envelope and the same consumers (single node).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::broadcast;

use super::{Event, KafkaSettings, TOPICS};

/// Capacity of the in-process bus; a consumer further behind than this loses events (embedded
/// mode only: Kafka consumers resume from their committed offsets).
const EMBEDDED_CAPACITY: usize = 16_384;

/// The event transport.
#[derive(Clone)]
pub enum Bus {
    /// A Kafka cluster.
    Kafka(Arc<KafkaBus>),
    /// The in-process bus.
    Embedded(broadcast::Sender<Arc<Event>>),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bus::Kafka(k) => write!(
                f,
                "Bus::Kafka({})",
                k.settings.brokers.as_deref().unwrap_or("")
            ),
            Bus::Embedded(_) => f.write_str("Bus::Embedded"),
        }
    }
}

/// Kafka producer and settings.
pub struct KafkaBus {
    producer: FutureProducer,
    settings: KafkaSettings,
}

impl Bus {
    /// Kafka when brokers are configured, else the in-process bus. Connects lazily.
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let Some(brokers) = settings.brokers.as_deref().filter(|b| !b.is_empty()) else {
            return Ok(Bus::Embedded(broadcast::channel(EMBEDDED_CAPACITY).0));
        };
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", settings.timeout_ms.to_string())
            .set("client.id", "ruizhu-relay")
            .create()?;
        Ok(Bus::Kafka(Arc::new(KafkaBus {
            producer,
            settings: settings.clone(),
        })))
    }

    /// Whether this is the in-process bus.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Bus::Embedded(_))
    }

    /// Whether the Kafka cluster answers a metadata request within the configured timeout;
    /// `None` for the in-process bus. Blocking librdkafka call, run off the async runtime.
    pub async fn probe(&self) -> Option<bool> {
        let Bus::Kafka(k) = self else {
            return None;
        };
        let producer = k.producer.clone();
        let timeout = Duration::from_millis(k.settings.timeout_ms);
        let answered = tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::client(&producer)
                .fetch_metadata(None, timeout)
                .map(|m| !m.brokers().is_empty())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        Some(answered)
    }

    /// Creates the topics (Kafka; already existing ones are fine).
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let Bus::Kafka(k) = self else {
            return Ok(());
        };
        let admin: AdminClient<_> = ClientConfig::new()
            .set(
                "bootstrap.servers",
                k.settings.brokers.as_deref().unwrap_or_default(),
            )
            .create()?;
        let names: Vec<String> = TOPICS.iter().map(|t| k.topic(t)).collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    k.settings.partitions,
                    TopicReplication::Fixed(k.settings.replication),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_millis(k.settings.timeout_ms)))
            .request_timeout(Some(Duration::from_millis(k.settings.timeout_ms)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
        Ok(())
    }

    /// Publishes events in order and returns how many, from the first, were delivered (a row
    /// is marked published only after its delivery report; stopping at the first failure keeps
    /// per-aggregate order when the rest is sent again).
    pub async fn publish(&self, events: &[Event]) -> usize {
        match self {
            Bus::Embedded(tx) => {
                for e in events {
                    // no receiver yet is fine: nothing in this process is listening
                    let _ = tx.send(Arc::new(e.clone()));
                }
                events.len()
            }
            Bus::Kafka(k) => k.publish(events).await,
        }
    }

    /// A subscription to `topics` for consumer group `group` (Kafka: offsets stored only when
    /// the caller acknowledges; `from_latest` for per-process fan-out groups that only care
    /// about what happens from now on).
    pub fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
        from_latest: bool,
    ) -> anyhow::Result<Subscription> {
        match self {
            Bus::Embedded(tx) => Ok(Subscription::Embedded {
                rx: tx.subscribe(),
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            }),
            Bus::Kafka(k) => {
                let consumer: StreamConsumer = ClientConfig::new()
                    .set(
                        "bootstrap.servers",
                        k.settings.brokers.as_deref().unwrap_or_default(),
                    )
                    .set("group.id", format!("{}-{group}", k.settings.group_prefix))
                    .set("enable.auto.commit", "true")
                    .set("auto.commit.interval.ms", "500")
                    .set("enable.auto.offset.store", "false")
                    .set(
                        "auto.offset.reset",
                        if from_latest { "latest" } else { "earliest" },
                    )
                    .set("session.timeout.ms", "10000")
                    // deliver soon after an event arrives, even if the broker does not wake
                    // long-polling fetches
                    .set("fetch.wait.max.ms", "20")
                    .set("topic.metadata.refresh.interval.ms", "5000")
                    .create()?;
                let names: Vec<String> = topics.iter().map(|t| k.topic(t)).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                consumer.subscribe(&refs)?;
                Ok(Subscription::Kafka {
                    consumer: ClosingConsumer(Some(consumer)),
                    prefix: k.settings.topic_prefix.clone(),
                })
            }
        }
    }
}

impl KafkaBus {
    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.settings.topic_prefix)
    }

    async fn publish(&self, events: &[Event]) -> usize {
        let payloads: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    self.topic(e.topic()),
                    serde_json::to_string(e).unwrap_or_default(),
                )
            })
            .collect();
        let mut pending = Vec::with_capacity(events.len());
        for (event, (topic, payload)) in events.iter().zip(&payloads) {
            let record = FutureRecord::to(topic)
                .key(event.aggregate_id.as_str())
                .payload(payload.as_str())
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "type",
                        value: Some(event.event_type.as_str()),
                    }),
                );
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "could not enqueue an event for Kafka");
                    break;
                }
            }
        }
        // wait for every report (none is left in flight when the relay lets go of its lock);
        // the delivered prefix is what gets marked
        let mut delivered = 0;
        let mut gap = false;
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) if !gap => delivered += 1,
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    if !gap {
                        tracing::warn!(error = %e, "Kafka did not take an event; the outbox keeps it");
                    }
                    gap = true;
                }
                Err(_) => gap = true,
            }
        }
        if let Some((code, reason)) =
            rdkafka::producer::Producer::client(&self.producer).fatal_error()
        {
            tracing::error!(?code, %reason, "the Kafka producer hit a fatal error; restart the process");
            metrics::counter!("ruizhu_kafka_producer_fatal_total").increment(1);
        }
        delivered
    }
}

/// Where one delivered event came from (what acknowledging stores).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub event: Arc<Event>,
    position: Option<(String, i32, i64)>,
}

/// A Kafka consumer that is closed off the async runtime when dropped. Closing leaves the group
/// and commits the stored offsets, and librdkafka waits for the group coordinator to do so: with
/// the broker down that wait lasts tens of seconds or more, and it must not stall a runtime
/// thread (or a shutdown). Offsets not committed by then are at most one auto-commit interval
/// old, and the consumers deduplicate what is delivered again.
pub struct ClosingConsumer(Option<StreamConsumer>);

impl std::ops::Deref for ClosingConsumer {
    type Target = StreamConsumer;

    fn deref(&self) -> &StreamConsumer {
        // `None` only inside `drop`
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("consumer used after drop"))
    }
}

impl Drop for ClosingConsumer {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let spawned = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(consumer));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not close a Kafka consumer in the background");
            }
        }
    }
}

/// A consumer's stream of events.
pub enum Subscription {
    /// In-process.
    Embedded {
        rx: broadcast::Receiver<Arc<Event>>,
        topics: Vec<String>,
    },
    /// Kafka, one consumer group.
    Kafka {
        consumer: ClosingConsumer,
        prefix: String,
    },
}

impl Subscription {
    /// The next event; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        match self {
            Subscription::Embedded { rx, topics } => loop {
                match rx.recv().await {
                    Ok(event) if topics.iter().any(|t| t == event.topic()) => {
                        return Some(Delivery {
                            event,
                            position: None,
                        });
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::error!(missed = n, "an in-process consumer fell behind");
                        metrics::counter!("ruizhu_events_embedded_lost_total").increment(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Subscription::Kafka { consumer, prefix } => loop {
                match consumer.recv().await {
                    Ok(message) => {
                        let event: Option<Event> = message
                            .payload()
                            .and_then(|p| serde_json::from_slice(p).ok());
                        let position = Some((
                            message.topic().to_owned(),
                            message.partition(),
                            message.offset(),
                        ));
                        match event {
                            Some(event) => {
                                return Some(Delivery {
                                    event: Arc::new(event),
                                    position,
                                });
                            }
                            None => {
                                tracing::error!(topic = message.topic(), prefix = %prefix, "skipping an event that does not parse");
                                let _ = consumer.store_offset(
                                    message.topic(),
                                    message.partition(),
                                    message.offset(),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            },
        }
    }

    /// Marks a delivery done: its offset is committed with the next auto-commit (Kafka).
    pub fn ack(&self, delivery: &Delivery) {
        if let (Subscription::Kafka { consumer, .. }, Some((topic, partition, offset))) =
            (self, &delivery.position)
            && let Err(e) = consumer.store_offset(topic, *partition, *offset)
        {
            tracing::warn!(error = %e, "could not store a consumer offset");
        }
    }
}
