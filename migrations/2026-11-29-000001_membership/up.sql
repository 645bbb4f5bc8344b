-- Membership: tiers, the points ledger, coupons, tier-gated products and member prices.

-- Tiers are reference data ops may edit (benefits, thresholds); `tier_rank` orders them and never
-- changes once created (members point at it). Rank 0 is everyone's starting tier.
CREATE TABLE member_tiers (
    id                           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    code                         VARCHAR(32)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    tier_rank                    INT           NOT NULL,
    name_zh                      VARCHAR(32)   NOT NULL,
    name_en                      VARCHAR(32)   NOT NULL,
    -- paid spend over the last 12 months that qualifies for this tier (fen)
    min_spend_fen                BIGINT        NOT NULL,
    -- discount at checkout in basis points (500 = 5 %) on lines sold at list price
    discount_bp                  INT           NOT NULL DEFAULT 0,
    -- points earned per whole yuan paid, when an order completes
    points_per_yuan              INT           NOT NULL DEFAULT 1,
    -- may request VIP consultations
    vip_consultation             BOOLEAN       NOT NULL DEFAULT FALSE,
    -- goods total from which shipping is free; NULL = never free
    free_shipping_threshold_fen  BIGINT        NULL,
    -- coupon template issued on the member's birthday; NULL = none
    birthday_coupon_template_id  BIGINT UNSIGNED NULL,
    created_at                   DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at                   DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_member_tiers_code (code),
    UNIQUE KEY uq_member_tiers_rank (tier_rank),
    CONSTRAINT ck_member_tiers_values CHECK (tier_rank >= 0 AND min_spend_fen >= 0
        AND discount_bp BETWEEN 0 AND 5000 AND points_per_yuan BETWEEN 0 AND 100)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT INTO member_tiers (code, tier_rank, name_zh, name_en, min_spend_fen, discount_bp, points_per_yuan,
                          vip_consultation, free_shipping_threshold_fen) VALUES
    ('STANDARD',   0, '普通会员', 'Member',      0,        0,   1, FALSE, 100000),
    ('SILVER',     1, '银卡',     'Silver',      2000000,  300, 1, FALSE, 50000),
    ('GOLD',       2, '金卡',     'Gold',        8000000,  500, 2, TRUE,  0),
    ('BLACK_GOLD', 3, '黑金',     'Black Gold',  30000000, 800, 3, TRUE,  0);

ALTER TABLE members
    ADD COLUMN tier_rank       INT          NOT NULL DEFAULT 0,
    ADD COLUMN tier_since      DATETIME(6)  NULL,
    -- next yearly review (the only time a tier can go down); NULL = nothing to review
    ADD COLUMN tier_review_at  DATETIME(6)  NULL,
    ADD COLUMN points_balance  BIGINT       NOT NULL DEFAULT 0,
    ADD COLUMN birthday        DATE         NULL,
    ADD KEY ix_members_tier_review (tier_review_at),
    ADD KEY ix_members_birthday (birthday),
    ADD CONSTRAINT ck_members_points CHECK (points_balance >= 0);

-- Append-only points ledger. Positive entries are lots that expire; `remaining` is what is
-- left of a lot (spends, expiries and negative adjustments consume the oldest lots first),
-- so SUM(delta) = SUM(remaining) = members.points_balance. `source` makes every effect
-- happen once (e.g. `order:42:earn`).
CREATE TABLE points_ledger (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    member_id      BIGINT UNSIGNED NOT NULL,
    -- EARN | SPEND | REVERSE | EXPIRE | ADJUST
    kind           VARCHAR(8)      NOT NULL,
    delta          BIGINT          NOT NULL,
    balance_after  BIGINT          NOT NULL,
    remaining      BIGINT          NOT NULL DEFAULT 0,
    expires_at     DATETIME(6)     NULL,
    reason         VARCHAR(200)    NOT NULL,
    source         VARCHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    order_id       BIGINT UNSIGNED NULL,
    staff_id       BIGINT UNSIGNED NULL,
    created_at     DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_points_source (member_id, source),
    KEY ix_points_member (member_id, id),
    KEY ix_points_expiring (expires_at, remaining),
    KEY ix_points_order (order_id),
    CONSTRAINT fk_points_member FOREIGN KEY (member_id) REFERENCES members (id),
    CONSTRAINT ck_points_values CHECK (balance_after >= 0 AND remaining >= 0 AND remaining <= GREATEST(delta, 0))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE coupon_templates (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name              VARCHAR(64)   NOT NULL,
    description       VARCHAR(200)  NOT NULL DEFAULT '',
    -- FIXED (amount_fen off) | PERCENT (percent_off % off, at most max_discount_fen)
    kind              VARCHAR(8)    NOT NULL,
    amount_fen        BIGINT        NULL,
    percent_off       INT           NULL,
    max_discount_fen  BIGINT        NULL,
    -- spend on the lines the coupon applies to, before discounts
    min_spend_fen     BIGINT        NOT NULL DEFAULT 0,
    valid_from        DATETIME(6)   NOT NULL,
    valid_until       DATETIME(6)   NOT NULL,
    -- a coupon is valid this many days from its issue (never beyond valid_until); NULL = the window
    valid_days        INT           NULL,
    -- lowest tier rank that may hold it; NULL = any
    min_tier_rank     INT           NULL,
    -- coupons that may ever be issued; NULL = unlimited
    total_quantity    INT           NULL,
    issued_count      INT           NOT NULL DEFAULT 0,
    per_member_limit  INT           NOT NULL DEFAULT 1,
    -- listed for members to claim themselves
    claimable         BOOLEAN       NOT NULL DEFAULT FALSE,
    active            BOOLEAN       NOT NULL DEFAULT TRUE,
    created_by        BIGINT UNSIGNED NULL,
    created_at        DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at        DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ix_coupon_templates_claimable (claimable, active, id),
    CONSTRAINT ck_coupon_templates_kind CHECK (
        (kind = 'FIXED' AND amount_fen > 0 AND percent_off IS NULL)
        OR (kind = 'PERCENT' AND percent_off BETWEEN 1 AND 99 AND amount_fen IS NULL)),
    CONSTRAINT ck_coupon_templates_quantity CHECK (
        issued_count >= 0 AND (total_quantity IS NULL OR issued_count <= total_quantity)
        AND per_member_limit >= 1 AND min_spend_fen >= 0 AND valid_from < valid_until)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Products and categories a template is limited to; none = the whole order.
CREATE TABLE coupon_template_targets (
    template_id  BIGINT UNSIGNED NOT NULL,
    -- PRODUCT | CATEGORY
    target_kind  VARCHAR(8)      NOT NULL,
    target_id    BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (template_id, target_kind, target_id),
    CONSTRAINT fk_coupon_targets_template FOREIGN KEY (template_id) REFERENCES coupon_templates (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE coupons (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    template_id  BIGINT UNSIGNED NOT NULL,
    member_id    BIGINT UNSIGNED NOT NULL,
    -- what the member types or the mini-program sends as `couponCode`
    code         VARCHAR(16)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- AVAILABLE | RESERVED (by an unpaid order) | USED (its order was paid)
    status       VARCHAR(10)     NOT NULL DEFAULT 'AVAILABLE',
    order_id     BIGINT UNSIGNED NULL,
    -- CLAIM | ISSUE | BIRTHDAY
    origin       VARCHAR(8)      NOT NULL,
    -- makes an issue happen once (e.g. `birthday:2026`); NULL for claims and ops issues
    issue_key    VARCHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    valid_from   DATETIME(6)     NOT NULL,
    valid_until  DATETIME(6)     NOT NULL,
    used_at      DATETIME(6)     NULL,
    created_at   DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_coupons_code (code),
    UNIQUE KEY uq_coupons_issue (template_id, member_id, issue_key),
    KEY ix_coupons_member (member_id, status, id),
    KEY ix_coupons_order (order_id),
    CONSTRAINT fk_coupons_template FOREIGN KEY (template_id) REFERENCES coupon_templates (id),
    CONSTRAINT fk_coupons_member FOREIGN KEY (member_id) REFERENCES members (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Tier changes, for the member's history and audits.
CREATE TABLE member_tier_changes (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    member_id   BIGINT UNSIGNED NOT NULL,
    from_rank   INT             NOT NULL,
    to_rank     INT             NOT NULL,
    -- UPGRADE | REVIEW
    reason      VARCHAR(8)      NOT NULL,
    spend_fen   BIGINT          NOT NULL,
    created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_tier_changes_member (member_id, id),
    CONSTRAINT fk_tier_changes_member FOREIGN KEY (member_id) REFERENCES members (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- How an order's discount was made up and what it holds (one row per order placed since
-- membership; older orders have none and used nothing).
CREATE TABLE order_pricing (
    order_id             BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    tier_rank            INT             NOT NULL,
    tier_discount_fen    BIGINT          NOT NULL DEFAULT 0,
    coupon_id            BIGINT UNSIGNED NULL,
    coupon_discount_fen  BIGINT          NOT NULL DEFAULT 0,
    points_used          BIGINT          NOT NULL DEFAULT 0,
    points_discount_fen  BIGINT          NOT NULL DEFAULT 0,
    KEY ix_order_pricing_coupon (coupon_id),
    CONSTRAINT fk_order_pricing_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

ALTER TABLE orders ADD KEY ix_orders_member_paid (member_id, paid_at);

-- Tier-gated products: below `min_tier_rank` a product is hidden (HIDE) or shown locked (LOCK).
ALTER TABLE products
    ADD COLUMN min_tier_rank  INT         NULL,
    ADD COLUMN tier_gate      VARCHAR(4)  NOT NULL DEFAULT 'HIDE';

-- Member prices: a SKU's price for members of a tier and above.
CREATE TABLE sku_member_prices (
    sku_id     BIGINT UNSIGNED NOT NULL,
    tier_rank  INT             NOT NULL,
    price_fen  BIGINT          NOT NULL,
    PRIMARY KEY (sku_id, tier_rank),
    CONSTRAINT fk_sku_member_prices_sku FOREIGN KEY (sku_id) REFERENCES skus (id) ON DELETE CASCADE,
    CONSTRAINT ck_sku_member_prices_price CHECK (price_fen >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
