// Generates common/src/dewy/testdata/vectors.json, the golden vectors of the dewy module's
// oracle tests, with Go 1.19's regexp, net/url and strconv. The CalVer and SemVer code below
// is Dewy v2.19's (registry/calver.go, semver.go, version.go), restated for Go 1.19 (no
// built-in max); everything else is the standard library. Seeded, so reruns are identical:
//
//	cd common/src/dewy/testdata/oracle && go run . && git diff --stat ..
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
)

var calverSpecifiers = map[string]string{
	"YYYY":  `(\d{4})`,
	"YY":    `(\d{1,3})`,
	"0Y":    `(\d{2,3})`,
	"MM":    `([1-9]|1[0-2])`,
	"0M":    `(0[1-9]|1[0-2])`,
	"WW":    `([1-9]|[1-4]\d|5[0-3])`,
	"0W":    `(0[1-9]|[1-4]\d|5[0-3])`,
	"DD":    `([1-9]|[12]\d|3[01])`,
	"0D":    `(0[1-9]|[12]\d|3[01])`,
	"MICRO": `(\d+)`,
}

var calverSpecifierOrder = []string{"YYYY", "0Y", "YY", "0M", "MM", "0W", "WW", "0D", "DD", "MICRO"}

// newCalVerFormat is Dewy's NewCalVerFormat; it returns the regexp and segment count.
func newCalVerFormat(format string) (*regexp.Regexp, int, error) {
	if format == "" {
		return nil, 0, fmt.Errorf("calver format is empty")
	}
	remaining := format
	var parts []string
	n := 0
	for remaining != "" {
		matched := false
		for _, spec := range calverSpecifierOrder {
			if strings.HasPrefix(remaining, spec) {
				parts = append(parts, calverSpecifiers[spec])
				n++
				remaining = remaining[len(spec):]
				matched = true
				break
			}
		}
		if !matched {
			parts = append(parts, regexp.QuoteMeta(string(remaining[0])))
			remaining = remaining[1:]
		}
	}
	re, err := regexp.Compile(`^(v)?` + strings.Join(parts, "") + `(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$`)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to compile calver regex: %w", err)
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("calver format %q contains no valid specifiers (expected YYYY, YY, 0Y, MM, 0M, WW, 0W, DD, 0D, or MICRO)", format)
	}
	return re, n, nil
}

// CalVer is a parse result: V, segments, pre-release, build; nil when no match.
type CalVer struct {
	V     bool
	Segs  []int64
	Pre   string
	Build string
}

func parseCalVer(re *regexp.Regexp, n int, tag string) *CalVer {
	m := re.FindStringSubmatch(tag)
	if m == nil {
		return nil
	}
	c := &CalVer{V: m[1] == "v", Segs: []int64{}}
	for i := 0; i < n; i++ {
		v, err := strconv.Atoi(m[2+i])
		if err != nil {
			return nil
		}
		c.Segs = append(c.Segs, int64(v))
	}
	c.Pre = m[len(m)-2]
	c.Build = m[len(m)-1]
	return c
}

