\echo Use "CREATE EXTENSION recoverable_msg" to load this file. \quit

-- recoverable_msg 1.1: the message store and the queue interface.
--
-- Every row here is WAL-backed: a message survives a crash exactly when the
-- transaction that put it committed.  Payload data lives in rows of its own
-- (rmsg.payload) that messages reference, so that a later put of the same
-- data can store a reference instead of the data; payloads no
-- larger than rmsg.inline_payload_max (2000 bytes by default) are kept
-- inline in the message row, which saves every put a second row.
--
-- The tables are the extension's alone: no application role holds any right
-- on them.  The functions run their statements as the tables' owner, after
-- checking the privileges the extension keeps for each queue, instance and
-- component (its owner, and an aclitem[] of what was granted with
-- rmsg.grant_queue and its kin).

CREATE SEQUENCE rmsg.msg_id_seq;
CREATE SEQUENCE rmsg.payload_id_seq;
-- Plain sequences rather than identity columns: pg_dump keeps the state of
-- an extension's sequence only when it is registered with
-- pg_extension_config_dump, which an identity column's sequence cannot be;
-- after a restore, new queues and instances would reuse the ids of
-- restored ones.
CREATE SEQUENCE rmsg.queue_id_seq AS int;
CREATE SEQUENCE rmsg.instance_id_seq;

CREATE TABLE rmsg.queue (
    queue_id        int PRIMARY KEY DEFAULT nextval('rmsg.queue_id_seq'),
    name            text NOT NULL UNIQUE,
    max_deliveries  int NOT NULL CHECK (max_deliveries > 0),
    -- No foreign key: one from the table to itself makes pg_dump warn of a
    -- circular reference, and a dump restored one INSERT per row fail.
    -- drop_queue and DROP OWNED refuse to drop a queue that another sends
    -- its dead letters to.
    dead_letter_queue_id int,
    dedup           text NOT NULL CHECK (dedup IN ('none', 'token', 'content')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    owner           regrole NOT NULL,   -- the role that created it
    acl             aclitem[],          -- put (INSERT), get (SELECT), manage (UPDATE)
    -- how long a put's dedup_id is remembered (rmsg.put_key)
    dedup_window    interval NOT NULL DEFAULT '5 minutes' CHECK (dedup_window > '0'),
    paused          boolean NOT NULL DEFAULT false  -- gets and the worker take nothing
);
COMMENT ON TABLE rmsg.queue IS 'one row per queue; use rmsg.create_queue and rmsg.drop_queue';
ALTER SEQUENCE rmsg.queue_id_seq OWNED BY rmsg.queue.queue_id;

-- A payload row is written once and referenced by every message (live or
-- dead) that carries its data; nothing counts the references, so sharing a
-- row costs a put no write to it.  rmsg.collect_payloads removes the rows no
-- message references any more.  hash is set for
-- rows written by queues with dedup = 'content', which find them by it.
CREATE TABLE rmsg.payload (
    payload_id      bigint PRIMARY KEY DEFAULT nextval('rmsg.payload_id_seq'),
    hash            bigint,
    data            bytea NOT NULL
);
ALTER SEQUENCE rmsg.payload_id_seq OWNED BY rmsg.payload.payload_id;
CREATE INDEX payload_hash_idx ON rmsg.payload (hash) WHERE hash IS NOT NULL;
COMMENT ON TABLE rmsg.payload IS 'message data written once and referenced by messages';

-- A message is ready once visible_at has passed and it is not leased.  A
-- message row never changes while it waits or is leased: its lease is a row
-- of rmsg.lease, so a get writes a small row instead of a new version of
-- the message and its data, and the message table fills its pages.  The
-- ready index leads a get to its queue's ready messages in the order they
-- became ready; delayed messages lie beyond now and are never visited.
-- payload_id and inline_data: exactly one is set.
CREATE TABLE rmsg.message (
    msg_id          bigint PRIMARY KEY DEFAULT nextval('rmsg.msg_id_seq'),
    queue_id        int NOT NULL,
    visible_at      timestamptz NOT NULL,
    enqueued_at     timestamptz NOT NULL,
    payload_size    int NOT NULL,
    payload_id      bigint,
    headers         jsonb,
    inline_data     bytea,
    CHECK ((payload_id IS NULL) <> (inline_data IS NULL)),
    -- The queue a dead letter died in, so that rmsg.redrive can send it
    -- back; NULL for every other message.
    died_in         int,
    -- A message group: its messages are handed out one at a time, in
    -- order.  Those waiting for their turn have visible_at 'infinity'.
    group_id        text,
    -- Ready messages of a higher priority are handed out first; each
    -- priority of a queue is a lane of the ready index (queue/priorities.c).
    priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9)
);
ALTER SEQUENCE rmsg.msg_id_seq OWNED BY rmsg.message.msg_id;
-- priority fits in the padding before visible_at: entries are no larger.
CREATE INDEX message_ready_idx ON rmsg.message (queue_id, priority, visible_at, msg_id);
-- For rmsg.collect_payloads: which payload rows are still referenced.
-- Inline messages have no entry.
CREATE INDEX message_payload_idx ON rmsg.message (payload_id) WHERE payload_id IS NOT NULL;
-- For puts, acks and dead letters of grouped messages: a group's head
-- (visible_at before 'infinity'), and its waiting messages in order
-- (queue/groups.c).  visible_at is in the ready index already, so this
-- costs a lease no HOT update.
CREATE INDEX message_group_idx ON rmsg.message (queue_id, group_id, visible_at, msg_id)
    WHERE group_id IS NOT NULL;
