--
-- queue_view: rmsg.queues for queues in a known state.
--
\pset null '(null)'

-- the first columns are fixed by the design
SELECT ordinal_position, column_name, data_type
  FROM information_schema.columns
 WHERE table_schema = 'rmsg' AND table_name = 'queues' AND ordinal_position <= 6
 ORDER BY ordinal_position;

SELECT rmsg.create_queue('vw_dlq', 4, NULL, 'none');
SELECT rmsg.create_queue('vw', 1, 'vw_dlq', 'content');
SELECT rmsg.create_queue('vw_keep', 1);
SELECT rmsg.create_queue('vw_empty');

-- vw_dlq: a message that used up its one delivery in vw, in flight there
SELECT rmsg.put('vw', 'to dlq'::text) AS t0 \gset
SELECT msg_id - :t0 AS rel, deliveries FROM rmsg.get('vw', 1, '0 seconds');
-- vw: one in flight (7 bytes); the get first moves 'to dlq' to vw_dlq
SELECT rmsg.put('vw', 'flight!'::text) - :t0 AS rel;
SELECT msg_id - :t0 AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('vw', 1, '1 hour');
SELECT msg_id - :t0 AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('vw_dlq', 1, '1 hour');
-- vw: one ready (300 bytes, nacked), two delayed (3 bytes nacked with a
-- delay, 5 bytes put with a delay)
SELECT rmsg.put('vw', '\x010203'::bytea) - :t0 AS rel;
SELECT rmsg.put('vw', convert_to(repeat('r', 300), 'UTF8')) - :t0 AS rel;
SELECT msg_id - :t0 AS rel FROM rmsg.get('vw', 2, '1 hour');
SELECT rmsg.nack(:t0 + 2, '1 hour') AS nacked_to_delayed;
SELECT rmsg.nack(:t0 + 3) AS nacked_to_ready;
SELECT rmsg.put('vw', 'later'::text, delay => '1 hour') - :t0 AS rel;
-- vw_keep: one dead (10 bytes, not counted in payload_bytes), one ready (2 bytes)
SELECT rmsg.put('vw_keep', 'dead dead!'::text) - :t0 AS rel;
SELECT count(*) AS got FROM rmsg.get('vw_keep', 1, '0 seconds');
SELECT count(*) AS got FROM rmsg.get('vw_keep', 1);
SELECT rmsg.put('vw_keep', 'ok'::text) - :t0 AS rel;

SELECT queue, ready, in_flight, delayed, dead,
       oldest_ready_age IS NOT NULL AS has_ready_age, oldest_ready_age >= '0' AS age_not_negative,
       max_deliveries, dead_letter_queue, dedup, payload_bytes, created_at <= now() AS created
  FROM rmsg.queues ORDER BY queue;

-- oldest_ready_age counts from the put, not from when the message became ready
SELECT oldest_ready_age = (SELECT now() - enqueued_at FROM rmsg.message WHERE msg_id = :t0 + 3)
       AS from_enqueued_at
  FROM rmsg.queues WHERE queue = 'vw';

-- after acks and drops the figures follow
SELECT rmsg.ack(ARRAY[:t0 + 1, :t0 + 2, :t0 + 3, :t0 + 4]) AS acked;
SELECT queue, ready, in_flight, delayed, dead, oldest_ready_age IS NOT NULL AS has_ready_age,
       payload_bytes
  FROM rmsg.queues ORDER BY queue;
SELECT rmsg.ack(ARRAY[:t0 + 5, :t0 + 6]) AS acked;
SELECT rmsg.drop_queue('vw');
SELECT queue, ready, in_flight, delayed, dead, oldest_ready_age, dead_letter_queue, payload_bytes
  FROM rmsg.queues ORDER BY queue;

-- clean up
SELECT rmsg.drop_queue('vw_dlq');
SELECT rmsg.drop_queue('vw_keep');
SELECT rmsg.drop_queue('vw_empty');
SELECT count(*) AS queues FROM rmsg.queues;
-- dropped queues leave their payload rows to the collection
SELECT rmsg.collect_payloads() > 0 AS collected;
SELECT count(*) AS queues, (SELECT count(*) FROM rmsg.message) AS messages,
       (SELECT count(*) FROM rmsg.dead_message) AS dead_messages,
       (SELECT count(*) FROM rmsg.payload) AS payload_rows
  FROM rmsg.queue;

-- The per-queue counters have room for 1024 queues and no more: queues
-- beyond are counted in the totals only, and the table never takes the
-- spare shared memory that PostgreSQL's lock table grows into.
DO $$
BEGIN
  FOR i IN 1..1100 LOOP
    PERFORM rmsg.create_queue('vw_many_' || i);
    PERFORM rmsg.put('vw_many_' || i, 'x'::text);
  END LOOP;
END $$;
SELECT count(*) <= 1024 AS bounded, count(*) >= 1000 AS filled FROM rmsg.stat_queues();
DO $$
BEGIN
  FOR i IN 1..1100 LOOP
    PERFORM rmsg.drop_queue('vw_many_' || i);
  END LOOP;
END $$;
