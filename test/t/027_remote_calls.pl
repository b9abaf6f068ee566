use strict;
use warnings FATAL => 'all';

# rmsg.call (remote/call.c, contract/serve.c): the committed interaction
# contract between two servers, made by the extension.  The caller's
# server calls the callee's rmsg.serve_call over libpq; there the handler
# registered with rmsg.set_callee_handler does the work.  Each scenario is
# a crash or failure of the contract, and each call's work must be done
# exactly once, its reply the same every time it is asked for.
#  1. Calls: the replies, and the work done once per call.
#  2. The caller crashes after the callee committed, before the caller's
#     own commit: after rmsg.restart the caller runs again, gets the logged
#     reply of the earlier call without sending (the callee is down then),
#     and the kept reply of the lost one without the work done again.
#  3. The callee's handler fails: nothing commits there, the caller's call
#     fails, and run again it is done once.
#  4. The callee crashes in the middle of a call: the call fails, and run
#     again after the callee is back it is done once.
#  5. Refusals: two calls to one callee in a transaction (55000), a callee
#     without a handler (42704, from the other server), a server without
#     USAGE (42501), a handler of the wrong shape (42P13).

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

my $callee = new_node('callee', extension => 1);
my $caller = new_node('caller', extension => 1);
my $os_user = getpwuid($<);

$callee->safe_psql('postgres', q{
CREATE TABLE work_done (seq serial PRIMARY KEY, caller text, request text);
CREATE SEQUENCE attempts;
CREATE FUNCTION reserve(caller text, call_id bigint, request bytea) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
  r text := convert_from(request, 'UTF8');
  n int;
BEGIN
  -- a failure that is not undone with the transaction: the first attempt
  IF r = 'fail once' AND nextval('attempts') = 1 THEN
    RAISE EXCEPTION 'the warehouse is busy';
  END IF;
  IF r = 'slow' THEN
    PERFORM pg_sleep(30);
  END IF;
  INSERT INTO work_done (caller, request) VALUES (caller, r);
  -- the reply says how much work the callee had done: a second doing of
  -- the same call would answer differently
  SELECT count(*) INTO n FROM work_done;
  RETURN convert_to('reserved ' || r || ' as #' || n, 'UTF8');
END $$;
SELECT rmsg.set_callee_handler('warehouse', 'reserve(text,bigint,bytea)');
});
$caller->safe_psql('postgres', qq{
CREATE EXTENSION postgres_fdw;
CREATE SERVER wh FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '${\ $callee->host }', port '${\ $callee->port }', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER wh OPTIONS (user '$os_user');
});

# One call as the caller, after a restart of its log when $restart.
sub call
{
	my ($request, %opt) = @_;
	my $restart = $opt{restart} ? q{SELECT rmsg.restart('shop') IS NULL;} : '';
	return $caller->psql('postgres', qq{$restart
SELECT convert_from(rmsg.call('shop', 'wh', 'warehouse', convert_to('$request', 'UTF8')), 'UTF8');});
}

sub work_done
{
	return $callee->safe_psql('postgres',
		q{SELECT coalesce(string_agg(request, ',' ORDER BY seq), '-') FROM work_done});
}

#---------------------------------------------------------------------------
# 1. Calls
#---------------------------------------------------------------------------
my ($rc, $out, $err) = call('o1', restart => 1);
is("$rc|$out", "0|t\nreserved o1 as #1", 'a call returns the handler\'s reply');
($rc, $out) = call('o2');
is("$rc|$out", '0|reserved o2 as #2', 'a second call, in its own transaction');
is(work_done(), 'o1,o2', 'the work of each call is done once');

#---------------------------------------------------------------------------
# 2. The caller crashes between the callee's commit and its own
#---------------------------------------------------------------------------
my $s = session_open($caller, 'shop');
session_query($s, q{BEGIN;
SELECT convert_from(rmsg.call('shop', 'wh', 'warehouse', convert_to('o3', 'UTF8')), 'UTF8');},
	'o3 is called in a transaction that does not commit');
is(work_done(), 'o1,o2,o3', 'the callee did o3 and committed');
$caller->stop('immediate');
$caller->start;
session_kill($s);

