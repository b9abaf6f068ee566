\echo Use "ALTER EXTENSION recoverable_msg UPDATE TO '1.1'" to load this file. \quit

-- recoverable_msg 1.0 -> 1.1: access control of the extension's own, receipts
-- for leases, data tokens that cannot store the wrong bytes, and checked input.
--
-- In 1.0 a role used the extension through rights on its tables.  From 1.1
-- the tables are the extension's alone: queues, instances and components have
-- owners and privileges of their own (rmsg.grant_queue and its kin), and the
-- functions run their statements as the tables' owner.  So that applications
-- keep working across the update, the rights roles held on the tables become
-- the matching privileges on every queue, instance and component that exists
-- now, and then every right on the tables is revoked (see the end).

------------------------------------------------------------------------------
-- Ids that survive a dump and restore
------------------------------------------------------------------------------

-- pg_dump keeps the state of an extension's sequence only when it is
-- registered with pg_extension_config_dump, which the sequence of an
-- identity column cannot be: after a restore, create_queue and
-- create_instance reused the ids of restored rows (23505).  The identity
-- columns become plain sequences, which continue from where the identity
-- stood.
DO $ids$
DECLARE
    next_queue_id bigint;
    next_instance_id bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_queue_id
      FROM rmsg.queue_queue_id_seq;
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_instance_id
      FROM rmsg.instance_instance_id_seq;
    ALTER TABLE rmsg.queue ALTER COLUMN queue_id DROP IDENTITY;
    ALTER TABLE rmsg.instance ALTER COLUMN instance_id DROP IDENTITY;
    CREATE SEQUENCE rmsg.queue_id_seq AS int;
    CREATE SEQUENCE rmsg.instance_id_seq;
    PERFORM pg_catalog.setval('rmsg.queue_id_seq',
                              greatest(next_queue_id, (SELECT coalesce(max(queue_id), 0) + 1 FROM rmsg.queue)),
                              false);
    PERFORM pg_catalog.setval('rmsg.instance_id_seq',
                              greatest(next_instance_id, (SELECT coalesce(max(instance_id), 0) + 1 FROM rmsg.instance)),
                              false);
END
$ids$;
ALTER TABLE rmsg.queue ALTER COLUMN queue_id SET DEFAULT nextval('rmsg.queue_id_seq');
ALTER SEQUENCE rmsg.queue_id_seq OWNED BY rmsg.queue.queue_id;
ALTER TABLE rmsg.instance ALTER COLUMN instance_id SET DEFAULT nextval('rmsg.instance_id_seq');
ALTER SEQUENCE rmsg.instance_id_seq OWNED BY rmsg.instance.instance_id;
SELECT pg_catalog.pg_extension_config_dump('rmsg.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.instance_id_seq', '');

