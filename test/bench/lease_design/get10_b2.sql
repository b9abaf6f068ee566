-- pgbench script: design B2's get of up to 10 messages, leased for :lease
-- seconds (pgbench -D lease=N).  B's get (get10_b.sql), plus a second look
-- at each candidate's lease once its row is locked, by b.lease_free()
-- (schema.sql), which sees leases committed after the statement began.  A
-- candidate leased meanwhile is passed over and the scan goes on to the
-- next one, so the get does not come back short: what the extension's C
-- code would do.
--
-- OFFSET 0 keeps the recheck out of the subquery, above its row lock: the
-- planner already keeps volatile filters out, the OFFSET says so in the
-- query itself.  The LIMIT sits above the recheck, so that a candidate it
-- rejects does not use up one of the 10.
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
    SELECT msg_id, 1, now() + make_interval(secs => :lease) FROM c
    ON CONFLICT (msg_id) DO UPDATE SET deliveries = l.deliveries + 1, lease_until = excluded.lease_until
        WHERE l.lease_until <= now()
    RETURNING msg_id, deliveries
)
SELECT coalesce(array_agg(c.msg_id), '{}') AS ids, array_agg(c.inline_data) AS data FROM l JOIN c USING (msg_id)
\gset
