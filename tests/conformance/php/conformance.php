<?php
// Conformance of php-amqplib (PHP; Debian php-amqplib 3.5.3) against the broker at AMQP_URL.
//
// Covers: hello world (publish/get with properties and headers, basic_consume), work queue
// (two connections with basic_qos(1), manual acks, strict round robin, redelivery after a
// worker's connection closes), fanout to server-named exclusive queues, direct with
// bind/unbind, topic with * and #, RPC with a callback queue and correlation ids, direct
// reply-to, publisher confirms (ack handler), mandatory + basic.return (the return before
// the ack), 404/406 errors closing the channel but not the connection, and the connection
// handshake (AMQPLAIN login, which php-amqplib uses by default; capabilities; clean close;
// refused login).
//
// `php conformance.php restart-before|restart-after` runs one half of the broker-restart check
// instead (scripts/conformance restarts the broker in between).
//
// Output: one line per test, "PASS <pattern>: <name>" or "FAIL <pattern>: <name>: <error>",
// then "N passed, N failed"; exit status 1 if anything failed. scripts/conformance parses it.
// php-amqplib is single-threaded: tests wait by running the connections' event loops
// (`pump`) until the expected callback has fired, with a hang guard; never on sleeps.

require_once '/usr/share/php/PhpAmqpLib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Exception\AMQPConnectionClosedException;
use PhpAmqpLib\Exception\AMQPProtocolChannelException;
use PhpAmqpLib\Exception\AMQPTimeoutException;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPTable;

error_reporting(E_ALL & ~E_DEPRECATED);
set_error_handler(function ($severity, $message, $file, $line) {
    throw new ErrorException($message, 0, $severity, $file, $line);
}, E_ALL & ~E_DEPRECATED);

const HANG_GUARD = 10.0; // seconds per awaited event; never reached when the broker behaves

$URL = getenv('AMQP_URL');
if (!$URL) {
    fwrite(STDERR, "AMQP_URL is not set\n");
    exit(2);
}
$passed = 0;
$failed = 0;

class Failed extends Exception
{
}

function connect($password = null)
{
    global $URL;
    $u = parse_url($URL);
    $vhost = isset($u['path']) && $u['path'] !== '/' ? rawurldecode(substr($u['path'], 1)) : '/';
    return new AMQPStreamConnection($u['host'], $u['port'] ?? 5672, rawurldecode($u['user']),
        $password ?? rawurldecode($u['pass']), $vhost);
}

function uniq($prefix)
{
    return "conf.php.$prefix." . bin2hex(random_bytes(6));
}

function check($ok, $what)
{
    if (!$ok) {
        throw new Failed($what);
    }
}

function eq($expected, $actual, $what)
{
    if ($expected !== $actual) {
        throw new Failed("$what: expected " . var_export($expected, true) . ' but got '
            . var_export($actual, true));
    }
}

/** Runs the event loops of $channels until $done() is true (hang guard HANG_GUARD). */
function pump(array $channels, callable $done, $what)
{
    $deadline = microtime(true) + HANG_GUARD;
    while (!$done()) {
        if (microtime(true) > $deadline) {
            throw new Failed("timed out waiting for $what");
        }
        foreach ($channels as $ch) {
            try {
                $ch->wait(null, false, 0.05);
            } catch (AMQPTimeoutException $e) {
                // nothing arrived on this one within 50 ms: try the next
            }
            if ($done()) {
                return;
            }
        }
    }
}

/** Bodies currently ready in $queue (basic_get with auto-ack until empty). */
function drain($ch, $queue)
{
    $out = [];
    while (($m = $ch->basic_get($queue, true)) !== null) {
        $out[] = $m->getBody();
    }
    return $out;
}

function test($pattern, $name, callable $body)
{
    global $passed, $failed;
    try {
        $body();
        $passed++;
        echo "PASS $pattern: $name\n";
    } catch (Throwable $e) {
        $failed++;
        fwrite(STDERR, "$name: " . get_class($e) . ': ' . $e->getMessage() . "\n"
            . $e->getTraceAsString() . "\n");
        echo "FAIL $pattern: $name: " . get_class($e) . ': '
            . str_replace("\n", ' ', $e->getMessage()) . "\n";
    }
    flush();
}

