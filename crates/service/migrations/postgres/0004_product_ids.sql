-- Products can be created through the admin API: ids come from a sequence, starting
-- after the seeded catalog (SQLite's INTEGER PRIMARY KEY does this by itself).
CREATE SEQUENCE products_id_seq OWNED BY products.id;
SELECT setval('products_id_seq', COALESCE((SELECT MAX(id) FROM products), 0) + 1, false);
ALTER TABLE products ALTER COLUMN id SET DEFAULT nextval('products_id_seq');