# The caller runs again from the start, as the contract asks.  With the
# callee down, the calls it logged come from its log: nothing is sent.
$callee->stop('fast');
($rc, $out) = call('o1', restart => 1);
is("$rc|$out", "0|t\nreserved o1 as #1", 'replayed, o1 comes from the log with the callee down');
($rc, $out) = call('o2');
is("$rc|$out", '0|reserved o2 as #2', 'and so does o2');
($rc, $out, $err) = call('o3');
isnt($rc, 0, 'o3, which the log lost, must go to the callee, which is down');
$callee->start;
($rc, $out) = call('o1', restart => 1);
($rc, $out) = call('o2');
($rc, $out) = call('o3');
is("$rc|$out", '0|reserved o3 as #3', 'o3 sent again: the callee answers with the reply it kept');
is(work_done(), 'o1,o2,o3', 'and does not do o3 again');

#---------------------------------------------------------------------------
# 3. The callee's handler fails
#---------------------------------------------------------------------------
($rc, $out, $err) = call('fail once');
isnt($rc, 0, 'a call whose handler fails fails');
like($err, qr/the warehouse is busy/, 'with the handler\'s error');
is(work_done(), 'o1,o2,o3', 'nothing of it committed at the callee');
$caller->psql('postgres', q{SELECT rmsg.restart('shop')});
call($_) for qw(o1 o2 o3);
($rc, $out) = call('fail once');
is("$rc|$out", '0|reserved fail once as #4', 'run again, it is done');
is(work_done(), 'o1,o2,o3,fail once', 'once');

#---------------------------------------------------------------------------
# 4. The callee crashes in the middle of a call
#---------------------------------------------------------------------------
$s = session_open($caller, 'shop');
session_send($s, q{SELECT convert_from(rmsg.call('shop', 'wh', 'warehouse', convert_to('slow', 'UTF8')), 'UTF8');});
ok( $callee->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%serve_call%' AND wait_event = 'PgSleep'}),
	'the slow call is in the callee\'s handler');
$callee->stop('immediate');
$callee->start;
session_kill($s);
is(work_done(), 'o1,o2,o3,fail once', 'the crashed call left nothing at the callee');
# the handler sleeps no more: the request is the same, the callee answers fast
$callee->safe_psql('postgres', q{
CREATE OR REPLACE FUNCTION reserve(caller text, call_id bigint, request bytea) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
  r text := convert_from(request, 'UTF8');
  n int;
BEGIN
  INSERT INTO work_done (caller, request) VALUES (caller, r);
  -- the reply says how much work the callee had done: a second doing of
  -- the same call would answer differently
  SELECT count(*) INTO n FROM work_done;
  RETURN convert_to('reserved ' || r || ' as #' || n, 'UTF8');
END $$;});
$caller->psql('postgres', q{SELECT rmsg.restart('shop')});
call($_) for ('o1', 'o2', 'o3', 'fail once');
($rc, $out) = call('slow');
is("$rc|$out", '0|reserved slow as #5', 'run again after the callee\'s crash, the call is done');
is(work_done(), 'o1,o2,o3,fail once,slow', 'once');

#---------------------------------------------------------------------------
# 5. Refusals
#---------------------------------------------------------------------------
sub sqlstate_of
{
	my ($node, $sql) = @_;
	my ($r, $o, $e) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $e =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "rc $r: $e";
}
is( sqlstate_of($caller, q{BEGIN;
SELECT rmsg.call('shop', 'wh', 'warehouse', 'a');
SELECT rmsg.call('shop', 'wh', 'warehouse', 'b');}),
	'55000', 'two calls to one callee in a transaction: 55000');
is(sqlstate_of($caller, q{SELECT rmsg.call('shop', 'wh', 'nobody', 'a')}),
	'42704', 'a callee without a handler on the other server: 42704');
$caller->safe_psql('postgres', q{
CREATE ROLE clerk;
GRANT USAGE ON SCHEMA rmsg TO clerk;
SELECT rmsg.grant_component('shop', 'clerk', 'use');});
is(sqlstate_of($caller, q{SET ROLE clerk; SELECT rmsg.call('shop', 'wh', 'warehouse', 'a')}),
	'42501', 'a role without USAGE on the server: 42501');
is(sqlstate_of($callee, q{
CREATE FUNCTION wrong(request bytea) RETURNS bytea LANGUAGE sql AS 'SELECT $1';
SELECT rmsg.set_callee_handler('warehouse', 'wrong(bytea)')}),
	'42P13', 'a handler of the wrong shape: 42P13');

$caller->stop;
$callee->stop;
done_testing();
