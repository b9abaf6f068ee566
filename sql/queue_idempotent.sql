-- Idempotent puts: a put with a dedup_id that was put to the queue within
-- its dedup_window stores nothing and returns the first put's msg_id.

SELECT rmsg.create_queue('idem', dedup_window => '1 minute');
SELECT rmsg.create_queue('idem2');
SELECT dedup_window FROM rmsg.queue WHERE name IN ('idem', 'idem2') ORDER BY name;

SELECT rmsg.put('idem', 'first'::text, dedup_id => 'order-1') AS m1 \gset
SELECT rmsg.put('idem', 'again'::text, dedup_id => 'order-1') = :m1 AS repeat_returns_first;
SELECT rmsg.put('idem', '"jsonb"'::jsonb, dedup_id => 'order-1') = :m1 AS jsonb_repeat;
SELECT rmsg.put('idem', 'bytea'::bytea, dedup_id => 'order-1') = :m1 AS bytea_repeat;
SELECT msg_id = :m1 AS same, token IS NULL AS no_token
  FROM rmsg.put_with_token('idem', 'token'::bytea, dedup_id => 'order-1');
SELECT count(*) AS stored FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'idem';

-- another dedup_id, another queue, or none: new messages
SELECT rmsg.put('idem', 'second'::text, dedup_id => 'order-2') <> :m1 AS other_id;
SELECT rmsg.put('idem2', 'elsewhere'::text, dedup_id => 'order-1') <> :m1 AS other_queue;
SELECT rmsg.put('idem', 'plain'::text) <> rmsg.put('idem', 'plain'::text) AS no_dedup_id;

-- the first message taken and acked: a repeat within the window still
-- returns its msg_id and stores nothing
SELECT rmsg.ack(msg_id) FROM rmsg.get('idem', 10) WHERE msg_id = :m1;
SELECT rmsg.put('idem', 'late'::text, dedup_id => 'order-1') = :m1 AS after_ack;
SELECT count(*) AS live_with_first FROM rmsg.message WHERE msg_id = :m1;

-- after the window the same dedup_id puts a new message (the window is
-- aged here by moving the key back in time)
UPDATE rmsg.put_key SET put_at = put_at - interval '61 seconds'
 WHERE dedup_id = 'order-1' AND queue_id = (SELECT queue_id FROM rmsg.queue WHERE name = 'idem');
SELECT rmsg.put('idem', 'new'::text, dedup_id => 'order-1') AS m2 \gset
SELECT :m2 <> :m1 AS new_after_window;
SELECT rmsg.put('idem', 'new again'::text, dedup_id => 'order-1') = :m2 AS repeat_of_new;

-- a put that rolled back left no key
BEGIN;
SELECT rmsg.put('idem', 'gone'::text, dedup_id => 'order-3') AS m3 \gset
ROLLBACK;
SELECT rmsg.put('idem', 'kept'::text, dedup_id => 'order-3') <> :m3 AS stored_after_rollback;
SELECT convert_from(payload, 'UTF8') AS payload FROM rmsg.get('idem', 10) ORDER BY msg_id;

-- bad input changes nothing
SELECT rmsg.put('idem', 'x'::text, dedup_id => '');
SELECT rmsg.put('idem', 'x'::text, dedup_id => repeat('k', 129));
SELECT rmsg.create_queue('idem3', dedup_window => '0');
SELECT rmsg.create_queue('idem3', dedup_window => '-1 minute');
SELECT rmsg.create_queue('idem3', dedup_window => '367 days');
SELECT count(*) AS none_created FROM rmsg.queue WHERE name = 'idem3';

-- dropping a queue drops its keys
SELECT count(*) > 0 AS had_keys FROM rmsg.put_key;
SELECT rmsg.drop_queue('idem'), rmsg.drop_queue('idem2');
SELECT count(*) AS keys_left FROM rmsg.put_key;

-- DROP OWNED drops a role's queues with their keys, as drop_queue does
CREATE ROLE rmsg_pk_owner;
GRANT USAGE ON SCHEMA rmsg TO rmsg_pk_owner;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO rmsg_pk_owner;
SET ROLE rmsg_pk_owner;
SELECT rmsg.create_queue('pk_owned');
SELECT rmsg.put('pk_owned', 'x'::text, dedup_id => 'k1') > 0 AS put;
RESET ROLE;
SELECT queue_id AS pk_queue FROM rmsg.queue WHERE name = 'pk_owned' \gset
DROP OWNED BY rmsg_pk_owner;
SELECT (SELECT count(*) FROM rmsg.queue WHERE queue_id = :pk_queue) AS queue_rows,
       (SELECT count(*) FROM rmsg.put_key WHERE queue_id = :pk_queue) AS put_keys_left;
DROP ROLE rmsg_pk_owner;
