--
-- security_roles: the extension's own privileges.  Two tenants, a producer
-- and an operator: who may create, put, get, ack, subscribe, grant, drop and
-- see what, for queues, instances and components; and that no application
-- role needs or holds any right on the extension's tables.
--
\i test/lib/regress_helpers.sql

CREATE ROLE sec_tenant_a;
CREATE ROLE sec_tenant_b;
CREATE ROLE sec_producer;
CREATE ROLE sec_ops;
CREATE ROLE sec_stranger;
GRANT USAGE ON SCHEMA rmsg TO sec_tenant_a, sec_tenant_b, sec_producer, sec_ops;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval),
                          rmsg.create_instance(text, jsonb) TO sec_tenant_a, sec_tenant_b;

-- Nobody but the owner holds a right on any table or sequence of ours
SELECT count(*) AS rights_on_tables
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'rmsg'::regnamespace AND c.relkind IN ('r', 'S')
   AND a.grantee <> c.relowner;
-- what PUBLIC may execute: not the create functions, the maintenance or the
-- statistics functions
SELECT p.proname
  FROM pg_proc p
 WHERE p.pronamespace = 'rmsg'::regnamespace
   AND NOT has_function_privilege('sec_stranger', p.oid, 'EXECUTE')
 ORDER BY 1;

------------------------------------------------------------------------------
-- Queues
------------------------------------------------------------------------------

-- creating takes EXECUTE on create_queue
SET ROLE sec_producer;
SELECT sqlstate_of($$SELECT rmsg.create_queue('sec_p')$$);
RESET ROLE;

SET ROLE sec_tenant_a;
SELECT rmsg.create_queue('sec_a');
SELECT rmsg.put('sec_a', 'a-secret'::text) > 0 AS put_by_owner;
SELECT queue, ready, owner FROM rmsg.queues WHERE queue LIKE 'sec\_%';
RESET ROLE;

-- tenant b sees nothing of a's queue, and can do nothing with it
SET ROLE sec_tenant_b;
SELECT rmsg.create_queue('sec_b');
SELECT queue FROM rmsg.queues WHERE queue LIKE 'sec\_%';
SELECT sqlstate_of($$SELECT rmsg.put('sec_a', 'b'::text)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('sec_a')$$);
SELECT sqlstate_of($$SELECT rmsg.drop_queue('sec_a')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'sec_tenant_b', 'all')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('sec_a', 'pg_catalog.length(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY['sec_b', 'sec_a'], 'x'::bytea)$$);
-- a cheap function of b's in a query on the views is given only the rows
-- the view shows b (the views are security barriers): it never sees sec_a
CREATE FUNCTION pg_temp.peek(t text, secret text) RETURNS boolean LANGUAGE plpgsql
  COST 0.0000001 AS $$
BEGIN
  IF t LIKE secret THEN RAISE NOTICE 'peeked at %', t; END IF;
  RETURN true;
END $$;
SELECT count(*) AS seen FROM rmsg.queues WHERE pg_temp.peek(queue, 'sec_a');
SELECT count(*) AS seen FROM rmsg.privileges WHERE pg_temp.peek(object, 'sec_a');
-- a dead-letter queue takes dead letters and cannot be dropped while named:
-- naming one takes manage on it
SELECT sqlstate_of($$SELECT rmsg.create_queue('sec_b2', dead_letter_queue => 'sec_a')$$);
RESET ROLE;
-- a's message, by id: not there for b (ack, nack, extend: false; forward: 02000)
SELECT msg_id AS sec_a_msg FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'sec_a' \gset
SET ROLE sec_tenant_b;
SELECT rmsg.ack(:sec_a_msg) AS ack, rmsg.nack(:sec_a_msg) AS nack,
       rmsg.extend(:sec_a_msg, '1 minute') AS extend, rmsg.ack(ARRAY[:sec_a_msg]::bigint[]) AS ack_many;
SELECT regexp_replace(sqlstate_of(format('SELECT rmsg.forward(%s, %L)', :sec_a_msg, 'sec_b')),
                      '[0-9]+ does', 'N does') AS forward;
RESET ROLE;
-- a's message is untouched
SELECT convert_from(inline_data, 'UTF8') AS payload, coalesce(l.deliveries, 0) AS deliveries,
       l.lease_until IS NULL AS not_leased
  FROM rmsg.message LEFT JOIN rmsg.lease l USING (msg_id) WHERE msg_id = :sec_a_msg;

-- a grants b get; b may now get, but not put or manage
SET ROLE sec_tenant_a;
SELECT rmsg.grant_queue('sec_a', 'sec_tenant_b', 'get');
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT rmsg.has_queue_privilege('sec_a', 'get') AS get, rmsg.has_queue_privilege('sec_a', 'put') AS put,
       rmsg.has_queue_privilege('sec_a', 'manage') AS manage, rmsg.has_queue_privilege('nope', 'get') AS none;
SELECT queue, ready FROM rmsg.queues WHERE queue LIKE 'sec\_%' ORDER BY queue;
SELECT convert_from(payload, 'UTF8') AS payload FROM rmsg.get('sec_a');
SELECT sqlstate_of($$SELECT rmsg.put('sec_a', 'b'::text)$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'sec_stranger', 'get')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('sec_b2', dead_letter_queue => 'sec_a')$$);
-- forwarding takes get on the source and put on the target
SELECT rmsg.forward(:sec_a_msg, 'sec_b') > 0 AS forwarded;
RESET ROLE;

