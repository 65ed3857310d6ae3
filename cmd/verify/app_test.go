package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	. "github.com/nf4pipe/nf4pipe/pkg/verify"
)

// runCLI runs verify in-process and returns its status, stdout and stderr.
func runCLI(t *testing.T, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Reader, app.Writer, app.ErrWriter = bytes.NewReader(stdin), &out, &errOut
	code := cli.Run(app, exitTable, append([]string{"verify"}, args...))
	return code, out.String(), errOut.String()
}

func TestCLI(t *testing.T) {
	ck, ref := fixtures.Shared(t, "models", "llama-bnb-nf4"), fixtures.Shared(t, "models", "llama")
	stream := streamOf(t, ck)

	code, out, errOut := runCLI(t, nil, "--checkpoint", ck, "--reference", ref)
	if code != 0 || !strings.Contains(out, "4.127 bits per weight") || !strings.HasSuffix(out, "OK\n") {
		t.Fatalf("status %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, stream, "-c", ck, "-r", ref, "--json")
	var rep Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.OK || rep.RoundTrip == nil || rep.RoundTrip.Identical != 21 {
		t.Fatalf("status %d, %v: %+v", code, err, rep.RoundTrip)
	}
	code, out, _ = runCLI(t, stream, "-r", ref)
	if code != 0 || !strings.Contains(out, "model.layers.0.self_attn.q_proj.weight") {
		t.Fatalf("stream: status %d\n%s", code, out)
	}

	for _, args := range [][]string{{}, {"stray"}, {"-c", ck, "--tolerance", "-1"}, {"--list"}, {"--nope"}} {
		if code, _, errOut := runCLI(t, nil, args...); code != cli.ExitUsage {
			t.Errorf("%v: status %d, want %d (%s)", args, code, cli.ExitUsage, errOut)
		}
	}
	if code, _, _ := runCLI(t, []byte("garbage, not a stream"), "-r", ref); code != cli.ExitInput {
		t.Errorf("garbage stream: status %d, want %d", code, cli.ExitInput)
	}
	if code, _, _ := runCLI(t, nil, "-c", ck, "-r", "/nonexistent"); code != cli.ExitInput {
		t.Errorf("missing reference: status %d, want %d", code, cli.ExitInput)
	}
}

func TestList(t *testing.T) {
	ck := fixtures.Shared(t, "models", "llama-bnb-nf4")
	stream := streamOf(t, ck)
	code, out, errOut := runCLI(t, stream, "--list")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "stream format 1.") || lines[len(lines)-1] != "21 tensors, 677712 payload bytes" {
		t.Fatalf("%s", out)
	}
	if !strings.Contains(out, "section source: ") ||
		!regexpMatch(out, `model.layers.0.self_attn.q_proj.weight\s+BF16\s+\[128,128\]\s+nf4/64\+dq\s+8452`) {
		t.Fatalf("%s", out)
	}
	code, out, _ = runCLI(t, stream, "--list", "--json")
	var l Listing
	if err := json.Unmarshal([]byte(out), &l); err != nil || code != 0 || len(l.Tensors) != 21 {
		t.Fatalf("status %d, %v, %d tensors", code, err, len(l.Tensors))
	}
	q := l.Tensors[slicesIndex(l.Tensors, "model.layers.0.self_attn.q_proj.weight")]
	if q.Encoding != "bnb4" || q.Quant == nil || q.Quant.BlockSize != 64 || q.Bytes != 8452 {
		t.Fatalf("%+v", q)
	}
	code, out2, _ := runCLI(t, nil, "--list", "--json", "-c", ck)
	var l2 Listing
	if err := json.Unmarshal([]byte(out2), &l2); err != nil || code != 0 || len(l2.Tensors) != 21 || l2.Bytes != l.Bytes {
		t.Fatalf("checkpoint list: status %d, %v", code, err)
	}
}

func regexpMatch(s, re string) bool { return regexp.MustCompile(re).MatchString(s) }

func slicesIndex(ts []ListedTensor, name string) int {
	return slices.IndexFunc(ts, func(t ListedTensor) bool { return t.Name == name })
}

// streamOf returns the checkpoint at dir as a stream, as place passes it on.
func streamOf(t testing.TB, dir string) []byte {
	t.Helper()
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var b bytes.Buffer
	if err := ck.WriteStream(tensorstream.NewWriter(&b), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
