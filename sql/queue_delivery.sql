--
-- queue_delivery: visibility timeouts, nack, extend, delayed puts,
-- max_deliveries with and without a dead-letter queue.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql
SET rmsg.inline_payload_max = 256;   -- 300-byte payloads below get a payload row

SELECT rmsg.create_queue('dlv');

-- A visibility timeout hides a delivered message; when it runs out the
-- message is delivered again, one delivery more.
SELECT rmsg.put('dlv', 'visible'::text) AS v \gset
SELECT msg_id - :v AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv', 1, '1 second');
SELECT count(*) AS second_get FROM rmsg.get('dlv', 1, '1 second');
SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'dlv';
SELECT pg_sleep(1.2);
SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'dlv';
SELECT msg_id - :v AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv', 1, '1 second');
SELECT rmsg.ack(:v) AS acked;

-- nack: ready again at once; nack with a delay; only a message in flight
-- can be nacked
SELECT rmsg.put('dlv', 'nacked'::text) AS n \gset
SELECT msg_id - :n AS rel, deliveries FROM rmsg.get('dlv');
SELECT rmsg.nack(:n) AS nacked;
SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'dlv';
SELECT rmsg.nack(:n) AS nack_when_ready;                   -- not in flight
SELECT msg_id - :n AS rel, deliveries FROM rmsg.get('dlv');
SELECT rmsg.nack(:n, '1 second') AS nacked_with_delay;
SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'dlv';
SELECT count(*) AS before_delay FROM rmsg.get('dlv');
SELECT rmsg.nack(:n) AS nack_when_delayed;                 -- not in flight either
SELECT pg_sleep(1.1);
SELECT msg_id - :n AS rel, deliveries FROM rmsg.get('dlv', 1, '0.2 seconds');
SELECT pg_sleep(0.3);
SELECT rmsg.nack(:n) AS nack_after_lease_ran_out;          -- lease over: not in flight
SELECT rmsg.nack(-1) AS nack_unknown;
SELECT rmsg.ack(:n) AS acked;
SELECT rmsg.nack(:n) AS nack_acked;
-- a message nacked with a delay goes behind the ones that were ready before
-- it came back (a nack without one may keep its place: not shown)
SELECT rmsg.put('dlv', 'first'::text) AS f \gset
SELECT rmsg.put('dlv', 'second'::text) - :f AS rel;
SELECT msg_id - :f AS rel, convert_from(payload, 'UTF8') AS text FROM rmsg.get('dlv');
SELECT rmsg.nack(:f, '0.2 seconds') AS nacked;
SELECT pg_sleep(0.3);
SELECT msg_id - :f AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv', 1);
SELECT msg_id - :f AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv', 1);
SELECT rmsg.ack(ARRAY[:f, :f + 1]) AS acked;

-- extend keeps a message invisible past its first timeout
SELECT rmsg.put('dlv', 'extended'::text) AS x \gset
SELECT msg_id - :x AS rel, deliveries FROM rmsg.get('dlv', 1, '1 second');
SELECT rmsg.extend(:x, '30 seconds') AS extended;
SELECT pg_sleep(1.2);
SELECT count(*) AS after_first_timeout FROM rmsg.get('dlv');
SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'dlv';
SELECT rmsg.extend(-1, '1 second') AS extend_unknown;
SELECT rmsg.nack(:x) AS nacked;                           -- still in flight
SELECT rmsg.extend(:x, '1 second') AS extend_ready;       -- ready: not in flight
SELECT msg_id - :x AS rel, deliveries FROM rmsg.get('dlv', 1, '0.2 seconds');
SELECT pg_sleep(0.3);
SELECT rmsg.extend(:x, '1 second') AS extend_after_lease_ran_out;
SELECT rmsg.ack(:x) AS acked;
SELECT rmsg.extend(:x, '1 second') AS extend_acked;

