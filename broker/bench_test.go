package broker

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
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
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(conn, hdr); err != nil || hdr[0] != 0x20 {
		conn.Close()
		return nil, fmt.Errorf("connack: %x %v", hdr, err)
	}
	_, err = io.CopyN(io.Discard, conn, int64(hdr[1]))
	return conn, err
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkIdleConnectionHeap reports the heap held per idle connection
// (broker and client side of the socket together; the client side is a few
// hundred bytes). Run: go test -run '^$' -bench IdleConnectionHeap ./broker/
func BenchmarkIdleConnectionHeap(b *testing.B) {
	const n = 500
	for _, tc := range []struct {
		name         string
		queue, bufsz int
	}{{"lab-defaults", 0, 0}, {"mochi-defaults", 8192, 2048}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				s, err := New(Config{Listen: "127.0.0.1:0", ClientQueue: tc.queue, ClientBufSize: tc.bufsz,
					Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Start(); err != nil {
					b.Fatal(err)
				}
				before := heapInUse()
				conns := make([]net.Conn, 0, n)
				for i := range n {
					c, err := rawConnect(s.Addr(), fmt.Sprintf("idle-%d", i))
					if err != nil {
						b.Fatal(err)
					}
					conns = append(conns, c)
				}
				b.ReportMetric(float64(heapInUse()-before)/n, "B/conn")
				for _, c := range conns {
					c.Close()
				}
				_ = s.Close()
			}
		})
	}
}
