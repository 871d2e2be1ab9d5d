package configkeys

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// Known lists the keys of v, a struct (or pointer to one) decoded with
// mapstructure tags, as dotted paths: a nested struct contributes
// "section.key", a list of structs "list.key" (what Normalize makes of
// "list[2].key"). A field without a tag is known by its lowercased name.
func Known(v any) []string {
	var keys []string
	walk(reflect.TypeOf(v), "", &keys)
	sort.Strings(keys)
	return keys
}

func walk(t reflect.Type, prefix string, keys *[]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if tag == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",squash,") {
			walk(f.Type, prefix, keys)
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		name := prefix + tag
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !opaque(ft) {
			walk(ft, name+".", keys)
			continue
		}
		*keys = append(*keys, name)
	}
}

// opaque reports whether a struct type is a single value in a file (a
// time or anything that decodes itself from text), not a section.
func opaque(t reflect.Type) bool {
	textUnmarshaler := reflect.TypeOf((*interface{ UnmarshalText([]byte) error })(nil)).Elem()
	return t.PkgPath() == "time" || reflect.PointerTo(t).Implements(textUnmarshaler)
}

var index = regexp.MustCompile(`\[\d+\]`)

// Normalize drops list indexes from a decoder's key path:
// "checks[0].tyep" is "checks.tyep".
func Normalize(key string) string { return index.ReplaceAllString(key, "") }

// Nearest returns the known key key most likely meant: the closest by
// edit distance (a transposition counts as one edit) when it is close
// enough for a typo, else a known key in another section with the same
// last part (ca → tls.ca), else "".
func Nearest(key string, known []string) string {
	key = strings.ToLower(Normalize(key))
	best, bestD := "", 1+len(key)/5
	if bestD > 3 {
		bestD = 3
	}
	bestD++ // accept distances up to the limit
	for _, k := range known {
		if d := distance(key, k); d < bestD || d == bestD && best != "" && k < best {
			best, bestD = k, d
		}
	}
	if best != "" {
		return best
	}
	last := key[strings.LastIndexByte(key, '.')+1:]
	for _, k := range known {
		if k != key && (k == last || strings.HasSuffix(k, "."+last)) {
			return k
		}
	}
	return ""
}

// Unknown returns one error per key of keys that is not in known, each
// naming file and the nearest known key; nil when every key is known.
func Unknown(file string, keys, known []string) error {
	set := make(map[string]bool, len(known))
	for _, k := range known {
		set[k] = true
	}
	sorted := append([]string(nil), keys...)
	sort.Strings(sorted)
	var errs []error
	for _, k := range sorted {
		if set[strings.ToLower(Normalize(k))] {
			continue
		}
		errs = append(errs, Error{File: file, Key: k, Suggestion: Nearest(k, known)})
	}
	return errors.Join(errs...)
}

// Error is one unknown key.
type Error struct {
	File       string // the config file ("" when not known)
	Key        string // the key as the file spells it (with list indexes)
	Suggestion string // the nearest known key, or ""
}

func (e Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	fmt.Fprintf(&b, "unknown key %q", e.Key)
	if e.Suggestion != "" {
		fmt.Fprintf(&b, ": did you mean %q?", e.Suggestion)
	} else {
		b.WriteString(": no setting has this name")
	}
	return b.String()
}

// distance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
