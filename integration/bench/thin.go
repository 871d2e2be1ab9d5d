package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/lab-fleet/lab/proto"
)

// A thin node is what MQTT load generators simulate: one connection and
// one goroutine, no state machine, no disk, no signature check. It holds
// the subscriptions a labd holds (its Desired, its commands, the fleet's
// commands, its groups' gates and commands, QoS 1, a 24 h session) and
// answers a Desired with the messages a labd sends for a successful
// rollout — an event and a retained status for each step (queued while
// its wave is closed, then fetching, activating, verifying, succeeded) —
// copied from templates encoded once per step for the whole process, with
// the node's name and a fresh message id patched in. So the machine's
// cores go to the broker and the controller: what a real fleet, whose
// nodes run on their own machines, costs the broker host.
//
// Its messages are well-formed (proto.Seal validates the templates), so
// the controller, labctl and any watcher treat it as a labd.

// Placeholders patched in a template: a node name and a message id of the
// lengths of the real ones (proto.NewID is 32 hex digits).
const (
	thinNamePH = "zqzqzq"
	thinIDPH   = "feedfacefeedfacefeedfacefeedface"
)

// runThin runs -count thin nodes in this process. Like runSim it prints
// "ready" once every node has connected and announced itself, answers
// "bytes" on stdin with the bytes sent and received, and stops at EOF.
func runThin(args []string) int {
	fs := flag.NewFlagSet("bench thin", flag.ContinueOnError)
	broker := fs.String("broker", "", "broker URL (mqtt://host:port)")
	from := fs.Int("from", 0, "index of the first node")
	count := fs.Int("count", 100, "nodes in this process")
	block := fs.Int("block", 0, "nodes per capacity block: node i is also in group blk-<i/block> (0: none)")
	group := fs.String("group", "bench", "group of every node")
	passwords := fs.String("passwords", "", "directory of NAME.password files: log in as each node's identity")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*broker)
	if err != nil || u.Host == "" {
		fmt.Fprintln(os.Stderr, "bench thin: -broker must be mqtt://host:port")
		return 2
	}
	if last := nodeName(*from + *count - 1); len(last) != len(thinNamePH) {
		fmt.Fprintf(os.Stderr, "bench thin: node names must be %d characters for the templates (%s is not): at most 100,000 nodes\n", len(thinNamePH), last)
		return 2
	}
	f := &thinFleet{addr: u.Host, tp: proto.DefaultTopics, connecting: make(chan struct{}, thinConnecting)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failed atomic.Int64
	ready := make(chan struct{}, *count)
	for i := *from; i < *from+*count; i++ {
		groups := []string{*group}
		if *block > 0 {
			groups = append(groups, blockGroup(i / *block))
		}
		n := &thinNode{fleet: f, name: nodeName(i), groups: groups, current: gen1}
		if *passwords != "" {
			pw, err := os.ReadFile(filepath.Join(*passwords, n.name+".password"))
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench thin:", err)
				cancel()
				return 1
			}
			n.password = bytes.TrimSpace(pw)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.run(ctx, ready); err != nil && ctx.Err() == nil {
				failed.Add(1)
				fmt.Fprintf(os.Stderr, "bench thin: node %s: %v\n", n.name, err)
			}
		}()
	}
	for range *count {
		<-ready
	}
	if failed.Load() > 0 {
		fmt.Fprintf(os.Stderr, "bench thin: %d nodes failed\n", failed.Load())
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "bytes" {
			fmt.Printf("bytes %d %d\n", f.sent.Load(), f.recv.Load())
		}
	}
	cancel()
	wg.Wait()
	return 0
}

// blockGroup names capacity block b (the bench's fleet-size steps).
func blockGroup(b int) string { return "blk-" + strconv.Itoa(b) }

// thinConnecting bounds the connections a process has in its handshake
// at once: thin nodes start in microseconds, and 10,000 SYNs at once
// overflow a broker's listen backlog (mosquitto's is 100), which costs
// the nodes seconds of SYN retransmits. Reconnect storms are measured on
// their own.
const thinConnecting = 64

// thinFleet is what a process's thin nodes share: the broker, the byte
// counters, the handshake slots and the message templates.
type thinFleet struct {
	addr       string
	connecting chan struct{}
	tp         proto.Topics
	sent, recv atomic.Int64
	reconnects atomic.Int64

	mu   sync.Mutex
	sets map[setKey]*msgSet
}

// setKey names the messages of one Desired on nodes in one situation:
// the system they run before it and their groups (comma separated).
// rollout "" is the idle status of a node that has applied nothing.
type setKey struct {
	rollout, toplevel string
	gen               uint64
	current, groups   string
}

