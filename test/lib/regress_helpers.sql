-- Helpers the pg_regress files share (sql/*.sql).  Each file includes this
-- first, so that it runs on its own as well as in the suite; pg_regress
-- runs psql in the tree's top directory, which the path is relative to.

-- Runs a statement and shows the error it raised as 'SQLSTATE: message'.
-- Numbers of ten digits or more (random data tokens) read 'N', so that the
-- output does not depend on them.
CREATE OR REPLACE FUNCTION sqlstate_of(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE statement;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9]{10,}', 'N', 'g');
END
$$;

-- Payload rows still in use: the unreferenced ones are collected first.
CREATE OR REPLACE FUNCTION live_payload_rows() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT rmsg.collect_payloads();
  SELECT count(*) FROM rmsg.payload;
$$;
