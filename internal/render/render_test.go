package render

import (
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

const path = proto.StoreDir + "0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1"

func TestShortPath(t *testing.T) {
	if got, want := ShortPath(path), "0123456…-nixos-system-n1"; got != want {
		t.Errorf("ShortPath = %q, want %q", got, want)
	}
	if got := ShortPath("/elsewhere/x"); got != "/elsewhere/x" {
		t.Errorf("a path outside the store changed: %q", got)
	}
}

func TestWriteResultSummarisesAndListsWhatDidNotSucceed(t *testing.T) {
	res := &controller.Result{
		Rollout: "r-1", Outcome: controller.OutcomeFailed,
		Counters: proto.Counters{Total: 2, Succeeded: 1, Failed: 1},
		Waves:    [][]string{{"n1"}, {"n2"}},
		Nodes: []controller.NodeResult{
			{Node: "n2", Wave: 2, Toplevel: path, State: proto.StateFailed, Detail: "health\ncheck  failed"},
			{Node: "n1", Wave: 1, Toplevel: path, State: proto.StateSucceeded},
		},
		Halted: true, Reason: "1 of 2 finished targets failed",
		Rollback: &controller.Result{Rollout: "r-1-undo", Outcome: controller.OutcomeSucceeded,
			Counters: proto.Counters{Total: 1, Succeeded: 1}, Waves: [][]string{{"n1"}},
			Nodes: []controller.NodeResult{{Node: "n1", Wave: 1, State: proto.StateSucceeded}}},
	}
	var b strings.Builder
	if err := WriteResult(&b, res); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"rollout r-1 failed: 2 targets in 2 waves, 1 succeeded, 1 failed",
		"halted: 1 of 2 finished targets failed\n",
		"  n2: failed — health check failed",
		"switching the targets that succeeded back",
		"rollout r-1-undo succeeded: 1 targets in 1 wave",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "\n1 "), strings.Index(out, "\n2 "); i < 0 || j < i {
		t.Errorf("the table is not by wave:\n%s", out)
	}
}

func TestWriteStatus(t *testing.T) {
	now := time.Unix(1000, 0).UTC()
	st := &proto.NodeStatus{Current: path, UpdatedAt: now.Add(-3 * time.Second).UnixMilli(),
		Checks:   proto.CheckResults{"web": {OK: true, At: 1}, "db": {OK: false, At: 1}, "new": {}},
		Problems: []string{"disk full"}}
	rows := StatusRows([]controller.NodeView{{Name: "n1", Online: true, Status: st}, {Name: "n2"}})
	if rows[0].State != proto.StateIdle || rows[1].State != proto.StateIdle {
		t.Errorf("a node without an execution is not idle: %+v", rows)
	}
	var b strings.Builder
	if err := WriteStatus(&b, rows, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"idle (!)", "db:FAIL,new:?,web:ok", "3s ago", "(!) n1: disk full\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "failed attempts") {
		t.Errorf("a note about failed attempts for a node that had none:\n%s", out)
	}
	// The counts line and the attention list are the dashboard's words,
	// most urgent first (a failing node before an offline one).
	for _, want := range []string{"2 machines: 1 online, 1 offline; 2 idle; 1 needs attention\n", "attention: n1: problem on the machine: disk full\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A machine waiting for a secret says which, in the attention list.
	waiting := &proto.NodeStatus{Current: path, Execution: proto.Execution{Rollout: "r-2", State: proto.StateFetching, Error: "waiting for secret db-password"}}
	b.Reset()
	_ = WriteStatus(&b, StatusRows([]controller.NodeView{{Name: "db", Online: true, Status: waiting}}), now)
	if !strings.Contains(b.String(), "attention: db: waiting for secret db-password\n") {
		t.Errorf("a machine waiting for a secret:\n%s", b.String())
	}
	bad := &proto.NodeStatus{Current: path, Execution: proto.Execution{Rollout: "r-1", State: proto.StateRollbackFailed, Error: "switch failed"}}
	b.Reset()
	checking := &proto.NodeStatus{Current: path, Checks: proto.CheckResults{"db": {OK: false, At: 1}}}
	_ = WriteStatus(&b, StatusRows([]controller.NodeView{{Name: "a", Online: true, Status: checking}, {Name: "z", Online: true, Status: bad}}), now)
	if i, j := strings.Index(b.String(), "attention: z:"), strings.Index(b.String(), "attention: a:"); i < 0 || j < 0 || i > j {
		t.Errorf("attention not ordered most urgent first:\n%s", b.String())
	}

	// A node that connected after being refused says so, once online.
	st.Connect = &proto.ConnectTrouble{Attempts: 7, Since: now.Add(-time.Hour).UnixMilli(), Until: now.Add(-time.Minute).UnixMilli(),
		Error: "bad username or password"}
	b.Reset()
	if err := WriteStatus(&b, StatusRows([]controller.NodeView{{Name: "n1", Online: true, Status: st}}), now); err != nil {
		t.Fatal(err)
	}
	if want := "note: n1 connected after 7 failed attempts from 1969-12-31 23:16:40 to 00:15:40 UTC; the last: bad username or password"; !strings.Contains(b.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, b.String())
	}
	st.Connect = &proto.ConnectTrouble{Attempts: 1, Since: now.Add(-time.Hour).UnixMilli(), Until: now.Add(-time.Hour).UnixMilli(), Error: "refused"}
	b.Reset()
	if err := WriteStatus(&b, StatusRows([]controller.NodeView{{Name: "n1", Online: true, Status: st}}), now); err != nil {
		t.Fatal(err)
	}
	if want := "note: n1 connected after 1 failed attempt at 1969-12-31 23:16:40 UTC: refused"; !strings.Contains(b.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, b.String())
	}
	b.Reset()
	_ = WriteStatus(&b, nil, now)
	if b.String() != "no nodes have reported yet\n" {
		t.Errorf("empty fleet: %q", b.String())
	}
}

func TestExitCodes(t *testing.T) {
	for o, want := range map[controller.Outcome]int{controller.OutcomeSucceeded: 0, controller.OutcomeFailed: 3,
		controller.OutcomeRolledBack: 4, controller.OutcomePending: 5, controller.OutcomeCancelled: 6, "what": 1} {
		if got := ExitCode(o); got != want {
			t.Errorf("%s: exit %d, want %d", o, got, want)
		}
	}
}
