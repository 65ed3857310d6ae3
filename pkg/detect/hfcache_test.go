package detect

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
)

// TestOpenModelID: an id resolves through refs/main to its snapshot, whose
// config.json is a symlink into blobs/, and the source section says so.
func TestOpenModelID(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	repo := hfcache.RepoDir(cache, "org/tiny")
	commit := "89abcdef0123456789abcdef0123456789abcdef"
	snap := filepath.Join(repo, "snapshots", commit)
	for _, d := range []string{filepath.Join(repo, "blobs"), filepath.Join(repo, "refs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join("..", "..", "testdata", "configs", "tiny-llama.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "blobs", "c0ffee"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../blobs/c0ffee", filepath.Join(snap, "config.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}

	m, err := Open("org/tiny", arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Source.ID != "org/tiny" || m.Source.Revision != "main" || m.Source.Dir != snap || !m.Source.NoData || m.Arch == nil {
		t.Errorf("source %+v, want id org/tiny at main, dir %s, a config alone", m.Source, snap)
	}
	if m2, err := OpenRevision("org/tiny", commit, arch.Policy{}); err != nil || m2.Source.Dir != snap || m2.Source.Revision != commit {
		t.Errorf("by commit: %v", err)
	}
	if _, err := OpenRevision("org/tiny", "v1", arch.Policy{}); !errors.Is(err, hfcache.ErrNotCached) {
		t.Errorf("missing ref: %v, want ErrNotCached", err)
	}
}
