-- Sample data for the demo and the tests: many types, two schemas, objects of every kind.
CREATE SCHEMA shop;
CREATE SCHEMA audit;

CREATE TYPE shop.order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');

CREATE TABLE shop.customers (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    signed_up   timestamptz NOT NULL DEFAULT now(),
    profile     jsonb,
    tags        text[],
    avatar      bytea,
    credit      numeric(12, 2) CHECK (credit >= 0),
    birthday    date,
    uid         uuid,
    last_ip     inet
);

CREATE TABLE shop.orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES shop.customers (id),
    status      shop.order_status NOT NULL DEFAULT 'new',
    total       numeric(14, 4) NOT NULL,
    placed_at   timestamptz NOT NULL,
    items       jsonb NOT NULL DEFAULT '[]',
    note        text
);
CREATE INDEX orders_customer_idx ON shop.orders (customer_id);
CREATE INDEX orders_placed_idx ON shop.orders (placed_at DESC);

CREATE TABLE audit.events (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL,
    payload  json,
    floats   double precision[],
    duration interval
);

CREATE TABLE audit.blobs (id int PRIMARY KEY, doc oid);

CREATE SEQUENCE audit.ticket_seq START 1000 INCREMENT 7;

INSERT INTO shop.customers (email, name, signed_up, profile, tags, avatar, credit, birthday, uid, last_ip)
SELECT 'user' || g || '@example.com',
       CASE g % 5 WHEN 0 THEN 'Zoë Ünicode ' || g WHEN 1 THEN '山田 ' || g WHEN 2 THEN 'O''Brien ' || g
                  WHEN 3 THEN 'émoji 🐘 ' || g ELSE 'plain ' || g END,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '37 minutes',
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'vip', g % 3 = 0, 'nested', jsonb_build_object('a', array[g, g + 1])) END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE array['t' || (g % 10), 'x,y', 'quote"d'] END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\x00ff'::bytea END,
       round((g * 13.37)::numeric % 10000, 2),
       date '1970-01-01' + (g * 17) % 20000,
       md5(g::text)::uuid,
       ('10.0.' || (g % 256) || '.' || (g % 200))::inet
FROM generate_series(1, 2000) g;

INSERT INTO shop.orders (customer_id, status, total, placed_at, items, note)
SELECT 1 + (g % 2000),
       (array['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4]::shop.order_status,
       (g * 3.14159)::numeric(14, 4),
       timestamptz '2026-06-01 00:00:00+00' + g * interval '11 minutes',
       jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (g % 97), 'qty', 1 + g % 5)),
       CASE WHEN g % 3 = 0 THEN NULL ELSE repeat('note ', g % 20) END
FROM generate_series(1, 10000) g;

INSERT INTO audit.events (at, payload, floats, duration)
SELECT timestamptz '2026-03-01 12:00:00+00' + g * interval '1 second',
       json_build_object('event', 'login', 'n', g),
       array[g * 0.5, 1e-300, 'NaN'::float8, 'Infinity'::float8],
       g * interval '1.5 seconds'
FROM generate_series(1, 3000) g;

INSERT INTO audit.blobs VALUES (1, lo_from_bytea(0, convert_to(repeat('large object payload ', 5000), 'UTF8')));
INSERT INTO audit.blobs VALUES (2, lo_from_bytea(0, decode(repeat('deadbeef', 1000), 'hex')));

SELECT setval('audit.ticket_seq', 123456);

CREATE VIEW shop.order_totals AS
    SELECT customer_id, count(*) AS orders, sum(total) AS spent FROM shop.orders GROUP BY customer_id;

CREATE MATERIALIZED VIEW shop.daily_orders AS
    SELECT date_trunc('day', placed_at) AS day, count(*) AS orders FROM shop.orders GROUP BY 1;

CREATE FUNCTION shop.customer_spent(customer bigint) RETURNS numeric
    LANGUAGE sql STABLE AS $$ SELECT coalesce(sum(total), 0) FROM shop.orders WHERE customer_id = customer $$;

CREATE FUNCTION audit.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.at := coalesce(NEW.at, now());
    RETURN NEW;
END $$;
CREATE TRIGGER events_touch BEFORE INSERT ON audit.events FOR EACH ROW EXECUTE FUNCTION audit.touch();

CREATE TABLE public.settings (key text PRIMARY KEY, value text);
INSERT INTO public.settings VALUES ('currency', 'EUR'), ('empty', ''), ('null', NULL);
COMMENT ON TABLE shop.customers IS 'Customers of the sample shop';
