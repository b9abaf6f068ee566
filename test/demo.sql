-- recoverable_msg walk-through, run by test/demo.sh against a scratch cluster
-- (psql -e: every statement is printed before its result; \echo lines are
-- the narration). Sections are independent enough to be extended one by one.

\set ON_ERROR_STOP 1
\set QUIET 1
\pset null '(null)'
\unset QUIET
-- The queue overview, shown after each step.
\set show_queues 'SELECT queue, ready, in_flight, delayed, dead, oldest_ready_age FROM rmsg.queues ORDER BY queue;'

\echo
\echo '=== Install the extension (the library is in shared_preload_libraries) ==='
CREATE EXTENSION recoverable_msg;

------------------------------------------------------------------------------
\echo
\echo '=== 1. Queues: orders, whose messages go to orders_dlq after 2 deliveries ==='
SELECT rmsg.create_queue('orders_dlq');
SELECT rmsg.create_queue('orders', max_deliveries => 2, dead_letter_queue => 'orders_dlq');

------------------------------------------------------------------------------
\echo
\echo '=== 2. Put: a text message, a jsonb message with headers, one delayed by 2 seconds ==='
SELECT rmsg.put('orders', 'order 1: two apples'::text) AS msg_id;
SELECT rmsg.put('orders', '{"order": 2, "item": "pears", "qty": 3}'::jsonb,
                headers => '{"source": "web", "priority": "high"}') AS msg_id;
SELECT rmsg.put('orders', 'order 3: delayed plums'::text, delay => '2 seconds') AS msg_id;
\echo '-- two ready, one delayed:'
:show_queues

------------------------------------------------------------------------------
\echo
\echo '=== 3. Get two with a 1 second visibility timeout; ack the first, nack the second ==='
CREATE TEMP TABLE got AS
    SELECT * FROM rmsg.get('orders', max => 2, visibility => '1 second');
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, headers, deliveries FROM got ORDER BY msg_id;
\echo '-- while they are leased, nobody else sees them:'
:show_queues
SELECT rmsg.ack(min(msg_id)) AS acked FROM got;
SELECT rmsg.nack(max(msg_id)) AS nacked FROM got;
\echo '-- the acked one is gone, the nacked one is ready again:'
:show_queues

\echo
\echo '=== Drain: once the delay has passed, take everything ready and ack it ==='
SELECT pg_sleep(2.2);
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, deliveries, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('orders', max => 10);
:show_queues

------------------------------------------------------------------------------
\echo
\echo '=== 4. Long polling: a get that waits up to 3 seconds ==='
\echo '-- in the background, another session runs after 1 second:'
\echo '--   SELECT rmsg.put(''orders'', ''order 4: arrived while we waited''::text);'
\! (sleep 1; psql -X -q -c "SELECT rmsg.put('orders', 'order 4: arrived while we waited'::text)" >/dev/null 2>&1) &
\echo '-- ... and the waiting get returns it about 1 second in (then we ack it):'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload,
       round(extract(epoch FROM clock_timestamp() - statement_timestamp())::numeric, 1) AS waited_seconds,
       rmsg.ack(msg_id) AS acked
  FROM rmsg.get('orders', wait => '3 seconds');

------------------------------------------------------------------------------
\echo
\echo '=== 5. Dead-lettering: a message nobody acks within max_deliveries (2) ==='
SELECT rmsg.put('orders', 'order 5: the consumer keeps crashing on this one'::text) AS msg_id;
\echo '-- delivery 1, never acked: its 1 second lease runs out'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, deliveries
  FROM rmsg.get('orders', visibility => '1 second');
SELECT pg_sleep(1.5);
\echo '-- delivery 2, never acked either'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, deliveries
  FROM rmsg.get('orders', visibility => '1 second');
SELECT pg_sleep(1.5);
\echo '-- the next get finds it exhausted: it moves to orders_dlq and is not returned'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, deliveries
  FROM rmsg.get('orders', visibility => '1 second');
:show_queues
\echo '-- a consumer of the dead-letter queue can look at it:'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, headers, deliveries
  FROM rmsg.get('orders_dlq');

------------------------------------------------------------------------------
\echo
\echo '=== 6. Deduplicated logging: data already logged is referenced, not written again ==='
SELECT rmsg.create_queue('billing');
SELECT rmsg.create_queue('shipping');
SELECT rmsg.create_queue('audit', dedup => 'none');
SELECT rmsg.create_queue('catalog', dedup => 'content');
\set QUIET 1
CREATE TEMP TABLE log_before AS SELECT * FROM rmsg.log_stats;
\unset QUIET
\echo '-- an order of 64 KiB of random bytes, put once:'
SELECT rmsg.put('orders', decode(string_agg(md5(random()::text), ''), 'hex')) AS order_id
  FROM generate_series(1, 4096) \gset
SELECT msg_id, length(payload) AS bytes, data_token AS order_token
  FROM rmsg.get('orders') \gset
