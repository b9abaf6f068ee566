-- Operating a queue: pause and resume, purge, redrive.

CREATE FUNCTION got(q text, n int DEFAULT 10) RETURNS bigint LANGUAGE sql
  AS $$ SELECT count(*) FROM rmsg.get(q, n, '1 minute') $$;

-- A paused queue takes puts and hands nothing out; leases given before stay
-- theirs.  The flag shows in rmsg.queues.
SELECT rmsg.create_queue('op');
SELECT rmsg.put('op', 'a'::text) AS m1 \gset
SELECT rmsg.put('op', 'b'::text) IS NOT NULL AS put;
SELECT receipt AS r1 FROM rmsg.get('op', 1, '1 minute') \gset
SELECT rmsg.pause_queue('op');
SELECT rmsg.put('op', 'c'::text) IS NOT NULL AS put_while_paused;
SELECT got('op') AS got_while_paused;
SELECT paused, ready, in_flight FROM rmsg.queues WHERE queue = 'op';
SELECT rmsg.ack(:m1, :r1) AS ack_while_paused;
SELECT rmsg.pause_queue('op');   -- again: still paused
SELECT rmsg.resume_queue('op');
SELECT paused FROM rmsg.queues WHERE queue = 'op';
SELECT got('op') AS got_after_resume;

-- A pause that rolls back never happened; one in the same transaction is
-- seen by the transaction's own gets.
SELECT rmsg.put('op', 'd'::text) IS NOT NULL AS put;
BEGIN;
SELECT rmsg.pause_queue('op');
SELECT got('op') AS got_in_pausing_xact;
ROLLBACK;
SELECT paused FROM rmsg.queues WHERE queue = 'op';
SELECT got('op') AS got_after_rollback;

-- Purge: every message of the queue, in every state, and its dead ones.
SELECT rmsg.create_queue('pq', max_deliveries => 1);
SELECT count(*) AS put FROM rmsg.put_batch('pq', ARRAY['r1', 'r2', 'r3']::bytea[]);
SELECT rmsg.put('pq', 'later'::text, delay => '1 hour') IS NOT NULL AS put_delayed;
SELECT msg_id AS inflight, receipt AS inflight_r FROM rmsg.get('pq', 1, '1 minute') \gset
SELECT msg_id AS dying FROM rmsg.get('pq', 1, '1 minute') \gset
SELECT rmsg.nack(:dying);
SELECT got('pq', 1) AS got;      -- the nacked one dies on the way, r3 is leased
SELECT ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'pq';
SELECT rmsg.purge_queue('pq') AS purged;
SELECT ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'pq';
SELECT rmsg.ack(:inflight, :inflight_r) AS ack_after_purge;
SELECT rmsg.purge_queue('pq') AS purged_again;

-- Redrive: dead letters go back to the queue they died in, ready, with no
-- deliveries; messages put to the dead-letter queue directly stay.
SELECT rmsg.create_queue('rd_dlq');
SELECT rmsg.create_queue('rd_work', max_deliveries => 1, dead_letter_queue => 'rd_dlq');
SELECT rmsg.create_queue('rd_other');
SELECT count(*) AS put FROM rmsg.put_batch('rd_work', ARRAY['w1', 'w2', 'w3']::bytea[]);
SELECT rmsg.put('rd_dlq', 'put straight'::text) IS NOT NULL AS put;
SELECT rmsg.nack(msg_id) FROM rmsg.get('rd_work', 3, '1 minute');
SELECT got('rd_work') AS got;    -- all three die into rd_dlq
SELECT queue, ready, dead FROM rmsg.queues WHERE queue LIKE 'rd%' ORDER BY queue;
SELECT rmsg.redrive('rd_dlq', max => 1) AS redriven;
SELECT convert_from(payload, 'UTF8') AS payload, deliveries FROM rmsg.get('rd_work', 10, '1 minute');
-- delivered in the dead-letter queue too, then redriven: they arrive with
-- no deliveries all the same (the first get below is their first)
SELECT count(rmsg.nack(msg_id)) AS delivered_in_dlq FROM rmsg.get('rd_dlq', 10, '1 minute');
SELECT rmsg.redrive('rd_dlq', 'rd_other') AS redriven_elsewhere;
SELECT convert_from(payload, 'UTF8') AS payload, deliveries FROM rmsg.get('rd_other', 10, '1 minute') ORDER BY 1;
SELECT queue, ready, in_flight FROM rmsg.queues WHERE queue LIKE 'rd%' ORDER BY queue;
SELECT rmsg.redrive('rd_dlq') AS nothing_left;

