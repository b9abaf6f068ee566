--
-- dedup_tokens: data tokens.  A put or get hands the session a
-- token; a put by token references the payload row that already holds the
-- data instead of writing it again, falls back to the payload given when
-- that row is gone, and fails cleanly without one.  rmsg.last_data_token()
-- answers only in the transaction that was handed the token;
-- rmsg.put_with_token hands it back in the same statement.
--
\pset null '(null)'
-- tokens are random: error messages show them as N
-- 5000 and 1000 distinct bytes: above and below rmsg.inline_payload_max
\i test/lib/regress_helpers.sql
CREATE TEMP TABLE data AS
SELECT convert_to(repeat('big-', 1250), 'UTF8') AS big,
       convert_to(repeat('mid-', 250), 'UTF8') AS mid,
       convert_to('tiny', 'UTF8') AS tiny;
CREATE TEMP TABLE stats_before AS SELECT * FROM rmsg.log_stats;

SELECT rmsg.create_queue('tk_a'), rmsg.create_queue('tk_b'),
       rmsg.create_queue('tk_none', dedup => 'none');

-- a new session has no last token
SELECT rmsg.last_data_token() IS NULL AS no_token_yet;

-- put, then the same data by token: one payload row, two references
SELECT msg_id AS first, token AS big_token FROM data, rmsg.put_with_token('tk_a', big) \gset
SELECT msg_id - :first AS rel, token <> :big_token AS new_token
  FROM rmsg.put_with_token('tk_b', NULL::bytea, data_token => :big_token);
SELECT msg_id - :first AS rel, payload_id IS NOT NULL AS by_row, inline_data IS NULL AS no_inline,
       payload_size
  FROM rmsg.message ORDER BY msg_id;
SELECT count(DISTINCT payload_id) AS payload_rows_used FROM rmsg.message;

-- a consumer gets it and puts it on by the get's token: the reference names
-- the original payload row, not the message it got (no chains).  In the
-- get's transaction, rmsg.last_data_token() names the data it got.
BEGIN;
SELECT msg_id - :first AS rel, payload = (SELECT big FROM data) AS same_data,
       data_token IS NOT NULL AS has_token
  FROM rmsg.get('tk_b');
SELECT rmsg.last_data_token() AS got_token \gset
SELECT rmsg.put('tk_a', NULL::bytea, data_token => :got_token) AS third \gset
COMMIT;
-- and in the next transaction it answers nothing: that may be another
-- client's, behind a pooler in transaction mode
SELECT rmsg.last_data_token() IS NULL AS not_in_the_next_transaction;
SELECT count(DISTINCT payload_id) AS payload_rows_used, count(*) AS messages FROM rmsg.message;

-- inline data is moved to a payload row on its first share; the next share
-- references that row; the original keeps its inline copy
SELECT msg_id AS mid_id, token AS mid_token FROM data, rmsg.put_with_token('tk_a', mid) \gset
SELECT rmsg.put('tk_b', NULL::bytea, data_token => :mid_token) AS mid2 \gset
SELECT rmsg.put('tk_b', NULL::bytea, data_token => :mid_token) AS mid3 \gset
SELECT msg_id - :mid_id AS rel, payload_id IS NOT NULL AS by_row, inline_data IS NOT NULL AS has_inline
  FROM rmsg.message WHERE msg_id IN (:mid_id, :mid2, :mid3) ORDER BY msg_id;
SELECT count(DISTINCT payload_id) AS mid_rows FROM rmsg.message WHERE msg_id IN (:mid2, :mid3);

-- data too small to be worth a reference is simply written again
BEGIN;
SELECT rmsg.put('tk_a', tiny) FROM data \gset
SELECT rmsg.put('tk_b', NULL::bytea, data_token => rmsg.last_data_token()) AS tiny2 \gset
COMMIT;
SELECT payload_id IS NULL AS inline, convert_from(inline_data, 'UTF8') AS data
  FROM rmsg.message WHERE msg_id = :tiny2;

-- a queue with dedup 'none' never references: the token's data is copied
SELECT rmsg.put('tk_none', NULL::bytea, data_token => :big_token) AS copied \gset
SELECT payload_id IS NOT NULL AS by_row,
       payload_id <> (SELECT payload_id FROM rmsg.message WHERE msg_id = :first) AS own_row
  FROM rmsg.message WHERE msg_id = :copied;
SELECT payload = (SELECT big FROM data) AS same_data FROM rmsg.get('tk_none');

