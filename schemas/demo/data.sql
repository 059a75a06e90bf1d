-- sqlora demo database: data (deterministic generator)
--
-- Run after schema.sql on an empty SQLite database (SQLite >= 3.35).
-- Reference tables (categories, suppliers, products, employees) are written
-- out by hand; customers, orders, order_items and payments are generated with
-- recursive CTEs driven by a fixed pseudo-random stream (no random()), so every
-- run produces exactly the same rows.
--
-- The "today" of the data set is 2025-06-30; orders span 2022-01-01 .. 2025-06-30.
-- Helper tables are TEMP tables and are dropped at the end.

BEGIN;

-- ---------------------------------------------------------------------------
-- Reference data
-- ---------------------------------------------------------------------------

INSERT INTO categories (category_id, name, description) VALUES
    (1, 'Beverages',        'Coffees, teas, soft drinks, juices and beers'),
    (2, 'Condiments',       'Sauces, mustards, vinegars, spreads and seasonings'),
    (3, 'Confections',      'Chocolates, candies, cookies and desserts'),
    (4, 'Dairy Products',   'Cheeses and butter'),
    (5, 'Grains & Cereals', 'Pasta, rice, noodles, breads and breakfast cereals'),
    (6, 'Meat & Poultry',   'Cured and prepared meats, sausages and poultry'),
    (7, 'Produce',          'Dried fruit, nuts, preserved vegetables and tofu'),
    (8, 'Seafood',          'Fish, shellfish and seaweed');

INSERT INTO suppliers (supplier_id, name, country, city, contact_email) VALUES
    ( 1, 'Nordic Fjord Foods',         'Norway',    'Bergen',    'sales@nordicfjordfoods.no'),
    ( 2, 'Tokyo Fine Foods',           'Japan',     'Tokyo',     'orders@tokyofinefoods.jp'),
    ( 3, 'Osaka Trading Company',      'Japan',     'Osaka',     'export@osakatrading.jp'),
    ( 4, 'Bavaria Feinkost GmbH',      'Germany',   'Munich',    'vertrieb@bavaria-feinkost.de'),
    ( 5, 'La Maison du Fromage',       'France',    'Lyon',      'contact@maisondufromage.fr'),
    ( 6, 'Casa Italiana Alimentari',   'Italy',     'Bologna',   'ordini@casaitaliana.it'),
    ( 7, 'Pacific Northwest Roasters', 'USA',       'Seattle',   'wholesale@pnwroasters.com'),
    ( 8, 'Lone Star Provisions',       'USA',       'Austin',    'sales@lonestarprovisions.com'),
    ( 9, 'British Tea & Biscuit Co.',  'UK',        'London',    'trade@britishteabiscuit.co.uk'),
    (10, 'Iberia Gourmet',             'Spain',     'Valencia',  'pedidos@iberiagourmet.es'),
    (11, 'Outback Harvest',            'Australia', 'Melbourne', 'orders@outbackharvest.com.au'),
    (12, 'Fazenda Boa Vista',          'Brazil',    'Sao Paulo', 'vendas@fazendaboavista.com.br');

