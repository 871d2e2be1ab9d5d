package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lab-fleet/lab/proto"
)

// artifactDir is where browser tests save their screenshots:
// $LAB_ARTIFACTS, else <tmp>/lab-artifacts (scripts/test prints it).
func artifactDir(t *testing.T) string {
	dir := os.Getenv("LAB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "lab-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newBrowser starts Debian's chromium, headless, for one test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	requireTools(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath("chromium"),
		chromedp.NoSandbox, // CI runs as root
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// browserEventually evaluates a JavaScript condition until it is true.
func browserEventually(t *testing.T, ctx context.Context, total time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
			t.Fatalf("timed out after %s waiting in the browser for %s (last error %v); the page:\n%s", total, what, err, html)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The dashboard in a real browser against a real broker, controller
// service and labd processes: it shows every machine, follows a rollout
// live without a reload, and shows the rollout's waves and a machine's
// generations and events.
func TestDashboardInABrowser(t *testing.T) {
	if externalBroker() != "" {
		t.Skip("the dashboard is labctl broker's; the mosquitto pass runs labctl controller (its --http is tested by the same code)")
	}
	ctx := newBrowser(t)
	port := freePort(t)
	slow := []string{"--arg", "sleepSwitch", "1"}
	f := newServiceFleetArgs(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": slow, "n2": slow, "n3": slow},
		"--http", fmt.Sprintf("127.0.0.1:%d", port))
	f.startAll() // and waits until each is online
	url := fmt.Sprintf("http://localhost:%d/", port)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	browserEventually(t, ctx, 20*time.Second, "3 machines, online", `document.querySelectorAll("#machines tbody tr").length === 3 &&
		[...document.querySelectorAll("#machines tbody tr")].every(r => r.textContent.includes("online"))`)
	browserEventually(t, ctx, 5*time.Second, "the live stream connected", `document.querySelector("#live").textContent === "live"`)
	screenshot(t, ctx, "dashboard-fleet-before.png")

	// A marker that a reload would lose: the page must update in place.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	code, so, se := f.Labctl(f.publishArgs("r-dash", "--strategy", "rolling", "--batch", "1", "--detach")...)
	if code != 0 {
		t.Fatalf("publish --detach: exit %d\n%s%s", code, so, se)
	}
	browserEventually(t, ctx, 60*time.Second, "a machine in a running state", `[...document.querySelectorAll("#machines tbody tr")].some(r =>
		["queued", "fetching", "activating", "verifying"].includes(r.dataset.state))`)
	browserEventually(t, ctx, 10*time.Second, "the rollout listed with its progress", `document.querySelector('.rollout[data-rollout="r-dash"]') !== null`)
	browserEventually(t, ctx, 60*time.Second, "the rollout's bar showing progress", `document.querySelector('.rollout[data-rollout="r-dash"] .bar .s').getBoundingClientRect().width > 0`)
	screenshot(t, ctx, "dashboard-fleet-during.png")
	browserEventually(t, ctx, 90*time.Second, "every machine succeeded", `[...document.querySelectorAll("#machines tbody tr")].filter(r => r.dataset.state === "succeeded").length === 3`)
	if notReloaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true`)); err != nil || !notReloaded {
		t.Fatalf("the page was reloaded (or the check failed: %v): it must update live", err)
	}
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-dash", proto.StateSucceeded, 10*time.Second)
	}
	screenshot(t, ctx, "dashboard-fleet-after.png")

	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/rollout/r-dash")); err != nil {
		t.Fatal(err)
	}
	browserEventually(t, ctx, 15*time.Second, "the rollout page: 3 waves, 3 targets succeeded, a timeline",
		`document.querySelectorAll(".wave").length === 3 &&
		 [...document.querySelectorAll("#targets tbody tr")].filter(r => r.dataset.state === "succeeded").length === 3 &&
		 document.querySelectorAll(".timeline tr").length >= 3 && document.querySelector("#summary").textContent.includes("3/3 succeeded") &&
		 [...document.querySelectorAll(".wave .bar .s")].every(b => b.getBoundingClientRect().width > 100) &&
		 [...document.querySelectorAll("#targets tbody tr")].map(r => r.cells[1].textContent).join() === "1,2,3"`)
	screenshot(t, ctx, "dashboard-rollout.png")

	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/machine/n2")); err != nil {
		t.Fatal(err)
	}
	gen2 := strings.TrimPrefix(f.gen2["n2"], "/nix/store/")[33:]
	browserEventually(t, ctx, 15*time.Second, "the machine page: 2 generations, the current one "+gen2+", events",
		fmt.Sprintf(`document.querySelectorAll("#generations tbody tr").length === 2 &&
		 document.querySelector("#generations tbody tr").textContent.includes(%q) &&
		 document.querySelector("#generations tbody tr").textContent.includes("current") &&
		 document.querySelectorAll(".timeline tr").length >= 2`, gen2))
	screenshot(t, ctx, "dashboard-machine.png")

	// A phone's width: the fleet page still reads, for a look at the
	// screenshot.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844), chromedp.Navigate(url+"#/")); err != nil {
		t.Fatal(err)
	}
	browserEventually(t, ctx, 15*time.Second, "the fleet page at a phone's width, no wider than the screen",
		`document.querySelectorAll("tr[data-node]").length === 3 && document.documentElement.scrollWidth <= window.innerWidth`)
	screenshot(t, ctx, "dashboard-fleet-narrow.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/rollout/r-dash")); err != nil {
		t.Fatal(err)
	}
	browserEventually(t, ctx, 15*time.Second, "the rollout page at a phone's width, no wider than the screen",
		`document.querySelectorAll(".wave").length === 3 && document.documentElement.scrollWidth <= window.innerWidth`)
	screenshot(t, ctx, "dashboard-rollout-narrow.png")
}
