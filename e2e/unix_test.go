package e2e

// What issue 15 found a new user running into, one test per item: each runs
// the built tools and fails on the behaviour it replaced.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
)

// shell runs script with bash -o pipefail in dir, the built tools first on
// PATH, and returns stdout, stderr and the status.
func shell(t *testing.T, dir, script string) (string, string, int) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", script, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// workdir is a fresh directory holding a link to the repository's testdata,
// so that examples written with testdata/... paths run as written.
func workdir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(path("testdata"), filepath.Join(dir, "testdata")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Item 1: verify's own help example, and no OK on stale output.
func TestVerifyWaitsForPlace(t *testing.T) {
	dir := workdir(t)
	// out/llama-nf4 looks like a model id until place has made it: verify
	// must not look for it before the stream's end.
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	pipeline := "detect testdata/models/llama | quantize -q | place -q --out out/llama-nf4 %s | verify -q --checkpoint out/llama-nf4 --reference testdata/models/llama"
	if _, errs, code := shell(t, dir, fmt.Sprintf(pipeline, "")); code != 0 {
		t.Fatalf("fresh: status %d:\n%s", code, errs)
	}
	// An older llama-nf4 is there: place refuses it, and verify must not
	// report on it.
	_, errs, code := shell(t, dir, fmt.Sprintf(pipeline, ""))
	if code == 0 || !strings.Contains(errs, "place: ") || !strings.Contains(errs, "verify: no stream on stdin") {
		t.Errorf("stale: status %d, want failures of place and verify:\n%s", code, errs)
	}
	if _, errs, code := shell(t, dir, fmt.Sprintf(pipeline, "--force")); code != 0 {
		t.Errorf("--force: status %d:\n%s", code, errs)
	}
	// A place that fails half-way (its stream cut) leaves verify no OK either.
	nf4, _ := os.ReadFile(filepath.Join(gen, "llama-nf4.stream"))
	os.WriteFile(filepath.Join(dir, "cut.stream"), nf4[:len(nf4)/2], 0o644)
	_, errs, code = shell(t, dir, "place -q --force --out out/llama-nf4 -i cut.stream | verify -q --checkpoint out/llama-nf4 --reference testdata/models/llama")
	if code == 0 || !strings.Contains(errs, "verify: ") {
		t.Errorf("cut stream: status %d, verify said nothing:\n%s", code, errs)
	}
}

// Item 2: flags after arguments, -- ends flags, in every tool.
func TestFlagsAnywhere(t *testing.T) {
	dir := workdir(t)
	for _, script := range []string{
		"detect testdata/models/llama/config.json --info",
		"detect testdata/models/llama -o m.stream -q && quantize -i m.stream -o q.stream -q",
		"plan -i m.stream --report --gpus t4",
		"verify -i q.stream --list",
	} {
		if out, errs, code := shell(t, dir, script); code != 0 || out == "" && !strings.Contains(script, "&&") {
			t.Errorf("%s: status %d, stdout %d bytes:\n%s", script, code, len(out), errs)
		}
	}
	// After --, "-q" is a path, not a flag.
	_, errs, code := shell(t, dir, "detect --info -- -q")
	if code != cli.ExitInput || !strings.Contains(errs, "-q") {
		t.Errorf("detect -- -q: status %d: %s", code, errs)
	}
	for _, tool := range []string{"plan", "quantize", "place", "verify"} {
		_, errs, code := shell(t, dir, tool+" -- stray </dev/null")
		if code != cli.ExitUsage || !strings.Contains(errs, "stray") {
			t.Errorf("%s -- stray: status %d: %s", tool, code, errs)
		}
	}
}

// Item 3: the README's examples run as written.
func TestREADMEExamples(t *testing.T) {
	b, err := os.ReadFile(path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := between(string(b), "\n## Examples\n", "\n## ")
	cmds := examples(section, "    ")
	if len(cmds) < 3 {
		t.Fatalf("found %d examples in the README's Examples section", len(cmds))
	}
	dir := workdir(t)
	if err := os.Symlink(path("examples"), filepath.Join(dir, "examples")); err != nil {
		t.Fatal(err)
	}
	// The model ids are the tiny models, in a Hugging Face cache layout.
	hub := filepath.Join(t.TempDir(), "hub")
	os.MkdirAll(hub, 0o755)
	for id, src := range map[string]string{
		"meta-llama/Llama-3.1-8B":                "llama",
		"unsloth/Llama-3.2-1B-Instruct-bnb-4bit": "llama-bnb-nf4",
	} {
		cache, _ := fakeHFCache(t, id, path("testdata", "models", src))
		repo := "models--" + strings.ReplaceAll(id, "/", "--")
		if err := os.Symlink(filepath.Join(cache, repo), filepath.Join(hub, repo)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HF_HUB_CACHE", hub)
	// The examples say python3: put the interpreter that has msgpack and numpy
	// (PATH's, or Debian's /usr/bin/python3) first on PATH under that name.
	havePython := false
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import msgpack, numpy").Run() != nil {
			continue
		}
		if full, err := exec.LookPath(p); err == nil {
			pybin := t.TempDir()
			if err := os.Symlink(full, filepath.Join(pybin, "python3")); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", pybin+string(os.PathListSeparator)+os.Getenv("PATH"))
			havePython = true
			break
		}
	}
	for _, c := range cmds {
		if strings.Contains(c, "python3") && !havePython {
			if os.Getenv("CI") == "true" {
				t.Errorf("CI=true and no python3 with msgpack and numpy for: %s", c)
			}
			t.Logf("skipped, no python3 with msgpack and numpy: %s", c)
			continue
		}
		if out, errs, code := shell(t, dir, c); code != 0 {
			t.Errorf("%s: status %d\nstdout %.300q\nstderr:\n%s", c, code, out, errs)
		}
	}
}

// Item 3: every --help example runs as written (those for a CUDA build or a
// model in the Hugging Face cache excepted), each tool's in a fresh directory holding testdata and a
// detected llama.stream.
func TestHelpExamples(t *testing.T) {
	for _, tool := range tools {
		var out bytes.Buffer
		run{dir: root, stdout: &out, stages: [][]string{{tool, "--help"}}}.exec(t)
		cmds := examples(between(out.String(), "Examples:\n", "\n\n"), "   ")
		if len(cmds) == 0 {
			t.Errorf("%s --help has no examples", tool)
		}
		dir := workdir(t)
		s, _ := os.ReadFile(filepath.Join(gen, "llama.stream"))
		os.WriteFile(filepath.Join(dir, "llama.stream"), s, 0o644)
		for _, c := range cmds {
			if strings.Contains(c, "CUDA build") || strings.Contains(c, "HF cache") {
				continue // a CUDA build, a model in the Hugging Face cache: e2e/cuda_test.go, e2e/hfcache_test.go
			}
			if _, errs, code := shell(t, dir, c); code != 0 {
				t.Errorf("%s --help: %s: status %d\n%s", tool, c, code, errs)
			}
		}
	}
}

// between is s from after the first start up to the next end.
func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	if j := strings.Index(s, end); j >= 0 {
		s = s[:j]
	}
	return s
}

// examples are the commands among the lines indented by indent: comments
// dropped, lines ending in \ joined with the next.
func examples(s, indent string) []string {
	var out []string
	cur := ""
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, indent) {
			continue
		}
		line = strings.TrimSpace(line)
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		out = append(out, cur+line)
		cur = ""
	}
	return out
}

