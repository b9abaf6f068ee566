--
-- queue_basic: creating queues, putting, getting, acking, dropping.
--
-- msg_ids come from one sequence shared by every queue and every test, so
-- they are shown relative to an id captured with \gset.
--
\pset null '(null)'
-- Payloads above rmsg.inline_payload_max get a payload row; the tests need
-- payloads on both sides of it, so it is set here rather than relied on.
\i test/lib/regress_helpers.sql
SET rmsg.inline_payload_max = 256;

-- create_queue with its defaults, and with every argument
SELECT rmsg.create_queue('basic');
SELECT rmsg.create_queue('basic_dlq', 3);
SELECT rmsg.create_queue('basic.all-args_1', max_deliveries => 2,
                         dead_letter_queue => 'basic_dlq', dedup => 'content');
SELECT rmsg.create_queue('basic_none', 7, NULL, 'none');
SELECT rmsg.create_queue(repeat('n', 63));   -- the longest name allowed
SELECT queue, max_deliveries, dead_letter_queue, dedup,
       ready, in_flight, delayed, dead, oldest_ready_age, payload_bytes
  FROM rmsg.queues ORDER BY queue;
SELECT rmsg.drop_queue(repeat('n', 63));

-- put: bytea, text (stored as its UTF-8 bytes), jsonb (stored as its text form)
SELECT rmsg.put('basic', '\x00ff10'::bytea) AS id0 \gset
SELECT rmsg.put('basic', 'héllo'::text) - :id0 AS rel;
SELECT rmsg.put('basic', '{"b": 2, "a": [1, 2, {"c": null}]}'::jsonb) - :id0 AS rel;
-- an untyped literal resolves to the text form
SELECT rmsg.put('basic', 'plain literal', '{"k": "v", "n": 1}') - :id0 AS rel;
SELECT rmsg.put('basic', ''::bytea, headers => '{}') - :id0 AS rel;   -- empty payload

SELECT msg_id - :id0 AS rel, queue_id = (SELECT queue_id FROM rmsg.queue WHERE name = 'basic') AS in_basic,
       coalesce(l.deliveries, 0) AS deliveries, payload_size, payload_id IS NULL AS inline, headers
  FROM rmsg.message LEFT JOIN rmsg.lease l USING (msg_id) ORDER BY msg_id;
SELECT queue, ready, in_flight, delayed, dead, payload_bytes FROM rmsg.queues WHERE queue = 'basic';

-- get: oldest ready first, max at a time; each message comes with a data token
SELECT msg_id - :id0 AS rel, payload, headers, deliveries,
       enqueued_at <= now() AS enqueued_before, data_token IS NOT NULL AS has_token
  FROM rmsg.get('basic', 2);
SELECT msg_id - :id0 AS rel, convert_from(payload, 'UTF8') AS text, headers, deliveries, data_token IS NOT NULL AS has_token
  FROM rmsg.get('basic', 10);
-- everything is in flight now
SELECT count(*) AS got FROM rmsg.get('basic', 10);
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'basic';

-- ack one: true, then false; ack many: counts the ones that existed
SELECT rmsg.ack(:id0) AS first_ack;
SELECT rmsg.ack(:id0) AS second_ack;
SELECT rmsg.ack(ARRAY[:id0 + 1, :id0 + 2, :id0 + 2, :id0, -1]) AS acked;
SELECT rmsg.ack(ARRAY[]::bigint[]) AS acked_none;
SELECT rmsg.ack(NULL::bigint) AS ack_null, rmsg.ack(NULL::bigint[]) AS ack_many_null;
SELECT rmsg.ack(-42) AS unknown;
SELECT msg_id - :id0 AS rel FROM rmsg.message ORDER BY msg_id;
SELECT rmsg.ack(array_agg(msg_id)) AS acked_rest FROM rmsg.message;
SELECT count(*) AS messages_left FROM rmsg.message;

-- oldest ready first, not lowest msg_id: a delayed message queues behind
-- the ones that became ready before it
SELECT rmsg.put('basic', 'late'::text, delay => '0.5 seconds') AS late \gset
SELECT rmsg.put('basic', 'early'::text) - :late AS rel;
SELECT ready, delayed FROM rmsg.queues WHERE queue = 'basic';
SELECT pg_sleep(0.6);
SELECT msg_id - :late AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('basic', 1);
SELECT msg_id - :late AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('basic', 1);
SELECT rmsg.ack(ARRAY[:late, :late + 1]) AS acked;

