-- An order conversation governed by an instance (README, "Recovery-mode
-- instances"; test/demo.sh runs it).  Each order is an instance; its state
-- is the order's status.  The handler applies one message to the state and
-- acks it in one transaction, so a crash never loses or repeats a step.
CREATE EXTENSION IF NOT EXISTS recoverable_msg;

-- What the application did, step by step, for the demo to show.
CREATE TABLE order_events (
    seq         bigserial PRIMARY KEY,
    instance    text NOT NULL,
    mode        text NOT NULL,
    kind        text NOT NULL,
    message     text NOT NULL,
    status      text NOT NULL
);

-- Handles the next message of one order, if one is handed out: loads the
-- state, applies the message, saves the state and acks, all in the
-- caller's transaction, so that a crash never separates the state from the
-- ack.  A recovery message 'resync' carries the payment provider's word on
-- the order; it completes recovery, which releases the messages deferred
-- meanwhile.
-- Returns the message handled, or NULL when none was handed out.
CREATE FUNCTION handle_next(order_name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  m      record;
  body   text;
  state  jsonb;
  cur_mode text;
BEGIN
  SELECT * INTO m FROM rmsg.receive(order_name);
  IF m.msg_id IS NULL THEN
    RETURN NULL;
  END IF;
  body := convert_from(m.payload, 'UTF8');
  state := rmsg.load_state(order_name);
  SELECT i.mode INTO cur_mode FROM rmsg.instances i WHERE i.instance = order_name;

  IF m.kind = 'recovery' THEN
    -- the provider says what the order's payment really is
    state := jsonb_set(state, '{paid}', to_jsonb(body = 'resync: paid'));
    state := jsonb_set(state, '{status}', '"resynced"');
    PERFORM rmsg.complete_recovery(order_name, state);
  ELSE
    state := jsonb_set(state, '{status}', to_jsonb(body));
    PERFORM rmsg.save_state(order_name, state);
  END IF;

  INSERT INTO order_events (instance, mode, kind, message, status)
  VALUES (order_name, cur_mode, m.kind, body, state->>'status');
  PERFORM rmsg.ack(m.msg_id);
  RETURN body;
END
$$;

-- Handles an order's messages one transaction each until none is handed out.
CREATE PROCEDURE drain(order_name text)
LANGUAGE plpgsql AS $$
BEGIN
  LOOP
    EXIT WHEN handle_next(order_name) IS NULL;
    COMMIT;
  END LOOP;
END
$$;
