DROP TABLE IF EXISTS sku_member_prices;
ALTER TABLE products DROP COLUMN tier_gate, DROP COLUMN min_tier_rank;
ALTER TABLE orders DROP KEY ix_orders_member_paid;
DROP TABLE IF EXISTS order_pricing;
DROP TABLE IF EXISTS member_tier_changes;
DROP TABLE IF EXISTS coupons;
DROP TABLE IF EXISTS coupon_template_targets;
DROP TABLE IF EXISTS coupon_templates;
DROP TABLE IF EXISTS points_ledger;
ALTER TABLE members DROP CONSTRAINT ck_members_points, DROP KEY ix_members_birthday, DROP KEY ix_members_tier_review,
    DROP COLUMN birthday, DROP COLUMN points_balance, DROP COLUMN tier_review_at, DROP COLUMN tier_since, DROP COLUMN tier_rank;
DROP TABLE IF EXISTS member_tiers;
