--
-- worker_handlers: registering handlers for the background worker.  What
-- each convention accepts, every error with its SQLSTATE and nothing
-- changed after it, replacing and removing handlers, and the views.  The
-- regression database is not rmsg.database, so no worker calls anything
-- here; 011 and 012 (TAP) test the worker itself.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql

-- handlers are named by signature (regprocedure), as in 'f(bytea)'
SELECT rmsg.create_queue('wh_orders');
SELECT rmsg.create_queue('wh_other');

-- handlers of every arity the conventions allow
CREATE FUNCTION wh_q1(payload bytea) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION wh_q2(payload bytea, headers jsonb) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION wh_q3(payload bytea, headers jsonb, msg_id bigint) RETURNS void
  LANGUAGE plpgsql AS 'BEGIN END';
CREATE FUNCTION wh_i2(instance text, payload bytea) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION wh_i5(instance text, payload bytea, kind text, headers jsonb, msg_id bigint)
  RETURNS void LANGUAGE sql AS 'SELECT';

-- registered where no worker serves: a warning says which database they serve
SELECT rmsg.subscribe('wh_orders', 'wh_q3(bytea,jsonb,bigint)');
-- (the same warning for every registration below: not shown again)
SET client_min_messages = error;
SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', batch => 10);
SELECT rmsg.set_handler('order-', 'wh_i5(text,bytea,text,jsonb,bigint)');
SELECT rmsg.set_handler('', 'wh_i2(text,bytea)');
SELECT kind, target, handler, batch, owner = current_user::regrole AS mine, errors, last_error
  FROM rmsg.handlers ORDER BY kind, target;

-- subscribing again replaces the handler and the batch
SELECT rmsg.subscribe('wh_orders', 'wh_q2(bytea,jsonb)', 5);
SELECT rmsg.set_handler('order-', 'wh_i2(text,bytea)');
SELECT kind, target, handler, batch FROM rmsg.handlers ORDER BY kind, target;

-- flow control: at most concurrency at once, at most rate per second
SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', batch => 10, concurrency => 2, rate => 2.5);
SELECT target, batch, concurrency, rate FROM rmsg.handlers WHERE kind = 'queue' ORDER BY target;
SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', batch => 10);
SELECT target, concurrency, rate FROM rmsg.handlers WHERE target = 'wh_other';
-- bad limits: 22023, and nothing changed
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', 1, 0)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', 1, 33)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', 1, NULL, 0)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', 1, NULL, -1)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', 1, NULL, 'NaN')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_other', 'wh_q1(bytea)', 1, NULL, 1e7)$$);
SELECT target, batch, concurrency, rate FROM rmsg.handlers WHERE target = 'wh_other';

