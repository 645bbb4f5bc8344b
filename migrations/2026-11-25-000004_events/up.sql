-- Transactional outbox: every event is written in the transaction of the change it describes,
-- then published by the relay (Kafka, or the in-process bus) and marked.
CREATE TABLE outbox_events (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id        CHAR(36)        CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_type      VARCHAR(64)     NOT NULL,
    schema_version  INT             NOT NULL,
    aggregate_type  VARCHAR(32)     NOT NULL,
    aggregate_id    VARCHAR(64)     NOT NULL,
    topic           VARCHAR(64)     NOT NULL,
    occurred_at     DATETIME(6)     NOT NULL,
    payload         TEXT            NOT NULL,
    published_at    DATETIME(6)     NULL,
    UNIQUE KEY uq_outbox_event (event_id),
    KEY ix_outbox_unpublished (published_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Effects of consumers, deduplicated on the event id: a redelivered event changes nothing.
CREATE TABLE processed_events (
    consumer      VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_id      CHAR(36)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    processed_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (consumer, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One-time WeChat subscription-message consents a member has left, per template
-- (each accepted `wx.requestSubscribeMessage` allows one message).
CREATE TABLE subscription_quotas (
    member_id    BIGINT UNSIGNED NOT NULL,
    template_id  VARCHAR(64)     NOT NULL,
    remaining    INT             NOT NULL DEFAULT 0,
    updated_at   DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (member_id, template_id),
    CONSTRAINT fk_subscription_quotas_member FOREIGN KEY (member_id) REFERENCES members (id),
    CONSTRAINT ck_subscription_quotas_remaining CHECK (remaining >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