-- 80 products: Beverages 14, Condiments 10, Confections 13, Dairy Products 9,
-- Grains & Cereals 8, Meat & Poultry 8, Produce 7, Seafood 11.
INSERT INTO products (product_id, name, category_id, supplier_id, unit_price, units_in_stock, discontinued) VALUES
    -- Beverages
    ( 1, 'Colombian Dark Roast Coffee',     1,  7, 14.50,  62, 0),
    ( 2, 'Ethiopian Light Roast Coffee',    1,  7, 16.75,  38, 0),
    ( 3, 'Espresso Blend Coffee Beans',     1,  7, 18.00,  45, 0),
    ( 4, 'English Breakfast Tea',           1,  9,  6.95, 120, 0),
    ( 5, 'Earl Grey Tea',                   1,  9,  7.25,  96, 0),
    ( 6, 'Sencha Green Tea',                1,  2, 12.40,  54, 0),
    ( 7, 'Matcha Powder',                   1,  2, 24.90,   0, 0),
    ( 8, 'Bavarian Wheat Beer',             1,  4,  3.20, 240, 0),
    ( 9, 'Munich Lager',                    1,  4,  2.90, 310, 0),
    (10, 'Brazilian Santos Coffee',         1, 12, 13.80,  40, 0),
    (11, 'Guarana Soda',                    1, 12,  1.85, 180, 0),
    (12, 'Valencia Orange Juice',           1, 10,  4.60,  75, 0),
    (13, 'Sparkling Elderflower Lemonade',  1,  9,  3.75,   6, 1),
    (14, 'Cold Brew Coffee Concentrate',    1,  7, 11.50,  30, 0),
    -- Condiments
    (15, 'Japanese Soy Sauce',              2,  2,  5.40,  88, 0),
    (16, 'Yuzu Ponzu Sauce',                2,  3,  7.90,  27, 0),
    (17, 'Bavarian Sweet Mustard',          2,  4,  3.95,  64, 0),
    (18, 'Dijon Mustard',                   2,  5,  4.50,  70, 0),
    (19, 'Texas Smoky Barbecue Sauce',      2,  8,  6.25,  51, 0),
    (20, 'Chipotle Hot Sauce',              2,  8,  5.75,  43, 0),
    (21, 'Aged Balsamic Vinegar',           2,  6, 22.00,  19, 0),
    (22, 'Basil Pesto Genovese',            2,  6,  6.80,  36, 0),
    (23, 'Smoked Paprika',                  2, 10,  4.20,  58, 0),
    (24, 'Tomato Ketchup',                  2,  8,  2.95, 150, 0),
    -- Confections
    (25, 'Dark Chocolate Truffles',         3,  5, 19.50,  24, 0),
    (26, 'Milk Chocolate Hazelnut Bar',     3,  6,  3.40, 140, 0),
    (27, 'Lebkuchen Gingerbread',           3,  4,  8.90,  33, 0),
    (28, 'Marzipan Loaf',                   3,  4,  7.60,   0, 1),
    (29, 'Shortbread Biscuits',             3,  9,  5.20,  85, 0),
    (30, 'Sticky Toffee Pudding',           3,  9,  9.75,  22, 0),
    (31, 'French Macarons Assortment',      3,  5, 21.00,  15, 0),
    (32, 'Amaretti Cookies',                3,  6,  6.40,  47, 0),
    (33, 'Turron Almond Nougat',            3, 10, 11.25,  29, 0),
    (34, 'Brigadeiro Chocolate Truffles',   3, 12, 12.90,  18, 0),
    (35, 'Anzac Biscuits',                  3, 11,  5.60,  52, 0),
    (36, 'Mochi Rice Cakes',                3,  3,  8.30,  40, 0),
    (37, 'Salted Caramel Fudge',            3,  9,  6.90,  60, 0),
    -- Dairy Products
    (38, 'Camembert de Normandie',          4,  5,  9.80,  31, 0),
    (39, 'Roquefort Blue Cheese',           4,  5, 16.40,  17, 0),
    (40, 'Comte Aged Cheese',               4,  5, 28.50,   0, 0),
    (41, 'Parmigiano Reggiano',             4,  6, 32.00,  26, 0),
    (42, 'Fresh Mozzarella',                4,  6,  5.90,  48, 0),
    (43, 'Norwegian Brown Cheese',          4,  1, 12.60,  20, 0),
    (44, 'Manchego Cheese',                 4, 10, 18.75,  23, 0),
    (45, 'Cultured Butter',                 4, 11,  7.40,  39, 0),
    (46, 'Bavarian Smoked Cheese',          4,  4,  8.20,  12, 1),
    -- Grains & Cereals
    (47, 'Spaghetti di Gragnano',           5,  6,  3.60, 200, 0),
    (48, 'Arborio Risotto Rice',            5,  6,  4.90, 110, 0),
    (49, 'Japanese Sushi Rice',             5,  2,  6.70,  90, 0),
    (50, 'Soba Buckwheat Noodles',          5,  3,  5.30,  66, 0),
    (51, 'Rye Crispbread',                  5,  1,  4.10,  73, 0),
    (52, 'Steel-Cut Oats',                  5, 11,  5.50,  57, 0),
    (53, 'Pretzel Rolls',                   5,  4,  3.30,   0, 1),
    (54, 'Honey Almond Granola',            5,  7,  7.95,  44, 0),
    -- Meat & Poultry
    (55, 'Prosciutto di Parma',             6,  6, 24.00,  21, 0),
    (56, 'Jamon Serrano',                   6, 10, 29.50,  14, 0),
    (57, 'Spanish Chorizo',                 6, 10,  9.40,  37, 0),
    (58, 'Nuremberg Bratwurst',             6,  4,  8.75,  42, 0),
    (59, 'Texas Beef Jerky',                6,  8, 10.90,  55, 0),
    (60, 'Smoked Turkey Breast',            6,  8, 14.20,  16, 0),
    (61, 'Duck Confit',                     6,  5, 19.90,  11, 0),
    (62, 'Lamb Merguez Sausages',           6, 11, 11.60,  25, 0),
    -- Produce
    (63, 'Dried Apricots',                  7, 11,  6.30,  68, 0),
    (64, 'Macadamia Nuts',                  7, 11, 15.80,   0, 0),
    (65, 'Brazil Nuts',                     7, 12, 12.40,  34, 0),
    (66, 'Sun-Dried Tomatoes',              7,  6,  5.70,  49, 0),
    (67, 'Marinated Artichoke Hearts',      7,  6,  7.20,  28, 0),
    (68, 'Organic Firm Tofu',               7,  2,  3.10,  35, 0),
    (69, 'Marcona Almonds',                 7, 10,  9.60,  41, 0),
    -- Seafood
    (70, 'Smoked Norwegian Salmon',         8,  1, 26.00,  19, 0),
    (71, 'Pickled Herring',                 8,  1,  6.50,  46, 0),
    (72, 'Dried Stockfish',                 8,  1, 18.40,   0, 1),
    (73, 'King Crab Legs',                  8,  1, 54.00,   0, 0),
    (74, 'Nori Seaweed Sheets',             8,  2,  4.80,  95, 0),
    (75, 'Bonito Flakes',                   8,  3,  9.90,  30, 0),
    (76, 'Grilled Unagi Eel',               8,  3, 21.50,  13, 0),
    (77, 'Sardines in Olive Oil',           8, 10,  3.90, 130, 0),
    (78, 'Anchovy Fillets',                 8,  6,  4.60,  77, 0),
    (79, 'Tuna in Olive Oil',               8, 10,  5.10, 102, 0),
    (80, 'Tiger Prawns',                    8, 11, 17.30,  20, 0);

