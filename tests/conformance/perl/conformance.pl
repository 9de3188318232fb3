#!/usr/bin/perl
# Conformance smoke suite of AnyEvent::RabbitMQ (Perl; Debian libanyevent-rabbitmq-perl 1.22,
# over Net::AMQP with its bundled 0-9-1 spec) against the broker at AMQP_URL.
#
# Covers: hello world (publish/get with properties, consume with manual acks), work queue
# (prefetch 1 holding back the next message, redelivery after the worker's connection closes),
# fanout to server-named exclusive queues, direct and topic routing, direct reply-to,
# publisher confirms (on_ack per publish), mandatory + basic.return before the ack, 404 and
# 406 closing the channel but not the connection, refused login.
#
# `perl conformance.pl` runs the suite; `perl conformance.pl restart-before|restart-after`
# runs one half of the broker-restart check (scripts/conformance restarts the broker between).
#
# Output: one line per test, "PASS <pattern>: <name>" or "FAIL <pattern>: <name>: <error>", then
# "N passed, N failed"; exit status 1 if anything failed. The library is callback based: every
# step waits on its own condvar (the method's -ok, a delivery, an ack, a return, a
# channel.close), bounded by a hang guard timer. There are no sleeps.
use strict;
use warnings;
use AnyEvent;
use AnyEvent::RabbitMQ;

