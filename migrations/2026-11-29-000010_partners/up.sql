-- Partners of /partner/graphql: one key each (only its SHA-256 is stored), scopes that bound
-- what their operations may touch, and an optional budget overriding the configured default.
CREATE TABLE partners (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name             VARCHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- SHA-256 of the key; the key itself is printed once at creation and never stored
    key_hash         BINARY(32)      NOT NULL,
    -- space-separated, e.g. `catalog:read`
    scopes           VARCHAR(255)    NOT NULL,
    active           BOOLEAN         NOT NULL DEFAULT TRUE,
    -- cost-weighted token bucket; NULL = the configured default
    cost_per_minute  INT UNSIGNED    NULL,
    burst            INT UNSIGNED    NULL,
    created_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    revoked_at       DATETIME(6)     NULL,
    UNIQUE KEY uq_partners_name (name),
    UNIQUE KEY uq_partners_key_hash (key_hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The operations a partner may run (its registered Apollo persisted-query manifest), by the
-- SHA-256 of the body. Registering a manifest replaces the partner's set.
CREATE TABLE partner_operations (
    partner_id      BIGINT UNSIGNED NOT NULL,
    operation_id    CHAR(64)        CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name            VARCHAR(128)    NOT NULL,
    -- query | mutation
    kind            VARCHAR(16)     NOT NULL,
    body            MEDIUMTEXT      NOT NULL,
    -- cost with variables at their worst case, as computed at registration
    cost            INT UNSIGNED    NOT NULL,
    registered_at   DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (partner_id, operation_id),
    CONSTRAINT fk_partner_operations_partner FOREIGN KEY (partner_id) REFERENCES partners (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
