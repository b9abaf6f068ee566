-- recoverable_msg walk-through, part one, run by test/demo.sh against a
-- scratch cluster: the README's first three capabilities (security,
-- persistent queues, deduplicated logging).  demo.sh then shows the other
-- three (the contract, instances, the background worker), which need
-- databases of their own and crashes in the middle.
--
-- psql -e prints every statement before its result; the \echo lines are the
-- narration.  Each section opens with why the capability exists.  Where an
-- error follows, the line before says it is expected.
--
-- demo.sh sets PGDATA and DEMO_SERVER_LOG for the crash in section 2, which
-- runs pg_ctl through \!.

\set ON_ERROR_STOP 1
\set QUIET 1
\pset null '(null)'
\unset QUIET
-- The queue overview, shown after the steps that change it.
\set show_queues 'SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues ORDER BY queue;'
-- Seconds since the statement started, for the gets that wait.
\set waited 'round(extract(epoch FROM clock_timestamp() - statement_timestamp()), 1) AS waited_seconds'

\echo
\echo '=== Install: the library is in shared_preload_libraries, the extension goes in each database ==='
CREATE EXTENSION recoverable_msg;

------------------------------------------------------------------------------
\echo
\echo '=== 1. Security of its own ==='
\echo 'Many roles share one database: tenants whose queues must stay apart, producers that may only'
\echo 'put, consumers. Queues have owners and privileges, so each role reaches only what it was granted.'
\echo '(Leases come with receipts, section 2; data tokens cannot store the wrong bytes, section 3.)'
\echo
\echo '-- an owner who creates the queues, a shop that puts, billing that takes, and a tenant that may'
\echo '-- create objects in schema public:'
\set QUIET 1
CREATE ROLE demo_owner; CREATE ROLE demo_shop; CREATE ROLE demo_billing; CREATE ROLE demo_tenant;
GRANT USAGE ON SCHEMA rmsg TO demo_owner, demo_shop, demo_billing;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO demo_owner;
GRANT CREATE ON SCHEMA public TO demo_tenant;
\unset QUIET
SET ROLE demo_owner;
SELECT rmsg.create_queue('invoices'), rmsg.create_queue('payroll');
SELECT rmsg.grant_queue('invoices', 'demo_shop', 'put'), rmsg.grant_queue('invoices', 'demo_billing', 'get');
SELECT * FROM rmsg.privileges;
RESET ROLE;
\echo '-- the shop may put to invoices, and sees only the queue it holds a privilege on (not payroll):'
SET ROLE demo_shop;
SELECT rmsg.put('invoices', 'invoice 1'::text) IS NOT NULL AS put;
SELECT queue, ready, owner FROM rmsg.queues;
\echo '-- two expected errors (42501): it may not get from invoices, nor read the extension''s tables:'
\set ON_ERROR_STOP 0
SELECT * FROM rmsg.get('invoices');
SELECT count(*) FROM rmsg.message;
\set ON_ERROR_STOP 1
\echo '-- bad input is refused before anything is written. Two expected errors: a batch with a NULL in'
\echo '-- it (22004: not even its first message is written), headers that are not a JSON object (22023):'
\set ON_ERROR_STOP 0
SELECT * FROM rmsg.put_batch('invoices', ARRAY['invoice 2', NULL, 'invoice 4']::bytea[]);
SELECT rmsg.put('invoices', 'invoice 5'::text, headers => '["not", "an", "object"]');
\set ON_ERROR_STOP 1
SELECT queue, ready FROM rmsg.queues;
RESET ROLE;
\echo '-- nothing outside the extension can redirect its statements. The tenant plants an'
\echo '-- unnest(bytea[]) in public, which PostgreSQL prefers to pg_catalog.unnest(anyarray):'
SET ROLE demo_tenant;
CREATE FUNCTION public.unnest(a bytea[]) RETURNS SETOF bytea LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'the planted unnest runs as %', current_user;
    RETURN QUERY SELECT pg_catalog.unnest(a);
