-- Enough rows for pagination and slow-query checks.
INSERT INTO public.customers (name) SELECT 'bulk customer ' || g FROM generate_series(1, 1000) g;
INSERT INTO public.orders (customer_id, total) SELECT 1 + g % 1000, g % 500 FROM generate_series(1, 20000) g;
