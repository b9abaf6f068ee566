-- The tables of test/bench/lease_design.sh, in the database "bench" of its
-- scratch cluster: one schema per design, plus plain tables that put_batch
-- is compared with.  Plain SQL only: the extension is not needed.

-- 1000 different 1 KiB payloads that do not compress (hex digits of md5
-- sums decoded to bytes).  1 KiB stays under the TOAST threshold, so each
-- message carries its bytes in its row, as rmsg.message does for small
-- payloads.
CREATE TABLE payloads (i int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO payloads
SELECT i, (SELECT decode(string_agg(md5(i::text || ':' || j::text || ':' || random()::text), ''), 'hex')
           FROM generate_series(1, 64) j)
FROM generate_series(0, 999) i;

-- Design A, the lease in the message row: the columns, indexes and
-- fillfactor of rmsg.message in recoverable_msg--1.1.sql.  A get updates
-- deliveries and lease_until in place; fillfactor 70 leaves room on each
-- page for some of those new row versions, so that they can be HOT.
CREATE SCHEMA a;
CREATE SEQUENCE a.msg_id_seq;
CREATE TABLE a.message (
    msg_id          bigint PRIMARY KEY DEFAULT nextval('a.msg_id_seq'),
    queue_id        int NOT NULL,
    deliveries      int NOT NULL DEFAULT 0,
    visible_at      timestamptz NOT NULL,
    lease_until     timestamptz,
    enqueued_at     timestamptz NOT NULL,
    payload_size    int NOT NULL,
    payload_id      bigint,
    headers         jsonb,
    inline_data     bytea,
    CHECK ((payload_id IS NULL) <> (inline_data IS NULL)),
    died_in         int,
    group_id        text,
    priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9)
) WITH (fillfactor = 70);
CREATE INDEX message_ready_idx ON a.message (queue_id, priority, visible_at, msg_id);
CREATE INDEX message_payload_idx ON a.message (payload_id) WHERE payload_id IS NOT NULL;
CREATE INDEX message_group_idx ON a.message (queue_id, group_id, visible_at, msg_id) WHERE group_id IS NOT NULL;

-- Design B, the lease in a row of its own: the message row is written once
-- by the put and never updated, so its pages can be packed full
-- (fillfactor 100).  A get writes (or renews) a small row in b.lease while
-- it holds the message row's lock; the ack deletes both.
CREATE SCHEMA b;
CREATE SEQUENCE b.msg_id_seq;
CREATE TABLE b.message (
    msg_id          bigint PRIMARY KEY DEFAULT nextval('b.msg_id_seq'),
    queue_id        int NOT NULL,
    visible_at      timestamptz NOT NULL,
    enqueued_at     timestamptz NOT NULL,
    payload_size    int NOT NULL,
    payload_id      bigint,
    headers         jsonb,
    inline_data     bytea,
    CHECK ((payload_id IS NULL) <> (inline_data IS NULL)),
    died_in         int,
    group_id        text,
    priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9)
) WITH (fillfactor = 100);
CREATE INDEX message_ready_idx ON b.message (queue_id, priority, visible_at, msg_id);
CREATE INDEX message_payload_idx ON b.message (payload_id) WHERE payload_id IS NOT NULL;
CREATE INDEX message_group_idx ON b.message (queue_id, group_id, visible_at, msg_id) WHERE group_id IS NOT NULL;
CREATE TABLE b.lease (
    msg_id          bigint PRIMARY KEY,
    deliveries      int NOT NULL,
    lease_until     timestamptz NOT NULL
);

-- Design B2 uses B's tables and this check.  A get's query sees the lease
-- table as it was when the statement began; a lease committed by another
-- get after that is invisible to it even once it holds the message's lock.
-- A PL/pgSQL function marked VOLATILE takes a new snapshot for each of its
-- queries (in READ COMMITTED), so called after the lock it sees that lease.
CREATE FUNCTION b.lease_free(id bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE AS
$$BEGIN RETURN NOT EXISTS (SELECT 1 FROM b.lease WHERE msg_id = id AND lease_until > now()); END$$;

-- What put_batch is compared with: the same columns as A's and as B's
-- message table, but fillfactor 100, the primary key as their only index
-- and no CHECK constraints: the cost of a bare INSERT of the same rows.
CREATE SCHEMA p;
CREATE SEQUENCE p.a_seq;
CREATE TABLE p.plain_a (
    msg_id bigint PRIMARY KEY DEFAULT nextval('p.a_seq'), queue_id int NOT NULL, deliveries int NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL, lease_until timestamptz, enqueued_at timestamptz NOT NULL,
    payload_size int NOT NULL, payload_id bigint, headers jsonb, inline_data bytea, died_in int,
    group_id text, priority smallint NOT NULL DEFAULT 0
) WITH (fillfactor = 100);
CREATE SEQUENCE p.b_seq;
CREATE TABLE p.plain_b (
    msg_id bigint PRIMARY KEY DEFAULT nextval('p.b_seq'), queue_id int NOT NULL,
    visible_at timestamptz NOT NULL, enqueued_at timestamptz NOT NULL,
    payload_size int NOT NULL, payload_id bigint, headers jsonb, inline_data bytea, died_in int,
    group_id text, priority smallint NOT NULL DEFAULT 0
) WITH (fillfactor = 100);

VACUUM ANALYZE payloads;

-- The extension walks the ready index and looks rows up by key from C.
-- These settings keep the SQL versions on the same index paths whatever
-- the statistics say: right after a TRUNCATE they describe an empty or
-- tiny table, and the planner would otherwise pick sequential scans or
-- bitmap scans that the extension never does.
ALTER DATABASE bench SET enable_seqscan = off;
ALTER DATABASE bench SET enable_bitmapscan = off;