INSERT INTO employees (employee_id, first_name, last_name, title, hire_date, manager_id) VALUES
    ( 1, 'Margaret', 'Collins',   'Chief Executive Officer',     '2019-03-01', NULL),
    ( 2, 'David',    'Fischer',   'VP of Sales',                 '2019-06-15', 1),
    ( 3, 'Priya',    'Raman',     'VP of Operations',            '2019-09-02', 1),
    ( 4, 'James',    'Walsh',     'Sales Manager',               '2020-01-13', 2),
    ( 5, 'Sofia',    'Moreno',    'Sales Manager',               '2020-04-20', 2),
    ( 6, 'Lukas',    'Wagner',    'Sales Representative',        '2020-05-04', 4),
    ( 7, 'Emily',    'Carter',    'Sales Representative',        '2020-08-17', 4),
    ( 8, 'Hiroshi',  'Tanaka',    'Sales Representative',        '2021-02-01', 4),
    ( 9, 'Chloe',    'Dubois',    'Sales Representative',        '2021-05-10', 5),
    (10, 'Marco',    'Rossi',     'Sales Representative',        '2021-09-06', 5),
    (11, 'Olivia',   'Bennett',   'Sales Representative',        '2022-03-14', 5),
    (12, 'Noah',     'Peterson',  'Sales Representative',        '2023-01-09', 4),
    (13, 'Anna',     'Lindqvist', 'Customer Support Specialist', '2021-11-01', 3),
    (14, 'Ben',      'Adeyemi',   'Warehouse Supervisor',        '2020-10-05', 3),
    (15, 'Grace',    'Kim',       'Sales Representative',        '2024-02-19', 5);

-- ---------------------------------------------------------------------------
-- Pseudo-random stream
--   rnd(i).r = bits 16..30 of the i-th state of the ANSI C linear congruential
--   generator  s' = (s * 1103515245 + 12345) mod 2^31,  so 0 <= r < 32768.
--   Each generated row reads its own fixed slots of the stream:
--     customers    i =      8*customer_id + 3..6, 5000 + 0..59 (names)
--     order drafts i =  10000 + 10*draft + 1..9
--     order items  i =  60000 + 24*order_id + 0..20
--     payments     i = 110000 +  2*order_id + 1..2
-- ---------------------------------------------------------------------------

