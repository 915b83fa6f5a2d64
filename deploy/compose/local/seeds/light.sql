-- A few rows to click through.
INSERT INTO public.customers (name) SELECT 'customer ' || g FROM generate_series(1, 10) g;
INSERT INTO public.orders (customer_id, total) SELECT 1 + g % 10, g * 1.5 FROM generate_series(1, 50) g;
