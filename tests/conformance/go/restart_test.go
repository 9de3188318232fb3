package conformance

// The broker-restart check: scripts/conformance runs TestRestart_Before with
// CONFORMANCE_RESTART_STEP=before, restarts the broker gracefully, then runs TestRestart_After
// with CONFORMANCE_RESTART_STEP=after. In a plain `go test` run both are skipped.

import (
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	restartQueue = "conformance.restart.go"
	restartBody  = "persistent message from amqp091-go"
)

func restartStep(t *testing.T, step string) {
	if os.Getenv("CONFORMANCE_RESTART_STEP") != step {
		t.Skip("only in scripts/conformance's restart stage (CONFORMANCE_RESTART_STEP=" + step + ")")
	}
}

func TestRestart_Before(t *testing.T) {
	restartStep(t, "before")
	conn := dial(t)
	ch, confirms := confirmChannel(t, conn)
	_, err := ch.QueueDelete(restartQueue, false, false, false) // a leftover from an aborted run
	must(t, err)
	_, err = ch.QueueDeclare(restartQueue, true, false, false, false, nil)
	must(t, err)
	must(t, ch.Publish("", restartQueue, false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, ContentType: "text/plain", CorrelationId: "restart-1",
		Headers: amqp.Table{"client": "go"}, Body: []byte(restartBody),
	}))
	select {
	case c := <-confirms:
		eq(t, c.Ack, true, "acked")
	case <-time.After(hangGuard):
		t.Fatal("timed out waiting for the confirmation")
	}
	eq(t, inspect(t, ch, restartQueue).Messages, 1, "message count")
}

func TestRestart_After(t *testing.T) {
	restartStep(t, "after")
	ch := channel(t, dial(t))
	d, ok, err := ch.Get(restartQueue, false)
	must(t, err)
	if !ok {
		t.Fatalf("the message is no longer in %s", restartQueue)
	}
	eq(t, string(d.Body), restartBody, "body")
	eq(t, d.DeliveryMode, amqp.Persistent, "delivery mode")
	eq(t, d.ContentType, "text/plain", "content type")
	eq(t, d.CorrelationId, "restart-1", "correlation id")
	eq(t, fmt.Sprint(d.Headers["client"]), "go", "header")
	must(t, d.Ack(false))
	n, err := ch.QueueDelete(restartQueue, false, false, false)
	must(t, err)
	eq(t, n, 0, "messages left when deleted")
}