-- a delayed put is not delivered before its delay, and is after it
SELECT rmsg.put('dlv', 'delayed'::text, delay => '1 second') AS d \gset
SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'dlv';
SELECT count(*) AS before_delay FROM rmsg.get('dlv');
SELECT rmsg.nack(:d) AS nack_delayed;                      -- never delivered: not in flight
SELECT rmsg.extend(:d, '1 hour') AS extend_delayed;
SELECT pg_sleep(1.1);
SELECT msg_id - :d AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv');
SELECT rmsg.ack(:d) AS acked;
-- a zero delay is no delay
SELECT rmsg.put('dlv', 'no delay'::text, delay => '0 seconds') AS z \gset
SELECT msg_id - :z AS rel, deliveries FROM rmsg.get('dlv');
SELECT rmsg.ack(:z) AS acked;

-- max_deliveries with a dead-letter queue: the message that used them up
-- moves there with its deliveries back to 0; the next ready message of the
-- queue is delivered in its place
SELECT rmsg.create_queue('dlv_dead');
SELECT rmsg.create_queue('dlv_src', 2, 'dlv_dead');
SELECT rmsg.put('dlv_src', 'poison'::text, '{"try": 1}') AS p \gset
SELECT msg_id - :p AS rel, deliveries FROM rmsg.get('dlv_src');
SELECT rmsg.nack(:p) AS nacked;
SELECT msg_id - :p AS rel, deliveries FROM rmsg.get('dlv_src');
SELECT rmsg.nack(:p) AS nacked;
SELECT count(*) AS got FROM rmsg.get('dlv_src');
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues
 WHERE queue IN ('dlv_src', 'dlv_dead') ORDER BY queue;
SELECT msg_id - :p AS rel, q.name AS queue, coalesce(l.deliveries, 0) AS deliveries, headers
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) LEFT JOIN rmsg.lease l USING (msg_id);
SELECT msg_id - :p AS rel, convert_from(payload, 'UTF8') AS text, headers, deliveries
  FROM rmsg.get('dlv_dead');
SELECT rmsg.ack(:p) AS acked;

SELECT rmsg.put('dlv_src', 'poison 2'::text) AS p2 \gset
SELECT rmsg.put('dlv_src', 'healthy'::text) - :p2 AS rel;
SELECT msg_id - :p2 AS rel, deliveries FROM rmsg.get('dlv_src', 1);
SELECT rmsg.nack(:p2) AS nacked;
SELECT msg_id - :p2 AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv_src', 2, '0.5 seconds') ORDER BY rel;
SELECT pg_sleep(0.6);
-- both leases ran out: 'poison 2' has used up its deliveries, 'healthy' has not
SELECT msg_id - :p2 AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv_src', 2);
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues
 WHERE queue IN ('dlv_src', 'dlv_dead') ORDER BY queue;
SELECT msg_id - :p2 AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('dlv_dead');
SELECT rmsg.ack(ARRAY[:p2, :p2 + 1]) AS acked;
-- a rolled-back get does not dead-letter either
SELECT rmsg.put('dlv_src', 'rolled back'::text) AS r \gset
SELECT count(*) AS got FROM rmsg.get('dlv_src', 1, '0 seconds');
SELECT count(*) AS got FROM rmsg.get('dlv_src', 1, '0 seconds');
BEGIN;
SELECT count(*) AS got FROM rmsg.get('dlv_src');
SELECT count(*) AS dead_lettered FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'dlv_dead';
ROLLBACK;
SELECT q.name AS queue, coalesce(l.deliveries, 0) AS deliveries
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) LEFT JOIN rmsg.lease l USING (msg_id)
 WHERE msg_id = :r;
SELECT count(*) AS got FROM rmsg.get('dlv_src');
SELECT q.name AS queue, coalesce(l.deliveries, 0) AS deliveries
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) LEFT JOIN rmsg.lease l USING (msg_id)
 WHERE msg_id = :r;
SELECT rmsg.ack(:r) AS acked;

