-- Handlers for the background worker (README, "Background worker"; shown by
-- test/demo.sh).  Run in the database rmsg.database names, where the
-- extension is installed.

-- A queue handler: bills an order, or fails on one without an amount.
CREATE TABLE invoices (order_id int PRIMARY KEY, amount numeric NOT NULL,
                       billed_by int NOT NULL DEFAULT pg_backend_pid());

CREATE FUNCTION bill(payload bytea, headers jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE o jsonb := convert_from(payload, 'UTF8')::jsonb;
BEGIN
  IF coalesce((o->>'amount')::numeric, 0) <= 0 THEN
    RAISE EXCEPTION 'order % has no amount', o->>'id';
  END IF;
  INSERT INTO invoices (order_id, amount) VALUES ((o->>'id')::int, (o->>'amount')::numeric);
END $$;

SELECT rmsg.create_queue('billing_dead');
SELECT rmsg.create_queue('billing', max_deliveries => 3, dead_letter_queue => 'billing_dead');
SELECT rmsg.subscribe('billing', 'bill(bytea,jsonb)');

-- An instance handler: the order conversation of "Recovery-mode
-- instances", handled inside the server.  A recovery message carries the
-- payment provider's word and completes recovery; the deferred messages
-- are then handled next, in the order they arrived.
CREATE TABLE order_events (
    seq      bigint GENERATED ALWAYS AS IDENTITY,
    instance text, kind text, message text, status text,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION on_order_event(instance text, payload bytea, kind text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE body text := convert_from(payload, 'UTF8');
        state jsonb := rmsg.load_state(instance);
BEGIN
  IF kind = 'recovery' THEN
    state := state || jsonb_build_object('paid', body = 'resync: paid', 'status', 'resynced');
    PERFORM rmsg.complete_recovery(instance, state);
  ELSE
    state := state || jsonb_build_object('status', body);
    PERFORM rmsg.save_state(instance, state);
  END IF;
  INSERT INTO order_events (instance, kind, message, status)
  VALUES (instance, kind, body, state->>'status');
END $$;

SELECT rmsg.set_handler('order-', 'on_order_event(text,bytea,text)');