CREATE TEMP TABLE rnd (i INTEGER PRIMARY KEY, r INTEGER NOT NULL);
WITH RECURSIVE lcg(i, s) AS (
    SELECT 0, 20250630
    UNION ALL
    SELECT i + 1, (s * 1103515245 + 12345) % 2147483648 FROM lcg WHERE i < 115000
)
INSERT INTO rnd (i, r) SELECT i, s / 65536 FROM lcg;

-- ---------------------------------------------------------------------------
-- Lookup lists for customers
-- ---------------------------------------------------------------------------

CREATE TEMP TABLE first_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO first_names (name) VALUES
    ('James'), ('Mary'), ('John'), ('Patricia'), ('Robert'), ('Jennifer'),
    ('Michael'), ('Linda'), ('William'), ('Elizabeth'), ('David'), ('Barbara'),
    ('Richard'), ('Susan'), ('Joseph'), ('Jessica'), ('Thomas'), ('Sarah'),
    ('Charles'), ('Karen'), ('Daniel'), ('Nancy'), ('Matthew'), ('Lisa'),
    ('Anthony'), ('Emma'), ('Mark'), ('Olivia'), ('Paul'), ('Sophie'),
    ('Lukas'), ('Anna'), ('Felix'), ('Lena'), ('Hugo'), ('Camille'),
    ('Louis'), ('Chloe'), ('Mateo'), ('Lucia'), ('Pablo'), ('Elena'),
    ('Luca'), ('Giulia'), ('Marco'), ('Francesca'), ('Lars'), ('Ingrid'),
    ('Erik'), ('Astrid'), ('Daan'), ('Sanne'), ('Yuki'), ('Haruto'),
    ('Sakura'), ('Gabriel'), ('Beatriz'), ('Liam'), ('Noah'), ('Ava');

CREATE TEMP TABLE last_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO last_names (name) VALUES
    ('Smith'), ('Johnson'), ('Williams'), ('Brown'), ('Jones'), ('Miller'),
    ('Davis'), ('Wilson'), ('Anderson'), ('Taylor'), ('Thomas'), ('Moore'),
    ('Martin'), ('Jackson'), ('Thompson'), ('White'), ('Harris'), ('Clark'),
    ('Lewis'), ('Walker'), ('Hall'), ('Young'), ('King'), ('Wright'),
    ('Scott'), ('Green'), ('Baker'), ('Adams'), ('Nelson'), ('Campbell'),
    ('Mueller'), ('Schmidt'), ('Schneider'), ('Fischer'), ('Weber'), ('Meyer'),
    ('Wagner'), ('Becker'), ('Dubois'), ('Laurent'), ('Bernard'), ('Moreau'),
    ('Garcia'), ('Fernandez'), ('Lopez'), ('Martinez'), ('Rossi'), ('Russo'),
    ('Ferrari'), ('Bianchi'), ('Johansson'), ('Lindberg'), ('Nilsson'), ('Jansen'),
    ('Visser'), ('Tanaka'), ('Suzuki'), ('Silva'), ('Santos'), ('Murphy');

