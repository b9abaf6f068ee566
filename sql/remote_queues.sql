-- Remote queues without a second server: what create_remote_queue checks
-- and refuses, and the receiving side, rmsg.accept_transfer, called
-- directly as a sending server's worker would call it.  TAP 026 moves
-- messages between real servers.

CREATE FOREIGN DATA WRAPPER rq_fdw;
CREATE SERVER rq_server FOREIGN DATA WRAPPER rq_fdw OPTIONS (host '/nonexistent', dbname 'x');
CREATE ROLE rq_owner;
CREATE ROLE rq_other;
GRANT EXECUTE ON FUNCTION rmsg.create_remote_queue(text, text, text) TO rq_owner, rq_other;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO rq_owner, rq_other;
GRANT USAGE ON SCHEMA rmsg TO rq_owner, rq_other;

\set VERBOSITY terse
-- the server must exist, the role hold USAGE on it and have a user mapping
SELECT rmsg.create_remote_queue('rq', 'no_such_server');
SET ROLE rq_owner;
SELECT rmsg.create_remote_queue('rq', 'rq_server');
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER rq_server TO rq_owner;
SET ROLE rq_owner;
SELECT rmsg.create_remote_queue('rq', 'rq_server');
RESET ROLE;
CREATE USER MAPPING FOR rq_owner SERVER rq_server OPTIONS (user 'someone', password 'secret');
SET ROLE rq_owner;
SELECT rmsg.create_remote_queue('rq', 'rq_server', 'orders_in');
-- bad names are refused as for create_queue
SELECT rmsg.create_remote_queue('bad name', 'rq_server');
SELECT rmsg.create_remote_queue('rq2', 'rq_server', 'bad name');
SELECT rmsg.create_remote_queue('rq', 'rq_server');
\set VERBOSITY default
SELECT server, queue, remote_queue, pending, in_transit, last_sent, last_acknowledged, last_error
  FROM rmsg.channels;

-- puts commit here; what only a local queue does is refused
SELECT rmsg.put('rq', 'one'::text) AS rq_one \gset
SELECT :rq_one > 0 AS put;
SELECT count(*) AS batch FROM rmsg.put_batch('rq', ARRAY['two', 'three']::bytea[]);
\set VERBOSITY terse
SELECT rmsg.put('rq', 'x'::text, priority => 3);
SELECT rmsg.put('rq', 'x'::text, group_id => 'g');
SELECT rmsg.put_batch('rq', ARRAY['x']::bytea[], priority => 1);
SELECT rmsg.put_many(ARRAY['rq'], 'x'::bytea, group_id => 'g');
SELECT * FROM rmsg.get('rq');
\set VERBOSITY default
SELECT pending, in_transit FROM rmsg.channels WHERE queue = 'rq';
-- a pending message waits only to be moved: no role, not even the owner
-- (who may get from it), acks, nacks or extends it here (an ack would lose it)
SELECT rmsg.ack(:rq_one) AS acked, rmsg.ack(:rq_one, NULL) AS acked_without_receipt,
       rmsg.ack(ARRAY[:rq_one]::bigint[]) AS acked_of_array,
       rmsg.nack(:rq_one) AS nacked, rmsg.extend(:rq_one, '1 minute') AS extended;
SELECT rmsg.grant_queue('rq', 'rq_other', 'get');
RESET ROLE;
SET ROLE rq_other;
SELECT rmsg.ack(:rq_one) AS acked_by_a_role_with_get;
RESET ROLE;
SELECT rmsg.revoke_queue('rq', 'rq_other', 'get');
SET ROLE rq_owner;
SELECT pending, in_transit FROM rmsg.channels WHERE queue = 'rq';
-- another role sees no row of it
RESET ROLE;
SET ROLE rq_other;
SELECT count(*) AS others_see FROM rmsg.channels;
RESET ROLE;

-- the receiving side
SELECT rmsg.create_queue('inbox');
SELECT rmsg.create_queue('inbox2');
SELECT rmsg.accept_transfer('ch1', 'inbox', 1, ARRAY['m1', 'm2', 'm3']::bytea[],
                            ARRAY['{"k": 1}', NULL, '{}']::jsonb[]) AS last_seq;
-- the same numbers again (the sender did not hear the answer): nothing more
SELECT rmsg.accept_transfer('ch1', 'inbox', 1, ARRAY['m1', 'm2', 'm3']::bytea[], NULL) AS last_seq;
-- overlapping: only the new number is put
SELECT rmsg.accept_transfer('ch1', 'inbox', 3, ARRAY['m3', 'm4']::bytea[], NULL) AS last_seq;
SELECT convert_from(inline_data, 'UTF8') AS payload, headers
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'inbox' ORDER BY msg_id;
SELECT channel, sender = current_user::regrole AS sent_by_me, last_seq FROM rmsg.channel_in;
SELECT puts FROM rmsg.queues WHERE queue = 'inbox';