-- max_deliveries without a dead-letter queue: the message is kept as dead,
-- payload row and all, counted in rmsg.queues, and removed by rmsg.ack
SELECT rmsg.create_queue('dlv_keep', 1);
SELECT rmsg.put('dlv_keep', convert_to(repeat('k', 300), 'UTF8'), '{"big": true}') AS k \gset
SELECT rmsg.put('dlv_keep', 'small dead'::text) - :k AS rel;
SELECT msg_id - :k AS rel, deliveries FROM rmsg.get('dlv_keep', 2, '0.2 seconds');
SELECT pg_sleep(0.3);
SELECT count(*) AS got FROM rmsg.get('dlv_keep', 2);
SELECT queue, ready, in_flight, delayed, dead, payload_bytes FROM rmsg.queues
 WHERE queue = 'dlv_keep';
SELECT count(*) AS live FROM rmsg.message WHERE msg_id IN (:k, :k + 1);
SELECT msg_id - :k AS rel, q.name AS queue, deliveries, payload_size,
       payload_id IS NOT NULL AS has_payload_row, headers, died_at >= enqueued_at AS died_after
  FROM rmsg.dead_message d JOIN rmsg.queue q USING (queue_id) ORDER BY msg_id;
SELECT live_payload_rows() AS payload_rows;
SELECT rmsg.nack(:k) AS nack_dead, rmsg.extend(:k, '1 second') AS extend_dead;
SELECT rmsg.ack(:k) AS acked;
SELECT rmsg.ack(:k) AS acked_again;
SELECT live_payload_rows() AS payload_rows;
SELECT queue, dead FROM rmsg.queues WHERE queue = 'dlv_keep';
SELECT rmsg.ack(ARRAY[:k, :k + 1]) AS acked;
SELECT queue, dead FROM rmsg.queues WHERE queue = 'dlv_keep';
-- ack rolled back keeps the dead message
SELECT rmsg.put('dlv_keep', convert_to(repeat('q', 300), 'UTF8')) AS q \gset
SELECT count(*) AS got FROM rmsg.get('dlv_keep', 1, '0 seconds');
SELECT count(*) AS got FROM rmsg.get('dlv_keep');
SELECT queue, dead FROM rmsg.queues WHERE queue = 'dlv_keep';
BEGIN;
SELECT rmsg.ack(ARRAY[:q]) AS acked;
ROLLBACK;
SELECT queue, dead, live_payload_rows() AS payload_rows
  FROM rmsg.queues WHERE queue = 'dlv_keep';
-- dropping the queue removes its dead messages and their payload rows
SELECT rmsg.drop_queue('dlv_keep');
SELECT count(*) AS dead_messages, live_payload_rows() AS payload_rows
  FROM rmsg.dead_message;

-- msg_ids are unique across queues
SELECT count(*) AS puts, count(DISTINCT id) AS distinct_ids
  FROM (SELECT rmsg.put(q, 'u'::text) AS id
          FROM (VALUES ('dlv'), ('dlv_src'), ('dlv_dead'), ('dlv'), ('dlv_src'), ('dlv_dead')) v (q)
        UNION ALL
        SELECT id FROM rmsg.put_batch('dlv', ARRAY['\x01', '\x02']::bytea[]) b (id)
        UNION ALL
        SELECT id FROM rmsg.put_batch('dlv_dead', ARRAY['\x01', '\x02']::bytea[]) b (id)) p;
SELECT count(*) AS messages, count(DISTINCT msg_id) AS distinct_ids FROM rmsg.message;

-- clean up
SELECT rmsg.drop_queue('dlv_src');
SELECT rmsg.drop_queue('dlv_dead');
SELECT rmsg.drop_queue('dlv');
SELECT count(*) AS queues, (SELECT count(*) FROM rmsg.message) AS messages,
       (SELECT count(*) FROM rmsg.dead_message) AS dead_messages,
       (SELECT count(*) FROM rmsg.lease) AS leases,
       live_payload_rows() AS payload_rows
  FROM rmsg.queue;
