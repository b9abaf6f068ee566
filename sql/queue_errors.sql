--
-- queue_errors: every error of the queue functions, with its SQLSTATE, and
-- that nothing changed after it.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql
SET rmsg.inline_payload_max = 256;   -- 300-byte payloads below get a payload row

SELECT rmsg.create_queue('err');
SELECT rmsg.create_queue('err_dlq');
SELECT rmsg.create_queue('err_src', 3, 'err_dlq');
SELECT rmsg.put('err', 'one'::text) AS e0 \gset
SELECT rmsg.put('err', convert_to(repeat('x', 300), 'UTF8')) - :e0 AS rel;
SELECT rmsg.put('err_src', 'src'::text) - :e0 AS rel;
SELECT count(*) AS leased FROM rmsg.get('err_src');

-- what must still hold after every error below
CREATE TEMP TABLE state_before AS
SELECT queue, ready, in_flight, delayed, dead, max_deliveries, dead_letter_queue, dedup,
       payload_bytes
  FROM rmsg.queues;
CREATE TEMP TABLE messages_before AS TABLE rmsg.message;
CREATE TEMP TABLE payloads_before AS TABLE rmsg.payload;
CREATE TEMP TABLE queue_rows_before AS TABLE rmsg.queue;
SELECT * FROM state_before ORDER BY queue;

-- unknown queue: 42704
SELECT sqlstate_of($$SELECT rmsg.put('nope', '\x01'::bytea)$$);
SELECT sqlstate_of($$SELECT rmsg.put('nope', 'text'::text)$$);
SELECT sqlstate_of($$SELECT rmsg.put('nope', '{}'::jsonb)$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch('nope', ARRAY['\x01']::bytea[])$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('nope')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('nope', 1, wait => '1 second')$$);
SELECT sqlstate_of($$SELECT rmsg.drop_queue('nope')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('new', 5, 'nope')$$);
SELECT count(*) AS new_created FROM rmsg.queue WHERE name = 'new';
-- an empty batch still names a queue, which must exist
SELECT sqlstate_of($$SELECT rmsg.put_batch('nope', ARRAY[]::bytea[])$$);

-- existing queue: 42710, and the queue keeps its settings
SELECT sqlstate_of($$SELECT rmsg.create_queue('err')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('err_src', 9, NULL, 'none')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('err_dlq', 1, 'err')$$);

-- bad names: 22023
SELECT sqlstate_of($$SELECT rmsg.create_queue('')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue(repeat('n', 64))$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('with space')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('quo''te')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('double"quote')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('semi;colon')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('qué')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('ok', 5, '')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('ok', 5, 'bad name')$$);
SELECT sqlstate_of($$SELECT rmsg.put('', '\x01'::bytea)$$);
SELECT sqlstate_of($$SELECT rmsg.put(repeat('n', 64), '\x01'::bytea)$$);
SELECT sqlstate_of($$SELECT rmsg.put('bad name', 'x'::text)$$);
SELECT sqlstate_of($$SELECT rmsg.put('qué', '{}'::jsonb)$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch('bad name', ARRAY['\x01']::bytea[])$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('bad name')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('')$$);
SELECT sqlstate_of($$SELECT rmsg.drop_queue('bad name')$$);
SELECT sqlstate_of($$SELECT rmsg.drop_queue(repeat('n', 64))$$);
-- the message names the value, the detail says what a name may be
\set VERBOSITY default
SELECT rmsg.create_queue('bad name');
SELECT rmsg.create_queue(repeat('n', 64));

-- max_deliveries: at least 1 (22023), not null (22004)
SELECT sqlstate_of($$SELECT rmsg.create_queue('md', 0)$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('md', -1)$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('md', NULL)$$);

-- dedup: 'none', 'token' or 'content' (22023), not null (22004)
SELECT sqlstate_of($$SELECT rmsg.create_queue('dd', 5, NULL, 'full')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('dd', 5, NULL, 'Token')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('dd', 5, NULL, '')$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue('dd', 5, NULL, NULL)$$);
SELECT rmsg.create_queue('dd', 5, NULL, 'full');

