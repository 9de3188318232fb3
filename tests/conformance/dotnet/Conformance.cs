// Conformance of RabbitMQ.Client as Debian ships it for Mono (libmono-rabbitmq4.0-cil, Mono
// 6.8's assembly version 4.0.0.0) against the broker at AMQP_URL. Compiled with Mono's mcs.
//
// This is the old .NET client that Mono bundles: it speaks AMQP 0-8 and 0-9 (not 0-9-1), so it
// connects with the 0-9 protocol header ("AMQP" 1 1 0 9), which RabbitMQ and Lepus accept as
// 0-9-1. It has no publisher confirms (confirm.select is a 0-9-1 RabbitMQ extension), no
// basic.nack, and no connection.close on a refused login. Where other suites wait for confirms,
// this one commits a transaction: tx.commit-ok comes after the broker has routed and enqueued
// the channel's publishes (and sent any basic.return), which is the same event.
//
// Covers: hello world (basic.get with properties, consume), work queue (two connections with
// prefetch 1, manual acks, strict round robin, redelivery after a worker's connection closes),
// fanout to server-named exclusive queues, direct with bind/unbind, topic with * and #, RPC
// with a callback queue and correlation ids, direct reply-to, transactions (commit and
// rollback), mandatory + basic.return, 404/406 errors closing the channel but not the
// connection, the handshake (server properties, clean close), refused login.
//
// `mono Conformance.exe` runs the suite; `mono Conformance.exe restart-before|restart-after`
// runs one half of the broker-restart check (scripts/conformance restarts the broker between).
//
// Output: one line per test, "PASS <pattern>: <name>" or "FAIL <pattern>: <name>: <error>", then
// "N passed, N failed"; exit status 1 if anything failed. Waiting is on client events (consumer
// callbacks feeding a BlockingCollection, basic.return, synchronous round trips), each bounded
// by a hang guard; there are no sleeps.
using System;
using System.Collections;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Threading;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

class Failed : Exception
{
    public Failed(string message) : base(message) { }
}

class Delivery
{
    public string ConsumerTag;
    public ulong DeliveryTag;
    public bool Redelivered;
    public string Exchange;
    public string RoutingKey;
    public IBasicProperties Props;
    public string Body;
}

// A consumer that hands each delivery to the test thread through a queue.
class Collector : DefaultBasicConsumer
{
    public readonly BlockingCollection<Delivery> Deliveries = new BlockingCollection<Delivery>();
    public readonly List<string> Seen = new List<string>();

    public Collector(IModel model) : base(model) { }

    public override void HandleBasicDeliver(string consumerTag, ulong deliveryTag, bool redelivered,
        string exchange, string routingKey, IBasicProperties props, byte[] body)
    {
        var d = new Delivery
        {
            ConsumerTag = consumerTag, DeliveryTag = deliveryTag, Redelivered = redelivered,
            Exchange = exchange, RoutingKey = routingKey, Props = props,
            Body = Encoding.UTF8.GetString(body)
        };
        lock (Seen) Seen.Add(d.Body);
        Deliveries.Add(d);
    }

    public Delivery Next(string what)
    {
        Delivery d;
        if (!Deliveries.TryTake(out d, Conformance.HangGuardMs))
            throw new Failed("timed out waiting for " + what);
        return d;
    }
}

static class Conformance
{
    public const int HangGuardMs = 10000; // per awaited event; never reached when the broker behaves
    static readonly string Url = Environment.GetEnvironmentVariable("AMQP_URL");
    static int passed, failed;
    static readonly Random Rng = new Random();

    static ConnectionFactory Factory(string password = null)
    {
        var uri = new Uri(Url);
        var f = new ConnectionFactory();
        f.Protocol = Protocols.AMQP_0_9;
        f.HostName = uri.Host;
        f.Port = uri.Port;
        var user = uri.UserInfo.Split(new[] { ':' }, 2);
        f.UserName = Uri.UnescapeDataString(user[0]);
        f.Password = password ?? Uri.UnescapeDataString(user.Length > 1 ? user[1] : "");
        var vhost = uri.AbsolutePath.TrimStart('/');
        f.VirtualHost = vhost == "" ? "/" : Uri.UnescapeDataString(vhost);
        return f;
    }

