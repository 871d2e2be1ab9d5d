// Package faultproxy is a small TCP proxy that injects the faults a real
// network has and this kernel's missing netem cannot: latency per chunk,
// a blackhole that keeps connections open while dropping every byte (the
// half-open connection of a sleeping laptop or a dead NAT mapping),
// refused connections, and every connection cut at once.
//
// The fault-injection tests in integration/ put it between labd and the
// broker. It is for tests: it makes no attempt at performance.
package faultproxy
