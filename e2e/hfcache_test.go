package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHFCache lays out model dir src in a Hugging Face hub cache under a temp
// dir as huggingface_hub does (blobs, snapshots of symlinks into them, refs),
// as model id ORG/NAME at refs/main, and points HF_HUB_CACHE at it.
func fakeHFCache(t *testing.T, id, src string) (cache, snapshot string) {
	t.Helper()
	cache = filepath.Join(t.TempDir(), "hub")
	repo := filepath.Join(cache, "models--"+strings.ReplaceAll(id, "/", "--"))
	commit := "4f1c3a0b2d5e6f708192a3b4c5d6e7f801234567"
	snapshot = filepath.Join(repo, "snapshots", commit)
	for _, d := range []string{filepath.Join(repo, "blobs"), filepath.Join(repo, "refs"), snapshot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		blob := strings.Repeat(string(rune('a'+i)), 64)
		if err := os.WriteFile(filepath.Join(repo, "blobs", blob), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), filepath.Join(snapshot, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HF_HUB_CACHE", cache)
	return cache, snapshot
}

// TestModelIDFromHFCache runs the demo pipeline on a model id found in a
// Hugging Face cache layout: detect and verify --reference resolve it, place
// copies the side files through the snapshot's symlinks, and the checkpoint
// is transformers' byte for byte.
func TestModelIDFromHFCache(t *testing.T) {
	_, snap := fakeHFCache(t, "tiny-org/llama", path("testdata", "models", "llama"))
	out := filepath.Join(t.TempDir(), "llama-nf4")
	var report bytes.Buffer
	res := run{dir: t.TempDir(), stdout: &report, stages: [][]string{
		{"detect", "tiny-org/llama"},
		{"quantize"},
		{"place", "--out", out},
		{"verify", "--reference", "tiny-org/llama"},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if !strings.HasSuffix(report.String(), "\nOK\n") {
		t.Errorf("verify's report does not end in OK:\n%s", report.String())
	}
	checkCheckpoint(t, out, "bfloat16")
	st, err := os.Lstat(filepath.Join(out, "generation_config.json"))
	if err != nil || !st.Mode().IsRegular() {
		t.Fatalf("generation_config.json was not copied as a regular file: %v, %v", st, err)
	}
	got, _ := os.ReadFile(filepath.Join(out, "generation_config.json"))
	want, _ := os.ReadFile(filepath.Join(snap, "generation_config.json"))
	if !bytes.Equal(got, want) {
		t.Errorf("generation_config.json differs from the snapshot's")
	}
}

// TestModelIDPlanSnippet: plan's snippet loads a model detect found by id
// by that id.
func TestModelIDPlanSnippet(t *testing.T) {
	fakeHFCache(t, "tiny-org/llama", path("testdata", "models", "llama"))
	var snippet bytes.Buffer
	res := run{dir: t.TempDir(), stdout: &snippet, stages: [][]string{
		{"detect", "tiny-org/llama"}, {"plan", "--gpus", "t4", "--emit", "python"},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if !strings.Contains(snippet.String(), `model_path = "tiny-org/llama"`) {
		t.Errorf("the snippet does not load the model by its id:\n%s", snippet.String())
	}
}

// TestModelIDNotCached: an id the cache lacks is one line naming the paths
// looked at and how to download it, status 3; --revision with a local path is
// a usage error.
func TestModelIDNotCached(t *testing.T) {
	cache, _ := fakeHFCache(t, "tiny-org/llama", path("testdata", "models", "llama"))
	for _, tc := range []struct {
		args    []string
		code    int
		mention []string
	}{
		{[]string{"--info", "tiny-org/absent"}, 3, []string{filepath.Join(cache, "models--tiny-org--absent"), "hf download tiny-org/absent"}},
		{[]string{"--info", "--revision", "v9", "tiny-org/llama"}, 3, []string{"refs", "hf download tiny-org/llama --revision v9", "cached refs: main"}},
		{[]string{"--info", "--revision", "main", path("testdata", "models", "llama")}, 2, []string{"local path"}},
	} {
		res := run{dir: t.TempDir(), stages: [][]string{append([]string{"detect"}, tc.args...)}}.exec(t)
		r := res[0]
		if r.code != tc.code {
			t.Errorf("detect %v: status %s, want %d; stderr:\n%s", tc.args, r.status(), tc.code, r.stderr)
		}
		checkOneLine(t, r)
		for _, m := range tc.mention {
			if !strings.Contains(r.stderr, m) {
				t.Errorf("detect %v: stderr does not mention %q:\n%s", tc.args, m, r.stderr)
			}
		}
	}
}

// TestPrequantizedModelID: a 4-bit repository in the cache, as users meet
// them (the *-bnb-4bit ones): detect reads it by id and verify --checkpoint
// takes the id too.
func TestPrequantizedModelID(t *testing.T) {
	fakeHFCache(t, "tiny-org/llama-bnb-4bit", path("testdata", "models", "llama-bnb-nf4"))
	var report bytes.Buffer
	res := run{dir: t.TempDir(), stdout: &report, stages: [][]string{
		{"detect", "tiny-org/llama-bnb-4bit"},
		{"verify", "--checkpoint", "tiny-org/llama-bnb-4bit"},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if !strings.Contains(res[0].stderr, "already 4-bit: bitsandbytes nf4, blocksize 64, double quant true") ||
		!strings.Contains(res[0].stderr, "557.7K total") {
		t.Errorf("detect report:\n%s", res[0].stderr)
	}
	if !strings.Contains(report.String(), "21 of 21 stream tensors read back identically") || !strings.HasSuffix(report.String(), "\nOK\n") {
		t.Errorf("verify --checkpoint by id:\n%s", report.String())
	}
}