END $$;
RESET ROLE;
\echo '-- the trap is live: with public first on its path, a plain query of the shop runs it (NOTICE) ...'
SET ROLE demo_shop;
SET search_path = public, pg_catalog;
SELECT count(*) FROM unnest(ARRAY['a', 'b']::bytea[]);
\echo '-- ... but put_batch, whose own statement unnests the array, does not (no NOTICE): the extension'
\echo '-- plans its statements with pg_catalog and rmsg alone on the path:'
SELECT count(*) AS invoices_put FROM rmsg.put_batch('invoices', ARRAY['invoice 2', 'invoice 3']::bytea[]);
RESET search_path;
RESET ROLE;
\set QUIET 1
DROP FUNCTION public.unnest(bytea[]);
REVOKE CREATE ON SCHEMA public FROM demo_tenant;
\unset QUIET
\echo '-- billing may take them (and ack them):'
SET ROLE demo_billing;
SELECT convert_from(payload, 'UTF8') AS invoice, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('invoices', max => 10);
RESET ROLE;
\echo '-- PostgreSQL cannot see the extension''s owners and grants, so the extension checks DROP ROLE'
\echo '-- itself: once PostgreSQL has nothing against these roles, one that owns a queue or holds a'
\echo '-- privilege on one still cannot be dropped (expected error 2BP01). DROP OWNED revokes their'
\echo '-- privileges and drops their queues, and then they can go:'
\set QUIET 1
REVOKE USAGE ON SCHEMA rmsg FROM demo_owner, demo_shop, demo_billing;
REVOKE EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) FROM demo_owner;
\unset QUIET
\set ON_ERROR_STOP 0
DROP ROLE demo_owner, demo_shop, demo_billing, demo_tenant;
\set ON_ERROR_STOP 1
DROP OWNED BY demo_owner, demo_shop, demo_billing, demo_tenant;
SELECT count(*) AS queues_left FROM rmsg.queues;
DROP ROLE demo_owner, demo_shop, demo_billing, demo_tenant;

------------------------------------------------------------------------------
\echo
\echo '=== 2. Persistent queues ==='
\echo 'A queue hands work from producers to consumers: a message exists after a crash exactly when its'
\echo 'put committed, and a consumer leases it, so no one else handles it meanwhile and a consumer that'
\echo 'dies gives it back.'
\echo
\echo '-- orders gives each message 2 deliveries; one nobody acks by then goes to orders_dlq:'
SELECT rmsg.create_queue('orders_dlq');
SELECT rmsg.create_queue('orders', max_deliveries => 2, dead_letter_queue => 'orders_dlq');
\echo '-- put: text, jsonb with headers, one delayed by a second. msg_ids come from one sequence for all'
\echo '-- the queues and instances of the database, so they go on after the invoices of section 1:'
SELECT rmsg.put('orders', 'order 1: two apples'::text) AS msg_id;
SELECT rmsg.put('orders', '{"order": 2, "item": "pears"}'::jsonb, headers => '{"source": "web"}') AS msg_id;
SELECT rmsg.put('orders', 'order 3: plums, in a second'::text, delay => '1 second') AS msg_id;
\echo '-- put_batch: several messages in one statement, msg_ids in array order:'
SELECT * FROM rmsg.put_batch('orders', ARRAY['order 4', 'order 5', 'order 6']::bytea[]) AS msg_id;
:show_queues

\echo '-- get leases the two oldest ready messages for 30 seconds: no other consumer sees them until'
\echo '-- the lease ends. Each lease has a receipt (kept here in a temporary table):'
CREATE TEMP TABLE got AS SELECT * FROM rmsg.get('orders', max => 2, visibility => '30 seconds');
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, headers, deliveries FROM got ORDER BY msg_id;
:show_queues
\echo '-- ack the first (done: it is removed); nack the second (cannot handle it now: it is ready again'
\echo '-- at once, in its old place):'
SELECT rmsg.ack(msg_id, receipt) AS acked FROM got WHERE msg_id = (SELECT min(msg_id) FROM got);
SELECT rmsg.nack(msg_id, receipt => receipt) AS nacked FROM got WHERE msg_id = (SELECT max(msg_id) FROM got);
:show_queues

\echo '-- extend: a consumer that needs more time moves the end of its lease. This lease of half a'
\echo '-- second, extended to a minute, still holds 0.6 s later:'
CREATE TEMP TABLE slow AS SELECT * FROM rmsg.get('orders', visibility => '0.5 seconds');
SELECT convert_from(payload, 'UTF8') AS payload, deliveries,
       rmsg.extend(msg_id, '1 minute', receipt) AS extended FROM slow;
SELECT pg_sleep(0.6);
:show_queues
SELECT rmsg.ack(msg_id, receipt) AS acked FROM slow;

\echo '-- a consumer of batches takes up to 3 and acks them in one call (ack of arrays, with receipts):'
CREATE TEMP TABLE batch AS SELECT * FROM rmsg.get('orders', max => 3);
SELECT msg_id, convert_from(payload, 'UTF8') AS payload FROM batch ORDER BY msg_id;
SELECT rmsg.ack(array_agg(msg_id), array_agg(receipt)) AS acked FROM batch;

