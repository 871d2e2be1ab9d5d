package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

// ackNode is a node that answers every reboot command with an
// acknowledgement of the given outcome, the way labd does.
func ackNode(t *testing.T, b *testbroker.Broker, name string, outcome proto.CmdOutcome, detail string) {
	t.Helper()
	tp := proto.DefaultTopics
	cmds := make(chan proto.Command, 4)
	c := dial(t, b.URL(), name, func(m bus.Message) {
		var cmd proto.Command
		if proto.Decode(m.Payload, &cmd) == nil {
			cmds <- cmd
		}
	})
	// Registered after dial, so it runs before the client closes: the
	// acknowledgement may still be in flight when the test is over.
	stopped := make(chan struct{})
	t.Cleanup(func() { close(stopped) })
	publish := func(m proto.Message, topic string, retain bool) {
		raw, err := proto.Seal(m)
		if err != nil {
			t.Error(err)
			return
		}
		if err := c.Publish(context.Background(), topic, raw, retain); err != nil {
			select {
			case <-stopped:
			default:
				t.Error(err)
			}
		}
	}
	p := &proto.Presence{Node: name, Online: true}
	p.Stamp(name, time.Now())
	publish(p, tp.NodePresence(name), true)
	st := &proto.NodeStatus{Node: name, Groups: []string{"web"}, BootID: "boot-1", Execution: proto.Execution{State: proto.StateIdle}}
	st.Stamp(name, time.Now())
	publish(st, tp.NodeStatus(name), true)
	if err := c.Subscribe(context.Background(), tp.NodeCmd(name)); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			var cmd proto.Command
			select {
			case cmd = <-cmds:
			case <-stopped:
				return
			}
			to := proto.StateRejected
			if outcome == proto.CmdFailed {
				to = proto.StateIdle
			}
			ev := &proto.Event{Node: name, Prev: proto.StateIdle, State: to, Detail: detail, Cmd: cmd.ID, Op: cmd.Op, Outcome: outcome}
			ev.Stamp(name, time.Now())
			publish(ev, tp.NodeEvents(name), false)
		}
	}()
}

// A node that refuses the reboot, or whose reboot command fails, is
// reported at once from its acknowledgement — not after the deadline —
// and the sequence stops there.
func TestRebootReportsTheNodesAcknowledgement(t *testing.T) {
	for _, tc := range []struct {
		outcome proto.CmdOutcome
		detail  string
		want    string
	}{
		{proto.CmdFailed, `reboot command "systemctl reboot" failed: exit status 1: System has not been booted with systemd`, RebootFailed},
		{proto.CmdRefused, "reboot refused: the node is activating", RebootRefused},
	} {
		t.Run(string(tc.outcome), func(t *testing.T) {
			r := newRig(t)
			ackNode(t, r.b, "n1", tc.outcome, tc.detail)
			ackNode(t, r.b, "n2", proto.CmdAccepted, "reboot requested by the operator")
			r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
			start := time.Now()
			res, err := r.ctl.Reboot(context.Background(), []string{"n1", "n2"}, RebootOptions{Deadline: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %s: waited for the deadline instead of the acknowledgement", took)
			}
			if len(res) != 2 || res[0].Node != "n1" || res[0].State != tc.want || res[0].Detail != tc.detail {
				t.Fatalf("results %+v, want n1 %s with the node's reason", res, tc.want)
			}
			if res[1].State != RebootSkipped || !strings.Contains(res[1].Detail, "earlier machine") {
				t.Errorf("n2: %+v, want skipped", res[1])
			}
		})
	}
}
