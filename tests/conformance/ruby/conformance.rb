# Conformance of Bunny (Ruby; Debian ruby-bunny 2.19.0) against the broker at AMQP_URL.
#
# Covers: hello world (publish/pop with properties, subscribe), work queue (two connections
# with prefetch 1, manual acks, strict round robin, redelivery after a worker's connection
# closes), fanout to server-named exclusive queues, direct with bind/unbind, topic with * and
# #, RPC with a callback queue and correlation ids, direct reply-to, publisher confirms,
# mandatory + basic.return, 404/406 errors closing the channel but not the connection, and the
# connection handshake (capabilities, clean close, refused login).
#
# `ruby conformance.rb restart-before|restart-after` runs one half of the broker-restart check
# instead (scripts/conformance restarts the broker in between).
#
# Output: one line per test, "PASS <pattern>: <name>" or "FAIL <pattern>: <name>: <error>",
# then "N passed, N failed"; exit status 1 if anything failed. scripts/conformance parses it.
# Waiting is on client events (a Queue fed by consumer callbacks, with a hang guard; confirms),
# never on sleeps. Automatic recovery is off so that errors stay visible.
require "bunny"
require "logger"
require "securerandom"
require "timeout"

HANG_GUARD = 10 # seconds per awaited event; never reached when the broker behaves
TEST_GUARD = 60 # seconds per test
URL = ENV.fetch("AMQP_URL")
$passed = 0
$failed = 0

def connect(url = URL)
  conn = Bunny.new(url, automatically_recover: false, logger: Logger.new($stderr, level: Logger::FATAL))
  conn.start
  conn
end

def uniq(prefix)
  "conf.ruby.#{prefix}.#{SecureRandom.hex(6)}"
end

class Failed < StandardError; end

def check(ok, what)
  raise Failed, what unless ok
end

def eq(expected, actual, what)
  raise Failed, "#{what}: expected #{expected.inspect} but got #{actual.inspect}" unless expected == actual
end

# The next item a consumer callback pushed onto `queue`, or a failure after HANG_GUARD.
def next_of(queue, what)
  Timeout.timeout(HANG_GUARD) { queue.pop }
rescue Timeout::Error
  raise Failed, "timed out waiting for #{what}"
end

# Bodies currently ready in `q` (basic.get with auto-ack until empty).
def drain(q)
  out = []
  loop do
    _info, _props, body = q.pop
    return out if body.nil?
    out << body
  end
end

def test(pattern, name)
  Timeout.timeout(TEST_GUARD) { yield }
  $passed += 1
  puts "PASS #{pattern}: #{name}"
rescue Exception => e # rubocop:disable Lint/RescueException -- report everything, go on
  $failed += 1
  $stderr.puts "#{name}: #{e.class}: #{e.message}\n  #{(e.backtrace || []).first(5).join("\n  ")}"
  puts "FAIL #{pattern}: #{name}: #{e.class}: #{e.message.to_s.tr("\n", ' ')}"
ensure
  $stdout.flush
end

def with_conn
  conn = connect
  yield conn
ensure
  conn.close if conn&.open?
end

# ---- broker restart (only with an argument) -------------------------------------------------

RESTART_QUEUE = "conformance.restart.ruby"
RESTART_BODY = "persistent message from Bunny"

case ARGV[0]
when nil
  # the suite below
when "restart-before"
  test("restart", "before_publish_persistent_confirmed") do
    with_conn do |conn|
      ch = conn.create_channel
      ch.queue_delete(RESTART_QUEUE) # a leftover from an aborted run
      q = ch.queue(RESTART_QUEUE, durable: true)
      ch.confirm_select
      ch.default_exchange.publish(RESTART_BODY, routing_key: RESTART_QUEUE, persistent: true,
                                  content_type: "text/plain", correlation_id: "restart-1",
                                  headers: { "client" => "ruby" })
      check(ch.wait_for_confirms, "publisher confirm")
      eq(0, ch.nacked_set.size, "nacks")
      eq(1, q.message_count, "queued")
    end
  end