/** The reply code and text of the channel.close a failed synchronous method got. */
function channel_error($ch, callable $body)
{
    try {
        $body();
    } catch (AMQPProtocolChannelException $e) {
        check(!$ch->is_open(), 'channel closed');
        return [$e->getCode(), $e->getMessage()];
    }
    throw new Failed('expected a channel error');
}

// ---- broker restart (only with an argument) ----------------------------------------------

const RESTART_QUEUE = 'conformance.restart.php';
const RESTART_BODY = 'persistent message from php-amqplib';

if (($argv[1] ?? '') === 'restart-before') {
    test('restart', 'before_publish_persistent_confirmed', function () {
        $conn = connect();
        $ch = $conn->channel();
        $ch->queue_delete(RESTART_QUEUE); // a leftover from an aborted run
        $ch->queue_declare(RESTART_QUEUE, false, true, false, false);
        $ch->confirm_select();
        $acks = [];
        $ch->set_ack_handler(function ($m) use (&$acks) { $acks[] = 'ack'; });
        $ch->set_nack_handler(function ($m) use (&$acks) { $acks[] = 'nack'; });
        $ch->basic_publish(new AMQPMessage(RESTART_BODY, [
            'delivery_mode' => 2, 'content_type' => 'text/plain', 'correlation_id' => 'restart-1',
            'application_headers' => new AMQPTable(['client' => 'php'])]), '', RESTART_QUEUE);
        $ch->wait_for_pending_acks_returns(HANG_GUARD);
        eq(['ack'], $acks, 'publisher confirm');
        $conn->close();
    });
} elseif (($argv[1] ?? '') === 'restart-after') {
    test('restart', 'after_persistent_message_survived', function () {
        $conn = connect();
        $ch = $conn->channel();
        $m = $ch->basic_get(RESTART_QUEUE, false);
        check($m !== null, 'the message is still in ' . RESTART_QUEUE);
        eq(RESTART_BODY, $m->getBody(), 'body');
        eq(2, $m->get('delivery_mode'), 'delivery mode');
        eq('text/plain', $m->get('content_type'), 'content type');
        eq('restart-1', $m->get('correlation_id'), 'correlation id');
        eq('php', $m->get('application_headers')->getNativeData()['client'] ?? null, 'header');
        $m->ack();
        eq(0, $ch->queue_delete(RESTART_QUEUE), 'messages left when deleted');
        $conn->close();
    });
} elseif (isset($argv[1])) {
    fwrite(STDERR, "unknown argument {$argv[1]}\n");
    exit(2);
}
if (isset($argv[1])) {
    echo "$passed passed, $failed failed\n";
    exit($failed === 0 ? 0 : 1);
}

// ---- hello world ----------------------------------------------------------------------------

test('hello-world', 'publish_get_properties', function () {
    $conn = connect();
    $ch = $conn->channel();
    $q = uniq('hello');
    [$name, $count] = $ch->queue_declare($q, false, false, true, false);
    eq($q, $name, 'queue name');
    eq(0, $count, 'message count');
    $msg = new AMQPMessage('Hello World!', [
        'content_type' => 'text/plain', 'message_id' => 'm-1', 'priority' => 3,
        'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
        'application_headers' => new AMQPTable(['lang' => 'en', 'n' => 7]),
    ]);
    $ch->basic_publish($msg, '', $q);
    $got = $ch->basic_get($q, false);
    check($got !== null, 'a message');
    eq('Hello World!', $got->getBody(), 'body');
    eq($q, $got->getRoutingKey(), 'routing key');
    eq('', $got->getExchange(), 'exchange');
    eq(false, $got->isRedelivered(), 'redelivered');
    eq(0, $got->getMessageCount(), 'remaining');
    eq('text/plain', $got->get('content_type'), 'content type');
    eq('m-1', $got->get('message_id'), 'message id');
    eq(3, $got->get('priority'), 'priority');
    eq(2, $got->get('delivery_mode'), 'delivery mode');
    eq(['lang' => 'en', 'n' => 7], $got->get('application_headers')->getNativeData(), 'headers');
    $got->ack();
    eq(null, $ch->basic_get($q, true), 'queue empty');
    $conn->close();
});

