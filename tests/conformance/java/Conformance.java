// Conformance of the RabbitMQ Java client (Debian librabbitmq-client-java 5.0.0) against the
// broker at AMQP_URL.
//
// Covers: hello world (publish/get with properties, DeliverCallback consumer), work queue
// (two connections with basicQos(1), manual acks, strict round robin, redelivery after a
// worker's connection closes), fanout to server-named exclusive queues, direct with
// bind/unbind, topic with * and #, RPC with a callback queue and correlation ids, direct
// reply-to through the library's RpcClient/RpcServer, publisher confirms (blocking and
// ConfirmListener), mandatory + basic.return (the return before the ack), 404/406 errors
// closing the channel but not the connection, and the connection handshake (capabilities,
// clean close, refused login).
//
// `java Conformance restart-before|restart-after` runs one half of the broker-restart check
// instead (scripts/conformance restarts the broker in between).
//
// Output: one line per test, "PASS <pattern>: <name>" or "FAIL <pattern>: <name>: <error>",
// then "N passed, N failed"; exit status 1 if anything failed. scripts/conformance parses it.
// Waiting is on client events (BlockingQueue.poll with a hang guard, confirms, RPC replies),
// never on sleeps. Automatic recovery is off so that errors stay visible.
import com.rabbitmq.client.*;

import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.*;

public class Conformance {
    static final long HANG_GUARD_MS = 10_000; // per awaited event; never reached normally
    static final long TEST_GUARD_MS = 60_000; // per test
    static final String URL = System.getenv("AMQP_URL");
    static int passed = 0, failed = 0;

    interface Body {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        if (URL == null || URL.isEmpty()) {
            System.err.println("AMQP_URL is not set");
            System.exit(2);
        }
        if (args.length > 0) {
            switch (args[0]) {
                case "restart-before":
                    test("restart", "before_publish_persistent_confirmed", Conformance::restartBefore);
                    break;
                case "restart-after":
                    test("restart", "after_persistent_message_survived", Conformance::restartAfter);
                    break;
                default:
                    System.err.println("unknown argument " + args[0]);
                    System.exit(2);
            }
            System.out.println(passed + " passed, " + failed + " failed");
            System.out.flush();
            System.exit(failed == 0 ? 0 : 1);
        }
        test("hello-world", "publish_get_properties", Conformance::helloWorldGet);
        test("hello-world", "consume_deliver_callback", Conformance::helloWorldConsume);
        test("work-queue", "prefetch_one_round_robin", Conformance::workQueueRoundRobin);
        test("work-queue", "redelivered_when_worker_connection_closes", Conformance::workQueueRedelivery);
        test("fanout", "server_named_exclusive_queues", Conformance::fanout);
        test("direct", "routing_bind_unbind", Conformance::direct);
        test("topic", "star_and_hash", Conformance::topic);
        test("rpc", "callback_queue_and_correlation_id", Conformance::rpcCallbackQueue);
        test("direct-reply-to", "rpc_client_and_rpc_server", Conformance::directReplyTo);
        test("confirms", "wait_for_confirms", Conformance::confirmsBlocking);
        test("confirms", "confirm_listener_acks_every_tag", Conformance::confirmsListener);
        test("mandatory-return", "return_listener_before_ack", Conformance::mandatoryReturn);
        test("errors", "404_passive_queue_closes_channel", Conformance::error404Queue);
        test("errors", "404_passive_exchange", Conformance::error404Exchange);
        test("errors", "406_redeclare_queue_durable", Conformance::error406Durable);
        test("errors", "406_redeclare_exchange_type", Conformance::error406ExchangeType);
        test("connection", "capabilities_and_clean_close", Conformance::connectionOpenClose);
        test("connection", "refused_login", Conformance::connectionRefusedLogin);
        System.out.println(passed + " passed, " + failed + " failed");
        System.out.flush();
        System.exit(failed == 0 ? 0 : 1); // also ends any thread a hung test left behind
    }

