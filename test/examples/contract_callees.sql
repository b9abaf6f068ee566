-- The callees of the README's worked example (and of test/demo.sh): two
-- components, 'warehouse' and 'billing', in one database.  Each call is one
-- transaction: accept it, do the work and store the reply only if it is
-- new, so a call delivered twice is answered twice but worked once.
CREATE EXTENSION IF NOT EXISTS recoverable_msg;
CREATE TABLE stock (item text PRIMARY KEY, on_hand int NOT NULL);
INSERT INTO stock VALUES ('book', 100);
CREATE TABLE charges (caller text, call_id bigint, amount int, PRIMARY KEY (caller, call_id));

CREATE FUNCTION handle(callee text, caller text, call_id bigint, request bytea)
RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
    accepted record;
    answer text;
BEGIN
    SELECT * INTO accepted FROM rmsg.accept_call(callee, caller, call_id, request);
    IF accepted.status = 'duplicate' THEN
        RETURN accepted.reply;           -- answered before: same answer, no work
    END IF;
    IF callee = 'warehouse' THEN
        UPDATE stock SET on_hand = on_hand - 1 WHERE item = 'book'
        RETURNING format('reserved (%s left)', on_hand) INTO answer;
    ELSE
        INSERT INTO charges VALUES (caller, call_id, 12);
        answer := format('charged 12 for %s', convert_from(request, 'UTF8'));
    END IF;
    PERFORM rmsg.reply(callee, caller, call_id, convert_to(answer, 'UTF8'));
    RETURN convert_to(answer, 'UTF8');
END $$;
