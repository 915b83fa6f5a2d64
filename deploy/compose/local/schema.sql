-- Example schema for docker-compose.local.yml: replace with your `dbguardian schema dump` output.
CREATE TABLE public.customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    total numeric(12, 2) NOT NULL
);
