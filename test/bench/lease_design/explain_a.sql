-- psql script: the plan of one design A get of 10 (lease 3600 s), run and
-- rolled back, with the buffers each node touched.  lease_design.sh runs
-- it with 10,000 leased messages ahead of the ready ones.
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE a.message SET deliveries = deliveries + 1, lease_until = now() + make_interval(secs => 3600)
WHERE msg_id IN (SELECT msg_id FROM a.message
                 WHERE queue_id = 1 AND priority = 0 AND visible_at <= now()
                   AND (lease_until IS NULL OR lease_until <= now())
                 ORDER BY visible_at, msg_id
                 LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING msg_id, deliveries, inline_data;
ROLLBACK;