COMMENT ON TABLE rmsg.message IS 'live messages of every queue';

-- The leases of queue messages (queue/lease_rows.c): a message has a row
-- here once it was first delivered, until it is acked, dead-lettered or
-- deleted.  deliveries counts its leases; the latest runs until
-- lease_until (NULL: ended by a nack).  Every writer holds the message
-- row's lock, so a message's lease changes in one transaction at a time.
-- lease_until is not indexed: a new lease, an extend or a nack is a HOT
-- update of this small row.
CREATE TABLE rmsg.lease (
    msg_id          bigint PRIMARY KEY,
    deliveries      int NOT NULL,
    lease_until     timestamptz
) WITH (fillfactor = 80);
COMMENT ON TABLE rmsg.lease IS 'how often each queue message was delivered, and until when its lease runs';

-- Messages that used up max_deliveries in a queue without a dead-letter
-- queue.  They keep their payload reference, so nothing is lost; the views
-- count them and rmsg.ack removes them.
CREATE TABLE rmsg.dead_message (
    msg_id          bigint PRIMARY KEY,
    queue_id        int NOT NULL,
    deliveries      int NOT NULL,
    enqueued_at     timestamptz NOT NULL,
    died_at         timestamptz NOT NULL,
    payload_size    int NOT NULL,
    payload_id      bigint,
    headers         jsonb,
    inline_data     bytea
);
CREATE INDEX dead_message_queue_idx ON rmsg.dead_message (queue_id, msg_id);
CREATE INDEX dead_message_payload_idx ON rmsg.dead_message (payload_id) WHERE payload_id IS NOT NULL;
COMMENT ON TABLE rmsg.dead_message IS 'messages dead-lettered in a queue that has no dead-letter queue';

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

-- The committed interaction contract.  A caller's log:
-- its row here (next call id, last checkpoint) and its calls since that
-- checkpoint in rmsg.call_log.  Written by the contract functions only, and
-- committed lazily: prepare_call forces the WAL when a callee is about to
-- release a reply the log does not hold stably yet.
CREATE TABLE rmsg.caller (
    caller              text PRIMARY KEY,
    next_call_id        bigint NOT NULL CHECK (next_call_id > 0),
    checkpoint_call_id  bigint NOT NULL DEFAULT 0,
    state               jsonb,
    checkpointed_at     timestamptz,
    -- when the shared memory the caller was last (re)started in was made:
    -- a newer one means the server restarted and the caller must restart
    incarnation         timestamptz NOT NULL
);
COMMENT ON TABLE rmsg.caller IS 'callers of the committed interaction contract: next call id and last checkpoint';

CREATE TABLE rmsg.call_log (
    caller          text NOT NULL,
    call_id         bigint NOT NULL,
    callee          text NOT NULL,
    request         bytea,
    reply           bytea,          -- NULL until rmsg.record_reply
    PRIMARY KEY (caller, call_id)
) WITH (fillfactor = 70);           -- room for record_reply's HOT update
-- prepare_call checks that the previous call to the same callee has its reply
CREATE INDEX call_log_callee_idx ON rmsg.call_log (caller, callee, call_id);
COMMENT ON TABLE rmsg.call_log IS 'the calls of each caller since its last checkpoint, with their replies';