// A msgSet holds the templates of every message a node sends for one
// Desired, stamped together with increasing times (a millisecond per
// step), and renewed together after templateAge so that timestamps stay
// close to the truth. Renewing a set as a whole keeps each node's
// statuses in time order, whichever set each of its steps came from: a
// watcher keeps the status with the latest updated_at (controller.Fleet),
// so an older template for a later step would hide it.
type msgSet struct {
	created time.Time
	status  map[proto.ExecState]*template
	event   map[[2]proto.ExecState]*template // (from, to)
}

// template is a sealed message with a placeholder name and id, and where
// they are.
type template struct {
	b     []byte
	names []int
	id    int
}

const templateAge = 200 * time.Millisecond

// thinSteps are the transitions a thin node makes: the statuses' states
// in time order, and the events between them.
var (
	thinStates = []proto.ExecState{proto.StateIdle, proto.StateAlreadyCurrent, proto.StateQueued, proto.StateFetching,
		proto.StateActivating, proto.StateVerifying, proto.StateSucceeded}
	thinEvents = [][2]proto.ExecState{{proto.StateIdle, proto.StateAlreadyCurrent}, {proto.StateIdle, proto.StateQueued},
		{proto.StateIdle, proto.StateFetching}, {proto.StateQueued, proto.StateFetching}, {proto.StateFetching, proto.StateActivating},
		{proto.StateActivating, proto.StateVerifying}, {proto.StateVerifying, proto.StateSucceeded}}
)

// set returns the current message set for k.
func (f *thinFleet) set(k setKey) (*msgSet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ms := f.sets[k]; ms != nil && time.Since(ms.created) <= templateAge {
		return ms, nil
	}
	now := time.Now()
	ms := &msgSet{created: now, status: map[proto.ExecState]*template{}, event: map[[2]proto.ExecState]*template{}}
	at := func(i int) time.Time { return now.Add(time.Duration(i) * time.Millisecond) }
	for i, st := range thinStates {
		if (k.rollout == "") != (st == proto.StateIdle) {
			continue // idle only for a node that has applied nothing, and only idle
		}
		s := &proto.NodeStatus{Node: thinNamePH, Groups: strings.Split(k.groups, ","), Execution: proto.Execution{State: proto.StateIdle},
			Current: k.current, Booted: gen1, LabdVersion: "bench-thin", BootID: "bench-boot", UpdatedAt: at(i).UnixMilli()}
		s.Stamp(thinNamePH, at(i))
		if k.rollout != "" {
			s.Execution = proto.Execution{Rollout: k.rollout, Gen: k.gen, Toplevel: k.toplevel, Action: proto.ActionSwitch, State: st, Since: at(i).UnixMilli()}
		}
		if st == proto.StateSucceeded || st == proto.StateAlreadyCurrent {
			s.AppliedGen, s.Previous, s.Current = k.gen, k.current, k.toplevel
		}
		s.NeedsReboot = s.Current != s.Booted
		t, err := seal(s)
		if err != nil {
			return nil, err
		}
		ms.status[st] = t
	}
	for _, tr := range thinEvents {
		if k.rollout == "" {
			break
		}
		e := &proto.Event{Node: thinNamePH, Rollout: k.rollout, Gen: k.gen, Prev: tr[0], State: tr[1]}
		e.Stamp(thinNamePH, at(slices.Index(thinStates, tr[1])))
		t, err := seal(e)
		if err != nil {
			return nil, err
		}
		ms.event[tr] = t
	}
	if f.sets == nil {
		f.sets = map[setKey]*msgSet{}
	}
	f.sets[k] = ms
	return ms, nil
}

// seal seals m with the placeholder id and finds the placeholders.
func seal(m proto.Message) (*template, error) {
	m.Header().ID = thinIDPH
	b, err := proto.Seal(m)
	if err != nil {
		return nil, err
	}
	t := &template{b: b, id: bytes.Index(b, []byte(thinIDPH))}
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(thinNamePH))
		if i < 0 {
			break
		}
		t.names = append(t.names, off+i)
		off += i + len(thinNamePH)
	}
	if t.id < 0 || len(t.names) == 0 {
		return nil, fmt.Errorf("template of a %s: placeholders not found", m.Header().Kind)
	}
	return t, nil
}

// message is the template filled in for node name, with a fresh id.
func (t *template) message(name string) []byte {
	b := bytes.Clone(t.b)
	for _, at := range t.names {
		copy(b[at:], name)
	}
	var id [16]byte
	binaryID(id[:])
	hex.Encode(b[t.id:], id[:])
	return b
}

