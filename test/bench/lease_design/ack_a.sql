-- Appended to get10_a.sql for the drain: the ack of the messages the get
-- returned (:ids), in a transaction of its own.
DELETE FROM a.message WHERE msg_id = ANY(:ids::bigint[]);
