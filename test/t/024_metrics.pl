use strict;
use warnings FATAL => 'all';

# Metrics: rmsg.metrics() in the Prometheus text format, and the same
# figures scraped through a real prometheus-postgres-exporter (Debian's
# package) running the queries of src/monitoring/recoverable_msg_queries.yaml.
#  1. a known state: ready, in flight, delayed and dead messages, puts, acks,
#     dead letters, a paused queue;
#  2. rmsg.metrics(): every line is a HELP, a TYPE or a sample of a family
#     declared once before it, and the samples say the state of 1; only
#     monitoring roles may call it;
#  3. the exporter, connected as a monitoring role, serves the same figures
#     on its /metrics over the loopback, and follows an ack.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use IPC::Run;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

my $exporter = '/usr/bin/prometheus-postgres-exporter';
my $queries = "$FindBin::RealBin/../../src/monitoring/recoverable_msg_queries.yaml";
ok(-x $exporter, 'prometheus-postgres-exporter is installed (test/check.sh installs it)');

my $node = new_node('metrics', workers => 1, extension => 1);
sub sql { return $node->safe_psql('postgres', $_[0]); }

#---------------------------------------------------------------------------
# 1. A known state
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_queue('orders');
	SELECT rmsg.create_queue('solo', max_deliveries => 1);
	SELECT rmsg.create_queue('held');
	SELECT rmsg.put('orders', ('o' || i)::text) FROM generate_series(1, 5) i;
	SELECT rmsg.put('orders', 'later'::text, delay => '1 hour');
	SELECT rmsg.put('solo', 's'::text);
	SELECT rmsg.pause_queue('held');
	SELECT rmsg.put('held', 'g' || i, group_id => 'g') FROM generate_series(1, 3) i;
});
my ($acked, $kept) = split /\|/, sql(q{
	SELECT min(msg_id), max(msg_id) FROM rmsg.get('orders', 2, '1 hour')});
sql(qq{SELECT rmsg.ack($acked)});
sql(q{SELECT rmsg.nack(msg_id) FROM rmsg.get('solo', 1, '1 hour')});
is(sql(q{SELECT count(*) FROM rmsg.get('solo', 1, '1 hour')}), '0',
	'the nacked message of solo died on the next get');

#---------------------------------------------------------------------------
# 2. rmsg.metrics()
#---------------------------------------------------------------------------