\set VERBOSITY terse
-- a gap, another queue, another role, bad input: refused, nothing written
SELECT rmsg.accept_transfer('ch1', 'inbox', 9, ARRAY['m9']::bytea[], NULL);
SELECT rmsg.accept_transfer('ch1', 'inbox2', 5, ARRAY['m5']::bytea[], NULL);
GRANT USAGE ON SCHEMA rmsg TO rq_other;
SELECT rmsg.grant_queue('inbox', 'rq_other', 'put');
SET ROLE rq_other;
-- another role's channels are its own: ch1 is not this role's, and it
-- cannot be opened at 5; opened at 1 it is a channel of its own
SELECT rmsg.accept_transfer('ch1', 'inbox', 5, ARRAY['m5']::bytea[], NULL);
\set VERBOSITY default
SELECT rmsg.accept_transfer('ch1', 'inbox', 1, ARRAY['other 1']::bytea[], NULL) AS own_channel;
\set VERBOSITY terse
SELECT rmsg.accept_transfer('ch2', 'inbox2', 1, ARRAY['m1']::bytea[], NULL);
RESET ROLE;
SELECT rmsg.accept_transfer(NULL, 'inbox', 1, ARRAY['x']::bytea[], NULL);
SELECT rmsg.accept_transfer('ch3', 'inbox', 0, ARRAY['x']::bytea[], NULL);
SELECT rmsg.accept_transfer('ch3', 'inbox', 1, NULL, NULL);
SELECT rmsg.accept_transfer('ch3', 'inbox', 1, ARRAY['x', NULL]::bytea[], NULL);
SELECT rmsg.accept_transfer('ch3', 'inbox', 1, ARRAY['x', 'y']::bytea[], ARRAY['{}']::jsonb[]);
SELECT rmsg.accept_transfer('ch3', 'inbox', 1, ARRAY['x']::bytea[], ARRAY['[1]']::jsonb[]);
SELECT rmsg.accept_transfer('ch3', 'inbox', 1, ARRAY[['x'], ['y']]::bytea[], NULL);
SELECT rmsg.accept_transfer('ch3', 'inbox', 9223372036854775807, ARRAY['x', 'y']::bytea[], NULL);
SELECT rmsg.accept_transfer('ch3', 'no_such_queue', 1, ARRAY['x']::bytea[], NULL);
BEGIN READ ONLY;
SELECT rmsg.accept_transfer('ch3', 'inbox', 1, ARRAY['x']::bytea[], NULL);
ROLLBACK;
\set VERBOSITY default
SELECT count(*) AS messages FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name IN ('inbox', 'inbox2');
SELECT channel, sender = current_user::regrole AS sent_by_me, last_seq
  FROM rmsg.channel_in ORDER BY channel, sent_by_me;
-- a channel this server does not know cannot begin past 1: the numbers
-- before were acknowledged here, and are gone
\set VERBOSITY terse
SELECT rmsg.accept_transfer('ch9', 'inbox', 7, ARRAY['x']::bytea[], NULL);
\set VERBOSITY default

-- Data by reference: a payload sent with its key is kept in a payload row
-- and remembered; later messages may name the key alone (a NULL payload)
SELECT rmsg.create_queue('inbox_none', dedup => 'none');
SELECT max(msg_id) AS before_keys FROM rmsg.message \gset
SELECT rmsg.accept_transfer('ch5', 'inbox', 1, ARRAY[repeat('a', 300)::bytea, NULL, NULL],
                            NULL, ARRAY[41, 41, 41], 'origin-a') AS last_seq;
SELECT count(DISTINCT payload_id) AS payload_rows, count(*) AS messages,
       bool_and(inline_data IS NULL) AS all_referenced
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'inbox' AND m.payload_size = 300;
SELECT key, size, sender = current_user::regrole AS mine FROM rmsg.payload_received;
-- a key that names nothing here stops the transfer before it: the sender
-- sends the rest again with their data
SELECT rmsg.accept_transfer('ch5', 'inbox', 4, ARRAY[NULL, 'plain', NULL]::bytea[],
                            NULL, ARRAY[41, NULL, 99], 'origin-a') AS last_seq;
SELECT rmsg.accept_transfer('ch5', 'inbox', 6, ARRAY[NULL, 'eight']::bytea[],
                            NULL, ARRAY[99, NULL], 'origin-a') AS last_seq;
