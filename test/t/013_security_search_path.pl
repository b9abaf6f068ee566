use strict;
use warnings FATAL => 'all';

# Nothing outside the extension can redirect its statements.  A role that
# may create objects in a schema on another role's search_path plants
# functions and operators there that PostgreSQL would prefer to the ones in
# pg_catalog: unnest(int[]) beats unnest(anyarray) whatever the order of
# the path, and public.= wins over pg_catalog.= when the path names public
# first.  In 1.0 the worker (a superuser) and every caller ran such
# statements, and the planted code ran as them: the attacker became
# superuser.  Now every statement is planned with pg_catalog and rmsg only,
# so the planted code never runs: not in the callers' functions, not in the
# worker, whatever a handler does to its session's settings.
#
# Also: what a handler sets does not outlive its call, a handler cannot
# leave a temporary table behind for the next one, and a role that may
# subscribe cannot rewrite the subscription to run as someone else.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

my $node = new_node(
	'search_path',
	workers => 1,
	conf    => q{
rmsg.worker_naptime = '100ms'
rmsg.retry_delay = '100ms'
log_statement = 'none'
max_prepared_transactions = 2
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# As the attacker: everything it planted records who ran it, and tries to
# make the attacker superuser, which works only when a superuser runs it.
sql(q{
	CREATE EXTENSION recoverable_msg;
	CREATE ROLE attacker LOGIN;
	CREATE ROLE app LOGIN;
	GRANT CREATE ON SCHEMA public TO attacker;
	GRANT USAGE ON SCHEMA rmsg TO app;
	CREATE TABLE public.planted (what text, ran_as text, at timestamptz DEFAULT now());
	GRANT INSERT, SELECT ON public.planted TO PUBLIC;
	CREATE TABLE public.handled (tag text, marker text, path text);
	GRANT INSERT ON public.handled TO PUBLIC;
});

$node->safe_psql('postgres', q{
	SET ROLE attacker;
	CREATE FUNCTION public.planted_ran(what text) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.planted (what, ran_as) VALUES (what, current_user);
		BEGIN
			EXECUTE 'ALTER ROLE attacker SUPERUSER';
		EXCEPTION WHEN OTHERS THEN NULL;
		END;
	END $$;
	CREATE FUNCTION public.unnest(a int[]) RETURNS SETOF int LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('unnest(int[])');
		RETURN QUERY SELECT x FROM pg_catalog.unnest(a) x; END $$;
	CREATE FUNCTION public.unnest(a bytea[]) RETURNS SETOF bytea LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('unnest(bytea[])');
		RETURN QUERY SELECT x FROM pg_catalog.unnest(a) x; END $$;
	CREATE FUNCTION public.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('unnest(bigint[])');
		RETURN QUERY SELECT x FROM pg_catalog.unnest(a) x; END $$;
	CREATE FUNCTION public.nextval(s regclass) RETURNS bigint LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('nextval(regclass)');
		RETURN pg_catalog.nextval(s); END $$;
	CREATE FUNCTION public.nextval(s text) RETURNS bigint LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('nextval(text)');
		RETURN pg_catalog.nextval(s::regclass); END $$;
	CREATE FUNCTION public.length(b bytea) RETURNS int LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('length(bytea)');
		RETURN pg_catalog.length(b); END $$;
	CREATE FUNCTION public.int4_eq(a int, b int) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('int = int');
		RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR public.= (FUNCTION = public.int4_eq, LEFTARG = int, RIGHTARG = int);
	CREATE FUNCTION public.int8_eq(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('bigint = bigint');
		RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR public.= (FUNCTION = public.int8_eq, LEFTARG = bigint, RIGHTARG = bigint);
	CREATE FUNCTION public.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('text = text');
		RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR public.= (FUNCTION = public.text_eq, LEFTARG = text, RIGHTARG = text);
	CREATE FUNCTION public.tstz_gt(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.planted_ran('timestamptz > timestamptz');
		RETURN a OPERATOR(pg_catalog.>) b; END $$;
	CREATE OPERATOR public.> (FUNCTION = public.tstz_gt, LEFTARG = timestamptz, RIGHTARG = timestamptz);
});

# The planted objects do run when a statement resolves names through a path
# that puts public first: the trap is live, so that finding nothing below
# means something.
is( $node->safe_psql('postgres', q{
		SET ROLE app;
		SET search_path = public, pg_catalog;
		SELECT count(*) FROM unnest(ARRAY[1, 2]) WHERE 1 = 1;
		SELECT string_agg(DISTINCT what, ', ' ORDER BY what) FROM public.planted;
		}),
	"2\nint = int, unnest(int[])",
	'the planted unnest and = run for a plain statement under that path');
sql('TRUNCATE public.planted');

#---------------------------------------------------------------------------
# 1. Callers: every function, called with public first on the path
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_queue('sp'), rmsg.create_queue('sp2', dedup => 'content'),
	       rmsg.create_queue('sp_dlq'), rmsg.create_queue('sp3', 1, 'sp_dlq');
	SELECT rmsg.grant_queue(q, 'app', 'all') FROM unnest(ARRAY['sp', 'sp2', 'sp_dlq', 'sp3']) q;
	SELECT rmsg.create_instance('sp-1');
	SELECT rmsg.grant_instance('sp-1', 'app', 'all');
	GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO app;
	GRANT EXECUTE ON FUNCTION rmsg.create_instance(text, jsonb) TO app;
	CREATE FUNCTION public.app_handler(p bytea, h jsonb, id bigint) RETURNS void
	LANGUAGE sql AS $$ INSERT INTO public.handled VALUES ('queue', NULL, NULL) $$;
	CREATE FUNCTION public.app_instance_handler(i text, p bytea) RETURNS void
	LANGUAGE sql AS $$ INSERT INTO public.handled VALUES ('instance', NULL, NULL) $$;
});

my $app = session_open($node, 'app');
session_query($app, q{SET ROLE app; SET search_path = public, pg_catalog;}, 'app: path public first');

# Each call in its own statement, so that one failing does not hide the rest.
my @calls = (
	q{SELECT rmsg.put('sp', 'x'::bytea);},
	q{SELECT rmsg.put('sp', 'text'::text, '{"h": 1}', '1 millisecond');},
	q{SELECT rmsg.put('sp2', convert_to(repeat('c', 3000), 'UTF8'));},
	q{SELECT rmsg.put('sp2', convert_to(repeat('c', 3000), 'UTF8'));},
	q{SELECT count(*) FROM rmsg.put_batch('sp', ARRAY['a'::bytea, convert_to(repeat('b', 3000), 'UTF8')]);},
	q{SELECT count(*) FROM rmsg.put_batch('sp2', ARRAY['a'::bytea, 'b'::bytea]);},
	q{SELECT count(*) FROM rmsg.put_many(ARRAY['sp', 'sp2'], convert_to(repeat('m', 3000), 'UTF8'));},
	q{SELECT count(*) FROM rmsg.put_with_token('sp', 'w'::bytea);},
	q{SELECT rmsg.forward(msg_id, 'sp') > 0 FROM rmsg.put_with_token('sp', 'f'::bytea);},
	q{SELECT count(*) FROM rmsg.get('sp', 3, '1 minute');},
	q{SELECT bool_and(rmsg.ack(msg_id, receipt)) FROM rmsg.get('sp', 2);},
	q{SELECT rmsg.ack(array_agg(msg_id)) FROM rmsg.get('sp', 2);},
	q{SELECT rmsg.ack(array_agg(msg_id), array_agg(receipt)) FROM rmsg.get('sp2', 2);},
	q{SELECT bool_and(rmsg.nack(msg_id, '1 second', receipt)) FROM rmsg.get('sp2', 1);},
	q{SELECT bool_and(rmsg.extend(msg_id, '1 minute', receipt)) FROM rmsg.get('sp2', 1);},
	q{SELECT rmsg.put('sp3', 'dies'::bytea); SELECT count(*) FROM rmsg.get('sp3', 1, '0 seconds'); SELECT count(*) FROM rmsg.get('sp3');},
	q{SELECT disposition FROM rmsg.deliver('sp-1', 'd'::bytea);},
	q{SELECT rmsg.begin_recovery('sp-1');},
	q{SELECT disposition FROM rmsg.deliver('sp-1', 'r'::bytea, 'recovery');},
	q{SELECT count(*) FROM rmsg.receive('sp-1');},
	q{SELECT rmsg.complete_recovery('sp-1', '{"s": 1}');},
	q{SELECT count(*) FROM rmsg.receive_any(5);},
	q{SELECT rmsg.save_state('sp-1', '{"s": 2}'); SELECT rmsg.load_state('sp-1');},
	q{SELECT rmsg.restart('sp-caller') IS NULL;},
	q{SELECT call_id FROM rmsg.prepare_call('sp-caller', 'sp-callee', 'req');},
	q{SELECT status FROM rmsg.accept_call('sp-callee', 'sp-caller', 1, 'req');},
	q{SELECT rmsg.reply('sp-callee', 'sp-caller', 1, 'rep');},
	q{SELECT rmsg.record_reply('sp-caller', 1, 'rep');},
	q{SELECT call_id FROM rmsg.prepare_call('sp-caller', 'sp-callee', 'req2');},
	q{SELECT rmsg.record_reply('sp-caller', 2, 'rep2');},
	q{SELECT count(*) FROM rmsg.replay('sp-caller');},
	q{SELECT rmsg.force_log('sp-caller') IS NOT NULL;},
	q{SELECT rmsg.checkpoint('sp-caller', '{}');},
	q{SELECT rmsg.create_queue('sp_app'); SELECT rmsg.grant_queue('sp_app', 'attacker', 'put'); SELECT rmsg.revoke_queue('sp_app', 'attacker', 'put');},
	q{SELECT rmsg.has_queue_privilege('sp', 'get'), rmsg.has_instance_privilege('sp-1', 'receive'), rmsg.has_component_privilege('sp-caller', 'use');},
	q{SELECT rmsg.subscribe('sp_app', 'public.app_handler(bytea,jsonb,bigint)'); SELECT rmsg.unsubscribe('sp_app');},
	q{SELECT rmsg.set_handler('sp-', 'public.app_instance_handler(text,bytea)'); SELECT rmsg.remove_handler('sp-');},
	q{SELECT count(*) FROM rmsg.queues; SELECT count(*) FROM rmsg.instances; SELECT count(*) FROM rmsg.handlers; SELECT count(*) FROM rmsg.privileges; SELECT count(*) FROM rmsg.callers; SELECT count(*) FROM rmsg.last_calls;},
	q{SELECT rmsg.drop_queue('sp_app');},
	q{SELECT rmsg.create_instance('sp-app'); SELECT rmsg.drop_instance('sp-app');},
);
for my $call (@calls)
{
	my ($out, $err) = session_wait($app, session_send($app, $call), 60);
	is($err // 'timeout', '', "as app with public first: $call");
}
session_kill($app);

# The same calls by a superuser whose path puts public first, and the
# maintenance only superusers may run.
my $admin = session_open($node, 'admin');
session_query($admin, q{SET search_path = public, pg_catalog;}, 'admin: path public first');
s/'sp-app'/'sp-admin'/g, s/'sp_app'/'sp_admin'/g, s/'sp-(caller|callee)'/'sp-admin-$1'/g for @calls;
for my $call (@calls, q{SELECT rmsg.collect_payloads() >= 0;})
{
	my ($out, $err) = session_wait($admin, session_send($admin, $call), 60);
	is($err // 'timeout', '', "as a superuser with public first: $call");
}
session_kill($admin);

is(sql(q{SELECT coalesce(string_agg(what || ' as ' || ran_as, ', '), 'nothing') FROM public.planted}),
	'nothing', 'no planted function or operator ran for any caller');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'}), 'f', 'the attacker is not superuser');

#---------------------------------------------------------------------------
# 2. The worker: it runs as a superuser, and its statements (the next
#    delayed message of its queues goes through unnest of an int[]) must
#    not resolve through its own search_path, which names public.
#---------------------------------------------------------------------------

# A handler that leaves what it can behind in the worker's session: a
# search path that puts public first, a setting of its own.  The next call
# writes down what it finds: no setting, and the search path every handler
# runs with (pg_catalog, its own schema, pg_temp; core/privileges.c).
sql(q{
	CREATE FUNCTION public.meddling_handler(p bytea, h jsonb, id bigint) RETURNS void
	LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.handled
		VALUES ('meddler', current_setting('rmsg_test.marker', true), current_setting('search_path'));
		PERFORM set_config('search_path', 'public, pg_catalog', false);
		PERFORM set_config('rmsg_test.marker', 'left behind by ' || convert_from(p, 'UTF8'), false);
	END $$;
	CREATE FUNCTION public.temp_handler(p bytea) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		CREATE TEMP TABLE left_behind (x int);
	END $$;
	SELECT rmsg.create_queue('sp_worker'), rmsg.create_queue('sp_temp');
	SELECT rmsg.grant_queue('sp_worker', 'app', 'all'), rmsg.grant_queue('sp_temp', 'app', 'all');
});
$node->safe_psql('postgres', q{
	SET ROLE app;
	SELECT rmsg.subscribe('sp_worker', 'public.meddling_handler(bytea,jsonb,bigint)');
	SELECT rmsg.subscribe('sp_temp', 'public.temp_handler(bytea)');
});
sql(q{SELECT rmsg.put('sp_worker', 'first'::text)});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM public.handled WHERE tag = 'meddler'})
  or die 'the first message was not handled';
sql(q{SELECT rmsg.put('sp_worker', 'second'::text)});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM public.handled WHERE tag = 'meddler'})
  or die 'the second message was not handled';
