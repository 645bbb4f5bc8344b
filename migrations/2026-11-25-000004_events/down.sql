DROP TABLE IF EXISTS subscription_quotas;
DROP TABLE IF EXISTS processed_events;
DROP TABLE IF EXISTS outbox_events;