\echo '-- long polling: a get given a wait sleeps until a message is ready. Order 3 is still delayed;'
\echo '-- the get wakes when its delay ends:'
SELECT convert_from(payload, 'UTF8') AS payload, :waited, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('orders', wait => '5 seconds');
\echo '-- a commit wakes it too. In the background, another session runs this in half a second:'
\echo '--   SELECT rmsg.put(''orders'', ''order 7: arrived while we waited''::text);'
\! (sleep 0.5; psql -X -q -c "SELECT rmsg.put('orders', 'order 7: arrived while we waited'::text)" >/dev/null 2>&1) &
SELECT convert_from(payload, 'UTF8') AS payload, :waited, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('orders', wait => '5 seconds');
\echo '-- rmsg.max_wait caps every wait. Behind a pooler in transaction mode a waiting get holds a server'
\echo '-- connection, so an operator sets a cap for the roles that come that way (ALTER ROLE ... SET; only'
\echo '-- a superuser may set it). A get asking to wait 30 s returns, empty, after 200 ms:'
SET rmsg.max_wait = '200ms';
SELECT count(*) AS messages, :waited FROM rmsg.get('orders', wait => '30 seconds');
RESET rmsg.max_wait;

\echo '-- receipts: a consumer whose lease ran out cannot ack the message another consumer took since.'
\echo '-- (A lease of zero, visibility 0, ends at once: the message is ready again immediately.)'
SELECT rmsg.put('orders', 'order 8'::text) AS msg_id;
CREATE TEMP TABLE first_lease AS SELECT msg_id, receipt FROM rmsg.get('orders', visibility => '0');
CREATE TEMP TABLE second_lease AS SELECT msg_id, receipt FROM rmsg.get('orders');
SELECT rmsg.ack(msg_id, receipt) AS first_consumer_acked FROM first_lease;
SELECT rmsg.ack(msg_id, receipt) AS second_consumer_acked FROM second_lease;
SELECT queue, stale_receipts FROM rmsg.queues WHERE queue = 'orders';

\echo '-- retries and dead letters: a consumer that crashes on a message (here: leases of zero) gets it'
\echo '-- again, up to max_deliveries (2). The next get moves it to orders_dlq and returns nothing:'
SELECT rmsg.put('orders', 'order 9: the consumer crashes on this one'::text) AS msg_id;
SELECT msg_id, deliveries FROM rmsg.get('orders', visibility => '0');
SELECT msg_id, deliveries FROM rmsg.get('orders', visibility => '0');
SELECT msg_id, deliveries FROM rmsg.get('orders');
:show_queues
\echo '-- in orders_dlq it starts over with deliveries = 0; an operator takes it there and acks it:'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, deliveries, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('orders_dlq');
\echo '-- a queue without a dead-letter queue keeps such a message as dead: never delivered again, its'
\echo '-- payload kept, counted in rmsg.queues.dead, until rmsg.ack removes it:'
SELECT rmsg.create_queue('jobs', max_deliveries => 1);
SELECT rmsg.put('jobs', 'job 1: always fails'::text) AS msg_id;
SELECT msg_id, deliveries FROM rmsg.get('jobs', visibility => '0');
SELECT msg_id, deliveries FROM rmsg.get('jobs');
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'jobs';
SELECT msg_id, convert_from(inline_data, 'UTF8') AS payload, deliveries, rmsg.ack(msg_id) AS acked
  FROM rmsg.dead_message;
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'jobs';
SELECT rmsg.drop_queue('jobs');

\echo '-- message groups: the messages of one group go out one at a time, in order; other groups are'
\echo '-- not held up. Two events of order 42 and one of order 43; a get of 10 hands out one per group:'
SELECT rmsg.create_queue('events');
SELECT rmsg.put('events', 'order 42 created'::text, group_id => 'order-42') AS msg_id;
SELECT rmsg.put('events', 'order 42 paid'::text, group_id => 'order-42') AS msg_id;
SELECT rmsg.put('events', 'order 43 created'::text, group_id => 'order-43') AS msg_id;
CREATE TEMP TABLE event_leases AS SELECT msg_id, convert_from(payload, 'UTF8') AS payload FROM rmsg.get('events', 10);
SELECT * FROM event_leases;
SELECT queue, ready, in_flight, groups_in_flight, group_waiting FROM rmsg.queues WHERE queue = 'events';
\echo '-- once "order 42 created" is acked, "order 42 paid" has its turn:'
SELECT rmsg.ack(msg_id) AS acked FROM event_leases;
SELECT convert_from(payload, 'UTF8') AS payload, rmsg.ack(msg_id) AS acked FROM rmsg.get('events', 10);

