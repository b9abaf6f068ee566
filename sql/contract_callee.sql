--
-- contract_callee: the called side of the committed interaction contract:
-- a call's work and its reply commit together, a second
-- delivery gets the saved reply, the callee keeps rmsg.last_call_depth
-- replies per caller and refuses older calls; every error with its SQLSTATE,
-- and nothing changed after it.  Crashes and the stability of replies are
-- in the TAP test 005.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql

-- A callee's work: one row per executed call.
CREATE TABLE shipments (caller text, call_id bigint, item text);

-- What a callee runs for each call, in one transaction: accept, do the work
-- and reply only if the call is new.
CREATE FUNCTION ship(caller text, call_id bigint, item text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  a record;
BEGIN
  SELECT * INTO a FROM rmsg.accept_call('shipping', caller, call_id, convert_to(item, 'UTF8'));
  IF a.status = 'duplicate' THEN
    RETURN 'duplicate: ' || convert_from(a.reply, 'UTF8');
  END IF;
  INSERT INTO shipments VALUES (caller, call_id, item);
  PERFORM rmsg.reply('shipping', caller, call_id, convert_to('shipped ' || item, 'UTF8'));
  RETURN 'new: shipped ' || item;
END
$$;

SELECT ship('shop', 1, 'book');
SELECT ship('shop', 1, 'book');          -- delivered twice: answered, not redone
SELECT ship('shop', 2, 'pen');
SELECT ship('kiosk', 1, 'map');          -- call ids are per caller
SELECT * FROM shipments ORDER BY caller, call_id;
SELECT callee, caller, call_id, reply_bytes FROM rmsg.last_calls ORDER BY caller, call_id;

-- Call 2 released the reply to call 1: a caller asking for it again lost
-- its log beyond what the contract allows.
SELECT sqlstate_of($$SELECT ship('shop', 1, 'book')$$);
SELECT status, convert_from(reply, 'UTF8') AS reply FROM rmsg.accept_call('shipping', 'shop', 2);
SELECT status, reply FROM rmsg.accept_call('shipping', 'shop', 3);
-- A call id may skip (the caller's calls to other callees in between).
SELECT ship('shop', 7, 'ink');
SELECT sqlstate_of($$SELECT ship('shop', 5, 'glue')$$);

-- reply directly: twice for one call, or for a call older than the newest
SELECT sqlstate_of($$SELECT rmsg.reply('shipping', 'shop', 7, 'again')$$);
SELECT sqlstate_of($$SELECT rmsg.reply('shipping', 'shop', 6, 'late')$$);
-- a reply with its work rolled back leaves neither
BEGIN;
SELECT ship('shop', 8, 'tape');
ROLLBACK;
SELECT status FROM rmsg.accept_call('shipping', 'shop', 8);
SELECT count(*) FROM shipments WHERE call_id = 8;

-- An empty reply is a reply.
SELECT rmsg.reply('logging', 'shop', 1, '');
SELECT status, length(reply) FROM rmsg.accept_call('logging', 'shop', 1);

-- Bad input: a clear error, nothing changed.
SELECT sqlstate_of($$SELECT rmsg.accept_call(NULL, 'shop', 1)$$);
SELECT sqlstate_of($$SELECT rmsg.accept_call('shipping', NULL, 1)$$);
SELECT sqlstate_of($$SELECT rmsg.accept_call('shipping', 'shop', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.accept_call('shipping', 'shop', 0)$$);
SELECT sqlstate_of($$SELECT rmsg.accept_call('ship ping', 'shop', 1)$$);
SELECT sqlstate_of($$SELECT rmsg.accept_call('shipping', '', 1)$$);
SELECT sqlstate_of($$SELECT rmsg.reply('shipping', 'shop', 9, NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.reply('shipping', 'shop', -1, 'x')$$);
SELECT sqlstate_of($$SELECT rmsg.reply('shipping', 'sh"op', 9, 'x')$$);
SET rmsg.max_payload_size = 10;
SELECT sqlstate_of($$SELECT rmsg.reply('shipping', 'shop', 9, 'eleven bytes')$$);
SELECT sqlstate_of($$SELECT rmsg.accept_call('shipping', 'shop', 9, 'eleven bytes')$$);
RESET rmsg.max_payload_size;
SELECT callee, caller, call_id, reply_bytes FROM rmsg.last_calls ORDER BY callee, caller, call_id;

-- A reply's transaction commits stably even with synchronous_commit off
-- (TAP test 005 crashes the server to show it); the session's own setting
-- is untouched.
SET synchronous_commit = off;
SELECT rmsg.reply('logging', 'kiosk', 1, 'logged');
SHOW synchronous_commit;
RESET synchronous_commit;