-- a queue cannot be its own dead-letter queue: 22023
SELECT sqlstate_of($$SELECT rmsg.create_queue('self', 5, 'self')$$);
SELECT count(*) AS created FROM rmsg.queue WHERE name IN ('md', 'dd', 'self', 'ok', 'new');

-- NULL payload: 22004, for every overload and for an element of a batch
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::bytea)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::text)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::jsonb)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::bytea, '{"h": 1}', '1 second')$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch('err', ARRAY['\x01', NULL, '\x03']::bytea[])$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch('err', NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch('err', ARRAY[['\x01'], ['\x02']]::bytea[])$$);

-- NULL queue name: 22004
SELECT sqlstate_of($$SELECT rmsg.put(NULL, '\x01'::bytea)$$);
SELECT sqlstate_of($$SELECT rmsg.put(NULL, 'x'::text)$$);
SELECT sqlstate_of($$SELECT rmsg.put(NULL, '{}'::jsonb)$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch(NULL, ARRAY['\x01']::bytea[])$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get(NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.create_queue(NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.drop_queue(NULL)$$);

-- payload over rmsg.max_payload_size: 54000; at the limit it is accepted
SET rmsg.max_payload_size = 10;
SHOW rmsg.max_payload_size;
SELECT sqlstate_of($$SELECT rmsg.put('err', '\x0102030405060708090a0b'::bytea)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', 'eleven char'::text)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', '{"k": 12345}'::jsonb)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', 'Ünïcödé'::text)$$);   -- 7 characters, 11 bytes
SELECT sqlstate_of($$SELECT rmsg.put_batch('err', ARRAY['\x01', '\x0102030405060708090a0b', '\x03']::bytea[])$$);
SELECT rmsg.put('err', 'eleven char'::text);
BEGIN;
SELECT rmsg.put('err', 'ten chars!'::text) - :e0 > 0 AS at_limit_ok;
SELECT count(*) AS batch_at_limit
  FROM rmsg.put_batch('err', ARRAY['\x0102030405060708090a', '\x01']::bytea[]);
ROLLBACK;
RESET rmsg.max_payload_size;

-- negative intervals: 22023; a lease of zero (get, receive, extend) ends at once; absurd ones are out of range
SELECT sqlstate_of($$SELECT rmsg.put('err', 'x'::text, delay => '-1 second')$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', '\x01'::bytea, NULL, '-1 day')$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', '{}'::jsonb, delay => '1 day -25 hours')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', 1, '-1 second')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', 1, '30 seconds', '-1 second')$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', 1, '300000 years')$$);
SELECT sqlstate_of($$SELECT rmsg.nack(1, '-1 second')$$);
SELECT sqlstate_of($$SELECT rmsg.extend(1, '-1 second')$$);
SELECT sqlstate_of($$SELECT rmsg.extend(1, '0 seconds')$$);

-- get: max at least 1 (22023); max and visibility not null (22004)
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', 0)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', -5)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', NULL)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err', 1, NULL)$$);

-- nack and extend need a msg_id, extend a visibility: 22004
SELECT sqlstate_of($$SELECT rmsg.nack(NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.extend(NULL, '1 second')$$);
SELECT sqlstate_of($$SELECT rmsg.extend(1, NULL)$$);

-- headers must be a JSON object (SQL NULL is fine): 22023
SELECT sqlstate_of($$SELECT rmsg.put('err', 'x'::text, '[1, 2]')$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', '\x01'::bytea, '"string"')$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', '{}'::jsonb, '42')$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', 'x'::text, 'null')$$);
SELECT sqlstate_of($$SELECT rmsg.put_batch('err', ARRAY['\x01']::bytea[], '[]')$$);

-- a data token this session was not handed, without a payload to fall
-- back on: 22023, for every overload
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::bytea, data_token => 1)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::text, data_token => 1)$$);
SELECT sqlstate_of($$SELECT rmsg.put('err', NULL::jsonb, NULL, NULL, 1)$$);
SELECT rmsg.put('err', NULL::bytea, data_token => 7);