# delayed messages make the idle worker look for the next one due, through
# unnest($1) over the ids of its queues; give it many passes
sql(q{SELECT rmsg.put('sp_worker', 'later'::text, delay => '1 hour')});
sleep(2);

is( sql(q{SELECT string_agg(coalesce(nullif(marker, ''), '(none)') || ' | ' || path, '; ') FROM public.handled WHERE tag = 'meddler'}),
	'(none) | pg_catalog, public, pg_temp; (none) | pg_catalog, public, pg_temp',
	'a setting or search path a handler set is gone at its next call');
is( sql(q{SELECT last_error FROM rmsg.handlers WHERE target = 'sp_temp'}),
	'', 'no handler of sp_temp failed yet');
sql(q{SELECT rmsg.put('sp_temp', 'x'::text)});
$node->poll_query_until('postgres', q{SELECT last_error IS NOT NULL FROM rmsg.handlers WHERE target = 'sp_temp'})
  or die 'the temp handler did not fail';
like(sql(q{SELECT last_error FROM rmsg.handlers WHERE target = 'sp_temp'}),
	qr/cannot create temporary table within security-restricted operation/,
	'a handler cannot leave a temporary table behind for the next role');
is(sql(q{SELECT coalesce(string_agg(DISTINCT what || ' as ' || ran_as, ', '), 'nothing') FROM public.planted}),
	'nothing', 'no planted function or operator ran in the worker');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'}), 'f', 'the attacker is still not superuser');