-- A callee's last replies per caller (rmsg.last_call_depth of them), kept
-- stably until the caller calls again.
CREATE TABLE rmsg.last_call (
    callee          text NOT NULL,
    caller          text NOT NULL,
    call_id         bigint NOT NULL,
    reply           bytea NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (callee, caller, call_id)
);
COMMENT ON TABLE rmsg.last_call IS 'the replies each callee keeps for its callers';

-- Recovery-mode instances.  An instance governs one
-- conversation: its mode, the application's state, and a line of messages
-- in arrival order.  While it recovers, its normal messages wait in that
-- line ("deferred"); nothing marks them, so completing recovery releases
-- them all by changing the mode alone, and none can be left behind.
CREATE TABLE rmsg.instance (
    instance_id     bigint PRIMARY KEY DEFAULT nextval('rmsg.instance_id_seq'),
    name            text NOT NULL UNIQUE,
    mode            text NOT NULL DEFAULT 'normal' CHECK (mode IN ('normal', 'recovery')),
    recovery_since  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state_saved_at  timestamptz NOT NULL DEFAULT now(),
    state           jsonb NOT NULL,
    CHECK ((mode = 'recovery') = (recovery_since IS NOT NULL)),
    owner           regrole NOT NULL,   -- the role that created it
    acl             aclitem[]           -- deliver (INSERT), receive (SELECT), manage (UPDATE)
);
COMMENT ON TABLE rmsg.instance IS 'one row per instance: mode and saved state; use rmsg.create_instance and rmsg.drop_instance';
ALTER SEQUENCE rmsg.instance_id_seq OWNED BY rmsg.instance.instance_id;

-- An instance's messages, in msg_id order: deliveries to one instance are
-- serialized by its arrival lock (src/instance/catalog.c), so that is also
-- the order they committed in.
-- Taking a lease is a HOT update (no index holds lease_until).  The partial
-- index finds a recovering instance's recovery messages without walking
-- past its deferred normal ones.
CREATE TABLE rmsg.instance_message (
    msg_id          bigint PRIMARY KEY,     -- from rmsg.msg_id_seq
    instance_id     bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('normal', 'recovery')),
    deliveries      int NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    enqueued_at     timestamptz NOT NULL,
    headers         jsonb,
    payload         bytea NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX instance_message_line_idx ON rmsg.instance_message (instance_id, msg_id);
CREATE INDEX instance_message_recovery_idx ON rmsg.instance_message (instance_id, msg_id)
    WHERE kind = 'recovery';
COMMENT ON TABLE rmsg.instance_message IS 'the messages delivered to instances and not yet acked';

-- Handlers (the background worker).  A queue has at most one, dropped with
-- the queue; an instance is handled by the handler of the longest prefix
-- of its name.  A handler runs as owner, the role that registered it.
-- The worker writes the error columns in the transaction that records a
-- failed message's retry or dead letter.
CREATE TABLE rmsg.subscription (
    queue_id        int PRIMARY KEY REFERENCES rmsg.queue (queue_id) ON DELETE CASCADE,
    handler         regprocedure NOT NULL,
    batch           int NOT NULL CHECK (batch > 0),
    owner           regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    errors          bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_error_at   timestamptz,
    last_error_msg_id bigint,
    -- flow control (worker/flow.c): at most this many of the queue's
    -- messages in handlers at once, and at most rate per second; NULL: none
    concurrency     int CHECK (concurrency > 0),
    rate            numeric CHECK (rate > 0)
);
COMMENT ON TABLE rmsg.subscription IS 'the handler of each subscribed queue; use rmsg.subscribe and rmsg.unsubscribe';

-- A prefix may have a handler of each role: an instance's messages go to
-- the handler of the longest prefix among those whose role may receive
-- from it, so that no role can take a prefix away from another.
CREATE TABLE rmsg.instance_handler (
    prefix          text NOT NULL,
    handler         regprocedure NOT NULL,
    owner           regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    errors          bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_error_at   timestamptz,
    last_error_msg_id bigint,
    PRIMARY KEY (prefix, owner)
);
COMMENT ON TABLE rmsg.instance_handler IS 'the handlers of instances by name prefix; use rmsg.set_handler and rmsg.remove_handler';