// Item 4: place passes the stream on to a pipe, not into a file stdout was
// redirected to.
func TestPlaceStdoutIsALog(t *testing.T) {
	dir := workdir(t)
	if _, errs, code := shell(t, dir, "(detect testdata/models/llama | quantize | place --out out) > job.log 2>&1"); code != 0 {
		t.Fatalf("status %d: %s", code, errs)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "job.log"))
	if len(log) > 4096 || bytes.Contains(log, []byte("NF4S")) {
		t.Errorf("job.log holds %d bytes (a stream?)", len(log))
	}
	if !bytes.Contains(log, []byte("place: wrote ")) {
		t.Errorf("job.log lacks place's summary:\n%s", log)
	}
	// Into a pipe it flows on.
	out, errs, code := shell(t, dir, "detect testdata/models/llama | quantize | place --out out2 | wc -c")
	if code != 0 || strings.TrimSpace(out) == "0" {
		t.Errorf("through a pipe: status %d, %s bytes: %s", code, out, errs)
	}
}

// Item 5: SIGINT or SIGTERM to any tool writing -o FILE (place: --out DIR)
// leaves no temporary file, and the tool ends by that signal.
func TestInterruptLeavesNoTemp(t *testing.T) {
	big := bigModel(t)
	nf4, err := os.ReadFile(filepath.Join(gen, "llama-nf4.stream"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(gen, "llama.stream"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args  []string
		stdin []byte // written in part, then held open
		sig   syscall.Signal
	}{
		{[]string{"detect", "-q", "-o", "OUT/m.stream", big}, nil, syscall.SIGTERM},
		{[]string{"plan", "-q", "--gpus", "t4", "-o", "OUT/p.stream"}, raw, syscall.SIGINT},
		{[]string{"quantize", "-q", "-o", "OUT/q.stream"}, raw, syscall.SIGINT},
		{[]string{"quantize", "-q", "-o", "OUT/q.stream"}, raw, syscall.SIGTERM},
		{[]string{"place", "-q", "--out", "OUT/ckpt", "--no-emit"}, nf4, syscall.SIGINT},
		{[]string{"place", "-q", "--out", "OUT/ckpt", "-o", "OUT/emitted.stream"}, nf4, syscall.SIGTERM},
		// verify writes no output; its spool file is unlinked at once.
		{[]string{"verify", "-q", "--spool-dir", "OUT", "--reference", path("testdata", "models", "llama")}, nf4, syscall.SIGINT},
	} {
		dir := t.TempDir()
		args := make([]string, len(c.args))
		for i, a := range c.args {
			args[i] = strings.Replace(a, "OUT", dir, 1)
		}
		name := fmt.Sprintf("%v %v", c.args[0:2], c.sig)
		cmd := exec.Command(filepath.Join(bin, args[0]), args[1:]...)
		var stdin io.WriteCloser
		if c.stdin != nil {
			if stdin, err = cmd.StdinPipe(); err != nil {
				t.Fatal(err)
			}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if stdin != nil {
			go stdin.Write(c.stdin[:len(c.stdin)/3]) // then the tool waits for the rest
		}
		if args[0] == "verify" {
			// Nothing shows when it is reading: give it a moment (the
			// checks below hold either way).
			time.Sleep(200 * time.Millisecond)
		} else {
			// Wait until the temporary output shows the tool is writing.
			for i := 0; i < 3000 && len(listing(t, dir)) == 0; i++ {
				time.Sleep(2 * time.Millisecond)
			}
			if len(listing(t, dir)) == 0 {
				t.Errorf("%s: no temporary output appeared", name)
			}
		}
		cmd.Process.Signal(c.sig)
		cmd.Wait()
		if stdin != nil {
			stdin.Close()
		}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != c.sig {
			t.Errorf("%s: ended %v, want by %v (stderr %q)", name, cmd.ProcessState, c.sig, stderr.String())
		}
		// (verify may have had the signal before its handler was installed:
		// then the runtime ends it by the signal, with no line.)
		if got := stderr.String(); got != args[0]+": interrupted\n" && !(args[0] == "verify" && got == "") {
			t.Errorf("%s: stderr %q", name, got)
		}
		if got := listing(t, dir); len(got) != 0 {
			t.Errorf("%s: left behind %v", name, got)
		}
	}
}

// bigModel writes a model of one 1 GiB tensor of zeros, sparse, without a
// config (detect classifies it by name): detect takes a while on it.
func bigModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	const rows, cols = 16384, 16384
	hdr := fmt.Sprintf(`{"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[%d,%d],"data_offsets":[0,%d]}}`, rows, cols, rows*cols*4)
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	binary.Write(f, binary.LittleEndian, uint64(len(hdr)))
	f.WriteString(hdr)
	if err := f.Truncate(int64(8 + len(hdr) + rows*cols*4)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Item 6: place --force replaces only what place wrote, or an empty
// directory; never the source or the working directory.
func TestPlaceForceRefuses(t *testing.T) {
	dir := workdir(t)
	src := filepath.Join(dir, "model")
	os.Mkdir(src, 0o755)
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors"} {
		b, _ := os.ReadFile(path("testdata", "models", "llama", f))
		os.WriteFile(filepath.Join(src, f), b, 0o644)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "unrelated.txt"), []byte("keep me"), 0o644)
	os.Mkdir(filepath.Join(dir, "foreign"), 0o755)
	os.WriteFile(filepath.Join(dir, "foreign", "notes.txt"), []byte("keep me"), 0o644)
	os.Mkdir(filepath.Join(dir, "empty"), 0o755)
	for _, c := range []struct{ cwd, out string }{
		{dir, "model"},   // the source
		{"sub", ".."},    // the working directory's parent
		{dir, "."},       // the working directory
		{dir, "foreign"}, // not place's
		{dir, "unrelated.txt"},
	} {
		cwd := c.cwd
		if !filepath.IsAbs(cwd) {
			cwd = filepath.Join(dir, cwd)
		}
		_, errs, code := shell(t, cwd, "detect "+src+" | quantize | place --force --out "+c.out)
		if code != cli.ExitOutput || !strings.Contains(errs, "refusing to replace") {
			t.Errorf("--force --out %s from %s: status %d:\n%s", c.out, c.cwd, code, errs)
		}
	}
	for _, keep := range []string{"unrelated.txt", "foreign/notes.txt", "model/model.safetensors"} {
		if _, err := os.Stat(filepath.Join(dir, keep)); err != nil {
			t.Errorf("%s is gone", keep)
		}
	}
	for _, out := range []string{"empty", "empty"} { // empty, then place's own
		if _, errs, code := shell(t, dir, "detect "+src+" | quantize | place -q --force --out "+out); code != 0 {
			t.Errorf("--force --out %s: status %d: %s", out, code, errs)
		}
	}
}

// Item 7: permission denied on the output is status 4 (root may write
// anywhere but sysfs); --help states the table.
func TestOutputPermissionDenied(t *testing.T) {
	probe := "/sys/nf4pipe-probe"
	if f, err := os.Create(probe); err == nil {
		f.Close()
		os.Remove(probe)
		t.Skip("/sys is writable here")
	} else if !errors.Is(err, os.ErrPermission) {
		t.Skipf("/sys: %v", err)
	}
	for _, script := range []string{
		"detect testdata/models/llama -o /sys/m.stream",
		"detect testdata/models/llama | quantize -o /sys/q.stream",
		"detect testdata/models/llama | plan --gpus t4 -q -o /sys/p.stream",
		"detect testdata/models/llama | quantize | place --out /sys/ckpt",
	} {
		_, errs, code := shell(t, workdir(t), script)
		if code != cli.ExitOutput || !strings.Contains(errs, "/sys/") || strings.Contains(errs, ".tmp-") {
			t.Errorf("%s: status %d, want 4 naming the path given:\n%s", script, code, errs)
		}
	}
}

// Item 8: the silent no-ops each say what is wrong and what to do.
func TestSilentNoOps(t *testing.T) {
	dir := workdir(t)
	pt := filepath.Join(dir, "pt-model")
	os.Mkdir(pt, 0o755)
	b, _ := os.ReadFile(path("testdata", "models", "llama", "config.json"))
	os.WriteFile(filepath.Join(pt, "config.json"), b, 0o644)
	os.WriteFile(filepath.Join(pt, "pytorch_model.bin"), []byte("PK"), 0o644)
	for _, c := range []struct {
		script, tool, mention string
	}{
		{"detect testdata/models/llama | place --out out | verify --checkpoint out", "place", "put quantize before place"},
		{"verify --checkpoint testdata/models/llama --reference testdata/models/llama", "verify", "not quantized"},
		{"detect testdata/models/llama | verify --reference testdata/models/llama", "verify", "not quantized"},
		{"detect pt-model", "detect", "safetensors"},
	} {
		_, errs, code := shell(t, dir, c.script)
		if code == 0 || !strings.Contains(errs, c.tool+": ") || !strings.Contains(errs, c.mention) {
			t.Errorf("%s: status %d, want %s to say %q:\n%s", c.script, code, c.tool, c.mention, errs)
		}
	}
}

// Item 9: one --json rule. --json changes a report's format only: the stream
// goes on, the JSON goes to stderr beside it; -q --json writes the JSON alone.
func TestJSONRule(t *testing.T) {
	dir := workdir(t)
	_, errs, code := shell(t, dir, "detect -q --json testdata/models/llama 2>d.json | plan -q --json --gpus t4 2>p.json | quantize -q --json 2>q.json | place -q --json --out out 2>o.json | verify -q --json --checkpoint out >v.json")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errs)
	}
	for _, f := range []string{"d.json", "p.json", "q.json", "o.json", "v.json"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: not one JSON object (%v): %.200q", f, err, b)
		}
	}
	// A report in mid-pipeline ends it, and the next stage says so.
	_, errs, code = shell(t, dir, "detect testdata/models/llama | plan --gpus t4 --report | quantize")
	if code != cli.ExitInput || !strings.Contains(errs, "quantize: not a tensor stream") || !strings.Contains(errs, "--report") {
		t.Errorf("plan --report | quantize: status %d:\n%s", code, errs)
	}
}