is(sql(q{SELECT count(*) FROM rmsg.worker WHERE pid IS NOT NULL AND state <> 'recovering from an error'}),
	'1', 'the worker runs, and not after an error');

#---------------------------------------------------------------------------
# 3. The worker checks the handler's role before it takes messages: once
#    the role lost get on the queue, the messages wait (and are not burnt
#    as failures); granted again, they go.  Without EXECUTE on the function
#    the call fails, as a statement calling it would.
#---------------------------------------------------------------------------

sql(q{SELECT rmsg.create_queue('sp_rights');
      SELECT rmsg.grant_queue('sp_rights', 'app', 'manage, get');
      CREATE FUNCTION public.rights_handler(p bytea) RETURNS void
      LANGUAGE sql AS $$ INSERT INTO public.handled VALUES ('rights', convert_from(p, 'UTF8'), NULL) $$;});
$node->safe_psql('postgres', q{SET ROLE app; SELECT rmsg.subscribe('sp_rights', 'public.rights_handler(bytea)')});
sql(q{SELECT rmsg.put('sp_rights', 'before'::text)});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM public.handled WHERE tag = 'rights'})
  or die 'the first message of sp_rights was not handled';
sql(q{SELECT rmsg.revoke_queue('sp_rights', 'app', 'get')});
sql(q{SELECT rmsg.put('sp_rights', 'while revoked'::text)});
sleep(1);
is(sql(q{SELECT count(*) FROM public.handled WHERE tag = 'rights'}), '1',
	'after get was revoked from the handler\'s role, its queue waits');