    static IConnection Connect()
    {
        return Factory().CreateConnection();
    }

    static string Uniq(string prefix)
    {
        lock (Rng) return "conf.dotnet." + prefix + "." + Rng.Next(0x1000000).ToString("x6") + Rng.Next(0x1000000).ToString("x6");
    }

    static void Check(bool ok, string what)
    {
        if (!ok) throw new Failed(what);
    }

    static void Eq(object expected, object actual, string what)
    {
        if (!Equals(expected, actual))
            throw new Failed(what + ": expected " + Show(expected) + " but got " + Show(actual));
    }

    static string Show(object o)
    {
        if (o == null) return "null";
        if (o is string) return "'" + o + "'";
        if (o is byte[]) return "'" + Encoding.UTF8.GetString((byte[])o) + "' (bytes)";
        if (o is IEnumerable) return "[" + string.Join(", ", ((IEnumerable)o).Cast<object>().Select(Show)) + "]";
        return o.ToString();
    }

    static void EqList(IEnumerable<string> expected, IEnumerable<string> actual, string what)
    {
        var e = expected.ToList();
        var a = actual.ToList();
        if (!e.SequenceEqual(a))
            throw new Failed(what + ": expected " + Show(e) + " but got " + Show(a));
    }

    static void Test(string pattern, string name, Action body)
    {
        try
        {
            body();
            passed++;
            Console.WriteLine("PASS " + pattern + ": " + name);
        }
        catch (Exception e)
        {
            failed++;
            Console.Error.WriteLine(name + ": " + e);
            Console.WriteLine("FAIL " + pattern + ": " + name + ": " + e.GetType().Name + ": " + e.Message.Replace("\n", " "));
        }
        Console.Out.Flush();
    }

    static void WithConn(Action<IConnection> body)
    {
        var conn = Connect();
        try { body(conn); }
        finally { if (conn.IsOpen) conn.Close(); }
    }

    static byte[] Bytes(string s)
    {
        return Encoding.UTF8.GetBytes(s);
    }

    static void Publish(IModel ch, string exchange, string key, string body, IBasicProperties props = null)
    {
        ch.BasicPublish(exchange, key, props ?? ch.CreateBasicProperties(), Bytes(body));
    }

    // Bodies ready in `queue` (basic.get with auto-ack until empty).
    static List<string> Drain(IModel ch, string queue)
    {
        var out_ = new List<string>();
        for (;;)
        {
            var r = ch.BasicGet(queue, true);
            if (r == null) return out_;
            out_.Add(Encoding.UTF8.GetString(r.Body));
        }
    }

    static string ServerNamedQueue(IModel ch)
    {
        // name "", not passive, not durable, exclusive, auto-delete
        return ch.QueueDeclare("", false, false, true, true, false, null);
    }

    // Runs `body`, which must fail with a channel error; returns the channel.close reason.
    static ShutdownEventArgs ChannelError(IConnection conn, IModel ch, Action body)
    {
        try
        {
            body();
        }
        catch (OperationInterruptedException e)
        {
            Check(!ch.IsOpen, "channel closed");
            Check(conn.IsOpen, "connection survives");
            Eq(ShutdownInitiator.Peer, e.ShutdownReason.Initiator, "closed by the broker");
            return e.ShutdownReason;
        }
        throw new Failed("expected the broker to close the channel");
    }

    static ulong Fib(int n)
    {
        ulong a = 0, b = 1;
        for (int i = 0; i < n; i++) { var t = a + b; a = b; b = t; }
        return a;
    }

