-- pgbench script: 100 messages in one INSERT, as a put_batch would write
-- them.  lease_design.sh writes one copy per table, TARGET_TABLE replaced
-- by a.message, b.message, p.plain_a or p.plain_b: a prepared statement
-- cannot take its table name as a parameter.
\set r random(0, 900)
INSERT INTO TARGET_TABLE (queue_id, visible_at, enqueued_at, payload_size, inline_data)
SELECT 1, now(), now(), 1024, data FROM payloads WHERE i >= :r AND i < :r + 100
RETURNING msg_id;
