# A real PgBouncer in front of a TAP node, for the tests of what a pooler
# changes: the pooler runs in the foreground under IPC::Run, listens on a
# Unix socket only (no TCP port to collide with anything) and is killed
# when the test ends, even halfway.
#
#   my $pooler = start_pgbouncer($node,
#       databases => { app => 'pool_mode=transaction pool_size=2' },
#       users => [ 'alice', 'bob' ]);
#   my $connstr = $pooler->{connstr}->('app', 'alice');
#
# Every database alias points at database postgres of $node; the text
# given for it is appended to its line in [databases], so each alias can
# have its own pool mode and size.  Users log in without a password
# (auth_type trust): the test's cluster trusts its local connections too.

package RmsgPooler;

use strict;
use warnings FATAL => 'all';

use Carp;
use Exporter 'import';
use File::Basename qw(basename);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);

our @EXPORT = qw(start_pgbouncer stop_pgbouncer pgbouncer_binary);

my @running;

END
{
	for my $h (@running)
	{
		eval { $h->kill_kill; };
	}
}

# Where Debian's package puts it; test/check.sh installs the package.
sub pgbouncer_binary
{
	return '/usr/sbin/pgbouncer';
}

# Starts PgBouncer for $node and waits until it answers; returns
# { dir, port, log, connstr => sub(alias, user) }.  Options:
#   databases  alias => extra [databases] settings (pool_mode, pool_size)
#   users      roles that may log in (the test's superuser always may)
#   settings   more [pgbouncer] lines; the defaults are transaction pooling,
#              pools of 2 without reserve, and a released server connection
#              handed out next (server_round_robin = 0)
sub start_pgbouncer
{
	my ($node, %opt) = @_;
	my %databases = %{ $opt{databases} // { postgres => '' } };
	my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
	my @users = ($superuser, @{ $opt{users} // [] });

	# A short directory: socket paths are limited to about 100 bytes.
	my $dir = PostgreSQL::Test::Utils::tempdir_short();
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "$PostgreSQL::Test::Utils::log_path/" . basename($0, '.pl') . '_pgbouncer.log';
	my ($host, $node_port) = ($node->host, $node->port);

	append_to_file("$dir/userlist.txt", join('', map { qq{"$_" ""\n} } @users));
	my $db_lines = join('',
		map { "$_ = host=$host port=$node_port dbname=postgres $databases{$_}\n" }
		  sort keys %databases);
	append_to_file(
		"$dir/pgbouncer.ini", qq{
[databases]
$db_lines
[pgbouncer]
listen_port = $port
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = $superuser
pool_mode = transaction
default_pool_size = 2
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
server_round_robin = 0
logfile = $log
pidfile = $dir/pgbouncer.pid
${\ ($opt{settings} // '') }
});

	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ pgbouncer_binary(), "$dir/pgbouncer.ini" ],
		'<', \undef, '>', \$out, '2>', \$err);
	push @running, $h;

	my $pooler = {
		dir => $dir,
		port => $port,
		log => $log,
		handle => $h,
		connstr => sub {
			my ($alias, $user) = @_;
			return "host=$dir port=$port dbname=$alias" . ($user ? " user=$user" : '');
		},
	};
	my $probe = $pooler->{connstr}->((sort keys %databases)[0]);
	for (1 .. 150)
	{
		my ($o, $e) = ('', '');
		IPC::Run::run([ 'psql', '-XAtq', '-d', $probe, '-c', 'SELECT 1' ],
			'<', \undef, '>', \$o, '2>', \$e);
		return $pooler if $o eq "1\n";
		usleep(100_000);
	}
	croak "PgBouncer did not start: $err";
}

# Stops the pooler (SIGTERM: it closes its connections) and waits for it.
sub stop_pgbouncer
{
	my ($pooler) = @_;
	my $h = $pooler->{handle};
	$h->signal('TERM');
	$h->finish;
	@running = grep { $_ != $h } @running;
	return;
}

# What PgBouncer's admin console answers to $command (SHOW POOLS, say), as
# psql -At prints it.
sub admin
{
	my ($pooler, $command) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run(
		[ 'psql', '-XAtq', '-d', $pooler->{connstr}->('pgbouncer'), '-c', $command ],
		'<', \undef, '>', \$o, '2>', \$e);
	return $o;
}

1;