-- put_batch: ids in array order, one message per element
SELECT n, id - first_value(id) OVER (ORDER BY n) AS rel
  FROM rmsg.put_batch('basic', ARRAY['\x01', '\x0202', '\x030303']::bytea[],
                      '{"batch": true}') WITH ORDINALITY AS b (id, n);
SELECT min(msg_id) AS b0 FROM rmsg.message \gset
SELECT msg_id - :b0 AS rel, payload, headers, deliveries FROM rmsg.get('basic', 10);
SELECT count(*) AS rows FROM rmsg.put_batch('basic', '{}');   -- empty: no rows, nothing written
SELECT count(*) AS rows FROM rmsg.put_batch('basic', ARRAY[]::bytea[], '{"h": 1}');
SELECT count(*) AS messages FROM rmsg.message;
SELECT rmsg.ack(array_agg(msg_id)) AS acked FROM rmsg.message;

-- payloads above rmsg.inline_payload_max get a payload row of their own,
-- which goes when the last message referencing it is acked
SHOW rmsg.inline_payload_max;
SELECT live_payload_rows() AS payload_rows;
SELECT rmsg.put('basic', convert_to(repeat('i', 256), 'UTF8')) AS big0 \gset
SELECT rmsg.put('basic', convert_to(repeat('p', 257), 'UTF8')) - :big0 AS rel;
SELECT rmsg.put('basic', repeat('t', 1000)) - :big0 AS rel;
SELECT rmsg.put('basic', jsonb_build_object('k', repeat('j', 300))) - :big0 AS rel;
SELECT n, id - :big0 AS rel
  FROM rmsg.put_batch('basic', ARRAY[convert_to(repeat('a', 300), 'UTF8'), '\x0a',
                                     convert_to(repeat('b', 5000), 'UTF8')])
       WITH ORDINALITY AS b (id, n);
SELECT msg_id - :big0 AS rel, payload_size, payload_id IS NOT NULL AS has_payload_row,
       inline_data IS NOT NULL AS has_inline
  FROM rmsg.message ORDER BY msg_id;
SELECT count(*) AS payload_rows, count(hash) AS findable_rows,
       sum(length(data)) AS bytes
  FROM rmsg.payload;
SELECT msg_id - :big0 AS rel, length(payload) AS bytes,
       payload = CASE msg_id - :big0
                   WHEN 0 THEN convert_to(repeat('i', 256), 'UTF8')
                   WHEN 1 THEN convert_to(repeat('p', 257), 'UTF8')
                   WHEN 2 THEN convert_to(repeat('t', 1000), 'UTF8')
                   WHEN 3 THEN convert_to(jsonb_build_object('k', repeat('j', 300))::text, 'UTF8')
                   WHEN 4 THEN convert_to(repeat('a', 300), 'UTF8')
                   WHEN 5 THEN '\x0a'::bytea
                   WHEN 6 THEN convert_to(repeat('b', 5000), 'UTF8')
                 END AS intact
  FROM rmsg.get('basic', 10);
SELECT rmsg.ack(:big0 + 1) AS acked;
SELECT live_payload_rows() AS payload_rows;
SELECT rmsg.ack(ARRAY[:big0, :big0 + 2, :big0 + 3]) AS acked;
SELECT live_payload_rows() AS payload_rows;
SELECT rmsg.ack(ARRAY[:big0 + 4, :big0 + 5, :big0 + 6]) AS acked;
SELECT live_payload_rows() AS payload_rows;
-- with the threshold at 0 every non-empty payload gets a row
SET rmsg.inline_payload_max = 0;
SELECT rmsg.put('basic', '\x01'::bytea) AS z0 \gset
SELECT rmsg.put('basic', ''::bytea) - :z0 AS rel;
SELECT msg_id - :z0 AS rel, payload_size, payload_id IS NOT NULL AS has_payload_row
  FROM rmsg.message ORDER BY msg_id;
SELECT msg_id - :z0 AS rel, payload FROM rmsg.get('basic', 5);
SELECT rmsg.ack(ARRAY[:z0, :z0 + 1]) AS acked;
SELECT live_payload_rows() AS payload_rows;
SET rmsg.inline_payload_max = 256;

