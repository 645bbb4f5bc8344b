-- VIP consultations (定制咨询): boutiques, advisors' availability slots, consultations with
-- their timeline, message threads with internal notes and read receipts.

CREATE TABLE boutiques (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    code        VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name_zh     VARCHAR(64)   NOT NULL,
    name_en     VARCHAR(64)   NOT NULL,
    city        VARCHAR(32)   NOT NULL,
    created_at  DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_boutiques_code (code)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Advisors belong to a boutique.
ALTER TABLE staff_accounts
    ADD COLUMN boutique_id BIGINT UNSIGNED NULL,
    ADD KEY ix_staff_boutique (boutique_id);

CREATE TABLE consultations (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    member_id         BIGINT UNSIGNED NOT NULL,
    -- BESPOKE | STYLING | GIFTING | AFTER_CARE | OTHER
    topic             VARCHAR(12)     NOT NULL,
    message           VARCHAR(2000)   NOT NULL,
    -- JSON arrays: preferred start times (RFC 3339), product ids, image URLs
    preferred_slots   TEXT            NOT NULL,
    product_ids       TEXT            NOT NULL,
    image_urls        TEXT            NOT NULL,
    boutique_id       BIGINT UNSIGNED NULL,
    advisor_id        BIGINT UNSIGNED NULL,
    -- REQUESTED | ASSIGNED | SCHEDULED | COMPLETED | CANCELLED
    status            VARCHAR(10)     NOT NULL,
    slot_id           BIGINT UNSIGNED NULL,
    scheduled_at      DATETIME(6)     NULL,
    -- after the appointment (advisor): notes, JSON product ids, JSON draft lines [[sku, qty], …]
    outcome_notes     VARCHAR(2000)   NULL,
    recommended_ids   TEXT            NULL,
    draft_lines       TEXT            NULL,
    rating            TINYINT         NULL,
    rating_comment    VARCHAR(500)    NULL,
    reminded_24h_at   DATETIME(6)     NULL,
    reminded_1h_at    DATETIME(6)     NULL,
    created_at        DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at        DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ix_consultations_member (member_id, id),
    KEY ix_consultations_advisor (advisor_id, id),
    KEY ix_consultations_status (status, id),
    KEY ix_consultations_scheduled (status, scheduled_at),
    CONSTRAINT fk_consultations_member FOREIGN KEY (member_id) REFERENCES members (id),
    CONSTRAINT ck_consultations_rating CHECK (rating IS NULL OR rating BETWEEN 1 AND 5)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- An advisor's bookable time. A slot holds at most one consultation (unique) and a
-- consultation at most one slot (unique): booking is a conditional update on a free slot.
CREATE TABLE advisor_slots (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    advisor_id       BIGINT UNSIGNED NOT NULL,
    starts_at        DATETIME(6)     NOT NULL,
    ends_at          DATETIME(6)     NOT NULL,
    consultation_id  BIGINT UNSIGNED NULL,
    created_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_advisor_slots_start (advisor_id, starts_at),
    UNIQUE KEY uq_advisor_slots_consultation (consultation_id),
    CONSTRAINT fk_advisor_slots_advisor FOREIGN KEY (advisor_id) REFERENCES staff_accounts (id),
    CONSTRAINT ck_advisor_slots_times CHECK (ends_at > starts_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The consultation timeline.
CREATE TABLE consultation_events (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    consultation_id  BIGINT UNSIGNED NOT NULL,
    from_status      VARCHAR(10)     NULL,
    to_status        VARCHAR(10)     NOT NULL,
    -- member | staff | system
    actor_kind       VARCHAR(8)      NOT NULL,
    actor_id         BIGINT UNSIGNED NULL,
    note             VARCHAR(200)    NULL,
    created_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_consultation_events (consultation_id, id),
    CONSTRAINT fk_consultation_events FOREIGN KEY (consultation_id) REFERENCES consultations (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Messages, stored exactly as written (clients escape them on output). Internal notes are
-- advisors' and never shown to the member.
CREATE TABLE consultation_messages (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    consultation_id  BIGINT UNSIGNED NOT NULL,
    -- member | staff
    author_kind      VARCHAR(8)      NOT NULL,
    author_id        BIGINT UNSIGNED NOT NULL,
    body             VARCHAR(2000)   NOT NULL,
    image_urls       TEXT            NOT NULL,
    internal         BOOLEAN         NOT NULL DEFAULT FALSE,
    created_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_consultation_messages (consultation_id, id),
    CONSTRAINT fk_consultation_messages FOREIGN KEY (consultation_id) REFERENCES consultations (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Read receipts: the last message each participant has read.
CREATE TABLE consultation_reads (
    consultation_id  BIGINT UNSIGNED NOT NULL,
    reader_kind      VARCHAR(8)      NOT NULL,
    reader_id        BIGINT UNSIGNED NOT NULL,
    last_read_id     BIGINT UNSIGNED NOT NULL,
    updated_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (consultation_id, reader_kind, reader_id),
    CONSTRAINT fk_consultation_reads FOREIGN KEY (consultation_id) REFERENCES consultations (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
