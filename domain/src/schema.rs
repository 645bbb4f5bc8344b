//! Diesel table definitions, kept in step with `migrations/` (the migration test in
//! `tests/catalog.rs` loads every table through these definitions, so drift fails a test).

diesel::table! {
    categories (id) {
        id -> Unsigned<Bigint>,
        parent_id -> Nullable<Unsigned<Bigint>>,
        slug -> Varchar,
        name_zh -> Varchar,
        name_en -> Varchar,
        position -> Integer,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    products (id) {
        id -> Unsigned<Bigint>,
        slug -> Varchar,
        name_zh -> Varchar,
        name_en -> Varchar,
        description_zh -> Text,
        description_en -> Text,
        status -> Varchar,
        rank_position -> Integer,
        price_min_fen -> Bigint,
        price_max_fen -> Bigint,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    product_categories (product_id, category_id) {
        product_id -> Unsigned<Bigint>,
        category_id -> Unsigned<Bigint>,
    }
}

diesel::table! {
    skus (id) {
        id -> Unsigned<Bigint>,
        product_id -> Unsigned<Bigint>,
        code -> Varchar,
        color -> Nullable<Varchar>,
        size -> Nullable<Varchar>,
        material -> Nullable<Varchar>,
        price_fen -> Bigint,
        stock -> Integer,
        status -> Varchar,
        position -> Integer,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    product_images (id) {
        id -> Unsigned<Bigint>,
        product_id -> Unsigned<Bigint>,
        url -> Varchar,
        alt -> Varchar,
        position -> Integer,
    }
}

diesel::table! {
    product_tags (product_id, tag) {
        product_id -> Unsigned<Bigint>,
        tag -> Varchar,
    }
}

diesel::joinable!(product_categories -> products (product_id));
diesel::joinable!(product_categories -> categories (category_id));
diesel::joinable!(skus -> products (product_id));
diesel::joinable!(product_images -> products (product_id));
diesel::joinable!(product_tags -> products (product_id));

diesel::allow_tables_to_appear_in_same_query!(
    categories,
    products,
    product_categories,
    skus,
    product_images,
    product_tags,
);

diesel::table! {
    members (id) {
        id -> Unsigned<Bigint>,
        app_id -> Varchar,
        openid -> Varchar,
        unionid -> Nullable<Varchar>,
        nickname -> Varchar,
        avatar_url -> Varchar,
        session_key_enc -> Nullable<Varchar>,
        phone_enc -> Nullable<Varchar>,
        phone_bidx -> Nullable<Char>,
        created_at -> Datetime,
        updated_at -> Datetime,
        last_login_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    staff_accounts (id) {
        id -> Unsigned<Bigint>,
        username -> Varchar,
        display_name -> Varchar,
        password_hash -> Varchar,
        role -> Varchar,
        active -> Bool,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    auth_sessions (id) {
        id -> Char,
        subject_kind -> Varchar,
        subject_id -> Unsigned<Bigint>,
        created_at -> Datetime,
        expires_at -> Datetime,
        revoked_at -> Nullable<Datetime>,
        revoked_reason -> Nullable<Varchar>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Unsigned<Bigint>,
        session_id -> Char,
        token_hash -> Binary,
        created_at -> Datetime,
        expires_at -> Datetime,
        rotated_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    member_addresses (id) {
        id -> Unsigned<Bigint>,
        member_id -> Unsigned<Bigint>,
        recipient -> Varchar,
        phone_enc -> Varchar,
        province -> Varchar,
        city -> Varchar,
        district -> Varchar,
        detail -> Varchar,
        postal_code -> Nullable<Varchar>,
        is_default -> Bool,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::joinable!(refresh_tokens -> auth_sessions (session_id));
diesel::joinable!(member_addresses -> members (member_id));

diesel::allow_tables_to_appear_in_same_query!(
    members,
    staff_accounts,
    auth_sessions,
    refresh_tokens,
    member_addresses,
);
