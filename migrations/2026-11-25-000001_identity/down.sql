DROP TABLE member_addresses;
DROP TABLE refresh_tokens;
DROP TABLE auth_sessions;
DROP TABLE staff_accounts;
DROP TABLE members;
