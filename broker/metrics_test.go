package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
)

// The broker's collector exports mochi's own counters: clients, messages
// in and out, retained messages and bytes, read at each scrape, and passes
// the registry's pedantic checks (names, types, help).
func TestCollectorExportsMochiCounters(t *testing.T) {
	s := startServer(t, Config{})
	sub := connect(t, s.Addr(), clientOpts{id: "watcher", filter: "lab/test/#"})
	pub := connect(t, s.Addr(), clientOpts{id: "writer"})
	time.Sleep(100 * time.Millisecond) // the watcher's subscription
	for i := range 3 {
		topic := fmt.Sprintf("lab/test/%d", i)
		if _, err := pub.cm.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte("hello")}); err != nil {
			t.Fatal(err)
		}
		sub.expect(t, topic, "hello")
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	values := func() (map[string]float64, error) {
		mfs, err := reg.Gather()
		if err != nil {
			return nil, err
		}
		v := map[string]float64{}
		for _, mf := range mfs {
			m := mf.GetMetric()[0]
			v[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return v, nil
	}
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		v, err := values()
		if err != nil {
			return err
		}
		for name, atLeast := range map[string]float64{
			"lab_broker_clients_connected": 2, "lab_broker_retained_messages": 3,
			"lab_broker_messages_received_total": 3, "lab_broker_messages_sent_total": 3,
			"lab_broker_received_bytes_total": 3 * 5, "lab_broker_sent_bytes_total": 3 * 5,
			"lab_broker_subscriptions": 1,
		} {
			if v[name] < atLeast {
				return fmt.Errorf("%s = %v, want at least %v", name, v[name], atLeast)
			}
		}
		if _, ok := v["lab_broker_messages_dropped_total"]; !ok {
			return fmt.Errorf("no lab_broker_messages_dropped_total")
		}
		return nil
	})
	pub.disconnect()
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		if v, _ := values(); v["lab_broker_clients_connected"] != 1 {
			return fmt.Errorf("clients_connected %v after one left, want 1", v["lab_broker_clients_connected"])
		}
		return nil
	})
}
