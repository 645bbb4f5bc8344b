DROP TABLE product_tags;
DROP TABLE product_images;
DROP TABLE skus;
DROP TABLE product_categories;
DROP TABLE products;
DROP TABLE categories;
