package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboardFile is the Grafana dashboard lab ships.
var dashboardFile = filepath.Join("..", "..", "docs", "grafana-dashboard.json")

type grafanaDashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	SchemaVersion int            `json:"schemaVersion"`
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string            `json:"name"`
			Datasource grafanaDatasource `json:"datasource"`
			Query      struct {
				Query string `json:"query"`
			} `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaDatasource struct{ Type, UID string }

type grafanaPanel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource grafanaDatasource `json:"datasource"`
	Targets    []struct {
		Expr       string            `json:"expr"`
		RefID      string            `json:"refId"`
		Datasource grafanaDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

// labName finds the metric names of lab in PromQL.
var labName = regexp.MustCompile(`\blab_[a-z_]+`)

// The dashboard is Grafana JSON whose panels each have a title and a
// query on the ${DS_PROMETHEUS} input, and every lab_ metric its queries
// (and variables) name is one that the fleet's, the broker's or labd's
// collector really exposes: it can never graph a metric that does not
// exist. It also shows what issue 17 asks of it.
func TestGrafanaDashboardNamesRealMetrics(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 36 || d.Title == "" || d.UID == "" {
		t.Errorf("schemaVersion %d, title %q, uid %q", d.SchemaVersion, d.Title, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one prometheus datasource DS_PROMETHEUS", d.Inputs)
	}

	real := map[string]string{} // metric name → collector
	for source, gs := range exposed(t) {
		for _, g := range gs {
			for _, n := range names(t, g) {
				real[n] = source
			}
		}
	}
	used := map[string]bool{}
	use := func(where, expr string) {
		if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
			t.Errorf("%s: unbalanced brackets in %q", where, expr)
		}
		for _, n := range labName.FindAllString(expr, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suffix); ok && real[n] == "" {
					n = base
				}
			}
			used[n] = true
			if real[n] == "" {
				t.Errorf("%s: %q names %s, which no collector exposes", where, expr, n)
			}
		}
	}
	ds := func(where string, got grafanaDatasource) {
		if got.Type != "prometheus" || got.UID != "${DS_PROMETHEUS}" {
			t.Errorf("%s: datasource %+v, want prometheus ${DS_PROMETHEUS}", where, got)
		}
	}
	for _, v := range d.Templating.List {
		ds("variable "+v.Name, v.Datasource)
		use("variable "+v.Name, v.Query.Query)
	}
	ids := map[int]bool{}
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			where := p.Title
			if p.Title == "" {
				where = "panel " + p.Type
				t.Errorf("panel %d (%s) has no title", p.ID, p.Type)
			}
			if ids[p.ID] {
				t.Errorf("%s: id %d used twice", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			ds(where, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("%s: no query", where)
			}
			for _, tg := range p.Targets {
				ds(where+" "+tg.RefID, tg.Datasource)
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s %s: empty expr", where, tg.RefID)
				}
				use(where, tg.Expr)
			}
		}
	}
	walk(d.Panels)

	// What the dashboard is for: the fleet, rollouts, the broker.
	for _, want := range []string{"lab_machine_online", "lab_machine_attention", "lab_machine_execution_state", "lab_machine_applied_generation",
		"lab_machine_health_check_ok", "lab_machine_needs_reboot", "lab_machine_last_seen_timestamp_seconds",
		"lab_rollout_targets", "lab_rollout_duration_seconds", "lab_rollout_halted",
		"lab_broker_clients_connected", "lab_broker_messages_received_total", "lab_broker_messages_sent_total", "lab_broker_messages_dropped_total",
		"lab_broker_retained_messages", "lab_broker_received_bytes_total", "lab_broker_sent_bytes_total",
		"lab_node_broker_connected", "lab_node_executions_total"} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}
	var all []string
	for n := range used {
		all = append(all, n)
	}
	slices.Sort(all)
	t.Logf("%d panels use %d lab metrics: %v", len(ids), len(all), all)
}