    static void test(String pattern, String name, Body body) {
        ExecutorService ex = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "test-" + name);
            t.setDaemon(true);
            return t;
        });
        Future<?> f = ex.submit(() -> {
            body.run();
            return null;
        });
        String error = null;
        try {
            f.get(TEST_GUARD_MS, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            f.cancel(true);
            error = "timed out after " + TEST_GUARD_MS + " ms";
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            cause.printStackTrace(System.err);
            error = cause.toString().replace('\n', ' ');
        } catch (InterruptedException e) {
            error = "interrupted";
        }
        ex.shutdownNow();
        if (error == null) {
            passed++;
            System.out.println("PASS " + pattern + ": " + name);
        } else {
            failed++;
            System.out.println("FAIL " + pattern + ": " + name + ": " + error);
        }
        System.out.flush();
    }

    // ---- helpers --------------------------------------------------------------------------

    static Connection connect() throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setUri(URL);
        f.setAutomaticRecoveryEnabled(false);
        f.setTopologyRecoveryEnabled(false);
        return f.newConnection();
    }

    static String uniq(String prefix) {
        return "conf.java." + prefix + "." + UUID.randomUUID().toString().substring(0, 12);
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String s(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void eq(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual))
            throw new AssertionError(what + ": expected <" + expected + "> but got <" + actual + ">");
    }

    static <T> T next(BlockingQueue<T> q, String what) throws InterruptedException {
        T v = q.poll(HANG_GUARD_MS, TimeUnit.MILLISECONDS);
        if (v == null) throw new AssertionError("timed out waiting for " + what);
        return v;
    }

    /** Bodies currently ready in the queue (basicGet with auto-ack until empty). */
    static List<String> drain(Channel ch, String queue) throws Exception {
        List<String> out = new ArrayList<>();
        GetResponse r;
        while ((r = ch.basicGet(queue, true)) != null) out.add(s(r.getBody()));
        return out;
    }

    /** The channel.close a failed synchronous method got, asserting it closed the channel. */
    static AMQP.Channel.Close channelError(Channel ch, Body body) throws Exception {
        try {
            body.run();
        } catch (java.io.IOException e) {
            check(e.getCause() instanceof ShutdownSignalException, "cause is a shutdown signal: " + e);
            ShutdownSignalException sig = (ShutdownSignalException) e.getCause();
            check(!sig.isHardError(), "a channel error, not a connection error");
            check(!ch.isOpen(), "channel closed");
            return (AMQP.Channel.Close) sig.getReason();
        }
        throw new AssertionError("expected a channel error");
    }

    // ---- hello world ----------------------------------------------------------------------

    static void helloWorldGet() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String q = uniq("hello");
            AMQP.Queue.DeclareOk ok = ch.queueDeclare(q, false, true, false, null);
            eq(q, ok.getQueue(), "queue name");
            eq(0, ok.getMessageCount(), "message count");
            Map<String, Object> headers = new HashMap<>();
            headers.put("lang", "en");
            headers.put("n", 7);
            AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                    .contentType("text/plain").headers(headers).messageId("m-1").priority(3)
                    .deliveryMode(2).build();
            ch.basicPublish("", q, props, b("Hello World!"));
            GetResponse r = ch.basicGet(q, false); // same channel: the publish came first
            check(r != null, "a message");
            eq("Hello World!", s(r.getBody()), "body");
            eq(q, r.getEnvelope().getRoutingKey(), "routing key");
            eq("", r.getEnvelope().getExchange(), "exchange");
            eq(false, r.getEnvelope().isRedeliver(), "redelivered");
            eq(0, r.getMessageCount(), "remaining");
            eq("text/plain", r.getProps().getContentType(), "content type");
            eq("m-1", r.getProps().getMessageId(), "message id");
            eq(3, r.getProps().getPriority(), "priority");
            eq(2, r.getProps().getDeliveryMode(), "delivery mode");
            eq("en", String.valueOf(r.getProps().getHeaders().get("lang")), "header lang");
            eq(7, r.getProps().getHeaders().get("n"), "header n");
            ch.basicAck(r.getEnvelope().getDeliveryTag(), false);
            check(ch.basicGet(q, true) == null, "queue empty");
        }
    }

    static void helloWorldConsume() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare().getQueue(); // server-named, exclusive, auto-delete
            check(q.startsWith("amq.gen-"), "server-named: " + q);
            BlockingQueue<Delivery> got = new LinkedBlockingQueue<>();
            List<String> tags = Collections.synchronizedList(new ArrayList<>());
            String tag = ch.basicConsume(q, false, (t, d) -> {
                tags.add(t);
                got.add(d);
            }, t -> { });
            check(tag.startsWith("amq.ctag-"), "server-generated consumer tag: " + tag);
            for (int i = 0; i < 3; i++) ch.basicPublish("", q, null, b("m" + i));
            for (int i = 0; i < 3; i++) {
                Delivery d = next(got, "delivery " + i);
                eq("m" + i, s(d.getBody()), "body");
                eq((long) i + 1, d.getEnvelope().getDeliveryTag(), "delivery tag");
                ch.basicAck(d.getEnvelope().getDeliveryTag(), false);
            }
            eq(List.of(tag, tag, tag), tags, "consumer tag on each delivery");
            ch.basicCancel(tag);
        }
    }

    // ---- work queue -----------------------------------------------------------------------

    static final class Worker implements AutoCloseable {
        final Connection conn;
        final Channel ch;
        final BlockingQueue<Delivery> deliveries = new LinkedBlockingQueue<>();
        final List<String> seen = Collections.synchronizedList(new ArrayList<>());

        Worker(String queue) throws Exception {
            conn = connect();
            ch = conn.createChannel();
            ch.basicQos(1);
            ch.basicConsume(queue, false, (t, d) -> {
                seen.add(s(d.getBody()));
                deliveries.add(d);
            }, t -> { });
        }

        public void close() throws java.io.IOException {
            if (conn.isOpen()) conn.close();
        }
    }

    static void workQueueRoundRobin() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            String q = uniq("tasks");
            ch.queueDeclare(q, true, false, false, null);
            try (Worker a = new Worker(q); Worker bw = new Worker(q)) {
                eq(2, ch.queueDeclarePassive(q).getConsumerCount(), "consumers");
                int n = 6;
                for (int i = 0; i < n; i++)
                    ch.basicPublish("", q, MessageProperties.PERSISTENT_TEXT_PLAIN, b("task-" + i));
                ch.waitForConfirmsOrDie(HANG_GUARD_MS);
                Map<Worker, Delivery> held = new HashMap<>();
                held.put(a, next(a.deliveries, "task for A"));
                held.put(bw, next(bw.deliveries, "task for B"));
                eq("task-0", s(held.get(a).getBody()), "first registered consumer gets the first task");
                eq("task-1", s(held.get(bw).getBody()), "second task");
                eq(n - 2, ch.queueDeclarePassive(q).getMessageCount(), "prefetch 1 holds the rest back");
                for (int i = 2; i < n; i++) {
                    Worker w = i % 2 == 0 ? a : bw;
                    w.ch.basicAck(held.get(w).getEnvelope().getDeliveryTag(), false);
                    held.put(w, next(w.deliveries, "task-" + i));
                    eq("task-" + i, s(held.get(w).getBody()), "round robin");
                }
                a.ch.basicAck(held.get(a).getEnvelope().getDeliveryTag(), false);
                bw.ch.basicAck(held.get(bw).getEnvelope().getDeliveryTag(), false);
                eq(List.of("task-0", "task-2", "task-4"), a.seen, "A's tasks");
                eq(List.of("task-1", "task-3", "task-5"), bw.seen, "B's tasks");
            } finally {
                ch.queueDelete(q);
            }
        }
    }

    static void workQueueRedelivery() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String q = uniq("tasks");
            ch.queueDeclare(q, false, false, false, null);
            try (Worker a = new Worker(q)) {
                ch.basicPublish("", q, null, b("important"));
                Delivery first = next(a.deliveries, "delivery to A");
                eq(false, first.getEnvelope().isRedeliver(), "first delivery");
                try (Worker bw = new Worker(q)) {
                    a.conn.close(); // without acking
                    Delivery again = next(bw.deliveries, "redelivery to B");
                    eq("important", s(again.getBody()), "body");
                    eq(true, again.getEnvelope().isRedeliver(), "redelivered flag");
                    bw.ch.basicAck(again.getEnvelope().getDeliveryTag(), false);
                    AMQP.Queue.DeclareOk ok = ch.queueDeclarePassive(q);
                    eq(0, ok.getMessageCount(), "messages");
                    eq(1, ok.getConsumerCount(), "consumers");
                }
            } finally {
                ch.queueDelete(q);
            }
        }
    }

    // ---- exchanges ------------------------------------------------------------------------

    static void fanout() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            String ex = uniq("logs");
            ch.exchangeDeclare(ex, BuiltinExchangeType.FANOUT, false, true, null);
            List<String> queues = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                String q = ch.queueDeclare().getQueue();
                check(q.startsWith("amq.gen-"), "server-named");
                ch.queueBind(q, ex, "ignored");
                queues.add(q);
            }
            check(!queues.get(0).equals(queues.get(1)), "distinct names");
            for (int i = 0; i < 3; i++) ch.basicPublish(ex, "k" + i, null, b("log " + i));
            ch.waitForConfirmsOrDie(HANG_GUARD_MS);
            for (String q : queues) eq(List.of("log 0", "log 1", "log 2"), drain(ch, q), "fanout copy");
        }
    }

    static void direct() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            String ex = uniq("direct");
            ch.exchangeDeclare(ex, "direct", false, true, null);
            String qErr = ch.queueDeclare().getQueue(), qAll = ch.queueDeclare().getQueue();
            ch.queueBind(qErr, ex, "error");
            for (String sev : List.of("info", "warning", "error")) ch.queueBind(qAll, ex, sev);
            for (String sev : List.of("info", "warning", "error", "debug", "ERROR"))
                ch.basicPublish(ex, sev, null, b(sev));
            ch.waitForConfirmsOrDie(HANG_GUARD_MS);
            eq(List.of("error"), drain(ch, qErr), "error queue");
            eq(List.of("info", "warning", "error"), drain(ch, qAll), "all queue");
            ch.queueUnbind(qAll, ex, "info");
            ch.basicPublish(ex, "info", null, b("info-2"));
            ch.basicPublish(ex, "warning", null, b("warning-2"));
            ch.waitForConfirmsOrDie(HANG_GUARD_MS);
            eq(List.of("warning-2"), drain(ch, qAll), "after unbind");
        }
    }

    static void topic() throws Exception {
        String[][] cases = {
            {"quick.orange.rabbit", "Q1 Q2"}, {"lazy.orange.elephant", "Q1 Q2"},
            {"quick.orange.fox", "Q1"}, {"lazy.brown.fox", "Q2"}, {"lazy.pink.rabbit", "Q2"},
            {"quick.brown.fox", ""}, {"quick.orange.male.rabbit", ""},
            {"lazy.orange.male.rabbit", "Q2"}, {"lazy", "Q2"}, {"orange", ""},
        };
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            String ex = uniq("topic");
            ch.exchangeDeclare(ex, BuiltinExchangeType.TOPIC, false, true, null);
            String q1 = ch.queueDeclare().getQueue(), q2 = ch.queueDeclare().getQueue();
            ch.queueBind(q1, ex, "*.orange.*");
            ch.queueBind(q2, ex, "*.*.rabbit");
            ch.queueBind(q2, ex, "lazy.#");
            List<String> want1 = new ArrayList<>(), want2 = new ArrayList<>();
            for (String[] c : cases) {
                ch.basicPublish(ex, c[0], null, b(c[0]));
                if (c[1].contains("Q1")) want1.add(c[0]);
                if (c[1].contains("Q2")) want2.add(c[0]);
            }
            ch.waitForConfirmsOrDie(HANG_GUARD_MS);
            eq(want1, drain(ch, q1), "Q1 (*.orange.*)");
            eq(want2, drain(ch, q2), "Q2 (*.*.rabbit, lazy.#)");
        }
    }

    // ---- RPC ------------------------------------------------------------------------------

    static long fib(int n) {
        long a = 0, b = 1;
        for (int i = 0; i < n; i++) {
            long t = a + b;
            a = b;
            b = t;
        }
        return a;
    }

    static void rpcCallbackQueue() throws Exception {
        String rpcQueue = uniq("rpc");
        try (Connection serverConn = connect(); Connection conn = connect()) {
            Channel sch = serverConn.createChannel();
            sch.queueDeclare(rpcQueue, false, true, false, null);
            sch.basicQos(1);
            sch.basicConsume(rpcQueue, false, (t, d) -> {
                AMQP.BasicProperties reply = new AMQP.BasicProperties.Builder()
                        .correlationId(d.getProperties().getCorrelationId()).build();
                sch.basicPublish("", d.getProperties().getReplyTo(), reply,
                        b(Long.toString(fib(Integer.parseInt(s(d.getBody()))))));
                sch.basicAck(d.getEnvelope().getDeliveryTag(), false);
            }, t -> { });

            Channel ch = conn.createChannel();
            String callback = ch.queueDeclare().getQueue();
            BlockingQueue<Delivery> replies = new LinkedBlockingQueue<>();
            ch.basicConsume(callback, true, (t, d) -> replies.add(d), t -> { });
            Map<String, String> expected = new HashMap<>();
            for (int n : new int[] {0, 1, 10, 30}) {
                String corr = UUID.randomUUID().toString();
                expected.put(corr, Long.toString(fib(n)));
                ch.basicPublish("", rpcQueue, new AMQP.BasicProperties.Builder()
                        .correlationId(corr).replyTo(callback).build(), b(Integer.toString(n)));
            }
            Map<String, String> got = new HashMap<>();
            for (int i = 0; i < expected.size(); i++) {
                Delivery d = next(replies, "RPC reply");
                got.put(d.getProperties().getCorrelationId(), s(d.getBody()));
            }
            eq(expected, got, "replies by correlation id");
        }
    }

    static void directReplyTo() throws Exception {
        String rpcQueue = uniq("rpc");
        try (Connection serverConn = connect(); Connection conn = connect()) {
            Channel sch = serverConn.createChannel();
            sch.queueDeclare(rpcQueue, false, true, false, null);
            RpcServer server = new RpcServer(sch, rpcQueue) {
                @Override
                public byte[] handleCall(Delivery request, AMQP.BasicProperties replyProperties) {
                    return b(request.getProperties().getReplyTo() + "|"
                            + s(request.getBody()).toUpperCase());
                }
            };
            Thread loop = new Thread(() -> {
                try {
                    server.mainloop();
                } catch (Exception ignored) {
                    // ends when the server's channel closes
                }
            }, "rpc-server");
            loop.setDaemon(true);
            loop.start();
            RpcClient client = new RpcClient(conn.createChannel(), "", rpcQueue,
                    "amq.rabbitmq.reply-to", (int) HANG_GUARD_MS);
            for (String word : List.of("hello", "again")) {
                String[] reply = client.stringCall(word).split("\\|", 2);
                check(reply[0].startsWith("amq.rabbitmq.reply-to."), "rewritten reply_to: " + reply[0]);
                eq(word.toUpperCase(), reply[1], "reply");
            }
            client.close();
            server.terminateMainloop();
            server.close();
        }
    }

    // ---- confirms and returns -------------------------------------------------------------

    // ---- broker restart ---------------------------------------------------------------------

    static final String RESTART_QUEUE = "conformance.restart.java";
    static final String RESTART_BODY = "persistent message from the RabbitMQ Java client";

    static void restartBefore() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.queueDelete(RESTART_QUEUE); // a leftover from an aborted run
            ch.queueDeclare(RESTART_QUEUE, true, false, false, null);
            ch.confirmSelect();
            Map<String, Object> headers = new HashMap<>();
            headers.put("client", "java");
            AMQP.BasicProperties props = new AMQP.BasicProperties.Builder().deliveryMode(2)
                .contentType("text/plain").correlationId("restart-1").headers(headers).build();
            ch.basicPublish("", RESTART_QUEUE, props, b(RESTART_BODY));
            ch.waitForConfirmsOrDie(HANG_GUARD_MS);
            eq(1, ch.queueDeclarePassive(RESTART_QUEUE).getMessageCount(), "queued");
        }
    }

    static void restartAfter() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            GetResponse r = ch.basicGet(RESTART_QUEUE, false);
            check(r != null, "the message is still in " + RESTART_QUEUE);
            eq(RESTART_BODY, s(r.getBody()), "body");
            AMQP.BasicProperties p = r.getProps();
            eq(2, p.getDeliveryMode(), "delivery mode");
            eq("text/plain", p.getContentType(), "content type");
            eq("restart-1", p.getCorrelationId(), "correlation id");
            eq("java", String.valueOf(p.getHeaders().get("client")), "header");
            ch.basicAck(r.getEnvelope().getDeliveryTag(), false);
            eq(0, ch.queueDelete(RESTART_QUEUE).getMessageCount(), "messages left when deleted");
        }
    }

    static void confirmsBlocking() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            String q = ch.queueDeclare().getQueue();
            for (int i = 0; i < 50; i++) ch.basicPublish("", q, null, b("c" + i));
            // An unroutable message without mandatory is confirmed too.
            ch.basicPublish("", uniq("nowhere"), null, b("x"));
            check(ch.waitForConfirms(HANG_GUARD_MS), "all acked");
            eq(52L, ch.getNextPublishSeqNo(), "next publish sequence number");
            eq(50, ch.queueDeclarePassive(q).getMessageCount(), "confirmed => enqueued");
        }
    }

    static void confirmsListener() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            String q = ch.queueDeclare().getQueue();
            int n = 200;
            Set<Long> acked = ConcurrentHashMap.newKeySet();
            CountDownLatch all = new CountDownLatch(1);
            List<Long> nacked = Collections.synchronizedList(new ArrayList<>());
            ch.addConfirmListener((tag, multiple) -> {
                if (multiple) {
                    for (long t = 1; t <= tag; t++) acked.add(t);
                } else {
                    acked.add(tag);
                }
                if (acked.size() == n) all.countDown();
            }, (tag, multiple) -> nacked.add(tag));
            for (int i = 0; i < n; i++) ch.basicPublish("", q, null, b("m" + i));
            check(all.await(HANG_GUARD_MS, TimeUnit.MILLISECONDS), "every tag acked: " + acked.size());
            eq(List.of(), nacked, "nacks");
            eq(n, ch.queueDeclarePassive(q).getMessageCount(), "enqueued");
        }
    }

    static void mandatoryReturn() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            ch.confirmSelect();
            List<String> events = Collections.synchronizedList(new ArrayList<>());
            BlockingQueue<Object[]> returns = new LinkedBlockingQueue<>();
            ch.addReturnListener((code, text, exchange, key, props, body) -> {
                events.add("return");
                returns.add(new Object[] {code, text, exchange, key, s(body)});
            });
            ch.addConfirmListener((tag, multiple) -> events.add("ack"), (tag, multiple) -> events.add("nack"));
            String key = uniq("nowhere");
            ch.basicPublish("", key, true, null, b("lost"));
            ch.waitForConfirmsOrDie(HANG_GUARD_MS);
            Object[] r = next(returns, "basic.return");
            eq(312, r[0], "reply code");
            eq("NO_ROUTE", r[1], "reply text");
            eq("", r[2], "exchange");
            eq(key, r[3], "routing key");
            eq("lost", r[4], "body");
            eq(List.of("return", "ack"), events, "return precedes the ack");
        }
    }

    // ---- errors ---------------------------------------------------------------------------

    static void error404Queue() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String q = uniq("missing");
            AMQP.Channel.Close close = channelError(ch, () -> ch.queueDeclarePassive(q));
            eq(404, close.getReplyCode(), "reply code");
            eq("NOT_FOUND - no queue '" + q + "' in vhost '/'", close.getReplyText(), "reply text");
            check(conn.isOpen(), "connection survives");
            Channel ch2 = conn.createChannel();
            ch2.queueDeclare();
        }
    }

    static void error404Exchange() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String ex = uniq("missing");
            AMQP.Channel.Close close = channelError(ch, () -> ch.exchangeDeclarePassive(ex));
            eq(404, close.getReplyCode(), "reply code");
            eq("NOT_FOUND - no exchange '" + ex + "' in vhost '/'", close.getReplyText(), "reply text");
        }
    }

    static void error406Durable() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String q = uniq("q");
            ch.queueDeclare(q, false, false, false, null);
            try {
                AMQP.Channel.Close close = channelError(ch, () -> ch.queueDeclare(q, true, false, false, null));
                eq(406, close.getReplyCode(), "reply code");
                eq("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '" + q
                        + "' in vhost '/': received 'true' but current is 'false'", close.getReplyText(), "reply text");
            } finally {
                conn.createChannel().queueDelete(q);
            }
        }
    }

    static void error406ExchangeType() throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String ex = uniq("ex");
            ch.exchangeDeclare(ex, "direct");
            try {
                AMQP.Channel.Close close = channelError(ch, () -> ch.exchangeDeclare(ex, "topic"));
                eq(406, close.getReplyCode(), "reply code");
                eq("PRECONDITION_FAILED - inequivalent arg 'type' for exchange '" + ex
                        + "' in vhost '/': received 'topic' but current is 'direct'", close.getReplyText(), "reply text");
            } finally {
                conn.createChannel().exchangeDelete(ex);
            }
        }
    }

    // ---- connection -----------------------------------------------------------------------

    static void connectionOpenClose() throws Exception {
        Connection conn = connect();
        @SuppressWarnings("unchecked")
        Map<String, Object> caps = (Map<String, Object>) conn.getServerProperties().get("capabilities");
        for (String cap : List.of("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings", "authentication_failure_close",
                "per_consumer_qos", "direct_reply_to"))
            eq(true, caps.get(cap), "capability " + cap);
        check(conn.getFrameMax() > 0, "frame_max negotiated");
        Channel ch = conn.createChannel();
        check(ch.isOpen(), "channel open");
        BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
        conn.addShutdownListener(closed::add);
        conn.close();
        ShutdownSignalException sig = next(closed, "shutdown notification");
        check(sig.isInitiatedByApplication(), "closed by us");
        check(!conn.isOpen() && !ch.isOpen(), "connection and channel closed");
    }

    static void connectionRefusedLogin() throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setUri(URL.replaceFirst("guest:guest@", "guest:wrong@"));
        f.setAutomaticRecoveryEnabled(false);
        try {
            f.newConnection().close();
            throw new AssertionError("login with a wrong password succeeded");
        } catch (AuthenticationFailureException e) {
            check(e.getMessage().contains("ACCESS_REFUSED"), "ACCESS_REFUSED: " + e.getMessage());
        }
    }
}