test('hello-world', 'basic_consume', function () {
    $conn = connect();
    $ch = $conn->channel();
    [$q] = $ch->queue_declare('', false, false, true, true);
    check(strpos($q, 'amq.gen-') === 0, "server-named: $q");
    $got = [];
    $tag = $ch->basic_consume($q, '', false, false, false, false, function ($m) use (&$got) {
        $got[] = $m;
        $m->ack();
    });
    for ($i = 0; $i < 3; $i++) {
        $ch->basic_publish(new AMQPMessage("m$i"), '', $q);
    }
    pump([$ch], function () use (&$got) {
        return count($got) === 3;
    }, 'three deliveries');
    eq(['m0', 'm1', 'm2'], array_map(fn ($m) => $m->getBody(), $got), 'bodies');
    eq([$tag, $tag, $tag], array_map(fn ($m) => $m->getConsumerTag(), $got), 'consumer tags');
    $ch->basic_cancel($tag);
    $conn->close();
});

// ---- work queue -----------------------------------------------------------------------------

class Worker
{
    public $conn;
    public $ch;
    public $pending = [];
    public $seen = [];

    public function __construct($queue)
    {
        $this->conn = connect();
        $this->ch = $this->conn->channel();
        $this->ch->basic_qos(0, 1, false);
        $this->ch->basic_consume($queue, '', false, false, false, false, function ($m) {
            $this->pending[] = $m;
            $this->seen[] = $m->getBody();
        });
    }

    public function close()
    {
        if ($this->conn->isConnected()) {
            $this->conn->close();
        }
    }
}

test('work-queue', 'prefetch_one_round_robin', function () {
    $conn = connect();
    $ch = $conn->channel();
    $ch->confirm_select();
    $q = uniq('tasks');
    $ch->queue_declare($q, false, true, false, false);
    $a = new Worker($q);
    $b = new Worker($q);
    try {
        eq(2, $ch->queue_declare($q, true)[2], 'consumers');
        $n = 6;
        for ($i = 0; $i < $n; $i++) {
            $ch->basic_publish(new AMQPMessage("task-$i", ['delivery_mode' => 2]), '', $q);
        }
        $ch->wait_for_pending_acks_returns(HANG_GUARD);
        pump([$a->ch, $b->ch], function () use ($a, $b) {
            return count($a->pending) === 1 && count($b->pending) === 1;
        }, 'one task per worker');
        eq(['task-0'], $a->seen, 'the first registered consumer gets the first task');
        eq(['task-1'], $b->seen, 'second task');
        eq($n - 2, $ch->queue_declare($q, true)[1], 'prefetch 1 holds the rest back');
        for ($i = 2; $i < $n; $i++) {
            $w = $i % 2 === 0 ? $a : $b;
            array_shift($w->pending)->ack();
            pump([$w->ch], function () use ($w) {
                return count($w->pending) === 1;
            }, "task-$i");
            eq("task-$i", end($w->seen), 'round robin');
        }
        array_shift($a->pending)->ack();
        array_shift($b->pending)->ack();
        eq(['task-0', 'task-2', 'task-4'], $a->seen, "A's tasks");
        eq(['task-1', 'task-3', 'task-5'], $b->seen, "B's tasks");
    } finally {
        $a->close();
        $b->close();
        $ch->queue_delete($q);
        $conn->close();
    }
});

test('work-queue', 'redelivered_when_worker_connection_closes', function () {
    $conn = connect();
    $ch = $conn->channel();
    $q = uniq('tasks');
    $ch->queue_declare($q, false, false, false, false);
    $a = new Worker($q);
    $b = null;
    try {
        $ch->basic_publish(new AMQPMessage('important'), '', $q);
        pump([$a->ch], function () use ($a) {
            return count($a->pending) === 1;
        }, 'delivery to A');
        eq(false, $a->pending[0]->isRedelivered(), 'first delivery');
        $b = new Worker($q);
        $a->close(); // without acking
        pump([$b->ch], function () use ($b) {
            return count($b->pending) === 1;
        }, 'redelivery to B');
        eq('important', $b->pending[0]->getBody(), 'body');
        eq(true, $b->pending[0]->isRedelivered(), 'redelivered flag');
        array_shift($b->pending)->ack();
        [, $messages, $consumers] = $ch->queue_declare($q, true);
        eq([0, 1], [$messages, $consumers], 'messages, consumers');
    } finally {
        $a->close();
        if ($b) {
            $b->close();
        }
        $ch->queue_delete($q);
        $conn->close();
    }
});

// ---- exchanges ------------------------------------------------------------------------------