# Parses Prometheus text: { 'name{labels}' => value }, checking every line.
sub parse_metrics
{
	my ($text, $what) = @_;
	my (%type, %value, @bad);
	for my $line (split /\n/, $text)
	{
		if ($line =~ /^# HELP (\w+) \S/)
		{
			next;
		}
		elsif ($line =~ /^# TYPE (\w+) (gauge|counter)$/)
		{
			push @bad, "second TYPE of $1" if $type{$1}++;
		}
		elsif ($line =~ /^(\w+)(\{(?:\w+="(?:[^"\\]|\\.)*"(?:,|(?=\})))*\})? (-?[0-9.]+(?:e[+-]?\d+)?)$/)
		{
			my ($name, $labels, $v) = ($1, $2 // '', $3);
			push @bad, "sample of undeclared $name" unless $type{$name};
			$value{"$name$labels"} = $v;
		}
		else
		{
			push @bad, "not a metrics line: $line";
		}
	}
	is(join("\n", @bad), '', "$what: every line is a HELP, a TYPE or a sample of a declared family");
	return \%value;
}

my $m = parse_metrics(sql(q{SELECT rmsg.metrics()}), 'rmsg.metrics()');
my %expect = (
	'rmsg_queue_messages{queue="orders",state="ready"}' => 3,
	'rmsg_queue_messages{queue="orders",state="in_flight"}' => 1,
	'rmsg_queue_messages{queue="orders",state="delayed"}' => 1,
	'rmsg_queue_messages{queue="orders",state="dead"}' => 0,
	'rmsg_queue_puts_total{queue="orders"}' => 6,
	'rmsg_queue_acks_total{queue="orders"}' => 1,
	'rmsg_queue_messages{queue="solo",state="dead"}' => 1,
	'rmsg_queue_dead_lettered_total{queue="solo"}' => 1,
	'rmsg_queue_paused{queue="held"}' => 1,
	'rmsg_queue_messages{queue="held",state="group_waiting"}' => 2,
	'rmsg_queue_paused{queue="orders"}' => 0,
	'rmsg_worker_up{worker="0",database="postgres"}' => 1,
);
for my $k (sort keys %expect)
{
	is($m->{$k}, $expect{$k}, "rmsg.metrics(): $k $expect{$k}");
}
cmp_ok($m->{'rmsg_queue_oldest_ready_age_seconds{queue="orders"}'}, '>', 0,
	'rmsg.metrics(): the oldest ready message of orders has an age');

sql(q{
	CREATE ROLE monitor LOGIN IN ROLE pg_read_all_stats;
	CREATE ROLE tenant LOGIN;
	GRANT USAGE ON SCHEMA rmsg TO monitor, tenant;
});
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT rmsg.metrics() IS NOT NULL',
	extra_params => [ '-U', 'monitor' ]);
is($out, 't', 'a role in pg_read_all_stats may call rmsg.metrics()');
($ret, $out, $err) = $node->psql('postgres', 'SELECT rmsg.metrics()',
	extra_params => [ '-U', 'tenant', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501.*permission denied for function metrics/s,
	'any other role is refused with 42501');

#---------------------------------------------------------------------------
# 3. Through prometheus-postgres-exporter
#---------------------------------------------------------------------------

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $log = "$PostgreSQL::Test::Utils::log_path/024_exporter.log";
my $dsn = 'host=' . $node->host . ' port=' . $node->port
  . ' user=monitor dbname=postgres sslmode=disable';
my $h = IPC::Run::start(
	[
		$exporter, "--web.listen-address=127.0.0.1:$port",
		"--extend.query-path=$queries", '--disable-default-metrics',
		'--disable-settings-metrics', '--log.level=warn'
	],
	'<', \undef, '>>', $log, '2>>', $log,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });

my $http = HTTP::Tiny->new(timeout => 5);

# The exporter's /metrics once it shows the queue "orders", parsed.
sub scrape
{
	my ($what) = @_;
	for (1 .. 100)
	{
		my $r = $http->get("http://127.0.0.1:$port/metrics");
		if ($r->{success} && $r->{content} =~ /^rmsg_queue_ready\{/m)
		{
			my %v;
			for my $line (split /\n/, $r->{content})
			{
				next unless $line =~ /^(rmsg_\w+)\{([^}]*)\} (\S+)$/;
				my ($name, $labels, $value) = ($1, $2, $3);
				my ($queue) = $labels =~ /queue="([^"]*)"/;
				$v{ $name . (defined $queue ? "/$queue" : '') } = $value + 0;
			}
			return \%v;
		}
		usleep(100_000);
	}
	fail("$what: the exporter served no rmsg metrics (see $log)");
	return {};
}

my $e = scrape('first scrape');
my %exported = (
	'rmsg_queue_ready/orders' => 3,
	'rmsg_queue_in_flight/orders' => 1,
	'rmsg_queue_delayed/orders' => 1,
	'rmsg_queue_puts_total/orders' => 6,
	'rmsg_queue_acks_total/orders' => 1,
	'rmsg_queue_dead/solo' => 1,
	'rmsg_queue_dead_lettered_total/solo' => 1,
	'rmsg_queue_paused/held' => 1,
	'rmsg_queue_group_waiting/held' => 2,
	'rmsg_queue_paused/orders' => 0,
);
for my $k (sort keys %exported)
{
	is($e->{$k}, $exported{$k}, "exporter: $k $exported{$k}");
}

sql(qq{SELECT rmsg.ack($kept)});
$e = scrape('second scrape');
is($e->{'rmsg_queue_in_flight/orders'}, 0, 'exporter: after an ack, nothing in flight');
is($e->{'rmsg_queue_acks_total/orders'}, 2, 'exporter: and two acks counted');

$h->signal('TERM');
$h->finish;
$node->stop;
done_testing();