when "restart-after"
  test("restart", "after_persistent_message_survived") do
    with_conn do |conn|
      ch = conn.create_channel
      info, props, body = ch.queue(RESTART_QUEUE, no_declare: true).pop(manual_ack: true)
      check(!body.nil?, "the message is still in #{RESTART_QUEUE}")
      eq(RESTART_BODY, body, "body")
      eq(2, props.delivery_mode, "delivery mode")
      eq("text/plain", props.content_type, "content type")
      eq("restart-1", props.correlation_id, "correlation id")
      eq({ "client" => "ruby" }, props.headers, "headers")
      ch.ack(info.delivery_tag)
      eq(0, ch.queue_delete(RESTART_QUEUE).message_count, "messages left when deleted")
    end
  end
else
  abort "unknown argument #{ARGV[0]}"
end
unless ARGV.empty?
  puts "#{$passed} passed, #{$failed} failed"
  $stdout.flush
  exit($failed.zero? ? 0 : 1)
end

# ---- hello world ----------------------------------------------------------------------------

test("hello-world", "publish_pop_properties") do
  with_conn do |conn|
    ch = conn.create_channel
    name = uniq("hello")
    q = ch.queue(name, exclusive: true)
    eq(0, q.message_count, "message count")
    ch.default_exchange.publish("Hello World!", routing_key: name, content_type: "text/plain",
                                headers: { "lang" => "en", "n" => 7 }, message_id: "m-1",
                                persistent: true)
    info, props, body = q.pop(manual_ack: true)
    eq("Hello World!", body, "body")
    eq(name, info.routing_key, "routing key")
    eq("", info.exchange, "exchange")
    eq(false, info.redelivered?, "redelivered")
    eq("text/plain", props.content_type, "content type")
    eq({ "lang" => "en", "n" => 7 }, props.headers, "headers")
    eq("m-1", props.message_id, "message id")
    eq(2, props.delivery_mode, "delivery mode")
    ch.ack(info.delivery_tag)
    eq([nil, nil, nil], q.pop, "empty queue")
  end
end

test("hello-world", "subscribe") do
  with_conn do |conn|
    ch = conn.create_channel
    q = ch.queue("", exclusive: true)
    check(q.name.start_with?("amq.gen-"), "server-named: #{q.name}")
    got = Queue.new
    consumer = q.subscribe(manual_ack: true) { |info, _props, body| got << [info, body] }
    3.times { |i| ch.default_exchange.publish("m#{i}", routing_key: q.name) }
    3.times do |i|
      info, body = next_of(got, "delivery #{i}")
      eq("m#{i}", body, "body")
      eq(consumer.consumer_tag, info.consumer_tag, "consumer tag")
      ch.ack(info.delivery_tag)
    end
    consumer.cancel
  end
end

# ---- work queue -----------------------------------------------------------------------------

class Worker
  attr_reader :conn, :ch, :deliveries, :seen

  def initialize(queue_name)
    @conn = connect
    @ch = @conn.create_channel
    @ch.prefetch(1)
    @deliveries = Queue.new
    @seen = []
    @ch.queue(queue_name, no_declare: true).subscribe(manual_ack: true) do |info, props, body|
      @seen << body
      @deliveries << [info, props, body]
    end
  end

  def close
    @conn.close if @conn.open?
  end
end

test("work-queue", "prefetch_one_round_robin") do
  with_conn do |conn|
    ch = conn.create_channel
    ch.confirm_select
    name = uniq("tasks")
    ch.queue(name, durable: true)
    a = Worker.new(name)
    b = Worker.new(name)
    begin
      eq(2, ch.queue_declare(name, passive: true).consumer_count, "consumers")
      n = 6
      n.times { |i| ch.default_exchange.publish("task-#{i}", routing_key: name, persistent: true) }
      check(ch.wait_for_confirms, "publishes confirmed")
      held = { a => next_of(a.deliveries, "task for A"), b => next_of(b.deliveries, "task for B") }
      eq("task-0", held[a][2], "the first registered consumer gets the first task")
      eq("task-1", held[b][2], "second task")
      eq(n - 2, ch.queue_declare(name, passive: true).message_count, "prefetch 1 holds the rest back")
      (2...n).each do |i|
        w = i.even? ? a : b
        w.ch.ack(held[w][0].delivery_tag)
        held[w] = next_of(w.deliveries, "task-#{i}")
        eq("task-#{i}", held[w][2], "round robin")
        eq(2, held[w][1].delivery_mode, "persistent")
      end
      [a, b].each { |w| w.ch.ack(held[w][0].delivery_tag) }
      eq(%w[task-0 task-2 task-4], a.seen, "A's tasks")
      eq(%w[task-1 task-3 task-5], b.seen, "B's tasks")
    ensure
      a.close
      b.close
      ch.queue_delete(name)
    end
  end
