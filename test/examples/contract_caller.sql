-- The caller of the README's worked example (and of test/demo.sh): the
-- component 'shop' takes orders; for each it calls 'warehouse' and then
-- 'billing' in another database (or on another server) through dblink.
-- Between calls it is deterministic: its state is what the replies made it.
-- It always begins with rmsg.restart, so the same procedure starts it the
-- first time, continues it after a normal end, and recovers it after a
-- crash: calls whose replies the log kept are not sent again.
CREATE EXTENSION IF NOT EXISTS recoverable_msg;
CREATE EXTENSION IF NOT EXISTS dblink;

CREATE PROCEDURE take_orders(orders int, callees_conninfo text, pause float DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    state jsonb;
    call record;
    callee text;
    request bytea;
    reply bytea;
BEGIN
    state := coalesce(rmsg.restart('shop'), '{"done": 0, "last": []}');
    COMMIT;
    PERFORM dblink_connect('callees', callees_conninfo);
    WHILE (state->>'done')::int < orders LOOP
        state := jsonb_set(state, '{last}', '[]');
        FOREACH callee IN ARRAY ARRAY['warehouse', 'billing'] LOOP
            request := convert_to('order ' || ((state->>'done')::int + 1), 'UTF8');
            SELECT * INTO call FROM rmsg.prepare_call('shop', callee, request);
            COMMIT;
            reply := call.logged_reply;
            IF reply IS NULL THEN        -- not in the log: send the call
                SELECT r INTO reply
                  FROM dblink('callees', format('SELECT handle(%L, %L, %s, %L)',
                                                callee, 'shop', call.call_id, request)) AS t(r bytea);
                PERFORM rmsg.record_reply('shop', call.call_id, reply);
                COMMIT;
            END IF;
            state := jsonb_set(state, '{last}',
                               (state->'last') || to_jsonb(convert_from(reply, 'UTF8')));
        END LOOP;
        state := jsonb_set(state, '{done}', to_jsonb((state->>'done')::int + 1));
        IF (state->>'done')::int % 5 = 0 THEN
            PERFORM rmsg.checkpoint('shop', state);
            COMMIT;
        END IF;
        PERFORM pg_sleep(pause);
    END LOOP;
    PERFORM dblink_disconnect('callees');
    RAISE NOTICE 'shop: % orders done, last replies %', state->'done', state->'last';
END $$;
