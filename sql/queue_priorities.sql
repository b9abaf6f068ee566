-- Priorities: among the ready messages of a queue, a higher priority is
-- handed out first; within one priority, the order they became ready.

-- the payloads one get hands out, in the order it hands them out
CREATE FUNCTION taken(q text, n int DEFAULT 10) RETURNS text LANGUAGE sql
  AS $$ SELECT coalesce(string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY n), '-')
          FROM rmsg.get(q, n, '1 minute') WITH ORDINALITY AS g(msg_id, payload, headers,
               deliveries, enqueued_at, data_token, receipt, n) $$;
CREATE FUNCTION msg(p text) RETURNS bigint LANGUAGE sql
  AS $$ SELECT msg_id FROM rmsg.message WHERE convert_from(inline_data, 'UTF8') = $1 $$;

SELECT rmsg.create_queue('pq');
SELECT rmsg.put('pq', 'low1'::text) > 0 AS put,
       rmsg.put('pq', 'mid1'::text, priority => 5) > 0 AS put,
       rmsg.put('pq', 'top1'::text, priority => 9) > 0 AS put,
       rmsg.put('pq', 'mid2'::text, priority => 5) > 0 AS put,
       rmsg.put('pq', 'low2'::text, priority => 0) > 0 AS put,
       rmsg.put('pq', 'top2'::text, priority => 9) > 0 AS put;
-- one at a time, then several: highest first, in order within a priority
SELECT taken('pq', 1) AS first, taken('pq', 1) AS second;
SELECT taken('pq') AS the_rest;
SELECT rmsg.purge_queue('pq') AS purged;

-- a delayed message of a high priority waits for its time; a leased one
-- is not handed out again; a nack keeps its priority
SELECT rmsg.put('pq', 'later'::text, delay => '1 hour', priority => 9) > 0 AS put,
       rmsg.put('pq', 'plain'::text) > 0 AS put,
       rmsg.put('pq', 'high'::text, priority => 7) > 0 AS put;
SELECT taken('pq', 1) AS first;
SELECT taken('pq', 1) AS second;
SELECT rmsg.nack(msg('high')) AS nacked;
SELECT rmsg.put('pq', 'plain2'::text) > 0 AS put;
SELECT taken('pq') AS after_nack;
-- a lease that ends gives the message back in its lane
SELECT rmsg.extend(msg('high'), '0 seconds') AS lease_ended;
SELECT taken('pq') AS after_lease_end;
SELECT rmsg.purge_queue('pq') AS purged;

-- every put form takes a priority
SELECT count(*) AS batch FROM rmsg.put_batch('pq', ARRAY['b1', 'b2']::bytea[], priority => 3);
SELECT count(*) AS many FROM rmsg.put_many(ARRAY['pq'], 'm1'::bytea, priority => 4);
SELECT (rmsg.put_with_token('pq', 'w1'::bytea, priority => 6)).msg_id > 0 AS put_with_token;
SELECT rmsg.put('pq', '{"j": 1}'::jsonb, priority => 2) > 0 AS put_jsonb;
SELECT rmsg.put('pq', 'x1'::bytea, priority => 1) > 0 AS put_bytea;
SELECT rmsg.forward(msg('x1'), 'pq', priority => 8) > 0 AS forwarded;
SELECT rmsg.put('pq', 'n1'::text, priority => NULL) > 0 AS null_is_default;
SELECT taken('pq') AS every_form;
SELECT priority, count(*) FROM rmsg.message GROUP BY priority ORDER BY priority;
SELECT rmsg.purge_queue('pq') AS purged;

-- out of range: a clear error, and nothing written
\set VERBOSITY terse
SELECT rmsg.put('pq', 'bad'::text, priority => 10);
SELECT rmsg.put('pq', 'bad'::text, priority => -1);
SELECT rmsg.put_batch('pq', ARRAY['bad']::bytea[], priority => 2147483647);
SELECT rmsg.put_many(ARRAY['pq'], 'bad'::bytea, priority => 99);
SELECT rmsg.forward(1, 'pq', priority => -5);
\set VERBOSITY default
DO $$
BEGIN
  PERFORM rmsg.put('pq', 'bad'::text, priority => 10);
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END $$;
SELECT count(*) AS nothing_written FROM rmsg.message;
-- the table refuses what the functions refuse
\set VERBOSITY terse
INSERT INTO rmsg.message (queue_id, visible_at, enqueued_at, payload_size, inline_data, priority)
SELECT queue_id, now(), now(), 1, 'x', 10 FROM rmsg.queue WHERE name = 'pq';
\set VERBOSITY default

-- the ready index must have the shape the gets walk: one of another shape
-- (a development script's, or one changed by hand) is refused
BEGIN;
DROP INDEX rmsg.message_ready_idx;
CREATE INDEX message_ready_idx ON rmsg.message (queue_id, visible_at, msg_id);
SELECT count(*) FROM rmsg.get('pq');
ROLLBACK;
SELECT count(*) AS works_again FROM rmsg.get('pq');

-- in a group, the group's order comes first: a later message of a higher
-- priority waits for the one before it
SELECT rmsg.put('pq', 'g1'::text, group_id => 'g') > 0 AS put,
       rmsg.put('pq', 'g2'::text, group_id => 'g', priority => 9) > 0 AS put,
       rmsg.put('pq', 'o1'::text, priority => 1) > 0 AS put;
SELECT taken('pq') AS group_head_and_other;
SELECT rmsg.ack(msg('g1')) AS acked, rmsg.ack(msg('o1')) AS acked;
SELECT taken('pq') AS next_in_group;
SELECT rmsg.purge_queue('pq') AS purged;

-- dead letters and redriven messages come back as plain messages
SELECT rmsg.create_queue('pq_dlq');
SELECT rmsg.create_queue('pq2', max_deliveries => 1, dead_letter_queue => 'pq_dlq');
SELECT rmsg.put('pq2', 'd1'::text, priority => 9) > 0 AS put;
SELECT taken('pq2') AS delivered;
SELECT rmsg.extend(msg('d1'), '0 seconds') AS lease_ended;
SELECT taken('pq2') AS dead_lettered;
SELECT q.name, m.priority FROM rmsg.message m JOIN rmsg.queue q USING (queue_id);
SELECT rmsg.redrive('pq_dlq') AS redriven;
SELECT q.name, m.priority FROM rmsg.message m JOIN rmsg.queue q USING (queue_id);
SELECT rmsg.put('pq2', 'd2'::text, priority => 1) > 0 AS put;
SELECT taken('pq2') AS redriven_is_plain;
SELECT rmsg.drop_queue('pq2'), rmsg.drop_queue('pq_dlq'), rmsg.drop_queue('pq');
DROP FUNCTION taken(text, int);
DROP FUNCTION msg(text);