-- the producer gets put only; manage lets a role grant and drop
SET ROLE sec_tenant_a;
SELECT rmsg.grant_queue('sec_a', 'sec_producer', 'put'),
       rmsg.grant_queue('sec_a', 'sec_ops', 'manage');
RESET ROLE;
SET ROLE sec_producer;
SELECT rmsg.put('sec_a', 'from producer'::text) > 0 AS put;
SELECT sqlstate_of($$SELECT * FROM rmsg.get('sec_a')$$);
SELECT queue FROM rmsg.queues WHERE queue LIKE 'sec\_%';
RESET ROLE;
SET ROLE sec_ops;
SELECT rmsg.grant_queue('sec_a', 'sec_producer', 'get');
SELECT kind, object, owner, grantee, privilege FROM rmsg.privileges
 WHERE object = 'sec_a' ORDER BY grantee::text, privilege;
RESET ROLE;
-- a producer sees its own grants, not which other roles share the queue;
-- whoever manages it sees them all
SET ROLE sec_producer;
SELECT kind, object, owner, grantee, privilege FROM rmsg.privileges
 WHERE object = 'sec_a' ORDER BY grantee::text, privilege;
RESET ROLE;

-- dedup = 'content' shares payloads among one owner's queues only, and only
-- a role that manages a queue (or reads all statistics) sees its byte
-- counters: neither tells a producer whether another put the same data
SET ROLE sec_tenant_a;
SELECT rmsg.create_queue('sec_ca', dedup => 'content');
SELECT rmsg.put('sec_ca', convert_to(repeat('shared?', 200), 'UTF8')) AS in_a \gset
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT rmsg.create_queue('sec_cb', dedup => 'content');
SELECT rmsg.put('sec_cb', convert_to(repeat('shared?', 200), 'UTF8')) AS in_b \gset
RESET ROLE;
SELECT (SELECT payload_id FROM rmsg.message WHERE msg_id = :in_a)
    <> (SELECT payload_id FROM rmsg.message WHERE msg_id = :in_b) AS not_shared_across_owners;
SET ROLE sec_producer;
SELECT queue, bytes_written, bytes_referenced, stale_receipts FROM rmsg.queues WHERE queue = 'sec_a';
RESET ROLE;
SET ROLE sec_ops;
SELECT queue, bytes_written IS NOT NULL AS counted FROM rmsg.queues WHERE queue = 'sec_a';
RESET ROLE;

-- revoking takes effect at once, also in a backend that cached the list
SET ROLE sec_tenant_b;
SELECT rmsg.has_queue_privilege('sec_a', 'get') AS get_before;
RESET ROLE;
SET ROLE sec_ops;
SELECT rmsg.revoke_queue('sec_a', 'sec_tenant_b', 'get');
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT rmsg.has_queue_privilege('sec_a', 'get') AS get_after;
SELECT sqlstate_of($$SELECT * FROM rmsg.get('sec_a')$$);
RESET ROLE;

-- bad grants: 22023 (privilege names), 22004 (NULLs), 42704 (queue), 42501
SET ROLE sec_tenant_a;
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'sec_tenant_b', 'read')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'sec_tenant_b', 'deliver')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'sec_tenant_b', '')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', NULL, 'get')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'sec_tenant_b', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_nope', 'sec_tenant_b', 'get')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_queue('sec_a', 'no_such_role', 'get')$$);
-- privilege names in any case, with spaces, and all
SELECT rmsg.grant_queue('sec_a', 'sec_stranger', ' GET ,Put');
SELECT rmsg.has_queue_privilege('sec_stranger', 'sec_a', 'put') AS put,
       rmsg.has_queue_privilege('sec_stranger', 'sec_a', 'manage') AS manage;