\echo '-- priorities: among ready messages the higher priority (0 to 9) goes out first, in order within'
\echo '-- one; each priority is a lane of the ready index with its own hint, so gets stay as cheap:'
SELECT rmsg.put('events', 'newsletter'::text) AS msg_id;
SELECT rmsg.put('events', 'password reset'::text, priority => 9) AS msg_id;
SELECT rmsg.put('events', 'weekly report'::text, priority => 3) AS msg_id;
SELECT convert_from(payload, 'UTF8') AS payload, rmsg.ack(msg_id) AS acked FROM rmsg.get('events', 10);

\echo '-- idempotent puts: a producer that does not know whether its put committed puts again with the'
\echo '-- same dedup_id; within the queue''s dedup_window (5 minutes by default) it gets the first msg_id'
\echo '-- back and nothing is stored twice:'
SELECT rmsg.put('events', 'invoice 7781'::text, dedup_id => 'invoice-7781') AS msg_id;
SELECT rmsg.put('events', 'invoice 7781'::text, dedup_id => 'invoice-7781') AS same_msg_id;
SELECT queue, ready FROM rmsg.queues WHERE queue = 'events';

\echo '-- an operator pauses a queue (gets return nothing, puts go on), resumes it, purges it:'
SELECT rmsg.pause_queue('events');
SELECT count(*) AS got_while_paused FROM rmsg.get('events');
SELECT queue, ready, paused FROM rmsg.queues WHERE queue = 'events';
SELECT rmsg.resume_queue('events');
SELECT rmsg.purge_queue('events') AS purged;
SELECT rmsg.drop_queue('events');

\echo '-- and sends dead letters back where they died once their cause is fixed (redrive):'
SELECT rmsg.put('orders', 'order 10: fails twice, then works'::text) AS msg_id;
SELECT count(*) AS leased FROM rmsg.get('orders', visibility => '0');
SELECT count(*) AS leased FROM rmsg.get('orders', visibility => '0');
SELECT count(*) AS leased FROM rmsg.get('orders');
SELECT queue, ready, dead FROM rmsg.queues WHERE queue IN ('orders', 'orders_dlq') ORDER BY queue;
SELECT rmsg.redrive('orders_dlq') AS redriven;
SELECT convert_from(payload, 'UTF8') AS payload, deliveries, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('orders');

\echo '-- monitoring systems read the same figures as Prometheus text (rmsg.metrics(), for'
\echo '-- pg_read_all_stats; src/monitoring/ has the queries for prometheus-postgres-exporter):'
SELECT line FROM regexp_split_to_table(rmsg.metrics(), E'\n') AS line
 WHERE line LIKE 'rmsg_queue_messages{queue="orders"%' OR line LIKE 'rmsg_queue_acks_total{queue="orders"}%';

\echo '-- and all of it survives a crash. Payments 1 and 2 are committed, and a consumer holds payment 1;'
\echo '-- another session has put payment 3 and not committed:'
SELECT rmsg.create_queue('payments');
SELECT rmsg.put('payments', 'payment 1: committed, then leased'::text) AS msg_id;
SELECT rmsg.put('payments', 'payment 2: committed'::text) AS msg_id;
SELECT msg_id, convert_from(payload, 'UTF8') AS payload
  FROM rmsg.get('payments', visibility => '0.5 seconds');
\! psql -X -q -c BEGIN -c "SELECT rmsg.put('payments', 'payment 3: never committed'::text)" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
\set ECHO none
\set QUIET 1
DO $$
BEGIN
    -- until the other session sleeps, its put done (10 s at most)
    FOR i IN 1..200 LOOP
        PERFORM pg_stat_clear_snapshot();
        IF EXISTS (SELECT FROM pg_stat_activity
                    WHERE query = 'SELECT pg_sleep(60)' AND state = 'active') THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RAISE EXCEPTION 'the session putting payment 3 did not start';
