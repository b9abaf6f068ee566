--
-- contract_caller: the calling side of the committed interaction contract,
-- in one session: call ids, the log of calls and replies,
-- checkpoint, restart and replay, and every error with its SQLSTATE and
-- that nothing changed after it.  Whether prepare_call forces depends on
-- when the WAL writer last flushed, so it is asserted only where it cannot
-- vary (after force_log); the TAP test 005 covers the forces.
--
\pset null '(null)'
-- What the caller's log holds, without timestamps.
\i test/lib/regress_helpers.sql
CREATE FUNCTION log_of(who text)
RETURNS TABLE(call_id bigint, callee text, request text, reply text)
LANGUAGE sql AS $$
  SELECT call_id, callee, convert_from(request, 'UTF8'), convert_from(reply, 'UTF8')
    FROM rmsg.call_log WHERE caller = who ORDER BY call_id
$$;

-- A first call makes the caller; call ids count from 1.
SELECT call_id, forced, logged_reply FROM rmsg.prepare_call('app', 'pricing', 'quote 7');
SELECT rmsg.record_reply('app', 1, 'price 70');
SELECT call_id, logged_reply FROM rmsg.prepare_call('app', 'stock', 'reserve 7');
SELECT rmsg.record_reply('app', 2, 'reserved');
-- After force_log every reply is stable: calling pricing again needs no force.
SELECT pg_current_wal_insert_lsn() AS inserted \gset
SELECT rmsg.force_log('app') >= :'inserted' AS flushed;
SELECT call_id, forced, logged_reply FROM rmsg.prepare_call('app', 'pricing', 'quote 8');
SELECT rmsg.record_reply('app', 3, 'price 80');
SELECT * FROM log_of('app');
SELECT caller, next_call_id, checkpoint_call_id, logged_calls, calls_without_reply
  FROM rmsg.callers;
SELECT caller, callee, clsn IS NOT NULL AS has_clsn
  FROM rmsg.called_components WHERE caller = 'app' ORDER BY callee;

-- Recording the same reply again changes nothing; a different one is refused.
SELECT rmsg.record_reply('app', 3, 'price 80');
SELECT sqlstate_of($$SELECT rmsg.record_reply('app', 3, 'price 81')$$);
SELECT sqlstate_of($$SELECT rmsg.record_reply('app', 99, 'x')$$);
SELECT sqlstate_of($$SELECT rmsg.record_reply('nobody', 1, 'x')$$);
SELECT * FROM log_of('app') WHERE call_id = 3;

-- A checkpoint covers the calls so far; the log before it goes.
SELECT rmsg.checkpoint('app', '{"step": 3, "total": 150}');
SELECT * FROM log_of('app');
SELECT call_id, logged_reply FROM rmsg.prepare_call('app', 'stock', 'reserve 8');
SELECT rmsg.record_reply('app', 4, 'reserved');
SELECT call_id, logged_reply FROM rmsg.prepare_call('app', 'billing', 'invoice');

-- Restart: back to the checkpoint, with the log since it to replay.
SELECT rmsg.restart('app');
SELECT call_id, callee, convert_from(request, 'UTF8') AS request,
       convert_from(reply, 'UTF8') AS reply
  FROM rmsg.replay('app');
-- The logged reply comes back, and the call is not to be sent again ...
SELECT call_id, forced, convert_from(logged_reply, 'UTF8') AS logged_reply
  FROM rmsg.prepare_call('app', 'stock', 'reserve 8');
-- ... a replayed call must be the same call: other callee, other request
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', 'pricing', 'invoice')$$);
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', 'billing', 'invoice 2')$$);
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', 'billing', NULL)$$);
-- ... the logged call without a reply is sent (again), under its old id
SELECT call_id, logged_reply FROM rmsg.prepare_call('app', 'billing', 'invoice');
-- ... calling billing again before its reply is recorded would release it
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', 'billing', 'invoice 2')$$);
-- ... and a checkpoint cannot cover a call without its reply
SELECT sqlstate_of($$SELECT rmsg.checkpoint('app', '{}')$$);
SELECT rmsg.record_reply('app', 5, 'invoiced');
-- Past the end of the log, calls are new again.
SELECT call_id, logged_reply FROM rmsg.prepare_call('app', 'billing', 'invoice 2');
SELECT rmsg.record_reply('app', 6, 'invoiced 2');
SELECT * FROM log_of('app');
SELECT caller, next_call_id, checkpoint_call_id, logged_calls, calls_without_reply
  FROM rmsg.callers;