end

test("work-queue", "redelivered_when_worker_connection_closes") do
  with_conn do |conn|
    ch = conn.create_channel
    name = uniq("tasks")
    ch.queue(name)
    a = Worker.new(name)
    b = nil
    begin
      ch.default_exchange.publish("important", routing_key: name)
      info, = next_of(a.deliveries, "delivery to A")
      eq(false, info.redelivered?, "first delivery")
      b = Worker.new(name)
      a.close # without acking
      info, _props, body = next_of(b.deliveries, "redelivery to B")
      eq("important", body, "body")
      eq(true, info.redelivered?, "redelivered flag")
      b.ch.ack(info.delivery_tag)
      ok = ch.queue_declare(name, passive: true)
      eq([0, 1], [ok.message_count, ok.consumer_count], "messages, consumers")
    ensure
      a.close
      b&.close
      ch.queue_delete(name)
    end
  end
end

# ---- exchanges ------------------------------------------------------------------------------

test("fanout", "server_named_exclusive_queues") do
  with_conn do |conn|
    ch = conn.create_channel
    ch.confirm_select
    x = ch.fanout(uniq("logs"), auto_delete: true)
    queues = Array.new(2) { ch.queue("", exclusive: true).bind(x, routing_key: "ignored") }
    queues.each { |q| check(q.name.start_with?("amq.gen-"), "server-named") }
    check(queues[0].name != queues[1].name, "distinct names")
    3.times { |i| x.publish("log #{i}", routing_key: "k#{i}") }
    check(ch.wait_for_confirms, "confirmed")
    queues.each { |q| eq(["log 0", "log 1", "log 2"], drain(q), "fanout copy") }
  end
end

test("direct", "routing_bind_unbind") do
  with_conn do |conn|
    ch = conn.create_channel
    ch.confirm_select
    x = ch.direct(uniq("direct"), auto_delete: true)
    q_err = ch.queue("", exclusive: true).bind(x, routing_key: "error")
    q_all = ch.queue("", exclusive: true)
    %w[info warning error].each { |sev| q_all.bind(x, routing_key: sev) }
    %w[info warning error debug ERROR].each { |sev| x.publish(sev, routing_key: sev) }
    check(ch.wait_for_confirms, "confirmed")
    eq(["error"], drain(q_err), "error queue")
    eq(%w[info warning error], drain(q_all), "all queue")
    q_all.unbind(x, routing_key: "info")
    x.publish("info-2", routing_key: "info")
    x.publish("warning-2", routing_key: "warning")
    check(ch.wait_for_confirms, "confirmed")
    eq(["warning-2"], drain(q_all), "after unbind")
  end
end

test("topic", "star_and_hash") do
  cases = [
    ["quick.orange.rabbit", %w[Q1 Q2]], ["lazy.orange.elephant", %w[Q1 Q2]],
    ["quick.orange.fox", %w[Q1]], ["lazy.brown.fox", %w[Q2]], ["lazy.pink.rabbit", %w[Q2]],
    ["quick.brown.fox", []], ["quick.orange.male.rabbit", []],
    ["lazy.orange.male.rabbit", %w[Q2]], ["lazy", %w[Q2]], ["orange", []]
  ]
  with_conn do |conn|
    ch = conn.create_channel
    ch.confirm_select
    x = ch.topic(uniq("topic"), auto_delete: true)
    q1 = ch.queue("", exclusive: true).bind(x, routing_key: "*.orange.*")
    q2 = ch.queue("", exclusive: true).bind(x, routing_key: "*.*.rabbit")
    q2.bind(x, routing_key: "lazy.#")
    cases.each { |key, _| x.publish(key, routing_key: key) }
    check(ch.wait_for_confirms, "confirmed")
    eq(cases.select { |_, d| d.include?("Q1") }.map(&:first), drain(q1), "Q1")
    eq(cases.select { |_, d| d.include?("Q2") }.map(&:first), drain(q2), "Q2")
  end