-- The committed interaction contract: a component is a caller's or a
-- callee's name, and belongs to the role that first used it.
CREATE TABLE rmsg.component (
    name            text PRIMARY KEY,
    owner           regrole NOT NULL,
    acl             aclitem[],
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rmsg.component IS 'callers and callees of the contract: who owns each name, and who else may use it';

-- pg_dump keeps the messages with the extension.
SELECT pg_catalog.pg_extension_config_dump('rmsg.queue', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.payload', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.message', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.lease', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.dead_message', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.put_key', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.msg_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.payload_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.instance_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.caller', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.call_log', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.last_call', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.instance', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.instance_message', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.instance_handler', '');
SELECT pg_catalog.pg_extension_config_dump('rmsg.component', '');

-- The tables are reached through the functions below; nobody else writes them.
REVOKE ALL ON rmsg.queue, rmsg.payload, rmsg.message, rmsg.dead_message, rmsg.put_key,
              rmsg.caller, rmsg.call_log, rmsg.last_call,
              rmsg.instance, rmsg.instance_message,
              rmsg.subscription, rmsg.instance_handler, rmsg.component FROM PUBLIC;

------------------------------------------------------------------------------
-- Queues
------------------------------------------------------------------------------

CREATE FUNCTION rmsg.create_queue(queue text, max_deliveries int DEFAULT 5,
                                  dead_letter_queue text DEFAULT NULL,
                                  dedup text DEFAULT 'token',
                                  dedup_window interval DEFAULT '5 minutes')
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_create_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.create_queue(text, int, text, text, interval) IS
  'create a queue; messages delivered max_deliveries times without an ack go to dead_letter_queue, or are kept as dead';

CREATE FUNCTION rmsg.drop_queue(queue text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_drop_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.drop_queue(text) IS
  'drop a queue with all its messages';

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

CREATE FUNCTION rmsg.put(queue text, payload bytea, headers jsonb DEFAULT NULL,
                         delay interval DEFAULT NULL, data_token bigint DEFAULT NULL,
                         dedup_id text DEFAULT NULL, group_id text DEFAULT NULL,
                         priority int DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_put'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.put(text, bytea, jsonb, interval, bigint, text, text, int) IS
  'put a message; returns its msg_id, unique across all queues. With data_token (data this session put or got), the data is referenced, not written again; payload may then be NULL. With dedup_id, a repeat within the queue''s dedup_window stores nothing and returns the first msg_id. With group_id, the group''s messages are handed out one at a time, in order. Ready messages of a higher priority (0 to 9) are handed out first';

-- The text and jsonb forms store the bytes of the value (UTF-8 text, or the
-- jsonb''s text form), so every consumer reads bytea.
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

CREATE FUNCTION rmsg.put_batch(queue text, payloads bytea[], headers jsonb DEFAULT NULL,
                               group_id text DEFAULT NULL, priority int DEFAULT 0)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'rmsg_put_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION rmsg.put_batch(text, bytea[], jsonb, text, int) IS
  'put one message per array element in one statement; returns the msg_ids in array order';

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
-- Deduplicated logging
------------------------------------------------------------------------------

CREATE FUNCTION rmsg.last_data_token()
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_last_data_token'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.last_data_token() IS
  'the data token of this session''s immediately preceding put or get; NULL after a get that returned nothing';

CREATE FUNCTION rmsg.forward(msg_id bigint, queue text, group_id text DEFAULT NULL,
                             priority int DEFAULT 0)
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_forward'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.forward(bigint, text, text, int) IS
  'put the data and headers of an existing message to queue, by reference; returns the new msg_id';

CREATE FUNCTION rmsg.put_many(queues text[], payload bytea, headers jsonb DEFAULT NULL,
                              group_id text DEFAULT NULL, priority int DEFAULT 0)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'rmsg_put_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 8;
COMMENT ON FUNCTION rmsg.put_many(text[], bytea, jsonb, text, int) IS
  'put the same payload to every queue of the array, data written once; returns the msg_ids in array order';

CREATE FUNCTION rmsg.collect_payloads()
RETURNS bigint
AS 'MODULE_PATHNAME', 'rmsg_collect_payloads'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.collect_payloads() IS
  'remove the payload rows no message references any more; returns how many';

CREATE FUNCTION rmsg.get(queue text, max int DEFAULT 1,
                         visibility interval DEFAULT '30 seconds',
                         wait interval DEFAULT NULL)
RETURNS TABLE (msg_id bigint, payload bytea, headers jsonb, deliveries int,
               enqueued_at timestamptz, data_token bigint, receipt bigint)
AS 'MODULE_PATHNAME', 'rmsg_get'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
COMMENT ON FUNCTION rmsg.get(text, int, interval, interval) IS
  'take up to max ready messages, invisible to others for visibility; with wait, block until one is ready. receipt names each lease';

CREATE FUNCTION rmsg.ack(msg_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_ack'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.ack(bigint) IS
  'remove a message for good; false when there is no such message';

CREATE FUNCTION rmsg.ack(msg_ids bigint[])
RETURNS int
AS 'MODULE_PATHNAME', 'rmsg_ack_many'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.ack(bigint[]) IS
  'remove several messages; returns how many existed';

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

CREATE FUNCTION rmsg.nack(msg_id bigint, delay interval DEFAULT NULL, receipt bigint DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_nack'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.nack(bigint, interval, bigint) IS
  'give a delivered message back: ready again after delay (default at once); false when it is not in flight (under the receipt''s lease, when given)';

CREATE FUNCTION rmsg.extend(msg_id bigint, visibility interval, receipt bigint DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'rmsg_extend'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.extend(bigint, interval, bigint) IS
  'keep a delivered message invisible for visibility from now; false when it is not in flight (under the receipt''s lease, when given)';

------------------------------------------------------------------------------
-- The committed interaction contract
------------------------------------------------------------------------------

CREATE FUNCTION rmsg.prepare_call(caller text, callee text, request bytea DEFAULT NULL,
                                  OUT call_id bigint, OUT forced boolean,
                                  OUT logged_reply bytea)
RETURNS record
AS 'MODULE_PATHNAME', 'rmsg_prepare_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.prepare_call(text, text, bytea) IS
  'the caller''s next call id; forces the WAL first iff callee would release a reply not yet stable here. During replay, logged_reply is the reply the log kept: do not send the call';

CREATE FUNCTION rmsg.record_reply(caller text, call_id bigint, reply bytea)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_record_reply'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.record_reply(text, bigint, bytea) IS
  'log the reply to a call, lazily (its transaction commits without waiting for the WAL flush)';

CREATE FUNCTION rmsg.force_log(caller text)
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'rmsg_force_log'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.force_log(text) IS
  'make everything logged so far stable (after non-determinism); returns the flushed LSN';

CREATE FUNCTION rmsg.checkpoint(caller text, state jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_checkpoint'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.checkpoint(text, jsonb) IS
  'save the caller''s state as of its last call; restart returns to it';

CREATE FUNCTION rmsg.restart(caller text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'rmsg_restart'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.restart(text) IS
  'after a crash: rewind the caller to its checkpoint and return the state saved there (NULL: start afresh)';

CREATE FUNCTION rmsg.replay(caller text)
RETURNS TABLE(call_id bigint, callee text, request bytea, reply bytea)
AS 'MODULE_PATHNAME', 'rmsg_replay'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.replay(text) IS
  'the calls the caller''s log holds since its checkpoint, in order; reply is NULL for a call whose reply was not logged';

CREATE FUNCTION rmsg.accept_call(callee text, caller text, call_id bigint,
                                 request bytea DEFAULT NULL,
                                 OUT status text, OUT reply bytea)
RETURNS record
AS 'MODULE_PATHNAME', 'rmsg_accept_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.accept_call(text, text, bigint, bytea) IS
  'callee side: ''new'' (do the work and rmsg.reply in this transaction) or ''duplicate'' with the saved reply';

CREATE FUNCTION rmsg.reply(callee text, caller text, call_id bigint, reply bytea)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_reply'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.reply(text, text, bigint, bytea) IS
  'callee side: store the reply with the call''s work; stable when the transaction commits, whatever synchronous_commit';

------------------------------------------------------------------------------
-- Recovery-mode instances
------------------------------------------------------------------------------

CREATE FUNCTION rmsg.create_instance(instance text, state jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_create_instance'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.create_instance(text, jsonb) IS
  'create an instance in normal mode with its initial state';

CREATE FUNCTION rmsg.drop_instance(instance text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_drop_instance'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.drop_instance(text) IS
  'drop an instance with its state and every message delivered to it';

CREATE FUNCTION rmsg.begin_recovery(instance text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_begin_recovery'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.begin_recovery(text) IS
  'put an instance in recovery mode: from now on only its recovery messages are received, normal ones are deferred';

CREATE FUNCTION rmsg.deliver(instance text, payload bytea, kind text DEFAULT 'normal',
                             headers jsonb DEFAULT NULL)
RETURNS TABLE(msg_id bigint, disposition text)
AS 'MODULE_PATHNAME', 'rmsg_deliver'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.deliver(text, bytea, text, jsonb) IS
  'append a message to an instance''s line: ''ready'', or ''deferred'' when it is normal and the instance recovers';

CREATE FUNCTION rmsg.receive(instance text, max int DEFAULT 1,
                             visibility interval DEFAULT '30 seconds')
RETURNS TABLE(msg_id bigint, kind text, payload bytea, headers jsonb, deliveries int,
              receipt bigint)
AS 'MODULE_PATHNAME', 'rmsg_receive'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.receive(text, int, interval) IS
  'lease up to max messages from the head of an instance''s line, unless some are in flight; in recovery only recovery messages';

CREATE FUNCTION rmsg.receive_any(max int DEFAULT 1,
                                 visibility interval DEFAULT '30 seconds')
RETURNS TABLE(instance text, msg_id bigint, kind text, payload bytea, headers jsonb,
              deliveries int, receipt bigint)
AS 'MODULE_PATHNAME', 'rmsg_receive_any'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.receive_any(int, interval) IS
  'lease the next message of up to max instances that have none in flight and no other receiver, one per instance';

CREATE FUNCTION rmsg.save_state(instance text, state jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_save_state'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.save_state(text, jsonb) IS
  'save an instance''s state; it commits with the transaction that handled the message';

CREATE FUNCTION rmsg.load_state(instance text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'rmsg_load_state'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION rmsg.load_state(text) IS
  'an instance''s last saved state';

CREATE FUNCTION rmsg.complete_recovery(instance text, state jsonb DEFAULT NULL)
RETURNS int
AS 'MODULE_PATHNAME', 'rmsg_complete_recovery'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.complete_recovery(text, jsonb) IS
  'save the mode as normal (and the state, if given); returns how many deferred messages that released, first in line';

------------------------------------------------------------------------------
-- Handlers, called by the background worker
------------------------------------------------------------------------------

CREATE FUNCTION rmsg.subscribe(queue text, handler regprocedure, batch int DEFAULT 1,
                               concurrency int DEFAULT NULL, rate numeric DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.subscribe(text, regprocedure, int, int, numeric) IS
  'have the worker call handler(payload bytea [, headers jsonb [, msg_id bigint]]) for each ready message of queue, up to batch per transaction, at most concurrency at once across the workers and rate per second; replaces the queue''s handler';

CREATE FUNCTION rmsg.unsubscribe(queue text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_unsubscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.unsubscribe(text) IS
  'stop calling the queue''s handler; its messages stay in the queue';

CREATE FUNCTION rmsg.set_handler(instance_prefix text, handler regprocedure)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_set_handler'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.set_handler(text, regprocedure) IS
  'have the worker call handler(instance text, payload bytea [, kind text [, headers jsonb [, msg_id bigint]]]) for the messages of instances whose name starts with instance_prefix, one at a time, in order';

CREATE FUNCTION rmsg.remove_handler(instance_prefix text)
RETURNS void
AS 'MODULE_PATHNAME', 'rmsg_remove_handler'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rmsg.remove_handler(text) IS
  'stop calling the handler of instance_prefix; the messages stay in their lines';

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
-- Monitoring: the stat_* functions are for monitoring roles; the views show
-- each role what it may see
------------------------------------------------------------------------------

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

CREATE FUNCTION rmsg.queue_counters(
    OUT queue_id int, OUT bytes_written bigint, OUT bytes_referenced bigint,
    OUT stale_receipts bigint, OUT puts bigint, OUT acks bigint,
    OUT dead_lettered bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_queue_counters'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.queue_counters() IS
  'the counters of the queues the current role may see, behind rmsg.queues';

CREATE FUNCTION rmsg.stat_queues(
    OUT queue_id int, OUT bytes_written bigint, OUT bytes_referenced bigint,
    OUT stale_receipts bigint, OUT puts bigint, OUT acks bigint,
    OUT dead_lettered bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_stat_queues'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.stat_queues() IS 'the counters of every queue of this database, for monitoring roles';

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

CREATE FUNCTION rmsg.stat_components(
    OUT caller text, OUT callee text, OUT clsn pg_lsn, OUT flushed_lsn pg_lsn,
    OUT stable boolean, OUT calls bigint, OUT forces bigint,
    OUT replies_tracked int, OUT last_call_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_stat_components'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.stat_components() IS 'the called-component table behind rmsg.called_components';

-- The called-component table (shared memory, empty after a restart): per
-- caller and callee, the CLSN of the newest reply logged, whether it is
-- stable (at or before the flushed LSN), sends prepared and forces made
-- before them.
CREATE VIEW rmsg.called_components AS
SELECT * FROM rmsg.stat_components();
COMMENT ON VIEW rmsg.called_components IS
  'per caller and callee: CLSN of the newest logged reply, flushed LSN, whether the reply is stable, calls and forces since server start';

CREATE VIEW rmsg.last_calls WITH (security_barrier) AS
SELECT callee, caller, call_id, length(reply) AS reply_bytes, stored_at
  FROM rmsg.last_call
 WHERE rmsg.has_component_privilege(callee, 'use, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');
COMMENT ON VIEW rmsg.last_calls IS
  'the replies each callee keeps per caller until the caller calls again';

CREATE VIEW rmsg.callers WITH (security_barrier) AS
SELECT c.caller, c.next_call_id, c.checkpoint_call_id, c.checkpointed_at,
       (SELECT count(*) FROM rmsg.call_log l
         WHERE l.caller = c.caller AND l.call_id > c.checkpoint_call_id) AS logged_calls,
       (SELECT count(*) FROM rmsg.call_log l
         WHERE l.caller = c.caller AND l.reply IS NULL) AS calls_without_reply
  FROM rmsg.caller c
 WHERE rmsg.has_component_privilege(c.caller, 'use, manage')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');
COMMENT ON VIEW rmsg.callers IS
  'each caller''s next call id, last checkpoint and the calls logged since';

-- One scan of a queue's messages: ready (visible now), in flight (delivered,
-- lease running), delayed (put or nacked with a delay that has not passed),
-- and of its groups: how many have a message in flight, how many messages
-- wait for their group's turn.
CREATE VIEW rmsg.queues WITH (security_barrier) AS
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
COMMENT ON VIEW rmsg.queues IS
  'one row per queue: ready, in-flight, delayed and dead message counts, age of the oldest ready message, payload bytes written and referenced since server start';

-- One scan of each instance's line.  A normal message of a recovering
-- instance is deferred, whether it arrived before recovery began or since.
CREATE VIEW rmsg.instances WITH (security_barrier) AS
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
COMMENT ON VIEW rmsg.instances IS
  'one row per instance: mode, messages ready, deferred by recovery and in flight, since when it recovers';

CREATE FUNCTION rmsg.stat_worker(
    OUT pid int, OUT state text, OUT last_activity timestamptz,
    OUT processed bigint, OUT errors bigint, OUT worker int, OUT database text,
    OUT current text, OUT retried bigint, OUT dead_lettered bigint,
    OUT last_error text, OUT last_error_at timestamptz, OUT started_at timestamptz,
    OUT maintained_at timestamptz, OUT payloads_collected bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rmsg_stat_worker'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION rmsg.stat_worker() IS 'the shared worker slots behind rmsg.worker';

-- One row per worker (rmsg.worker_count), running or not; counters since
-- the server started.  processed: handler calls that succeeded (and were
-- acked); errors: handler calls that failed, and errors of the worker
-- itself; dead_lettered: by failed handlers and by the maintenance sweep.
CREATE VIEW rmsg.worker AS
SELECT * FROM rmsg.stat_worker();
COMMENT ON VIEW rmsg.worker IS
  'the background workers: state, what they handle now, messages handled, errors, the last error, maintenance';

-- A queue's handler shows to the roles that may get from or manage the
-- queue (its errors quote messages), an instance prefix's to its role (and
-- the members of it).
CREATE VIEW rmsg.handlers WITH (security_barrier) AS
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
COMMENT ON VIEW rmsg.handlers IS
  'one row per queue handler and instance handler (target: the queue, or the instance name prefix), with its error count and last error';

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