\echo '-- the consumer got it with a data token; it passes the data on by reference:'
SELECT rmsg.put('billing', NULL::bytea, data_token => :order_token) AS billing_id;
SELECT rmsg.forward(:order_id, 'shipping') AS shipping_id;
SELECT rmsg.forward(:order_id, 'audit') AS audit_id;
SELECT rmsg.ack(:order_id) AS acked;
\echo '-- one payload row for the order (shared by billing and shipping), one copy for audit:'
SELECT q.name AS queue, m.payload_size, m.payload_id
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) ORDER BY m.msg_id;
\echo '-- put_many publishes once to several queues; a content queue finds equal data by itself:'
SELECT * FROM rmsg.put_many(ARRAY['billing', 'shipping', 'catalog'],
                            convert_to(repeat('price list 2026; ', 100), 'UTF8'));
SELECT rmsg.put('catalog', convert_to(repeat('price list 2026; ', 100), 'UTF8')) AS same_again;
SELECT q.name AS queue, m.payload_size, m.payload_id
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE m.payload_size = 1700 ORDER BY m.msg_id;
\echo '-- what was written and what was referenced instead:'
SELECT l.payload_bytes_written - b.payload_bytes_written AS bytes_written,
       l.payload_bytes_referenced - b.payload_bytes_referenced AS bytes_referenced
  FROM rmsg.log_stats l, log_before b;
SELECT queue, ready, payload_bytes, bytes_written, bytes_referenced FROM rmsg.queues ORDER BY queue;
\echo '-- consumers ack; collect_payloads (the seed''s checkpoint) removes the data nobody references:'
SELECT count(rmsg.ack(msg_id)) AS acked FROM rmsg.message
 WHERE queue_id IN (SELECT queue_id FROM rmsg.queue WHERE name IN ('billing', 'shipping', 'audit', 'catalog'));
SELECT rmsg.collect_payloads() AS payload_rows_collected;
SELECT * FROM rmsg.log_stats;
SELECT rmsg.drop_queue(q) FROM unnest(ARRAY['billing', 'shipping', 'audit', 'catalog']) q;

------------------------------------------------------------------------------
\echo
\echo '=== 7. Security: each queue belongs to its creator, who grants what others may do ==='
\set QUIET 1
CREATE ROLE demo_owner; CREATE ROLE demo_shop; CREATE ROLE demo_billing;
GRANT USAGE ON SCHEMA rmsg TO demo_owner, demo_shop, demo_billing;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text) TO demo_owner;
\unset QUIET
SET ROLE demo_owner;
SELECT rmsg.create_queue('invoices');
SELECT rmsg.grant_queue('invoices', 'demo_shop', 'put'), rmsg.grant_queue('invoices', 'demo_billing', 'get');
SELECT * FROM rmsg.privileges;
RESET ROLE;
\echo '-- the shop may put, and sees only the queues it holds a privilege on:'
SET ROLE demo_shop;
SELECT rmsg.put('invoices', 'invoice 1'::text) IS NOT NULL AS put;
SELECT queue, ready, owner FROM rmsg.queues;
\echo '-- but may not take (42501), nor touch the tables, which belong to the extension alone:'
\set ON_ERROR_STOP 0
SELECT * FROM rmsg.get('invoices');
SELECT count(*) FROM rmsg.message;
\set ON_ERROR_STOP 1
RESET ROLE;
\echo '-- every lease has a receipt, which acts only while that lease holds: once it ran out'
\echo '-- and the message was taken again, the old receipt acks nothing (false), the new one does:'
SET ROLE demo_billing;
SELECT msg_id AS inv, receipt AS first_receipt FROM rmsg.get('invoices', visibility => '1 second') \gset
SELECT pg_sleep(1.1);
SELECT receipt AS second_receipt FROM rmsg.get('invoices') \gset
SELECT rmsg.ack(:inv, :first_receipt) AS stale_receipt_acks, rmsg.ack(:inv, :second_receipt) AS holder_acks;
RESET ROLE;
SELECT queue, stale_receipts FROM rmsg.queues WHERE queue = 'invoices';
\echo '-- DROP ROLE knows the extension: once PostgreSQL has nothing against it, a role that'
\echo '-- owns a queue or holds a privilege on one still cannot be dropped (2BP01);'
\echo '-- DROP OWNED revokes its privileges and drops its queues:'
\set QUIET 1
REVOKE USAGE ON SCHEMA rmsg FROM demo_owner, demo_shop, demo_billing;
REVOKE EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text) FROM demo_owner;
\unset QUIET
\set ON_ERROR_STOP 0
DROP ROLE demo_owner, demo_shop, demo_billing;
\set ON_ERROR_STOP 1
DROP OWNED BY demo_owner, demo_shop, demo_billing;
SELECT count(*) AS invoices_queues_left FROM rmsg.queue WHERE name = 'invoices';
DROP ROLE demo_owner, demo_shop, demo_billing;

------------------------------------------------------------------------------
\echo
\echo '=== 8. Drop the queues (the one that dead-letters first) ==='
SELECT rmsg.drop_queue('orders');
SELECT rmsg.drop_queue('orders_dlq');
:show_queues