    // An RPC server on its own connection: answers fib(body) to reply_to.
    static IConnection FibServer(string queue)
    {
        var conn = Connect();
        var ch = conn.CreateModel();
        ch.QueueDeclare(queue, false, false, true, false, false, null);
        var server = new EventingBasicConsumer();
        server.Received += (sender, e) =>
        {
            var props = ch.CreateBasicProperties();
            props.CorrelationId = e.BasicProperties.CorrelationId;
            var n = int.Parse(Encoding.UTF8.GetString(e.Body));
            ch.BasicPublish("", e.BasicProperties.ReplyTo, props, Bytes(Fib(n).ToString()));
            ch.BasicAck(e.DeliveryTag, false);
        };
        ch.BasicConsume(queue, false, null, server);
        return conn;
    }

    static void Main(string[] args)
    {
        if (Url == null)
        {
            Console.Error.WriteLine("AMQP_URL is not set");
            Environment.Exit(2);
        }
        if (args.Length > 0 && args[0] == "restart-before") RestartBefore();
        else if (args.Length > 0 && args[0] == "restart-after") RestartAfter();
        else if (args.Length > 0) { Console.Error.WriteLine("unknown argument " + args[0]); Environment.Exit(2); }
        else Suite();
        Console.WriteLine(passed + " passed, " + failed + " failed");
        Console.Out.Flush();
        Environment.Exit(failed == 0 ? 0 : 1);
    }

    // ---- broker restart ------------------------------------------------------------------------

    const string RestartQueue = "conformance.restart.dotnet";
    const string RestartBody = "persistent message from RabbitMQ.Client (Mono)";