test('fanout', 'server_named_exclusive_queues', function () {
    $conn = connect();
    $ch = $conn->channel();
    $ch->confirm_select();
    $ex = uniq('logs');
    $ch->exchange_declare($ex, 'fanout', false, false, true);
    $queues = [];
    for ($i = 0; $i < 2; $i++) {
        [$q] = $ch->queue_declare('', false, false, true, true);
        check(strpos($q, 'amq.gen-') === 0, 'server-named');
        $ch->queue_bind($q, $ex, 'ignored');
        $queues[] = $q;
    }
    check($queues[0] !== $queues[1], 'distinct names');
    for ($i = 0; $i < 3; $i++) {
        $ch->basic_publish(new AMQPMessage("log $i"), $ex, "k$i");
    }
    $ch->wait_for_pending_acks_returns(HANG_GUARD);
    foreach ($queues as $q) {
        eq(['log 0', 'log 1', 'log 2'], drain($ch, $q), 'fanout copy');
    }
    $conn->close();
});

test('direct', 'routing_bind_unbind', function () {
    $conn = connect();
    $ch = $conn->channel();
    $ch->confirm_select();
    $ex = uniq('direct');
    $ch->exchange_declare($ex, 'direct', false, false, true);
    [$qErr] = $ch->queue_declare('', false, false, true, true);
    [$qAll] = $ch->queue_declare('', false, false, true, true);
    $ch->queue_bind($qErr, $ex, 'error');
    foreach (['info', 'warning', 'error'] as $sev) {
        $ch->queue_bind($qAll, $ex, $sev);
    }
    foreach (['info', 'warning', 'error', 'debug', 'ERROR'] as $sev) {
        $ch->basic_publish(new AMQPMessage($sev), $ex, $sev);
    }
    $ch->wait_for_pending_acks_returns(HANG_GUARD);
    eq(['error'], drain($ch, $qErr), 'error queue');
    eq(['info', 'warning', 'error'], drain($ch, $qAll), 'all queue');
    $ch->queue_unbind($qAll, $ex, 'info');
    $ch->basic_publish(new AMQPMessage('info-2'), $ex, 'info');
    $ch->basic_publish(new AMQPMessage('warning-2'), $ex, 'warning');
    $ch->wait_for_pending_acks_returns(HANG_GUARD);
    eq(['warning-2'], drain($ch, $qAll), 'after unbind');
    $conn->close();
});

test('topic', 'star_and_hash', function () {
    $cases = [
        ['quick.orange.rabbit', ['Q1', 'Q2']], ['lazy.orange.elephant', ['Q1', 'Q2']],
        ['quick.orange.fox', ['Q1']], ['lazy.brown.fox', ['Q2']], ['lazy.pink.rabbit', ['Q2']],
        ['quick.brown.fox', []], ['quick.orange.male.rabbit', []],
        ['lazy.orange.male.rabbit', ['Q2']], ['lazy', ['Q2']], ['orange', []],
    ];
    $conn = connect();
    $ch = $conn->channel();
    $ch->confirm_select();
    $ex = uniq('topic');
    $ch->exchange_declare($ex, 'topic', false, false, true);
    [$q1] = $ch->queue_declare('', false, false, true, true);
    [$q2] = $ch->queue_declare('', false, false, true, true);
    $ch->queue_bind($q1, $ex, '*.orange.*');
    $ch->queue_bind($q2, $ex, '*.*.rabbit');
    $ch->queue_bind($q2, $ex, 'lazy.#');
    $want = ['Q1' => [], 'Q2' => []];
    foreach ($cases as [$key, $dest]) {
        $ch->basic_publish(new AMQPMessage($key), $ex, $key);
        foreach ($dest as $d) {
            $want[$d][] = $key;
        }
    }
    $ch->wait_for_pending_acks_returns(HANG_GUARD);
    eq($want['Q1'], drain($ch, $q1), 'Q1');
    eq($want['Q2'], drain($ch, $q2), 'Q2');
    $conn->close();
});

// ---- RPC ------------------------------------------------------------------------------------

function fib($n)
{
    [$a, $b] = [0, 1];
    for ($i = 0; $i < $n; $i++) {
        [$a, $b] = [$b, $a + $b];
    }
    return $a;
}

