-- pgbench script: design A's get of up to 10 messages, leased for :lease
-- seconds (pgbench -D lease=N).  The lease is an update of the message
-- row itself.  SKIP LOCKED passes over rows another get is leasing right
-- now; the UPDATE then rechecks the WHERE on the latest row version, so a
-- message leased by a get that committed meanwhile is not taken twice.
-- The ids come back as one array in :ids (for the ack the drain appends),
-- and the payloads are sent to the client as a consumer would read them.
WITH g AS (
UPDATE a.message SET deliveries = deliveries + 1, lease_until = now() + make_interval(secs => :lease)
WHERE msg_id IN (SELECT msg_id FROM a.message
                 WHERE queue_id = 1 AND priority = 0 AND visible_at <= now()
                   AND (lease_until IS NULL OR lease_until <= now())
                 ORDER BY visible_at, msg_id
                 LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING msg_id, deliveries, inline_data
)
SELECT coalesce(array_agg(msg_id), '{}') AS ids, array_agg(inline_data) AS data FROM g
\gset
