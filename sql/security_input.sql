--
-- security_input: input that must change nothing, and state that must not
-- be bypassed.  Intervals that would carry a time past the end of the
-- timestamp range (22008), counts beyond what a call can take (22023),
-- writers in a read-only transaction (25006), data tokens with other bytes
-- than their data, of another role, or of a dropped extension, and a
-- trigger or row security on a table our hot paths write directly.
--
\i test/lib/regress_helpers.sql
SELECT rmsg.create_queue('si'), rmsg.create_instance('si-1');
SELECT rmsg.put('si', 'keep'::text) AS kept \gset
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM rmsg.message) AS messages,
       (SELECT count(*) FROM rmsg.instance_message) AS instance_messages,
       (SELECT coalesce(sum(deliveries), 0) FROM rmsg.lease) AS deliveries,
       (SELECT count(*) FROM rmsg.queue) AS queues;
CREATE FUNCTION unchanged() RETURNS boolean LANGUAGE sql AS $$
  SELECT (SELECT count(*) FROM rmsg.message) = b.messages
     AND (SELECT count(*) FROM rmsg.instance_message) = b.instance_messages
     AND (SELECT coalesce(sum(deliveries), 0) FROM rmsg.lease) = b.deliveries
     AND (SELECT count(*) FROM rmsg.queue) = b.queues
    FROM before b
$$;

------------------------------------------------------------------------------
-- Times past the end of the timestamp range: 22008, never a wrap
------------------------------------------------------------------------------
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text, delay => '2562047788 hours')$$);
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text, delay => '300000 years')$$);
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text, delay => '178000000 years')$$);
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text, delay => '2147483647 days 2147483647 months')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('si', visibility => '300000 years')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('si', wait => '300000 years')$$);
SELECT sqlstate_of(format($$SELECT rmsg.nack(%s, '300000 years')$$, :kept));
SELECT sqlstate_of(format($$SELECT rmsg.extend(%s, '300000 years')$$, :kept));
SELECT sqlstate_of($$SELECT * FROM rmsg.receive('si-1', 1, '300000 years')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.receive_any(1, '2562047788 hours')$$);
-- the longest delay a queue takes is about what remains of the range (a
-- month counts as 30 days)
SELECT rmsg.put('si', 'far'::text, delay => '200000 years') > 0 AS far_future;
SELECT extract(year FROM visible_at) > 190000 AS readable_back FROM rmsg.message
 WHERE queue_id = (SELECT queue_id FROM rmsg.queue WHERE name = 'si') AND msg_id > :kept;
DELETE FROM rmsg.message WHERE msg_id > :kept
   AND queue_id = (SELECT queue_id FROM rmsg.queue WHERE name = 'si');
SELECT unchanged();

------------------------------------------------------------------------------
-- Counts: 1 to 10000 messages a call (22023), not an allocation error
------------------------------------------------------------------------------
SELECT sqlstate_of($$SELECT * FROM rmsg.get('si', max => 2147483647)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('si', max => 10001)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.receive('si-1', 2147483647)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.receive_any(-2147483648)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('si', 'pg_catalog.length(bytea)', 1001)$$);
SELECT unchanged();

------------------------------------------------------------------------------
-- Writers refuse a read-only transaction: 25006, before touching anything
------------------------------------------------------------------------------
BEGIN READ ONLY;
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text)$$) AS put,
       sqlstate_of($$SELECT * FROM rmsg.put_with_token('si', 'x'::bytea)$$) AS put_with_token,
       sqlstate_of($$SELECT rmsg.put_batch('si', ARRAY['x'::bytea])$$) AS put_batch,
       sqlstate_of($$SELECT rmsg.put_many(ARRAY['si'], 'x'::bytea)$$) AS put_many;
SELECT sqlstate_of($$SELECT * FROM rmsg.get('si')$$) AS get,
       sqlstate_of(format('SELECT rmsg.ack(%s)', :kept)) AS ack,
       sqlstate_of(format('SELECT rmsg.ack(%s, 1)', :kept)) AS ack_receipt,
       sqlstate_of(format('SELECT rmsg.ack(ARRAY[%s]::bigint[])', :kept)) AS ack_many,
       sqlstate_of(format('SELECT rmsg.nack(%s)', :kept)) AS nack,
       sqlstate_of(format($$SELECT rmsg.extend(%s, '1 minute')$$, :kept)) AS extend,
       sqlstate_of(format($$SELECT rmsg.forward(%s, 'si')$$, :kept)) AS forward;
SELECT sqlstate_of($$SELECT rmsg.create_queue('si2')$$) AS create_queue,
       sqlstate_of($$SELECT rmsg.drop_queue('si')$$) AS drop_queue,
       sqlstate_of($$SELECT rmsg.grant_queue('si', 'pg_monitor', 'get')$$) AS grant_queue,
       sqlstate_of($$SELECT rmsg.subscribe('si', 'pg_catalog.length(bytea)')$$) AS subscribe,
       sqlstate_of($$SELECT rmsg.collect_payloads()$$) AS collect;
SELECT sqlstate_of($$SELECT * FROM rmsg.deliver('si-1', 'x'::bytea)$$) AS deliver,
       sqlstate_of($$SELECT * FROM rmsg.receive('si-1')$$) AS receive,
       sqlstate_of($$SELECT * FROM rmsg.receive_any()$$) AS receive_any,
       sqlstate_of($$SELECT rmsg.begin_recovery('si-1')$$) AS begin_recovery,
       sqlstate_of($$SELECT rmsg.save_state('si-1', '{}')$$) AS save_state,
       sqlstate_of($$SELECT rmsg.create_instance('si-2')$$) AS create_instance;
