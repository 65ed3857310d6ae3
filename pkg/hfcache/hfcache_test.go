package hfcache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	commitMain = "0123456789abcdef0123456789abcdef01234567"
	commitTag  = "fedcba9876543210fedcba9876543210fedcba98"
)

// fakeRepo lays out models--org--name in dir as huggingface_hub does: blobs
// named by hash, snapshots whose files are relative symlinks into blobs, refs
// holding commit hashes. It returns the repository directory.
func fakeRepo(t *testing.T, dir, id string) string {
	t.Helper()
	repo := RepoDir(dir, id)
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(repo, "blobs", "aaa"), `{"model_type": "llama"}`)
	write(filepath.Join(repo, "blobs", "bbb"), `{"model_type": "mistral"}`)
	for commit, blob := range map[string]string{commitMain: "aaa", commitTag: "bbb"} {
		snap := filepath.Join(repo, "snapshots", commit)
		if err := os.MkdirAll(snap, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), filepath.Join(snap, "config.json")); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(repo, "refs", "main"), commitMain) // no newline, as huggingface_hub writes it
	write(filepath.Join(repo, "refs", "v1.0"), commitTag+"\n")
	write(filepath.Join(repo, "refs", "refs", "pr", "1"), commitTag)
	return repo
}

func TestSnapshotRevisions(t *testing.T) {
	dir := t.TempDir()
	repo := fakeRepo(t, dir, "org/model")
	c := Cache{Dir: dir}
	for _, tc := range []struct{ rev, commit, modelType string }{
		{"", commitMain, "llama"},
		{"main", commitMain, "llama"},
		{"v1.0", commitTag, "mistral"},
		{"refs/pr/1", commitTag, "mistral"},
		{commitTag, commitTag, "mistral"}, // a commit hash names its snapshot without a ref
	} {
		snap, err := c.Snapshot("org/model", tc.rev)
		if err != nil {
			t.Fatalf("revision %q: %v", tc.rev, err)
		}
		if want := filepath.Join(repo, "snapshots", tc.commit); snap != want {
			t.Errorf("revision %q: got %s, want %s", tc.rev, snap, want)
		}
		// the file is a symlink into blobs/, and reads through it
		b, err := os.ReadFile(filepath.Join(snap, "config.json"))
		if err != nil || !strings.Contains(string(b), tc.modelType) {
			t.Errorf("revision %q: config.json through the symlink: %q, %v", tc.rev, b, err)
		}
	}
}

func TestSnapshotMissing(t *testing.T) {
	dir := t.TempDir()
	repo := fakeRepo(t, dir, "org/model")
	c := Cache{Dir: dir}

	_, err := c.Snapshot("org/other", "")
	var nc *NotCachedError
	if !errors.As(err, &nc) || !errors.Is(err, ErrNotCached) {
		t.Fatalf("absent repository: %v, want a NotCachedError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, RepoDir(dir, "org/other")) || !strings.Contains(msg, "hf download org/other") || strings.Contains(msg, "\n") {
		t.Errorf("absent repository: message %q should name the path looked at and the download, on one line", msg)
	}

	_, err = c.Snapshot("org/model", "v2")
	if !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), "--revision v2") || !strings.Contains(err.Error(), "cached refs: main") {
		t.Errorf("missing ref: %v", err)
	}

	missing := strings.Repeat("9", 40)
	if _, err = c.Snapshot("org/model", missing); !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), filepath.Join(repo, "snapshots", missing)) {
		t.Errorf("commit without a snapshot: %v", err)
	}

	// a ref whose snapshot is gone (huggingface-cli delete-cache can leave that)
	if err := os.RemoveAll(filepath.Join(repo, "snapshots", commitMain)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Snapshot("org/model", "main")
	if !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), commitMain) {
		t.Errorf("missing snapshot: %v", err)
	}

	if err := os.WriteFile(filepath.Join(repo, "refs", "bad"), []byte("not-a-hash"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err = c.Snapshot("org/model", "bad"); !errors.Is(err, ErrRevision) {
		t.Errorf("ref holding no hash: %v, want ErrRevision", err)
	}
	for _, rev := range []string{"../../x", "/etc/passwd", "a//b", "."} {
		if _, err := c.Snapshot("org/model", rev); !errors.Is(err, ErrRevision) {
			t.Errorf("revision %q: %v, want ErrRevision", rev, err)
		}
	}
}

func TestDirPrecedence(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	env["HOME"] = "/home/u"
	check := func(want string) {
		t.Helper()
		if got := dirFrom(get); got != want {
			t.Errorf("env %v: got %s, want %s", env, got, want)
		}
	}
	check("/home/u/.cache/huggingface/hub")
	env["XDG_CACHE_HOME"] = "/xdg"
	check("/xdg/huggingface/hub")
	env["HF_HOME"] = "~/hf"
	check("/home/u/hf/hub")
	env["HUGGINGFACE_HUB_CACHE"] = "/legacy"
	check("/legacy")
	env["HF_HUB_CACHE"] = "/hubcache"
	check("/hubcache")
	env["HF_HUB_CACHE"] = "$HOME/c/$UNSET"
	check("/home/u/c/$UNSET")
}

func TestLocate(t *testing.T) {
	dir := t.TempDir()
	repo := fakeRepo(t, dir, "org/model")
	c := Cache{Dir: dir}

	got, err := c.Locate("org/model", "v1.0")
	if err != nil || got != filepath.Join(repo, "snapshots", commitTag) {
		t.Errorf("id: %s, %v", got, err)
	}

	// a local path wins over an id of the same spelling
	t.Chdir(t.TempDir())
	if err := os.MkdirAll("org/model", 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Locate("org/model", ""); err != nil || got != "org/model" {
		t.Errorf("local path: %s, %v", got, err)
	}
	if _, err := c.Locate("org/model", "main"); !errors.Is(err, ErrRevision) {
		t.Errorf("revision with a local path: %v, want ErrRevision", err)
	}

	_, err = c.Locate("org/absent", "")
	if !errors.Is(err, ErrNotCached) {
		t.Fatalf("absent id: %v", err)
	}
	abs, _ := filepath.Abs("org/absent")
	if !strings.Contains(err.Error(), abs) || !strings.Contains(err.Error(), RepoDir(dir, "org/absent")) {
		t.Errorf("absent id: %q should name both the local path and the cache directory", err)
	}

	// not an id: left for the caller to report as a missing path
	for _, arg := range []string{"no-such-dir", "./a/b", "a/b/c", "org/--x"} {
		if got, err := c.Locate(arg, ""); err != nil || got != arg {
			t.Errorf("%q: %s, %v", arg, got, err)
		}
	}
}

func TestIsID(t *testing.T) {
	for s, want := range map[string]bool{
		"meta-llama/Llama-3.1-8B":                true,
		"unsloth/Llama-3.2-1B-Instruct-bnb-4bit": true,
		"Qwen/Qwen2.5-VL-7B-Instruct":            true,
		"gpt2":                                   false,
		"a/b/c":                                  false,
		"./x":                                    false,
		"/abs/path":                              false,
		"org/..":                                 false,
		"org/a--b":                               false,
		"org/name.":                              false,
		"":                                       false,
	} {
		if got := IsID(s); got != want {
			t.Errorf("IsID(%q) = %v, want %v", s, got, want)
		}
	}
}
