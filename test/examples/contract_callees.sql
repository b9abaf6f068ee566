-- The callees of the README's worked example (and of test/demo.sh): two
-- components, 'warehouse' and 'billing', in one database.  Each call is one
-- transaction: accept it, do the work and store the reply only if it is
-- new, so a call delivered twice is answered twice but worked once.
--
-- rmsg.call (from the shop's database, through a foreign server) reaches
-- them through rmsg.serve_call, which does that around the handler
-- registered for each callee.  handle() is the same by hand, for a caller
-- that carries its calls itself (over dblink, say).
CREATE EXTENSION IF NOT EXISTS recoverable_msg;
CREATE TABLE stock (item text PRIMARY KEY, on_hand int NOT NULL);
INSERT INTO stock VALUES ('book', 100);
CREATE TABLE charges (caller text, call_id bigint, amount int, PRIMARY KEY (caller, call_id));

-- The work of each callee: the reply to one new call.
CREATE FUNCTION warehouse(caller text, call_id bigint, request bytea)
RETURNS bytea LANGUAGE sql AS $$
    UPDATE stock SET on_hand = on_hand - 1 WHERE item = 'book'
    RETURNING convert_to(format('reserved (%s left)', on_hand), 'UTF8')
$$;

CREATE FUNCTION billing(caller text, call_id bigint, request bytea)
RETURNS bytea LANGUAGE sql AS $$
    INSERT INTO charges VALUES (caller, call_id, 12)
    RETURNING convert_to(format('charged 12 for %s', convert_from(request, 'UTF8')), 'UTF8')
$$;

SELECT rmsg.set_callee_handler('warehouse', 'warehouse(text,bigint,bytea)');
SELECT rmsg.set_callee_handler('billing', 'billing(text,bigint,bytea)');

-- By hand: what rmsg.serve_call does.
CREATE FUNCTION handle(callee text, caller text, call_id bigint, request bytea)
RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
    accepted record;
    answer bytea;
BEGIN
    SELECT * INTO accepted FROM rmsg.accept_call(callee, caller, call_id, request);
    IF accepted.status = 'duplicate' THEN
        RETURN accepted.reply;           -- answered before: same answer, no work
    END IF;
    IF callee = 'warehouse' THEN
        answer := warehouse(caller, call_id, request);
    ELSE
        answer := billing(caller, call_id, request);
    END IF;
    PERFORM rmsg.reply(callee, caller, call_id, answer);
    RETURN answer;
END $$;
