-- Message groups: a group's messages are handed out one at a time, in
-- order; the next only once the one before is acked or dead-lettered.
-- Other groups and ungrouped messages are not held up.

CREATE FUNCTION taken(q text, n int DEFAULT 10) RETURNS text LANGUAGE sql
  AS $$ SELECT coalesce(string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY msg_id), '-')
          FROM rmsg.get(q, n, '1 minute') $$;
CREATE FUNCTION ack_payload(q text, p text) RETURNS boolean LANGUAGE sql
  AS $$ SELECT rmsg.ack(m.msg_id) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
         WHERE q.name = $1 AND convert_from(m.inline_data, 'UTF8') = $2 $$;

SELECT rmsg.create_queue('gq');
SELECT rmsg.put('gq', 'a1'::text, group_id => 'a') > 0 AS put,
       rmsg.put('gq', 'a2'::text, group_id => 'a') > 0 AS put,
       rmsg.put('gq', 'b1'::text, group_id => 'b') > 0 AS put,
       rmsg.put('gq', 'n1'::text) > 0 AS put;
SELECT count(*) AS batch FROM rmsg.put_batch('gq', ARRAY['a3', 'a4']::bytea[], group_id => 'a');
SELECT count(*) AS batch FROM rmsg.put_batch('gq', ARRAY['c1', 'c2']::bytea[], group_id => 'c');
-- one head per group is ready; the rest wait for their turn
SELECT ready, delayed, group_waiting, groups_in_flight FROM rmsg.queues WHERE queue = 'gq';
SELECT taken('gq') AS first_get;
SELECT ready, in_flight, group_waiting, groups_in_flight FROM rmsg.queues WHERE queue = 'gq';
SELECT taken('gq') AS nothing_more;

-- an ack ends the group's turn: its next message is ready
SELECT ack_payload('gq', 'a1'), ack_payload('gq', 'c1');
SELECT taken('gq') AS after_acks;
-- a nack keeps the turn with the same message
SELECT rmsg.nack(m.msg_id) FROM rmsg.message m WHERE convert_from(m.inline_data, 'UTF8') = 'a2';
SELECT taken('gq') AS after_nack;
SELECT ack_payload('gq', 'a2');
SELECT taken('gq') AS next;

-- a message of the group acked by msg_id while it waited ends no turn:
-- the head stays the only one out
SELECT ack_payload('gq', 'a4') AS acked_waiting;
SELECT taken('gq') AS still_nothing;
SELECT ack_payload('gq', 'a3'), ack_payload('gq', 'b1'), ack_payload('gq', 'c2'), ack_payload('gq', 'n1');
SELECT ready, in_flight, delayed, group_waiting, groups_in_flight FROM rmsg.queues WHERE queue = 'gq';

-- a put to a group that waits spends its delay waiting; one to an empty
-- group keeps it
SELECT rmsg.put('gq', 'd1'::text, delay => '1 hour', group_id => 'd') > 0 AS put,
       rmsg.put('gq', 'd2'::text, group_id => 'd') > 0 AS put;
SELECT ready, delayed, group_waiting FROM rmsg.queues WHERE queue = 'gq';
SELECT rmsg.purge_queue('gq') AS purged;

-- dead-lettering ends the turn too; in the dead-letter queue the message
-- belongs to no group
SELECT rmsg.create_queue('gq_dlq');
SELECT rmsg.create_queue('gq_once', max_deliveries => 1, dead_letter_queue => 'gq_dlq');
SELECT rmsg.put('gq_once', 'e1'::text, group_id => 'e') > 0 AS put,
       rmsg.put('gq_once', 'e2'::text, group_id => 'e') > 0 AS put;
SELECT rmsg.nack(msg_id) FROM rmsg.get('gq_once', 10, '1 minute');
SELECT taken('gq_once') AS after_dead_letter;
SELECT count(*) FILTER (WHERE group_id IS NULL) AS ungrouped_in_dlq
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'gq_dlq';
-- and redriven it comes back without a group
SELECT rmsg.redrive('gq_dlq') AS redriven;
SELECT taken('gq_once') AS redriven_beside_the_head;

-- a repeat of an idempotent put to a group stores nothing
SELECT rmsg.put('gq', 'f1'::text, dedup_id => 'f-1', group_id => 'f')
     = rmsg.put('gq', 'f1'::text, dedup_id => 'f-1', group_id => 'f') AS same_msg;
SELECT ready, group_waiting FROM rmsg.queues WHERE queue = 'gq';

-- put_many and forward put into a group of each queue they put to
SELECT rmsg.create_queue('gq2');
SELECT count(*) AS put FROM rmsg.put_many(ARRAY['gq', 'gq2'], 'm1'::bytea, group_id => 'h');
SELECT count(*) AS put FROM rmsg.put_many(ARRAY['gq', 'gq2'], 'm2'::bytea, group_id => 'h');
SELECT rmsg.forward(msg_id, 'gq2', group_id => 'h') > 0 AS forwarded
  FROM rmsg.message WHERE convert_from(inline_data, 'UTF8') = 'f1';
SELECT queue, ready, group_waiting FROM rmsg.queues WHERE queue IN ('gq', 'gq2') ORDER BY queue;
SELECT taken('gq2') AS one_of_group_h;
SELECT rmsg.drop_queue('gq2');

-- bad input changes nothing
SELECT rmsg.put('gq', 'x'::text, group_id => '');
SELECT rmsg.put('gq', 'x'::text, group_id => repeat('g', 129));
SELECT rmsg.put_batch('gq', ARRAY['x']::bytea[], group_id => '');
SELECT rmsg.put_many(ARRAY['gq'], 'x'::bytea, group_id => '');
SELECT rmsg.forward(1, 'gq', group_id => repeat('g', 129));
SELECT ready, group_waiting FROM rmsg.queues WHERE queue = 'gq';

SELECT rmsg.drop_queue(q) FROM unnest(ARRAY['gq', 'gq_once', 'gq_dlq']) q;
DROP FUNCTION taken(text, int);
DROP FUNCTION ack_payload(text, text);
