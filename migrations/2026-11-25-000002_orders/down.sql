DROP TABLE inventory_ledger;
DROP TABLE idempotency_keys;
DROP TABLE order_events;
DROP TABLE order_lines;
DROP TABLE orders;
DROP TABLE cart_lines;
ALTER TABLE skus DROP COLUMN purchase_limit;
