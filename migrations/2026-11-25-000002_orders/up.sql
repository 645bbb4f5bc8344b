-- Cart, orders and the inventory ledger.

-- Per-member purchase limit of a SKU (units across all orders that were not cancelled); NULL = none.
ALTER TABLE skus ADD COLUMN purchase_limit INT NULL AFTER stock;

CREATE TABLE cart_lines (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    member_id   BIGINT UNSIGNED NOT NULL,
    sku_id      BIGINT UNSIGNED NOT NULL,
    quantity    INT             NOT NULL,
    created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_cart_lines_member_sku (member_id, sku_id),
    CONSTRAINT fk_cart_lines_member FOREIGN KEY (member_id) REFERENCES members (id),
    CONSTRAINT fk_cart_lines_sku FOREIGN KEY (sku_id) REFERENCES skus (id),
    CONSTRAINT ck_cart_lines_quantity CHECK (quantity BETWEEN 1 AND 99)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE orders (
    id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    -- human-readable, e.g. R2026112400000042; set in the creating transaction
    order_no           VARCHAR(32)     NULL,
    member_id          BIGINT UNSIGNED NOT NULL,
    -- PENDING_PAYMENT | PAID | SHIPPED | DELIVERED | COMPLETED | CANCELLED | REFUNDING | REFUNDED
    status             VARCHAR(20)     NOT NULL,
    subtotal_fen       BIGINT          NOT NULL,
    discount_fen       BIGINT          NOT NULL DEFAULT 0,
    shipping_fen       BIGINT          NOT NULL DEFAULT 0,
    total_fen          BIGINT          NOT NULL,
    refunded_fen       BIGINT          NOT NULL DEFAULT 0,
    currency           CHAR(3)         NOT NULL DEFAULT 'CNY',
    -- address snapshot (the phone re-encrypted, bound to this order)
    ship_recipient     VARCHAR(64)     NOT NULL,
    ship_phone_enc     VARCHAR(255)    NOT NULL,
    ship_province      VARCHAR(32)     NOT NULL,
    ship_city          VARCHAR(32)     NOT NULL,
    ship_district      VARCHAR(32)     NOT NULL,
    ship_detail        VARCHAR(200)    NOT NULL,
    ship_postal_code   VARCHAR(6)      NULL,
    note               VARCHAR(200)    NULL,
    carrier            VARCHAR(32)     NULL,
    tracking_no        VARCHAR(64)     NULL,
    payment_deadline   DATETIME(6)     NOT NULL,
    paid_at            DATETIME(6)     NULL,
    shipped_at         DATETIME(6)     NULL,
    delivered_at       DATETIME(6)     NULL,
    completed_at       DATETIME(6)     NULL,
    cancelled_at       DATETIME(6)     NULL,
    created_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_orders_order_no (order_no),
    KEY ix_orders_member (member_id, id),
    KEY ix_orders_status_deadline (status, payment_deadline),
    KEY ix_orders_status_delivered (status, delivered_at),
    KEY ix_orders_created (created_at, id),
    CONSTRAINT fk_orders_member FOREIGN KEY (member_id) REFERENCES members (id),
    CONSTRAINT ck_orders_amounts CHECK (total_fen >= 0 AND refunded_fen >= 0 AND refunded_fen <= total_fen)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- What was bought, snapshotted at checkout: later catalog edits do not change an order.
CREATE TABLE order_lines (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id         BIGINT UNSIGNED NOT NULL,
    sku_id           BIGINT UNSIGNED NOT NULL,
    product_id       BIGINT UNSIGNED NOT NULL,
    sku_code         VARCHAR(64)     NOT NULL,
    product_name_zh  VARCHAR(128)    NOT NULL,
    product_name_en  VARCHAR(128)    NOT NULL,
    color            VARCHAR(64)     NULL,
    size             VARCHAR(32)     NULL,
    material         VARCHAR(64)     NULL,
    unit_price_fen   BIGINT          NOT NULL,
    quantity         INT             NOT NULL,
    line_total_fen   BIGINT          NOT NULL,
    KEY ix_order_lines_order (order_id),
    KEY ix_order_lines_sku (sku_id),
    CONSTRAINT fk_order_lines_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The order timeline: every transition, in order.
CREATE TABLE order_events (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id    BIGINT UNSIGNED NOT NULL,
    from_status VARCHAR(20)     NULL,
    to_status   VARCHAR(20)     NOT NULL,
    -- member | staff | system
    actor_kind  VARCHAR(8)      NOT NULL,
    actor_id    BIGINT UNSIGNED NULL,
    note        VARCHAR(200)    NULL,
    created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_order_events_order (order_id, id),
    CONSTRAINT fk_order_events_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Checkout idempotency keys (Stripe semantics), kept at least 72 hours.
CREATE TABLE idempotency_keys (
    member_id     BIGINT UNSIGNED NOT NULL,
    -- exact bytes: keys that differ only in case are different keys
    idem_key      VARCHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_hash  BINARY(32)      NOT NULL,
    order_id      BIGINT UNSIGNED NOT NULL,
    created_at    DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (member_id, idem_key),
    KEY ix_idempotency_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Every change of stock with its reason; sums to `skus.stock` per SKU.
CREATE TABLE inventory_ledger (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sku_id      BIGINT UNSIGNED NOT NULL,
    delta       INT             NOT NULL,
    -- initial | reserve | release | adjust
    reason      VARCHAR(16)     NOT NULL,
    order_id    BIGINT UNSIGNED NULL,
    actor_id    BIGINT UNSIGNED NULL,
    note        VARCHAR(200)    NULL,
    created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_inventory_ledger_sku (sku_id, id),
    KEY ix_inventory_ledger_order (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Stock that existed before the ledger (e.g. seeded) enters it once, as `initial`.
INSERT INTO inventory_ledger (sku_id, delta, reason, note)
SELECT id, stock, 'initial', 'stock before the ledger existed' FROM skus WHERE stock <> 0;