end

# ---- RPC ------------------------------------------------------------------------------------

def fib(n)
  a, b = 0, 1
  n.times { a, b = b, a + b }
  a
end

# An RPC server on its own connection: answers fib(body) to reply_to.
def fib_server(queue_name)
  conn = connect
  ch = conn.create_channel
  ch.queue(queue_name, exclusive: true).subscribe(manual_ack: true) do |info, props, body|
    ch.default_exchange.publish(fib(body.to_i).to_s, routing_key: props.reply_to,
                                correlation_id: props.correlation_id)
    ch.ack(info.delivery_tag)
  end
  conn
end

test("rpc", "callback_queue_and_correlation_id") do
  rpc_queue = uniq("rpc")
  server = fib_server(rpc_queue)
  begin
    with_conn do |conn|
      ch = conn.create_channel
      callback = ch.queue("", exclusive: true)
      replies = Queue.new
      callback.subscribe { |_info, props, body| replies << [props.correlation_id, body] }
      expected = {}
      [0, 1, 10, 30].each do |n|
        corr = SecureRandom.uuid
        expected[corr] = fib(n).to_s
        ch.default_exchange.publish(n.to_s, routing_key: rpc_queue, reply_to: callback.name,
                                    correlation_id: corr)
      end
      got = {}
      expected.size.times { corr, body = next_of(replies, "RPC reply"); got[corr] = body }
      eq(expected, got, "replies by correlation id")
    end
  ensure
    server.close
  end
end

test("direct-reply-to", "pseudo_queue") do
  rpc_queue = uniq("rpc")
  server = fib_server(rpc_queue)
  begin
    with_conn do |conn|
      ch = conn.create_channel
      replies = Queue.new
      reply_q = ch.queue("amq.rabbitmq.reply-to", no_declare: true)
      consumer = reply_q.subscribe(manual_ack: false) { |info, props, body| replies << [info, props, body] }
      [[20, "6765"], [7, "13"]].each do |n, want|
        corr = SecureRandom.uuid
        ch.default_exchange.publish(n.to_s, routing_key: rpc_queue, reply_to: "amq.rabbitmq.reply-to",
                                    correlation_id: corr)
        info, props, body = next_of(replies, "direct reply-to response")
        eq(want, body, "reply")
        eq(corr, props.correlation_id, "correlation id")
        eq(consumer.consumer_tag, info.consumer_tag, "consumer tag")
        check(info.routing_key.start_with?("amq.rabbitmq.reply-to."), "routing key #{info.routing_key}")
      end
    end
  ensure
    server.close
  end
end

# ---- confirms and returns -------------------------------------------------------------------

test("confirms", "wait_for_confirms") do
  with_conn do |conn|
    ch = conn.create_channel
    ch.confirm_select
    q = ch.queue("", exclusive: true)
    50.times { |i| ch.default_exchange.publish("c#{i}", routing_key: q.name) }
    # An unroutable message without mandatory is confirmed too.
    ch.default_exchange.publish("x", routing_key: uniq("nowhere"))
    check(ch.wait_for_confirms, "all acked")
    eq(0, ch.nacked_set.size, "nacks")
    eq(51, ch.next_publish_seq_no - 1, "publish sequence")
    eq(50, ch.queue_declare(q.name, passive: true).message_count, "confirmed => enqueued")
  end
end

