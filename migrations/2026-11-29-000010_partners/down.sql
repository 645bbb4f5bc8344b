DROP TABLE IF EXISTS partner_operations;
DROP TABLE IF EXISTS partners;