// binaryID fills b with an id unique in this process (a counter and the
// process start: cheaper than crypto/rand and as unique for a bench).
func binaryID(b []byte) {
	v := idCounter.Add(1)
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
	copy(b[8:], idSalt[:])
}

var (
	idCounter atomic.Uint64
	idSalt    = func() (s [8]byte) {
		t := time.Now().UnixNano()
		for i := range 8 {
			s[i] = byte(t >> (8 * i))
		}
		return s
	}()
)

// thinNode is one simulated machine on one connection.
type thinNode struct {
	fleet    *thinFleet
	name     string
	groups   []string
	current  string
	password []byte // its identity's (-auth); nil: anonymous

	wmu     sync.Mutex
	w       *bufio.Writer
	pid     uint16
	written time.Time

	// Only the reader goroutine touches what follows.
	applied uint64
	last    setKey // the set and state of the last status sent
	state   proto.ExecState
	queued  *proto.Desired
	open    map[string]int // rollout → highest open wave its gate announced
}

func (n *thinNode) run(ctx context.Context, ready chan<- struct{}) error {
	var once sync.Once
	signal := func() { once.Do(func() { ready <- struct{}{} }) }
	defer signal()
	for attempt := 0; ; attempt++ {
		began := time.Now()
		err := n.session(ctx, signal)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > 10*time.Second {
			attempt = 0 // a session that lasted: a new outage (the bench restarts the broker)
		}
		if k := n.fleet.reconnects.Add(1); k <= 5 || k%1000 == 0 {
			fmt.Fprintf(os.Stderr, "bench thin: node %s lost its connection (%d in this process so far): %v\n", n.name, k, err)
		}
		if attempt >= 20 {
			return err
		}
		time.Sleep(time.Duration(100+attempt*100) * time.Millisecond)
	}
}

// session connects, subscribes, announces and serves one connection.
func (n *thinNode) session(ctx context.Context, connected func()) error {
	c, r, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	context.AfterFunc(sctx, func() { c.Close() })
	tp := n.fleet.tp
	filters := []string{tp.NodeDesired(n.name), tp.NodeCmd(n.name), tp.AllCmd()}
	for _, g := range n.groups {
		filters = append(filters, tp.GroupGate(g), tp.GroupCmd(g))
	}
	sub := &packets.Subscribe{Properties: &packets.Properties{}, PacketID: n.nextID()}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, packets.SubOptions{Topic: f, QoS: 1})
	}
	if err := n.write(sub); err != nil {
		return err
	}
	on, err := n.presence(true)
	if err != nil {
		return err
	}
	if err := n.publish(tp.NodePresence(n.name), on, true); err != nil {
		return err
	}
	// A fresh status, as labd's announce: the last step it reported.
	if n.last.groups == "" {
		n.last, n.state = setKey{current: n.current, groups: strings.Join(n.groups, ",")}, proto.StateIdle
	}
	ms, err := n.fleet.set(n.last)
	if err != nil {
		return err
	}
	if err := n.sendStatus(ms, n.last, n.state); err != nil {
		return err
	}
	connected()
	go n.keepAlive(sctx)
	for {
		p, err := packets.ReadPacket(r)
		if err != nil {
			return err
		}
		pub, ok := p.Content.(*packets.Publish)
		if !ok {
			continue // SUBACK, PUBACK, PINGRESP
		}
		if pub.QoS > 0 {
			if err := n.write(&packets.Puback{PacketID: pub.PacketID, Properties: &packets.Properties{}}); err != nil {
				return err
			}
		}
		if err := n.handle(pub); err != nil {
			return err
		}
	}
}

// connect dials the broker and completes the MQTT handshake, holding one
// of the process's handshake slots meanwhile.
func (n *thinNode) connect(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	n.fleet.connecting <- struct{}{}
	defer func() { <-n.fleet.connecting }()
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", n.fleet.addr)
	if err != nil {
		return nil, nil, err
	}
	conn := countConn{c, &n.fleet.sent, &n.fleet.recv}
	n.wmu.Lock() // a keepAlive of the session before may still write
	n.w = bufio.NewWriterSize(conn, 2048)
	n.wmu.Unlock()
	r := bufio.NewReaderSize(conn, 4096)
	will, err := n.presence(false)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	expiry := uint32(24 * time.Hour / time.Second)
	cp := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: n.name, KeepAlive: thinKeepAlive, CleanStart: true,
		Properties: &packets.Properties{SessionExpiryInterval: &expiry},
		WillFlag:   true, WillTopic: n.fleet.tp.NodePresence(n.name), WillMessage: will, WillQOS: 1, WillRetain: true,
		WillProperties: &packets.Properties{}}
	if n.password != nil {
		cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, n.name, true, n.password
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := n.write(cp); err != nil {
		c.Close()
		return nil, nil, err
	}
	p, err := packets.ReadPacket(r)
	if err == nil {
		if ca, ok := p.Content.(*packets.Connack); !ok || ca.ReasonCode != 0 {
			err = fmt.Errorf("connect refused: %v", p)
		}
	}
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("connack: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return conn, r, nil
}

// thinKeepAlive is the keep-alive a thin node announces, in seconds.
const thinKeepAlive = 60

// keepAlive sends a PINGREQ whenever nothing was sent for half the
// keep-alive, until ctx ends.
func (n *thinNode) keepAlive(ctx context.Context) {
	half := thinKeepAlive * time.Second / 2
	t := time.NewTicker(half / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if time.Since(n.lastWrite()) >= half {
				_ = n.write(&packets.Pingreq{}) // a dead connection ends the reader too
			}
		}
	}
}

