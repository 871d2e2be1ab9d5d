package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/proto"
)

// The documentation's shell recipes are run as written: a block between
//
//	<!-- begin: NAME -->   (or <!-- begin: NAME (a note) -->)
//	```sh
//	...
//	```
//	<!-- end: NAME -->
//
// in a Markdown file is what docBlock returns, so the test and the page
// cannot drift apart.

// docBlock returns the code of the block NAME in the repository file doc
// (e.g. "README.md"), without its fences.
func docBlock(t *testing.T, doc, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), doc))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	// A marker may say more after the name: <!-- begin: NAME (why) -->.
	begin, end := "<!-- begin: "+name+" ", "<!-- end: "+name+" "
	i, j := strings.Index(text, begin), strings.Index(text, end)
	k := strings.Index(text[max(i, 0):], "-->")
	if i < 0 || j < i || k < 0 {
		t.Fatalf("%s has no block between %q and %q", doc, begin+"-->", end+"-->")
	}
	block := strings.TrimSpace(text[i+k+len("-->") : j])
	first, rest, _ := strings.Cut(block, "\n")
	if !strings.HasPrefix(first, "```") || !strings.HasSuffix(rest, "\n```") || strings.Contains(strings.TrimSuffix(rest, "```"), "```") {
		t.Fatalf("%s: block %s is not one fenced code block:\n%s", doc, name, block)
	}
	return strings.TrimSuffix(rest, "```")
}

// repoRoot is the module root (the tests run in integration/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// copyRepo copies the repository's tracked files (as they are in the work
// tree: what a flake's `self` and a fresh clone see) to a temporary
// directory and returns it, so a test may build, vendor or write bin/ there
// without touching the repository. Without git it copies the tree minus
// .git, vendor/ and bin/.
func copyRepo(t *testing.T) string {
	t.Helper()
	root, dst := repoRoot(t), filepath.Join(t.TempDir(), "lab")
	var files []string
	if out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output(); err == nil {
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
	} else {
		t.Logf("git ls-files: %v; copying the whole tree", err)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() && (rel == ".git" || rel == "vendor" || rel == "bin") {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				files = append(files, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		src := filepath.Join(root, f)
		fi, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "go.mod")); err != nil {
		t.Fatalf("copy of the repository has no go.mod: %v", err)
	}
	return dst
}

// goEnv is the Go toolchain's caches and flags as this process sees them,
// for commands that run with another HOME: the module cache (offline
// builds) and the build cache stay the caller's.
func goEnv(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOPATH", "GOMODCACHE", "GOCACHE", "GOFLAGS", "GOPROXY").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	names := []string{"GOPATH", "GOMODCACHE", "GOCACHE", "GOFLAGS", "GOPROXY"}
	if len(lines) != len(names) {
		t.Fatalf("go env printed %q", out)
	}
	env := []string{"GOWORK=off"}
	for i, n := range names {
		env = append(env, n+"="+lines[i])
	}
	return env
}

// runIn runs a command in dir with extra environment and returns its
// stdout; it fails the test, with stderr, when the command fails.
func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s%s", name, strings.Join(args, " "), dir, err, out.String(), errb.String())
	}
	return out.String()
}

// README's "Try it by hand", as pasted into a root shell in a fresh clone:
// it builds bin/, runs a broker and one labd on a scratch profile, rolls
// generation 2 of a fake system out and cleans up. Only the port differs
// (a free one instead of 1883, in the block and in LAB_BROKER_URL, which
// labctl reads instead of its default mqtt://127.0.0.1:1883).
func TestReadmeTryItByHand(t *testing.T) {
	requireTools(t, "bash", "go", "nix-build", "nix-env", "nix-store")
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the README's block runs as root (Debian's nix-bin has no daemon for other users); CI runs as root")
	}
	block := docBlock(t, "README.md", "try-it-by-hand")
	if !strings.Contains(block, "127.0.0.1:1883") {
		t.Fatalf("the block no longer uses 127.0.0.1:1883; update this test's port substitution:\n%s", block)
	}
	port := freePort(t)
	block = strings.ReplaceAll(block, "127.0.0.1:1883", fmt.Sprintf("127.0.0.1:%d", port))

	clone, home, tmp := copyRepo(t), t.TempDir(), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", block)
	cmd.Dir = clone
	cmd.Env = append(append(withoutLabEnv(os.Environ()), goEnv(t)...),
		"HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"), "TMPDIR="+tmp,
		fmt.Sprintf("LAB_BROKER=mqtt://127.0.0.1:%d", port))
	// Its own process group, so that nothing it starts outlives the test,
	// and its output in files: a background process that keeps a pipe open
	// cannot make Wait hang.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout, stderr := logFile(t, "stdout"), logFile(t, "stderr")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	err := cmd.Wait()
	// Whatever the block started and did not stop is still in the group.
	left := syscall.Kill(-pgid, 0)
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	out, errOut := readLog(t, stdout), readLog(t, stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	if err != nil {
		t.Fatalf("the README block failed: %v", err)
	}
	if !errors.Is(left, syscall.ESRCH) {
		t.Errorf("the block left processes behind (kill -0 -%d: %v)", pgid, left)
	}
	for _, want := range []string{
		"labd config ok: node n1",
		"1     n1    succeeded", // publish's table
		" succeeded: 1 targets in 1 wave, 1 succeeded",
		"n1    yes     succeeded", // status
		"switch:ok",
		"25.05.2-fake",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the block left its scratch directory behind: %s/%s", tmp, left[0].Name())
	}
	if _, err := os.Stat(filepath.Join(clone, "bin", "labd")); err != nil {
		t.Errorf("the block did not build bin/labd in the clone: %v", err)
	}
}

func logFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readLog(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docs/security.md's EMQX rules grant each role exactly what the broker's
// own rules do (as `labctl acl export` writes them for mosquitto), and its
// table's viewer row says the same. Identities as on the page: ops
// (controller), grafana (viewer), web (node in servers).
func TestSecurityDocEMQXRulesMatchTheBroker(t *testing.T) {
	var f access.File
	for _, id := range []access.Identity{
		{Name: "ops", Role: access.RoleController},
		{Name: "grafana", Role: access.RoleViewer},
		{Name: "web", Role: access.RoleNode, Groups: []string{"servers"}},
	} {
		h, err := access.HashPassword([]byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		id.PasswordHash = h
		f.Put(id)
	}
	table, err := access.New(f, proto.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	broker := map[string][]string{} // "user publish|subscribe" → topics, %u as ${username}
	user := ""
	for _, l := range strings.Split(table.MosquittoACL(), "\n") {
		fs := strings.Fields(l)
		switch {
		case len(fs) == 2 && fs[0] == "user":
			user = fs[1]
		case len(fs) == 3 && (fs[0] == "topic" || fs[0] == "pattern"):
			who := user
			if fs[0] == "pattern" {
				who = "web" // every node
			}
			op := map[string]string{"read": "subscribe", "write": "publish"}[fs[1]]
			broker[who+" "+op] = append(broker[who+" "+op], strings.ReplaceAll(fs[2], "%u", "${username}"))
		}
	}

	doc := readRepoFile(t, "docs/security.md")
	i := strings.Index(doc, "```erlang\n")
	j := strings.Index(doc[i+1:], "```\n")
	if i < 0 || j < 0 {
		t.Fatal("docs/security.md has no ```erlang block")
	}
	rule := regexp.MustCompile(`\{allow, (all|\{username, "([a-z0-9-]+)"\}), (publish|subscribe), \[([^\]]*)\]\}\.`)
	quoted := regexp.MustCompile(`"([^"]+)"`)
	emqx := map[string][]string{}
	for _, m := range rule.FindAllStringSubmatch(doc[i:i+1+j], -1) {
		who := m[2]
		if m[1] == "all" {
			who = "web" // what every node may do
		}
		for _, q := range quoted.FindAllStringSubmatch(m[4], -1) {
			emqx[who+" "+m[3]] = append(emqx[who+" "+m[3]], q[1])
		}
	}
	for _, k := range []string{"ops publish", "ops subscribe", "grafana publish", "grafana subscribe", "web publish", "web subscribe"} {
		if got, want := sorted(emqx[k]), sorted(broker[k]); got != want {
			t.Errorf("EMQX rules for %s:\n  %s\nthe broker's:\n  %s", k, got, want)
		}
	}
	row := regexp.MustCompile("(?m)^\\| viewer \\| ([^|]*) \\| (.*) \\|$").FindStringSubmatch(doc)
	if row == nil {
		t.Fatal("docs/security.md's table has no viewer row")
	}
	for i, op := range []string{"publish", "subscribe"} {
		var cells []string
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(row[i+1], -1) {
			cells = append(cells, m[1])
		}
		if got, want := sorted(cells), sorted(broker["grafana "+op]); got != want {
			t.Errorf("the table's viewer row, %s:\n  %s\nthe broker's:\n  %s", op, got, want)
		}
	}
}

func sorted(s []string) string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return strings.Join(c, " ")
}

// The user docs cite only what the repository has: no notes that live
// outside it (RECIPES.md is the developers' machine notes, not shipped),
// and every repository path they name in backticks exists.
func TestDocsCiteOnlyWhatTheRepositoryHas(t *testing.T) {
	root := repoRoot(t)
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	docs = append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "BENCHMARKS.md"))
	top := map[string]bool{}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			top[e.Name()] = true
		}
	}
	pathRe := regexp.MustCompile("`([a-z][a-z0-9_-]*/[A-Za-z0-9_./-]*)`")
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, doc)
		for n, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "RECIPES") {
				t.Errorf("%s:%d cites RECIPES, which is not in the repository: %s", rel, n+1, strings.TrimSpace(line))
			}
			for _, m := range pathRe.FindAllStringSubmatch(line, -1) {
				p := strings.TrimSuffix(m[1], "/")
				if first, _, _ := strings.Cut(p, "/"); !top[first] || strings.Contains(p, "...") {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, p)); err != nil {
					t.Errorf("%s:%d names `%s`, which the repository does not have", rel, n+1, m[1])
				}
			}
		}
	}
}

// withoutLabEnv drops the LAB_* variables of the test's own environment: a
// shell that pastes the README has none.
func withoutLabEnv(env []string) []string {
	var keep []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LAB_") {
			keep = append(keep, kv)
		}
	}
	return keep
}
