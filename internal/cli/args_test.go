package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"
)

func testApp() *ucli.App {
	return &ucli.App{Name: "tool", Flags: []ucli.Flag{
		&ucli.BoolFlag{Name: "info"},
		&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}},
		&ucli.StringFlag{Name: "output", Aliases: []string{"o"}},
		&ucli.StringSliceFlag{Name: "skip"},
	}}
}

func TestPermute(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"tool M --info", "tool --info -- M"},
		{"tool M -o out -q", "tool -o out -q -- M"},
		{"tool --output=x M --skip a --skip b", "tool --output=x --skip a --skip b -- M"},
		{"tool --info -- -q M", "tool --info -- -q M"},
		{"tool -q", "tool -q"},
		{"tool -o", "tool -o"},
	} {
		if got := strings.Join(Permute(testApp(), strings.Fields(c.in)), " "); got != c.want {
			t.Errorf("Permute(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestStageArgs(t *testing.T) {
	var got []string
	app := testApp()
	app.Action = func(c *ucli.Context) error { got = StageArgs(c); return nil }
	if err := app.Run(Permute(app, []string{"tool", "M", "-q", "-o", "x", "--skip", "a,b"})); err != nil {
		t.Fatal(err)
	}
	if want := "--quiet --output=x --skip=a --skip=b M"; strings.Join(got, " ") != want {
		t.Errorf("StageArgs %q, want %q", got, want)
	}
}

func TestTable(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	tab := Table{{Code: 0, Meaning: "done"}, {Code: 3, Meaning: "bad input", Errs: []error{errA}}, {Code: 4, Meaning: "no output", Errs: []error{errB}}}
	for _, c := range []struct {
		err  error
		code int
	}{
		{nil, 0}, {fmt.Errorf("x: %w", errA), 3}, {fmt.Errorf("x: %w", errB), 4},
		{WithCode(7, errA), 7}, {errors.New("other"), 1}, {os.ErrNotExist, 3},
	} {
		if got := tab.Code(c.err); got != c.code {
			t.Errorf("Code(%v) = %d, want %d", c.err, got, c.code)
		}
	}
	if h := tab.Help(); !strings.Contains(h, "Exit status:\n   0   done\n   3   bad input\n   4   no output") {
		t.Errorf("Help:\n%s", h)
	}
}

func TestCheckStream(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" for accepted
	}{
		{"", "is empty"},
		{"NF4S\x01\x00\x00\x00rest", ""},
		{"model      llama\ntype ...", `starts with text "model      llama"`},
		{"{\"architectures\": []}", "starts with text"},
	} {
		err := CheckStream(bufio.NewReader(strings.NewReader(c.in)), "stdin")
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || Code(err) != ExitInput):
			t.Errorf("%q: %v, want %q and status 3", c.in, err, c.want)
		}
	}
}
