-- Identity: members (WeChat users), staff accounts, sessions with rotating refresh tokens,
-- and the member address book. Personal data is stored encrypted (`*_enc`, AES-256-GCM
-- envelopes bound to their row) with HMAC blind indexes (`*_bidx`) for lookups.

CREATE TABLE members (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    app_id           VARCHAR(32)   NOT NULL,
    openid           VARCHAR(64)   NOT NULL,
    unionid          VARCHAR(64)   NULL,
    nickname         VARCHAR(64)   NOT NULL DEFAULT '',
    avatar_url       VARCHAR(512)  NOT NULL DEFAULT '',
    session_key_enc  VARCHAR(255)  NULL,
    phone_enc        VARCHAR(255)  NULL,
    phone_bidx       CHAR(64)      NULL,
    created_at       DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    last_login_at    DATETIME(6)   NULL,
    UNIQUE KEY uq_members_openid (app_id, openid),
    KEY ix_members_unionid (unionid),
    KEY ix_members_phone (phone_bidx)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE staff_accounts (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username       VARCHAR(64)   NOT NULL,
    display_name   VARCHAR(64)   NOT NULL DEFAULT '',
    -- argon2id PHC string
    password_hash  VARCHAR(255)  NOT NULL,
    -- ADVISOR | OPS | ADMIN
    role           VARCHAR(16)   NOT NULL,
    active         BOOLEAN       NOT NULL DEFAULT TRUE,
    created_at     DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at     DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_staff_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One login = one session = one refresh-token family.
CREATE TABLE auth_sessions (
    id              CHAR(36)        NOT NULL PRIMARY KEY,
    -- member | staff
    subject_kind    VARCHAR(8)      NOT NULL,
    subject_id      BIGINT UNSIGNED NOT NULL,
    created_at      DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at      DATETIME(6)     NOT NULL,
    revoked_at      DATETIME(6)     NULL,
    -- logout | reuse | admin
    revoked_reason  VARCHAR(16)     NULL,
    KEY ix_auth_sessions_subject (subject_kind, subject_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE refresh_tokens (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_id  CHAR(36)        NOT NULL,
    -- SHA-256 of the opaque token; the token itself is never stored
    token_hash  BINARY(32)      NOT NULL,
    created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at  DATETIME(6)     NOT NULL,
    -- set when exchanged for a new token; presenting it again revokes the whole session
    rotated_at  DATETIME(6)     NULL,
    UNIQUE KEY uq_refresh_tokens_hash (token_hash),
    KEY ix_refresh_tokens_session (session_id),
    CONSTRAINT fk_refresh_tokens_session FOREIGN KEY (session_id) REFERENCES auth_sessions (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE member_addresses (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    member_id    BIGINT UNSIGNED NOT NULL,
    recipient    VARCHAR(64)   NOT NULL,
    phone_enc    VARCHAR(255)  NOT NULL,
    province     VARCHAR(32)   NOT NULL,
    city         VARCHAR(32)   NOT NULL,
    district     VARCHAR(32)   NOT NULL,
    detail       VARCHAR(200)  NOT NULL,
    postal_code  VARCHAR(6)    NULL,
    is_default   BOOLEAN       NOT NULL DEFAULT FALSE,
    created_at   DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ix_member_addresses_member (member_id, is_default),
    CONSTRAINT fk_member_addresses_member FOREIGN KEY (member_id) REFERENCES members (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