-- Customer cities; weight = share of customers (out of 100).
-- A city is picked when (r % 100) falls in [lo, hi).
CREATE TEMP TABLE cities (
    city_id INTEGER PRIMARY KEY, city TEXT NOT NULL, country TEXT NOT NULL,
    weight INTEGER NOT NULL, lo INTEGER, hi INTEGER,
    pos INTEGER, cnt INTEGER          -- position within its country, cities in country
);
INSERT INTO cities (city, country, weight) VALUES
    ('New York', 'USA', 6), ('Chicago', 'USA', 4), ('Seattle', 'USA', 3),
    ('Austin', 'USA', 3), ('Boston', 'USA', 2), ('San Francisco', 'USA', 2),
    ('Berlin', 'Germany', 5), ('Munich', 'Germany', 4), ('Hamburg', 'Germany', 3),
    ('Cologne', 'Germany', 2),
    ('London', 'UK', 6), ('Manchester', 'UK', 3), ('Edinburgh', 'UK', 2),
    ('Bristol', 'UK', 1),
    ('Paris', 'France', 5), ('Lyon', 'France', 3), ('Marseille', 'France', 2),
    ('Toronto', 'Canada', 4), ('Vancouver', 'Canada', 2), ('Montreal', 'Canada', 2),
    ('Madrid', 'Spain', 3), ('Barcelona', 'Spain', 3), ('Valencia', 'Spain', 1),
    ('Rome', 'Italy', 3), ('Milan', 'Italy', 3), ('Turin', 'Italy', 1),
    ('Sydney', 'Australia', 3), ('Melbourne', 'Australia', 2), ('Brisbane', 'Australia', 1),
    ('Sao Paulo', 'Brazil', 3), ('Rio de Janeiro', 'Brazil', 2),
    ('Amsterdam', 'Netherlands', 2), ('Rotterdam', 'Netherlands', 1), ('Utrecht', 'Netherlands', 1),
    ('Stockholm', 'Sweden', 2), ('Gothenburg', 'Sweden', 1), ('Malmo', 'Sweden', 1),
    ('Tokyo', 'Japan', 2), ('Osaka', 'Japan', 1);
UPDATE cities SET hi = (SELECT sum(c2.weight) FROM cities AS c2 WHERE c2.city_id <= cities.city_id);
UPDATE cities SET lo = hi - weight;
UPDATE cities SET
    pos = (SELECT count(*) FROM cities AS c2 WHERE c2.country = cities.country AND c2.city_id < cities.city_id),
    cnt = (SELECT count(*) FROM cities AS c2 WHERE c2.country = cities.country);

-- ---------------------------------------------------------------------------
-- customers: 500 rows. Ids follow signup order (2021-01-01 .. mid 2025,
-- one signup every ~3.25 days). Emails are first.last[N]@domain, unique.
-- ---------------------------------------------------------------------------

WITH RECURSIVE seq(n) AS (
    SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 500
),
draws AS (
    SELECT n,
           (n * 1237 + 611) % 3600 AS name_no,
           (SELECT r FROM rnd WHERE i = 8 * n + 3) AS r3,
           (SELECT r FROM rnd WHERE i = 8 * n + 4) AS r4,
           (SELECT r FROM rnd WHERE i = 8 * n + 5) AS r5
    FROM seq
),
people AS (
    SELECT d.n,
           fn.name AS first_name,
           ln.name AS last_name,
           c.city, c.country,
           date('2021-01-01', '+' || ((d.n - 1) * 13 / 4 + d.r4 % 3) || ' days') AS signup_date,
           CASE d.r5 % 10
               WHEN 0 THEN 'yahoo.com'  WHEN 1 THEN 'outlook.com'
               WHEN 2 THEN 'icloud.com' WHEN 3 THEN 'hotmail.com'
               ELSE 'gmail.com'
           END AS domain
    FROM draws AS d
    -- name_no walks all 60 x 60 name pairs in a scrambled order (1237 is coprime
    -- to 3600), so no two customers share a full name; the first name is shifted
    -- by a per-last-name random offset to hide the stride.
    JOIN last_names  AS ln ON ln.id = 1 + d.name_no / 60
    JOIN first_names AS fn ON fn.id = 1 + (d.name_no % 60
                                           + (SELECT r FROM rnd WHERE i = 5000 + d.name_no / 60)) % 60
    JOIN cities      AS c  ON d.r3 % 100 >= c.lo AND d.r3 % 100 < c.hi
),
numbered AS (
    SELECT *, row_number() OVER (PARTITION BY first_name, last_name ORDER BY n) AS dup
    FROM people
)
INSERT INTO customers (customer_id, first_name, last_name, email, city, country, signup_date)
SELECT n, first_name, last_name,
       lower(first_name) || '.' || lower(last_name)
           || CASE WHEN dup > 1 THEN CAST(dup AS TEXT) ELSE '' END || '@' || domain,
       city, country, signup_date
FROM numbered
ORDER BY n;

-- About 8% of customers never order; 8 "regulars" order far more than average
-- (customer_id 7, 47, ..., 287).
CREATE TEMP TABLE customer_traits (
    customer_id INTEGER PRIMARY KEY, active INTEGER NOT NULL, regular INTEGER NOT NULL
);
INSERT INTO customer_traits (customer_id, active, regular)
SELECT customer_id,
       CASE WHEN customer_id % 40 = 7 THEN 1
            WHEN (SELECT r FROM rnd WHERE i = 8 * customer_id + 6) % 100 < 8 THEN 0
            ELSE 1 END,
       CASE WHEN customer_id % 40 = 7 AND customer_id <= 287 THEN 1 ELSE 0 END
