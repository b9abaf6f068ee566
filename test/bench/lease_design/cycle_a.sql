-- pgbench script: one message through design A, three transactions: the
-- put, a get of one (leased for :lease seconds, pgbench -D lease=N), and
-- the ack of what the get returned.  A get that finds nothing (the other
-- clients hold every ready message) leaves :msg_id at 0, so its ack
-- deletes nothing and its put stays in the queue: lease_design.sh counts
-- those as left_in_queue.
\set r random(0, 999)
\set msg_id 0
INSERT INTO a.message (queue_id, visible_at, enqueued_at, payload_size, inline_data)
SELECT 1, now(), now(), 1024, data FROM payloads WHERE i = :r
RETURNING msg_id AS put_id \gset
UPDATE a.message SET deliveries = deliveries + 1, lease_until = now() + make_interval(secs => :lease)
WHERE msg_id IN (SELECT msg_id FROM a.message
                 WHERE queue_id = 1 AND priority = 0 AND visible_at <= now()
                   AND (lease_until IS NULL OR lease_until <= now())
                 ORDER BY visible_at, msg_id
                 LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING msg_id, deliveries, inline_data
\aset
DELETE FROM a.message WHERE msg_id = :msg_id;
