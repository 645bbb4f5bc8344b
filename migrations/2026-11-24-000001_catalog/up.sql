-- Catalog: category tree, products (SPU), SKUs, images and tags.
-- Money is integer fen everywhere; ids are BIGINT UNSIGNED and never leave the server unencoded.

CREATE TABLE categories (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    parent_id   BIGINT UNSIGNED NULL,
    slug        VARCHAR(64)  NOT NULL,
    name_zh     VARCHAR(64)  NOT NULL,
    name_en     VARCHAR(64)  NOT NULL,
    position    INT          NOT NULL DEFAULT 0,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_categories_slug (slug),
    KEY ix_categories_parent (parent_id, position),
    CONSTRAINT fk_categories_parent FOREIGN KEY (parent_id) REFERENCES categories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE products (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    slug            VARCHAR(96)   NOT NULL,
    name_zh         VARCHAR(128)  NOT NULL,
    name_en         VARCHAR(128)  NOT NULL,
    description_zh  TEXT          NOT NULL,
    description_en  TEXT          NOT NULL,
    -- DRAFT | PUBLISHED | ARCHIVED; only PUBLISHED products are visible to customers
    status          VARCHAR(16)   NOT NULL DEFAULT 'DRAFT',
    -- featured ordering: lower comes first
    rank_position   INT           NOT NULL DEFAULT 0,
    -- lowest / highest SKU price in fen, kept in step with `skus` by the catalog writes so
    -- listing can sort by price with an index instead of aggregating SKUs per page
    price_min_fen   BIGINT        NOT NULL DEFAULT 0,
    price_max_fen   BIGINT        NOT NULL DEFAULT 0,
    created_at      DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at      DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_products_slug (slug),
    KEY ix_products_featured (status, rank_position, id),
    KEY ix_products_price (status, price_min_fen, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE product_categories (
    product_id   BIGINT UNSIGNED NOT NULL,
    category_id  BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (product_id, category_id),
    KEY ix_product_categories_category (category_id, product_id),
    CONSTRAINT fk_product_categories_product FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE,
    CONSTRAINT fk_product_categories_category FOREIGN KEY (category_id) REFERENCES categories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE skus (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id   BIGINT UNSIGNED NOT NULL,
    code         VARCHAR(64)   NOT NULL,
    color        VARCHAR(64)   NULL,
    size         VARCHAR(32)   NULL,
    material     VARCHAR(64)   NULL,
    price_fen    BIGINT        NOT NULL,
    stock        INT           NOT NULL DEFAULT 0,
    -- ACTIVE | INACTIVE
    status       VARCHAR(16)   NOT NULL DEFAULT 'ACTIVE',
    position     INT           NOT NULL DEFAULT 0,
    created_at   DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_skus_code (code),
    KEY ix_skus_product (product_id, position),
    CONSTRAINT fk_skus_product FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE,
    CONSTRAINT ck_skus_stock_non_negative CHECK (stock >= 0),
    CONSTRAINT ck_skus_price_non_negative CHECK (price_fen >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE product_images (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id  BIGINT UNSIGNED NOT NULL,
    url         VARCHAR(512)  NOT NULL,
    alt         VARCHAR(255)  NOT NULL DEFAULT '',
    position    INT           NOT NULL DEFAULT 0,
    UNIQUE KEY uq_product_images_position (product_id, position),
    CONSTRAINT fk_product_images_product FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE product_tags (
    product_id  BIGINT UNSIGNED NOT NULL,
    tag         VARCHAR(32)   NOT NULL,
    PRIMARY KEY (product_id, tag),
    KEY ix_product_tags_tag (tag, product_id),
    CONSTRAINT fk_product_tags_product FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