SELECT rmsg.revoke_queue('sec_a', 'sec_stranger', 'all');
SELECT rmsg.has_queue_privilege('sec_stranger', 'sec_a', 'put, get, manage') AS any;
RESET ROLE;

-- a role that is a member of a granted role has its privileges
CREATE ROLE sec_member IN ROLE sec_tenant_b;
SET ROLE sec_member;
SELECT rmsg.has_queue_privilege('sec_b', 'put, get, manage') AS owner_rights_by_membership;
RESET ROLE;
DROP ROLE sec_member;

-- an operator with pg_read_all_stats sees every queue, and the statistics
GRANT pg_read_all_stats TO sec_ops;
SET ROLE sec_ops;
SELECT queue FROM rmsg.queues WHERE queue LIKE 'sec\_%' ORDER BY queue;
SELECT count(*) >= 0 AS stats FROM rmsg.log_stats;
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT sqlstate_of($$SELECT * FROM rmsg.log_stats$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.stat_queues()$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.worker$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.called_components$$);
SELECT sqlstate_of($$SELECT rmsg.collect_payloads()$$);
RESET ROLE;

------------------------------------------------------------------------------
-- Handlers
------------------------------------------------------------------------------

-- (the workers serve another database: each registration warns so)
CREATE FUNCTION sec_handler(p bytea) RETURNS void LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION sec_instance_handler(i text, p bytea) RETURNS void LANGUAGE sql AS 'SELECT 1';
SET ROLE sec_tenant_b;
-- subscribing takes manage and get on the queue
SELECT sqlstate_of($$SELECT rmsg.subscribe('sec_a', 'sec_handler(bytea)')$$);
SELECT rmsg.subscribe('sec_b', 'sec_handler(bytea)');
SELECT kind, target, owner FROM rmsg.handlers WHERE target LIKE 'sec%';
-- a producer does not see the handler, nor the errors it logged
SELECT rmsg.grant_queue('sec_b', 'sec_producer', 'put');
SET ROLE sec_producer;
SELECT count(*) AS handlers_seen FROM rmsg.handlers WHERE target = 'sec_b';
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT rmsg.revoke_queue('sec_b', 'sec_producer', 'put');
-- each role has its own handler for a prefix, which takes only the
-- instances that role may receive: a's handler for b's prefix neither
-- displaces b's nor sees b's instances, and a removes only its own
SELECT rmsg.set_handler('sec-b-', 'sec_instance_handler(text,bytea)');
RESET ROLE;
SET ROLE sec_tenant_a;
SELECT rmsg.set_handler('sec-b-', 'sec_instance_handler(text,bytea)');
-- a's view of the handlers: its own, neither b's queue nor b's prefix
SELECT kind, target, owner FROM rmsg.handlers WHERE target LIKE 'sec%';
SELECT count(*) AS seen FROM rmsg.handlers WHERE pg_temp.peek(target, 'sec_b');
SELECT rmsg.remove_handler('sec-b-');
SELECT sqlstate_of($$SELECT rmsg.remove_handler('sec-b-')$$);
RESET ROLE;
DROP FUNCTION pg_temp.peek(text, text);
SET ROLE sec_tenant_b;
SELECT kind, target, owner FROM rmsg.handlers WHERE target LIKE 'sec%';
SELECT rmsg.remove_handler('sec-b-'), rmsg.unsubscribe('sec_b');
RESET ROLE;

------------------------------------------------------------------------------
-- Instances
------------------------------------------------------------------------------