func (n *thinNode) handle(pub *packets.Publish) error {
	tp := n.fleet.tp
	r, err := tp.Parse(pub.Topic)
	if err != nil {
		return nil
	}
	switch r.Kind {
	case proto.TopicDesired:
		var d proto.Desired
		if proto.Decode(pub.Payload, &d) != nil || d.Gen <= n.applied {
			return nil
		}
		if d.Toplevel == n.current {
			n.applied = d.Gen
			return n.step(&d, proto.StateIdle, proto.StateAlreadyCurrent)
		}
		if d.Wave > 0 && n.open[d.Rollout] < d.Wave {
			n.queued = &d
			return n.step(&d, proto.StateIdle, proto.StateQueued)
		}
		return n.apply(&d, proto.StateIdle)
	case proto.TopicGate:
		var g proto.Gate
		if proto.Decode(pub.Payload, &g) != nil {
			return nil
		}
		if g.State != proto.GateRunning {
			return nil
		}
		if n.open == nil {
			n.open = map[string]int{}
		}
		n.open[g.Rollout] = max(n.open[g.Rollout], g.OpenWave)
		if q := n.queued; q != nil && q.Rollout == g.Rollout && n.open[g.Rollout] >= q.Wave {
			n.queued = nil
			return n.apply(q, proto.StateQueued)
		}
	}
	return nil
}

// apply runs a Desired through a labd's successful steps. It counts as
// applied only once every message went out: a connection lost on the way
// brings the retained Desired again, and the steps are sent again.
func (n *thinNode) apply(d *proto.Desired, from proto.ExecState) error {
	for _, to := range []proto.ExecState{proto.StateFetching, proto.StateActivating, proto.StateVerifying, proto.StateSucceeded} {
		if err := n.step(d, from, to); err != nil {
			return err
		}
		from = to
	}
	n.current, n.applied = d.Toplevel, d.Gen
	return nil
}

// step sends the event and the retained status of one transition.
func (n *thinNode) step(d *proto.Desired, from, to proto.ExecState) error {
	k := setKey{rollout: d.Rollout, gen: d.Gen, toplevel: d.Toplevel, current: n.current, groups: strings.Join(n.groups, ",")}
	ms, err := n.fleet.set(k)
	if err != nil {
		return err
	}
	if err := n.publish(n.fleet.tp.NodeEvents(n.name), ms.event[[2]proto.ExecState{from, to}].message(n.name), false); err != nil {
		return err
	}
	return n.sendStatus(ms, k, to)
}

// sendStatus publishes the retained status of state from ms, k's set.
func (n *thinNode) sendStatus(ms *msgSet, k setKey, state proto.ExecState) error {
	n.last, n.state = k, state
	return n.publish(n.fleet.tp.NodeStatus(n.name), ms.status[state].message(n.name), true)
}

func (n *thinNode) presence(online bool) ([]byte, error) {
	p := &proto.Presence{Node: n.name, Online: online, Since: time.Now().UnixMilli()}
	p.Stamp(n.name, time.Now())
	return proto.Seal(p)
}

// publish sends a QoS 1 message without waiting for its PUBACK (the
// reader drops acknowledgements).
func (n *thinNode) publish(topic string, payload []byte, retain bool) error {
	return n.write(&packets.Publish{Topic: topic, Payload: payload, QoS: 1, Retain: retain, PacketID: n.nextID(), Properties: &packets.Properties{}})
}

func (n *thinNode) nextID() uint16 {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	n.pid++
	if n.pid == 0 {
		n.pid = 1
	}
	return n.pid
}

func (n *thinNode) write(p io.WriterTo) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if _, err := p.WriteTo(n.w); err != nil {
		return err
	}
	n.written = time.Now()
	return n.w.Flush()
}

func (n *thinNode) lastWrite() time.Time {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	return n.written
}