// Item 10: one version everywhere, and stage records with the flags given.
func TestVersionInStages(t *testing.T) {
	dir := workdir(t)
	out, errs, code := shell(t, dir, "detect -q testdata/models/llama | plan -q --gpus t4 | quantize -q --blocksize 128 | place -q --out ck | verify --list --json")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errs)
	}
	var l struct {
		Stages []struct {
			Name, Version string
			Args          []string
		} `json:"stages"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Stages) != 4 {
		t.Fatalf("%v: %s", err, out)
	}
	ver, _, _ := shell(t, dir, "quantize --version")
	for _, s := range l.Stages {
		if s.Name+" version "+s.Version+"\n" != strings.Replace(ver, "quantize", s.Name, 1) {
			t.Errorf("stage %s records version %q; --version says %q", s.Name, s.Version, ver)
		}
	}
	llama := path("testdata", "models", "llama")
	want := map[string]string{
		"detect":   "--quiet " + llama,
		"plan":     "--gpus=t4 --quiet",
		"quantize": "--blocksize=128 --quiet",
		"place":    "--out=ck --quiet",
	}
	for _, s := range l.Stages {
		got := strings.Join(s.Args, " ")
		if got != want[s.Name] && got != strings.Replace(want[s.Name], llama, filepath.Join(dir, "testdata", "models", "llama"), 1) {
			t.Errorf("stage %s args %q, want %q", s.Name, got, want[s.Name])
		}
	}
}

// Item 11: the smaller ones: flag errors spell --flag, -o files are made as
// > makes them, errors carry no doubled prefix.
func TestSmallerItems(t *testing.T) {
	dir := workdir(t)
	_, errs, _ := shell(t, dir, "plan --gpus t4 --seq-len x </dev/null")
	if !strings.Contains(errs, "--seq-len") || strings.Contains(errs, " -seq-len") {
		t.Errorf("flag error: %q", errs)
	}
	if _, errs, code := shell(t, dir, "umask 022; detect -q testdata/models/llama -o m.stream"); code != 0 {
		t.Fatal(errs)
	}
	if st, err := os.Stat(filepath.Join(dir, "m.stream")); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("-o file mode %v (%v), want 0644 as > makes it", st.Mode().Perm(), err)
	}
	_, errs, code := shell(t, dir, "detect -q testdata/models/llama | plan --gpus 24GiB --max-memory 0:30GiB --report")
	if code != cli.ExitUsage || !strings.Contains(errs, "more than its 24.00 GiB") {
		t.Errorf("--max-memory over the GPU's memory: status %d: %s", code, errs)
	}
	_, errs, _ = shell(t, dir, "detect -q testdata/models/llama | plan --gpus 24GiB --max-memory 0:abc")
	sc := bufio.NewScanner(strings.NewReader(errs))
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ": ")
		seen := map[string]bool{}
		for _, p := range parts {
			if seen[p] {
				t.Errorf("doubled %q in %q", p, sc.Text())
			}
			seen[p] = true
		}
	}
}

// examples/prep.mk runs as its header says, and a second run does nothing.
func TestPrepMakefile(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make")
	}
	dir := workdir(t)
	src := filepath.Join(dir, "models", "llama")
	os.MkdirAll(src, 0o755)
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors"} {
		b, _ := os.ReadFile(path("testdata", "models", "llama", f))
		os.WriteFile(filepath.Join(src, f), b, 0o644)
	}
	mk := fmt.Sprintf(`make -f %s NF4PIPE=%s MODELS=models/llama PLAN_FLAGS="--gpus t4"`, path("examples", "prep.mk"), bin)
	if out, errs, code := shell(t, dir, mk); code != 0 {
		t.Fatalf("status %d\n%s\n%s", code, out, errs)
	}
	for _, f := range []string{"llama-nf4/model.safetensors", "llama-nf4.detect.json", "llama-nf4.plan.json", "llama-nf4.verify.json"} {
		b, err := os.ReadFile(filepath.Join(dir, "models", f))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v, %d bytes", f, err, len(b))
		}
		if strings.HasSuffix(f, ".json") && !json.Valid(b) {
			t.Errorf("%s is not JSON: %.200q", f, b)
		}
	}
	if out, _, code := shell(t, dir, mk); code != 0 || strings.Contains(out, "prep: ") {
		t.Errorf("second run: status %d, redid the work:\n%s", code, out)
	}
}

// Item 7 and 11: every --help says "Examples:", names its placeholders, and
// lists its exit statuses, 4 among them.
func TestHelpWording(t *testing.T) {
	for _, tool := range tools {
		var out bytes.Buffer
		run{dir: root, stdout: &out, stages: [][]string{{tool, "--help"}}}.exec(t)
		help := out.String()
		for _, want := range []string{"Examples:\n", "Exit status:\n", "\n      0   ", "\n      2   ", "\n      3   ", "\n      4   "} {
			if !strings.Contains(help, want) {
				t.Errorf("%s --help lacks %q", tool, want)
			}
		}
		for _, bad := range []string{"Example:\n", " value ", "--reference DIR"} {
			if strings.Contains(help, bad) {
				t.Errorf("%s --help has %q", tool, bad)
			}
		}
	}
}
