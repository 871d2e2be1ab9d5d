package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards every connection accepted on its listener to a target
// address, through the faults currently set.
type Proxy struct {
	l      net.Listener
	target string
	dial   func(addr string) (net.Conn, error)

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	delay     time.Duration
	blackhole bool
	refuse    bool
	accepted  int
	closed    bool
	wg        sync.WaitGroup
}

// New starts forwarding connections accepted on l to target (host:port).
func New(l net.Listener, target string) *Proxy {
	p := &Proxy{l: l, target: target, conns: map[net.Conn]struct{}{},
		dial: func(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }}
	p.wg.Add(1)
	go p.serve()
	return p
}

// Listen listens on addr (e.g. "127.0.0.1:0") and forwards to target.
func Listen(addr, target string) (*Proxy, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return New(l, target), nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// SetDelay delays every chunk, in each direction, by d (0: none).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Blackhole, while on, drops every byte in both directions without
// closing anything: each side believes the connection is up.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// Refuse, while on, closes new connections at once.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// CutAll closes every open connection, as a restarting router would.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Accepted counts the connections accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.l.Close()
	p.CutAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		p.accepted++
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *Proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.closed {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	defer client.Close()
	if !p.track(client, true) {
		return
	}
	defer p.track(client, false)
	server, err := p.dial(p.target)
	if err != nil {
		return
	}
	defer server.Close()
	if !p.track(server, true) {
		return
	}
	defer p.track(server, false)
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client); done <- struct{}{} }()
	go func() { p.pipe(client, server); done <- struct{}{} }()
	<-done
	// One direction ended: end both, as a TCP proxy does.
	client.Close()
	server.Close()
	<-done
}

// pipe copies src to dst chunk by chunk, applying the current faults.
func (p *Proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			delay, hole := p.delay, p.blackhole
			p.mu.Unlock()
			if delay > 0 {
				time.Sleep(delay)
			}
			if !hole {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
