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
// clean close, refused login), and queue features (pattern queue-features: message TTL and
// per-message expiration, dead-lettering with the x-death header's exact field types, length
// limits and overflow, repeated deaths and cycles, x-expires, a missing dead-letter exchange).
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
        test("queue-features", "message_ttl_dead_letters_expired", Conformance::qfMessageTtl);
        test("queue-features", "per_message_expiration_lower_applies", Conformance::qfPerMessageExpiration);
        test("queue-features", "invalid_expiration_closes_channel", Conformance::qfInvalidExpiration);
        test("queue-features", "reject_x_death_types_cc_bcc", Conformance::qfRejectDeadLetter);
        test("queue-features", "nack_dead_letter_routing_key_drops_cc", Conformance::qfNackOverride);
        test("queue-features", "max_length_drop_head_and_zero", Conformance::qfMaxLength);
        test("queue-features", "max_length_bytes_counts_bodies", Conformance::qfMaxLengthBytes);
        test("queue-features", "reject_publish_and_reject_publish_dlx", Conformance::qfRejectPublish);
        test("queue-features", "retry_loop_counts_deaths", Conformance::qfRetryLoop);
        test("queue-features", "expiry_cycle_dropped", Conformance::qfExpiryCycle);
        test("queue-features", "x_expires", Conformance::qfExpires);
        test("queue-features", "missing_dlx_drops_silently", Conformance::qfMissingDlx);
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

    // ---- queue features (RabbitMQ 3.10.8 behaviour) ---------------------------------------
    // The Java client keeps the wire types: long-long (l) -> Long, int (I) -> Integer,
    // longstr (S) -> LongString, timestamp (T) -> Date, array (A) -> List, table (F) -> Map.

    /** Queues and exchanges a queue-features test declared; deleted on close. */
    static final class Scope implements AutoCloseable {
        final Connection conn;
        final Channel ch;
        final List<String> queues = new ArrayList<>(), exchanges = new ArrayList<>();

        Scope() throws Exception {
            conn = connect();
            ch = conn.createChannel();
            ch.confirmSelect();
        }

        String queue(String prefix, Map<String, Object> args) throws Exception {
            String q = uniq(prefix);
            ch.queueDeclare(q, false, false, false, args);
            queues.add(q);
            return q;
        }

        String exchange(String prefix, String type) throws Exception {
            String ex = uniq(prefix);
            ch.exchangeDeclare(ex, type);
            exchanges.add(ex);
            return ex;
        }

        /** A dead-letter exchange and a queue bound to it with `key`: {dlx, dlq}. */
        String[] dlx(String type, String key) throws Exception {
            String dlx = exchange("dlx", type);
            String dlq = queue("dlq", null);
            ch.queueBind(dlq, dlx, key);
            return new String[] {dlx, dlq};
        }

        /** Publishes and waits for the confirm: true for basic.ack, false for basic.nack. */
        boolean publish(String ex, String key, AMQP.BasicProperties props, String body) throws Exception {
            ch.basicPublish(ex, key, props, b(body));
            return ch.waitForConfirms(HANG_GUARD_MS); // false if nacked
        }

        int count(String q) throws Exception {
            return ch.queueDeclarePassive(q).getMessageCount();
        }

        /** Waits for n deliveries on q through a consumer, acks them, cancels. */
        List<Delivery> consume(String q, int n) throws Exception {
            BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
            String tag = ch.basicConsume(q, false, (t, d) -> inbox.add(d), t -> {});
            List<Delivery> got = new ArrayList<>();
            for (int i = 0; i < n; i++) got.add(next(inbox, n + " message(s) on " + q));
            ch.basicCancel(tag);
            for (Delivery d : got) ch.basicAck(d.getEnvelope().getDeliveryTag(), false);
            eq(0, inbox.size(), "no further messages on " + q);
            return got;
        }

        Delivery consumeOne(String q) throws Exception {
            return consume(q, 1).get(0);
        }

        @Override
        public void close() throws java.io.IOException {
            Channel c = conn.isOpen() ? conn.createChannel() : null;
            if (c != null) {
                for (String q : queues) c.queueDelete(q);
                for (String ex : exchanges) c.exchangeDelete(ex);
            }
            if (conn.isOpen()) conn.close();
        }
    }

    static Map<String, Object> args(Object... kv) {
        Map<String, Object> m = new HashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    static AMQP.BasicProperties expiring(String expiration) {
        return new AMQP.BasicProperties.Builder().expiration(expiration).build();
    }

    /** A longstr field (LongString), as a String. */
    static String str(Object v, String what) {
        check(v instanceof LongString, what + " is a longstr, got " + (v == null ? "null" : v.getClass()));
        return v.toString();
    }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> deaths(Map<String, Object> headers) {
        Object xd = headers.get("x-death");
        check(xd instanceof List, "x-death is an array: " + xd);
        List<Map<String, Object>> out = new ArrayList<>();
        for (Object e : (List<Object>) xd) {
            check(e instanceof Map, "an x-death entry is a table: " + e);
            out.add((Map<String, Object>) e);
        }
        return out;
    }

    /** One x-death table, every field with its type. */
    static void checkDeath(Map<String, Object> e, long count, String reason, String queue, String exchange,
                           List<String> routingKeys, String originalExpiration) {
        Set<String> keys = new TreeSet<>(List.of("count", "reason", "queue", "time", "exchange", "routing-keys"));
        if (originalExpiration != null) keys.add("original-expiration");
        eq(keys, new TreeSet<>(e.keySet()), "x-death fields");
        check(e.get("count") instanceof Long, "count is a long-long: " + e.get("count").getClass());
        eq(count, e.get("count"), "count");
        eq(reason, str(e.get("reason"), "reason"), "reason");
        eq(queue, str(e.get("queue"), "queue"), "queue");
        eq(exchange, str(e.get("exchange"), "exchange"), "exchange");
        check(e.get("routing-keys") instanceof List, "routing-keys is an array");
        List<String> rks = new ArrayList<>();
        for (Object k : (List<?>) e.get("routing-keys")) rks.add(str(k, "routing key"));
        eq(routingKeys, rks, "routing-keys");
        check(e.get("time") instanceof Date, "time is a timestamp: " + e.get("time"));
        long age = System.currentTimeMillis() - ((Date) e.get("time")).getTime();
        check(Math.abs(age) < 120_000, "time is now: " + e.get("time"));
        if (originalExpiration != null)
            eq(originalExpiration, str(e.get("original-expiration"), "original-expiration"), "original-expiration");
    }

    static void checkFirstDeath(Map<String, Object> h, String reason, String queue, String exchange) {
        eq(reason, str(h.get("x-first-death-reason"), "x-first-death-reason"), "x-first-death-reason");
        eq(queue, str(h.get("x-first-death-queue"), "x-first-death-queue"), "x-first-death-queue");
        eq(exchange, str(h.get("x-first-death-exchange"), "x-first-death-exchange"), "x-first-death-exchange");
    }

    static final Set<String> DEATH_HEADERS = Set.of("x-death", "x-first-death-reason", "x-first-death-queue",
            "x-first-death-exchange");

    static void qfMessageTtl() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("fanout", "");
            String q = s.queue("ttl", args("x-message-ttl", 30, "x-dead-letter-exchange", d[0]));
            check(s.publish("", q, new AMQP.BasicProperties.Builder().messageId("m1").build(), "short-lived"), "acked");
            Delivery m = s.consumeOne(d[1]);
            eq("short-lived", s(m.getBody()), "body");
            eq(d[0], m.getEnvelope().getExchange(), "exchange");
            eq(q, m.getEnvelope().getRoutingKey(), "routing key");
            eq("m1", m.getProperties().getMessageId(), "message id");
            eq(null, m.getProperties().getExpiration(), "expiration");
            Map<String, Object> h = m.getProperties().getHeaders();
            eq(DEATH_HEADERS, h.keySet(), "headers");
            List<Map<String, Object>> ds = deaths(h);
            eq(1, ds.size(), "x-death entries");
            checkDeath(ds.get(0), 1, "expired", q, "", List.of(q), null);
            checkFirstDeath(h, "expired", q, "");
            check(s.ch.basicGet(q, true) == null, "queue empty");
            eq(0, s.count(q), "message count");
        }
    }

    static void qfPerMessageExpiration() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("fanout", "");
            String q = s.queue("pmttl", args("x-message-ttl", 10_000, "x-dead-letter-exchange", d[0]));
            long start = System.currentTimeMillis();
            s.publish("", q, expiring("30"), "per-message");
            Delivery m = s.consumeOne(d[1]);
            check(System.currentTimeMillis() - start < 5000, "the message's 30 ms applied");
            eq(null, m.getProperties().getExpiration(), "expiration removed");
            checkDeath(deaths(m.getProperties().getHeaders()).get(0), 1, "expired", q, "", List.of(q), "30");
            String q2 = s.queue("pmttl2", args("x-message-ttl", 30, "x-dead-letter-exchange", d[0]));
            s.publish("", q2, expiring("10000"), "queue-ttl");
            m = s.consumeOne(d[1]);
            eq("queue-ttl", s(m.getBody()), "body");
            checkDeath(deaths(m.getProperties().getHeaders()).get(0), 1, "expired", q2, "", List.of(q2), "10000");
        }
    }

    static void qfInvalidExpiration() throws Exception {
        try (Connection conn = connect()) {
            String[][] cases = {{"abc", "no_integer"}, {"-1", "{value_negative,-1}"},
                    {"1.5", "{leftover_string,\".5\"}"}};
            for (String[] c : cases) {
                Channel ch = conn.createChannel();
                BlockingQueue<ShutdownSignalException> closed = new LinkedBlockingQueue<>();
                ch.addShutdownListener(closed::add);
                ch.basicPublish("", uniq("nowhere"), expiring(c[0]), b("x"));
                ShutdownSignalException sig = next(closed, "channel close");
                check(!sig.isHardError(), "a channel error");
                AMQP.Channel.Close close = (AMQP.Channel.Close) sig.getReason();
                eq(406, close.getReplyCode(), "reply code");
                eq("PRECONDITION_FAILED - invalid expiration '" + c[0] + "': " + c[1], close.getReplyText(), "reply text");
                check(conn.isOpen(), "connection survives");
            }
        }
    }

    static void qfRejectDeadLetter() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("direct", "rk");
            String bccq = s.queue("bccq", null);
            s.ch.queueBind(bccq, d[0], "bcc1");
            String src = s.exchange("src", "direct");
            String q = s.queue("rej", args("x-dead-letter-exchange", d[0]));
            s.ch.queueBind(q, src, "rk");
            s.publish(src, "rk", new AMQP.BasicProperties.Builder()
                    .headers(args("CC", List.of("cc1"), "BCC", List.of("bcc1"), "app", 7))
                    .expiration("60000").priority(3).build(), "rejected");
            GetResponse r = s.ch.basicGet(q, false);
            eq(Set.of("CC", "app"), r.getProps().getHeaders().keySet(), "BCC removed at publish");
            s.ch.basicReject(r.getEnvelope().getDeliveryTag(), false);
            Delivery m = s.consumeOne(d[1]);
            eq("rk", m.getEnvelope().getRoutingKey(), "original routing key");
            eq(3, m.getProperties().getPriority(), "priority kept");
            eq(null, m.getProperties().getExpiration(), "expiration removed");
            Map<String, Object> h = m.getProperties().getHeaders();
            Set<String> keys = new HashSet<>(DEATH_HEADERS);
            keys.addAll(List.of("CC", "app"));
            eq(keys, h.keySet(), "headers (no x-last-death-*)");
            eq(7, h.get("app"), "user header, an int");
            check(h.get("CC") instanceof List, "CC kept");
            eq("cc1", str(((List<?>) h.get("CC")).get(0), "CC key"), "CC key");
            List<Map<String, Object>> ds = deaths(h);
            eq(1, ds.size(), "x-death entries");
            checkDeath(ds.get(0), 1, "rejected", q, src, List.of("rk", "cc1"), "60000");
            checkFirstDeath(h, "rejected", q, src);
            // Dead-lettering routes with the BCC keys too, although the header is gone.
            m = s.consumeOne(bccq);
            eq("rejected", s(m.getBody()), "copy for the BCC key");
        }
    }

    static void qfNackOverride() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("direct", "override");
            String q = s.queue("nack", args("x-dead-letter-exchange", d[0], "x-dead-letter-routing-key", "override"));
            s.publish("", q, new AMQP.BasicProperties.Builder().headers(args("CC", List.of("cc1"))).build(), "nacked");
            GetResponse r = s.ch.basicGet(q, false);
            s.ch.basicNack(r.getEnvelope().getDeliveryTag(), false, false);
            Delivery m = s.consumeOne(d[1]);
            eq("override", m.getEnvelope().getRoutingKey(), "dead-letter routing key");
            Map<String, Object> h = m.getProperties().getHeaders();
            eq(DEATH_HEADERS, h.keySet(), "headers: CC removed");
            checkDeath(deaths(h).get(0), 1, "rejected", q, "", List.of(q, "cc1"), null);
        }
    }

    static void qfMaxLength() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("fanout", "");
            String q = s.queue("maxlen", args("x-max-length", 2, "x-dead-letter-exchange", d[0]));
            for (int i = 0; i < 3; i++) check(s.publish("", q, null, "m" + i), "acked");
            Delivery m = s.consumeOne(d[1]);
            eq("m0", s(m.getBody()), "oldest dead-lettered");
            checkDeath(deaths(m.getProperties().getHeaders()).get(0), 1, "maxlen", q, "", List.of(q), null);
            checkFirstDeath(m.getProperties().getHeaders(), "maxlen", q, "");
            eq(List.of("m1", "m2"), drain(s.ch, q), "kept");
            String q0 = s.queue("maxlen0", args("x-max-length", 0, "x-dead-letter-exchange", d[0]));
            check(s.publish("", q0, null, "dropped"), "acked");
            eq(0, s.count(q0), "stays empty");
            m = s.consumeOne(d[1]);
            checkDeath(deaths(m.getProperties().getHeaders()).get(0), 1, "maxlen", q0, "", List.of(q0), null);
        }
    }

    static void qfMaxLengthBytes() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("fanout", "");
            String q = s.queue("maxbytes", args("x-max-length-bytes", 10, "x-dead-letter-exchange", d[0]));
            AMQP.BasicProperties pad = new AMQP.BasicProperties.Builder()
                    .headers(args("pad", "x".repeat(200))).build();
            for (String body : List.of("aaaa1", "bbbb2", "cccc3")) check(s.publish("", q, pad, body), "acked");
            Delivery m = s.consumeOne(d[1]);
            eq("aaaa1", s(m.getBody()), "oldest dead-lettered");
            checkDeath(deaths(m.getProperties().getHeaders()).get(0), 1, "maxlen", q, "", List.of(q), null);
            eq(List.of("bbbb2", "cccc3"), drain(s.ch, q), "bodies count, headers do not");
        }
    }

    static void qfRejectPublish() throws Exception {
        try (Scope s = new Scope()) {
            String[] d = s.dlx("fanout", "");
            List<Long> nacks = Collections.synchronizedList(new ArrayList<>());
            s.ch.addConfirmListener((tag, multiple) -> {}, (tag, multiple) -> nacks.add(tag));
            String q = s.queue("rejpub", args("x-max-length", 1, "x-overflow", "reject-publish",
                    "x-dead-letter-exchange", d[0]));
            check(s.publish("", q, null, "kept"), "acked");
            check(!s.publish("", q, null, "refused"), "nacked");
            eq(List.of("kept"), drain(s.ch, q), "kept");
            eq(0, s.count(d[1]), "reject-publish does not dead-letter");
            String q2 = s.queue("rejpubdlx", args("x-max-length", 1, "x-overflow", "reject-publish-dlx",
                    "x-dead-letter-exchange", d[0]));
            check(s.publish("", q2, null, "kept"), "acked");
            check(!s.publish("", q2, null, "refused"), "nacked");
            Delivery m = s.consumeOne(d[1]);
            eq("refused", s(m.getBody()), "the refused message is dead-lettered");
            checkDeath(deaths(m.getProperties().getHeaders()).get(0), 1, "maxlen", q2, "", List.of(q2), null);
            eq(List.of("kept"), drain(s.ch, q2), "kept");
            // RabbitMQ sends these nacks with multiple=true (every earlier tag is confirmed
            // already), which a client cannot tell from multiple=false; only tags are checked.
            eq(List.of(2L, 4L), nacks, "basic.nack tags");
        }
    }

    static void qfRetryLoop() throws Exception {
        try (Scope s = new Scope()) {
            String exA = s.exchange("exa", "fanout"), exB = s.exchange("exb", "fanout");
            String a = s.queue("a", args("x-dead-letter-exchange", exB));
            String bq = s.queue("b", args("x-dead-letter-exchange", exA, "x-message-ttl", 20));
            s.ch.queueBind(a, exA, "");
            s.ch.queueBind(bq, exB, "");
            s.publish(exA, "orig", null, "retry");
            BlockingQueue<Delivery> inbox = new LinkedBlockingQueue<>();
            String tag = s.ch.basicConsume(a, false, (t, dl) -> inbox.add(dl), t -> {});
            for (int n = 0; n < 4; n++) {
                Delivery m = next(inbox, "round " + n);
                eq("orig", m.getEnvelope().getRoutingKey(), "routing key");
                Map<String, Object> h = m.getProperties().getHeaders();
                if (n == 0) {
                    check(h == null, "no headers at first");
                } else {
                    List<Map<String, Object>> ds = deaths(h);
                    eq(2, ds.size(), "one entry per queue and reason");
                    checkDeath(ds.get(0), n, "expired", bq, exB, List.of("orig"), null);
                    checkDeath(ds.get(1), n, "rejected", a, exA, List.of("orig"), null);
                    checkFirstDeath(h, "rejected", a, exA);
                }
                if (n < 3) s.ch.basicReject(m.getEnvelope().getDeliveryTag(), false);
                else s.ch.basicAck(m.getEnvelope().getDeliveryTag(), false);
            }
            s.ch.basicCancel(tag);
        }
    }

    static void qfExpiryCycle() throws Exception {
        try (Scope s = new Scope()) {
            String exC = s.exchange("exc", "fanout"), exD = s.exchange("exd", "fanout");
            String c = s.queue("c", args("x-dead-letter-exchange", exD));
            String dq = s.queue("d", args("x-dead-letter-exchange", exC, "x-message-ttl", 20));
            String watch = s.queue("watch", null);
            s.ch.queueBind(c, exC, "");
            s.ch.queueBind(dq, exD, "");
            s.ch.queueBind(watch, exC, "");
            s.publish("", c, expiring("20"), "cycle");
            Delivery m = s.consumeOne(watch);
            List<Map<String, Object>> ds = deaths(m.getProperties().getHeaders());
            eq(2, ds.size(), "x-death entries");
            checkDeath(ds.get(0), 1, "expired", dq, exD, List.of(c), null);
            checkDeath(ds.get(1), 1, "expired", c, "", List.of(c), "20");
            eq(0, s.count(c), "not enqueued in C again (cycle without a rejection)");
            eq(0, s.count(dq), "D empty");
        }
    }

    /** Confirmed mandatory probes (expiration 0) until one comes back: the queue is gone.
     *  Publishing does not renew an x-expires lease; a passive queue.declare would. */
    static void waitUntilUnroutable(Scope s, String q) throws Exception {
        BlockingQueue<String> returned = new LinkedBlockingQueue<>();
        ReturnListener l = (code, text, ex, key, props, body) -> returned.add(key);
        s.ch.addReturnListener(l);
        try {
            long deadline = System.currentTimeMillis() + HANG_GUARD_MS;
            while (!returned.contains(q)) {
                check(System.currentTimeMillis() < deadline, q + " was not deleted");
                s.ch.basicPublish("", q, true, expiring("0"), b("probe"));
                check(s.ch.waitForConfirms(HANG_GUARD_MS), "probe acked"); // the return comes first
                if (!returned.contains(q)) returned.poll(5, TimeUnit.MILLISECONDS); // poll interval
            }
        } finally {
            s.ch.removeReturnListener(l);
        }
    }

    static void qfExpires() throws Exception {
        try (Scope s = new Scope()) {
            String q = s.queue("expires", args("x-expires", 50));
            s.publish("", q, null, "still-deleted");
            String kept = s.queue("expcons", args("x-expires", 50));
            String tag = s.ch.basicConsume(kept, true, (t, dl) -> {}, t -> {});
            waitUntilUnroutable(s, q);
            Channel ch2 = s.conn.createChannel();
            AMQP.Channel.Close close = channelError(ch2, () -> ch2.queueDeclarePassive(q));
            eq(404, close.getReplyCode(), "reply code");
            eq("NOT_FOUND - no queue '" + q + "' in vhost '/'", close.getReplyText(), "reply text");
            eq(1, s.ch.queueDeclarePassive(kept).getConsumerCount(), "a queue with a consumer stays");
            s.ch.basicCancel(tag);
            waitUntilUnroutable(s, kept);
        }
    }

    static void qfMissingDlx() throws Exception {
        try (Scope s = new Scope()) {
            String q = s.queue("nodlx", args("x-dead-letter-exchange", uniq("nosuchx")));
            s.publish("", q, null, "lost");
            GetResponse r = s.ch.basicGet(q, false);
            s.ch.basicReject(r.getEnvelope().getDeliveryTag(), false);
            eq(0, s.count(q), "dropped");
            s.publish("", q, expiring("0"), "lost-too");
            eq(0, s.count(q), "dropped");
            check(s.ch.isOpen() && s.conn.isOpen(), "no error");
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
