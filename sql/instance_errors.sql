--
-- instance_errors: every error of the instance functions, with its SQLSTATE,
-- and nothing changed after it.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql

SELECT rmsg.create_instance('err-1', '{"n": 1}');
SELECT msg_id > 0 AS delivered FROM rmsg.deliver('err-1', 'm1');

-- unknown instance: 42704
SELECT sqlstate_of($$SELECT rmsg.deliver('nobody', 'x')$$);
SELECT sqlstate_of($$SELECT rmsg.receive('nobody')$$);
SELECT sqlstate_of($$SELECT rmsg.begin_recovery('nobody')$$);
SELECT sqlstate_of($$SELECT rmsg.complete_recovery('nobody')$$);
SELECT sqlstate_of($$SELECT rmsg.save_state('nobody', '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.load_state('nobody')$$);
SELECT sqlstate_of($$SELECT rmsg.drop_instance('nobody')$$);
-- existing instance: 42710, and its state is untouched
SELECT sqlstate_of($$SELECT rmsg.create_instance('err-1', '{"n": 2}')$$);
SELECT rmsg.load_state('err-1');
-- bad kind: 22023, nothing delivered
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', 'x', 'urgent')$$);
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', 'x', 'Normal')$$);
-- bad names: 22023
SELECT sqlstate_of($$SELECT rmsg.create_instance('', '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.create_instance('has space', '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.create_instance(repeat('x', 64), '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.deliver('bad/name', 'x')$$);
-- NULLs: 22004
SELECT sqlstate_of($$SELECT rmsg.create_instance(NULL, '{}')$$);
SELECT sqlstate_of($$SELECT rmsg.create_instance('err-2', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', 'x', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.save_state('err-1', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.receive('err-1', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.receive_any(1, NULL)$$);
-- bad max and visibility: 22023 (a zero visibility is a lease that ends at once, as for get)
SELECT sqlstate_of($$SELECT rmsg.receive('err-1', 0)$$);
SELECT sqlstate_of($$SELECT rmsg.receive_any(-1)$$);
SELECT sqlstate_of($$SELECT rmsg.receive('err-1', 1, '0 seconds')$$);
SELECT sqlstate_of($$SELECT rmsg.receive('err-1', 1, '-1 seconds')$$);
-- headers must be an object: 22023
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', 'x', 'normal', '[1]')$$);
-- payload too large: 54000
SET rmsg.max_payload_size = 10;
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', repeat('x', 11)::bytea)$$);
RESET rmsg.max_payload_size;
-- wrong mode: 55000
SELECT sqlstate_of($$SELECT rmsg.complete_recovery('err-1')$$);
SELECT rmsg.begin_recovery('err-1');
SELECT sqlstate_of($$SELECT rmsg.begin_recovery('err-1')$$);
SELECT rmsg.complete_recovery('err-1') AS released;
-- a save_state goes with its transaction when that rolls back
BEGIN;
SELECT rmsg.save_state('err-1', '{"n": 3}');
SELECT sqlstate_of($$SELECT rmsg.deliver('err-1', 'x', 'bogus')$$);
ROLLBACK;

-- Nothing changed: one instance, in normal mode, its first state, one message.
SELECT instance, mode, ready, deferred, in_flight, recovery_since FROM rmsg.instances;
SELECT rmsg.load_state('err-1');
SELECT count(*) AS messages FROM rmsg.instance_message;
-- ack, nack and extend of an unknown msg_id say false
SELECT rmsg.ack(-1), rmsg.nack(-1), rmsg.extend(-1, '1 minute');
SELECT rmsg.drop_instance('err-1');