is(sql(q{SELECT ready || '/' || coalesce((SELECT errors FROM rmsg.handlers WHERE target = 'sp_rights'), -1)
	FROM rmsg.queues WHERE queue = 'sp_rights'}), '1/0', 'the message is ready, not burnt as a failure');
like(slurp_file($node->logfile), qr/the role of the handler of queue "sp_rights" \(role \d+\) no longer holds get on it/,
	'the worker says why in its log');
sql(q{SELECT rmsg.grant_queue('sp_rights', 'app', 'get')});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM public.handled WHERE tag = 'rights'})
  or diag('the waiting message was not handled after the grant');
is(sql(q{SELECT string_agg(marker, ',' ORDER BY marker) FROM public.handled WHERE tag = 'rights'}),
	'before,while revoked', 'granted again, the waiting message is handled');
sql(q{REVOKE EXECUTE ON FUNCTION public.rights_handler(bytea) FROM PUBLIC});
sql(q{SELECT rmsg.put('sp_rights', 'no execute'::text)});
$node->poll_query_until('postgres', q{SELECT errors > 0 FROM rmsg.handlers WHERE target = 'sp_rights'})
  or diag('the call without EXECUTE did not fail');
like(sql(q{SELECT last_error FROM rmsg.handlers WHERE target = 'sp_rights'}),
	qr/permission denied for function rights_handler/,
	'without EXECUTE the call fails with permission denied');