SELECT sqlstate_of($$SELECT * FROM rmsg.prepare_call('si-caller', 'si-callee')$$) AS prepare_call,
       sqlstate_of($$SELECT * FROM rmsg.accept_call('si-callee', 'si-caller', 1)$$) AS accept_call,
       sqlstate_of($$SELECT rmsg.reply('si-callee', 'si-caller', 1, 'r')$$) AS reply,
       sqlstate_of($$SELECT rmsg.force_log('si-caller')$$) AS force_log,
       sqlstate_of($$SELECT rmsg.set_handler('si-', 'pg_catalog.length(bytea)')$$) AS set_handler;
-- readers still read
SELECT count(*) >= 1 AS queues_view, rmsg.load_state('si-1') AS state,
       rmsg.last_data_token() IS NULL AS no_token
  FROM rmsg.queues WHERE queue = 'si';
ROLLBACK;
SELECT unchanged();

------------------------------------------------------------------------------
-- Data tokens
------------------------------------------------------------------------------
CREATE TEMP TABLE data AS
SELECT convert_to(repeat('a', 3000), 'UTF8') AS a, convert_to(repeat('b', 3000), 'UTF8') AS b;
SELECT token AS tok, msg_id AS a_id FROM data, rmsg.put_with_token('si', a) \gset
-- a payload of the same size but other bytes is refused, not replaced by
-- the token's data: 22023, nothing written
SELECT sqlstate_of(format('SELECT rmsg.put(%L, %L::bytea, data_token => %s)', 'si', b, :tok))
  FROM data;
-- the same bytes are referenced
SELECT msg_id AS same FROM data, rmsg.put_with_token('si', a, data_token => :tok) \gset
SELECT count(DISTINCT payload_id) AS payload_rows FROM rmsg.message WHERE msg_id IN (:a_id, :same);
-- another role may not use this session's token
CREATE ROLE si_other;
GRANT USAGE ON SCHEMA rmsg TO si_other;
SELECT rmsg.grant_queue('si', 'si_other', 'put');
SET ROLE si_other;
SELECT sqlstate_of(format('SELECT rmsg.put(%L, NULL::bytea, data_token => %s)', 'si', :tok));
RESET ROLE;
DELETE FROM rmsg.message WHERE msg_id IN (:a_id, :same);

------------------------------------------------------------------------------
-- A trigger on a table of ours would run as the tables' owner, with the
-- rights of whoever planted it (and the hot paths, which write rmsg.message
-- directly, would bypass it); row security would be bypassed too.  Every
-- function refuses with 55000 while one is there.
------------------------------------------------------------------------------
CREATE FUNCTION si_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER si_audit BEFORE INSERT OR UPDATE OR DELETE ON rmsg.message
  FOR EACH ROW EXECUTE FUNCTION si_trigger();
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text)$$) AS put,
       sqlstate_of($$SELECT * FROM rmsg.get('si')$$) AS get,
       sqlstate_of(format('SELECT rmsg.ack(%s)', :kept)) AS ack;
DROP TRIGGER si_audit ON rmsg.message;
CREATE TRIGGER si_audit AFTER UPDATE ON rmsg.queue
  FOR EACH STATEMENT EXECUTE FUNCTION si_trigger();
SELECT sqlstate_of($$SELECT rmsg.create_queue('si_t')$$) AS create_queue,
       sqlstate_of($$SELECT rmsg.put('si', 'x'::text)$$) AS put;
DROP TRIGGER si_audit ON rmsg.queue;
ALTER TABLE rmsg.message ENABLE ROW LEVEL SECURITY;
SELECT sqlstate_of($$SELECT rmsg.put('si', 'x'::text)$$) AS put;
ALTER TABLE rmsg.message DISABLE ROW LEVEL SECURITY;
SELECT unchanged();

------------------------------------------------------------------------------
-- A dropped extension's tokens are never accepted again: the new payload
-- row of the same number holds other data
------------------------------------------------------------------------------
DROP OWNED BY si_other;
DROP ROLE si_other;
SELECT token AS old_tok, msg_id AS old_id FROM data, rmsg.put_with_token('si', a) \gset
SELECT payload_id AS old_payload_id FROM rmsg.message WHERE msg_id = :old_id \gset
-- (CASCADE: the suite's earlier files left views over ours behind)
SET client_min_messages = warning;
DROP EXTENSION recoverable_msg CASCADE;
RESET client_min_messages;
CREATE EXTENSION recoverable_msg;
SELECT rmsg.create_queue('si');
-- the new extension's payload row of the old number holds other data
SELECT setval('rmsg.payload_id_seq', :old_payload_id, false) IS NOT NULL AS numbered;
SELECT rmsg.put('si', b) AS b_id FROM data \gset
SELECT payload_id = :old_payload_id AS same_number FROM rmsg.message WHERE msg_id = :b_id;
SELECT sqlstate_of(format('SELECT rmsg.put(%L, NULL::bytea, data_token => %s)', 'si', :old_tok));
-- with the payload given, the payload is what is stored
SELECT rmsg.put('si', a, data_token => :old_tok) AS a_again FROM data \gset
SELECT payload = (SELECT a FROM data) AS stored_what_was_given
  FROM rmsg.get('si', 10) WHERE msg_id = :a_again;
SELECT rmsg.drop_queue('si');
