-- psql script: the plan of one design B2 get of 10 (lease 3600 s), run and
-- rolled back, with the buffers each node touched.  lease_design.sh runs
-- it with 10,000 leased messages ahead of the ready ones.
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
WITH c AS (
  SELECT * FROM (
    SELECT m.msg_id, m.inline_data FROM b.message m
    WHERE m.queue_id = 1 AND m.priority = 0 AND m.visible_at <= now()
      AND coalesce((SELECT l.lease_until FROM b.lease l WHERE l.msg_id = m.msg_id), '-infinity') <= now()
    ORDER BY m.visible_at, m.msg_id
    OFFSET 0
    FOR UPDATE OF m SKIP LOCKED) s
  WHERE b.lease_free(s.msg_id)
  LIMIT 10
), l AS (
    INSERT INTO b.lease AS l (msg_id, deliveries, lease_until)
    SELECT msg_id, 1, now() + make_interval(secs => 3600) FROM c
    ON CONFLICT (msg_id) DO UPDATE SET deliveries = l.deliveries + 1, lease_until = excluded.lease_until
        WHERE l.lease_until <= now()
    RETURNING msg_id, deliveries
)
SELECT c.msg_id, l.deliveries, c.inline_data FROM l JOIN c USING (msg_id);
ROLLBACK;
