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
        min_tier_rank -> Nullable<Integer>,
        tier_gate -> Varchar,
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
        purchase_limit -> Nullable<Integer>,
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
        tier_rank -> Integer,
        tier_since -> Nullable<Datetime>,
        tier_review_at -> Nullable<Datetime>,
        points_balance -> Bigint,
        birthday -> Nullable<Date>,
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
        boutique_id -> Nullable<Unsigned<Bigint>>,
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

diesel::table! {
    cart_lines (id) {
        id -> Unsigned<Bigint>,
        member_id -> Unsigned<Bigint>,
        sku_id -> Unsigned<Bigint>,
        quantity -> Integer,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    orders (id) {
        id -> Unsigned<Bigint>,
        order_no -> Nullable<Varchar>,
        member_id -> Unsigned<Bigint>,
        status -> Varchar,
        subtotal_fen -> Bigint,
        discount_fen -> Bigint,
        shipping_fen -> Bigint,
        total_fen -> Bigint,
        refunded_fen -> Bigint,
        currency -> Char,
        ship_recipient -> Varchar,
        ship_phone_enc -> Varchar,
        ship_province -> Varchar,
        ship_city -> Varchar,
        ship_district -> Varchar,
        ship_detail -> Varchar,
        ship_postal_code -> Nullable<Varchar>,
        note -> Nullable<Varchar>,
        carrier -> Nullable<Varchar>,
        tracking_no -> Nullable<Varchar>,
        payment_deadline -> Datetime,
        paid_at -> Nullable<Datetime>,
        shipped_at -> Nullable<Datetime>,
        delivered_at -> Nullable<Datetime>,
        completed_at -> Nullable<Datetime>,
        cancelled_at -> Nullable<Datetime>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    order_lines (id) {
        id -> Unsigned<Bigint>,
        order_id -> Unsigned<Bigint>,
        sku_id -> Unsigned<Bigint>,
        product_id -> Unsigned<Bigint>,
        sku_code -> Varchar,
        product_name_zh -> Varchar,
        product_name_en -> Varchar,
        color -> Nullable<Varchar>,
        size -> Nullable<Varchar>,
        material -> Nullable<Varchar>,
        unit_price_fen -> Bigint,
        quantity -> Integer,
        line_total_fen -> Bigint,
    }
}

diesel::table! {
    order_events (id) {
        id -> Unsigned<Bigint>,
        order_id -> Unsigned<Bigint>,
        from_status -> Nullable<Varchar>,
        to_status -> Varchar,
        actor_kind -> Varchar,
        actor_id -> Nullable<Unsigned<Bigint>>,
        note -> Nullable<Varchar>,
        created_at -> Datetime,
    }
}

diesel::table! {
    idempotency_keys (member_id, idem_key) {
        member_id -> Unsigned<Bigint>,
        idem_key -> Varchar,
        request_hash -> Binary,
        order_id -> Unsigned<Bigint>,
        created_at -> Datetime,
    }
}

diesel::table! {
    inventory_ledger (id) {
        id -> Unsigned<Bigint>,
        sku_id -> Unsigned<Bigint>,
        delta -> Integer,
        reason -> Varchar,
        order_id -> Nullable<Unsigned<Bigint>>,
        actor_id -> Nullable<Unsigned<Bigint>>,
        note -> Nullable<Varchar>,
        created_at -> Datetime,
    }
}

diesel::table! {
    payments (id) {
        id -> Unsigned<Bigint>,
        order_id -> Unsigned<Bigint>,
        out_trade_no -> Varchar,
        amount_fen -> Bigint,
        status -> Varchar,
        prepay_id -> Nullable<Varchar>,
        prepay_at -> Nullable<Datetime>,
        prepay_claimed_at -> Nullable<Datetime>,
        transaction_id -> Nullable<Varchar>,
        payer_total_fen -> Nullable<Bigint>,
        paid_at -> Nullable<Datetime>,
        source -> Nullable<Varchar>,
        next_query_at -> Nullable<Datetime>,
        queries -> Integer,
        closed_at -> Nullable<Datetime>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    refunds (id) {
        id -> Unsigned<Bigint>,
        order_id -> Unsigned<Bigint>,
        out_refund_no -> Varchar,
        refund_id -> Nullable<Varchar>,
        amount_fen -> Bigint,
        reason -> Varchar,
        status -> Varchar,
        kind -> Varchar,
        resume_status -> Nullable<Varchar>,
        requested_by -> Nullable<Unsigned<Bigint>>,
        failure -> Nullable<Varchar>,
        next_check_at -> Nullable<Datetime>,
        attempts -> Integer,
        finished_at -> Nullable<Datetime>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    outbox_events (id) {
        id -> Unsigned<Bigint>,
        event_id -> Varchar,
        event_type -> Varchar,
        schema_version -> Integer,
        aggregate_type -> Varchar,
        aggregate_id -> Varchar,
        topic -> Varchar,
        occurred_at -> Datetime,
        payload -> Text,
        published_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    processed_events (consumer, event_id) {
        consumer -> Varchar,
        event_id -> Varchar,
        processed_at -> Datetime,
    }
}

diesel::table! {
    subscription_quotas (member_id, template_id) {
        member_id -> Unsigned<Bigint>,
        template_id -> Varchar,
        remaining -> Integer,
        updated_at -> Datetime,
    }
}

diesel::table! {
    member_tiers (id) {
        id -> Unsigned<Bigint>,
        code -> Varchar,
        tier_rank -> Integer,
        name_zh -> Varchar,
        name_en -> Varchar,
        min_spend_fen -> Bigint,
        discount_bp -> Integer,
        points_per_yuan -> Integer,
        vip_consultation -> Bool,
        free_shipping_threshold_fen -> Nullable<Bigint>,
        birthday_coupon_template_id -> Nullable<Unsigned<Bigint>>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    points_ledger (id) {
        id -> Unsigned<Bigint>,
        member_id -> Unsigned<Bigint>,
        kind -> Varchar,
        delta -> Bigint,
        balance_after -> Bigint,
        remaining -> Bigint,
        expires_at -> Nullable<Datetime>,
        reason -> Varchar,
        source -> Varchar,
        order_id -> Nullable<Unsigned<Bigint>>,
        staff_id -> Nullable<Unsigned<Bigint>>,
        created_at -> Datetime,
    }
}

diesel::table! {
    coupon_templates (id) {
        id -> Unsigned<Bigint>,
        name -> Varchar,
        description -> Varchar,
        kind -> Varchar,
        amount_fen -> Nullable<Bigint>,
        percent_off -> Nullable<Integer>,
        max_discount_fen -> Nullable<Bigint>,
        min_spend_fen -> Bigint,
        valid_from -> Datetime,
        valid_until -> Datetime,
        valid_days -> Nullable<Integer>,
        min_tier_rank -> Nullable<Integer>,
        total_quantity -> Nullable<Integer>,
        issued_count -> Integer,
        per_member_limit -> Integer,
        claimable -> Bool,
        active -> Bool,
        created_by -> Nullable<Unsigned<Bigint>>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    coupon_template_targets (template_id, target_kind, target_id) {
        template_id -> Unsigned<Bigint>,
        target_kind -> Varchar,
        target_id -> Unsigned<Bigint>,
    }
}

diesel::table! {
    coupons (id) {
        id -> Unsigned<Bigint>,
        template_id -> Unsigned<Bigint>,
        member_id -> Unsigned<Bigint>,
        code -> Varchar,
        status -> Varchar,
        order_id -> Nullable<Unsigned<Bigint>>,
        origin -> Varchar,
        issue_key -> Nullable<Varchar>,
        valid_from -> Datetime,
        valid_until -> Datetime,
        used_at -> Nullable<Datetime>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    member_tier_changes (id) {
        id -> Unsigned<Bigint>,
        member_id -> Unsigned<Bigint>,
        from_rank -> Integer,
        to_rank -> Integer,
        reason -> Varchar,
        spend_fen -> Bigint,
        created_at -> Datetime,
    }
}

diesel::table! {
    order_pricing (order_id) {
        order_id -> Unsigned<Bigint>,
        tier_rank -> Integer,
        tier_discount_fen -> Bigint,
        coupon_id -> Nullable<Unsigned<Bigint>>,
        coupon_discount_fen -> Bigint,
        points_used -> Bigint,
        points_discount_fen -> Bigint,
    }
}

diesel::table! {
    sku_member_prices (sku_id, tier_rank) {
        sku_id -> Unsigned<Bigint>,
        tier_rank -> Integer,
        price_fen -> Bigint,
    }
}

diesel::table! {
    boutiques (id) {
        id -> Unsigned<Bigint>,
        code -> Varchar,
        name_zh -> Varchar,
        name_en -> Varchar,
        city -> Varchar,
        created_at -> Datetime,
    }
}

diesel::table! {
    consultations (id) {
        id -> Unsigned<Bigint>,
        member_id -> Unsigned<Bigint>,
        topic -> Varchar,
        message -> Varchar,
        preferred_slots -> Text,
        product_ids -> Text,
        image_urls -> Text,
        boutique_id -> Nullable<Unsigned<Bigint>>,
        advisor_id -> Nullable<Unsigned<Bigint>>,
        status -> Varchar,
        slot_id -> Nullable<Unsigned<Bigint>>,
        scheduled_at -> Nullable<Datetime>,
        outcome_notes -> Nullable<Varchar>,
        recommended_ids -> Nullable<Text>,
        draft_lines -> Nullable<Text>,
        rating -> Nullable<Tinyint>,
        rating_comment -> Nullable<Varchar>,
        reminded_24h_at -> Nullable<Datetime>,
        reminded_1h_at -> Nullable<Datetime>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    advisor_slots (id) {
        id -> Unsigned<Bigint>,
        advisor_id -> Unsigned<Bigint>,
        starts_at -> Datetime,
        ends_at -> Datetime,
        consultation_id -> Nullable<Unsigned<Bigint>>,
        created_at -> Datetime,
    }
}

diesel::table! {
    consultation_events (id) {
        id -> Unsigned<Bigint>,
        consultation_id -> Unsigned<Bigint>,
        from_status -> Nullable<Varchar>,
        to_status -> Varchar,
        actor_kind -> Varchar,
        actor_id -> Nullable<Unsigned<Bigint>>,
        note -> Nullable<Varchar>,
        created_at -> Datetime,
    }
}

diesel::table! {
    consultation_messages (id) {
        id -> Unsigned<Bigint>,
        consultation_id -> Unsigned<Bigint>,
        author_kind -> Varchar,
        author_id -> Unsigned<Bigint>,
        body -> Varchar,
        image_urls -> Text,
        internal -> Bool,
        created_at -> Datetime,
    }
}

diesel::table! {
    consultation_reads (consultation_id, reader_kind, reader_id) {
        consultation_id -> Unsigned<Bigint>,
        reader_kind -> Varchar,
        reader_id -> Unsigned<Bigint>,
        last_read_id -> Unsigned<Bigint>,
        updated_at -> Datetime,
    }
}

diesel::table! {
    partners (id) {
        id -> Unsigned<Bigint>,
        name -> Varchar,
        key_hash -> Binary,
        scopes -> Varchar,
        active -> Bool,
        cost_per_minute -> Nullable<Unsigned<Integer>>,
        burst -> Nullable<Unsigned<Integer>>,
        created_at -> Datetime,
        revoked_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    partner_operations (partner_id, operation_id) {
        partner_id -> Unsigned<Bigint>,
        operation_id -> Char,
        name -> Varchar,
        kind -> Varchar,
        body -> Text,
        cost -> Unsigned<Integer>,
        registered_at -> Datetime,
    }
}

diesel::joinable!(order_lines -> orders (order_id));
diesel::joinable!(partner_operations -> partners (partner_id));
diesel::joinable!(order_events -> orders (order_id));
diesel::joinable!(cart_lines -> skus (sku_id));
diesel::joinable!(payments -> orders (order_id));
diesel::joinable!(points_ledger -> members (member_id));
diesel::joinable!(coupons -> coupon_templates (template_id));
diesel::joinable!(coupon_template_targets -> coupon_templates (template_id));
diesel::joinable!(refunds -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    categories,
    products,
    product_categories,
    skus,
    product_images,
    product_tags,
    members,
    staff_accounts,
    auth_sessions,
    refresh_tokens,
    member_addresses,
    cart_lines,
    orders,
    order_lines,
    order_events,
    idempotency_keys,
    inventory_ledger,
    payments,
    refunds,
    outbox_events,
    processed_events,
    subscription_quotas,
    member_tiers,
    points_ledger,
    coupon_templates,
    coupon_template_targets,
    coupons,
    member_tier_changes,
    sku_member_prices,
    order_pricing,
    boutiques,
    consultations,
    advisor_slots,
    consultation_events,
    consultation_messages,
    consultation_reads,
    partners,
    partner_operations,
);