-- The foreign key from rmsg.queue to itself (a queue's dead-letter queue)
-- makes pg_dump warn of a circular reference on every dump, and a dump
-- restored one INSERT per row fails when a dead-letter queue's row comes
-- after a queue that uses it.  drop_queue and DROP OWNED refuse to drop a
-- queue that another sends its dead letters to, without the key.
DO $fk$
DECLARE
    fk name;
BEGIN
    FOR fk IN SELECT conname FROM pg_catalog.pg_constraint
               WHERE conrelid = 'rmsg.queue'::pg_catalog.regclass
                 AND confrelid = 'rmsg.queue'::pg_catalog.regclass AND contype = 'f'
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE rmsg.queue DROP CONSTRAINT %I', fk);
    END LOOP;
END
$fk$;

------------------------------------------------------------------------------
-- Owners and privileges
------------------------------------------------------------------------------

ALTER TABLE rmsg.queue ADD COLUMN owner regrole, ADD COLUMN acl aclitem[];
UPDATE rmsg.queue
   SET owner = (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'recoverable_msg');
ALTER TABLE rmsg.queue ALTER COLUMN owner SET NOT NULL;

ALTER TABLE rmsg.instance ADD COLUMN owner regrole, ADD COLUMN acl aclitem[];
UPDATE rmsg.instance
   SET owner = (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'recoverable_msg');
ALTER TABLE rmsg.instance ALTER COLUMN owner SET NOT NULL;

-- The committed interaction contract: a component is a caller's or a
-- callee's name, and belongs to the role that first used it.
CREATE TABLE rmsg.component (
    name            text PRIMARY KEY,
    owner           regrole NOT NULL,
    acl             aclitem[],
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rmsg.component IS 'callers and callees of the contract: who owns each name, and who else may use it';
SELECT pg_catalog.pg_extension_config_dump('rmsg.component', '');
REVOKE ALL ON rmsg.component FROM PUBLIC;
INSERT INTO rmsg.component (name, owner)
SELECT n.name, e.extowner::regrole
  FROM (SELECT caller AS name FROM rmsg.caller
        UNION SELECT callee FROM rmsg.last_call
        UNION SELECT callee FROM rmsg.call_log) n,
       pg_catalog.pg_extension e
 WHERE e.extname = 'recoverable_msg';

-- A prefix may have a handler of each role: an instance's messages go to
-- the handler of the longest prefix among those whose role may receive from
-- it, so that no role can take a prefix away from another.
ALTER TABLE rmsg.instance_handler DROP CONSTRAINT instance_handler_pkey,
                                  ADD PRIMARY KEY (prefix, owner);

------------------------------------------------------------------------------
-- create_queue takes a dedup window (before the rights below are granted on it)
------------------------------------------------------------------------------

ALTER TABLE rmsg.queue ADD COLUMN dedup_window interval NOT NULL DEFAULT '5 minutes'
    CHECK (dedup_window > '0');
DROP FUNCTION rmsg.create_queue(text, int, text, text);
CREATE FUNCTION rmsg.create_queue(queue text, max_deliveries int DEFAULT 5,
                                  dead_letter_queue text DEFAULT NULL,
                                  dedup text DEFAULT 'token',
                                  dedup_window interval DEFAULT '5 minutes')
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_create_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.create_queue(text, int, text, text, interval) IS
  'create a queue; messages delivered max_deliveries times without an ack go to dead_letter_queue, or are kept as dead';

------------------------------------------------------------------------------
-- The rights 1.0 gave through the tables become privileges
------------------------------------------------------------------------------

DO $migrate$
DECLARE
    held record;
    grantee_name text;
    owner_name text := pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(
        (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'recoverable_msg')));
    planted text;
BEGIN
    -- A trigger on our tables would run, from 1.1 on, as the tables' owner (a
    -- superuser) inside every function of the extension: 1.0 let roles with
    -- the TRIGGER right add one.  No trigger of ours exists; refuse any other.
    SELECT string_agg(format('%s on rmsg.%s', t.tgname, c.relname), ', ')
      INTO planted
      FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'rmsg'::regnamespace AND NOT t.tgisinternal;
    IF planted IS NOT NULL THEN
        RAISE EXCEPTION 'the tables of recoverable_msg have triggers: %', planted
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'From version 1.1 the extension''s statements run as the tables'' owner, and so would these triggers.',
                  HINT = 'Drop the triggers, then run ALTER EXTENSION recoverable_msg UPDATE again.';
    END IF;

    -- In 1.0 a role that could write rmsg.subscription or rmsg.instance_handler
    -- could name any role as a handler's owner, and the worker would run the
    -- handler as that role.  Where such roles existed, handlers that run as a
    -- superuser cannot be trusted: they are removed (their messages wait) and
    -- must be registered again by whoever owns them.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
                WHERE c.oid IN ('rmsg.subscription'::regclass, 'rmsg.instance_handler'::regclass)
                  AND a.grantee <> c.relowner AND a.privilege_type IN ('INSERT', 'UPDATE')) THEN
        FOR held IN
            SELECT 'queue ' || q.name AS what, s.owner::text AS owner
              FROM rmsg.subscription s JOIN rmsg.queue q USING (queue_id)
              JOIN pg_catalog.pg_roles r ON r.oid = s.owner WHERE r.rolsuper
            UNION ALL
            SELECT 'instance prefix ' || pg_catalog.quote_literal(h.prefix), h.owner::text
              FROM rmsg.instance_handler h JOIN pg_catalog.pg_roles r ON r.oid = h.owner
             WHERE r.rolsuper
        LOOP
            RAISE WARNING 'removing the handler of % that runs as superuser %', held.what, held.owner
                USING DETAIL = 'Under 1.0 other roles could write the handler tables and name any owner.',
                      HINT = 'Register it again with rmsg.subscribe or rmsg.set_handler, as the role it should run as.';
        END LOOP;
        DELETE FROM rmsg.subscription s USING pg_catalog.pg_roles r WHERE r.oid = s.owner AND r.rolsuper;
        DELETE FROM rmsg.instance_handler h USING pg_catalog.pg_roles r WHERE r.oid = h.owner AND r.rolsuper;
    END IF;

    -- Per role (0: PUBLIC) that held rights on our tables: what those rights
    -- let it do in 1.0, each right a privilege only with the others it needed
    -- (taking a message took SELECT, UPDATE and DELETE on rmsg.message, say).
    FOR held IN
        WITH rights AS (
            SELECT a.grantee, c.relname, a.privilege_type AS priv
              FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.relnamespace = 'rmsg'::regnamespace AND a.grantee <> c.relowner),
        has AS (
            SELECT grantee, array_agg(relname || '.' || priv) AS r FROM rights GROUP BY grantee)
        SELECT grantee,
               nullif(concat(
                   CASE WHEN r @> '{message.INSERT}' THEN 'a' END,
                   CASE WHEN r @> '{message.SELECT,message.UPDATE,message.DELETE}' THEN 'r' END,
                   CASE WHEN r @> '{queue.SELECT,queue.DELETE,message.DELETE}' THEN 'w' END), '') AS queue_rights,
               nullif(concat(
                   CASE WHEN r @> '{instance_message.INSERT}' THEN 'a' END,
                   CASE WHEN r @> '{instance_message.SELECT,instance_message.UPDATE,instance_message.DELETE}' THEN 'r' END,
                   CASE WHEN r @> '{instance.SELECT,instance.DELETE,instance_message.DELETE}' THEN 'w' END), '') AS instance_rights,
               (r @> '{caller.SELECT,caller.UPDATE}' OR r @> '{last_call.SELECT,last_call.INSERT}') AS use_component,
               r @> '{queue.INSERT}' AS create_queue,
               r @> '{instance.INSERT}' AS create_instance
          FROM has
    LOOP
        grantee_name := CASE WHEN held.grantee = 0 THEN ''
                             ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(held.grantee)) END;
        IF held.queue_rights IS NOT NULL THEN
            UPDATE rmsg.queue
               SET acl = coalesce(acl, '{}') ||
                         format('%s=%s/%s', grantee_name, held.queue_rights, owner_name)::aclitem;
        END IF;
        IF held.instance_rights IS NOT NULL THEN
            UPDATE rmsg.instance
               SET acl = coalesce(acl, '{}') ||
                         format('%s=%s/%s', grantee_name, held.instance_rights, owner_name)::aclitem;
        END IF;
        IF held.use_component THEN
            UPDATE rmsg.component
               SET acl = coalesce(acl, '{}') || format('%s=r/%s', grantee_name, owner_name)::aclitem;
        END IF;

        grantee_name := CASE WHEN held.grantee = 0 THEN 'PUBLIC' ELSE grantee_name END;
        IF held.create_queue THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO %s',
                           grantee_name);
        END IF;
        IF held.create_instance THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION rmsg.create_instance(text, jsonb) TO %s',
                           grantee_name);
        END IF;
    END LOOP;

    -- No role but the owner keeps any right on the tables and sequences.
    FOR held IN
        SELECT DISTINCT c.oid::regclass AS rel, a.grantee
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.relnamespace = 'rmsg'::regnamespace AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', held.rel,
                       CASE WHEN held.grantee = 0 THEN 'PUBLIC'
                            ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(held.grantee)) END);
    END LOOP;
