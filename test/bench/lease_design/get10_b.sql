-- pgbench script: design B's get of up to 10 messages, leased for :lease
-- seconds (pgbench -D lease=N).  It locks up to 10 ready messages without
-- a live lease (SKIP LOCKED passes over those another get is locking),
-- then inserts their lease rows, or renews those whose lease ran out.
--
-- The lease is looked up once per candidate through the lease table's
-- primary key (the scalar subquery): a NOT EXISTS could be planned as an
-- anti-join that reads the whole lease table, which a get must not do.
--
-- The WHERE of the DO UPDATE is the guard.  The candidates' lease check
-- ran on the statement's snapshot, and locking the message row does not
-- change that row, so PostgreSQL does not evaluate the check again after
-- the lock.  A lease committed by another get in between is only seen by
-- ON CONFLICT, which reads the latest version of the lease row: without
-- the guard the message would be leased, and delivered, twice
-- (lease_design.sh runs this script with the guard line removed to count
-- how often).  With it the message is left out: the get returns fewer
-- than it could (a short get).
WITH c AS (
    SELECT m.msg_id, m.inline_data FROM b.message m
    WHERE m.queue_id = 1 AND m.priority = 0 AND m.visible_at <= now()
      AND coalesce((SELECT l.lease_until FROM b.lease l WHERE l.msg_id = m.msg_id), '-infinity') <= now()
    ORDER BY m.visible_at, m.msg_id
    LIMIT 10 FOR UPDATE OF m SKIP LOCKED
), l AS (
    INSERT INTO b.lease AS l (msg_id, deliveries, lease_until)
    SELECT msg_id, 1, now() + make_interval(secs => :lease) FROM c
    ON CONFLICT (msg_id) DO UPDATE SET deliveries = l.deliveries + 1, lease_until = excluded.lease_until
        WHERE l.lease_until <= now()  -- the guard
    RETURNING msg_id, deliveries
)
SELECT coalesce(array_agg(c.msg_id), '{}') AS ids, array_agg(c.inline_data) AS data FROM l JOIN c USING (msg_id)
\gset
