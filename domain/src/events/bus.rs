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
    /// Replaced when librdkafka declares the idempotent producer fatally broken (e.g. a broker
    /// that came back without the producer's state).
    producer: std::sync::RwLock<FutureProducer>,
    settings: KafkaSettings,
    /// When topics were last (re)created after a failed delivery, so a broker that lost its
    /// topics gets them back without an admin call per relay pass.
    topics_checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Publish passes in a row that did not deliver everything.
    failed_passes: std::sync::atomic::AtomicU32,
}

/// After this many failed publish passes in a row the producer is replaced even if librdkafka
/// did not call its state fatal: an idempotent producer whose broker came back without its
/// state can wait for a producer id forever, timing out every message.
const REPLACE_PRODUCER_AFTER: u32 = 3;

fn producer_for(settings: &KafkaSettings, brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", settings.timeout_ms.to_string())
        .set("client.id", "ruizhu-relay")
        .create()?)
}

impl Bus {
    /// Kafka when brokers are configured, else the in-process bus. Connects lazily.
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let Some(brokers) = settings.brokers.as_deref().filter(|b| !b.is_empty()) else {
            return Ok(Bus::Embedded(broadcast::channel(EMBEDDED_CAPACITY).0));
        };
        Ok(Bus::Kafka(Arc::new(KafkaBus {
            producer: std::sync::RwLock::new(producer_for(settings, brokers)?),
            settings: settings.clone(),
            topics_checked: std::sync::Mutex::new(None),
            failed_passes: std::sync::atomic::AtomicU32::new(0),
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
        let producer = k.producer();
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
        match self {
            Bus::Kafka(k) => k.ensure_topics().await,
            Bus::Embedded(_) => Ok(()),
        }
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
                let topics: Vec<String> = topics.iter().map(|t| k.topic(t)).collect();
                let consumer = k.consumer(group, &topics, from_latest)?;
                Ok(Subscription::Kafka {
                    consumer: ClosingConsumer(Some(consumer)),
                    prefix: k.settings.topic_prefix.clone(),
                    rejoin: Rejoin {
                        bus: k.clone(),
                        group: group.to_owned(),
                        topics,
                        from_latest,
                        disturbed: false,
                        unassigned_since: None,
                    },
                })
            }
        }
    }
}

impl KafkaBus {
    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.settings.topic_prefix)
    }

    /// A consumer in group `group` subscribed to `topics` (full names).
    fn consumer(
        &self,
        group: &str,
        topics: &[String],
        from_latest: bool,
    ) -> anyhow::Result<StreamConsumer> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set(
                "bootstrap.servers",
                self.settings.brokers.as_deref().unwrap_or_default(),
            )
            .set(
                "group.id",
                format!("{}-{group}", self.settings.group_prefix),
            )
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if from_latest { "latest" } else { "earliest" },
            )
            .set("session.timeout.ms", "10000")
            // deliver soon after an event arrives, even if the broker does not wake
            // long-polling fetches; the live groups (fan-out, invalidation) sooner still
            .set(
                "fetch.wait.max.ms",
                if from_latest {
                    self.settings.live_fetch_wait_ms.clamp(1, 20).to_string()
                } else {
                    "20".to_owned()
                },
            )
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create()?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(consumer)
    }

    fn producer(&self) -> FutureProducer {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Creates the topics (Kafka; already existing ones are fine).
    async fn ensure_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<_> = ClientConfig::new()
            .set(
                "bootstrap.servers",
                self.settings.brokers.as_deref().unwrap_or_default(),
            )
            .create()?;
        let names: Vec<String> = TOPICS.iter().map(|t| self.topic(t)).collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    self.settings.partitions,
                    TopicReplication::Fixed(self.settings.replication),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_millis(self.settings.timeout_ms)))
            .request_timeout(Some(Duration::from_millis(self.settings.timeout_ms)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
        Ok(())
    }

    /// After a failed delivery: the broker may have come back without its topics (or the
    /// producer without its state). Recreates the topics at most every few seconds and replaces
    /// a fatally failed producer; the outbox still holds every undelivered row.
    async fn recover(&self) {
        use std::sync::atomic::Ordering;
        let producer = self.producer();
        let failed = self.failed_passes.fetch_add(1, Ordering::Relaxed) + 1;
        let fatal = rdkafka::producer::Producer::client(&producer).fatal_error();
        if let Some((code, reason)) = &fatal {
            tracing::error!(?code, %reason, "the Kafka producer failed fatally; replacing it");
            metrics::counter!("ruizhu_kafka_producer_fatal_total").increment(1);
        }
        if fatal.is_some() || failed >= REPLACE_PRODUCER_AFTER {
            if fatal.is_none() {
                tracing::warn!(
                    failed,
                    "deliveries keep failing; replacing the Kafka producer"
                );
            }
            metrics::counter!("ruizhu_kafka_producer_replaced_total").increment(1);
            let brokers = self.settings.brokers.as_deref().unwrap_or_default();
            match producer_for(&self.settings, brokers) {
                Ok(fresh) => {
                    let old = self
                        .producer
                        .write()
                        .map(|mut p| std::mem::replace(&mut *p, fresh));
                    // dropping a producer flushes, which can wait: not on the async runtime
                    if let Ok(old) = old {
                        let _ = std::thread::Builder::new()
                            .name("kafka-producer-close".into())
                            .spawn(move || drop(old));
                    }
                    self.failed_passes.store(0, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "could not create a Kafka producer"),
            }
        }
        let due = self.topics_checked.lock().is_ok_and(|mut at| {
            let due = at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if due {
                *at = Some(std::time::Instant::now());
            }
            due
        });
        if due && let Err(e) = self.ensure_topics().await {
            tracing::warn!(error = %e, "could not check the Kafka topics");
        }
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
        let producer = self.producer();
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
            match producer.send_result(record) {
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
        if delivered < events.len() {
            self.recover().await;
        } else {
            self.failed_passes
                .store(0, std::sync::atomic::Ordering::Relaxed);
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
        rejoin: Rejoin,
    },
}

/// How long a consumer must hear nothing after a broker error before it is built again.
const QUIET_AFTER_ERROR: Duration = Duration::from_secs(5);
/// How long a consumer may go without any partition before it is built again.
const UNASSIGNED_LIMIT: Duration = Duration::from_secs(30);

/// What a Kafka subscription needs to start over. A broker that comes back after an outage
/// may have lost the group's state or (a rebuilt cluster, or tansu's memory storage) its
/// topics: the old consumer then waits at offsets the recreated topics have not reached and
/// hears nothing. So once the errors stop and nothing arrives for `QUIET_AFTER_ERROR`, the
/// consumer is replaced by a fresh one, which rejoins the group and resumes from the committed
/// offsets, or from the start (`earliest`) or the end (`latest`) of a recreated topic. Events
/// read twice are absorbed by the consumers' deduplication. Likewise a consumer left without
/// partitions for `UNASSIGNED_LIMIT` (a join the coordinator never completed, as tansu does when
/// a dead member of the group has not been expired yet) starts over: with at most as many
/// consumers per group as partitions (`RUIZHU_KAFKA__PARTITIONS`), each always has one.
pub struct Rejoin {
    bus: Arc<KafkaBus>,
    group: String,
    topics: Vec<String>,
    from_latest: bool,
    /// A broker error was seen and no event has arrived since.
    disturbed: bool,
    /// Since when the consumer has had no partition.
    unassigned_since: Option<std::time::Instant>,
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
            Subscription::Kafka {
                consumer,
                prefix,
                rejoin,
            } => loop {
                let Ok(received) = tokio::time::timeout(QUIET_AFTER_ERROR, consumer.recv()).await
                else {
                    // nothing for a while: fine, unless the broker just failed or this
                    // consumer has been left without partitions
                    let now = std::time::Instant::now();
                    let unassigned = consumer
                        .assignment()
                        .map(|a| a.count() == 0)
                        .unwrap_or(true);
                    rejoin.unassigned_since = match (unassigned, rejoin.unassigned_since) {
                        (false, _) => None,
                        (true, None) => Some(now),
                        (true, since) => since,
                    };
                    let stranded = rejoin
                        .unassigned_since
                        .is_some_and(|t| now.duration_since(t) >= UNASSIGNED_LIMIT);
                    if !rejoin.disturbed && !stranded {
                        continue;
                    }
                    tracing::warn!(group = %rejoin.group, stranded, "no event since the broker came back or no partitions; joining the group again");
                    metrics::counter!("ruizhu_kafka_consumer_rejoins_total").increment(1);
                    match rejoin
                        .bus
                        .consumer(&rejoin.group, &rejoin.topics, rejoin.from_latest)
                    {
                        Ok(fresh) => {
                            *consumer = ClosingConsumer(Some(fresh));
                            rejoin.disturbed = false;
                            rejoin.unassigned_since = None;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not build a Kafka consumer");
                            rejoin.disturbed = true;
                        }
                    }
                    continue;
                };
                match received {
                    Ok(message) => {
                        rejoin.disturbed = false;
                        rejoin.unassigned_since = None;
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
                        if !rejoin.disturbed {
                            tracing::warn!(error = %e, "Kafka consumer error");
                        }
                        rejoin.disturbed = true;
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