-- Restarting twice in a row, or before any call, is harmless.
SELECT rmsg.restart('app');
SELECT rmsg.restart('app');
SELECT count(*) AS replayed FROM rmsg.replay('app');
SELECT call_id, convert_from(logged_reply, 'UTF8') AS logged_reply
  FROM rmsg.prepare_call('app', 'stock', 'reserve 8');

-- A caller that never checkpointed restarts from nothing (NULL) and replays
-- from its first call; an unknown caller is simply new.
SELECT call_id FROM rmsg.prepare_call('fresh', 'pricing', 'quote 1');
SELECT rmsg.record_reply('fresh', 1, 'price 10');
SELECT rmsg.restart('fresh') IS NULL AS from_scratch;
SELECT call_id, convert_from(logged_reply, 'UTF8') AS logged_reply
  FROM rmsg.prepare_call('fresh', 'pricing', 'quote 1');
SELECT rmsg.restart('never-seen') IS NULL AS from_scratch;
SELECT count(*) FROM rmsg.replay('never-seen');
SELECT count(*) FROM rmsg.replay('no-such-caller');
-- A caller may checkpoint before its first call.
SELECT rmsg.checkpoint('early', '{"step": 0}');
SELECT rmsg.restart('early');
SELECT call_id FROM rmsg.prepare_call('early', 'pricing', NULL);

-- Bad input: a clear error, nothing changed.
SELECT sqlstate_of($$SELECT rmsg.prepare_call(NULL, 'pricing')$$);
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.prepare_call('', 'pricing')$$);
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', 'no spaces')$$);
SELECT sqlstate_of($$SELECT rmsg.prepare_call(repeat('c', 64), 'pricing')$$);
SET rmsg.max_payload_size = 10;
SELECT sqlstate_of($$SELECT rmsg.prepare_call('app', 'pricing', 'eleven bytes')$$);
SELECT sqlstate_of($$SELECT rmsg.record_reply('app', 6, 'eleven bytes')$$);
RESET rmsg.max_payload_size;
SELECT sqlstate_of($$SELECT rmsg.record_reply('app', NULL, 'x')$$);
SELECT sqlstate_of($$SELECT rmsg.record_reply('app', 6, NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.checkpoint('app', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.checkpoint('bad name', '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.restart(NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.force_log('bad name')$$);
SELECT caller, next_call_id, checkpoint_call_id, logged_calls, calls_without_reply
  FROM rmsg.callers ORDER BY caller;

-- A rolled-back prepare_call gives its call id back; a record_reply rolled
-- back to a savepoint leaves no reply and no CLSN behind.  The shared
-- called-component table outlives the extension, so this caller gets a name
-- no earlier run of this file used.
SELECT 'rb-' || md5(clock_timestamp()::text) AS rb \gset
BEGIN;
SELECT call_id FROM rmsg.prepare_call(:'rb', 'pricing', 'quote 1');
ROLLBACK;
BEGIN;
SELECT call_id FROM rmsg.prepare_call(:'rb', 'pricing', 'quote 1');
SAVEPOINT s;
SELECT rmsg.record_reply(:'rb', 1, 'price 10');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT * FROM log_of(:'rb');
SELECT callee, calls, clsn IS NULL AS no_clsn, replies_tracked
  FROM rmsg.called_components WHERE caller = :'rb';
SELECT rmsg.record_reply(:'rb', 1, 'price 10');
SELECT * FROM log_of(:'rb');
SELECT callee, calls, clsn IS NULL AS no_clsn, replies_tracked
  FROM rmsg.called_components WHERE caller = :'rb';

-- A reply recorded in a savepoint stays pending through another
-- subtransaction's abort after it (an exception block), and is noted when
-- the transaction commits.
SELECT call_id FROM rmsg.prepare_call(:'rb', 'pricing', 'quote 2');
BEGIN;
SAVEPOINT s;
SELECT rmsg.record_reply(:'rb', 2, 'price 11');
DO $$ BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END $$;
RELEASE SAVEPOINT s;
DO $$ BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END $$;
COMMIT;
SELECT callee, calls, clsn IS NULL AS no_clsn, replies_tracked
  FROM rmsg.called_components WHERE caller = :'rb';

-- The settings: depth is the server's (SIGHUP), max_components its start's.
SHOW rmsg.last_call_depth;
SELECT sqlstate_of($$SET rmsg.last_call_depth = 2$$);
SELECT sqlstate_of($$SET rmsg.max_components = 10$$);
SHOW rmsg.lazy_caller_log;