-- the text and jsonb forms take a token too
SELECT rmsg.put('tk_b', NULL::text, data_token => :big_token) IS NOT NULL AS text_put;
SELECT rmsg.put('tk_b', NULL::jsonb, NULL, NULL, :big_token) IS NOT NULL AS jsonb_put;

-- every message of tk_b carries exactly its data
SELECT count(*) AS messages,
       count(*) FILTER (WHERE payload = (SELECT big FROM data)) AS big,
       count(*) FILTER (WHERE payload = (SELECT mid FROM data)) AS mid,
       count(*) FILTER (WHERE payload = (SELECT tiny FROM data)) AS tiny
  FROM rmsg.get('tk_b', 100);

-- counters: what was written and what was referenced instead
SELECT l.payload_bytes_written - b.payload_bytes_written AS written,
       l.payload_bytes_referenced - b.payload_bytes_referenced AS referenced,
       l.puts_referenced - b.puts_referenced AS puts_referenced
  FROM rmsg.log_stats l, stats_before b;
SELECT queue, bytes_written, bytes_referenced FROM rmsg.queues
 WHERE queue LIKE 'tk\_%' ORDER BY queue;

------------------------------------------------------------------------------
-- What a token cannot do
------------------------------------------------------------------------------
CREATE TEMP TABLE messages_before AS TABLE rmsg.message;
CREATE TEMP TABLE payloads_before AS TABLE rmsg.payload;

-- an invented token: 22023 without a payload
SELECT sqlstate_of($$SELECT rmsg.put('tk_a', NULL::bytea, data_token => 42)$$);
SELECT rmsg.put('tk_a', NULL::bytea, data_token => -1);
-- a payload that is not the token's data (another size): 22023
SELECT sqlstate_of(format($$SELECT rmsg.put('tk_a', '\x0102'::bytea, data_token => %s)$$, :big_token));
-- neither payload nor token: 22004
SELECT sqlstate_of($$SELECT rmsg.put('tk_a', NULL::bytea)$$);
-- nothing was written by the failures
SELECT (SELECT count(*) FROM ((TABLE rmsg.message EXCEPT TABLE messages_before)
                              UNION ALL
                              (TABLE messages_before EXCEPT TABLE rmsg.message)) d) AS changed_messages,
       (SELECT count(*) FROM ((TABLE rmsg.payload EXCEPT TABLE payloads_before)
                              UNION ALL
                              (TABLE payloads_before EXCEPT TABLE rmsg.payload)) d) AS changed_payloads;

-- an unknown token with the payload given: the seed's fallback writes it
SELECT rmsg.put('tk_a', tiny, data_token => 42) IS NOT NULL AS written FROM data;

-- the data is gone once its messages are acked and its row collected: 55000
-- without a payload; with one, the data is written again
SELECT rmsg.ack(array_agg(msg_id)) > 0 AS acked FROM rmsg.message;
SELECT rmsg.collect_payloads() AS collected;
SELECT count(*) AS payload_rows FROM rmsg.payload;
SELECT sqlstate_of(format($$SELECT rmsg.put('tk_a', NULL::bytea, data_token => %s)$$, :big_token));
SELECT rmsg.put('tk_a', big, data_token => :big_token) AS again FROM data \gset
SELECT count(*) AS payload_rows FROM rmsg.payload;
SELECT payload = (SELECT big FROM data) AS same_data FROM rmsg.get('tk_a');

-- an empty get leaves no last token
BEGIN;
SELECT rmsg.put('tk_b', 'x'::text) IS NOT NULL AS put;
SELECT rmsg.last_data_token() IS NOT NULL AS last_token;
SELECT count(*) FROM rmsg.get('tk_a');
SELECT rmsg.last_data_token() IS NULL AS no_last_token;
COMMIT;

-- the session keeps its last 256 tokens: older ones are forgotten
SELECT token AS old_token FROM data, rmsg.put_with_token('tk_a', mid) \gset
SELECT count(rmsg.put('tk_b', 'x'::text)) FROM generate_series(1, 256);
SELECT sqlstate_of(format($$SELECT rmsg.put('tk_a', NULL::bytea, data_token => %s)$$, :old_token));

-- tokens belong to the session: a new connection does not know them
SELECT token AS other_session_token FROM data, rmsg.put_with_token('tk_a', big) \gset
\c
SELECT sqlstate_of(format($$SELECT rmsg.put('tk_a', NULL::bytea, data_token => %s)$$, :other_session_token));

SELECT rmsg.drop_queue('tk_a'), rmsg.drop_queue('tk_b'), rmsg.drop_queue('tk_none');
SELECT rmsg.collect_payloads() >= 0 AS collected;
SELECT count(*) AS payload_rows FROM rmsg.payload;