-- A queue without a dead-letter queue keeps its dead in rmsg.dead_message;
-- a redrive of the queue brings them back to it.
SELECT rmsg.create_queue('rd_solo', max_deliveries => 1);
SELECT rmsg.put('rd_solo', 's1'::text) IS NOT NULL AS put;
SELECT rmsg.nack(msg_id) FROM rmsg.get('rd_solo', 1, '1 minute');
SELECT got('rd_solo') AS got;
SELECT ready, dead FROM rmsg.queues WHERE queue = 'rd_solo';
SELECT rmsg.redrive('rd_solo') AS redriven;
SELECT ready, dead FROM rmsg.queues WHERE queue = 'rd_solo';
SELECT convert_from(payload, 'UTF8') AS payload, deliveries FROM rmsg.get('rd_solo', 10, '1 minute');

-- Bad input changes nothing.
SELECT rmsg.pause_queue('nope');
SELECT rmsg.pause_queue(NULL);
SELECT rmsg.purge_queue('');
SELECT rmsg.redrive('rd_dlq', max => -1);
SELECT rmsg.redrive('rd_dlq', 'nope');
SELECT rmsg.redrive(NULL);

-- Rights: pausing, resuming and purging take manage; a redrive takes manage
-- on the queue redriven and put where its messages go.
CREATE ROLE rmsg_op_user;
GRANT USAGE ON SCHEMA rmsg TO rmsg_op_user;
SELECT rmsg.put('rd_work', 'w4'::text) IS NOT NULL AS put;
SELECT rmsg.nack(msg_id) FROM rmsg.get('rd_work', 1, '1 minute');
SELECT got('rd_work') AS got;
SELECT rmsg.grant_queue('op', 'rmsg_op_user', 'put, get');
SELECT rmsg.grant_queue('rd_dlq', 'rmsg_op_user', 'manage');
SET ROLE rmsg_op_user;
SELECT rmsg.pause_queue('op');
SELECT rmsg.resume_queue('op');
SELECT rmsg.purge_queue('op');
SELECT rmsg.redrive('rd_dlq');
RESET ROLE;
SELECT queue, ready FROM rmsg.queues WHERE queue IN ('rd_dlq', 'rd_work') ORDER BY queue;
SELECT rmsg.grant_queue('rd_work', 'rmsg_op_user', 'put');
SET ROLE rmsg_op_user;
SELECT rmsg.redrive('rd_dlq') AS redriven_by_user;
RESET ROLE;
SELECT queue, ready FROM rmsg.queues WHERE queue IN ('rd_dlq', 'rd_work') ORDER BY queue;

-- A read-only transaction changes nothing.
BEGIN READ ONLY;
SELECT rmsg.pause_queue('op');
ROLLBACK;

SELECT rmsg.drop_queue(q) FROM unnest(ARRAY['op', 'pq', 'rd_work', 'rd_dlq', 'rd_other', 'rd_solo']) q;
REVOKE USAGE ON SCHEMA rmsg FROM rmsg_op_user;
DROP OWNED BY rmsg_op_user;
DROP ROLE rmsg_op_user;
-- every lease went with its message (acked, dead-lettered, redriven, purged, dropped)
SELECT count(*) AS leases FROM rmsg.lease;
DROP FUNCTION got(text, int);
