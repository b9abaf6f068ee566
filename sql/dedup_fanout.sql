--
-- dedup_fanout: put_many, forward, dedup = 'content' and collect_payloads.
--
\pset null '(null)'
\i test/lib/regress_helpers.sql
CREATE TEMP TABLE data AS
SELECT convert_to(repeat('big-', 1250), 'UTF8') AS big,
       convert_to(repeat('mid-', 250), 'UTF8') AS mid,
       convert_to('tiny', 'UTF8') AS tiny;
SELECT rmsg.collect_payloads() >= 0 AS clean_start;

SELECT rmsg.create_queue('fo_a'), rmsg.create_queue('fo_b'),
       rmsg.create_queue('fo_none', dedup => 'none'),
       rmsg.create_queue('fo_c1', dedup => 'content'),
       rmsg.create_queue('fo_c2', dedup => 'content');

------------------------------------------------------------------------------
-- put_many: one payload row for every queue that may reference it
------------------------------------------------------------------------------
SELECT array_agg(id ORDER BY n) AS ids
  FROM data, rmsg.put_many(ARRAY['fo_a', 'fo_b', 'fo_none', 'fo_c1', 'fo_a'], big,
                           '{"k": 1}') WITH ORDINALITY AS p (id, n) \gset
-- msg_ids in array order, one per element (a queue named twice gets two)
SELECT array_length(:'ids'::bigint[], 1) AS messages,
       (SELECT array_agg(m.queue_id ORDER BY m.msg_id) = array_agg(q.queue_id ORDER BY u.n)
          FROM unnest(:'ids'::bigint[]) WITH ORDINALITY u (id, n)
          JOIN rmsg.message m ON m.msg_id = u.id
          JOIN rmsg.queue q ON q.queue_id = m.queue_id) AS in_order;
-- the 'none' queue got its own copy; the others share one row
SELECT q.name, count(DISTINCT m.payload_id) AS rows, count(*) AS messages
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 GROUP BY q.name ORDER BY q.name;
SELECT count(*) AS payload_rows FROM rmsg.payload;
-- every copy reads back the data and the headers
SELECT count(*) FILTER (WHERE g.payload = d.big AND g.headers = '{"k": 1}') AS intact
  FROM data d, LATERAL (SELECT * FROM rmsg.get('fo_a', 10)
                        UNION ALL SELECT * FROM rmsg.get('fo_b', 10)
                        UNION ALL SELECT * FROM rmsg.get('fo_none', 10)
                        UNION ALL SELECT * FROM rmsg.get('fo_c1', 10)) g;

-- inline-size data shared by several queues gets one payload row;
-- data below 256 bytes stays inline everywhere
BEGIN;
SELECT count(*) FROM data, rmsg.put_many(ARRAY['fo_a', 'fo_b', 'fo_c2'], mid);
SELECT rmsg.last_data_token() AS mid_many_token \gset
COMMIT;
SELECT count(*) FROM data, rmsg.put_many(ARRAY['fo_a', 'fo_b'], tiny);
SELECT payload_size, count(*) AS messages, count(DISTINCT payload_id) AS rows,
       count(inline_data) AS inline
  FROM rmsg.message WHERE payload_size < 5000 GROUP BY payload_size ORDER BY payload_size;
-- one queue, inline-size data: nothing to share, stays inline
SELECT count(*) FROM data, rmsg.put_many(ARRAY['fo_a'], mid);
SELECT count(*) FILTER (WHERE inline_data IS NOT NULL) AS inline_mid
  FROM rmsg.message WHERE payload_size = 1000;

-- put_many's data token names the payload row it wrote
SELECT rmsg.put('fo_b', NULL::bytea, data_token => :mid_many_token) AS by_token \gset
SELECT payload_id = (SELECT min(payload_id) FROM rmsg.message WHERE payload_size = 1000)
       AS same_row
  FROM rmsg.message WHERE msg_id = :by_token;

-- an empty array puts nothing
SELECT count(*) AS none FROM data, rmsg.put_many('{}', big);

-- bad input: the right SQLSTATE and nothing written
CREATE TEMP TABLE messages_before AS TABLE rmsg.message;
SELECT sqlstate_of($$SELECT rmsg.put_many(NULL, '\x01')$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY['fo_a', NULL], '\x01')$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY[['fo_a'], ['fo_b']], '\x01')$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY['fo_a', 'fo_nosuch'], '\x01')$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY['fo_a', 'bad name'], '\x01')$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY['fo_a'], NULL)$$);
SELECT sqlstate_of($$SELECT rmsg.put_many(ARRAY['fo_a'], '\x01', '[1]')$$);
SELECT rmsg.put_many(ARRAY['fo_a', 'fo_nosuch'], '\x01');
SELECT count(*) AS changed FROM ((TABLE rmsg.message EXCEPT TABLE messages_before)
                                 UNION ALL
                                 (TABLE messages_before EXCEPT TABLE rmsg.message)) d;

------------------------------------------------------------------------------
-- forward: the same data and headers, by reference
------------------------------------------------------------------------------
SELECT rmsg.put('fo_a', big, '{"h": "big"}') AS src FROM data \gset
SELECT rmsg.forward(:src, 'fo_b') AS fwd1 \gset
SELECT rmsg.forward(:fwd1, 'fo_c1') AS fwd2 \gset
SELECT msg_id = :src AS source, payload_id = (SELECT payload_id FROM rmsg.message WHERE msg_id = :src)
       AS same_row, headers
  FROM rmsg.message WHERE msg_id IN (:src, :fwd1, :fwd2) ORDER BY msg_id;
