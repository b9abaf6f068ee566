-- pgbench script: one message through design B, three transactions: the
-- put, a get of one (get10_b.sql's statement with LIMIT 1, returning a
-- row rather than arrays), and the ack of what it returned.  A get that
-- finds nothing, or whose one candidate the guard leaves out, leaves
-- :msg_id at 0: its ack deletes nothing and its put stays in the queue
-- (left_in_queue).
\set r random(0, 999)
\set msg_id 0
INSERT INTO b.message (queue_id, visible_at, enqueued_at, payload_size, inline_data)
SELECT 1, now(), now(), 1024, data FROM payloads WHERE i = :r
RETURNING msg_id AS put_id \gset
WITH c AS (
    SELECT m.msg_id, m.inline_data FROM b.message m
    WHERE m.queue_id = 1 AND m.priority = 0 AND m.visible_at <= now()
      AND coalesce((SELECT l.lease_until FROM b.lease l WHERE l.msg_id = m.msg_id), '-infinity') <= now()
    ORDER BY m.visible_at, m.msg_id
    LIMIT 1 FOR UPDATE OF m SKIP LOCKED
), l AS (
    INSERT INTO b.lease AS l (msg_id, deliveries, lease_until)
    SELECT msg_id, 1, now() + make_interval(secs => :lease) FROM c
    ON CONFLICT (msg_id) DO UPDATE SET deliveries = l.deliveries + 1, lease_until = excluded.lease_until
        WHERE l.lease_until <= now()
    RETURNING msg_id, deliveries
)
SELECT c.msg_id, l.deliveries, c.inline_data FROM l JOIN c USING (msg_id)
\aset
WITH dm AS (DELETE FROM b.message WHERE msg_id = :msg_id RETURNING msg_id)
DELETE FROM b.lease l USING dm WHERE l.msg_id = dm.msg_id;