/** An RPC server on its own connection: answers fib(body) to reply_to. [$conn, $ch, &$requests] */
function fib_server($queue, &$requests)
{
    $conn = connect();
    $ch = $conn->channel();
    $ch->queue_declare($queue, false, false, true, true);
    $ch->basic_consume($queue, '', false, false, false, false,
        function ($m) use ($ch, &$requests) {
            $requests[] = [$m->get('reply_to'), $m->get('correlation_id'), $m->getBody()];
            $reply = new AMQPMessage((string) fib((int) $m->getBody()),
                ['correlation_id' => $m->get('correlation_id')]);
            $ch->basic_publish($reply, '', $m->get('reply_to'));
            $m->ack();
        });
    return [$conn, $ch];
}

test('rpc', 'callback_queue_and_correlation_id', function () {
    $requests = [];
    $rpcQueue = uniq('rpc');
    [$sconn, $sch] = fib_server($rpcQueue, $requests);
    $conn = connect();
    $ch = $conn->channel();
    [$callback] = $ch->queue_declare('', false, false, true, true);
    $got = [];
    $ch->basic_consume($callback, '', false, true, false, false, function ($m) use (&$got) {
        $got[$m->get('correlation_id')] = $m->getBody();
    });
    $expected = [];
    foreach ([0, 1, 10, 30] as $n) {
        $corr = bin2hex(random_bytes(8));
        $expected[$corr] = (string) fib($n);
        $ch->basic_publish(new AMQPMessage((string) $n,
            ['reply_to' => $callback, 'correlation_id' => $corr]), '', $rpcQueue);
    }
    pump([$sch, $ch], function () use (&$got, $expected) {
        return count($got) === count($expected);
    }, 'RPC replies');
    ksort($got);
    ksort($expected);
    eq($expected, $got, 'replies by correlation id');
    eq(array_fill(0, 4, $callback), array_column($requests, 0), 'reply_to seen by the server');
    $conn->close();
    $sconn->close();
});

test('direct-reply-to', 'pseudo_queue', function () {
    $requests = [];
    $rpcQueue = uniq('rpc');
    [$sconn, $sch] = fib_server($rpcQueue, $requests);
    $conn = connect();
    $ch = $conn->channel();
    $replies = [];
    $tag = $ch->basic_consume('amq.rabbitmq.reply-to', '', false, true, false, false,
        function ($m) use (&$replies) {
            $replies[] = $m;
        });
    $corr = bin2hex(random_bytes(8));
    $ch->basic_publish(new AMQPMessage('20', ['reply_to' => 'amq.rabbitmq.reply-to',
        'correlation_id' => $corr]), '', $rpcQueue);
    pump([$sch, $ch], function () use (&$replies) {
        return count($replies) === 1;
    }, 'direct reply-to response');
    eq('6765', $replies[0]->getBody(), 'reply');
    eq($corr, $replies[0]->get('correlation_id'), 'correlation id');
    eq($tag, $replies[0]->getConsumerTag(), 'consumer tag');
    $replyTo = $requests[0][0];
    check(strpos($replyTo, 'amq.rabbitmq.reply-to.') === 0, "rewritten reply_to: $replyTo");
    eq($replyTo, $replies[0]->getRoutingKey(), 'routing key');
    $conn->close();
    $sconn->close();
});

// ---- confirms and returns -------------------------------------------------------------------

test('confirms', 'ack_handler_every_tag', function () {
    $conn = connect();
    $ch = $conn->channel();
    [$q] = $ch->queue_declare('', false, false, true, true);
    $acked = [];
    $nacked = [];
    $ch->set_ack_handler(function ($m) use (&$acked) {
        $acked[] = $m->getBody();
    });
    $ch->set_nack_handler(function ($m) use (&$nacked) {
        $nacked[] = $m->getBody();
    });
    $ch->confirm_select();
    $bodies = [];
    for ($i = 0; $i < 50; $i++) {
        $bodies[] = "c$i";
        $ch->basic_publish(new AMQPMessage("c$i"), '', $q);
    }
    // An unroutable message without mandatory is confirmed too.
    $ch->basic_publish(new AMQPMessage('x'), '', uniq('nowhere'));
    $ch->wait_for_pending_acks_returns(HANG_GUARD);
    sort($acked);
    $all = array_merge($bodies, ['x']);
    sort($all);
    eq($all, $acked, 'every message acked (multiple acks expanded)');
    eq([], $nacked, 'nacks');
    eq(50, $ch->queue_declare($q, true)[1], 'confirmed => enqueued');
    $conn->close();
});

