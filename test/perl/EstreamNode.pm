
# Copyright (c) 2026, estream developers

=pod

=head1 NAME

EstreamNode - a PostgreSQL::Test::Cluster with estream, for the TAP tests

=head1 SYNOPSIS

  use EstreamNode;

  my $node = EstreamNode->create('cdc', cdc => 1,
	  conf => "estream.worker_naptime = 100ms\n");
  $node->safe_psql('postgres', 'CREATE EXTENSION estream');
  $node->wait_streaming('orders');

=head1 DESCRIPTION

What belongs here: the configuration every TAP test shares (read from
test/estream.conf, the configuration of pg_regress, so the suites do not
drift apart), the output_plugin_libraries logic that CDC tests need, and
helpers that two or more test files would otherwise copy.  Each helper is a
method of the node, so tests with several nodes (a standby, a second server)
use the same helper on each.

What does not: settings only one test needs (a test passes them with
C<conf>, and deliberate oddities such as no preload stay visible in the test
file), and helpers only one file uses, or whose SQL is part of what a test
checks (the schema-qualified queries of 012_security.pl and
013_cdc_user_code.pl, which run against hostile search_paths, stay there).

Make puts this directory on prove's include path (see the Makefile), so
test files just C<use EstreamNode>.

=cut

package EstreamNode;

use strict;
use warnings;

use parent 'PostgreSQL::Test::Cluster';

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Utils;
use Test::More;

# test/estream.conf, next to this module's directory
my $estream_conf =
  File::Spec->catfile(dirname(File::Spec->rel2abs(__FILE__)), '..', 'estream.conf');

# Settings of test/estream.conf that make pg_regress output deterministic
# and would hide what the TAP tests are there to exercise: the worker runs,
# at its default lock timeout, unless a test passes these itself.
my %regress_only = map { $_ => 1 } qw(estream.enable_worker estream.maintenance_lock_timeout);

# Return the lines of test/estream.conf that apply to TAP tests, without
# shared_preload_libraries when $preload is false.
sub _shared_conf
{
	my ($preload) = @_;
	my $conf = '';
	open my $fh, '<', $estream_conf
	  or die "could not open $estream_conf: $!";
	while (my $line = <$fh>)
	{
		next unless $line =~ /^\s*([\w.]+)\s*=/;
		my $name = $1;
		next if $regress_only{$name};
		next if $name eq 'shared_preload_libraries' && !$preload;
		$conf .= $line;
	}
	close $fh;
	$conf .= "\n" unless $conf eq '' || $conf =~ /\n\z/;
	return $conf;
}

# Return the line that lets the server load estream as an output plugin, or
# '' where the server has no such setting.  Debian's 15.19 and later only
# load output plugins listed in output_plugin_libraries; older servers
# refuse to start if it is set.  The Makefile does the same for pg_regress.
sub _output_plugin_conf
{
	my ($self) = @_;
	my $postgres = $self->config_data('--bindir') . '/postgres';
	my $describe = `"$postgres" --describe-config`;
	return $describe =~ /^output_plugin_libraries\t/m
	  ? "output_plugin_libraries = 'pgoutput, test_decoding, estream'\n"
	  : '';
}

=pod

=head1 CONSTRUCTOR

=over

=item EstreamNode->create(name, %opts)

Make, initialise, configure and start a node (new() alone gives a bare node,
as for a standby made with init_from_backup, which copies the primary's
configuration).  Its postgresql.conf gets, in this order:

=over

=item * the settings of test/estream.conf, but estream.enable_worker and
estream.maintenance_lock_timeout (see above);

=item * with C<< cdc => 1 >>: wal_level = logical and, where the server has
it, output_plugin_libraries;

=item * C<< conf => "..." >>: the test's own lines, last, so they win.

=back

Other options: C<< preload => 0 >> leaves out shared_preload_libraries;
C<< init => { ... } >> is passed to init() (allows_streaming => 1, say);
C<< start => 0 >> returns the node unstarted.

=back

=cut

