-- WeChat Pay: one payment per order (its prepay and, once paid, its transaction) and refunds.

CREATE TABLE payments (
    id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id           BIGINT UNSIGNED NOT NULL,
    -- the order number, as sent to WeChat Pay
    out_trade_no       VARCHAR(32)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    amount_fen         BIGINT          NOT NULL,
    -- PREPAY (waiting for the payer) | PAID | CLOSED
    status             VARCHAR(8)      NOT NULL,
    prepay_id          VARCHAR(64)     NULL,
    -- when the current prepay was created (WeChat keeps it valid 2 h)
    prepay_at          DATETIME(6)     NULL,
    -- single flight: set while one request asks WeChat Pay for a prepay
    prepay_claimed_at  DATETIME(6)     NULL,
    -- WeChat's transaction id; unique, so one transaction is recorded once
    transaction_id     VARCHAR(32)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    payer_total_fen    BIGINT          NULL,
    paid_at            DATETIME(6)     NULL,
    -- how the payment became known: notify | query | close | dev
    source             VARCHAR(8)      NULL,
    -- next active query of an unpaid prepay (missing callback)
    next_query_at      DATETIME(6)     NULL,
    queries            INT             NOT NULL DEFAULT 0,
    closed_at          DATETIME(6)     NULL,
    created_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_payments_order (order_id),
    UNIQUE KEY uq_payments_out_trade_no (out_trade_no),
    UNIQUE KEY uq_payments_transaction (transaction_id),
    KEY ix_payments_status_query (status, next_query_at),
    CONSTRAINT fk_payments_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE refunds (
    id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id           BIGINT UNSIGNED NOT NULL,
    -- deterministic (order number + sequence, or + A for the automatic refund), reused on retry
    out_refund_no      VARCHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    refund_id          VARCHAR(64)     NULL,
    amount_fen         BIGINT          NOT NULL,
    reason             VARCHAR(80)     NOT NULL,
    -- PENDING (not yet accepted by WeChat Pay) | PROCESSING | SUCCESS | CLOSED | ABNORMAL
    status             VARCHAR(12)     NOT NULL,
    -- ops (refundOrder) | auto (paid after the order was cancelled and stock was gone)
    kind               VARCHAR(8)      NOT NULL,
    -- the order status to return to when a partial refund succeeds or a refund fails
    resume_status      VARCHAR(20)     NULL,
    requested_by       BIGINT UNSIGNED NULL,
    failure            VARCHAR(200)    NULL,
    next_check_at      DATETIME(6)     NULL,
    attempts           INT             NOT NULL DEFAULT 0,
    finished_at        DATETIME(6)     NULL,
    created_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_refunds_out_refund_no (out_refund_no),
    KEY ix_refunds_order (order_id, id),
    KEY ix_refunds_status_check (status, next_check_at),
    CONSTRAINT fk_refunds_order FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT ck_refunds_amount CHECK (amount_fen > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