SELECT rmsg.accept_transfer('ch5', 'inbox', 6, ARRAY['ninety-nine', 'seven']::bytea[],
                            NULL, NULL, NULL) AS last_seq;
SELECT payload_size, payload_id IS NOT NULL AS in_payload_row,
       left(convert_from(coalesce(inline_data, p.data), 'UTF8'), 12) AS starts
  FROM rmsg.message m LEFT JOIN rmsg.payload p USING (payload_id)
 WHERE m.msg_id > :before_keys ORDER BY msg_id;
SELECT bytes_referenced FROM rmsg.queues WHERE queue = 'inbox';
-- the same number from another origin, or sent by another role: not ours
SELECT rmsg.accept_transfer('ch6', 'inbox', 1, ARRAY[NULL]::bytea[], NULL, ARRAY[41],
                            'origin-b') AS other_origin;
SET ROLE rq_other;
SELECT rmsg.accept_transfer('ch7', 'inbox', 1, ARRAY[NULL]::bytea[], NULL, ARRAY[41],
                            'origin-a') AS other_role;
RESET ROLE;
-- a key names one data for ever: other bytes under a known key leave it as
-- it was (the new message keeps its own bytes)
SELECT rmsg.accept_transfer('ch5', 'inbox', 8, ARRAY[repeat('b', 300)::bytea, NULL],
                            NULL, ARRAY[41, 41], 'origin-a') AS last_seq;
SELECT payload_size, left(convert_from(coalesce(inline_data, p.data), 'UTF8'), 12) AS starts
  FROM rmsg.message m LEFT JOIN rmsg.payload p USING (payload_id)
 WHERE m.msg_id > :before_keys ORDER BY msg_id DESC LIMIT 2;
-- the same bytes under a new key in a 'content' queue find the row the
-- old key named: the row keeps its newest key only, so keys do not pile up
SELECT rmsg.create_queue('inbox_c', dedup => 'content');
SELECT rmsg.accept_transfer('ch10', 'inbox_c', 1, ARRAY[repeat('c', 300)::bytea,
                            repeat('c', 300)::bytea], NULL, ARRAY[51, 52], 'origin-a') AS last_seq;
SELECT key FROM rmsg.payload_received WHERE key IN (51, 52);
-- a queue with dedup 'none' gets its own copy, read from the row here
SELECT rmsg.accept_transfer('ch8', 'inbox_none', 1, ARRAY[NULL]::bytea[], NULL, ARRAY[41],
                            'origin-a') AS last_seq;
SELECT payload_id IS NULL AS own_copy, inline_data = repeat('a', 300)::bytea AS same_data
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'inbox_none';
-- refused: keys without their origin, arrays that do not match
\set VERBOSITY terse
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY[NULL]::bytea[], NULL, ARRAY[41], NULL);
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY['x']::bytea[], NULL, ARRAY[41], NULL);
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY['x', 'y']::bytea[], NULL, ARRAY[41],
                            'origin-a');
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY[NULL]::bytea[], NULL, ARRAY[NULL]::bigint[],
                            'origin-a');
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY['x']::bytea[], NULL, ARRAY[-41], 'origin-a');
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY['x']::bytea[], NULL, ARRAY[0], 'origin-a');
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY['x']::bytea[], NULL, ARRAY[41], '');
SELECT rmsg.accept_transfer('ch9', 'inbox', 1, ARRAY['x']::bytea[], NULL, ARRAY[41],
                            repeat('o', 101));
SELECT count(*) AS nothing_from_ch9 FROM rmsg.channel_in WHERE channel = 'ch9';
\set VERBOSITY default
-- once no message references the payload row, it is collected, and what
-- was remembered of its key with it
SELECT rmsg.purge_queue('inbox') > 0 AS purged, rmsg.purge_queue('inbox_none') AS purged_none,
       rmsg.purge_queue('inbox_c') AS purged_c;
SELECT rmsg.collect_payloads() >= 1 AS collected;
SELECT count(*) AS keys_left FROM rmsg.payload_received;
SELECT rmsg.accept_transfer('ch5', 'inbox', 10, ARRAY[NULL]::bytea[], NULL, ARRAY[41],
                            'origin-a') AS last_seq;

-- dropping a remote queue drops its row and what it had in transit
SET ROLE rq_owner;
SELECT rmsg.drop_queue('rq');
RESET ROLE;
SELECT count(*) AS remote_rows FROM rmsg.remote_queue;
SELECT rmsg.drop_queue('inbox'), rmsg.drop_queue('inbox2'), rmsg.drop_queue('inbox_none'),
       rmsg.drop_queue('inbox_c');