test("mandatory-return", "on_return_before_ack") do
  with_conn do |conn|
    ch = conn.create_channel
    ch.confirm_select
    returns = Queue.new
    x = ch.default_exchange
    x.on_return { |info, props, body| returns << [info, props, body] }
    key = uniq("nowhere")
    x.publish("lost", routing_key: key, mandatory: true, headers: { "h" => "v" })
    check(ch.wait_for_confirms, "acked")
    # Bunny dispatches basic.return on its I/O thread as it reads it, before the ack that
    # wait_for_confirms waited for: the return is already there.
    eq(1, returns.size, "returned before the ack")
    info, props, body = next_of(returns, "basic.return")
    eq([312, "NO_ROUTE", "", key], [info.reply_code, info.reply_text, info.exchange, info.routing_key],
       "return info")
    eq("lost", body, "body")
    eq({ "h" => "v" }, props.headers, "headers")
  end
end

# ---- errors ---------------------------------------------------------------------------------

def channel_error(ch, klass)
  yield
  raise Failed, "expected #{klass}"
rescue klass => e
  check(!ch.open?, "channel closed")
  e.channel_close
end

test("errors", "404_passive_queue_closes_channel") do
  with_conn do |conn|
    ch = conn.create_channel
    name = uniq("missing")
    close = channel_error(ch, Bunny::NotFound) { ch.queue_declare(name, passive: true) }
    eq([404, "NOT_FOUND - no queue '#{name}' in vhost '/'"], [close.reply_code, close.reply_text], "close")
    check(conn.open?, "connection survives")
    conn.create_channel.queue("", exclusive: true)
  end
end

test("errors", "404_passive_exchange") do
  with_conn do |conn|
    ch = conn.create_channel
    name = uniq("missing")
    close = channel_error(ch, Bunny::NotFound) { ch.exchange_declare(name, "direct", passive: true) }
    eq([404, "NOT_FOUND - no exchange '#{name}' in vhost '/'"], [close.reply_code, close.reply_text], "close")
  end
end

test("errors", "406_redeclare_queue_durable") do
  with_conn do |conn|
    ch = conn.create_channel
    name = uniq("q")
    ch.queue_declare(name, durable: false)
    begin
      close = channel_error(ch, Bunny::PreconditionFailed) { ch.queue_declare(name, durable: true) }
      eq([406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '#{name}' in vhost '/': " \
               "received 'true' but current is 'false'"], [close.reply_code, close.reply_text], "close")
    ensure
      conn.create_channel.queue_delete(name)
    end
  end
end

test("errors", "406_redeclare_exchange_type") do
  with_conn do |conn|
    ch = conn.create_channel
    name = uniq("ex")
    ch.exchange_declare(name, "direct")
    begin
      close = channel_error(ch, Bunny::PreconditionFailed) { ch.exchange_declare(name, "topic") }
      eq([406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '#{name}' in vhost '/': " \
               "received 'topic' but current is 'direct'"], [close.reply_code, close.reply_text], "close")
    ensure
      conn.create_channel.exchange_delete(name)
    end
  end
end

# ---- connection -----------------------------------------------------------------------------

test("connection", "capabilities_and_clean_close") do
  conn = connect
  caps = conn.server_capabilities
  %w[publisher_confirms basic.nack consumer_cancel_notify exchange_exchange_bindings
     authentication_failure_close per_consumer_qos direct_reply_to].each do |cap|
    eq(true, caps[cap], "capability #{cap}")
  end
  check(conn.frame_max.positive?, "frame_max negotiated")
  ch = conn.create_channel
  check(ch.open?, "channel open")
  conn.close
  check(conn.closed?, "connection closed")
  check(ch.closed?, "channel closed")
end

test("connection", "refused_login") do
  conn = Bunny.new(URL.sub("guest:guest@", "guest:wrong@"), automatically_recover: false,
                   logger: Logger.new($stderr, level: Logger::FATAL))
  begin
    conn.start
    raise Failed, "login with a wrong password succeeded"
  rescue Bunny::AuthenticationFailureError => e
    # Raised for connection.close 403 ACCESS_REFUSED during the handshake
    # (the authentication_failure_close capability).
    check(e.message.include?("Username: guest"), e.message)
  ensure
    conn.close if conn.open?
  end
end

puts "#{$passed} passed, #{$failed} failed"
$stdout.flush
exit($failed.zero? ? 0 : 1)
