-- The caller of the README's worked example (and of test/demo.sh): the
-- component 'shop' takes orders; for each it calls 'warehouse' and then
-- 'billing' in another database (or on another server) with rmsg.call,
-- through the foreign server callees_server names.  Between calls it is
-- deterministic: its state is what the replies made it.  It always begins
-- with rmsg.restart, so the same procedure starts it the first time,
-- continues it after a normal end, and recovers it after a crash: calls
-- whose replies the log kept are not sent again, and a call the callee
-- answered is answered again from what it kept.  It commits after each
-- call, as the contract asks.
CREATE EXTENSION IF NOT EXISTS recoverable_msg;

CREATE PROCEDURE take_orders(orders int, callees_server text, pause float DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    state jsonb;
    callee text;
    reply bytea;
BEGIN
    state := coalesce(rmsg.restart('shop'), '{"done": 0, "last": []}');
    COMMIT;
    WHILE (state->>'done')::int < orders LOOP
        state := jsonb_set(state, '{last}', '[]');
        FOREACH callee IN ARRAY ARRAY['warehouse', 'billing'] LOOP
            reply := rmsg.call('shop', callees_server, callee,
                               convert_to('order ' || ((state->>'done')::int + 1), 'UTF8'));
            COMMIT;
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
    RAISE NOTICE 'shop: % orders done, last replies %', state->'done', state->'last';
END $$;