-- puts and acks are transactional
BEGIN;
SELECT rmsg.put('basic', convert_to(repeat('r', 400), 'UTF8')) IS NOT NULL AS put;
SELECT rmsg.put('basic', 'small'::text) IS NOT NULL AS put;
SELECT count(*) AS messages, live_payload_rows() AS payload_rows FROM rmsg.message;
ROLLBACK;
SELECT count(*) AS messages, live_payload_rows() AS payload_rows FROM rmsg.message;

SELECT rmsg.put('basic', convert_to(repeat('k', 400), 'UTF8')) AS kept \gset
BEGIN;
SELECT rmsg.ack(:kept) AS acked;
SELECT count(*) AS messages, live_payload_rows() AS payload_rows FROM rmsg.message;
ROLLBACK;
SELECT count(*) AS messages, live_payload_rows() AS payload_rows FROM rmsg.message;

-- a get rolled back hands the message back untouched
BEGIN;
SELECT msg_id - :kept AS rel, deliveries FROM rmsg.get('basic');
ROLLBACK;
SELECT msg_id - :kept AS rel, deliveries, length(payload) AS bytes FROM rmsg.get('basic');
SELECT rmsg.ack(:kept) AS acked;

-- drop_queue takes the queue's messages and payload rows with it, and no
-- other queue's
SELECT rmsg.put('basic_none', 'stays'::text) AS other \gset
SELECT queue_id AS basic_id FROM rmsg.queue WHERE name = 'basic' \gset
SELECT count(*) AS rows
  FROM rmsg.put_batch('basic', ARRAY[convert_to(repeat('d', 300), 'UTF8'), '\x01',
                                     convert_to(repeat('e', 300), 'UTF8')]);
SELECT rmsg.put('basic', repeat('f', 300), delay => '1 hour') IS NOT NULL AS put_delayed;
SELECT count(*) AS in_flight FROM rmsg.get('basic', 1);
SELECT count(*) AS messages, live_payload_rows() AS payload_rows FROM rmsg.message;
SELECT rmsg.drop_queue('basic');
SELECT count(*) AS queue_rows FROM rmsg.queue WHERE name = 'basic';
SELECT count(*) AS basic_messages FROM rmsg.message WHERE queue_id = :basic_id;
SELECT live_payload_rows() AS payload_rows;
SELECT msg_id - :other AS rel, convert_from(coalesce(inline_data, ''), 'UTF8') AS text
  FROM rmsg.message;
-- the name is free again, for a new queue
SELECT rmsg.create_queue('basic');
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'basic';
SELECT queue_id <> :basic_id AS new_queue FROM rmsg.queue WHERE name = 'basic';
SELECT rmsg.put('basic', 'into the new queue'::text) IS NOT NULL AS put;
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'basic';
-- dropped and created again in one transaction
BEGIN;
SELECT rmsg.drop_queue('basic');
SELECT rmsg.put('basic', 'nowhere'::text);
ROLLBACK;
BEGIN;
SELECT rmsg.drop_queue('basic');
SELECT rmsg.create_queue('basic', 2);
SELECT rmsg.put('basic', 'into the newer queue'::text) IS NOT NULL AS put;
COMMIT;
SELECT queue, max_deliveries, ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'basic';
SELECT convert_from(payload, 'UTF8') AS text, deliveries FROM rmsg.get('basic', 5);
-- a queue created in a transaction that rolls back does not exist
BEGIN;
SELECT rmsg.create_queue('basic_gone');
SELECT rmsg.put('basic_gone', 'x'::text) IS NOT NULL AS put;
ROLLBACK;
SELECT rmsg.put('basic_gone', 'x'::text);
SELECT count(*) AS queue_rows FROM rmsg.queue WHERE name = 'basic_gone';

-- clean up: a queue that is a dead-letter queue goes after its users
SELECT rmsg.drop_queue('basic.all-args_1');
SELECT rmsg.drop_queue('basic_dlq');
SELECT rmsg.drop_queue('basic_none');
SELECT rmsg.drop_queue('basic');
SELECT count(*) AS queues FROM rmsg.queue;
SELECT count(*) AS messages FROM rmsg.message;
-- every lease went with its message (acked, or dropped with the queue)
SELECT count(*) AS leases FROM rmsg.lease;
SELECT live_payload_rows() AS payload_rows;
