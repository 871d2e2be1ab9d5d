package doccheck

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func tree() *cobra.Command {
	root := &cobra.Command{Use: "tool"}
	root.PersistentFlags().String("config", "", "")
	run := func(*cobra.Command, []string) error { return nil }
	pub := &cobra.Command{Use: "publish", Args: cobra.NoArgs, RunE: run, Example: "  tool publish --on @web\n  tool publish --nope"}
	pub.Flags().String("on", "", "")
	pub.Flags().Bool("detach", false, "")
	pub.Flags().StringP("key", "k", "", "")
	ro := &cobra.Command{Use: "rollout"}
	show := &cobra.Command{Use: "show ID", Args: cobra.ExactArgs(1), RunE: run}
	ro.AddCommand(show)
	root.AddCommand(pub, ro)
	return root
}

func TestCheck(t *testing.T) {
	root := tree()
	for _, tc := range []struct {
		line   string
		inline bool
		want   string // "" = fine
	}{
		{"tool publish --on @web --detach", false, ""},
		{"tool --config x.yaml publish --on=@web -k op.key", false, ""},
		{"tool publish --help", false, ""},
		{"tool rollout show r-1", false, ""},
		{"tool rollout show", true, ""},
		{"tool rollout show", false, "accepts 1 arg"},
		{"tool rollout", false, "needs a subcommand"},
		{"tool publish --onn @web", false, "has no flag --onn"},
		{"tool publish -x", false, "has no flag -x"},
		{"tool publish extra", false, "unknown command"},
		{"tool frobnicate", false, "unknown command"},
	} {
		found := Find(tc.line, "tool")
		if len(found) != 1 {
			t.Fatalf("%q: found %d runs", tc.line, len(found))
		}
		err := Check(root, Invocation{Args: found[0], Inline: tc.inline})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.line, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one saying %q", tc.line, err, tc.want)
		}
	}
}

func TestFind(t *testing.T) {
	for line, want := range map[string][][]string{
		`LAB_X=1 sudo bin/tool publish --on "@web,db" | tee log`:       {{"publish", "--on", "@web,db"}},
		`tool rollout show r-1 && ./result/bin/tool publish # comment`: {{"rollout", "show", "r-1"}, {"publish"}},
		`echo $(tool publish --on 'a b') > out.txt 2>&1`:               {{"publish", "--on", "a b"}},
		`tool: cannot connect`: nil,
		`mytool publish`:       nil,
	} {
		if got := Find(line, "tool"); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("Find(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestMarkdownAndExamples(t *testing.T) {
	page := "Run `tool rollout show` later.\n```sh\ntool publish --on @web \\\n  --detach\n```\n```\n$ tool rollout show r-1\ntool rollout show is output here\n```\n```yaml\ntool: publish --bogus\n```\n"
	got := Markdown("p.md", page, "tool")
	var lines []string
	for _, inv := range got {
		lines = append(lines, inv.Where+" "+strings.Join(inv.Args, " "))
	}
	want := []string{"p.md:3 publish --on @web --detach", "p.md:7 rollout show r-1", "p.md:1 rollout show"}
	if !slices.Equal(lines, want) {
		t.Errorf("Markdown found %q, want %q", lines, want)
	}
	if !got[2].Inline || got[0].Inline {
		t.Errorf("inline marks: %+v", got)
	}
	ex := Examples(tree(), "tool")
	if len(ex) != 2 || Check(tree(), ex[0]) != nil || Check(tree(), ex[1]) == nil {
		t.Errorf("examples %+v: want the first fine and the second refused", ex)
	}
}
