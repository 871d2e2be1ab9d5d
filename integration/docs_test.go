package integration

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The documentation's shell recipes are run as written: a block between
//
//	<!-- begin: NAME -->
//	```sh
//	...
//	```
//	<!-- end: NAME -->
//
// in a Markdown file is what docBlock returns, so the test and the page
// cannot drift apart.

// docBlock returns the shell code of the block NAME in the repository file
// doc (e.g. "README.md"), without its fences.
func docBlock(t *testing.T, doc, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), doc))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	begin, end := "<!-- begin: "+name+" -->", "<!-- end: "+name+" -->"
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no block between %q and %q", doc, begin, end)
	}
	block := strings.TrimSpace(text[i+len(begin) : j])
	if !strings.HasPrefix(block, "```sh\n") || !strings.HasSuffix(block, "\n```") {
		t.Fatalf("%s: block %s is not one ```sh fenced block:\n%s", doc, name, block)
	}
	return strings.TrimSuffix(strings.TrimPrefix(block, "```sh\n"), "```")
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