-- unknown queue or handler: 42704, 42883
SELECT sqlstate_of($$SELECT rmsg.subscribe('nowhere', 'wh_q1(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'no_such_fn(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 12345::regprocedure)$$);
SELECT sqlstate_of($$SELECT rmsg.unsubscribe('nowhere')$$);
SELECT sqlstate_of($$SELECT rmsg.remove_handler('nobody-')$$);

-- wrong conventions: 42P13, and a procedure or aggregate: 42809
CREATE FUNCTION wh_bad_type(payload text) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION wh_bad_order(headers jsonb, payload bytea) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION wh_too_many(payload bytea, headers jsonb, msg_id bigint, extra int)
  RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION wh_none() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION wh_set(payload bytea) RETURNS SETOF int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION wh_strict(payload bytea, headers jsonb) RETURNS void
  LANGUAGE sql STRICT AS 'SELECT';
CREATE FUNCTION wh_strict_payload(payload bytea) RETURNS void
  LANGUAGE sql STRICT AS 'SELECT';
CREATE PROCEDURE wh_proc(payload bytea) LANGUAGE sql AS 'SELECT';
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_bad_type(text)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_bad_order(jsonb,bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_too_many(bytea,jsonb,bigint,int)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_none()')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_set(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_strict(bytea,jsonb)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_proc(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'count("any")')$$);
-- a queue handler is not an instance handler, nor the other way round
SELECT sqlstate_of($$SELECT rmsg.set_handler('x-', 'wh_q1(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_i5(text,bytea,text,jsonb,bigint)')$$);
-- a strict handler that never gets NULL (no headers argument) is fine
SELECT rmsg.subscribe('wh_other', 'wh_strict_payload(bytea)');

-- bad batch, prefix and NULLs: 22023, 22004
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_q1(bytea)', 0)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_q1(bytea)', 1001)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_q1(bytea)', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.subscribe(NULL, 'wh_q1(bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.set_handler('bad prefix', 'wh_i2(text,bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.set_handler(repeat('x', 64), 'wh_i2(text,bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.set_handler(NULL, 'wh_i2(text,bytea)')$$);
SELECT sqlstate_of($$SELECT rmsg.set_handler('x-', NULL)$$);

-- none of the failures changed anything
SELECT kind, target, handler, batch FROM rmsg.handlers ORDER BY kind, target;

-- subscribing takes manage on the queue, and get (the handler runs as the
-- subscriber and takes the messages): rights on our tables are no substitute
CREATE ROLE wh_user;
GRANT USAGE ON SCHEMA rmsg TO wh_user;
GRANT ALL ON ALL TABLES IN SCHEMA rmsg TO wh_user;
SET ROLE wh_user;
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_q3(bytea,jsonb,bigint)')$$);
RESET ROLE;
SELECT rmsg.grant_queue('wh_orders', 'wh_user', 'manage');
SET ROLE wh_user;
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_q3(bytea,jsonb,bigint)')$$);
RESET ROLE;
SELECT rmsg.grant_queue('wh_orders', 'wh_user', 'get');
-- a role without EXECUTE on the handler may not register it: 42501
REVOKE EXECUTE ON FUNCTION wh_q1(bytea) FROM PUBLIC;
SET ROLE wh_user;
SELECT sqlstate_of($$SELECT rmsg.subscribe('wh_orders', 'wh_q1(bytea)')$$);
SELECT rmsg.subscribe('wh_orders', 'wh_q3(bytea,jsonb,bigint)');
RESET ROLE;
SELECT target, handler, owner FROM rmsg.handlers WHERE target = 'wh_orders';
-- and a role without even the use of our schema may not register anything: 42501
CREATE ROLE wh_stranger;
SET ROLE wh_stranger;
SELECT sqlstate_of($$SELECT rmsg.set_handler('x-', 'wh_i2(text,bytea)')$$);
RESET ROLE;

-- unsubscribing and removing leave the messages where they are
SELECT rmsg.put('wh_orders', 'stays'::text) > 0 AS put;
SELECT rmsg.unsubscribe('wh_orders');
SELECT sqlstate_of($$SELECT rmsg.unsubscribe('wh_orders')$$);
SELECT queue, ready FROM rmsg.queues WHERE queue = 'wh_orders';
SELECT rmsg.remove_handler('');
SELECT kind, target FROM rmsg.handlers ORDER BY kind, target;

-- a queue's subscription goes with the queue
SELECT rmsg.drop_queue('wh_other');
SELECT kind, target FROM rmsg.handlers ORDER BY kind, target;

-- a rolled-back subscribe leaves nothing
BEGIN;
SELECT rmsg.subscribe('wh_orders', 'wh_q1(bytea)');
ROLLBACK;
SELECT count(*) FROM rmsg.handlers WHERE kind = 'queue';

-- rmsg.worker has one row per worker slot (rmsg.worker_count), whatever
-- the database, and these columns
SELECT count(*) = current_setting('rmsg.worker_count')::int AS one_row_per_worker
  FROM rmsg.worker;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'rmsg.worker'::regclass AND attnum > 0 ORDER BY attnum;

-- clean up
SELECT rmsg.remove_handler('order-');
SELECT rmsg.drop_queue('wh_orders');
DROP OWNED BY wh_user;
DROP OWNED BY wh_stranger;
DROP ROLE wh_user;
DROP ROLE wh_stranger;