FROM customers;

-- ---------------------------------------------------------------------------
-- orders: 2000 rows. Draft orders get a uniform date, then are kept with a
-- probability that follows the season (busy Nov/Dec, quiet Jan/Feb) and grows
-- year over year; the first 2000 kept drafts become orders, numbered by date.
-- ---------------------------------------------------------------------------

-- Sales staff who take orders, with relative weights (sum 31).
CREATE TEMP TABLE order_takers (
    employee_id INTEGER PRIMARY KEY, weight INTEGER NOT NULL, lo INTEGER, hi INTEGER
);
INSERT INTO order_takers (employee_id, weight) VALUES
    (4, 1), (5, 1), (6, 5), (7, 5), (8, 4), (9, 4), (10, 3), (11, 3), (12, 3), (15, 2);
UPDATE order_takers SET hi = (SELECT sum(t2.weight) FROM order_takers AS t2
                              WHERE t2.employee_id <= order_takers.employee_id);
UPDATE order_takers SET lo = hi - weight;

CREATE TEMP TABLE order_drafts AS
WITH RECURSIVE seq(n) AS (
    SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 4000
),
draws AS (
    SELECT n,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 1) AS r1,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 2) AS r2,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 3) AS r3,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 4) AS r4,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 5) AS r5,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 6) AS r6,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 7) AS r7,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 8) AS r8,
           (SELECT r FROM rnd WHERE i = 10000 + 10 * n + 9) AS r9
    FROM seq
),
dated AS (
    -- 1277 days from 2022-01-01 to 2025-06-30; day 0 is 365 days after 2021-01-01.
    SELECT *, r1 % 1277 AS day_no, date('2022-01-01', '+' || (r1 % 1277) || ' days') AS order_date
    FROM draws
),
seasonal AS (
    SELECT *
    FROM dated
    WHERE r2 % 100 <
          CASE CAST(strftime('%m', order_date) AS INTEGER)
              WHEN 1 THEN 55 WHEN 2 THEN 50 WHEN 3 THEN 62 WHEN 4 THEN 66
              WHEN 5 THEN 70 WHEN 6 THEN 68 WHEN 7 THEN 60 WHEN 8 THEN 58
              WHEN 9 THEN 72 WHEN 10 THEN 80 WHEN 11 THEN 95 ELSE 100
          END
          * CASE substr(order_date, 1, 4) WHEN '2022' THEN 72 WHEN '2023' THEN 86 ELSE 100 END
          / 100
),
picked AS (
    SELECT s.*,
           CASE WHEN r3 % 100 < 10
                -- a regular customer, earlier regulars more likely
                THEN 7 + 40 * min(r4 % 8, r5 % 8)
                -- anyone who had signed up by then (ids follow signup order)
                ELSE 1 + r4 % min(500, (day_no + 365) * 4 / 13 + 1)
           END AS customer_id
    FROM seasonal AS s
)
SELECT p.n AS draft_no, p.order_date, p.customer_id,
       CASE WHEN e.hire_date > p.order_date THEN e.manager_id ELSE e.employee_id END AS employee_id,
       p.r7, p.r8, p.r9
FROM picked AS p
JOIN customers       AS c  ON c.customer_id = p.customer_id
JOIN customer_traits AS ct ON ct.customer_id = p.customer_id
JOIN order_takers    AS t  ON p.r6 % 31 >= t.lo AND p.r6 % 31 < t.hi
JOIN employees       AS e  ON e.employee_id = t.employee_id
WHERE c.signup_date <= p.order_date
  AND ct.active = 1
ORDER BY p.n
LIMIT 2000;