    static void RestartBefore()
    {
        Test("restart", "before_publish_persistent_committed", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            ch.QueueDelete(RestartQueue, false, false, false); // a leftover from an aborted run
            ch.QueueDeclare(RestartQueue, false, true, false, false, false, null);
            ch.TxSelect();
            var props = ch.CreateBasicProperties();
            props.DeliveryMode = 2;
            props.ContentType = "text/plain";
            props.CorrelationId = "restart-1";
            props.Headers = new Hashtable { { "client", "dotnet" } };
            Publish(ch, "", RestartQueue, RestartBody, props);
            ch.TxCommit(); // answered after the persistent message is enqueued in the durable queue
        }));
    }

    static void RestartAfter()
    {
        Test("restart", "after_persistent_message_survived", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var r = ch.BasicGet(RestartQueue, false);
            Check(r != null, "the message is still in " + RestartQueue);
            Eq(RestartBody, Encoding.UTF8.GetString(r.Body), "body");
            Eq((byte)2, r.BasicProperties.DeliveryMode, "delivery mode");
            Eq("text/plain", r.BasicProperties.ContentType, "content type");
            Eq("restart-1", r.BasicProperties.CorrelationId, "correlation id");
            Eq("dotnet", Encoding.UTF8.GetString((byte[])r.BasicProperties.Headers["client"]), "header");
            ch.BasicAck(r.DeliveryTag, false);
            Eq(0u, ch.QueueDelete(RestartQueue, false, false, false), "messages left when deleted");
        }));
    }

    // ---- the suite -----------------------------------------------------------------------------

    static void Suite()
    {
        Test("hello-world", "publish_get_properties", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("hello");
            Eq(name, ch.QueueDeclare(name, false, false, true, false, false, null), "declared name");
            ch.TxSelect();
            var props = ch.CreateBasicProperties();
            props.ContentType = "text/plain";
            props.Headers = new Hashtable { { "lang", "en" }, { "n", 7 } };
            props.MessageId = "m-1";
            props.DeliveryMode = 2;
            props.Timestamp = new AmqpTimestamp(1700000000);
            Publish(ch, "", name, "Hello World!", props);
            ch.TxCommit();
            var r = ch.BasicGet(name, false);
            Check(r != null, "basic.get returned a message");
            Eq("Hello World!", Encoding.UTF8.GetString(r.Body), "body");
            Eq(name, r.RoutingKey, "routing key");
            Eq("", r.Exchange, "exchange");
            Eq(false, r.Redelivered, "redelivered");
            Eq(0u, r.MessageCount, "message count after get");
            var p = r.BasicProperties;
            Eq("text/plain", p.ContentType, "content type");
            Eq("en", Encoding.UTF8.GetString((byte[])p.Headers["lang"]), "header lang");
            Eq(7, p.Headers["n"], "header n");
            Eq("m-1", p.MessageId, "message id");
            Eq((byte)2, p.DeliveryMode, "delivery mode");
            Eq(1700000000L, p.Timestamp.UnixTime, "timestamp");
            Check(!p.IsCorrelationIdPresent(), "no correlation id");
            ch.BasicAck(r.DeliveryTag, false);
            Check(ch.BasicGet(name, false) == null, "queue empty (basic.get-empty)");
        }));

        Test("hello-world", "consume", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var q = ServerNamedQueue(ch);
            Check(q.StartsWith("amq.gen-"), "server-named: " + q);
            var c = new Collector(ch);
            var tag = ch.BasicConsume(q, false, "", false, false, null, c);
            for (int i = 0; i < 3; i++) Publish(ch, "", q, "m" + i);
            for (int i = 0; i < 3; i++)
            {
                var d = c.Next("delivery " + i);
                Eq("m" + i, d.Body, "body");
                Eq(tag, d.ConsumerTag, "consumer tag");
                Eq((ulong)(i + 1), d.DeliveryTag, "delivery tag");
                ch.BasicAck(d.DeliveryTag, false);
            }
            ch.BasicCancel(tag);
        }));

        Test("work-queue", "prefetch_one_round_robin", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("tasks");
            ch.QueueDeclare(name, false, true, false, false, false, null);
            var workers = new List<Tuple<IConnection, IModel, Collector>>();
            try
            {
                for (int w = 0; w < 2; w++)
                {
                    var wc = Connect();
                    var wch = wc.CreateModel();
                    wch.BasicQos(0, 1, false);
                    var col = new Collector(wch);
                    wch.BasicConsume(name, false, "", false, false, null, col);
                    workers.Add(Tuple.Create(wc, wch, col));
                }
                ch.TxSelect();
                const int n = 6;
                for (int i = 0; i < n; i++)
                {
                    var props = ch.CreateBasicProperties();
                    props.DeliveryMode = 2;
                    Publish(ch, "", name, "task-" + i, props);
                }
                ch.TxCommit();
                var held = new Delivery[2];
                held[0] = workers[0].Item3.Next("task for A");
                held[1] = workers[1].Item3.Next("task for B");
                Eq("task-0", held[0].Body, "the first registered consumer gets the first task");
                Eq("task-1", held[1].Body, "second task");
                for (int i = 2; i < n; i++)
                {
                    var w = i % 2;
                    workers[w].Item2.BasicAck(held[w].DeliveryTag, false);
                    held[w] = workers[w].Item3.Next("task-" + i);
                    Eq("task-" + i, held[w].Body, "round robin");
                    Eq((byte)2, held[w].Props.DeliveryMode, "persistent");
                }
                // With prefetch 1 neither worker got a second message while it held one.
                for (int w = 0; w < 2; w++)
                {
                    workers[w].Item2.BasicAck(held[w].DeliveryTag, false);
                    Eq(0, workers[w].Item3.Deliveries.Count, "nothing extra delivered");
                }
                EqList(new[] { "task-0", "task-2", "task-4" }, workers[0].Item3.Seen, "A's tasks");
                EqList(new[] { "task-1", "task-3", "task-5" }, workers[1].Item3.Seen, "B's tasks");
            }
            finally
            {
                foreach (var w in workers) if (w.Item1.IsOpen) w.Item1.Close();
                conn.CreateModel().QueueDelete(name, false, false, false);
            }
        }));

        Test("work-queue", "redelivered_when_worker_connection_drops", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("tasks");
            ch.QueueDeclare(name, false, false, false, false, false, null);
            var a = Connect();
            IConnection b = null;
            try
            {
                var ach = a.CreateModel();
                ach.BasicQos(0, 1, false);
                var ac = new Collector(ach);
                ach.BasicConsume(name, false, "", false, false, null, ac);
                Publish(ch, "", name, "important");
                var d = ac.Next("delivery to A");
                Eq(false, d.Redelivered, "first delivery");
                b = Connect();
                var bch = b.CreateModel();
                bch.BasicQos(0, 1, false);
                var bc = new Collector(bch);
                bch.BasicConsume(name, false, "", false, false, null, bc);
                a.Abort(); // drop the worker without acking
                d = bc.Next("redelivery to B");
                Eq("important", d.Body, "body");
                Eq(true, d.Redelivered, "redelivered flag");
                bch.BasicAck(d.DeliveryTag, false);
                bch.BasicCancel(d.ConsumerTag); // a synchronous round trip after the ack
                Eq(0u, ch.QueuePurge(name, false), "nothing left to purge");
            }
            finally
            {
                if (a.IsOpen) a.Close();
                if (b != null && b.IsOpen) b.Close();
                ch.QueueDelete(name, false, false, false);
            }
        }));

        Test("fanout", "server_named_exclusive_queues", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var x = Uniq("logs");
            ch.ExchangeDeclare(x, ExchangeType.Fanout, false, false, true, false, false, null);
            var queues = new[] { ServerNamedQueue(ch), ServerNamedQueue(ch) };
            foreach (var q in queues)
            {
                Check(q.StartsWith("amq.gen-"), "server-named: " + q);
                ch.QueueBind(q, x, "ignored", false, null);
            }
            Check(queues[0] != queues[1], "distinct names");
            ch.TxSelect();
            for (int i = 0; i < 3; i++) Publish(ch, x, "k" + i, "log " + i);
            ch.TxCommit();
            foreach (var q in queues) EqList(new[] { "log 0", "log 1", "log 2" }, Drain(ch, q), "fanout copy");
        }));

        Test("direct", "routing_bind_unbind", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var x = Uniq("direct");
            ch.ExchangeDeclare(x, ExchangeType.Direct, false, false, true, false, false, null);
            var qErr = ServerNamedQueue(ch);
            ch.QueueBind(qErr, x, "error", false, null);
            var qAll = ServerNamedQueue(ch);
            foreach (var sev in new[] { "info", "warning", "error" }) ch.QueueBind(qAll, x, sev, false, null);
            ch.TxSelect();
            foreach (var sev in new[] { "info", "warning", "error", "debug", "ERROR" }) Publish(ch, x, sev, sev);
            ch.TxCommit();
            EqList(new[] { "error" }, Drain(ch, qErr), "error queue");
            EqList(new[] { "info", "warning", "error" }, Drain(ch, qAll), "all queue");
            ch.QueueUnbind(qAll, x, "info", null);
            Publish(ch, x, "info", "info-2");
            Publish(ch, x, "warning", "warning-2");
            ch.TxCommit();
            EqList(new[] { "warning-2" }, Drain(ch, qAll), "after unbind");
        }));

        Test("topic", "star_and_hash", () => WithConn(conn =>
        {
            var cases = new[]
            {
                Tuple.Create("quick.orange.rabbit", "Q1 Q2"), Tuple.Create("lazy.orange.elephant", "Q1 Q2"),
                Tuple.Create("quick.orange.fox", "Q1"), Tuple.Create("lazy.brown.fox", "Q2"),
                Tuple.Create("lazy.pink.rabbit", "Q2"), Tuple.Create("quick.brown.fox", ""),
                Tuple.Create("quick.orange.male.rabbit", ""), Tuple.Create("lazy.orange.male.rabbit", "Q2"),
                Tuple.Create("lazy", "Q2"), Tuple.Create("orange", ""),
            };
            var ch = conn.CreateModel();
            var x = Uniq("topic");
            ch.ExchangeDeclare(x, ExchangeType.Topic, false, false, true, false, false, null);
            var q1 = ServerNamedQueue(ch);
            var q2 = ServerNamedQueue(ch);
            ch.QueueBind(q1, x, "*.orange.*", false, null);
            ch.QueueBind(q2, x, "*.*.rabbit", false, null);
            ch.QueueBind(q2, x, "lazy.#", false, null);
            ch.TxSelect();
            foreach (var c in cases) Publish(ch, x, c.Item1, c.Item1);
            ch.TxCommit();
            EqList(cases.Where(c => c.Item2.Contains("Q1")).Select(c => c.Item1), Drain(ch, q1), "Q1");
            EqList(cases.Where(c => c.Item2.Contains("Q2")).Select(c => c.Item1), Drain(ch, q2), "Q2");
        }));

        Test("rpc", "callback_queue_and_correlation_id", () =>
        {
            var rpcQueue = Uniq("rpc");
            var server = FibServer(rpcQueue);
            try
            {
                WithConn(conn =>
                {
                    var ch = conn.CreateModel();
                    var callback = ServerNamedQueue(ch);
                    var replies = new Collector(ch);
                    ch.BasicConsume(callback, true, "", false, false, null, replies);
                    var expected = new Dictionary<string, string>();
                    foreach (var n in new[] { 0, 1, 10, 30 })
                    {
                        var corr = Guid.NewGuid().ToString();
                        expected[corr] = Fib(n).ToString();
                        var props = ch.CreateBasicProperties();
                        props.ReplyTo = callback;
                        props.CorrelationId = corr;
                        Publish(ch, "", rpcQueue, n.ToString(), props);
                    }
                    var got = new Dictionary<string, string>();
                    for (int i = 0; i < expected.Count; i++)
                    {
                        var d = replies.Next("RPC reply");
                        got[d.Props.CorrelationId] = d.Body;
                    }
                    EqList(expected.OrderBy(kv => kv.Key).Select(kv => kv.Key + "=" + kv.Value),
                           got.OrderBy(kv => kv.Key).Select(kv => kv.Key + "=" + kv.Value), "replies by correlation id");
                });
            }
            finally
            {
                server.Close();
            }
        });

        Test("direct-reply-to", "pseudo_queue", () =>
        {
            var rpcQueue = Uniq("rpc");
            var server = FibServer(rpcQueue);
            try
            {
                WithConn(conn =>
                {
                    var ch = conn.CreateModel();
                    var replies = new Collector(ch);
                    var tag = ch.BasicConsume("amq.rabbitmq.reply-to", true, "", false, false, null, replies);
                    foreach (var t in new[] { Tuple.Create(20, "6765"), Tuple.Create(7, "13") })
                    {
                        var corr = Guid.NewGuid().ToString();
                        var props = ch.CreateBasicProperties();
                        props.ReplyTo = "amq.rabbitmq.reply-to";
                        props.CorrelationId = corr;
                        Publish(ch, "", rpcQueue, t.Item1.ToString(), props);
                        var d = replies.Next("direct reply-to response");
                        Eq(t.Item2, d.Body, "reply");
                        Eq(corr, d.Props.CorrelationId, "correlation id");
                        Eq(tag, d.ConsumerTag, "consumer tag");
                        Check(d.RoutingKey.StartsWith("amq.rabbitmq.reply-to."), "routing key " + d.RoutingKey);
                    }
                });
            }
            finally
            {
                server.Close();
            }
        });

        Test("direct-reply-to", "publish_without_consumer_is_refused", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var props = ch.CreateBasicProperties();
            props.ReplyTo = "amq.rabbitmq.reply-to";
            Publish(ch, "", Uniq("nowhere"), "x", props);
            var close = ChannelError(conn, ch, () => ch.QueueDeclare("", false, false, true, true, false, null));
            Eq(406, (int)close.ReplyCode, "reply code");
            Eq("PRECONDITION_FAILED - fast reply consumer does not exist", close.ReplyText, "reply text");
        }));

        // No confirm.select in this client: transactions are its publish acknowledgement.
        Test("other-features", "tx_commit_and_rollback", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var q = ServerNamedQueue(ch);
            ch.TxSelect();
            Publish(ch, "", q, "rolled back");
            ch.TxRollback();
            Eq(0u, ch.QueuePurge(q, false), "nothing enqueued after rollback");
            for (int i = 0; i < 20; i++) Publish(ch, "", q, "t" + i);
            ch.TxCommit();
            EqList(Enumerable.Range(0, 20).Select(i => "t" + i), Drain(ch, q), "committed messages");
            // Acks in a transaction take effect on commit.
            Publish(ch, "", q, "acked");
            ch.TxCommit();
            var r = ch.BasicGet(q, false);
            ch.BasicAck(r.DeliveryTag, false);
            ch.TxRollback(); // the ack is discarded; the message stays unacked on the channel
            ch.Close();
            var ch2 = conn.CreateModel();
            var again = ch2.BasicGet(q, true);
            Check(again != null, "unacked message requeued when its channel closed");
            Eq("acked", Encoding.UTF8.GetString(again.Body), "body");
            Eq(true, again.Redelivered, "redelivered");
        }));

        Test("mandatory-return", "return_before_commit_ok", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var returns = new BlockingCollection<BasicReturnEventArgs>();
            ch.BasicReturn += (model, e) => returns.Add(e);
            ch.TxSelect();
            var key = Uniq("nowhere");
            var props = ch.CreateBasicProperties();
            props.Headers = new Hashtable { { "h", "v" } };
            ch.BasicPublish("", key, true, false, props, Bytes("lost"));
            var q = ServerNamedQueue(ch);
            ch.BasicPublish("", q, true, false, ch.CreateBasicProperties(), Bytes("routed"));
            ch.TxCommit();
            // The connection thread dispatches basic.return as it reads it, before commit-ok.
            Eq(1, returns.Count, "returned before commit-ok");
            BasicReturnEventArgs ret;
            Check(returns.TryTake(out ret, HangGuardMs), "basic.return");
            Eq(312, (int)ret.ReplyCode, "reply code");
            Eq("NO_ROUTE", ret.ReplyText, "reply text");
            Eq("", ret.Exchange, "exchange");
            Eq(key, ret.RoutingKey, "routing key");
            Eq("lost", Encoding.UTF8.GetString(ret.Body), "body");
            Eq("v", Encoding.UTF8.GetString((byte[])ret.BasicProperties.Headers["h"]), "header");
            EqList(new[] { "routed" }, Drain(ch, q), "the routable one was not returned");
        }));

        Test("mandatory-return", "return_without_tx", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var returns = new BlockingCollection<BasicReturnEventArgs>();
            ch.BasicReturn += (model, e) => returns.Add(e);
            var x = Uniq("direct");
            ch.ExchangeDeclare(x, ExchangeType.Direct, false, false, true, false, false, null);
            ch.BasicPublish(x, "unbound", true, false, ch.CreateBasicProperties(), Bytes("lost"));
            BasicReturnEventArgs ret;
            Check(returns.TryTake(out ret, HangGuardMs), "timed out waiting for basic.return");
            Eq(312, (int)ret.ReplyCode, "reply code");
            Eq(x, ret.Exchange, "exchange");
            Eq("unbound", ret.RoutingKey, "routing key");
        }));

        Test("errors", "404_passive_queue_closes_channel", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("missing");
            var close = ChannelError(conn, ch, () => ch.QueueDeclare(name, true, false, false, false, false, null));
            Eq(404, (int)close.ReplyCode, "reply code");
            Eq("NOT_FOUND - no queue '" + name + "' in vhost '/'", close.ReplyText, "reply text");
            Eq(50, (int)close.ClassId, "class id");
            Eq(10, (int)close.MethodId, "method id");
            ServerNamedQueue(conn.CreateModel()); // the connection still works
        }));

        Test("errors", "404_passive_exchange", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("missing");
            var close = ChannelError(conn, ch, () => ch.ExchangeDeclare(name, ExchangeType.Direct, true, false, false, false, false, null));
            Eq(404, (int)close.ReplyCode, "reply code");
            Eq("NOT_FOUND - no exchange '" + name + "' in vhost '/'", close.ReplyText, "reply text");
        }));

        Test("errors", "404_get_from_missing_queue", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("missing");
            var close = ChannelError(conn, ch, () => ch.BasicGet(name, true));
            Eq(404, (int)close.ReplyCode, "reply code");
            Eq("NOT_FOUND - no queue '" + name + "' in vhost '/'", close.ReplyText, "reply text");
        }));

        Test("errors", "406_redeclare_queue_durable", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("q");
            ch.QueueDeclare(name, false, false, false, false, false, null);
            try
            {
                var close = ChannelError(conn, ch, () => ch.QueueDeclare(name, false, true, false, false, false, null));
                Eq(406, (int)close.ReplyCode, "reply code");
                Eq("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '" + name + "' in vhost '/': " +
                   "received 'true' but current is 'false'", close.ReplyText, "reply text");
            }
            finally
            {
                conn.CreateModel().QueueDelete(name, false, false, false);
            }
        }));

        Test("errors", "406_redeclare_exchange_type", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            var name = Uniq("ex");
            ch.ExchangeDeclare(name, ExchangeType.Direct);
            try
            {
                var close = ChannelError(conn, ch, () => ch.ExchangeDeclare(name, ExchangeType.Topic));
                Eq(406, (int)close.ReplyCode, "reply code");
                Eq("PRECONDITION_FAILED - inequivalent arg 'type' for exchange '" + name + "' in vhost '/': " +
                   "received 'topic' but current is 'direct'", close.ReplyText, "reply text");
            }
            finally
            {
                conn.CreateModel().ExchangeDelete(name, false, false);
            }
        }));

        Test("errors", "406_ack_unknown_delivery_tag", () => WithConn(conn =>
        {
            var ch = conn.CreateModel();
            ch.BasicAck(99, false);
            var close = ChannelError(conn, ch, () => ServerNamedQueue(ch));
            Eq(406, (int)close.ReplyCode, "reply code");
            Eq("PRECONDITION_FAILED - unknown delivery tag 99", close.ReplyText, "reply text");
        }));

        Test("connection", "server_properties_and_clean_close", () =>
        {
            var conn = Connect();
            var props = conn.ServerProperties;
            Check(props.Contains("product"), "server property product");
            var caps = (IDictionary)props["capabilities"];
            foreach (var cap in new[] { "publisher_confirms", "basic.nack", "consumer_cancel_notify",
                                        "exchange_exchange_bindings", "per_consumer_qos", "direct_reply_to" })
                Eq(true, caps[cap], "capability " + cap);
            Check(conn.FrameMax > 0, "frame_max negotiated");
            var ch = conn.CreateModel();
            Check(ch.IsOpen, "channel open");
            conn.Close();
            Check(!conn.IsOpen, "connection closed");
            Check(!ch.IsOpen, "channel closed");
            Eq(ShutdownInitiator.Application, conn.CloseReason.Initiator, "closed by us");
        });

        Test("connection", "refused_login", () =>
        {
            try
            {
                var conn = Factory("wrong").CreateConnection();
                conn.Close();
                throw new Failed("login with a wrong password succeeded");
            }
            catch (BrokerUnreachableException e)
            {
                // This client announces no capabilities, so the broker closes the socket
                // during the handshake without a connection.close (no
                // authentication_failure_close); the client reports an unreachable broker.
                Check(e.ToString().Contains("PossibleAuthenticationFailureException"), e.ToString());
            }
        });
    }
}