END
$migrate$;

------------------------------------------------------------------------------
-- Functions whose results or arguments changed
------------------------------------------------------------------------------

DROP FUNCTION rmsg.get(text, int, interval, interval);
CREATE FUNCTION rmsg.get(queue text, max int DEFAULT 1,
                         visibility interval DEFAULT '30 seconds',
                         wait interval DEFAULT NULL)
RETURNS TABLE (msg_id bigint, payload bytea, headers jsonb, deliveries int,
               enqueued_at timestamptz, data_token bigint, receipt bigint)
AS 'MODULE_PATHNAME', 'rmsg_get'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
COMMENT ON FUNCTION rmsg.get(text, int, interval, interval) IS
  'take up to max ready messages, invisible to others for visibility; with wait, block until one is ready. receipt names each lease';

CREATE FUNCTION rmsg.ack(msg_id bigint, receipt bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_ack_receipt'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.ack(bigint, bigint) IS
  'remove a message while the lease its receipt names holds; false when that lease is gone (a NULL receipt acks without one)';

CREATE FUNCTION rmsg.ack(msg_ids bigint[], receipts bigint[])
RETURNS int
AS 'MODULE_PATHNAME', 'rmsg_ack_many_receipts'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.ack(bigint[], bigint[]) IS
  'remove several messages, each while the lease of the receipt in the same position holds; returns how many went';

DROP FUNCTION rmsg.nack(bigint, interval);
CREATE FUNCTION rmsg.nack(msg_id bigint, delay interval DEFAULT NULL, receipt bigint DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_nack'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.nack(bigint, interval, bigint) IS
  'give a delivered message back: ready again after delay (default at once); false when it is not in flight (under the receipt''s lease, when given)';

DROP FUNCTION rmsg.extend(bigint, interval);
CREATE FUNCTION rmsg.extend(msg_id bigint, visibility interval, receipt bigint DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_extend'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.extend(bigint, interval, bigint) IS
  'keep a delivered message invisible for visibility from now; false when it is not in flight (under the receipt''s lease, when given)';

DROP FUNCTION rmsg.receive(text, int, interval);
CREATE FUNCTION rmsg.receive(instance text, max int DEFAULT 1,
                             visibility interval DEFAULT '30 seconds')
RETURNS TABLE(msg_id bigint, kind text, payload bytea, headers jsonb, deliveries int,
              receipt bigint)
AS 'MODULE_PATHNAME', 'rmsg_receive'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.receive(text, int, interval) IS
  'lease up to max messages from the head of an instance''s line, unless some are in flight; in recovery only recovery messages';

DROP FUNCTION rmsg.receive_any(int, interval);
CREATE FUNCTION rmsg.receive_any(max int DEFAULT 1,
                                 visibility interval DEFAULT '30 seconds')
RETURNS TABLE(instance text, msg_id bigint, kind text, payload bytea, headers jsonb,
              deliveries int, receipt bigint)
AS 'MODULE_PATHNAME', 'rmsg_receive_any'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.receive_any(int, interval) IS
  'lease the next message of up to max instances that have none in flight and no other receiver, one per instance';

CREATE OR REPLACE FUNCTION rmsg.replay(caller text)
RETURNS TABLE(call_id bigint, callee text, request bytea, reply bytea)
AS 'MODULE_PATHNAME', 'rmsg_replay'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION rmsg.put_with_token(queue text, payload bytea, headers jsonb DEFAULT NULL,
                                    delay interval DEFAULT NULL, data_token bigint DEFAULT NULL,
                                    dedup_id text DEFAULT NULL, group_id text DEFAULT NULL,
                                    priority int DEFAULT 0)
RETURNS TABLE(msg_id bigint, token bigint)
AS 'MODULE_PATHNAME', 'rmsg_put_with_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.put_with_token(text, bytea, jsonb, interval, bigint, text, text, int) IS
  'put a message and hand back, in the same statement, the data token of its data (for clients behind a pooler)';

------------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------------

CREATE FUNCTION rmsg.grant_queue(queue text, role regrole, privileges text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_grant_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.grant_queue(text, regrole, text) IS
  'grant privileges on a queue: put, get (get, ack, nack, extend), manage (drop, subscribe, grant), all';

CREATE FUNCTION rmsg.revoke_queue(queue text, role regrole, privileges text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_revoke_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.revoke_queue(text, regrole, text) IS
  'revoke privileges on a queue granted with rmsg.grant_queue';

CREATE FUNCTION rmsg.grant_instance(instance text, role regrole, privileges text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_grant_instance'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.grant_instance(text, regrole, text) IS
  'grant privileges on an instance: deliver, receive (receive, ack, recovery, state), manage (drop, grant), all';

CREATE FUNCTION rmsg.revoke_instance(instance text, role regrole, privileges text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_revoke_instance'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.revoke_instance(text, regrole, text) IS
  'revoke privileges on an instance granted with rmsg.grant_instance';

CREATE FUNCTION rmsg.grant_component(component text, role regrole, privileges text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_grant_component'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.grant_component(text, regrole, text) IS
  'grant privileges on a caller or callee of the contract: use (call or answer as it), manage (grant), all';

CREATE FUNCTION rmsg.revoke_component(component text, role regrole, privileges text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_revoke_component'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.revoke_component(text, regrole, text) IS
  'revoke privileges on a component granted with rmsg.grant_component';

CREATE FUNCTION rmsg.alter_queue_owner(queue text, owner regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_alter_queue_owner'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.alter_queue_owner(text, regrole) IS
  'give the queue to another role, as ALTER ... OWNER TO: its owner may give it to a role it is a member of';

CREATE FUNCTION rmsg.alter_instance_owner(instance text, owner regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_alter_instance_owner'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.alter_instance_owner(text, regrole) IS
  'give the instance to another role, as ALTER ... OWNER TO: its owner may give it to a role it is a member of';

CREATE FUNCTION rmsg.alter_component_owner(component text, owner regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_alter_component_owner'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.alter_component_owner(text, regrole) IS
  'give the component to another role, as ALTER ... OWNER TO: its owner may give it to a role it is a member of';

CREATE FUNCTION rmsg.has_queue_privilege(queue text, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_has_queue_privilege'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.has_queue_privilege(text, text) IS
  'whether the current role holds any of the privileges named on the queue; NULL when there is no such queue';

CREATE FUNCTION rmsg.has_queue_privilege(role regrole, queue text, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_has_queue_privilege_role'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.has_queue_privilege(regrole, text, text) IS
  'whether the role holds any of the privileges named on the queue; NULL when there is no such queue';

CREATE FUNCTION rmsg.has_instance_privilege(instance text, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_has_instance_privilege'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.has_instance_privilege(text, text) IS
  'whether the current role holds any of the privileges named on the instance; NULL when there is no such instance';

CREATE FUNCTION rmsg.has_instance_privilege(role regrole, instance text, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_has_instance_privilege_role'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.has_instance_privilege(regrole, text, text) IS
  'whether the role holds any of the privileges named on the instance; NULL when there is no such instance';

CREATE FUNCTION rmsg.has_component_privilege(component text, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_has_component_privilege'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.has_component_privilege(text, text) IS
  'whether the current role holds any of the privileges named on the component; NULL when nobody used the name yet';

CREATE FUNCTION rmsg.has_component_privilege(role regrole, component text, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_has_component_privilege_role'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.has_component_privilege(regrole, text, text) IS
  'whether the role holds any of the privileges named on the component; NULL when nobody used the name yet';

-- Making queues and instances, and the maintenance, are for the roles an
-- administrator grants them to.
REVOKE EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rmsg.create_instance(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rmsg.collect_payloads() FROM PUBLIC;

------------------------------------------------------------------------------
-- Operating a queue: pause, resume, purge, redrive
------------------------------------------------------------------------------

ALTER TABLE rmsg.queue ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE rmsg.message ADD COLUMN died_in int;
CREATE FUNCTION rmsg.pause_queue(queue text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_pause_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.pause_queue(text) IS
  'stop handing out the queue''s messages (gets return nothing, the worker dispatches none); puts go on';

CREATE FUNCTION rmsg.resume_queue(queue text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_resume_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.resume_queue(text) IS
  'hand out the messages of a paused queue again, waking its long polls and the worker';

CREATE FUNCTION rmsg.purge_queue(queue text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_purge_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.purge_queue(text) IS
  'delete every message of the queue, ready, delayed, in flight and dead; returns how many';

CREATE FUNCTION rmsg.redrive(dead_letter_queue text, to_queue text DEFAULT NULL,
                             max int DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_redrive'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.redrive(text, text, int) IS
  'send the dead letters a queue holds back to the queues they died in (or to to_queue), ready, with no deliveries; returns how many';

------------------------------------------------------------------------------
-- Idempotent puts and message groups
------------------------------------------------------------------------------

-- Idempotent puts: the dedup_id of each put that gave one, for its queue's
-- dedup_window.  A put whose dedup_id has a key put within the window stores
-- nothing and returns the key's msg_id.  The worker's maintenance removes
-- expired keys (along the put_at index), drop_queue a queue's.
CREATE TABLE rmsg.put_key (
    queue_id        int NOT NULL,
    dedup_id        text NOT NULL,
    msg_id          bigint NOT NULL,
    put_at          timestamptz NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
CREATE INDEX put_key_expiry_idx ON rmsg.put_key (queue_id, put_at);
COMMENT ON TABLE rmsg.put_key IS 'the dedup_ids of recent puts, for idempotent puts';
SELECT pg_catalog.pg_extension_config_dump('rmsg.put_key', '');
REVOKE ALL ON rmsg.put_key FROM PUBLIC;

-- Message groups (queue/groups.c)
ALTER TABLE rmsg.message ADD COLUMN group_id text;
-- For puts, acks and dead letters of grouped messages: a group's head
-- (visible_at before 'infinity'), and its waiting messages in order
-- (queue/groups.c).  visible_at is in the ready index already, so this
-- costs a lease no HOT update.
CREATE INDEX message_group_idx ON rmsg.message (queue_id, group_id, visible_at, msg_id)
    WHERE group_id IS NOT NULL;

-- Priorities (queue/priorities.c): each priority of a queue is a lane of
-- the ready index.  Adding the column writes no row (its default is
-- stored once); the index is built again, which reads the table once.
ALTER TABLE rmsg.message
    ADD COLUMN priority smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9);
DROP INDEX rmsg.message_ready_idx;
-- priority fits in the padding before visible_at: entries are no larger.
CREATE INDEX message_ready_idx ON rmsg.message (queue_id, priority, visible_at, msg_id);
DROP FUNCTION rmsg.put_batch(text, bytea[], jsonb);
CREATE FUNCTION rmsg.put_batch(queue text, payloads bytea[], headers jsonb DEFAULT NULL,
                               group_id text DEFAULT NULL, priority int DEFAULT 0)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'rmsg_put_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION rmsg.put_batch(text, bytea[], jsonb, text, int) IS
  'put one message per array element in one statement; returns the msg_ids in array order';

DROP FUNCTION rmsg.forward(bigint, text);
CREATE FUNCTION rmsg.forward(msg_id bigint, queue text, group_id text DEFAULT NULL,
                             priority int DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_forward'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.forward(bigint, text, text, int) IS
  'put the data and headers of an existing message to queue, by reference; returns the new msg_id';

DROP FUNCTION rmsg.put_many(text[], bytea, jsonb);
CREATE FUNCTION rmsg.put_many(queues text[], payload bytea, headers jsonb DEFAULT NULL,
                              group_id text DEFAULT NULL, priority int DEFAULT 0)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'rmsg_put_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 8;
COMMENT ON FUNCTION rmsg.put_many(text[], bytea, jsonb, text, int) IS
  'put the same payload to every queue of the array, data written once; returns the msg_ids in array order';

DROP FUNCTION rmsg.put(text, bytea, jsonb, interval, bigint);
DROP FUNCTION rmsg.put(text, text, jsonb, interval, bigint);
DROP FUNCTION rmsg.put(text, jsonb, jsonb, interval, bigint);
CREATE FUNCTION rmsg.put(queue text, payload bytea, headers jsonb DEFAULT NULL,
                         delay interval DEFAULT NULL, data_token bigint DEFAULT NULL,
                         dedup_id text DEFAULT NULL, group_id text DEFAULT NULL,
                         priority int DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_put'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.put(text, bytea, jsonb, interval, bigint, text, text, int) IS
  'put a message; returns its msg_id, unique across all queues. With data_token (data this session put or got), the data is referenced, not written again; payload may then be NULL. With dedup_id, a repeat within the queue''s dedup_window stores nothing and returns the first msg_id. With group_id, the group''s messages are handed out one at a time, in order. Ready messages of a higher priority (0 to 9) are handed out first';

CREATE FUNCTION rmsg.put(queue text, payload text, headers jsonb DEFAULT NULL,
                         delay interval DEFAULT NULL, data_token bigint DEFAULT NULL,
                         dedup_id text DEFAULT NULL, group_id text DEFAULT NULL,
                         priority int DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_put_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.put(text, text, jsonb, interval, bigint, text, text, int) IS
  'put a text message, stored as its bytes in the database encoding';

CREATE FUNCTION rmsg.put(queue text, payload jsonb, headers jsonb DEFAULT NULL,
                         delay interval DEFAULT NULL, data_token bigint DEFAULT NULL,
                         dedup_id text DEFAULT NULL, group_id text DEFAULT NULL,
                         priority int DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_put_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.put(text, jsonb, jsonb, interval, bigint, text, text, int) IS
  'put a jsonb message, stored as the bytes of its text form';

------------------------------------------------------------------------------
-- Monitoring: the stat_* functions are for monitoring roles; the views show
-- each role what it may see
------------------------------------------------------------------------------

DROP VIEW rmsg.log_stats;
DROP FUNCTION rmsg.stat_log();
CREATE FUNCTION rmsg.stat_log(
    OUT forces bigint, OUT forces_avoided bigint,
    OUT payload_bytes_written bigint, OUT payload_bytes_referenced bigint,
    OUT puts_written bigint, OUT puts_referenced bigint,
    OUT payloads_collected bigint, OUT stats_since timestamptz,
    OUT stale_receipts bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_stat_log'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.stat_log() IS 'the counters behind rmsg.log_stats';

-- Counters since the server started (stats_since).  forces: WAL flushes
-- the contract made (prepare_call, force_log); forces_avoided: calls sent
-- without a force although the caller's session had a commit not yet
-- flushed, which a caller forcing its log before every send would have made.
CREATE VIEW rmsg.log_stats AS
SELECT s.*,
       (SELECT count(*) FROM rmsg.payload) AS payload_rows
  FROM rmsg.stat_log() s;
COMMENT ON VIEW rmsg.log_stats IS
  'log activity since server start: forces of the contract and those avoided, payload bytes written and referenced instead of written, payload rows collected';

CREATE FUNCTION rmsg.queue_counters(
    OUT queue_id int, OUT bytes_written bigint, OUT bytes_referenced bigint,
    OUT stale_receipts bigint, OUT puts bigint, OUT acks bigint,
    OUT dead_lettered bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_queue_counters'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.queue_counters() IS
  'the counters of the queues the current role may see, behind rmsg.queues';



-- Leases out of the message row (queue/lease_rows.c).  The lease of every
-- message delivered at least once moves to rmsg.lease; after the view
-- below stops reading them, the message table loses the two columns and
-- its fillfactor: a message row no longer changes while it waits or is
-- leased, so its pages are filled.  Rows already written keep their
-- layout until they are written again.
CREATE TABLE rmsg.lease (
    msg_id          bigint PRIMARY KEY,
    deliveries      int NOT NULL,
    lease_until     timestamptz
) WITH (fillfactor = 80);
COMMENT ON TABLE rmsg.lease IS 'how often each queue message was delivered, and until when its lease runs';
SELECT pg_catalog.pg_extension_config_dump('rmsg.lease', '');
INSERT INTO rmsg.lease (msg_id, deliveries, lease_until)
SELECT msg_id, deliveries, lease_until FROM rmsg.message
 WHERE deliveries > 0 OR lease_until IS NOT NULL;

-- One scan of a queue's messages: ready (visible now), in flight (delivered,
-- lease running), delayed (put or nacked with a delay that has not passed),
-- and of its groups: how many have a message in flight, how many messages
-- wait for their group's turn.
CREATE OR REPLACE VIEW rmsg.queues WITH (security_barrier) AS
SELECT q.name AS queue,
       coalesce(m.ready, 0) AS ready,
       coalesce(m.in_flight, 0) AS in_flight,
       coalesce(m.delayed, 0) AS delayed,
       coalesce(d.dead, 0) AS dead,
       m.oldest_ready_age,
       q.max_deliveries,
       dlq.name AS dead_letter_queue,
       q.dedup,
       coalesce(m.bytes, 0) AS payload_bytes,
       q.created_at,
       st.bytes_written,
       st.bytes_referenced,
       q.owner,
       st.stale_receipts,
       q.paused,
       st.puts,
       st.acks,
       st.dead_lettered,
       coalesce(m.groups_in_flight, 0) AS groups_in_flight,
       coalesce(m.group_waiting, 0) AS group_waiting
  FROM rmsg.queue q
  LEFT JOIN rmsg.queue dlq ON dlq.queue_id = q.dead_letter_queue_id
  LEFT JOIN rmsg.queue_counters() st ON st.queue_id = q.queue_id
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE mm.visible_at <= now()
                                 AND (l.lease_until IS NULL OR l.lease_until <= now())) AS ready,
               count(*) FILTER (WHERE l.lease_until > now()) AS in_flight,
               count(*) FILTER (WHERE mm.visible_at > now() AND mm.visible_at < 'infinity'
                                 AND (l.lease_until IS NULL OR l.lease_until <= now())) AS delayed,
               now() - min(mm.enqueued_at) FILTER (WHERE mm.visible_at <= now()
                                 AND (l.lease_until IS NULL OR l.lease_until <= now())) AS oldest_ready_age,
               sum(mm.payload_size) AS bytes,
               count(DISTINCT mm.group_id) FILTER (WHERE l.lease_until > now()) AS groups_in_flight,
               count(*) FILTER (WHERE mm.visible_at = 'infinity') AS group_waiting
          FROM rmsg.message mm
          LEFT JOIN rmsg.lease l ON l.msg_id = mm.msg_id
         WHERE mm.queue_id = q.queue_id) m ON true
  LEFT JOIN LATERAL (
        SELECT count(*) AS dead
          FROM rmsg.dead_message dm
         WHERE dm.queue_id = q.queue_id) d ON true
 WHERE rmsg.has_queue_privilege(q.name, 'put, get, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

-- Nothing reads the message row's lease any more.
ALTER TABLE rmsg.message DROP COLUMN deliveries, DROP COLUMN lease_until, RESET (fillfactor);

DROP FUNCTION rmsg.stat_queues();
CREATE FUNCTION rmsg.stat_queues(
    OUT queue_id int, OUT bytes_written bigint, OUT bytes_referenced bigint,
    OUT stale_receipts bigint, OUT puts bigint, OUT acks bigint,
    OUT dead_lettered bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_stat_queues'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.stat_queues() IS 'the counters of every queue of this database, for monitoring roles';

-- One scan of each instance's line.  A normal message of a recovering
-- instance is deferred, whether it arrived before recovery began or since.
CREATE OR REPLACE VIEW rmsg.instances WITH (security_barrier) AS
SELECT i.name AS instance,
       i.mode,
       coalesce(m.ready, 0) AS ready,
       coalesce(m.deferred, 0) AS deferred,
       coalesce(m.in_flight, 0) AS in_flight,
       i.recovery_since,
       m.oldest_age,
       i.state_saved_at,
       i.created_at,
       coalesce(m.recovery_messages, 0) AS recovery_messages,
       i.owner
  FROM rmsg.instance i
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE (mm.lease_until IS NULL OR mm.lease_until <= now())
                                 AND (i.mode = 'normal' OR mm.kind = 'recovery')) AS ready,
               count(*) FILTER (WHERE (mm.lease_until IS NULL OR mm.lease_until <= now())
                                 AND i.mode = 'recovery' AND mm.kind = 'normal') AS deferred,
               count(*) FILTER (WHERE mm.lease_until > now()) AS in_flight,
               count(*) FILTER (WHERE mm.kind = 'recovery') AS recovery_messages,
               now() - min(mm.enqueued_at) AS oldest_age
          FROM rmsg.instance_message mm
         WHERE mm.instance_id = i.instance_id) m ON true
 WHERE rmsg.has_instance_privilege(i.name, 'deliver, receive, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

CREATE OR REPLACE VIEW rmsg.last_calls WITH (security_barrier) AS
SELECT callee, caller, call_id, length(reply) AS reply_bytes, stored_at
  FROM rmsg.last_call
 WHERE rmsg.has_component_privilege(callee, 'use, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

CREATE OR REPLACE VIEW rmsg.callers WITH (security_barrier) AS
SELECT c.caller, c.next_call_id, c.checkpoint_call_id, c.checkpointed_at,
       (SELECT count(*) FROM rmsg.call_log l
         WHERE l.caller = c.caller AND l.call_id > c.checkpoint_call_id) AS logged_calls,
       (SELECT count(*) FROM rmsg.call_log l
         WHERE l.caller = c.caller AND l.reply IS NULL) AS calls_without_reply
  FROM rmsg.caller c
 WHERE rmsg.has_component_privilege(c.caller, 'use, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

-- Flow control in the workers (worker/flow.c)
ALTER TABLE rmsg.subscription ADD COLUMN concurrency int CHECK (concurrency > 0),
                              ADD COLUMN rate numeric CHECK (rate > 0);
DROP FUNCTION rmsg.subscribe(text, regprocedure, int);
CREATE FUNCTION rmsg.subscribe(queue text, handler regprocedure, batch int DEFAULT 1,
                               concurrency int DEFAULT NULL, rate numeric DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.subscribe(text, regprocedure, int, int, numeric) IS
  'have the worker call handler(payload bytea [, headers jsonb [, msg_id bigint]]) for each ready message of queue, up to batch per transaction, at most concurrency at once across the workers and rate per second; replaces the queue''s handler';

-- A queue's handler shows to the roles that may get from or manage the
-- queue (its errors quote messages), an instance prefix's to its role (and
-- the members of it).
CREATE OR REPLACE VIEW rmsg.handlers WITH (security_barrier) AS
-- the arms of a UNION ALL are planned as tables of their own, past the
-- view's barrier: the union is a subquery, so that the barrier holds
SELECT kind, target, handler, batch, owner, errors, last_error, last_error_at, last_error_msg_id, created_at,
       concurrency, rate FROM (
  SELECT 'queue'::text AS kind, q.name AS target, s.handler, s.batch, s.owner,
         s.errors, s.last_error, s.last_error_at, s.last_error_msg_id, s.created_at,
         s.concurrency, s.rate
    FROM rmsg.subscription s JOIN rmsg.queue q USING (queue_id)
   WHERE rmsg.has_queue_privilege(q.name, 'get, manage')
      OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
  UNION ALL
  SELECT 'instance', h.prefix, h.handler, 1, h.owner,
         h.errors, h.last_error, h.last_error_at, h.last_error_msg_id, h.created_at,
         NULL::int, NULL::numeric
    FROM rmsg.instance_handler h
   WHERE pg_catalog.pg_has_role(h.owner, 'USAGE')
      OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
) AS handlers_rows;

-- The privileges granted on the objects the role may see: every grant of
-- an object it may manage (or to a monitoring role), else only its own
-- grants and PUBLIC's.  Tenants sharing a queue or a callee do not learn
-- each other's role names here.
CREATE VIEW rmsg.privileges WITH (security_barrier) AS
-- the arms of a UNION ALL are planned as tables of their own, past the
-- view's barrier: the union is a subquery, so that the barrier holds
SELECT kind, object, owner, grantee, privilege FROM (
  SELECT 'queue'::text AS kind, q.name AS object, q.owner, a.grantee::regrole AS grantee,
         CASE a.privilege_type WHEN 'INSERT' THEN 'put' WHEN 'SELECT' THEN 'get'
                               ELSE 'manage' END AS privilege
    FROM rmsg.queue q, pg_catalog.aclexplode(q.acl) a
   WHERE rmsg.has_queue_privilege(q.name, 'manage')
      OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
      OR (rmsg.has_queue_privilege(q.name, 'put, get')
          AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))
  UNION ALL
  SELECT 'instance', i.name, i.owner, a.grantee::regrole,
         CASE a.privilege_type WHEN 'INSERT' THEN 'deliver' WHEN 'SELECT' THEN 'receive'
                               ELSE 'manage' END
    FROM rmsg.instance i, pg_catalog.aclexplode(i.acl) a
   WHERE rmsg.has_instance_privilege(i.name, 'manage')
      OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
      OR (rmsg.has_instance_privilege(i.name, 'deliver, receive')
          AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))
  UNION ALL
  SELECT 'component', c.name, c.owner, a.grantee::regrole,
         CASE a.privilege_type WHEN 'SELECT' THEN 'use' WHEN 'EXECUTE' THEN 'call'
                               ELSE 'manage' END
    FROM rmsg.component c, pg_catalog.aclexplode(c.acl) a
   WHERE rmsg.has_component_privilege(c.name, 'manage')
      OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
      OR (rmsg.has_component_privilege(c.name, 'use, call')
          AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))
) AS privileges_rows;
COMMENT ON VIEW rmsg.privileges IS
  'the privileges granted on the queues, instances and components the current role may see: all of them where it may manage, else its own and PUBLIC''s (grantee - is PUBLIC); owners hold every privilege';

REVOKE EXECUTE ON FUNCTION rmsg.stat_log(), rmsg.stat_queues(), rmsg.stat_components(),
                           rmsg.stat_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rmsg.stat_log(), rmsg.stat_queues(), rmsg.stat_components(),
                          rmsg.stat_worker() TO pg_read_all_stats;
GRANT SELECT ON rmsg.queues, rmsg.instances, rmsg.last_calls, rmsg.callers,
                rmsg.handlers, rmsg.privileges TO PUBLIC;
GRANT SELECT ON rmsg.log_stats, rmsg.called_components, rmsg.worker TO pg_read_all_stats;

-- The views' figures in the Prometheus text format, for monitoring roles.
CREATE FUNCTION rmsg.metrics()
RETURNS text
AS 'MODULE_PATHNAME', 'rmsg_metrics'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.metrics() IS
  'queue depths by state, oldest ready age, puts, acks, dead letters, instances, workers and contract figures, in the Prometheus text exposition format';
REVOKE EXECUTE ON FUNCTION rmsg.metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rmsg.metrics() TO pg_read_all_stats;

------------------------------------------------------------------------------
-- Between servers (remote/): a remote queue is a local queue whose messages
-- the worker moves, exactly once and in order, to a queue on a foreign
-- server (CREATE SERVER ... FOREIGN DATA WRAPPER postgres_fdw and a user
-- mapping say where and as whom)
------------------------------------------------------------------------------

-- The sending side, one row per remote queue.  channel names this sender to
-- the receiver; next_seq is the sequence number the next message moved
-- gets, acked_seq the last the receiver said it holds.
CREATE TABLE rmsg.remote_queue (
    queue_id        int PRIMARY KEY REFERENCES rmsg.queue (queue_id) ON DELETE CASCADE,
    server          text NOT NULL,
    remote_queue    text NOT NULL,
    channel         text NOT NULL UNIQUE,
    next_seq        bigint NOT NULL DEFAULT 1 CHECK (next_seq > 0),
    acked_seq       bigint NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    last_sent_at    timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    sent_by_reference bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE rmsg.remote_queue IS 'the queues whose messages the worker moves to a queue of a foreign server';

-- Messages given a sequence number and on their way: they left
-- rmsg.message in the transaction that numbered them, with their data:
-- inline data moves here, a payload row stays referenced (and the
-- collector keeps it while a transit row names it).  shared: other
-- messages referenced that payload row when it was numbered, so the
-- receiver is told its key and may be sent it again by reference.
CREATE TABLE rmsg.transit (
    queue_id        int NOT NULL REFERENCES rmsg.remote_queue (queue_id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    msg_id          bigint NOT NULL,
    enqueued_at     timestamptz NOT NULL,
    headers         jsonb,
    data            bytea,
    payload_id      bigint,
    shared          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue_id, seq),
    CHECK ((data IS NULL) <> (payload_id IS NULL))
);
CREATE INDEX transit_payload_idx ON rmsg.transit (payload_id) WHERE payload_id IS NOT NULL;
COMMENT ON TABLE rmsg.transit IS 'messages of remote queues numbered and sent, not yet confirmed by the receiver';

-- The key a shared payload row is sent with: a random number, so that
-- no role can name data it was not sent (payload_ids are easy to guess),
-- and a copy of this database that numbers new payload rows from the same
-- point gives them other keys.  Made when the row is first numbered for a
-- remote queue; the collector removes it with its payload row.
CREATE TABLE rmsg.payload_key (
    payload_id      bigint PRIMARY KEY,
    key             bigint NOT NULL CHECK (key > 0)
);
COMMENT ON TABLE rmsg.payload_key IS 'the random key a shared payload row is sent to other servers under';

-- Payload rows whose data a receiver acknowledged with their key: the
-- worker sends the next message that references one as its key alone.
-- A cache: a row missing costs the bytes sent again, a row the receiver
-- no longer backs costs one round (it stops there and the rest goes with
-- bytes).  Not dumped; the collector removes a row with its payload row.
CREATE TABLE rmsg.payload_sent (
    payload_id      bigint NOT NULL,
    server          text NOT NULL,
    owner           oid NOT NULL,
    PRIMARY KEY (payload_id, server, owner)
);
COMMENT ON TABLE rmsg.payload_sent IS 'payload rows a foreign server holds, by key, for the role the worker connects as';

-- The receiving side: the last sequence number taken from each channel
-- of each sending role, and which queue it puts to.  A role's channels
-- are its own: another role's row of the same name never meets them.
CREATE TABLE rmsg.channel_in (
    channel         text NOT NULL,
    sender          regrole NOT NULL,
    queue_id        int NOT NULL,
    last_seq        bigint NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (channel, sender)
);
COMMENT ON TABLE rmsg.channel_in IS 'the last sequence number taken from each sending server''s channel';

-- The receiving side's memory of payloads that came with a key: which
-- payload row here holds the data that the sending role's server (origin)
-- sent under key, so that a later transfer can name it alone.  A role
-- finds only the keys it sent itself.  Not dumped; the collector removes
-- a row with its payload row.
CREATE TABLE rmsg.payload_received (
    sender          oid NOT NULL,
    origin          text NOT NULL,
    key             bigint NOT NULL,
    payload_id      bigint NOT NULL,
    size            int NOT NULL,
    PRIMARY KEY (sender, origin, key)
);
CREATE INDEX payload_received_payload_idx ON rmsg.payload_received (payload_id);
COMMENT ON TABLE rmsg.payload_received IS 'payload rows holding data that a sending server named by key, for the role that sent it';

SELECT pg_catalog.pg_extension_config_dump('rmsg.remote_queue', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.transit', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.channel_in', '');
REVOKE ALL ON rmsg.remote_queue, rmsg.transit, rmsg.channel_in, rmsg.payload_key,
                rmsg.payload_sent, rmsg.payload_received FROM PUBLIC;

CREATE FUNCTION rmsg.create_remote_queue(queue text, server text, remote_queue text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_create_remote_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.create_remote_queue(text, text, text) IS
  'create a queue whose messages the worker moves, exactly once and in order, to remote_queue (default: the same name) on the foreign server';
REVOKE EXECUTE ON FUNCTION rmsg.create_remote_queue(text, text, text) FROM PUBLIC;

CREATE FUNCTION rmsg.accept_transfer(channel text, queue text, first_seq bigint,
                                     payloads bytea[], headers jsonb[],
                                     payload_keys bigint[] DEFAULT NULL,
                                     key_origin text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_accept_transfer'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.accept_transfer(text, text, bigint, bytea[], jsonb[], bigint[], text) IS
  'called by a sending server''s worker: puts the messages numbered first_seq on that the channel has not brought yet (a null payload with a key: the data sent before under that key); returns the last number taken';

CREATE VIEW rmsg.channels WITH (security_barrier) AS
SELECT r.server,
       q.name AS queue,
       r.remote_queue,
       coalesce(m.pending, 0) AS pending,
       coalesce(t.in_transit, 0) AS in_transit,
       r.next_seq - 1 AS last_sent,
       r.acked_seq AS last_acknowledged,
       now() - least(m.oldest, t.oldest) AS lag,
       r.last_sent_at,
       -- what the other server said may name hosts and roles: for managers
       CASE WHEN rmsg.has_queue_privilege(q.name, 'manage')
              OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
            THEN r.last_error END AS last_error,
       r.last_error_at,
       r.channel,
       r.sent_by_reference
  FROM rmsg.remote_queue r
  JOIN rmsg.queue q USING (queue_id)
  LEFT JOIN LATERAL (
        SELECT count(*) AS pending, min(mm.enqueued_at) AS oldest
          FROM rmsg.message mm
         WHERE mm.queue_id = r.queue_id) m ON true
  LEFT JOIN LATERAL (
        SELECT count(*) AS in_transit, min(tt.enqueued_at) AS oldest
          FROM rmsg.transit tt
         WHERE tt.queue_id = r.queue_id) t ON true
 WHERE rmsg.has_queue_privilege(q.name, 'put, get, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');
COMMENT ON VIEW rmsg.channels IS
  'one row per remote queue: messages waiting, in transit, the last sequence number sent and acknowledged, lag and last error';
GRANT SELECT ON rmsg.channels TO PUBLIC;

-- Calls through the extension (remote/call.c, contract/serve.c): rmsg.call
-- does what a caller does by hand (prepare_call, the callee's accept_call,
-- its work and reply in one transaction there, record_reply), reaching the
-- callee's server through a foreign server and a user mapping.  On the
-- callee's server, the handler registered for a callee does the work.
CREATE TABLE rmsg.callee_handler (
    callee          text PRIMARY KEY,
    handler         regprocedure NOT NULL,
    owner           regrole NOT NULL,     -- the role it runs as
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rmsg.callee_handler IS 'the function that does the work of each callee for rmsg.serve_call';
SELECT pg_catalog.pg_extension_config_dump('rmsg.callee_handler', '');
REVOKE ALL ON rmsg.callee_handler FROM PUBLIC;

CREATE FUNCTION rmsg.set_callee_handler(callee text, handler regprocedure)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_set_callee_handler'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.set_callee_handler(text, regprocedure) IS
  'have rmsg.serve_call run handler(caller text, call_id bigint, request bytea) -> bytea for the calls to callee, as the current role; NULL removes it';

CREATE FUNCTION rmsg.serve_call(callee text, caller text, call_id bigint, request bytea)
RETURNS bytea
AS 'MODULE_PATHNAME', 'rmsg_serve_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.serve_call(text, text, bigint, bytea) IS
  'callee side of rmsg.call: accept_call, the callee''s handler and reply in this transaction; a duplicate returns the kept reply';

CREATE FUNCTION rmsg.call(caller text, server text, callee text, request bytea)
RETURNS bytea
AS 'MODULE_PATHNAME', 'rmsg_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.call(text, text, text, bytea) IS
  'call callee on the foreign server exactly once: the logged reply when replaying, else prepare_call, rmsg.serve_call there, record_reply';
