// Generates the golden vectors of common/tests/go_oracle.rs with the Go standard library
// (the original was built with Go 1.19): text/tabwriter, flag, strconv.Quote, encoding/json,
// strconv.ParseInt, time.ParseDuration and Duration.String. Seeds are fixed, so a rerun with
// the same Go version rewrites the same files:
//
//	cd common/tests/go-oracle && go run . && git diff --stat ../fixtures
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

func write(name string, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join("..", "fixtures", name), b.Bytes(), 0o644); err != nil {
		panic(err)
	}
}

func main() {
	genTabwriter()
	genNumbers()
	genFlags()
	genQuote()
}

func genTabwriter() {
	r := rand.New(rand.NewSource(1))
	alpha := []string{"a", "bb", "é", "\t", "\t", "\n", "\n", "\v", "\f", "xyz1234"}
	var out [][2]string
	for i := 0; i < 400; i++ {
		n := r.Intn(30)
		s := ""
		for j := 0; j < n; j++ {
			s += alpha[r.Intn(len(alpha))]
		}
		var b bytes.Buffer
		w := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		w.Write([]byte(s))
		w.Flush()
		out = append(out, [2]string{s, b.String()})
	}
	write("tabwriter.json", out)
}

type Out struct {
	Dur [][3]string // input, nanos or "", ok
	Int [][2]string // input, result or error text
	Str [][2]string // nanos, String()
}

func genNumbers() {
	r := rand.New(rand.NewSource(2))
	inputs := []string{"", "0", "+0", "-0", "1", "30m", "1h30m", "90s", "1.5h", "300ms", "-1s", ".5s", "5.s", ".s", "1.", "1", "1x", "1h1", "1µs", "1μs", "1us", "1ns",
		"9223372036854775807ns", "9223372036854775808ns", "-9223372036854775808ns", "2562047h", "2562048h", "1.0000000000000000000001s", "0.1234567891234h", "00", "0x10", "0b101", "0o17", "017", "08", "1_000", "_1", "1__0", "0x_1f", "0_7", "+", "-", "0x", "99999999999999999999", "-9223372036854775808", "9223372036854775807", "9223372036854775808", "99999999999999999999x", "1e3", " 1", "1 ", "1.5", "abc", "1h-1m", "+-1s", "3000000000000000000ns1h"}
	alpha := []string{"0", "1", "5", "9", ".", "h", "m", "s", "ms", "us", "µs", "_", "x", "-", "+", "b", "o"}
	for i := 0; i < 500; i++ {
		n := r.Intn(7) + 1
		s := ""
		for j := 0; j < n; j++ {
			s += alpha[r.Intn(len(alpha))]
		}
		inputs = append(inputs, s)
	}
	var o Out
	for _, s := range inputs {
		d, err := time.ParseDuration(s)
		if err != nil {
			o.Dur = append(o.Dur, [3]string{s, "", "err"})
		} else {
			o.Dur = append(o.Dur, [3]string{s, strconv.FormatInt(int64(d), 10), "ok"})
		}
		v, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			var ne *strconv.NumError
			errors.As(err, &ne)
			if ne.Err == strconv.ErrRange {
				o.Int = append(o.Int, [2]string{s, "range"})
			} else {
				o.Int = append(o.Int, [2]string{s, "syntax"})
			}
		} else {
			o.Int = append(o.Int, [2]string{s, strconv.FormatInt(v, 10)})
		}
	}
	for i := 0; i < 500; i++ {
		var n int64
		switch i % 4 {
		case 0:
			n = r.Int63n(1000)
		case 1:
			n = r.Int63n(10000000000)
		case 2:
			n = r.Int63()
		case 3:
			n = r.Int63n(100) * int64([]time.Duration{time.Microsecond, time.Millisecond, time.Second, time.Minute, time.Hour}[r.Intn(5)])
		}
		o.Str = append(o.Str, [2]string{strconv.FormatInt(n, 10), time.Duration(n).String()})
	}
	write("numbers.json", o)
}

type layers struct{ v []string }