test('mandatory-return', 'return_listener_before_ack', function () {
    $conn = connect();
    $ch = $conn->channel();
    $events = [];
    $returns = [];
    $ch->set_return_listener(function ($code, $text, $exchange, $key, $m) use (&$events, &$returns) {
        $events[] = 'return';
        $returns[] = [$code, $text, $exchange, $key, $m->getBody()];
    });
    $ch->set_ack_handler(function ($m) use (&$events) {
        $events[] = 'ack';
    });
    $ch->confirm_select();
    $key = uniq('nowhere');
    $ch->basic_publish(new AMQPMessage('lost'), '', $key, true);
    $ch->wait_for_pending_acks_returns(HANG_GUARD);
    eq([[312, 'NO_ROUTE', '', $key, 'lost']], $returns, 'basic.return');
    eq(['return', 'ack'], $events, 'return precedes the ack');
    $conn->close();
});

// ---- errors ---------------------------------------------------------------------------------

test('errors', '404_passive_queue_closes_channel', function () {
    $conn = connect();
    $ch = $conn->channel();
    $q = uniq('missing');
    $err = channel_error($ch, fn () => $ch->queue_declare($q, true));
    eq([404, "NOT_FOUND - no queue '$q' in vhost '/'"], $err, 'channel.close');
    check($conn->isConnected(), 'connection survives');
    $conn->channel()->queue_declare('', false, false, true, true);
    $conn->close();
});

test('errors', '404_passive_exchange', function () {
    $conn = connect();
    $ch = $conn->channel();
    $ex = uniq('missing');
    $err = channel_error($ch, fn () => $ch->exchange_declare($ex, 'direct', true));
    eq([404, "NOT_FOUND - no exchange '$ex' in vhost '/'"], $err, 'channel.close');
    $conn->close();
});

test('errors', '406_redeclare_queue_durable', function () {
    $conn = connect();
    $ch = $conn->channel();
    $q = uniq('q');
    $ch->queue_declare($q, false, false, false, false);
    try {
        $err = channel_error($ch, fn () => $ch->queue_declare($q, false, true, false, false));
        eq([406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '$q' in vhost '/': "
            . "received 'true' but current is 'false'"], $err, 'channel.close');
    } finally {
        $conn->channel()->queue_delete($q);
        $conn->close();
    }
});

test('errors', '406_redeclare_exchange_type', function () {
    $conn = connect();
    $ch = $conn->channel();
    $ex = uniq('ex');
    $ch->exchange_declare($ex, 'direct', false, false, false);
    try {
        $err = channel_error($ch, fn () => $ch->exchange_declare($ex, 'topic', false, false, false));
        eq([406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '$ex' in vhost '/': "
            . "received 'topic' but current is 'direct'"], $err, 'channel.close');
    } finally {
        $conn->channel()->exchange_delete($ex);
        $conn->close();
    }
});

// ---- connection -----------------------------------------------------------------------------

test('connection', 'amqplain_capabilities_and_clean_close', function () {
    $conn = connect(); // php-amqplib logs in with AMQPLAIN by default
    $caps = $conn->getServerProperties()['capabilities'][1];
    foreach (['publisher_confirms', 'basic.nack', 'consumer_cancel_notify', 'exchange_exchange_bindings',
              'authentication_failure_close', 'per_consumer_qos',
              'direct_reply_to'] as $cap) {
        eq(['t', 1], $caps[$cap] ?? null, "capability $cap"); // (field type, value): a true bool
    }
    $ch = $conn->channel();
    check($ch->is_open(), 'channel open');
    $conn->close();
    check(!$conn->isConnected(), 'connection closed');
    check(!$ch->is_open(), 'channel closed');
});

test('connection', 'refused_login', function () {
    try {
        connect('wrong')->close();
    } catch (AMQPConnectionClosedException $e) {
        eq(403, $e->getCode(), 'reply code');
        check(strpos($e->getMessage(), 'ACCESS_REFUSED') === 0, $e->getMessage());
        return;
    }
    throw new Failed('login with a wrong password succeeded');
});

echo "$passed passed, $failed failed\n";
exit($failed === 0 ? 0 : 1);