SET ROLE sec_tenant_a;
SELECT rmsg.create_instance('sec-a-1');
SELECT msg_id > 0 AS delivered FROM rmsg.deliver('sec-a-1', 'a'::bytea);
SELECT instance, ready, owner FROM rmsg.instances WHERE instance LIKE 'sec-%';
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT instance FROM rmsg.instances WHERE instance LIKE 'sec-%';
SELECT sqlstate_of($$SELECT * FROM rmsg.deliver('sec-a-1', 'b'::bytea)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.receive('sec-a-1')$$);
SELECT sqlstate_of($$SELECT rmsg.begin_recovery('sec-a-1')$$);
SELECT sqlstate_of($$SELECT rmsg.complete_recovery('sec-a-1')$$);
SELECT sqlstate_of($$SELECT rmsg.save_state('sec-a-1', '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.load_state('sec-a-1')$$);
SELECT sqlstate_of($$SELECT rmsg.drop_instance('sec-a-1')$$);
SELECT sqlstate_of($$SELECT rmsg.grant_instance('sec-a-1', 'sec_tenant_b', 'all')$$);
-- receive_any passes over instances b may not receive from
SELECT count(*) AS received FROM rmsg.receive_any(10);
RESET ROLE;
SET ROLE sec_tenant_a;
SELECT rmsg.grant_instance('sec-a-1', 'sec_producer', 'deliver'),
       rmsg.grant_instance('sec-a-1', 'sec_tenant_b', 'receive');
RESET ROLE;
SET ROLE sec_producer;
SELECT disposition FROM rmsg.deliver('sec-a-1', 'p'::bytea);
SELECT sqlstate_of($$SELECT * FROM rmsg.receive('sec-a-1')$$);
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT instance, convert_from(payload, 'UTF8') AS payload FROM rmsg.receive_any(10);
SELECT rmsg.load_state('sec-a-1');
SELECT sqlstate_of($$SELECT rmsg.drop_instance('sec-a-1')$$);
RESET ROLE;

------------------------------------------------------------------------------
-- Components of the contract: a name belongs to the role that first used it
------------------------------------------------------------------------------

SET ROLE sec_tenant_a;
SELECT call_id FROM rmsg.prepare_call('sec-caller', 'sec-callee');
SELECT status FROM rmsg.accept_call('sec-callee', 'sec-caller', 1);
SELECT rmsg.reply('sec-callee', 'sec-caller', 1, 'r');
SELECT rmsg.record_reply('sec-caller', 1, 'r');
SELECT callee, caller, call_id, reply_bytes FROM rmsg.last_calls WHERE callee LIKE 'sec-%';
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT sqlstate_of($$SELECT * FROM rmsg.prepare_call('sec-caller', 'x')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.accept_call('sec-callee', 'sec-caller', 1)$$);
SELECT sqlstate_of($$SELECT rmsg.reply('sec-callee', 'sec-caller', 2, 'r')$$);
SELECT sqlstate_of($$SELECT rmsg.record_reply('sec-caller', 1, 'r')$$);
SELECT sqlstate_of($$SELECT rmsg.checkpoint('sec-caller', '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.restart('sec-caller')$$);
SELECT sqlstate_of($$SELECT rmsg.force_log('sec-caller')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.replay('sec-caller')$$);
SELECT callee, caller, call_id, reply_bytes FROM rmsg.last_calls WHERE callee LIKE 'sec-%';
SELECT caller FROM rmsg.callers WHERE caller LIKE 'sec-%';
-- a name nobody used is b's to take
SELECT call_id FROM rmsg.prepare_call('sec-b-caller', 'sec-callee');
RESET ROLE;
SET ROLE sec_tenant_a;
SELECT rmsg.grant_component('sec-callee', 'sec_tenant_b', 'use');
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT status FROM rmsg.accept_call('sec-callee', 'sec-b-caller', 1);
SELECT kind, object, owner, grantee, privilege FROM rmsg.privileges
 WHERE kind = 'component' ORDER BY object;
RESET ROLE;
SELECT name, owner FROM rmsg.component WHERE name LIKE 'sec-%' ORDER BY name;

------------------------------------------------------------------------------
-- Owners: giving an object away, as ALTER ... OWNER TO
------------------------------------------------------------------------------

-- b took the caller name 'sec-b-caller' first; a may not take it from b
SET ROLE sec_tenant_a;
SELECT sqlstate_of($$SELECT rmsg.alter_component_owner('sec-b-caller', 'sec_tenant_a')$$);
-- nor give its own queue to a role it is not a member of
SELECT sqlstate_of($$SELECT rmsg.alter_queue_owner('sec_a', 'sec_tenant_b')$$);
SELECT sqlstate_of($$SELECT rmsg.alter_queue_owner('sec_nope', 'sec_tenant_a')$$);
SELECT sqlstate_of($$SELECT rmsg.alter_queue_owner('sec_a', NULL)$$);
RESET ROLE;
-- a superuser may: b's component goes to a, and a's queue to b, whose grants
-- are now recorded as b's (the producer keeps put, ops keeps manage)
SELECT rmsg.alter_component_owner('sec-b-caller', 'sec_tenant_a'),
       rmsg.alter_queue_owner('sec_a', 'sec_tenant_b');
SELECT name, owner FROM rmsg.component WHERE name = 'sec-b-caller';
SELECT kind, object, owner, grantee, privilege FROM rmsg.privileges
 WHERE object = 'sec_a' ORDER BY grantee::text, privilege;
SET ROLE sec_tenant_a;
SELECT sqlstate_of($$SELECT rmsg.put('sec_a', 'a'::text)$$);
RESET ROLE;
SET ROLE sec_tenant_b;
SELECT rmsg.put('sec_a', 'b owns it now'::text) > 0 AS put_by_new_owner;
-- and b, a member of nothing, gives it back to itself only
SELECT rmsg.alter_queue_owner('sec_a', 'sec_tenant_b');
RESET ROLE;
SELECT rmsg.alter_instance_owner('sec-a-1', 'sec_tenant_b');
SELECT instance, owner FROM rmsg.instances WHERE instance = 'sec-a-1';

------------------------------------------------------------------------------
-- Roles: DROP ROLE, REASSIGN OWNED and DROP OWNED know our objects
------------------------------------------------------------------------------

SET ROLE sec_tenant_b;
SELECT rmsg.set_handler('sec-b-', 'sec_instance_handler(text,bytea)');
RESET ROLE;
-- refused while the role owns, is granted or runs something here (2BP01),
-- once PostgreSQL's own objects no longer refer to it; checked after
-- PostgreSQL's checks, so a role that may not drop roles learns nothing
REVOKE USAGE ON SCHEMA rmsg FROM sec_producer;
DROP ROLE sec_producer;
SET ROLE sec_tenant_a;
DROP ROLE sec_producer;
RESET ROLE;
GRANT USAGE ON SCHEMA rmsg TO sec_producer;
-- REASSIGN OWNED hands b's objects and handler to a
REASSIGN OWNED BY sec_tenant_b TO sec_tenant_a;
SELECT queue, owner FROM rmsg.queues WHERE queue LIKE 'sec\_%' ORDER BY queue;
SELECT instance, owner FROM rmsg.instances WHERE instance = 'sec-a-1';
SELECT kind, target, owner FROM rmsg.handlers WHERE target LIKE 'sec%';
SELECT kind, object, owner, grantee, privilege FROM rmsg.privileges
 WHERE object LIKE 'sec%' ORDER BY kind, object, grantee::text, privilege;
-- DROP OWNED revokes the role's privileges (b still held use on a's
-- component) and drops what it owns
DROP OWNED BY sec_producer, sec_ops, sec_tenant_b;
SELECT kind, object, grantee, privilege FROM rmsg.privileges
 WHERE object LIKE 'sec%' ORDER BY kind, object, grantee::text, privilege;
DROP ROLE sec_producer, sec_ops, sec_tenant_b;
DROP FUNCTION sec_handler(bytea), sec_instance_handler(text, bytea);
-- a's components were called: the called-component table knows them, and
-- forgets them with them, so that a component made later under a name
-- starts afresh
SELECT count(*) > 0 AS known_before FROM rmsg.called_components
 WHERE caller LIKE 'sec-%' OR callee LIKE 'sec-%';
-- a queue of a's that another role's queue sends its dead letters to stops
-- DROP OWNED, as it stops drop_queue (2BP01), and nothing is dropped
SELECT rmsg.create_queue('sec_a_dlq');
SELECT rmsg.alter_queue_owner('sec_a_dlq', 'sec_tenant_a');
SELECT rmsg.create_queue('sec_super_src', dead_letter_queue => 'sec_a_dlq');
\set VERBOSITY sqlstate
DROP OWNED BY sec_tenant_a;
\set VERBOSITY default
DROP OWNED BY sec_tenant_a;
SELECT count(*) AS queues_of_a FROM rmsg.queue WHERE owner::oid = 'sec_tenant_a'::regrole;
SELECT rmsg.drop_queue('sec_super_src');
DROP OWNED BY sec_tenant_a;
SELECT count(*) AS known_after FROM rmsg.called_components
 WHERE caller LIKE 'sec-%' OR callee LIKE 'sec-%';
SELECT count(*) AS left_of_a FROM rmsg.queue WHERE owner::oid = 'sec_tenant_a'::regrole;
SELECT (SELECT count(*) FROM rmsg.instance WHERE name LIKE 'sec-%') AS instances,
       (SELECT count(*) FROM rmsg.component WHERE name LIKE 'sec-%') AS components,
       (SELECT count(*) FROM rmsg.instance_handler WHERE prefix LIKE 'sec%') AS handlers;
DROP ROLE sec_tenant_a, sec_stranger;

------------------------------------------------------------------------------
-- A callee's handler runs as its owner, in the caller's session: never under
-- the caller's search path (pg_catalog, the handler's own schema, then
-- pg_temp), so a function the caller planted is not found before the
-- owner's; and not in a session with temporary objects, whose tables (and
-- their triggers) a handler setting its own path would find first.  A new
-- session: this one made temporary objects above.
------------------------------------------------------------------------------
\c -

CREATE ROLE sec_callee_owner;
CREATE ROLE sec_mallory;
GRANT USAGE ON SCHEMA rmsg TO sec_callee_owner, sec_mallory;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO sec_callee_owner;
CREATE SCHEMA sec_owned AUTHORIZATION sec_callee_owner;
CREATE SCHEMA sec_planted AUTHORIZATION sec_mallory;
SET ROLE sec_callee_owner;
CREATE TABLE sec_owned.charges (caller text, call_id bigint, PRIMARY KEY (caller, call_id));
-- unqualified names, as a handler written under its owner's search path has
SET search_path = sec_owned;
CREATE FUNCTION sec_owned.billing(caller text, call_id bigint, request bytea) RETURNS bytea
  LANGUAGE sql AS $$
  INSERT INTO charges VALUES (caller, call_id)
  RETURNING convert_to(current_setting('search_path'), 'UTF8') $$;
RESET search_path;
SELECT rmsg.set_callee_handler('sec-billing', 'sec_owned.billing(text,bigint,bytea)');
SELECT rmsg.create_queue('sec_owners_q');
SELECT rmsg.grant_component('sec-billing', 'sec_mallory', 'use');
RESET ROLE;
SET ROLE sec_mallory;
-- a convert_to that would run as the handler's owner and grant itself the
-- owner's queue, and a temporary table of the handler's table's name
CREATE FUNCTION sec_planted.convert_to(t text, enc name) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
  PERFORM rmsg.grant_queue('sec_owners_q', 'sec_mallory', 'all');
  RETURN pg_catalog.convert_to(t, enc);
END $$;
GRANT USAGE ON SCHEMA sec_planted TO PUBLIC;
SET search_path = sec_planted, pg_catalog;
SELECT convert_from(rmsg.serve_call('sec-billing', 'sec-m-caller', 1, 'x'), 'UTF8') AS handler_path;
RESET search_path;
SELECT rmsg.has_queue_privilege('sec_owners_q', 'get') AS mallory_may_get;
RESET ROLE;
-- the owner gives the handler a search path of its own, without pg_temp
-- last: PostgreSQL then looks for tables in pg_temp first
SET ROLE sec_callee_owner;
ALTER FUNCTION sec_owned.billing(text, bigint, bytea) SET search_path = sec_owned;
RESET ROLE;
SET ROLE sec_mallory;
-- a temporary table of the handler's table's name, with a trigger that
-- would run as the handler's owner: the session serves no more calls
CREATE TEMP TABLE charges (caller text, call_id bigint);
GRANT ALL ON charges TO PUBLIC;
CREATE FUNCTION pg_temp.seize() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM rmsg.grant_queue('sec_owners_q', 'sec_mallory', 'all');
  RETURN NEW;
END $$;
CREATE TRIGGER seize BEFORE INSERT ON charges FOR EACH ROW EXECUTE FUNCTION pg_temp.seize();
SELECT sqlstate_of($$SELECT rmsg.serve_call('sec-billing', 'sec-m-caller', 2, 'y')$$);
DROP TABLE charges;
SELECT sqlstate_of($$SELECT rmsg.serve_call('sec-billing', 'sec-m-caller', 2, 'y')$$);
SELECT rmsg.has_queue_privilege('sec_owners_q', 'get') AS mallory_may_get;
RESET ROLE;
SELECT caller, call_id FROM sec_owned.charges;

-- DROP OWNED of a caller's name drops that caller's own rows, not the
-- replies other roles' callees keep for it: a replay of call 1 must still
-- be a duplicate for sec-billing, or its work would be done twice
SET ROLE sec_mallory;
SELECT rmsg.force_log('sec-m-caller') IS NOT NULL AS claimed;
RESET ROLE;
SELECT name, owner FROM rmsg.component WHERE name LIKE 'sec-%' ORDER BY name;
DROP OWNED BY sec_mallory;
SET ROLE sec_callee_owner;
SELECT callee, caller, call_id FROM rmsg.last_calls WHERE callee = 'sec-billing';
SELECT status FROM rmsg.accept_call('sec-billing', 'sec-m-caller', 1);
RESET ROLE;

-- a name longer than any object's names no object, and the answer for it
-- is not kept for the name it begins with
SELECT rmsg.create_queue(repeat('q', 63));
SELECT rmsg.has_queue_privilege(repeat('q', 63) || '-x', 'put') AS longer_name;
SELECT rmsg.has_queue_privilege(repeat('q', 63), 'put') AS the_queue;
SELECT rmsg.drop_queue(repeat('q', 63));

DROP OWNED BY sec_callee_owner;
DROP ROLE sec_callee_owner, sec_mallory;

------------------------------------------------------------------------------
-- A callee's handler runs as the role that registered it: DROP ROLE, REASSIGN
-- OWNED and DROP OWNED know it, and it goes with its component (a role that
-- took the name afterwards would have its calls served by it, as that role).
-- A new session again, without temporary objects.
------------------------------------------------------------------------------
\c -

CREATE ROLE sec_desk_owner;
CREATE ROLE sec_setter;
CREATE ROLE sec_heir;
GRANT USAGE ON SCHEMA rmsg TO sec_desk_owner, sec_setter, sec_heir;
CREATE FUNCTION public.sec_who(caller text, call_id bigint, request bytea) RETURNS bytea
  LANGUAGE sql AS $$ SELECT convert_to(current_user::text, 'UTF8') $$;
SET ROLE sec_desk_owner;
SELECT rmsg.force_log('sec-desk') IS NOT NULL AS claimed;
SELECT rmsg.grant_component('sec-desk', 'sec_setter', 'all');
RESET ROLE;
SET ROLE sec_setter;
SELECT rmsg.set_callee_handler('sec-desk', 'public.sec_who(text,bigint,bytea)');
RESET ROLE;
SELECT rmsg.revoke_component('sec-desk', 'sec_setter', 'all');
-- the handler still runs as sec_setter: DROP ROLE is refused (once
-- PostgreSQL's own objects no longer refer to the role)
REVOKE USAGE ON SCHEMA rmsg FROM sec_setter;
DROP ROLE sec_setter;
-- REASSIGN OWNED hands it on: calls now run as the heir
REASSIGN OWNED BY sec_setter TO sec_heir;
SELECT callee, owner FROM rmsg.callee_handler WHERE callee = 'sec-desk';
SELECT convert_from(rmsg.serve_call('sec-desk', 'sec-desk-caller', 1, 'x'), 'UTF8') AS ran_as;
-- DROP OWNED removes it
DROP OWNED BY sec_heir;
SELECT count(*) AS desk_handlers FROM rmsg.callee_handler WHERE callee = 'sec-desk';
-- one that another role registered goes with the component
GRANT USAGE ON SCHEMA rmsg TO sec_heir;
SELECT rmsg.grant_component('sec-desk', 'sec_heir', 'all');
SET ROLE sec_heir;
SELECT rmsg.set_callee_handler('sec-desk', 'public.sec_who(text,bigint,bytea)');
RESET ROLE;
DROP OWNED BY sec_desk_owner;
SELECT count(*) AS desk_handlers FROM rmsg.callee_handler WHERE callee = 'sec-desk';
DROP OWNED BY sec_heir;
DROP ROLE sec_desk_owner, sec_setter, sec_heir;
DROP FUNCTION public.sec_who(text, bigint, bytea);

------------------------------------------------------------------------------
-- call: what a caller's server's role needs for serve_call.  With it alone a
-- role serves and answers calls under caller names of its own (made its own
-- on first use), never another role's: replies are kept by caller name, and
-- use would let it forge or pre-empt them
------------------------------------------------------------------------------

CREATE ROLE sec_bill_owner;
CREATE ROLE sec_shop1;
CREATE ROLE sec_shop2;
GRANT USAGE ON SCHEMA rmsg TO sec_bill_owner, sec_shop1, sec_shop2;
CREATE FUNCTION public.sec_echo(caller text, call_id bigint, request bytea) RETURNS bytea
  LANGUAGE sql AS $$ SELECT request $$;
SET ROLE sec_bill_owner;
SELECT rmsg.set_callee_handler('sec-bill', 'public.sec_echo(text,bigint,bytea)');
SELECT rmsg.grant_component('sec-bill', 'sec_shop1', 'call');
SELECT rmsg.grant_component('sec-bill', 'sec_shop2', 'call');
RESET ROLE;
SET ROLE sec_shop1;
SELECT convert_from(rmsg.serve_call('sec-bill', 'sec-shop1', 1, 'order 1'), 'UTF8') AS reply;
RESET ROLE;
SET ROLE sec_shop2;
-- shop2 may neither answer nor call under shop1's caller name
SELECT sqlstate_of($$SELECT rmsg.reply('sec-bill', 'sec-shop1', 2, 'forged')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.accept_call('sec-bill', 'sec-shop1', 1)$$);
SELECT sqlstate_of($$SELECT rmsg.serve_call('sec-bill', 'sec-shop1', 2, 'pre-empted')$$);
-- its own calls it serves
SELECT convert_from(rmsg.serve_call('sec-bill', 'sec-shop2', 1, 'order A'), 'UTF8') AS reply;
SELECT rmsg.has_component_privilege('sec-bill', 'call') AS may_call,
       rmsg.has_component_privilege('sec-bill', 'use') AS may_use;
-- a caller sees its own grant, not the callee's other callers
SELECT kind, object, grantee, privilege FROM rmsg.privileges
 WHERE object = 'sec-bill' ORDER BY grantee::text;
RESET ROLE;
SELECT kind, object, grantee, privilege FROM rmsg.privileges
 WHERE object = 'sec-bill' ORDER BY grantee::text;
SELECT callee, caller, call_id, convert_from(reply, 'UTF8') AS reply
  FROM rmsg.last_call WHERE callee = 'sec-bill' ORDER BY caller;
SELECT name, owner FROM rmsg.component WHERE name LIKE 'sec-%' ORDER BY name;
-- a caller's name whose role was dropped keeps its replies at the callee:
-- a role that may only call cannot take the name over, or it would read
-- them, or be served them in place of its own calls' work
DROP OWNED BY sec_shop1;
SET ROLE sec_shop2;
SELECT sqlstate_of($$SELECT * FROM rmsg.accept_call('sec-bill', 'sec-shop1', 1)$$);
RESET ROLE;

-- the session's settings that change what SQL means do not reach a
-- handler (a handler that escapes quotes by doubling them relies on
-- standard_conforming_strings), and a handler in a schema named $user
-- (which a search path cannot name) gets pg_catalog and pg_temp alone
CREATE FUNCTION public.sec_settings(caller text, call_id bigint, request bytea) RETURNS bytea
  LANGUAGE sql AS $$
  SELECT convert_to(current_setting('standard_conforming_strings') || ' '
                    || current_setting('transform_null_equals') || ' '
                    || current_setting('bytea_output'), 'UTF8') $$;
CREATE SCHEMA "$user";
CREATE FUNCTION "$user".sec_path(caller text, call_id bigint, request bytea) RETURNS bytea
  LANGUAGE sql AS $$ SELECT convert_to(current_setting('search_path'), 'UTF8') $$;
GRANT USAGE ON SCHEMA "$user" TO PUBLIC;
SET ROLE sec_bill_owner;
SELECT rmsg.set_callee_handler('sec-settings', 'public.sec_settings(text,bigint,bytea)');
SELECT rmsg.set_callee_handler('sec-path', '"$user".sec_path(text,bigint,bytea)');
SELECT rmsg.grant_component('sec-settings', 'sec_shop2', 'call');
SELECT rmsg.grant_component('sec-path', 'sec_shop2', 'call');
RESET ROLE;
SET ROLE sec_shop2;
SET standard_conforming_strings = off;
SET transform_null_equals = on;
SET bytea_output = escape;
SELECT convert_from(rmsg.serve_call('sec-settings', 'sec-shop2', 1, 'x'), 'UTF8') AS handler_settings;
RESET standard_conforming_strings;
RESET transform_null_equals;
RESET bytea_output;
SELECT convert_from(rmsg.serve_call('sec-path', 'sec-shop2', 1, 'x'), 'UTF8') AS handler_path;
RESET ROLE;
DROP OWNED BY sec_bill_owner, sec_shop1, sec_shop2;
DROP ROLE sec_bill_owner, sec_shop1, sec_shop2;
DROP FUNCTION public.sec_echo(text, bigint, bytea), public.sec_settings(text, bigint, bytea);
DROP SCHEMA "$user" CASCADE;
