-- Appended to get10_b.sql and get10_b2.sql for the drain: the ack of the
-- messages the get returned (:ids), message and lease rows in one
-- statement, in a transaction of its own.
WITH dm AS (DELETE FROM b.message WHERE msg_id = ANY(:ids::bigint[]) RETURNING msg_id)
DELETE FROM b.lease l USING dm WHERE l.msg_id = dm.msg_id;