WITH numbered AS (
    SELECT row_number() OVER (ORDER BY d.order_date, d.draft_no) AS order_id,
           d.*,
           julianday('2025-06-30') - julianday(d.order_date) AS age_days,
           d.r7 % 100 AS s
    FROM order_drafts AS d
),
statused AS (
    SELECT *,
           CASE
               WHEN age_days <= 4  THEN CASE WHEN s < 65 THEN 'pending' ELSE 'shipped' END
               WHEN age_days <= 10 THEN CASE WHEN s < 10 THEN 'pending' WHEN s < 15 THEN 'cancelled'
                                             WHEN s < 75 THEN 'shipped' ELSE 'delivered' END
               WHEN age_days <= 20 THEN CASE WHEN s < 5 THEN 'cancelled' WHEN s < 30 THEN 'shipped'
                                             ELSE 'delivered' END
               ELSE CASE WHEN s < 7 THEN 'cancelled' WHEN s < 12 THEN 'returned' ELSE 'delivered' END
           END AS status
    FROM numbered
)
INSERT INTO orders (order_id, customer_id, employee_id, order_date, status, shipped_date, ship_city, ship_country)
SELECT st.order_id, st.customer_id, st.employee_id, st.order_date, st.status,
       CASE WHEN st.status IN ('shipped', 'delivered', 'returned')
            THEN min(date(st.order_date, '+' || (1 + st.r8 % 4) || ' days'), '2025-06-30')
       END,
       -- mostly the customer's own city; ~6% go to another city in the same country
       CASE WHEN st.r9 % 100 < 6 THEN alt.city ELSE c.city END,
       c.country
FROM statused AS st
JOIN customers AS c ON c.customer_id = st.customer_id
JOIN cities AS home ON home.city = c.city AND home.country = c.country
JOIN cities AS alt  ON alt.country = c.country AND alt.pos = st.r9 / 100 % home.cnt
ORDER BY st.order_id;

-- ---------------------------------------------------------------------------
-- order_items: 1-5 lines per order, distinct products within an order.
-- Products are picked by popularity weight; six newer products have never been
-- ordered, and discontinued products are replaced by a same-category product in
-- orders from 2024-07-01 on. Prices were 8% lower in 2022 and 4% lower in 2023.
-- ---------------------------------------------------------------------------

CREATE TEMP TABLE product_popularity (
    product_id INTEGER PRIMARY KEY, weight INTEGER NOT NULL, lo INTEGER, hi INTEGER,
    replacement_id INTEGER
);
INSERT INTO product_popularity (product_id, weight)
SELECT product_id,
       CASE WHEN product_id IN (14, 37, 54, 62, 69, 80) THEN 0   -- never ordered
            ELSE 3 + (product_id * 7919) % 11
                 + CASE WHEN unit_price < 10 THEN 5 WHEN unit_price < 20 THEN 2 ELSE 0 END
       END
FROM products;
UPDATE product_popularity SET hi = (SELECT sum(p2.weight) FROM product_popularity AS p2
                                    WHERE p2.product_id <= product_popularity.product_id);
UPDATE product_popularity SET lo = hi - weight;
UPDATE product_popularity SET replacement_id = (
    SELECT min(p2.product_id)
    FROM products AS p1
    JOIN products AS p2 ON p2.category_id = p1.category_id AND p2.discontinued = 0
    JOIN product_popularity AS pp2 ON pp2.product_id = p2.product_id AND pp2.weight > 0
    WHERE p1.product_id = product_popularity.product_id
);
-- One row per unit of weight, so a product is picked by slot = r % total weight.
CREATE TEMP TABLE product_slots (slot INTEGER PRIMARY KEY, product_id INTEGER NOT NULL);
WITH RECURSIVE slot(n) AS (
    SELECT 0 UNION ALL
    SELECT n + 1 FROM slot WHERE n + 1 < (SELECT sum(weight) FROM product_popularity)
)
INSERT INTO product_slots (slot, product_id)
SELECT s.n, pp.product_id
FROM slot AS s JOIN product_popularity AS pp ON s.n >= pp.lo AND s.n < pp.hi;

