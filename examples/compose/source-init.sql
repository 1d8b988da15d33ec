CREATE TABLE orders (
  id          bigserial PRIMARY KEY,
  customer    text NOT NULL,
  amount      numeric(12,2) NOT NULL,
  status      text NOT NULL DEFAULT 'new',
  updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Keep updated_at moving on every update, so the timestamp cursor sees it.
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
INSERT INTO orders (customer, amount) SELECT 'customer-' || g, (g % 1000) / 10.0 FROM generate_series(1, 1000) g;