is(sql(q{SELECT count(*) FROM public.handled WHERE tag = 'rights'}), '2', 'and the handler did not run');

#---------------------------------------------------------------------------
# 4. The subscription's role is the extension's to write: a role that may
#    subscribe cannot make its handler run as another role.
#---------------------------------------------------------------------------

my ($rc, $out, $err) = $node->psql('postgres',
	q{SET ROLE app; UPDATE rmsg.subscription SET owner = 'postgres'},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501/, 'app may not write rmsg.subscription: 42501');
is(sql(q{SELECT string_agg(DISTINCT owner::text, ',') FROM rmsg.subscription}), 'app',
	'the subscriptions still run as app');
($rc, $out, $err) = $node->psql('postgres',
	q{SET ROLE app; SELECT count(*) FROM rmsg.message},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501/, 'app may not read the tables either: 42501');

#---------------------------------------------------------------------------
# 5. A handler shares its worker with the other roles' handlers: it cannot
#    hold it past rmsg.handler_timeout, and the session-level advisory locks
#    it takes do not outlive its call.
#---------------------------------------------------------------------------

# Polls $query until it returns 't', for at most $seconds.
sub wait_for
{
	my ($query, $seconds) = @_;
	for (my $i = 0; $i < $seconds * 10; $i++)
	{
		return 1 if sql($query) eq 't';
		usleep(100_000);
	}
	return 0;
}