-- a dead-letter queue in use cannot be dropped: 2BP01
SELECT sqlstate_of($$SELECT rmsg.drop_queue('err_dlq')$$);
SELECT rmsg.drop_queue('err_dlq');

-- errors inside a transaction leave what it did before them, after a rollback
-- to a savepoint
BEGIN;
SELECT rmsg.put('err', 'in transaction'::text) - :e0 > 0 AS put;
SAVEPOINT s;
SELECT rmsg.put('err', NULL::text);
ROLLBACK TO SAVEPOINT s;
SELECT count(*) AS err_messages FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'err';
ROLLBACK;

-- nothing changed
SELECT count(*) AS changed_queue_figures FROM rmsg.queues q
  FULL JOIN state_before b USING (queue)
 WHERE (q.ready, q.in_flight, q.delayed, q.dead, q.max_deliveries, q.dead_letter_queue,
        q.dedup, q.payload_bytes)
       IS DISTINCT FROM
       (b.ready, b.in_flight, b.delayed, b.dead, b.max_deliveries, b.dead_letter_queue,
        b.dedup, b.payload_bytes);
SELECT (SELECT count(*) FROM ((TABLE rmsg.message EXCEPT TABLE messages_before)
                               UNION ALL
                               (TABLE messages_before EXCEPT TABLE rmsg.message)) d)
         AS changed_messages,
       (SELECT count(*) FROM ((TABLE rmsg.payload EXCEPT TABLE payloads_before)
                               UNION ALL
                               (TABLE payloads_before EXCEPT TABLE rmsg.payload)) d)
         AS changed_payloads,
       (SELECT count(*) FROM ((TABLE rmsg.queue EXCEPT TABLE queue_rows_before)
                               UNION ALL
                               (TABLE queue_rows_before EXCEPT TABLE rmsg.queue)) d)
         AS changed_queues,
       (SELECT count(*) FROM rmsg.dead_message) AS dead_messages;
SELECT queue, ready, in_flight, delayed, dead, payload_bytes FROM rmsg.queues ORDER BY queue;
SELECT count(*) AS queues FROM rmsg.queue;
SELECT live_payload_rows() AS payload_rows;

-- clean up
SELECT rmsg.drop_queue('err_src');
SELECT rmsg.drop_queue('err_dlq');
SELECT rmsg.drop_queue('err');
SELECT count(*) AS queues, (SELECT count(*) FROM rmsg.message) AS messages,
       live_payload_rows() AS payload_rows
  FROM rmsg.queue;

-- insufficient privilege: 42501.  Rights on the tables give no right on a
-- queue: a role needs the queue's own privileges (rmsg.grant_queue).  Even
-- with SELECT on every table, this one may neither put nor get, and its ack
-- of the queue's message changes nothing: for it, that message does not
-- exist (false).  The message stays untouched.
CREATE ROLE regress_rmsg_reader;
GRANT USAGE ON SCHEMA rmsg TO regress_rmsg_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA rmsg TO regress_rmsg_reader;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA rmsg TO regress_rmsg_reader;
SELECT rmsg.create_queue('err_priv');
SELECT rmsg.put('err_priv', 'owned'::text) > 0 AS put_by_owner;
SET ROLE regress_rmsg_reader;
SELECT sqlstate_of($$SELECT rmsg.put('err_priv', 'x'::text)$$);
SELECT sqlstate_of($$SELECT * FROM rmsg.get('err_priv')$$);
SELECT rmsg.ack((SELECT min(msg_id) FROM rmsg.message)) AS acked_by_reader;
RESET ROLE;
SELECT convert_from(inline_data, 'UTF8') AS payload, coalesce(l.deliveries, 0) AS deliveries,
       l.lease_until IS NULL AS not_leased
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) LEFT JOIN rmsg.lease l USING (msg_id)
 WHERE q.name = 'err_priv';
SELECT rmsg.drop_queue('err_priv');
DROP OWNED BY regress_rmsg_reader;
DROP ROLE regress_rmsg_reader;