-- inline data: the first forward moves it to a payload row, the next
-- forward of the same message references that row
SELECT rmsg.put('fo_a', mid) AS isrc FROM data \gset
SELECT rmsg.forward(:isrc, 'fo_b') AS ifwd1 \gset
SELECT rmsg.forward(:isrc, 'fo_c1') AS ifwd2 \gset
SELECT msg_id - :isrc AS rel, payload_id IS NOT NULL AS by_row, inline_data IS NOT NULL AS inline
  FROM rmsg.message WHERE msg_id IN (:isrc, :ifwd1, :ifwd2) ORDER BY msg_id;
SELECT count(DISTINCT payload_id) AS rows FROM rmsg.message WHERE msg_id IN (:ifwd1, :ifwd2);
-- to a 'none' queue: a copy
SELECT rmsg.forward(:src, 'fo_none') AS ncopy \gset
SELECT payload_id <> (SELECT payload_id FROM rmsg.message WHERE msg_id = :src) AS own_row
  FROM rmsg.message WHERE msg_id = :ncopy;
-- a dead message can be forwarded (here: dead-lettered with max_deliveries 1)
SELECT rmsg.create_queue('fo_dead', max_deliveries => 1);
SELECT rmsg.put('fo_dead', big) AS dead_src FROM data \gset
SELECT count(*) FROM rmsg.get('fo_dead', 1, '0 seconds');
SELECT count(*) FROM rmsg.get('fo_dead');
SELECT count(*) AS dead FROM rmsg.dead_message WHERE msg_id = :dead_src;
SELECT rmsg.forward(:dead_src, 'fo_b') IS NOT NULL AS forwarded_dead;
-- errors
SELECT sqlstate_of($$SELECT rmsg.forward(-1, 'fo_b')$$);
SELECT sqlstate_of(format($$SELECT rmsg.forward(%s, 'fo_nosuch')$$, :src));
SELECT sqlstate_of($$SELECT rmsg.forward(NULL, 'fo_b')$$);
SELECT sqlstate_of(format($$SELECT rmsg.forward(%s, NULL)$$, :src));

------------------------------------------------------------------------------
-- dedup = 'content': equal data found by hash, compared byte for byte
------------------------------------------------------------------------------
SELECT rmsg.put('fo_c1', convert_to(repeat('same', 100), 'UTF8')) AS c1 \gset
SELECT rmsg.put('fo_c2', convert_to(repeat('same', 100), 'UTF8')) AS c2 \gset
-- same size, other bytes: not a match
SELECT rmsg.put('fo_c2', convert_to(repeat('diff', 100), 'UTF8')) AS c3 \gset
-- the payload row of a 'token' queue is not findable by content
SELECT rmsg.put('fo_a', convert_to(repeat('tokn', 1250), 'UTF8')) AS t1 \gset
SELECT rmsg.put('fo_c1', convert_to(repeat('tokn', 1250), 'UTF8')) AS t2 \gset
SELECT (SELECT payload_id FROM rmsg.message WHERE msg_id = :c1)
     = (SELECT payload_id FROM rmsg.message WHERE msg_id = :c2) AS equal_shared,
       (SELECT payload_id FROM rmsg.message WHERE msg_id = :c2)
    <> (SELECT payload_id FROM rmsg.message WHERE msg_id = :c3) AS different_not,
       (SELECT payload_id FROM rmsg.message WHERE msg_id = :t1)
    <> (SELECT payload_id FROM rmsg.message WHERE msg_id = :t2) AS token_row_not_findable;
-- a batch to a content queue shares equal elements, also among themselves
SELECT count(*) FROM rmsg.put_batch('fo_c2', ARRAY[convert_to(repeat('same', 100), 'UTF8'),
                                                   convert_to(repeat('bat1', 100), 'UTF8'),
                                                   convert_to(repeat('bat1', 100), 'UTF8')]);
SELECT convert_from(substr(p.data, 1, 4), 'UTF8') AS data, count(*) AS messages,
       count(DISTINCT m.payload_id) AS rows
  FROM rmsg.message m JOIN rmsg.payload p USING (payload_id)
 WHERE m.payload_size IN (400, 5000) AND p.hash IS NOT NULL
 GROUP BY 1 ORDER BY 1;
-- small data stays inline even in a content queue
SELECT rmsg.put('fo_c1', tiny) AS small FROM data \gset
SELECT inline_data IS NOT NULL AS inline FROM rmsg.message WHERE msg_id = :small;

------------------------------------------------------------------------------
-- collect_payloads: only rows no live or dead message references
------------------------------------------------------------------------------
SELECT rmsg.collect_payloads() AS collected_while_referenced;
SELECT count(*) AS acked FROM rmsg.message m, rmsg.ack(m.msg_id) a
 WHERE m.queue_id <> (SELECT queue_id FROM rmsg.queue WHERE name = 'fo_dead');
-- the dead message keeps its row
SELECT rmsg.collect_payloads() > 0 AS collected;
SELECT count(*) AS payload_rows,
       count(*) FILTER (WHERE payload_id = (SELECT payload_id FROM rmsg.dead_message
                                             WHERE msg_id = :dead_src)) AS dead_ones
  FROM rmsg.payload;
SELECT rmsg.collect_payloads() AS again;
SELECT rmsg.ack(:dead_src);
SELECT rmsg.collect_payloads() AS last_one;
SELECT count(*) AS payload_rows FROM rmsg.payload;
SELECT payloads_collected > 0 AS counted FROM rmsg.log_stats;

SELECT rmsg.drop_queue(q) FROM unnest(ARRAY['fo_a', 'fo_b', 'fo_none', 'fo_c1', 'fo_c2', 'fo_dead']) q;
