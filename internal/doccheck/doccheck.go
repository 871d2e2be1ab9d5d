package doccheck

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
)

// Invocation is one command line found in a text.
type Invocation struct {
	Where string   // file:line, or the command whose example it is
	Text  string   // the line as written
	Args  []string // the words after the program's name
	// Inline marks code in prose: it may name a command without the
	// arguments it takes (`labctl rollout resume`).
	Inline bool
}

var (
	fenceRE  = regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")
	inlineRE = regexp.MustCompile("`([^`\n]+)`")
	envRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
)

// shellish are the fence languages that hold command lines.
var shellish = map[string]bool{"": true, "sh": true, "bash": true, "shell": true, "console": true}

// Markdown returns the invocations of prog in a Markdown page: the lines
// of its shell blocks (only the "$ " lines of a block that has any: the
// rest is output) and its inline code spans that start with prog.
func Markdown(name, page, prog string) []Invocation {
	var out []Invocation
	lineOf := func(off int) int { return 1 + strings.Count(page[:off], "\n") }
	for _, m := range fenceRE.FindAllStringSubmatchIndex(page, -1) {
		lang, body := page[m[2]:m[3]], page[m[4]:m[5]]
		if !shellish[lang] {
			continue
		}
		for _, l := range Lines(body, lineOf(m[4])) {
			for _, args := range Find(l.text, prog) {
				out = append(out, Invocation{Where: fmt.Sprintf("%s:%d", name, l.n), Text: l.text, Args: args})
			}
		}
	}
	outside := fenceRE.ReplaceAllStringFunc(page, func(s string) string { return strings.Repeat("\n", strings.Count(s, "\n")) })
	for _, m := range inlineRE.FindAllStringSubmatchIndex(outside, -1) {
		code := outside[m[2]:m[3]]
		if !strings.HasPrefix(code, prog+" ") {
			continue
		}
		for _, args := range Find(code, prog) {
			out = append(out, Invocation{Where: fmt.Sprintf("%s:%d", name, lineOf(m[2])), Text: code, Args: args, Inline: true})
		}
	}
	return out
}

// Examples returns the invocations of prog in the Example of every
// command of root's tree, and in the indented lines of its Long texts.
func Examples(root *cobra.Command, prog string) []Invocation {
	var out []Invocation
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		texts := []string{c.Example}
		for _, l := range strings.Split(c.Long, "\n") {
			if strings.HasPrefix(l, "  ") {
				texts = append(texts, l)
			}
		}
		for _, t := range texts {
			for _, l := range Lines(t, 1) {
				for _, args := range Find(l.text, prog) {
					out = append(out, Invocation{Where: c.CommandPath() + " --help", Text: l.text, Args: args})
				}
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return out
}

type line struct {
	n    int
	text string
}

// Lines splits a shell text into command lines: continuations joined,
// comments dropped, and only the "$ " lines when any line has a prompt.
func Lines(text string, first int) []line {
	raw := strings.Split(text, "\n")
	prompted := false
	for _, l := range raw {
		if strings.HasPrefix(strings.TrimSpace(l), "$ ") {
			prompted = true
		}
	}
	var out []line
	for i := 0; i < len(raw); i++ {
		n, l := first+i, strings.TrimSpace(raw[i])
		if prompted {
			var ok bool
			if l, ok = strings.CutPrefix(l, "$ "); !ok {
				continue
			}
		}
		for strings.HasSuffix(l, `\`) && i+1 < len(raw) {
			i++
			l = strings.TrimSuffix(l, `\`) + " " + strings.TrimSpace(raw[i])
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, line{n, l})
	}
	return out
}

// Find returns the argument lists of every run of prog in one shell line
// (it may be piped, chained with && or ;, or inside $(...)).
func Find(text, prog string) [][]string {
	var out [][]string
	for _, seg := range segments(text) {
		words := seg
		for len(words) > 0 && (envRE.MatchString(words[0]) || skipWords[words[0]]) {
			words = words[1:]
		}
		if len(words) == 0 || (words[0] != prog && !strings.HasSuffix(words[0], "/"+prog)) {
			continue
		}
		out = append(out, words[1:])
	}
	return out
}

// skipWords run the command that follows them.
var skipWords = map[string]bool{"sudo": true, "time": true, "exec": true, "env": true, "nohup": true, "command": true}

// segments tokenizes a shell line into simple commands: words with quotes
// removed, split at | || && ; & $( ) and backquotes; a # that starts a
// word begins a comment.
func segments(text string) [][]string {
	var segs [][]string
	var words []string
	var cur strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	endSeg := func() {
		endWord()
		if len(words) > 0 {
			segs = append(segs, words)
		}
		words = nil
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(text[i+1:], c)
			if j < 0 {
				j = len(text) - i - 1
			}
			cur.WriteString(text[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '\\' && i+1 < len(text):
			cur.WriteByte(text[i+1])
			inWord = true
			i++
		case c == ' ' || c == '\t':
			endWord()
		case c == '#' && !inWord:
			endSeg()
			return segs
		case c == '|' || c == '&' || c == ';' || c == '`' || c == ')':
			endSeg()
		case c == '$' && i+1 < len(text) && text[i+1] == '(':
			endSeg()
			i++
		case c == '>' || c == '<':
			endWord() // a redirection: its target is not an argument
			for i+1 < len(text) && (text[i+1] == '>' || text[i+1] == '&' || text[i+1] == ' ') {
				i++
			}
			j := i + 1
			for j < len(text) && text[j] != ' ' {
				j++
			}
			i = j
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	endSeg()
	return segs
}

// Check resolves an invocation against root's command tree: the
// subcommand must exist, every flag must be one it (or a parent) has, and
// (unless it is inline code) it must accept that many arguments and be
// runnable. A value may be a placeholder; only the shape is checked.
func Check(root *cobra.Command, inv Invocation) error {
	c, rest, err := root.Find(inv.Args)
	if err != nil {
		return err
	}
	var positional []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		lookup := c.Flags().Lookup
		if !strings.HasPrefix(a, "--") {
			lookup = c.Flags().ShorthandLookup
			if len(name) != 1 {
				return fmt.Errorf("%s: %s: short flags are one letter", c.CommandPath(), a)
			}
		}
		f := lookup(name)
		if f == nil {
			if strings.HasPrefix(a, "--") {
				f = c.InheritedFlags().Lookup(name)
			} else {
				f = c.InheritedFlags().ShorthandLookup(name)
			}
		}
		if f == nil && (name == "help" || name == "h" || name == "version" && c == root) {
			continue // cobra adds these when it runs
		}
		if f == nil {
			return fmt.Errorf("%s has no flag %s", c.CommandPath(), a)
		}
		if !hasValue && f.NoOptDefVal == "" && i+1 < len(rest) {
			i++ // its value
		}
	}
	if inv.Inline {
		return nil
	}
	if c.Args != nil {
		if err := c.Args(c, positional); err != nil {
			return fmt.Errorf("%s %s: %w", c.CommandPath(), strings.Join(positional, " "), err)
		}
	}
	if !c.Runnable() && len(c.Commands()) > 0 {
		return fmt.Errorf("%s needs a subcommand (%s)", c.CommandPath(), names(c.Commands()))
	}
	return nil
}

func names(cs []*cobra.Command) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name())
	}
	return strings.Join(n, ", ")
}