func (l *layers) String() string { return strings.Join(l.v, ",") }
func (l *layers) Set(s string) error {
	i := strings.Index(s, ":")
	if i < 0 {
		return errors.New("invalid value")
	}
	for _, p := range l.v {
		if p[:strings.Index(p, ":")] == s[:i] {
			return fmt.Errorf("duplicate component %q", s[:i])
		}
	}
	l.v = append(l.v, s)
	return nil
}

func set(cmd string) (*flag.FlagSet, *bytes.Buffer) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var b bytes.Buffer
	fs.SetOutput(&b)
	s := func(n, u string) { fs.String(n, "", u) }
	switch cmd {
	case "addver":
		s("name", "component name")
		s("version", "unique version id")
		s("hash", "sha256 content hash in hex representation (64 chars)")
	case "addconf":
		s("name", "configuration name")
		fs.Var(&layers{}, "layer", "layer in component:version format; can be set multiple times")
	case "changeconf":
		s("name", "configuration name")
		s("component", "component name to update")
		s("version", "new version of selected component")
	case "bumpconf":
		s("name", "configuration name")
		s("component", "component name to update")
	case "showconf":
		s("name", "configuration name")
		fs.Bool("v", false, "show extra details")
	case "showcomp", "delcomp":
		s("name", "component name")
	case "delver":
		s("name", "component name")
		s("version", "unique version id")
	case "delconf":
		s("name", "configuration name")
		fs.Bool("force", false, "remove configuration for real")
	case "rollback":
		s("name", "configuration name")
		fs.Int("to", 0, "history entry to restore (default: the previous state)")
	case "audit":
		fs.Int("n", 50, "number of newest records to show")
	}
	return fs, &b
}

type Case struct {
	Cmd    string
	Args   []string
	Err    string // "", "help", or "flag"
	Output string
	Name   string
}

func genFlags() {
	r := rand.New(rand.NewSource(3))
	cmds := []string{"addver", "addconf", "changeconf", "bumpconf", "showconf", "showcomp", "delcomp", "delver", "delconf", "rollback", "audit", "fsck"}
	toks := []string{"-name", "-name=", "--name", "p", "-v", "-v=maybe", "-v=false", "-v=1", "-x", "-h", "-help", "--help", "--", "-", "-layer", "code:v1", "code", "-layer=a:b", "-layer=a:c", "-force", "-force=t", "-version", "-hash", "-component", "---x", "-=x", "", "a b", "-to", "-to=0x1f", "-to=x", "-n", "-n=5", "-n=99999999999999999999", "7", "-name=a\"b\n"}
	var out []Case
	for i := 0; i < 600; i++ {
		cmd := cmds[r.Intn(len(cmds))]
		n := r.Intn(6)
		args := []string{}
		for j := 0; j < n; j++ {
			args = append(args, toks[r.Intn(len(toks))])
		}
		fs, b := set(cmd)
		err := fs.Parse(args)
		c := Case{Cmd: cmd, Args: args}
		if err == flag.ErrHelp {
			c.Err = "help"
		} else if err != nil {
			c.Err = "flag"
		} else if f := fs.Lookup("name"); f != nil {
			c.Name = f.Value.String()
		}
		c.Output = b.String()
		out = append(out, c)
	}
	write("flags.json", out)
}

func genQuote() {
	r := rand.New(rand.NewSource(4))
	var out [][3]string
	for i := 0; i < 1500; i++ {
		n := r.Intn(6)
		rs := []rune{}
		for j := 0; j < n; j++ {
			var c rune
			switch r.Intn(4) {
			case 0:
				c = rune(r.Intn(0x100))
			case 1:
				c = rune(r.Intn(0x3000))
			case 2:
				c = rune(r.Intn(0x10000))
			case 3:
				c = rune(r.Intn(0x110000))
			}
			if !utf8.ValidRune(c) {
				c = 'x'
			}
			rs = append(rs, c)
		}
		s := string(rs)
		j, _ := json.Marshal(s)
		out = append(out, [3]string{s, strconv.Quote(s), string(j)})
	}
	write("quote.json", out)
}