$| = 1;
my $HANG_GUARD = 10;    # seconds per awaited event; never reached when the broker behaves
my $URL = $ENV{AMQP_URL} or die "AMQP_URL is not set\n";
my ($USER, $PASS, $HOST, $PORT, $VHOST) = $URL =~ m{^amqp://([^:@/]*):([^@/]*)@([^:/]+):(\d+)(?:/(.*))?$}
  or die "cannot parse AMQP_URL $URL\n";
$VHOST = defined $VHOST && length $VHOST ? $VHOST =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ger : '/';
my ($passed, $failed) = (0, 0);

AnyEvent::RabbitMQ->load_xml_spec();    # once per process

# Waits for a condvar with the hang guard; croaks on a timeout.
sub await {
    my ($cv, $what) = @_;
    my $t = AE::timer $HANG_GUARD, 0, sub { $cv->croak("timed out waiting for $what\n") };
    return $cv->recv;
}

sub connect_broker {
    my (%opt) = @_;
    my $cv = AE::cv;
    my $ar = AnyEvent::RabbitMQ->new;
    $ar->connect(
        host => $HOST, port => $PORT, user => $USER, pass => $opt{pass} // $PASS, vhost => $VHOST,
        timeout => $HANG_GUARD,
        on_success => sub {
            # The library's `nodelay` option never reaches AnyEvent::Handle (which calls it
            # `no_delay`), so Nagle's algorithm holds each publish's header and body frames
            # back for the broker's delayed ACK, ~40 ms a publish. Set it on the handle.
            $ar->{_handle}->no_delay(1) if $ar->{_handle};
            $cv->send($ar);
        },
        on_failure => sub { $cv->croak("connect failed: " . join(' ', map { $_ // '' } @_) . "\n") },
        on_read_failure => sub { },
        on_close => sub { },
    );
    return await($cv, 'connection');
}

# Opens a channel; `closes` collects the channel.close frames the broker sends.
sub open_channel {
    my ($ar) = @_;
    my $cv = AE::cv;
    my $closes = [];
    $ar->open_channel(
        on_success => sub { $cv->send($_[0]) },
        on_failure => sub { $cv->croak("open_channel failed: @_\n") },
        on_close => sub { push @$closes, $_[0] },
    );
    my $ch = await($cv, 'channel.open-ok');
    return ($ch, $closes);
}

# Calls an asynchronous channel method and waits for its on_success or on_failure.
sub call {
    my ($ch, $method, %args) = @_;
    my $cv = AE::cv;
    $ch->$method(%args,
        on_success => sub { $cv->send(@_) },
        on_failure => sub { $cv->croak("$method failed: " . join(' ', map { $_ // '' } @_) . "\n") });
    return await($cv, $method);
}

sub close_conn {
    my ($ar) = @_;
    return unless $ar && $ar->is_open;
    my $cv = AE::cv;
    $ar->close(on_success => sub { $cv->send }, on_failure => sub { $cv->send });
    await($cv, 'connection.close-ok');
}

sub uniq {
    my ($prefix) = @_;
    return sprintf("conf.perl.%s.%06x%06x", $prefix, int(rand(0x1000000)), int(rand(0x1000000)));
}

sub check {
    my ($ok, $what) = @_;
    die "$what\n" unless $ok;
}

sub eq_ {
    my ($expected, $actual, $what) = @_;
    my $e = defined $expected ? "$expected" : 'undef';
    my $a = defined $actual ? "$actual" : 'undef';
    die "$what: expected '$e' but got '$a'\n" unless $e eq $a;
}

sub test {
    my ($pattern, $name, $body) = @_;
    my $ok = eval { $body->(); 1 };
    if ($ok) {
        $passed++;
        print "PASS $pattern: $name\n";
    } else {
        my $err = $@ || 'failed';
        $failed++;
        print STDERR "$name: $err";
        $err =~ s/\s+/ /g;
        $err =~ s/ $//;
        print "FAIL $pattern: $name: $err\n";
    }
}

sub with_conn {
    my ($body) = @_;
    my $ar = connect_broker();
    my $ok = eval { $body->($ar); 1 };
    my $err = $@;
    eval { close_conn($ar) };
    die $err unless $ok;
}

sub declare_server_named {
    my ($ch) = @_;
    my $ok = call($ch, 'declare_queue', queue => '', exclusive => 1, auto_delete => 1);
    return $ok->method_frame->queue;
}

sub get_body {
    my ($ch, $queue) = @_;
    my $r = call($ch, 'get', queue => $queue, no_ack => 1);
    return undef if $r->{empty};
    return defined $r->{body} ? $r->{body}->payload : '';
}

sub drain {
    my ($ch, $queue) = @_;
    my @out;
    while (defined(my $b = get_body($ch, $queue))) { push @out, $b }
    return join(',', @out);
}

# Publishes on a confirm channel and waits for the broker's ack.
sub publish_confirmed {
    my ($ch, %args) = @_;
    my $cv = AE::cv;
    $ch->publish(%args, on_ack => sub { $cv->send('ack') }, on_nack => sub { $cv->send('nack') });
    eq_('ack', await($cv, 'publisher confirm'), 'confirm');
}

# A queue of events fed by callbacks, read with the hang guard.
package Inbox {
    sub new { bless { items => [], waiters => [] }, shift }
    sub put {
        my ($self, $item) = @_;
        if (my $cv = shift @{ $self->{waiters} }) { $cv->send($item) } else { push @{ $self->{items} }, $item }
    }
    sub next {
        my ($self, $what) = @_;
        return shift @{ $self->{items} } if @{ $self->{items} };
        my $cv = AE::cv;
        push @{ $self->{waiters} }, $cv;
        return main::await($cv, $what);
    }
    sub pending { scalar @{ $_[0]{items} } }
}

sub consume_into {
    my ($ch, $queue, %args) = @_;
    my $inbox = Inbox->new;
    my $ok = call($ch, 'consume', queue => $queue, no_ack => 0, %args,
                  on_consume => sub { $inbox->put($_[0]) });
    return ($inbox, $ok->method_frame->consumer_tag);
}

# ---- broker restart -------------------------------------------------------------------------

my $RESTART_QUEUE = 'conformance.restart.perl';
my $RESTART_BODY = 'persistent message from AnyEvent::RabbitMQ';

sub restart_before {
    test('restart', 'before_publish_persistent_confirmed', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            call($ch, 'delete_queue', queue => $RESTART_QUEUE);    # a leftover from an aborted run
            call($ch, 'declare_queue', queue => $RESTART_QUEUE, durable => 1);
            call($ch, 'confirm');
            publish_confirmed($ch, routing_key => $RESTART_QUEUE, body => $RESTART_BODY,
                header => { delivery_mode => 2, content_type => 'text/plain',
                            correlation_id => 'restart-1', headers => { client => 'perl' } });
        });
    });
}

sub restart_after {
    test('restart', 'after_persistent_message_survived', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $r = call($ch, 'get', queue => $RESTART_QUEUE, no_ack => 0);
            check(!$r->{empty}, "the message is still in $RESTART_QUEUE");
            eq_($RESTART_BODY, $r->{body}->payload, 'body');
            eq_(2, $r->{header}->delivery_mode, 'delivery mode');
            eq_('text/plain', $r->{header}->content_type, 'content type');
            eq_('restart-1', $r->{header}->correlation_id, 'correlation id');
            eq_('perl', $r->{header}->headers->{client}, 'header');
            $ch->ack(delivery_tag => $r->{ok}->method_frame->delivery_tag);
            my $del = call($ch, 'delete_queue', queue => $RESTART_QUEUE);
            eq_(0, $del->method_frame->message_count, 'messages left when deleted');
        });
    });
}

# ---- the suite ------------------------------------------------------------------------------

sub suite {
    test('hello-world', 'publish_get_properties', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $q = uniq('hello');
            eq_($q, call($ch, 'declare_queue', queue => $q, exclusive => 1)->method_frame->queue, 'queue name');
            call($ch, 'confirm');
            publish_confirmed($ch, routing_key => $q, body => 'Hello World!',
                header => { content_type => 'text/plain', message_id => 'm-1', delivery_mode => 2,
                            headers => { lang => 'en' } });
            my $r = call($ch, 'get', queue => $q, no_ack => 0);
            check(!$r->{empty}, 'basic.get-ok');
            eq_('Hello World!', $r->{body}->payload, 'body');
            my $m = $r->{ok}->method_frame;
            eq_($q, $m->routing_key, 'routing key');
            eq_('', $m->exchange, 'exchange');
            eq_(0, $m->redelivered, 'redelivered');
            eq_(0, $m->message_count, 'message count');
            eq_('text/plain', $r->{header}->content_type, 'content type');
            eq_('m-1', $r->{header}->message_id, 'message id');
            eq_(2, $r->{header}->delivery_mode, 'delivery mode');
            eq_('en', $r->{header}->headers->{lang}, 'header');
            $ch->ack(delivery_tag => $m->delivery_tag);
            check(call($ch, 'get', queue => $q)->{empty}, 'queue empty');
        });
    });

    test('hello-world', 'consume_manual_ack', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $q = declare_server_named($ch);
            check($q =~ /^amq\.gen-/, "server-named: $q");
            my ($inbox, $tag) = consume_into($ch, $q);
            $ch->publish(routing_key => $q, body => "m$_") for 0 .. 2;
            for my $i (0 .. 2) {
                my $d = $inbox->next("delivery $i");
                eq_("m$i", $d->{body}->payload, 'body');
                eq_($tag, $d->{deliver}->method_frame->consumer_tag, 'consumer tag');
                $ch->ack(delivery_tag => $d->{deliver}->method_frame->delivery_tag);
            }
            call($ch, 'cancel', consumer_tag => $tag);
        });
    });

    test('work-queue', 'prefetch_one_and_redelivery', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $q = uniq('tasks');
            call($ch, 'declare_queue', queue => $q);
            my $worker = connect_broker();
            my $ok = eval {
                my ($wch) = open_channel($worker);
                call($wch, 'qos', prefetch_count => 1);
                my ($inbox) = consume_into($wch, $q);
                call($ch, 'confirm');
                publish_confirmed($ch, routing_key => $q, body => "task-$_") for 0 .. 1;
                my $d = $inbox->next('first task');
                eq_('task-0', $d->{body}->payload, 'first task');
                # With prefetch 1, task-1 stays in the queue while task-0 is unacked.
                my $decl = call($ch, 'declare_queue', queue => $q, passive => 1)->method_frame;
                eq_('1 1', $decl->message_count . ' ' . $decl->consumer_count, 'messages, consumers');
                $wch->ack(delivery_tag => $d->{deliver}->method_frame->delivery_tag);
                $d = $inbox->next('second task');
                eq_('task-1', $d->{body}->payload, 'second task');
                eq_(0, $d->{deliver}->method_frame->redelivered, 'not redelivered');
                close_conn($worker);    # without acking task-1
                my ($inbox2) = consume_into($ch, $q);
                $d = $inbox2->next('redelivery');
                eq_('task-1', $d->{body}->payload, 'redelivered task');
                eq_(1, $d->{deliver}->method_frame->redelivered, 'redelivered flag');
                $ch->ack(delivery_tag => $d->{deliver}->method_frame->delivery_tag);
                1;
            };
            my $err = $@;
            eval { close_conn($worker) };
            call($ch, 'delete_queue', queue => $q);
            die $err unless $ok;
        });
    });

    test('fanout', 'server_named_exclusive_queues', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $x = uniq('logs');
            call($ch, 'declare_exchange', exchange => $x, type => 'fanout', auto_delete => 1);
            my @qs = map { declare_server_named($ch) } 1 .. 2;
            check($qs[0] ne $qs[1], 'distinct names');
            call($ch, 'bind_queue', queue => $_, exchange => $x, routing_key => 'ignored') for @qs;
            call($ch, 'confirm');
            publish_confirmed($ch, exchange => $x, routing_key => "k$_", body => "log $_") for 0 .. 2;
            eq_('log 0,log 1,log 2', drain($ch, $_), "fanout copy") for @qs;
        });
    });

    test('direct', 'routing', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $x = uniq('direct');
            call($ch, 'declare_exchange', exchange => $x, type => 'direct', auto_delete => 1);
            my $q = declare_server_named($ch);
            call($ch, 'bind_queue', queue => $q, exchange => $x, routing_key => $_) for qw(info error);
            call($ch, 'confirm');
            publish_confirmed($ch, exchange => $x, routing_key => $_, body => $_) for qw(info debug error ERROR);
            eq_('info,error', drain($ch, $q), 'routed');
            call($ch, 'unbind_queue', queue => $q, exchange => $x, routing_key => 'info');
            publish_confirmed($ch, exchange => $x, routing_key => $_, body => "$_-2") for qw(info error);
            eq_('error-2', drain($ch, $q), 'after unbind');
        });
    });

    test('topic', 'star_and_hash', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $x = uniq('topic');
            call($ch, 'declare_exchange', exchange => $x, type => 'topic', auto_delete => 1);
            my ($q1, $q2) = map { declare_server_named($ch) } 1 .. 2;
            call($ch, 'bind_queue', queue => $q1, exchange => $x, routing_key => '*.orange.*');
            call($ch, 'bind_queue', queue => $q2, exchange => $x, routing_key => $_) for ('*.*.rabbit', 'lazy.#');
            call($ch, 'confirm');
            my @keys = qw(quick.orange.rabbit lazy.orange.elephant quick.orange.fox lazy.brown.fox
                          quick.brown.fox quick.orange.male.rabbit lazy.orange.male.rabbit lazy orange);
            publish_confirmed($ch, exchange => $x, routing_key => $_, body => $_) for @keys;
            eq_('quick.orange.rabbit,lazy.orange.elephant,quick.orange.fox', drain($ch, $q1), 'Q1');
            eq_('quick.orange.rabbit,lazy.orange.elephant,lazy.brown.fox,lazy.orange.male.rabbit,lazy',
                drain($ch, $q2), 'Q2');
        });
    });

    test('direct-reply-to', 'pseudo_queue', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my ($sch) = open_channel($ar);
            my $rpc = declare_server_named($sch);
            call($sch, 'consume', queue => $rpc, no_ack => 1, on_consume => sub {
                my $d = shift;
                $sch->publish(routing_key => $d->{header}->reply_to, body => uc($d->{body}->payload),
                              header => { correlation_id => $d->{header}->correlation_id });
            });
            my ($replies, $tag) = consume_into($ch, 'amq.rabbitmq.reply-to', no_ack => 1);
            $ch->publish(routing_key => $rpc, body => 'ping',
                         header => { reply_to => 'amq.rabbitmq.reply-to', correlation_id => 'c-1' });
            my $d = $replies->next('direct reply-to response');
            eq_('PING', $d->{body}->payload, 'reply');
            eq_('c-1', $d->{header}->correlation_id, 'correlation id');
            eq_($tag, $d->{deliver}->method_frame->consumer_tag, 'consumer tag');
        });
    });

    test('confirms', 'on_ack_per_publish', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            my $q = declare_server_named($ch);
            call($ch, 'confirm');
            my $n = 50;
            my $cv = AE::cv;
            my ($acks, $nacks) = (0, 0);
            for my $i (1 .. $n) {
                $cv->begin;
                $ch->publish(routing_key => $q, body => "c$i",
                             on_ack => sub { $acks++; $cv->end }, on_nack => sub { $nacks++; $cv->end });
            }
            # An unroutable message without mandatory is confirmed too.
            $cv->begin;
            $ch->publish(routing_key => uniq('nowhere'), body => 'x',
                         on_ack => sub { $acks++; $cv->end }, on_nack => sub { $nacks++; $cv->end });
            await($cv, 'confirms');
            eq_(($n + 1) . ' 0', "$acks $nacks", 'acks, nacks');
            eq_($n, call($ch, 'declare_queue', queue => $q, passive => 1)->method_frame->message_count,
                'confirmed => enqueued');
        });
    });

    test('mandatory-return', 'return_before_ack', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch) = open_channel($ar);
            call($ch, 'confirm');
            my @events;
            my $cv = AE::cv;
            my $key = uniq('nowhere');
            $ch->publish(routing_key => $key, body => 'lost', mandatory => 1,
                         on_return => sub { push @events, ['return', $_[0]] },
                         on_ack => sub { push @events, ['ack']; $cv->send },
                         on_nack => sub { push @events, ['nack']; $cv->send });
            await($cv, 'confirm');
            eq_('return ack', join(' ', map { $_->[0] } @events), 'events');
            my $ret = $events[0][1]->method_frame;
            eq_("312 NO_ROUTE $key", join(' ', $ret->reply_code, $ret->reply_text, $ret->routing_key), 'return');
        });
    });

    test('errors', '404_passive_queue_closes_channel', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch, $closes) = open_channel($ar);
            my $q = uniq('missing');
            check(!eval { call($ch, 'declare_queue', queue => $q, passive => 1); 1 }, 'passive declare failed');
            check($@ =~ /Channel closed/, "failure: $@");
            eq_(1, scalar @$closes, 'channel.close received');
            my $m = $closes->[0]->method_frame;
            eq_("404 NOT_FOUND - no queue '$q' in vhost '/'", $m->reply_code . ' ' . $m->reply_text, 'close');
            check(!$ch->is_open, 'channel closed');
            check($ar->is_open, 'connection survives');
            my ($ch2) = open_channel($ar);
            declare_server_named($ch2);
        });
    });

    test('errors', '406_redeclare_queue_durable', sub {
        with_conn(sub {
            my ($ar) = @_;
            my ($ch, $closes) = open_channel($ar);
            my $q = uniq('q');
            call($ch, 'declare_queue', queue => $q);
            my $ok = eval { call($ch, 'declare_queue', queue => $q, durable => 1); 1 };
            my ($ch2) = open_channel($ar);
            call($ch2, 'delete_queue', queue => $q);
            check(!$ok, 'redeclare failed');
            eq_(1, scalar @$closes, 'channel.close received');
            my $m = $closes->[0]->method_frame;
            eq_("406 PRECONDITION_FAILED - inequivalent arg 'durable' for queue '$q' in vhost '/': "
                . "received 'true' but current is 'false'", $m->reply_code . ' ' . $m->reply_text, 'close');
        });
    });

    test('connection', 'refused_login', sub {
        my $ar = eval { connect_broker(pass => 'wrong') };
        my $err = $@;
        if ($ar) {
            close_conn($ar);
            die "login with a wrong password succeeded\n";
        }
        # The library announces no authentication_failure_close capability: the broker closes
        # the socket during the handshake, which the library reports as a failed connect.
        check($err =~ /connect failed/, "error: $err");
    });
}

my $mode = $ARGV[0] // '';
if ($mode eq 'restart-before') { restart_before() }
elsif ($mode eq 'restart-after') { restart_after() }
elsif ($mode eq '') { suite() }
else { die "unknown argument $mode\n" }
print "$passed passed, $failed failed\n";
exit($failed ? 1 : 0);