sub create
{
	my ($class, $name, %opts) = @_;
	my $preload = $opts{preload} // 1;

	my $self = $class->new($name);
	$self->init(%{ $opts{init} // {} });
	my $conf = _shared_conf($preload);
	$conf .= "wal_level = logical\n" . $self->_output_plugin_conf
	  if $opts{cdc};
	$conf .= $opts{conf} // '';
	$self->append_conf('postgresql.conf', $conf);
	$self->start if $opts{start} // 1;
	return $self;
}

=pod

=head1 HELPERS

Options common to the helpers: C<< dbname => ... >> (default 'postgres').

=over

=item $node->as_role(role, sql, %opts)

Run sql as role with safe_psql; returns its output.

=cut

sub as_role
{
	my ($self, $role, $sql, %opts) = @_;
	return $self->safe_psql($opts{dbname} // 'postgres',
		$sql, extra_params => [ '-U', $role ]);
}

=pod

=item $node->try_as_role(role, sql, %opts)

Run sql as role, stopping at the first error, with VERBOSITY=sqlstate;
returns (ok, stdout, stderr), ok being true when psql succeeded and printed
no error.

=cut

sub try_as_role
{
	my ($self, $role, $sql, %opts) = @_;
	my ($ret, $out, $err) = $self->psql(
		$opts{dbname} // 'postgres', $sql,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ],
		on_error_stop => 1);
	return ($ret == 0 && $err !~ /ERROR/, $out, $err);
}

=pod

=item $node->fails_as(role, sql, %opts)

Run sql as try_as_role does; returns what psql printed on stderr, for SQL
that is expected to fail.

=cut

sub fails_as
{
	my ($self, $role, $sql, %opts) = @_;
	my (undef, undef, $err) = $self->try_as_role($role, $sql, %opts);
	return $err;
}

=pod

=item $node->psql_error(sql, %opts)

Run sql with VERBOSITY=verbose and return what psql printed on stderr.
Options: C<role> (default: the bootstrap superuser), C<< on_error_stop => 0 >>
to run the statements after an error too.

=cut

sub psql_error
{
	my ($self, $sql, %opts) = @_;
	my @params = ('-v', 'VERBOSITY=verbose');
	unshift @params, '-U', $opts{role} if defined $opts{role};
	my ($ret, $stdout, $stderr) = $self->psql(
		$opts{dbname} // 'postgres', $sql,
		on_error_stop => $opts{on_error_stop} // 1,
		extra_params => \@params);
	return $stderr;
}

=pod

=item $node->alter_system(setting, value)

ALTER SYSTEM SET setting to value, or RESET it when value is undef, then
reload the configuration.  Does not wait for the processes to read it.

=cut

sub alter_system
{
	my ($self, $setting, $value) = @_;
	my $sql =
	  defined $value
	  ? "ALTER SYSTEM SET $setting = '$value'"
	  : "ALTER SYSTEM RESET $setting";
	$self->safe_psql('postgres', $sql);
	$self->safe_psql('postgres', 'SELECT pg_reload_conf()');
}

=pod

=item $node->wait_worker_runs(n, test_name, %opts)

Test that the estream worker of the database completes n more maintenance
runs than it had when called (poll_query_until).

=cut

sub wait_worker_runs
{
	my ($self, $n, $test_name, %opts) = @_;
	my $db = $opts{dbname} // 'postgres';
	my $runs = $self->safe_psql($db,
		"SELECT coalesce(max(runs), -1) FROM estream.workers WHERE kind = 'database' AND database = '$db'"
	);
	ok( $self->poll_query_until(
			$db,
			"SELECT runs >= $runs + $n FROM estream.workers WHERE kind = 'database' AND database = '$db'"
		),
		$test_name);
}

=pod

=item $node->watermarks(topic, [columns...])

The watermarks of a topic as "partition:col:col..." joined by commas in
partition order; the columns default to log_start_offset, stable_offset
and next_offset.

=cut

sub watermarks
{
	my ($self, $topic, @columns) = @_;
	@columns = qw(log_start_offset stable_offset next_offset) unless @columns;
	my $format = join(':', ('%s') x (1 + @columns));
	my $args = join(', ', 'partition', @columns);
	return $self->safe_psql(
		'postgres', qq{
SELECT string_agg(format('$format', $args), ',' ORDER BY partition)
FROM estream.watermarks('$topic')});
}

=pod

=item $node->background_as_role(role, verbosity)

A background_psql session on database postgres as role that keeps going
after an error and reports errors with \set VERBOSITY verbosity ('verbose'
or 'sqlstate' to see SQLSTATEs); returns (session, backend pid).

=cut

sub background_as_role
{
	my ($self, $role, $verbosity) = @_;
	my $bg = $self->background_psql(
		'postgres',
		on_error_stop => 0,
		extra_params => [ '-U', $role ]);
	$bg->query_safe("\\set VERBOSITY $verbosity");
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	return ($bg, $pid);
}

=pod

=item $node->start_query(bg, sql)

Send sql to a background_psql session without waiting for its result;
returns a number to give finish_query.

=item $node->finish_query(bg, seq)

Wait for the result of the statement that start_query returned seq for;
returns its output, without a final newline.

=cut

my $query_seq = 0;

sub start_query
{
	my ($self, $bg, $sql) = @_;
	$query_seq++;
	$bg->query_until(qr/stmt $query_seq started/,
		"\\echo stmt $query_seq started\n$sql;\n\\echo stmt $query_seq done\n");
	return $query_seq;
}

sub finish_query
{
	my ($self, $bg, $seq) = @_;
	my $out = $bg->query_until(qr/stmt $seq done\n/, '');
	$out =~ s/stmt $seq done\n//;
	chomp $out;
	return $out;
}

=pod

=back

=head1 CDC HELPERS

=over

=item $node->dboid(db)

The OID of database db.

=item $node->slot_name(db)

The name of the replication slot estream's CDC uses in database db.

=cut

sub dboid
{
	my ($self, $db) = @_;
	return $self->safe_psql('postgres',
		"SELECT oid FROM pg_database WHERE datname = '$db'");
}

sub slot_name
{
	my ($self, $db) = @_;
	return 'estream_' . $self->dboid($db);
}

=pod

=item $node->log_of(topic, %opts)

The log table of a topic, as a regclass name.

=cut

sub log_of
{
	my ($self, $topic, %opts) = @_;
	return $self->safe_psql($opts{dbname} // 'postgres',
		"SELECT log_relid::regclass FROM estream.topic WHERE name = '$topic'");
}

=pod

=item $node->wait_streaming(table, %opts)

Test that the capture of table finishes its initial copy (state
'streaming').

=cut

sub wait_streaming
{
	my ($self, $table, %opts) = @_;
	ok( $self->poll_query_until(
			$opts{dbname} // 'postgres',
			"SELECT state FROM estream.captures WHERE source = '$table'::regclass",
			'streaming'),
		"$table: initial copy made");
}

=pod

=item $node->wait_caught_up(what, %opts)

Test that the database's CDC slot confirms the WAL written so far.

=cut

sub wait_caught_up
{
	my ($self, $what, %opts) = @_;
	my $db = $opts{dbname} // 'postgres';
	my $slot = $self->slot_name($db);
	my $lsn = $self->safe_psql($db, 'SELECT pg_current_wal_lsn()');
	ok( $self->poll_query_until(
			$db, qq{
SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'}),
		"capture caught up: $what");
}

=pod

=back

=cut

1;
