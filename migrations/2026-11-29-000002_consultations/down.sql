DROP TABLE IF EXISTS consultation_reads;
DROP TABLE IF EXISTS consultation_messages;
DROP TABLE IF EXISTS consultation_events;
DROP TABLE IF EXISTS advisor_slots;
DROP TABLE IF EXISTS consultations;
ALTER TABLE staff_accounts DROP KEY ix_staff_boutique, DROP COLUMN boutique_id;
DROP TABLE IF EXISTS boutiques;