DELETE FROM rmsg.channel_in;
DROP USER MAPPING FOR rq_owner SERVER rq_server;
DROP SERVER rq_server;
DROP FOREIGN DATA WRAPPER rq_fdw;
REVOKE ALL ON SCHEMA rmsg FROM rq_owner, rq_other;
REVOKE EXECUTE ON FUNCTION rmsg.create_remote_queue(text, text, text) FROM rq_owner, rq_other;
REVOKE EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) FROM rq_owner, rq_other;
DROP ROLE rq_owner;
DROP ROLE rq_other;

-- The callee's side of rmsg.call, called directly as a caller's server
-- would: the handler runs once per call id, a repeat gets the kept reply.
CREATE TABLE served (caller text, request text);
CREATE FUNCTION serve_it(caller text, call_id bigint, request bytea) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO served VALUES (caller, convert_from(request, 'UTF8'));
  RETURN convert_to('done: ' || convert_from(request, 'UTF8'), 'UTF8');
END $$;
SELECT rmsg.set_callee_handler('desk', 'serve_it(text,bigint,bytea)');
SELECT convert_from(rmsg.serve_call('desk', 'clerk', 1, 'first'), 'UTF8') AS reply;
SELECT convert_from(rmsg.serve_call('desk', 'clerk', 1, 'first'), 'UTF8') AS repeated;
SELECT convert_from(rmsg.serve_call('desk', 'clerk', 2, 'second'), 'UTF8') AS reply;
SELECT * FROM served;
\set VERBOSITY terse
SELECT rmsg.serve_call('desk', 'clerk', 1, 'first');
SELECT rmsg.serve_call('nobody', 'clerk', 1, 'x');
CREATE FUNCTION wrong_shape(request bytea) RETURNS bytea LANGUAGE sql AS 'SELECT $1';
SELECT rmsg.set_callee_handler('desk', 'wrong_shape(bytea)');
CREATE FUNCTION no_reply(caller text, call_id bigint, request bytea) RETURNS bytea LANGUAGE sql AS 'SELECT NULL::bytea';
SELECT rmsg.set_callee_handler('desk2', 'no_reply(text,bigint,bytea)');
SELECT rmsg.serve_call('desk2', 'clerk', 1, 'x');
SELECT count(*) AS replies_kept FROM rmsg.last_call WHERE callee = 'desk2';
-- the handler runs as the role that registered it, not as the role
-- that serves the call
CREATE ROLE desk_owner;
GRANT USAGE ON SCHEMA rmsg TO desk_owner;
CREATE FUNCTION whoami(caller text, call_id bigint, request bytea) RETURNS bytea LANGUAGE sql
  AS $$ SELECT convert_to(current_user, 'UTF8') $$;
GRANT EXECUTE ON FUNCTION whoami(text, bigint, bytea) TO desk_owner;
-- use on a callee is not enough to set its handler: that takes manage
SELECT rmsg.grant_component('desk', 'desk_owner', 'use');
SET ROLE desk_owner;
\set VERBOSITY terse
SELECT rmsg.set_callee_handler('desk', 'whoami(text,bigint,bytea)');
\set VERBOSITY default
SELECT rmsg.set_callee_handler('desk3', 'whoami(text,bigint,bytea)');
RESET ROLE;
SELECT convert_from(rmsg.serve_call('desk', 'clerk', 3, 'third'), 'UTF8') AS still_serve_it;
SELECT rmsg.grant_component('desk3', CURRENT_USER::regrole, 'use');
\set VERBOSITY default
SELECT convert_from(rmsg.serve_call('desk3', 'clerk', 1, 'x'), 'UTF8') AS ran_as;
-- rmsg.call needs a foreign server the role may use
\set VERBOSITY terse
SELECT rmsg.call('clerk', 'no_such_server', 'desk', 'x');
\set VERBOSITY default
SELECT rmsg.set_callee_handler('desk', NULL);
SELECT count(*) AS handlers_left FROM rmsg.callee_handler WHERE callee = 'desk';
DELETE FROM rmsg.callee_handler;
DELETE FROM rmsg.last_call WHERE callee IN ('desk', 'desk2', 'desk3');
DROP TABLE served;
DROP FUNCTION serve_it(text, bigint, bytea), wrong_shape(bytea), no_reply(text, bigint, bytea), whoami(text, bigint, bytea);
REVOKE ALL ON SCHEMA rmsg FROM desk_owner;
SELECT rmsg.alter_component_owner('desk3', CURRENT_USER::regrole);
SELECT rmsg.revoke_component('desk', 'desk_owner', 'use');
DROP ROLE desk_owner;
