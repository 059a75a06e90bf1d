-- sqlora demo database: schema (DDL)
--
-- A small online shop selling gourmet food to customers in a dozen countries.
-- Written for SQLite but kept portable-looking: INTEGER PRIMARY KEY, TEXT, REAL,
-- and dates stored as ISO-8601 text ('YYYY-MM-DD').
--
-- Load order: this file, then data.sql (a deterministic data generator).

-- Product categories (e.g. Beverages, Seafood).
CREATE TABLE categories (
    category_id   INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    description   TEXT
);

-- Companies the shop buys its products from.
CREATE TABLE suppliers (
    supplier_id   INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    country       TEXT    NOT NULL,
    city          TEXT    NOT NULL,
    contact_email TEXT
);

-- Products for sale. discontinued is 0 (still sold) or 1 (no longer sold).
CREATE TABLE products (
    product_id     INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    category_id    INTEGER NOT NULL,
    supplier_id    INTEGER NOT NULL,
    unit_price     REAL    NOT NULL CHECK (unit_price >= 0),
    units_in_stock INTEGER NOT NULL DEFAULT 0 CHECK (units_in_stock >= 0),
    discontinued   INTEGER NOT NULL DEFAULT 0 CHECK (discontinued IN (0, 1)),
    FOREIGN KEY (category_id) REFERENCES categories (category_id),
    FOREIGN KEY (supplier_id) REFERENCES suppliers (supplier_id)
);

-- People who shop at the store.
CREATE TABLE customers (
    customer_id   INTEGER PRIMARY KEY,
    first_name    TEXT    NOT NULL,
    last_name     TEXT    NOT NULL,
    email         TEXT    NOT NULL UNIQUE,
    city          TEXT    NOT NULL,
    country       TEXT    NOT NULL,
    signup_date   DATE    NOT NULL
);

-- Staff. manager_id points to the employee's manager (NULL for the top).
CREATE TABLE employees (
    employee_id   INTEGER PRIMARY KEY,
    first_name    TEXT    NOT NULL,
    last_name     TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    hire_date     DATE    NOT NULL,
    manager_id    INTEGER,
    FOREIGN KEY (manager_id) REFERENCES employees (employee_id)
);

-- Customer orders, each handled by one employee.
-- shipped_date is NULL unless status is 'shipped', 'delivered' or 'returned'.
CREATE TABLE orders (
    order_id      INTEGER PRIMARY KEY,
    customer_id   INTEGER NOT NULL,
    employee_id   INTEGER NOT NULL,
    order_date    DATE    NOT NULL,
    status        TEXT    NOT NULL
                  CHECK (status IN ('pending', 'shipped', 'delivered', 'cancelled', 'returned')),
    shipped_date  DATE,
    ship_city     TEXT    NOT NULL,
    ship_country  TEXT    NOT NULL,
    FOREIGN KEY (customer_id) REFERENCES customers (customer_id),
    FOREIGN KEY (employee_id) REFERENCES employees (employee_id)
);

-- Lines of an order. unit_price is the price charged at order time;
-- discount is a fraction between 0 and 0.25 (0.10 = 10% off).
CREATE TABLE order_items (
    order_item_id INTEGER PRIMARY KEY,
    order_id      INTEGER NOT NULL,
    product_id    INTEGER NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    unit_price    REAL    NOT NULL CHECK (unit_price >= 0),
    discount      REAL    NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount <= 0.25),
    FOREIGN KEY (order_id) REFERENCES orders (order_id),
    FOREIGN KEY (product_id) REFERENCES products (product_id)
);

-- One payment per order that was not cancelled.
-- amount = sum of quantity * unit_price * (1 - discount) over the order's items.
CREATE TABLE payments (
    payment_id    INTEGER PRIMARY KEY,
    order_id      INTEGER NOT NULL,
    payment_date  DATE    NOT NULL,
    amount        REAL    NOT NULL CHECK (amount >= 0),
    method        TEXT    NOT NULL
                  CHECK (method IN ('card', 'paypal', 'bank_transfer', 'gift_card')),
    FOREIGN KEY (order_id) REFERENCES orders (order_id)
);

-- Indexes on foreign-key columns (and a couple of common filters).
CREATE INDEX idx_products_category_id   ON products (category_id);
CREATE INDEX idx_products_supplier_id   ON products (supplier_id);
CREATE INDEX idx_employees_manager_id   ON employees (manager_id);
CREATE INDEX idx_orders_customer_id     ON orders (customer_id);
CREATE INDEX idx_orders_employee_id     ON orders (employee_id);
CREATE INDEX idx_orders_order_date      ON orders (order_date);
CREATE INDEX idx_order_items_order_id   ON order_items (order_id);
CREATE INDEX idx_order_items_product_id ON order_items (product_id);
CREATE UNIQUE INDEX idx_payments_order_id ON payments (order_id);  -- one payment per order
