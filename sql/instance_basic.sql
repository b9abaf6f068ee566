--
-- instance_basic: recovery-mode instances.  An order
-- conversation whose instance recovers: normal messages that arrive meanwhile
-- are deferred, recovery messages are received, completing recovery saves
-- the mode as normal and releases the deferred ones first, in arrival order.
-- One batch in flight per instance; receive_any serves instances in turn.
-- A rolled-back mode change leaves no trace, in the table or the cache.
-- Races are in the isolation specs, crashes in the TAP tests 007 and 008.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql

-- Messages are shown by their payload; msg_ids depend on the files before.
CREATE FUNCTION take(instance text, max int DEFAULT 1)
RETURNS TABLE(kind text, payload text, deliveries int)
LANGUAGE sql AS $$
  SELECT kind, convert_from(payload, 'UTF8'), deliveries
    FROM rmsg.receive(instance, max) ORDER BY msg_id
$$;
-- Receives and acks one message; NULL when none is handed out.
CREATE FUNCTION take_and_ack(instance text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  m record;
BEGIN
  SELECT * INTO m FROM rmsg.receive(instance);
  IF m.msg_id IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM rmsg.ack(m.msg_id);
  RETURN m.kind || ':' || convert_from(m.payload, 'UTF8');
END
$$;
CREATE FUNCTION deliver(instance text, payload text, kind text DEFAULT 'normal')
RETURNS text LANGUAGE sql AS $$
  SELECT disposition FROM rmsg.deliver(instance, convert_to(payload, 'UTF8'), kind)
$$;
CREATE VIEW line AS
SELECT instance, mode, ready, deferred, in_flight, recovery_since IS NOT NULL AS recovering_since_set,
       recovery_messages
  FROM rmsg.instances ORDER BY instance;

-- A new instance is in normal mode with its state.
SELECT rmsg.create_instance('order-17', '{"status": "placed"}');
SELECT rmsg.load_state('order-17');
SELECT * FROM line;

-- Normal mode: messages are ready and received in order.
SELECT deliver('order-17', 'pay');
SELECT deliver('order-17', 'ship');
SELECT * FROM line;
SELECT take_and_ack('order-17');

-- The instance recovers: a normal message is deferred, a recovery one is
-- ready, and only recovery messages are received ('ship', which arrived
-- before recovery began, waits too).
SELECT rmsg.begin_recovery('order-17');
SELECT deliver('order-17', 'cancel');
SELECT deliver('order-17', 'replay-1', 'recovery');
SELECT deliver('order-17', 'refund');
SELECT deliver('order-17', 'replay-2', 'recovery');
SELECT * FROM line;
SELECT take_and_ack('order-17');
-- the state is loaded and saved in the transaction that handles a recovery message
SELECT rmsg.load_state('order-17');
SELECT rmsg.save_state('order-17', '{"status": "paid", "replayed": 1}');
SELECT take_and_ack('order-17');
SELECT take_and_ack('order-17') AS nothing_but_deferred;
SELECT * FROM line;

-- Completing recovery saves mode and state and releases the 3 deferred
-- messages; they come before anything that arrives later.
SELECT rmsg.complete_recovery('order-17', '{"status": "paid", "replayed": 2}') AS released;
SELECT rmsg.load_state('order-17');
SELECT deliver('order-17', 'late');
SELECT * FROM line;
SELECT take_and_ack('order-17') FROM generate_series(1, 5);
SELECT * FROM line;

-- complete_recovery without a state keeps the saved one.
SELECT rmsg.begin_recovery('order-17');
SELECT rmsg.complete_recovery('order-17') AS released;
SELECT rmsg.load_state('order-17');

-- One batch in flight: nothing more is handed out until it is settled.
SELECT deliver('order-17', 'a'), deliver('order-17', 'b'), deliver('order-17', 'c'), deliver('order-17', 'd');
SELECT * FROM take('order-17', 2);
SELECT * FROM take('order-17', 2) AS none_while_in_flight;
SELECT in_flight, ready FROM line;
-- acking the first of the batch still leaves the second in flight
SELECT rmsg.ack(msg_id) FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND convert_from(m.payload, 'UTF8') = 'a';
SELECT * FROM take('order-17') AS none_while_b_in_flight;
-- a nack without a delay puts 'b' back at the head of the line
SELECT rmsg.nack(msg_id) FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND convert_from(m.payload, 'UTF8') = 'b';
SELECT * FROM take('order-17');
-- extend keeps it in flight; a nack with a delay holds the line
SELECT rmsg.extend(msg_id, '1 hour') FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND convert_from(m.payload, 'UTF8') = 'b';
SELECT rmsg.nack(msg_id, '1 hour') FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND convert_from(m.payload, 'UTF8') = 'b';
SELECT * FROM take('order-17') AS none_while_b_delayed;
SELECT rmsg.nack(msg_id) AS nack_of_delayed_b FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND convert_from(m.payload, 'UTF8') = 'b';
-- an expired lease makes the batch receivable again, its deliveries counted
SELECT count(*) AS leased_briefly FROM rmsg.receive('order-17', 3, '1 millisecond');
SELECT pg_sleep(0.01);
SELECT * FROM take('order-17', 3);
SELECT rmsg.ack(array_agg(msg_id)) FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17';
SELECT * FROM line;

-- Recovery messages in flight hold the line after completion too.
SELECT rmsg.begin_recovery('order-17');
SELECT deliver('order-17', 'n1'), deliver('order-17', 'r1', 'recovery');
SELECT * FROM take('order-17');
SELECT rmsg.complete_recovery('order-17') AS released;
SELECT * FROM take('order-17') AS none_while_r1_in_flight;
SELECT rmsg.ack(msg_id) FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND kind = 'recovery';
SELECT take_and_ack('order-17');

-- A normal message in flight when recovery begins holds the line as well.
SELECT deliver('order-17', 'n2');
SELECT * FROM take('order-17');
SELECT rmsg.begin_recovery('order-17');
SELECT deliver('order-17', 'r2', 'recovery');
SELECT * FROM take('order-17') AS none_while_n2_in_flight;
SELECT rmsg.ack(msg_id) FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-17' AND kind = 'normal';
SELECT take_and_ack('order-17');
SELECT rmsg.complete_recovery('order-17') AS released;

-- receive_any: one message per instance, never an instance with one in
-- flight, and an instance in recovery only for its recovery messages.
SELECT rmsg.create_instance('order-18'), rmsg.create_instance('order-19'), rmsg.create_instance('order-20');
SELECT deliver('order-17', 'x1'), deliver('order-17', 'x2'), deliver('order-18', 'y1'),
       deliver('order-19', 'z1');
SELECT rmsg.begin_recovery('order-20');
SELECT deliver('order-20', 'w1'), deliver('order-20', 'w2', 'recovery');
SELECT instance, kind, convert_from(payload, 'UTF8') AS payload
  FROM rmsg.receive_any(10) ORDER BY instance;
SELECT count(*) AS none_while_all_in_flight FROM rmsg.receive_any(10);
SELECT rmsg.ack(array_agg(m.msg_id)) FROM rmsg.instance_message m
 WHERE m.lease_until > now();
SELECT instance, kind, convert_from(payload, 'UTF8') AS payload
  FROM rmsg.receive_any(10) ORDER BY instance;
SELECT rmsg.ack(array_agg(m.msg_id)) FROM rmsg.instance_message m
 WHERE m.lease_until > now();
SELECT count(*) AS only_deferred_left FROM rmsg.receive_any(10);
SELECT * FROM line;

-- A rolled-back mode change leaves no trace: deliveries after it see the
-- mode as it was (the shared cache included).
BEGIN;
SELECT rmsg.begin_recovery('order-18');
SELECT deliver('order-18', 'inside');
ROLLBACK;
SELECT deliver('order-18', 'after-rollback');
BEGIN;
SELECT rmsg.complete_recovery('order-20');
SELECT deliver('order-20', 'inside');
ROLLBACK;
SELECT deliver('order-20', 'after-rollback');
-- a savepoint rolled back too
BEGIN;
SELECT deliver('order-18', 'before-savepoint');
SAVEPOINT s;
SELECT rmsg.begin_recovery('order-18');
SELECT deliver('order-18', 'in-savepoint');
ROLLBACK TO SAVEPOINT s;
SELECT deliver('order-18', 'after-savepoint');
COMMIT;
SELECT instance, mode, ready, deferred FROM line;

-- The same without the cache.
SET rmsg.instance_cache = off;
SELECT deliver('order-20', 'uncached');
SELECT rmsg.complete_recovery('order-20') AS released;
SELECT deliver('order-20', 'uncached-2');
RESET rmsg.instance_cache;
SELECT deliver('order-20', 'cached-again');
SELECT i.name, kind, convert_from(payload, 'UTF8') AS payload
  FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
 WHERE i.name = 'order-20' ORDER BY msg_id;

-- Dropping an instance takes its messages along; the name can be used again.
SELECT rmsg.drop_instance('order-20');
SELECT count(*) AS orphans FROM rmsg.instance_message m
 WHERE NOT EXISTS (SELECT 1 FROM rmsg.instance i WHERE i.instance_id = m.instance_id);
SELECT rmsg.create_instance('order-20');
SELECT deliver('order-20', 'fresh');
SELECT instance, mode, ready, deferred, in_flight FROM line WHERE instance = 'order-20';

-- Headers travel with the message.
SELECT disposition FROM rmsg.deliver('order-19', 'h', 'normal', '{"trace": "t-1"}');
SELECT headers FROM rmsg.receive('order-19');

SELECT rmsg.drop_instance(name) FROM rmsg.instance ORDER BY name;
SELECT count(*) AS messages_left FROM rmsg.instance_message;