sql(q{ALTER SYSTEM SET rmsg.handler_timeout = '1s'; SELECT pg_reload_conf();
      SELECT rmsg.create_queue('sp_slow'), rmsg.create_queue('sp_busy'), rmsg.create_queue('sp_lock');
      SELECT rmsg.grant_queue(q, 'app', 'manage, get') FROM unnest(ARRAY['sp_slow', 'sp_busy', 'sp_lock']) q;
      CREATE FUNCTION public.slow_handler(p bytea) RETURNS void
      LANGUAGE sql AS $$ SELECT pg_sleep(600) $$;
      CREATE FUNCTION public.busy_handler(p bytea) RETURNS void
      LANGUAGE sql AS $$ INSERT INTO public.handled VALUES ('busy', convert_from(p, 'UTF8'), NULL) $$;
      CREATE FUNCTION public.lock_handler(p bytea) RETURNS void
      LANGUAGE sql AS $$ SELECT pg_advisory_lock(4242);
                         INSERT INTO public.handled VALUES ('lock', NULL, NULL) $$;});
$node->safe_psql('postgres', q{SET ROLE app;
	SELECT rmsg.subscribe('sp_slow', 'public.slow_handler(bytea)');
	SELECT rmsg.subscribe('sp_busy', 'public.busy_handler(bytea)');
	SELECT rmsg.subscribe('sp_lock', 'public.lock_handler(bytea)');});

sql(q{SELECT rmsg.put('sp_slow', 'forever'::text)});
ok( wait_for(q{SELECT coalesce(errors, 0) > 0 FROM rmsg.handlers WHERE target = 'sp_slow'}, 30),
	'a handler that sleeps for ten minutes fails after rmsg.handler_timeout');
is(sql(q{SELECT last_error FROM rmsg.handlers WHERE target = 'sp_slow'}),
	'handler did not return within rmsg.handler_timeout (1000 ms)', 'and its error says so');
sql(q{SELECT rmsg.put('sp_busy', 'meanwhile'::text)});
ok(wait_for(q{SELECT count(*) = 1 FROM public.handled WHERE tag = 'busy'}, 30),
	'meanwhile the one worker goes on with another queue');

sql(q{SELECT rmsg.put('sp_lock', 'x'::text)});
ok(wait_for(q{SELECT count(*) = 1 FROM public.handled WHERE tag = 'lock'}, 30), 'the locking handler ran');
is(sql(q{SELECT pg_try_advisory_lock(4242)}), 't',
	'the advisory lock it took in the worker\'s session was let go when it returned');
# (objsubid 1 and 2 are pg_advisory_lock's keys; the extension's own name
# locks, which the worker takes for its transactions, have codes of their own)
is( sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid IN (1, 2)
	        AND pid <> pg_backend_pid()}),
	'0', 'the worker holds no advisory lock of the handler\'s');

$node->safe_psql('postgres', q{SET ROLE app; SELECT rmsg.unsubscribe('sp_slow')});

#---------------------------------------------------------------------------
# 6. A handler registered in a prepared transaction: the workers read their
#    handlers again after COMMIT PREPARED (the transaction ended in its own
#    backend at PREPARE, when its outcome was not known): the catalog's
#    generation moves then, and the workers are woken.
#---------------------------------------------------------------------------

sql(q{SELECT rmsg.create_queue('sp_prepared');
      CREATE FUNCTION public.prepared_handler(p bytea) RETURNS void
      LANGUAGE sql AS $$ INSERT INTO public.handled VALUES ('prepared', NULL, NULL) $$;
      BEGIN;
      SELECT rmsg.subscribe('sp_prepared', 'public.prepared_handler(bytea)');
      PREPARE TRANSACTION 'subscribe_prepared';});
sql(q{SELECT rmsg.put('sp_prepared', 'x'::text)});
sleep(1);
is(sql(q{SELECT count(*) FROM public.handled WHERE tag = 'prepared'}), '0',
	'before COMMIT PREPARED the prepared subscription is not used');
sql(q{COMMIT PREPARED 'subscribe_prepared'});
ok(wait_for(q{SELECT count(*) = 1 FROM public.handled WHERE tag = 'prepared'}, 20),
	'after COMMIT PREPARED the workers use it');

$node->stop;
done_testing();