WITH RECURSIVE line(k) AS (
    SELECT 1 UNION ALL SELECT k + 1 FROM line WHERE k < 5
),
sized AS (
    SELECT o.order_id, o.order_date,
           (SELECT r FROM rnd WHERE i = 60000 + 24 * o.order_id) % 100 AS size_draw
    FROM orders AS o
),
lines AS (
    SELECT s.order_id, s.order_date, l.k,
           (SELECT r FROM rnd WHERE i = 60000 + 24 * s.order_id + 4 * (l.k - 1) + 1) AS rp,
           (SELECT r FROM rnd WHERE i = 60000 + 24 * s.order_id + 4 * (l.k - 1) + 2) AS rq1,
           (SELECT r FROM rnd WHERE i = 60000 + 24 * s.order_id + 4 * (l.k - 1) + 3) AS rq2,
           (SELECT r FROM rnd WHERE i = 60000 + 24 * s.order_id + 4 * (l.k - 1) + 4) AS rd
    FROM sized AS s
    JOIN line AS l
      ON l.k <= CASE WHEN s.size_draw < 26 THEN 1 WHEN s.size_draw < 54 THEN 2
                     WHEN s.size_draw < 74 THEN 3 WHEN s.size_draw < 88 THEN 4 ELSE 5 END
),
chosen AS (
    SELECT ln.*,
           CASE WHEN p.discontinued = 1 AND ln.order_date >= '2024-07-01'
                THEN pp.replacement_id ELSE pp.product_id END AS product_id
    FROM lines AS ln
    JOIN product_slots AS ps ON ps.slot = ln.rp % (SELECT count(*) FROM product_slots)
    JOIN product_popularity AS pp ON pp.product_id = ps.product_id
    JOIN products AS p ON p.product_id = pp.product_id
),
deduped AS (
    SELECT *, row_number() OVER (PARTITION BY order_id, product_id ORDER BY k) AS dup
    FROM chosen
)
INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount)
SELECT row_number() OVER (ORDER BY d.order_id, d.k),
       d.order_id, d.product_id,
       1 + min(d.rq1 % 12, d.rq2 % 12),
       round(p.unit_price * CASE WHEN d.order_date < '2023-01-01' THEN 0.92
                                 WHEN d.order_date < '2024-01-01' THEN 0.96
                                 ELSE 1.0 END, 2),
       CASE WHEN d.rd % 100 < 62 THEN 0.0  WHEN d.rd % 100 < 76 THEN 0.05
            WHEN d.rd % 100 < 86 THEN 0.10 WHEN d.rd % 100 < 93 THEN 0.15
            WHEN d.rd % 100 < 97 THEN 0.20 ELSE 0.25 END
FROM deduped AS d
JOIN products AS p ON p.product_id = d.product_id
WHERE d.dup = 1
ORDER BY d.order_id, d.k;

-- ---------------------------------------------------------------------------
-- payments: one per order that was not cancelled. Bank transfers arrive 1-3
-- days after the order date, other methods are paid on the order date.
-- ---------------------------------------------------------------------------

WITH paid AS (
    SELECT o.order_id, o.order_date,
           CASE WHEN r1.r % 100 < 55 THEN 'card'
                WHEN r1.r % 100 < 80 THEN 'paypal'
                WHEN r1.r % 100 < 92 THEN 'bank_transfer'
                ELSE 'gift_card' END AS method,
           r2.r % 3 + 1 AS transfer_days
    FROM orders AS o
    JOIN rnd AS r1 ON r1.i = 110000 + 2 * o.order_id + 1
    JOIN rnd AS r2 ON r2.i = 110000 + 2 * o.order_id + 2
    WHERE o.status <> 'cancelled'
),
dated AS (
    SELECT *,
           CASE WHEN method = 'bank_transfer'
                THEN min(date(order_date, '+' || transfer_days || ' days'), '2025-06-30')
                ELSE order_date END AS payment_date
    FROM paid
)
INSERT INTO payments (payment_id, order_id, payment_date, amount, method)
SELECT row_number() OVER (ORDER BY d.payment_date, d.order_id),
       d.order_id, d.payment_date,
       (SELECT round(sum(oi.quantity * oi.unit_price * (1 - oi.discount)), 2)
        FROM order_items AS oi WHERE oi.order_id = d.order_id),
       d.method
FROM dated AS d
ORDER BY d.payment_date, d.order_id;

-- ---------------------------------------------------------------------------
-- Clean up helper tables.
-- ---------------------------------------------------------------------------

DROP TABLE temp.rnd;
DROP TABLE temp.first_names;
DROP TABLE temp.last_names;
DROP TABLE temp.cities;
DROP TABLE temp.customer_traits;
DROP TABLE temp.order_takers;
DROP TABLE temp.order_drafts;
DROP TABLE temp.product_popularity;
DROP TABLE temp.product_slots;

COMMIT;