END $$;
\unset QUIET
\set ECHO queries
\echo '-- the server crashes (pg_ctl stop -m immediate: no checkpoint, no clean shutdown) and starts again:'
\! pg_ctl stop -m immediate -w >/dev/null && pg_ctl start -w -l "$DEMO_SERVER_LOG" >/dev/null
\connect
SELECT pg_sleep(0.5);
\echo '-- payments 1 and 2 are there, payment 3 is not. Payment 1, whose consumer went down with the server,'
\echo '-- is handed out again once its lease is over (at once if the crash took the lease): delivery is at'
\echo '-- least once.'
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('payments', max => 10);
\echo '-- a put after the crash: its msg_id jumps ahead. A PostgreSQL sequence writes values to the WAL up'
\echo '-- to 32 ahead of the one it hands out, and after a crash goes on after the last one written: msg_ids'
\echo '-- stay unique and increasing, with gaps.'
SELECT rmsg.put('payments', 'payment 4: after the restart'::text) AS msg_id;
SELECT rmsg.drop_queue('payments');

------------------------------------------------------------------------------
\echo
\echo '=== 3. Deduplicated logging ==='
\echo 'Messaging logs the same data again and again: a relay passes an order on to three queues, a'
\echo 'publisher sends one payload to many. Here a put of data already logged writes a reference to it.'
\echo
SELECT rmsg.create_queue('billing');
SELECT rmsg.create_queue('shipping');
SELECT rmsg.create_queue('audit', dedup => 'none');
SELECT rmsg.create_queue('catalog', dedup => 'content');
\set ECHO none
\set QUIET 1
CREATE TEMP TABLE log_before AS SELECT * FROM rmsg.log_stats;
\unset QUIET
\set ECHO queries
\echo '-- an order of 64 KiB of random bytes, put once; the relay gets it, with a data token naming its data:'
SELECT rmsg.put('orders', decode(string_agg(md5(random()::text), ''), 'hex')) AS msg_id
  FROM generate_series(1, 4096);
CREATE TEMP TABLE relay AS SELECT msg_id, length(payload) AS bytes, data_token FROM rmsg.get('orders');
SELECT msg_id, bytes FROM relay;
\echo '-- it passes the data on by reference: a put that names the token, and two forwards of the message'
\echo '-- (audit, a queue with dedup none, takes a copy):'
SELECT rmsg.put('billing', NULL::bytea, data_token => data_token) AS billing_msg_id FROM relay;
SELECT rmsg.forward(msg_id, 'shipping') AS shipping_msg_id FROM relay;
SELECT rmsg.forward(msg_id, 'audit') AS audit_msg_id FROM relay;
SELECT rmsg.ack(msg_id) AS acked FROM relay;
\echo '-- a token cannot store the wrong bytes: with a payload that is not its data, the put is refused'
\echo '-- (expected error 22023):'
\set ON_ERROR_STOP 0
SELECT rmsg.put('billing', 'other bytes'::bytea, data_token => data_token) FROM relay;
\set ON_ERROR_STOP 1
\echo '-- billing and shipping reference one payload row (the same payload_id); audit has its own:'
SELECT q.name AS queue, m.payload_size, m.payload_id
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) ORDER BY m.msg_id;
\echo '-- put_many publishes one payload to several queues, written once; a content queue finds equal'
\echo '-- data by itself, so the second put to catalog references it too:'
SELECT * FROM rmsg.put_many(ARRAY['billing', 'shipping', 'catalog'],
                            convert_to(repeat('price list 2026; ', 100), 'UTF8')) AS msg_id;
SELECT rmsg.put('catalog', convert_to(repeat('price list 2026; ', 100), 'UTF8')) AS msg_id;
SELECT q.name AS queue, m.payload_size, m.payload_id
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE m.payload_size = 1700 ORDER BY m.msg_id;
\echo '-- payload bytes written in this section (the order, audit''s copy, the price list) and referenced'
\echo '-- instead (the order twice, the price list three times):'
SELECT l.payload_bytes_written - b.payload_bytes_written AS bytes_written,
       l.payload_bytes_referenced - b.payload_bytes_referenced AS bytes_referenced
  FROM rmsg.log_stats l, log_before b;
SELECT queue, ready, payload_bytes, bytes_written, bytes_referenced FROM rmsg.queues ORDER BY queue;
\echo '-- once no message references a payload row (the queues are dropped here), collect_payloads removes'
\echo '-- it; the background worker runs it on a schedule (section 6):'
SELECT rmsg.drop_queue(q) FROM unnest(ARRAY['billing', 'shipping', 'audit', 'catalog']) q;
SELECT rmsg.collect_payloads() AS payload_rows_collected;
SELECT puts_written, puts_referenced, payloads_collected, payload_rows FROM rmsg.log_stats;
SELECT rmsg.drop_queue('orders');
SELECT rmsg.drop_queue('orders_dlq');
