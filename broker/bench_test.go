package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawConnect opens an MQTT v5 connection with a minimal CONNECT and waits
// for the CONNACK, without any client library.
func rawConnect(addr, id string) (net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0} // clean start, keepalive 60 s, no properties
	pkt := append([]byte{0x10, byte(len(vh) + 2 + len(id))}, vh...)
	pkt = append(pkt, byte(len(id)>>8), byte(len(id)))
	pkt = append(pkt, id...)
	if _, err := conn.Write(pkt); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a lost CONNACK fails, never hangs
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(conn, hdr); err != nil || hdr[0] != 0x20 {
		conn.Close()
		return nil, fmt.Errorf("connack: %x %v", hdr, err)
	}
	_, err = io.CopyN(io.Discard, conn, int64(hdr[1]))
	return conn, err
}

// memStats returns the runtime's memory statistics after a few
// collections (stacks shrink by half per collection at most).
func memStats() runtime.MemStats {
	for range 4 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// nodeConnect connects like labd does, without any client library: a
// durable session (a day's session expiry), four subscriptions and one
// retained QoS 1 status; what the broker sends back is read and dropped.
func nodeConnect(addr, id string) (net.Conn, error) {
	var b bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id},
		Properties: packets.Properties{SessionExpiryInterval: 86400, SessionExpiryIntervalFlag: true}}
	subscribe := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "lab/v1/node/" + id + "/desired", Qos: 1}, {Filter: "lab/v1/node/" + id + "/cmd", Qos: 1},
			{Filter: "lab/v1/all/cmd", Qos: 1}, {Filter: "lab/v1/group/g/gate", Qos: 1}}}
	status := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, ProtocolVersion: 5, PacketID: 2,
		TopicName: "lab/v1/node/" + id + "/status", Payload: make([]byte, 300)}
	for _, err := range []error{connect.ConnectEncode(&b), subscribe.SubscribeEncode(&b), status.PublishEncode(&b)} {
		if err != nil {
			return nil, err
		}
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		conn.Close()
		return nil, err
	}
	// Until the status is acknowledged (and so retained): then the
	// broker's work for this node is done.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	for {
		first, err := r.ReadByte()
		if err == nil {
			var size uint64
			if size, err = binary.ReadUvarint(r); err == nil { // MQTT's remaining length is this varint
				_, err = r.Discard(int(size))
			}
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s: waiting for the status's PUBACK: %w", id, err)
		}
		if first>>4 == packets.Puback {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	go func() { _, _ = io.Copy(io.Discard, r) }()
	return conn, nil
}

// BenchmarkIdleConnection reports what the broker holds per idle
// connection, after garbage collection: heap (broker and client side of
// each socket; the client side is a few hundred bytes) and goroutine
// stacks (mochi's two per client, and the benchmark's one reader per node
// connection, ~2 KB). "raw" connections only connect; "node" connections
// connect, subscribe and publish a retained status as labd does, with the
// store on. Run: go test -run '^$' -bench IdleConnection ./broker/
func BenchmarkIdleConnection(b *testing.B) {
	const n = 500
	for _, tc := range []struct {
		name         string
		queue, bufsz int
		node         bool
	}{{"raw/lab-defaults", 0, 0, false}, {"raw/mochi-defaults", 8192, 2048, false}, {"raw/queue-256", 256, 0, false},
		{"node/lab-defaults", 0, 0, true}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				cfg := Config{Listen: "127.0.0.1:0", ClientQueue: tc.queue, ClientBufSize: tc.bufsz, Logger: slog.New(slog.DiscardHandler)}
				dial := rawConnect
				if tc.node {
					cfg.DataDir, dial = b.TempDir(), nodeConnect
				}
				s, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Start(); err != nil {
					b.Fatal(err)
				}
				before := memStats()
				conns := make([]net.Conn, 0, n)
				for i := range n {
					c, err := dial(s.Addr(), fmt.Sprintf("idle-%d", i))
					if err != nil {
						b.Fatal(err)
					}
					conns = append(conns, c)
				}
				after := memStats()
				b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/conn")
				b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/conn")
				for _, c := range conns {
					c.Close()
				}
				closeWithin(b, s, 30*time.Second)
			}
		})
	}
}

// closeWithin closes the broker, failing with every goroutine's stack if
// that takes longer than d (a CI run once hung in this benchmark).
func closeWithin(b testing.TB, s *Server, d time.Duration) {
	b.Helper()
	done := make(chan struct{})
	go func() { _ = s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		b.Fatalf("broker Close did not return within %s:\n%s", d, buf[:runtime.Stack(buf, true)])
	}
}

// Closing the broker while its clients are leaving returns: mochi v2.7.9's
// own Close could deadlock there (a read lock taken twice while a leaving
// client waited for the write lock); Server.Close disconnects the clients
// itself first. The benchmark above hung once in CI before that.
func TestCloseWhileClientsLeave(t *testing.T) {
	for round := range 40 {
		s, err := New(Config{Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		conns := make([]net.Conn, 0, 200)
		for i := range 200 {
			c, err := rawConnect(s.Addr(), fmt.Sprintf("leave-%d-%d", round, i))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
		closeWithin(t, s, 30*time.Second)
	}
}