var (
	semverRe      = regexp.MustCompile(`^(v)?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$`)
	semverNoPreRe = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)(?:\+([0-9A-Za-z.-]+))?$`)
)

// parseSemVer returns nil when the tag does not match the regex allowing pre-releases, else
// [matches the strict regex, has v, [major, minor, patch], pre-release, build].
func parseSemVer(tag string) []any {
	m := semverRe.FindStringSubmatch(tag)
	if m == nil {
		if semverNoPreRe.MatchString(tag) {
			panic(tag) // the strict regex accepts a subset
		}
		return nil
	}
	var core [3]int64
	for i := 0; i < 3; i++ {
		v, _ := strconv.Atoi(m[2+i])
		core[i] = int64(v)
	}
	return []any{semverNoPreRe.MatchString(tag), m[1] == "v", core, m[5], m[6]}
}

// comparePreRelease is Dewy's (registry/version.go), returning the sign only.
func comparePreRelease(a, b string) int {
	if a == b {
		return 0
	}
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	maxLen := len(pa)
	if len(pb) > maxLen {
		maxLen = len(pb)
	}
	for i := 0; i < maxLen; i++ {
		if i >= len(pa) {
			return -1
		}
		if i >= len(pb) {
			return 1
		}
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		switch {
		case ea == nil && eb == nil:
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
		case ea == nil:
			return -1
		case eb == nil:
			return 1
		default:
			if c := strings.Compare(pa[i], pb[i]); c != 0 {
				return c
			}
		}
	}
	return 0
}

// URL is url.Parse's result as the registries read it, or its error.
type URL struct {
	Err   string              `json:",omitempty"`
	Host  string              `json:",omitempty"`
	User  bool                `json:",omitempty"`
	Path  string              `json:",omitempty"`
	Query map[string][]string `json:",omitempty"`
}

func parseURL(raw string) URL {
	u, err := url.Parse(raw)
	if err != nil {
		return URL{Err: err.Error()}
	}
	q := u.Query()
	if len(q) == 0 {
		q = nil
	}
	return URL{Host: u.Host, User: u.User != nil, Path: u.Path, Query: q}
}

func pick(r *rand.Rand, xs []string) string { return xs[r.Intn(len(xs))] }

func main() {
	r := rand.New(rand.NewSource(4))
	out := struct {
		CalVer  [][3]any
		SemVer  [][2]any
		PreCmp  [][3]any
		URL     [][2]any
		Formats [][2]string
	}{}

	formats := []string{
		"YYYY.0M.MICRO", "YYYY.MM.DD", "YY.0M.0D", "0Y.WW.MICRO", "YYYY0M0D", "MMDD", "DDMM",
		"YYYY.0W", "YY.MM.MICRO", "MICRO", "MICRO.MICRO", "MICRO1MICRO", "YYMICRO", "vYYYY",
		"0YYY", "YYYY-0M-0D", "YYYY.MICRO-rc", "WWDD", "0M0D", "YYYY_MM",
	}
	for _, f := range []string{"", "vX.Y", "Y.M.D", "YYYYY", "v1.2", "DDD", "€YY"} {
		_, _, err := newCalVerFormat(f)
		e := ""
		if err != nil {
			e = err.Error()
		}
		out.Formats = append(out.Formats, [2]string{f, e})
	}
	nums := []string{"0", "1", "2", "9", "10", "11", "12", "13", "19", "20", "29", "30", "31", "32",
		"52", "53", "54", "01", "09", "001", "2024", "123", "99999999999999999999"}
	junk := []string{".", "-", "+", "v", "rc", "a", "_", "٣", "1", ""}
	suffix := func() string {
		var b strings.Builder
		if r.Intn(3) == 0 {
			b.WriteString("-" + pick(r, []string{"rc.1", "alpha", "a-b", "", "x_y", "1.beta"}))
		}
		if r.Intn(3) == 0 {
			b.WriteString("+" + pick(r, []string{"blue", "green.2", "", "a+b", "b-1"}))
		}
		return b.String()
	}
	for _, f := range formats {
		re, n, err := newCalVerFormat(f)
		if err != nil {
			panic(err)
		}
		seen := map[string]bool{}
		for i := 0; i < 90; i++ {
			var b strings.Builder
			if r.Intn(3) == 0 {
				b.WriteString("v")
			}
			rest := f
			for rest != "" {
				hit := ""
				for _, spec := range calverSpecifierOrder {
					if strings.HasPrefix(rest, spec) {
						hit = spec
						break
					}
				}
				switch {
				case hit != "" && r.Intn(8) > 0:
					b.WriteString(pick(r, nums))
					rest = rest[len(hit):]
				case hit != "":
					b.WriteString(pick(r, junk))
					rest = rest[len(hit):]
				case r.Intn(10) == 0:
					b.WriteString(pick(r, junk))
					rest = rest[1:]
				default:
					b.WriteByte(rest[0])
					rest = rest[1:]
				}
			}
			b.WriteString(suffix())
			tag := b.String()
			if seen[tag] {
				continue
			}
			seen[tag] = true
			out.CalVer = append(out.CalVer, [3]any{f, tag, parseCalVer(re, n, tag)})
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 1500; i++ {
		var b strings.Builder
		b.WriteString(pick(r, []string{"", "", "v", "V", "vv", " "}))
		for k := 0; k < 3; k++ {
			if k > 0 {
				b.WriteString(pick(r, []string{".", ".", ".", ".", ".", "..", "-"}))
			}
			b.WriteString(pick(r, append(nums, "", "٣")))
		}
		if r.Intn(6) == 0 {
			b.WriteString(".4")
		}
		b.WriteString(suffix())
		if r.Intn(10) == 0 {
			b.WriteString(pick(r, junk))
		}
		tag := b.String()
		if seen[tag] {
			continue
		}
		seen[tag] = true
		out.SemVer = append(out.SemVer, [2]any{tag, parseSemVer(tag)})
	}
	patoms := []string{"0", "1", "2", "11", "01", "-1", "+1", "a", "A", "b", "alpha", "beta", "rc", "-", "99999999999999999999"}
	for i := 0; i < 1500; i++ {
		mk := func() string {
			var ids []string
			for k := 1 + r.Intn(3); k > 0; k-- {
				ids = append(ids, pick(r, patoms))
			}
			return strings.Join(ids, ".")
		}
		a, b := mk(), mk()
		out.PreCmp = append(out.PreCmp, [3]any{a, b, comparePreRelease(a, b)})
	}
	urls := []string{
		"ghr://owner/repo", "ghr://owner/repo/", "ghr://owner/re%2Fpo//", "ghr://o/r?pre-release=on&artifact=a+b%21",
		"ghr://o/r?a=1&&b=%zz&c=x;y&d=&e", "ghr://o/r?x=1#frag?y=2", "ghr://own er/repo", "ghr://o/r%zz",
		"ghr://o/r%4", "grpc://host:port", "grpc://host:", "grpc://user:pw@10.0.0.1:9000", "ssh://[::1]:2022/web",
		"ssh://[::1/web", "ssh://[::1]x/web", "s3://r/b/%E2%82%AC/x", "gs://b%41/p", "gs://b%C3%A9/p",
		"gs://b%25/p", "img://localhost:5000/a/b?constraint=%5E1", "ghr://o/r?%zz=1&ok=2", "ghr://o/r\n",
		"ghr://o/r?k=v1&K=v2&k=v3", "ghr://o|x/r", "ghr://o{x}/r", "ghr://o!$&'()*+,;=/r", "ghr://@o/r",
		"s3://r/b?region=", "ghr:///repo", "ghr://o/r?a=%2", "ghr://o/r ?x",
	}
	for _, u := range urls {
		out.URL = append(out.URL, [2]any{u, parseURL(u)})
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
	if err := os.WriteFile("../vectors.json", buf.Bytes(), 0o644); err != nil {
		panic(err)
	}
}
