package faultproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes lines back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, timeout time.Duration) (string, error) {
	t.Helper()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	return r.ReadString('\n')
}

func TestProxyFaults(t *testing.T) {
	p, err := Listen("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if s, err := roundTrip(t, c, r, 2*time.Second); err != nil || s != "ping\n" {
		t.Fatalf("plain round trip: %q %v", s, err)
	}

	// Latency: each direction waits.
	p.SetDelay(150 * time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(t, c, r, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("round trip with 150 ms each way took %s", el)
	}
	p.SetDelay(0)

	// Blackhole: nothing comes back, but the connection stays open.
	p.Blackhole(true)
	if _, err := roundTrip(t, c, r, 300*time.Millisecond); err == nil {
		t.Fatal("an answer came through the blackhole")
	}
	p.Blackhole(false)
	r = bufio.NewReader(c)
	if s, err := roundTrip(t, c, r, 2*time.Second); err != nil || s != "ping\n" {
		t.Fatalf("after the blackhole: %q %v (the connection must have stayed open)", s, err)
	}

	// CutAll closes the connection; Refuse closes new ones.
	p.CutAll()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("read succeeded on a cut connection")
	}
	p.Refuse(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c2.Read(make([]byte, 1)); err == nil {
			t.Fatal("a refused connection was forwarded")
		}
		c2.Close()
	}
	p.Refuse(false)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if s, err := roundTrip(t, c3, bufio.NewReader(c3), 2*time.Second); err != nil || s != "ping\n" {
		t.Fatalf("after refuse off: %q %v", s, err)
	}
	if n := p.Accepted(); n != 3 {
		t.Errorf("accepted %d connections, want 3", n)
	}
}
